"""Markdown tables of HRNN-meta's experiment results next to the paper's figures.

Reads the JSON files `benchmarks/hrnn_experiments.py` writes (and the S3-Rec runs of
`benchmarks/quality.py --models=hrnn_meta`) and prints the tables of docs/hrnn_meta.md.
"""

import json
import os
from typing import Any, Dict, Optional

import numpy as np


def _mean(runs):
  return {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}


# The paper's figures, for the report's side-by-side columns.
PAPER_TABLE8 = {"ml-1m": {"IS": (23_000, 377, 0.128), "dense": (23_000, 409, 0.123)},
                "Taobao": {"IS": (7_800, 17_600, 0.15), "dense": (631, 119_000, 0.08)}}
PAPER_TABLE1 = {"popularity": 2228, "item features of the last item": 1342, "sequence": 447,
                "+ time controls (HRNN-meta)": 410}
PAPER_TABLE7 = {"random choice": (0.109, 0.039, 0.041, 0.075, 0.187),
                "HRNN-meta (lambda ~ U[0, 1])": (0.323, 0.162, 0.133, 0.208, 0.388)}
PAPER_TABLE6 = {"popular items": (0.001, 0.006, 0.002, 17683), "GRU": (0.301, 0.694, 0.451, 225),
                "HRNN (time controls)": (0.314, 0.708, 0.464, 204)}


# ../shared/BENCHMARKS.md, the S3-Rec table: (HR@10, NDCG@10, HR@20, NDCG@20).
S3REC_ROWS = {
    "amazon_beauty": {"GRU4Rec": (0.0283, 0.0137, 0.0479, 0.0187),
                      "GRU4RecF": (0.0420, 0.0211, 0.0691, 0.0279),
                      "SASRec": (0.0605, 0.0318, 0.0902, 0.0394)},
    "amazon_toys": {"GRU4Rec": (0.0176, 0.0084, 0.0301, 0.0116),
                    "GRU4RecF": (0.0427, 0.0230, 0.0671, 0.0292),
                    "SASRec": (0.0675, 0.0374, 0.0941, 0.0441)},
    "lastfm_hetrec_s3rec": {"GRU4Rec": (0.0367, 0.0187, 0.0606, None),
                            "GRU4RecF": (0.0606, 0.0357, 0.0771, None),
                            "SASRec": (0.0688, 0.0390, 0.0972, None)},
}
QUALITY_KEYS = ("hr@10", "ndcg@10", "hr@20", "ndcg@20")


def _quality_runs(folder: str, model: str) -> Dict[str, list]:
  """`{data set: [run, ...]}` of `model` in every quality.py results file of `folder`."""
  found: Dict[str, list] = {}
  for name in sorted(os.listdir(folder)) if folder and os.path.isdir(folder) else ():
    if name.endswith(".json"):
      for dataset, by_model in ((_load(os.path.join(folder, name)) or {}).get("runs") or {}).items():
        if isinstance(by_model, dict):
          found.setdefault(dataset, []).extend(by_model.get(model, []))
  # A seed measured in several files (a re-run) counts once: the last file's.
  return {dataset: list({run["seed"]: run for run in runs}.values())
          for dataset, runs in found.items()}


def _quality_table(quality_dir: str, baseline_dir: str) -> list:
  """HRNN-meta's S3-Rec runs (seeds averaged) beside our gru4rec and the S3-Rec table."""
  ours = _quality_runs(quality_dir, "hrnn_meta")
  if not ours:
    return []
  baseline = _quality_runs(baseline_dir, "gru4rec")
  out = ["### S3-Rec protocol (benchmarks/quality.py)\n",
         "| data | model | seeds | HR@10 | NDCG@10 | HR@20 | NDCG@20 |", "|---|---|---|---|---|---|---|"]
  for dataset, runs in ours.items():
    rows = [("HRNN-meta (ours)", runs)]
    if baseline.get(dataset):
      rows.append(("gru4rec (ours)", baseline[dataset]))
    for label, group in rows:
      m = _mean([r["metrics"] for r in group])
      seeds = ",".join(str(r["seed"]) for r in group)
      out.append(f"| {dataset} | {label} | {seeds} | " +
                 " | ".join(f"{m[k]:.4f}" for k in QUALITY_KEYS) + " |")
    for label, values in S3REC_ROWS.get(dataset, {}).items():
      out.append(f"| {dataset} | {label} (S3-Rec table) | | " +
                 " | ".join("" if v is None else f"{v:.4f}" for v in values) + " |")
  return out + [""]


def _load(path: str) -> Optional[Dict[str, Any]]:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def report(work_dir: str, quality_dir: str, baseline_dir: str = "") -> None:
  """Prints the markdown tables of docs/hrnn_meta.md from the JSON results found."""
  out = []
  load = lambda name: _load(os.path.join(work_dir, f"{name}.json"))
  record = load("table8")
  if record:
    out += [f"### Table 8: importance sampling vs dense softmax\n\n{record['setting']}.\n",
            "| output | items/s (train) | PPL | NDCG@25 | HR@25 | MRR@25 | paper ml-1m: items/s, "
            "PPL, NDCG |", "|---|---|---|---|---|---|---|"]
    for name in ("IS", "dense"):
      m, sd = record[name], record[name + "_std"]
      paper = PAPER_TABLE8["ml-1m"][name]
      spread = lambda key, digits: f" +- {sd[key]:.{digits}f}" if sd[key] > 0 else ""
      out.append(f"| {name} | {m['items_per_second']:,.0f} | {m['perplexity']:.1f}"
                 f"{spread('perplexity', 1)} | {m['ndcg@25']:.4f}{spread('ndcg@25', 4)} | "
                 f"{m['hr@25']:.4f} | {m['mrr@25']:.4f} | {paper[0]:,}, {paper[1]}, {paper[2]} |")
    out.append("")
  record = load("ablation")
  if record:
    out += [f"### Table 1: what each input adds\n\n{record['setting']}.\n",
            "| row | PPL | NDCG@25 | Recall@25 | HR@10 | paper ml-20m PPL |", "|---|---|---|---|---|---|"]
    for name, m in record["rows"].items():
      if name.endswith("(std)"):
        continue
      sd = record["rows"].get(name + " (std)", {})
      spread = f" +- {sd['perplexity']:.1f}" if sd and sd["perplexity"] > 0 else ""
      out.append(f"| {name} | {m['perplexity']:.1f}{spread} | {m['ndcg@25']:.4f} | "
                 f"{m['recall@25']:.4f} | {m['hr@10']:.4f} | {PAPER_TABLE1.get(name, '')} |")
    out.append("")
  record = load("cold_start")
  if record:
    out += [f"### Table 7: item cold start\n\n{record['setting']}.\n",
            "| model | MRR | P@5 | P@25 | NDCG@5 | NDCG@25 | paper (ML-1M): MRR, P@5, P@25, NDCG@5, "
            "NDCG@25 |", "|---|---|---|---|---|---|---|"]
    for name, m in record["rows"].items():
      paper = ", ".join(f"{v:.3f}" for v in PAPER_TABLE7.get(name, ()))
      out.append(f"| {name} | {m['mrr']:.4f} | {m['precision@5']:.4f} | {m['precision@25']:.4f} | "
                 f"{m['ndcg@5']:.4f} | {m['ndcg@25']:.4f} | {paper} |")
    out.append("")
  record = load("time_delta")
  if record:
    out += [f"### Table 2: the same histories at different delays\n\n{record['users']} test "
            f"users of the `ablation` split, the full model of seed 0 through its exported "
            f"serving signature; top-10 lists with the user's history masked.\n",
            "| delay | top-1 differs from 0 s | top-10 overlap with 0 s | genre overlap with the "
            "last item | mean popularity share |", "|---|---|---|---|---|"]
    for delta in record["deltas"]:
      m = record["summary"][str(delta)]
      out.append(f"| {delta:,} s | {m['top1_changed_vs_0s']:.3f} | {m['top10_overlap_vs_0s']:.3f} | "
                 f"{m['genre_overlap_with_last_item']:.3f} | {m['mean_popularity_share']:.5f} |")
    example = record["examples"][0]
    out += ["", f"User {example['user']} ({record.get('examples_rule', 'an example')}), last "
            f"items: " + "; ".join(example["last_items"]) + ".", "",
            "| delay | top-1 | genres | popularity |", "|---|---|---|---|"]
    for delta, top in sorted(example["top1"].items(), key=lambda entry: int(entry[0])):
      out.append(f"| {int(delta):,} s | {top['title']} | {' '.join(top['genres'])} | "
                 f"{top['popularity']:.6f} |")
    out.append("")
  record = load("sessions")
  if record:
    out += [f"### Table 6: time controls on Yoochoose sessions\n\n{record['setting']}; gaps "
            f"between clicks: median {record['gap_quantiles_s']['0.5']:.0f} s, 90% "
            f"{record['gap_quantiles_s']['0.9']:.0f} s, {record['gaps_over_30min']} of "
            f"{record['gaps']} over 30 minutes.\n",
            "| model | MRR@20 | HR@20 | NDCG@20 | PPL | paper (full Yoochoose) |",
            "|---|---|---|---|---|---|"]
    for name, m in record["rows"].items():
      paper = ", ".join(f"{v:g}" for v in PAPER_TABLE6.get(name, ()))
      out.append(f"| {name} | {m['mrr@20']:.4f} | {m['hr@20']:.4f} | {m['ndcg@20']:.4f} | "
                 f"{m['perplexity']:.1f} | {paper} |")
    out.append("")
    synthetic = record.get("synthetic")
    if synthetic:
      out += [f"Where the session control matters: {synthetic['setting']}; the test users split by "
              f"whether their target opens a session (more than an hour after their last "
              f"event).\n", "| model | targets | users | HR@20 | NDCG@20 | PPL |",
              "|---|---|---|---|---|---|"]
      for name, by_subset in synthetic["rows"].items():
        for subset, m in by_subset.items():
          out.append(f"| {name} | {subset} | {m['users']:.0f} | {m['hr@20']:.4f} | "
                     f"{m['ndcg@20']:.4f} | {m['perplexity']:.1f} |")
      out.append("")
  record = load("retrain")
  if record:
    out += [f"### Figure 5: retraining with item trend correction\n\n{record['setting']}; means "
            f"over {len(next(iter(record['curves'].values())))} test windows "
            f"(`retrain.svg` has every window).\n",
            "| model | Recall@20 | NDCG@20 | HR@10 |", "|---|---|---|---|"]
    for name, m in record["mean"].items():
      out.append(f"| {name} | {m['recall@20']:.4f} | {m['ndcg@20']:.4f} | {m['hr@10']:.4f} |")
    out.append("")
  record = load("throughput")
  if record:
    out += [f"### Throughput\n\n{record['setting']}.\n",
            "| items | softmax | windows/step | ms/step | items/s |", "|---|---|---|---|---|"]
    for row in record["rows"]:
      out.append(f"| {row['items']:,} | {row['softmax']} | {row['batch']} | {row['ms_per_step']:.0f} "
                 f"| {row['items_per_second']:,.0f} |")
    out.append("")
  out += _quality_table(quality_dir, baseline_dir)
  text = "\n".join(out) if out else "(no results found)"
  with open(os.path.join(work_dir, "report.md"), "w") as f:
    f.write(text + "\n")
  print(text)
