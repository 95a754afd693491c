r"""HRNN-meta's experiments (Ma et al., KDD 2020) on the data available here.

    python benchmarks/hrnn_experiments.py --experiments=table8,ablation,cold_start,time_delta
    python benchmarks/hrnn_experiments.py --experiments=sessions,retrain
    python benchmarks/hrnn_experiments.py --experiments=throughput --throughput_items=100000,1000000

The paper's figures are on MovieLens-1M/10M/20M, Reddit, Yoochoose, Outbrain and
Taobao; here MovieLens-100K (`../shared/data/movielens_100k`: timestamps, ratings,
genres, user age/gender/occupation) and the Yoochoose sample stand in, so the shapes
compare, not the digits. Every experiment trains with the trainer library
(`trainer.loop`), ranks the whole catalog with the trainer's evaluator (perplexity
included) and writes `--work_dir`/<experiment>.json; `docs/hrnn_meta.md` records the
results. Experiments (`--experiments`):

  table8      Table 8: GRU with a 43-dim hidden state, 4 epochs, the last item of
              held-out test users (20% of the users; their other items are the input):
              importance sampling (`--is_negatives` negatives from counts^0.75, log Q
              subtracted) against the dense softmax: training items/s, PPL, NDCG@25.
  ablation    Table 1: PPL (and ranking) of popularity, last item's features only, the
              sequence alone, + item features, + user features, + feedback, + time
              controls (the full HRNN-meta); held-out users, their last 20% as targets.
  cold_start  Table 7: half of the items, uniformly at random, get no training event;
              test users' events on them are the targets, ranked among those items only
              (lambda = 1: features alone). HRNN-meta (lambda ~ U[0, 1] in training),
              the same with lambda fixed at 0.5, and random choice.
  time_delta  Table 2: the full model of `ablation` (seed 0), exported, asked for the
              same histories at request delays 0 s .. 30 days through its serving
              signature: the top recommendations, how often they change, their genre
              overlap with the last item and their popularity.
  sessions    Table 6 / the session control: GRU (HRNN-meta without time inputs)
              against HRNN (with them) on the Yoochoose sample, leave-last-one-out.
  retrain     Figure 5: train on the first 70% of MovieLens-100K's time span once
              (offline) or on the last `--retrain_window_days` before each test window
              of `--retrain_step_days` (online, warm-started), with and without item
              trend correction (log q of the last `--trend_days`), and Recent Popular.
  throughput  Table 8's throughput: training items/s of the GRU with a sampled
              (`--throughput_negatives`) and the dense softmax at `--throughput_items`
              catalog sizes (BPTT 32, batch 32, 256 units, D 64, AdaGrad), in memory.
  report      Markdown tables of every result found in `--work_dir` (and the S3-Rec
              quality runs in `--quality_dir`), next to the paper's figures.

Plots are written as SVG next to the JSON (`svg_plot`, no plotting library needed).
"""

import dataclasses
import json
import math
import os
import shutil
import time
from typing import Any, Dict, List, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from common import files
from common import names
from input_pipeline import data_spec as data_spec_lib
from input_pipeline import dataset as dataset_lib
from input_pipeline import popularity
from input_pipeline import prepare
from input_pipeline import samples
from input_pipeline import schema
from input_pipeline.splits import SplitConfig
from trainer import config as config_lib
from trainer import evaluation
import tensorflow as tf  # pylint: disable=g-bad-import-order  (after our packages: Keras 2)

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = ("table8", "ablation", "cold_start", "time_delta", "sessions", "retrain",
               "throughput", "report")
DAY = 86_400

_EXPERIMENTS = flags.DEFINE_list("experiments", ["table8", "ablation", "cold_start", "time_delta"],
                                 f"Any of {EXPERIMENTS}.")
_SHARED_DIR = flags.DEFINE_string(
    "shared_dir", os.environ.get("DCG_SHARED_DIR", os.path.join(os.path.dirname(_REPO_ROOT), "shared")),
    "Folder holding data/movielens_100k and data/yoochoose_sample (read-only).")
_WORK_DIR = flags.DEFINE_string("work_dir", os.path.join(_REPO_ROOT, "runs", "hrnn_experiments"),
                                "Prepared data, runs, <experiment>.json and plots go here.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds; means are reported.")
_IS_NEGATIVES = flags.DEFINE_integer("is_negatives", 64, "table8: sampled negatives.")
_ABLATION_EPOCHS = flags.DEFINE_float("ablation_epochs", 10.0, "ablation, cold_start: epochs.")
_SESSION_EPOCHS = flags.DEFINE_float("session_epochs", 30.0, "sessions: epochs.")
_RETRAIN_EPOCHS = flags.DEFINE_float("retrain_epochs", 5.0, "retrain: epochs per training.")
_RETRAIN_WINDOW_DAYS = flags.DEFINE_float("retrain_window_days", 28.0,
                                          "retrain: online training window W.")
_RETRAIN_STEP_DAYS = flags.DEFINE_float("retrain_step_days", 7.0, "retrain: test window.")
_TREND_DAYS = flags.DEFINE_float("trend_days", 7.0, "retrain: popularity window of log q.")
_THROUGHPUT_ITEMS = flags.DEFINE_list("throughput_items", ["10000", "100000", "1000000"],
                                      "throughput: catalog sizes.")
_THROUGHPUT_NEGATIVES = flags.DEFINE_integer("throughput_negatives", 2048,
                                             "throughput: sampled negatives.")
_THROUGHPUT_SECONDS = flags.DEFINE_float("throughput_seconds", 20.0,
                                         "throughput: timed seconds per setting, at least.")

_QUALITY_DIR = flags.DEFINE_string("quality_dir", os.path.join(_REPO_ROOT, "runs", "hrnn_quality"),
                                   "report: where benchmarks/quality.py wrote hrnn_meta_*.json.")

KS = (5, 10, 20, 25, 50)


# Plots.


def svg_plot(path: str, series: Dict[str, Sequence[tuple]], *, title: str, xlabel: str,
             ylabel: str, logx: bool = False, width: int = 560, height: int = 320) -> None:
  """A line plot of `{label: [(x, y), ...]}` as a standalone SVG file."""
  colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]
  points = [p for values in series.values() for p in values if np.isfinite(p[1])]
  fx = (lambda x: math.log10(max(x, 1e-9))) if logx else (lambda x: x)
  xs, ys = [fx(x) for x, _ in points], [y for _, y in points]
  x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
  y0, y1 = min(0.0, min(ys)), max(ys) * 1.08 if max(ys) > 0 else 1.0
  left, right, top, bottom = 60, 150, 30, 45
  sx = lambda x: left + (fx(x) - x0) / (x1 - x0) * (width - left - right)
  sy = lambda y: height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
  out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'font-family="sans-serif" font-size="11">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="{width / 2 - 60}" y="16" font-size="13">{title}</text>',
         f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" '
         f'stroke="black"/>',
         f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
         f'<text x="{(width - right) / 2}" y="{height - 8}">{xlabel}</text>',
         f'<text x="12" y="{top - 8}">{ylabel}</text>']
  for i in range(5):
    y = y0 + (y1 - y0) * i / 4
    out.append(f'<text x="{left - 52}" y="{sy(y) + 4}">{y:.4g}</text>')
    out.append(f'<line x1="{left}" y1="{sy(y)}" x2="{width - right}" y2="{sy(y)}" '
               f'stroke="#ddd"/>')
  ticks = sorted({x for x, _ in points})
  for x in ticks[::max(1, len(ticks) // 8)]:
    label = f"{x:g}" if not logx else (f"{x:.0e}" if x >= 1e4 else f"{x:g}")
    out.append(f'<text x="{sx(x) - 10}" y="{height - bottom + 14}">{label}</text>')
  for index, (label, values) in enumerate(series.items()):
    color = colors[index % len(colors)]
    values = [(x, y) for x, y in values if np.isfinite(y)]
    path_data = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
    out.append(f'<polyline points="{path_data}" fill="none" stroke="{color}" stroke-width="2"/>')
    out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>'
            for x, y in values]
    out.append(f'<text x="{width - right + 8}" y="{top + 14 * index + 10}" fill="{color}">'
               f'{label}</text>')
  out.append("</svg>")
  with open(path, "w") as f:
    f.write("\n".join(out))


# Data.


def _shared(name: str) -> str:
  path = os.path.join(_SHARED_DIR.value, "data", name)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path!r} not found: pass --shared_dir (the folder holding data/).")
  return path


def prepared(name: str, dataset: str, source: str, split: SplitConfig) -> str:
  """A dataset directory under `--work_dir`/data, prepared on first use."""
  data_dir = os.path.join(_WORK_DIR.value, "data", name)
  if not os.path.exists(os.path.join(data_dir, schema.STATS_FILE)):
    prepare.prepare_dataset(prepare.PrepareConfig(output_dir=data_dir, dataset=dataset,
                                                  input_path=source, split=split))
  return data_dir


def held_out_users(input_fraction: float) -> SplitConfig:
  """The paper's user split: 70% train, 10% valid, 20% test users (section 4.1)."""
  return SplitConfig(protocol=schema.HELD_OUT_USERS, valid_fraction=0.1, test_fraction=0.2,
                     input_fraction=input_fraction, seed=0)


def read_timelines(data_dir: str, split: str) -> Dict[str, Any]:
  """Every timeline of a split as numpy: lists of arrays per user, plus target_start."""
  records = tf.data.TFRecordDataset(schema.split_files(data_dir, split))
  out = {key: [] for key in (schema.ITEMS, schema.TIMESTAMPS, schema.FEEDBACK,
                             schema.USER_FEATURES, schema.TARGET_START)}
  for block in records.batch(1024).map(schema.parse_timelines):
    for key in out:
      value = block[key]
      out[key].extend(value.numpy() if key == schema.TARGET_START else
                      [np.asarray(row) for row in value.to_list()])
  return out


def feedback_moments(data_dir: str) -> tuple:
  feedback = np.concatenate(read_timelines(data_dir, "train")[schema.FEEDBACK])
  return float(feedback.mean()), float(feedback.std())


# Training through the trainer library.


def training_samples(model: str, overrides: Dict[str, Any], data: data_spec_lib.DataSpec,
                     max_length: int) -> int:
  """Samples in one pass over the train split, as the model's selector cuts them."""
  from models import registry  # pylint: disable=g-import-not-at-top

  model_config = config_lib.build_model_config(
      config_lib.ModelConfig(model, overrides), max_length=max_length)
  spec = registry.lookup(model).model_class(model_config, data=data).sample_spec()
  one_pass = dataset_lib.make_dataset(dataset_lib.InputConfig(
      data_dir=data.data_dir, batch_size=4096, num_epochs=1, shuffle=False, bucketing=False),
      spec, data)
  return int(sum(int(batch[names.HISTORY_LENGTH].shape[0]) for batch in one_pass))


def train(run_dir: str, data_dir: str, overrides: Dict[str, Any], *, epochs: float, seed: int,
          batch_size: int = 64, max_length: int = 32, learning_rate: float = 1e-3,
          num_negatives: int = 1_000_000, sampler: str = "unigram", export: bool = False,
          ks=KS) -> Dict[str, Any]:
  """Trains `hrnn_meta` with `overrides` for `epochs`; returns metrics.json's content."""
  from trainer import loop  # pylint: disable=g-import-not-at-top

  data = data_spec_lib.read(data_dir)
  samples_per_epoch = training_samples("hrnn_meta", overrides, data, max_length)
  steps = max(1, math.ceil(epochs * samples_per_epoch / batch_size))
  if os.path.exists(run_dir):
    shutil.rmtree(run_dir)  # a fresh run: these are measurements, not resumable jobs
  config = config_lib.TrainConfig(
      model_dir=run_dir,
      data=config_lib.DataConfig(data_dir=data_dir, max_length=max_length, batch_size=batch_size),
      model=config_lib.ModelConfig("hrnn_meta", overrides=dict(overrides)),
      optimizer=config_lib.OptimizerConfig(name="adam", learning_rate=learning_rate),
      loss=config_lib.LossConfig(num_negatives=num_negatives, sampler=sampler),
      schedule=config_lib.ScheduleConfig(train_steps=steps, log_every=min(steps, 200), seed=seed),
      checkpoint=config_lib.CheckpointConfig(every_steps=steps),
      eval=config_lib.EvalConfig(ks=ks, batch_size=512),
      export=config_lib.ExportConfig(enabled=export))
  logging.info("training hrnn_meta %s on %s for %d steps (%.1f epochs of %d samples)", overrides,
               data_dir, steps, epochs, samples_per_epoch)
  result = loop.train_and_evaluate(config)
  result["train_steps"] = steps
  return result


def mean_over(runs: List[Dict[str, float]]) -> Dict[str, float]:
  return {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}


def std_over(runs: List[Dict[str, float]]) -> Dict[str, float]:
  return {key: float(np.std([run[key] for run in runs])) for key in runs[0]}


def seeds() -> List[int]:
  return [int(s) for s in _SEEDS.value]


def write(name: str, record: Dict[str, Any]) -> None:
  path = os.path.join(_WORK_DIR.value, f"{name}.json")
  files.write_json(path, record)
  print(f"{name}: written to {path}")


def popularity_metrics(data: data_spec_lib.DataSpec, ks=KS) -> Dict[str, float]:
  """PopRec with the unigram model's perplexity: scores log q (a softmax of log q is q)."""
  log_q = popularity.log_popularity(data.item_counts, smoothing=1.0)
  spec = samples.SampleSpec(features=(samples.History(32),), training=samples.AllPrefixes())
  test = dataset_lib.make_dataset(dataset_lib.eval_config(data.data_dir, "test", batch_size=512),
                                  spec, data)
  user_fn, _ = evaluation.popularity_scorer(data.item_counts)
  return evaluation.evaluate(user_vectors_fn=user_fn, item_embeddings=log_q[:, None], dataset=test,
                             num_items=data.num_items, protocol=data.protocol, ks=ks).metrics


# Table 8.


def table8() -> None:
  data_dir = prepared("ml100k_last_item", "movielens", _shared("movielens_100k"),
                      held_out_users(input_fraction=0.999))  # the last item is the target
  mean, std = feedback_moments(data_dir)
  overrides = {"embedding_dim": 43, "hidden_dim": 43, "feedback_mean": mean, "feedback_std": std}
  record = {"setting": "ML-100K, held-out test users (20%), last item; GRU 43 units, D 43, "
                       "BPTT 32, batch 32, Adam 3e-3, 4 epochs", "runs": {}}
  for name, negatives in (("IS", _IS_NEGATIVES.value), ("dense", 1_000_000)):
    runs = []
    for seed in seeds():
      result = train(os.path.join(_WORK_DIR.value, "table8", name, f"seed_{seed}"), data_dir,
                     overrides, epochs=4, seed=seed, batch_size=32, learning_rate=3e-3,
                     num_negatives=negatives)
      runs.append({**result["metrics"],
                   "items_per_second": result["training"]["targets_per_second"]})
    record["runs"][name] = runs
    record[name] = mean_over(runs)
    record[name + "_std"] = std_over(runs)
  write("table8", record)
  for name in ("IS", "dense"):
    m = record[name]
    print(f"{name}: {m['items_per_second']:.0f} items/s, PPL {m['perplexity']:.1f}, NDCG@25 "
          f"{m['ndcg@25']:.4f}, HR@25 {m['hr@25']:.4f}, MRR@25 {m['mrr@25']:.4f}")


# Table 1.

ABLATION_ROWS = (
    # name, overrides on top of the shared settings, max_length
    ("item features of the last item", {"use_item_ids": False, "use_time": False,
                                        "use_user_features": False, "use_feedback": False}, 1),
    ("sequence", {"use_item_features": False, "use_time": False, "use_user_features": False,
                  "use_feedback": False}, 32),
    ("+ item features", {"use_time": False, "use_user_features": False, "use_feedback": False}, 32),
    ("+ user features", {"use_time": False, "use_feedback": False}, 32),
    ("+ feedback", {"use_time": False}, 32),
    ("+ time controls (HRNN-meta)", {}, 32),
)


def ml100k_held_out() -> str:
  return prepared("ml100k_held_out", "movielens", _shared("movielens_100k"),
                  held_out_users(input_fraction=0.8))


def ablation() -> None:
  data_dir = ml100k_held_out()
  data = data_spec_lib.read(data_dir)
  mean, std = feedback_moments(data_dir)
  shared = {"embedding_dim": 64, "hidden_dim": 128, "feedback_mean": mean, "feedback_std": std}
  record = {"setting": f"ML-100K, held-out users (70/10/20%), the last 20% of a test user's "
                       f"events as targets; D 64, 128 units, batch 64, Adam 1e-3, "
                       f"{_ABLATION_EPOCHS.value:g} epochs, full softmax",
            "rows": {"popularity": popularity_metrics(data)}}
  for name, overrides, max_length in ABLATION_ROWS:
    runs = []
    for seed in seeds():
      slug = name.replace(" ", "_").replace("+", "plus").replace("(", "").replace(")", "")
      result = train(os.path.join(_WORK_DIR.value, "ablation", slug, f"seed_{seed}"), data_dir,
                     {**shared, **overrides}, epochs=_ABLATION_EPOCHS.value, seed=seed,
                     max_length=max_length, export=(not overrides and seed == seeds()[0]))
      runs.append(result["metrics"])
      if result.get("export_dir"):
        record["export_dir"] = result["export_dir"]
    record["rows"][name] = mean_over(runs)
    record["rows"][name + " (std)"] = std_over(runs)
  write("ablation", record)
  for name, metrics in record["rows"].items():
    if not name.endswith("(std)"):
      print(f"{name:32s} PPL {metrics['perplexity']:8.1f}  NDCG@25 {metrics['ndcg@25']:.4f}  "
            f"Recall@25 {metrics['recall@25']:.4f}")


# Table 7.


def cold_start_data() -> tuple:
  """ML-100K with half the items (uniformly at random) never in training.

  The log keeps every event; the held-out items' events are moved after a cut-off
  time t1 (in their order): those of a random half of the users into [t1, t2), the
  others' after t2. The temporal split at t1 and t2 then trains on the other items'
  events only, validates on the first half of the users and tests on the second: every
  held-out item event of a test user is a target, the user's other events the input.
  The held-out items stay in the vocabulary with a training count of 0 and their genres.
  """
  source = _shared("movielens_100k")
  folder = os.path.join(_WORK_DIR.value, "raw", "ml100k_cold")
  os.makedirs(folder, exist_ok=True)
  for name in ("u.item", "u.user", "u.genre", "u.occupation"):
    shutil.copy(os.path.join(source, name), folder)
  events = np.loadtxt(os.path.join(source, "u.data"), dtype=np.int64)
  items = np.unique(events[:, 1])
  cold = np.random.default_rng(0).permutation(items)[:len(items) // 2]
  is_cold = np.isin(events[:, 1], cold)
  cutoff = int(events[:, 3].max()) + DAY
  span = int(events[:, 3].max() - events[:, 3].min()) + 1
  users = np.unique(events[:, 0])
  test_user = np.isin(events[:, 0], np.random.default_rng(1).permutation(users)[:len(users) // 2])
  moved = events.copy()
  moved[is_cold, 3] = (cutoff + span * test_user[is_cold] + moved[is_cold, 3] -
                       int(events[:, 3].min()))
  np.savetxt(os.path.join(folder, "u.data"), moved, fmt="%d", delimiter="\t")
  data_dir = prepared("ml100k_cold", "movielens", folder, SplitConfig(
      protocol=schema.TEMPORAL, valid_start_time=cutoff, test_start_time=cutoff + span))
  return data_dir, {str(i) for i in cold}


def cold_start() -> None:
  data_dir, cold_ids = cold_start_data()
  data = data_spec_lib.read(data_dir)
  cold = np.array([raw in cold_ids for raw in data.item_ids])
  assert (data.item_counts[cold] == 0).all(), "a held-out item has training events"
  warm = np.flatnonzero(~cold)
  mean, std = feedback_moments(data_dir)
  # The held-out items' events were moved in time: no time controls here.
  shared = {"embedding_dim": 64, "hidden_dim": 128, "feedback_mean": mean, "feedback_std": std,
            "use_time": False}
  ks = (5, 25, int(cold.sum()))

  def only_cold(dataset):
    # The warm items join the masked history: the ranking is over the held-out items.
    warm_ids = tf.constant(warm, tf.int64)

    def add(features):
      exclude = tf.tile(warm_ids[tf.newaxis], [tf.shape(features[names.EVAL_EXCLUDE])[0], 1])
      return {**features, names.EVAL_EXCLUDE: exclude}
    return dataset.map(add)

  def metrics_of(result_metrics):
    return {"mrr": result_metrics[f"mrr@{ks[2]}"], "precision@5": result_metrics["precision@5"],
            "precision@25": result_metrics["precision@25"], "ndcg@5": result_metrics["ndcg@5"],
            "ndcg@25": result_metrics["ndcg@25"], "recall@25": result_metrics["recall@25"]}

  from models import registry  # pylint: disable=g-import-not-at-top

  record = {"setting": f"ML-100K, {int(cold.sum())} of {data.num_items} items held out (no "
                       f"training event); targets: every test-split event on them, ranked "
                       f"among them; {_ABLATION_EPOCHS.value:g} epochs", "rows": {}}
  variants = (("HRNN-meta (lambda ~ U[0, 1])", {}), ("lambda fixed at 0.5", {"training_mix": 0.5}))
  for name, overrides in variants:
    runs = []
    for seed in seeds():
      run_dir = os.path.join(_WORK_DIR.value, "cold_start", str(len(runs) + 10 * len(
          record["rows"])), f"seed_{seed}")
      train(run_dir, data_dir, {**shared, **overrides}, epochs=_ABLATION_EPOCHS.value, seed=seed)
      model_config = config_lib.build_model_config(
          config_lib.ModelConfig("hrnn_meta", {**shared, **overrides}), max_length=32)
      model = registry.lookup("hrnn_meta").model_class(model_config, data=data)
      model.create_variables()
      tf.train.Checkpoint(model=model).restore(
          tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))).expect_partial()
      test = dataset_lib.make_dataset(dataset_lib.eval_config(data_dir, "test", batch_size=512),
                                      model.sample_spec(), data)
      evaluate = evaluation.model_evaluator(model, protocol=data.protocol, ks=ks,
                                            mask_history="keep_targets")
      runs.append(metrics_of(evaluate(only_cold(test)).metrics))
    record["rows"][name] = mean_over(runs)
  # Random choice: an independent random order per user (random 256-dim user and item
  # vectors), same ranking and masking.
  runs = []
  for seed in seeds():
    tf.random.set_seed(seed)
    items = np.random.default_rng(seed).normal(size=[data.num_items, 256]).astype(np.float32)
    spec = samples.SampleSpec(features=(samples.History(32),), training=samples.AllPrefixes())
    test = dataset_lib.make_dataset(dataset_lib.eval_config(data_dir, "test", batch_size=512),
                                    spec, data)

    def user_fn(features):
      return tf.random.normal([tf.shape(features[names.HISTORY])[0], 1, 256])

    runs.append(metrics_of(evaluation.evaluate(
        user_vectors_fn=user_fn, item_embeddings=items, dataset=only_cold(test),
        num_items=data.num_items, protocol=data.protocol, ks=ks,
        mask_history="keep_targets").metrics))
  record["rows"]["random choice"] = mean_over(runs)
  write("cold_start", record)
  for name, metrics in record["rows"].items():
    print(f"{name:32s} " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


# Table 2.


def time_delta() -> None:
  with open(os.path.join(_WORK_DIR.value, "ablation.json")) as f:
    export_root = json.load(f)["export_dir"]
  data_dir = ml100k_held_out()
  data = data_spec_lib.read(data_dir)
  titles = {}
  with open(os.path.join(_shared("movielens_100k"), "u.item"), encoding="latin-1") as f:
    for line in f:
      fields = line.split("|")
      titles[fields[0]] = fields[1]
  genres = [set(data.item_feature_names[f][len("genre="):] for f in row
                if f < data.num_item_features) for row in data.item_features]
  share = data.item_counts / data.item_counts.sum()
  index_of = {raw: i for i, raw in enumerate(data.item_ids)}
  exported = tf.saved_model.load(export_root)
  serve = exported.signatures["serving_default"]
  items = exported.signatures["item_embeddings"]()
  table, bias = items["embeddings"].numpy(), items["item_bias"].numpy()
  test = read_timelines(data_dir, "test")
  user_vocab = data.user_feature_names
  deltas = (0, 60, 3600, DAY, 30 * DAY)
  tops = {d: [] for d in deltas}
  examples = []
  for u in range(len(test[schema.ITEMS])):
    start = int(test[schema.TARGET_START][u])
    history = test[schema.ITEMS][u][:start][-32:]
    if len(history) < 5:
      continue
    times = test[schema.TIMESTAMPS][u][:start][-32:]
    request = dict(history=tf.constant([[data.item_ids[i] for i in history]]),
                   history_timestamps=tf.constant([times], tf.int64),
                   history_feedback=tf.constant([test[schema.FEEDBACK][u][:start][-32:]],
                                                tf.float32),
                   user_features=tf.constant([[user_vocab[f] for f in test[schema.USER_FEATURES][u]]]))
    seen = set(test[schema.ITEMS][u][:start].tolist())
    for delta in deltas:
      vector = serve(**request, request_time=tf.constant([int(times[-1]) + delta], tf.int64))[
          "user_vectors"].numpy()[0, 0]
      scores = table @ vector + bias
      scores[list(seen)] = -np.inf
      tops[delta].append(np.argsort(-scores)[:10])
    if len(examples) < 3:
      examples.append({"user": u, "last_items": [
          f"{titles[data.item_ids[i]]} ({'|'.join(sorted(genres[i]))})" for i in history[-5:]],
          "top1": {str(d): (lambda i: {"title": titles[data.item_ids[i]], "genres": sorted(
              genres[i]), "popularity": float(share[i])})(int(tops[d][-1][0])) for d in deltas}})
  last_genres = []
  for u in range(len(test[schema.ITEMS])):
    start = int(test[schema.TARGET_START][u])
    if start >= 5:
      last_genres.append(genres[test[schema.ITEMS][u][start - 1]])
  summary = {}
  for delta in deltas:
    top = np.stack(tops[delta])
    summary[str(delta)] = {
        "top1_changed_vs_0s": float(np.mean(top[:, 0] != np.stack(tops[0])[:, 0])),
        "top10_overlap_vs_0s": float(np.mean([len(set(a) & set(b)) / 10 for a, b in
                                              zip(top, tops[0])])),
        "genre_overlap_with_last_item": float(np.mean([
            np.mean([bool(genres[i] & g) for i in row]) for row, g in zip(top, last_genres)])),
        "mean_popularity_share": float(np.mean(share[top])),
    }
  record = {"export_dir": export_root, "deltas": list(deltas), "summary": summary,
            "examples": examples, "users": len(tops[0])}
  write("time_delta", record)
  svg_plot(os.path.join(_WORK_DIR.value, "time_delta.svg"), {
      "top-10 overlap with 0 s": [(max(d, 1), summary[str(d)]["top10_overlap_vs_0s"]) for d in deltas],
      "genre overlap w/ last": [(max(d, 1), summary[str(d)]["genre_overlap_with_last_item"])
                                for d in deltas],
      "top-1 changed": [(max(d, 1), summary[str(d)]["top1_changed_vs_0s"]) for d in deltas]},
      title="Same histories, different request delays (ML-100K)",
      xlabel="delay after the last event, s (0 drawn at 1)", ylabel="share", logx=True)
  svg_plot(os.path.join(_WORK_DIR.value, "time_delta_popularity.svg"), {
      "mean popularity share of top-10": [(max(d, 1), summary[str(d)]["mean_popularity_share"])
                                          for d in deltas]},
      title="Popularity of the recommendations by delay", xlabel="delay, s", ylabel="share",
      logx=True)
  for delta in deltas:
    print(delta, summary[str(delta)])
  for example in examples:
    print(json.dumps(example, indent=1))


# Table 6 / session control.


def sessions() -> None:
  data_dir = prepared("yoochoose", "yoochoose", os.path.join(_shared("yoochoose_sample"),
                                                              "yoochoose_valid.txt"), SplitConfig())
  data = data_spec_lib.read(data_dir)
  timelines = read_timelines(data_dir, "test")
  gaps = np.concatenate([np.diff(t) for t in timelines[schema.TIMESTAMPS]])
  record = {"setting": "Yoochoose sample (sessions as users), leave-last-one-out, D 64, 100 "
                       f"units, batch 32, {_SESSION_EPOCHS.value:g} epochs, full softmax",
            "gap_quantiles_s": {str(q): float(np.quantile(gaps, q)) for q in (0.1, 0.5, 0.9, 0.99)},
            "gaps_over_30min": int((gaps > 1800).sum()), "gaps": int(gaps.size), "rows": {}}
  record["rows"]["popular items"] = popularity_metrics(data, ks=(20,))
  for name, overrides in (("GRU", {"use_time": False}), ("HRNN (time controls)", {})):
    runs = []
    for seed in seeds():
      result = train(os.path.join(_WORK_DIR.value, "sessions", name.split()[0], f"seed_{seed}"),
                     data_dir, {"embedding_dim": 64, "hidden_dim": 100, **overrides},
                     epochs=_SESSION_EPOCHS.value, seed=seed, batch_size=32, ks=(20,))
      runs.append(result["metrics"])
    record["rows"][name] = mean_over(runs)
  write("sessions", record)
  for name, m in record["rows"].items():
    print(f"{name:24s} MRR@20 {m['mrr@20']:.4f} HR@20 {m['hr@20']:.4f} NDCG@20 {m['ndcg@20']:.4f} "
          f"PPL {m['perplexity']:.1f}")


# Figure 5.


def retrain() -> None:
  from models import hrnn_meta  # pylint: disable=g-import-not-at-top
  from models import losses  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top

  data_dir = prepared("ml100k_temporal", "movielens", _shared("movielens_100k"),
                      SplitConfig(protocol=schema.TEMPORAL))
  data = data_spec_lib.read(data_dir)
  log = read_timelines(data_dir, "test")  # temporal: the test split holds every event
  all_items = np.concatenate(log[schema.ITEMS])
  all_times = np.concatenate(log[schema.TIMESTAMPS])
  start_time, end_time = float(all_times.min()), float(all_times.max()) + 1
  offline_end = start_time + 0.7 * (end_time - start_time)
  step, window, trend_window = (_RETRAIN_STEP_DAYS.value * DAY, _RETRAIN_WINDOW_DAYS.value * DAY,
                                _TREND_DAYS.value * DAY)
  mean, std = feedback_moments(data_dir)
  overrides = dict(embedding_dim=64, hidden_dim=128, max_length=32, feedback_mean=mean,
                   feedback_std=std)

  def block(begin, end, target_time=None):
    """Timelines cut to events in [begin, end); with target_time, target_start there."""
    rows = {key: [] for key in (schema.ITEMS, schema.TIMESTAMPS, schema.FEEDBACK,
                                schema.USER_FEATURES)}
    starts = []
    for u in range(len(log[schema.ITEMS])):
      times = log[schema.TIMESTAMPS][u]
      keep = (times >= begin) & (times < end)
      if keep.sum() < 2:
        continue
      first = 0 if target_time is None else int((times[keep] < target_time).sum())
      for key in (schema.ITEMS, schema.TIMESTAMPS, schema.FEEDBACK):
        rows[key].append(log[key][u][keep])
      rows[schema.USER_FEATURES].append(log[schema.USER_FEATURES][u])
      starts.append(first)
    dtypes = {schema.FEEDBACK: tf.float32}
    out = {key: tf.ragged.constant([list(r) for r in value], dtypes.get(key, tf.int64),
                                   ragged_rank=1) for key, value in rows.items()}
    out[schema.TARGET_START] = tf.constant(starts, tf.int64)
    out[schema.IMPRESSIONS] = tf.ragged.constant([[]] * len(starts), tf.int64, ragged_rank=1)
    out[schema.IMPRESSION_TIMESTAMPS] = out[schema.IMPRESSIONS]
    return out

  def build(trend, seed):
    tf_keras.utils.set_random_seed(seed)
    config = hrnn_meta.HRNNMetaConfig(**overrides, trend_correction=trend)
    model = hrnn_meta.HRNNMeta(config, data=data)
    model.create_variables()
    return model, tf_keras.optimizers.Adam(1e-3)

  loss_fn = losses.RetrievalLoss(losses.SoftmaxConfig(num_negatives=1_000_000),
                                 num_items=data.num_items)

  def fit(model, optimizer, begin, end, seed):
    spec = model.sample_spec()
    features = samples.pad(spec.training_batch(block(begin, end), data.pad_id),
                           spec.paddings(data, training=True))
    count = int(features[names.HISTORY].shape[0])
    batches = tf.data.Dataset.from_tensor_slices(features).shuffle(count, seed=seed).batch(64)

    @tf.function
    def step(batch):
      with tf.GradientTape() as tape:
        outputs = model(batch, training=True)
        head = outputs[names.HEADS]["next_item"]
        loss = tf.reduce_sum(loss_fn(model.candidates(), head)) / 64.0
      variables = model.trainable_variables
      optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    for _ in range(int(math.ceil(_RETRAIN_EPOCHS.value))):
      for batch in batches:
        step(batch)
    return count

  def evaluate(model, features, trend_counts=None):
    if trend_counts is not None:
      model.set_trend(trend_counts)
    dataset = tf.data.Dataset.from_tensor_slices(features).batch(256)
    candidates = model.candidates()
    return evaluation.evaluate(user_vectors_fn=model.user_vectors, item_embeddings=candidates.vectors,
                               item_bias=candidates.bias, dataset=dataset, num_items=data.num_items,
                               protocol=schema.TEMPORAL, ks=(10, 20)).metrics

  def recent_popular(counts, features):
    user_fn, table = evaluation.popularity_scorer(counts)
    return evaluation.evaluate(user_vectors_fn=user_fn, item_embeddings=table,
                               dataset=tf.data.Dataset.from_tensor_slices(features).batch(256),
                               num_items=data.num_items, protocol=schema.TEMPORAL,
                               ks=(10, 20)).metrics

  curves = {name: [] for name in ("offline", "offline + trend", "online", "online + trend",
                                  "recent popular")}
  seed = seeds()[0]
  offline, offline_optimizer = build(False, seed)
  fit(offline, offline_optimizer, start_time, offline_end, seed)
  offline_trend, offline_trend_optimizer = build(True, seed)
  offline_trend.set_trend(popularity.window_counts(all_items, all_times, start_time, offline_end,
                                                   data.num_items))
  fit(offline_trend, offline_trend_optimizer, start_time, offline_end, seed)
  online, online_optimizer = build(False, seed)
  online_trend, online_trend_optimizer = build(True, seed)
  begin = offline_end
  index = 0
  while begin + step <= end_time:
    end = begin + step
    trend_counts = popularity.window_counts(all_items, all_times, begin - trend_window, begin,
                                            data.num_items)
    train_counts = popularity.window_counts(all_items, all_times, begin - window, begin,
                                            data.num_items)
    online_trend.set_trend(train_counts)  # train against the training window's popularity
    fit(online, online_optimizer, begin - window, begin, seed)
    fit(online_trend, online_trend_optimizer, begin - window, begin, seed)
    spec = online.sample_spec()
    features = samples.pad(spec.evaluation_batch(block(0, end, target_time=begin)),
                           spec.paddings(data, evaluation=True))
    results = {"offline": evaluate(offline, features),
               "offline + trend": evaluate(offline_trend, features, trend_counts),
               "online": evaluate(online, features),
               "online + trend": evaluate(online_trend, features, trend_counts),
               "recent popular": recent_popular(trend_counts, features)}
    for name, metrics in results.items():
      curves[name].append({"window": index, "start": begin, **metrics})
    logging.info("retrain window %d: %s", index,
                 {k: round(v["recall@20"], 4) for k, v in results.items()})
    begin, index = end, index + 1
  record = {"setting": f"ML-100K, offline: first 70% of the time span; online: the last "
                       f"{_RETRAIN_WINDOW_DAYS.value:g} days before each "
                       f"{_RETRAIN_STEP_DAYS.value:g}-day test window (warm-started, "
                       f"{_RETRAIN_EPOCHS.value:g} epochs); trend: log q of the last "
                       f"{_TREND_DAYS.value:g} days", "curves": curves,
            "mean": {name: mean_over([{k: v for k, v in w.items() if k not in ("window", "start")}
                                      for w in windows]) for name, windows in curves.items()}}
  write("retrain", record)
  svg_plot(os.path.join(_WORK_DIR.value, "retrain.svg"),
           {name: [(w["window"], w["recall@20"]) for w in windows]
            for name, windows in curves.items()},
           title="Retraining with item trend correction (ML-100K)",
           xlabel=f"test window ({_RETRAIN_STEP_DAYS.value:g} days each)", ylabel="Recall@20")
  for name, metrics in record["mean"].items():
    print(f"{name:16s} Recall@20 {metrics['recall@20']:.4f} NDCG@20 {metrics['ndcg@20']:.4f}")


# Throughput.


def throughput() -> None:
  from models import hrnn_meta  # pylint: disable=g-import-not-at-top
  from models import losses  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top

  length = 32
  record = {"setting": f"GRU 256 units, D 64, BPTT {length}, batch 32 windows "
                       f"(1024 targets a step; dense at 1M items: 8), AdaGrad 0.1; sampled: "
                       f"{_THROUGHPUT_NEGATIVES.value} negatives from counts^0.75 (Zipf "
                       f"counts); dense: the full softmax; one CPU process",
            "rows": []}
  for num_items in (int(n) for n in _THROUGHPUT_ITEMS.value):
    counts = np.maximum(np.round(1e7 / np.arange(1, num_items + 1)), 1).astype(np.float32)
    data = data_spec_lib.DataSpec.for_catalog(num_items, item_counts=counts)
    rng = np.random.default_rng(0)
    share = counts / counts.sum()
    for name, negatives in (("sampled", _THROUGHPUT_NEGATIVES.value), ("dense", 10**9)):
      # The dense softmax's [rows, items] logits are kept under 1 GB (3 such tensors
      # live at once): fewer windows per step at 1M items; items/s is per target.
      batch = 32 if name == "sampled" else int(max(1, min(32, 2.6e8 // (length * num_items))))
      tf_keras.utils.set_random_seed(0)
      model = hrnn_meta.HRNNMeta(hrnn_meta.HRNNMetaConfig(max_length=length), data=data)
      model.create_variables()
      optimizer = tf_keras.optimizers.Adagrad(0.1)
      loss_fn = losses.RetrievalLoss(losses.SoftmaxConfig(num_negatives=negatives,
                                                          sampler=losses.UNIGRAM),
                                     num_items=num_items, item_counts=counts)
      items = rng.choice(num_items, size=[batch, length + 1], p=share)
      features = {names.HISTORY: tf.constant(items[:, :-1], tf.int64),
                  names.HISTORY_LENGTH: tf.fill([batch], tf.constant(length, tf.int64)),
                  names.LABELS: tf.constant(items[:, 1:], tf.int64),
                  names.LABEL_WEIGHTS: tf.ones([batch, length])}

      @tf.function
      def step():
        with tf.GradientTape() as tape:
          head = model(features, training=True)[names.HEADS]["next_item"]
          loss = tf.reduce_sum(loss_fn(model.candidates(), head)) / batch
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

      step()
      step()  # traced and warm
      count, started = 0, time.time()
      while time.time() - started < _THROUGHPUT_SECONDS.value or count < 3:
        step().numpy()
        count += 1
      seconds = time.time() - started
      row = {"items": num_items, "softmax": name, "steps": count, "batch": batch,
             "ms_per_step": 1000 * seconds / count,
             "items_per_second": count * batch * length / seconds}
      record["rows"].append(row)
      print(row)
      del model, optimizer
  write("throughput", record)
  svg_plot(os.path.join(_WORK_DIR.value, "throughput.svg"),
           {name: [(r["items"], r["items_per_second"]) for r in record["rows"]
                   if r["softmax"] == name] for name in ("sampled", "dense")},
           title="Training throughput by catalog size (2-core CPU)", xlabel="items",
           ylabel="items/s", logx=True)


# Report.

# The paper's figures, for the report's side-by-side columns.
PAPER_TABLE8 = {"ml-1m": {"IS": (23_000, 377, 0.128), "dense": (23_000, 409, 0.123)},
                "Taobao": {"IS": (7_800, 17_600, 0.15), "dense": (631, 119_000, 0.08)}}
PAPER_TABLE1 = {"popularity": 2228, "item features of the last item": 1342, "sequence": 447,
                "+ time controls (HRNN-meta)": 410}
PAPER_TABLE7 = {"random choice": (0.109, 0.039, 0.041, 0.075, 0.187),
                "HRNN-meta (lambda ~ U[0, 1])": (0.323, 0.162, 0.133, 0.208, 0.388)}
PAPER_TABLE6 = {"popular items": (0.001, 0.006, 0.002, 17683), "GRU": (0.301, 0.694, 0.451, 225),
                "HRNN (time controls)": (0.314, 0.708, 0.464, 204)}


def _load(path: str) -> Optional[Dict[str, Any]]:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def report() -> None:
  """Prints the markdown tables of docs/hrnn_meta.md from the JSON results found."""
  out = []
  load = lambda name: _load(os.path.join(_WORK_DIR.value, f"{name}.json"))
  record = load("table8")
  if record:
    out += [f"### Table 8: importance sampling vs dense softmax\n\n{record['setting']}.\n",
            "| output | items/s (train) | PPL | NDCG@25 | HR@25 | MRR@25 | paper ml-1m: items/s, "
            "PPL, NDCG |", "|---|---|---|---|---|---|---|"]
    for name in ("IS", "dense"):
      m, sd = record[name], record[name + "_std"]
      paper = PAPER_TABLE8["ml-1m"][name]
      out.append(f"| {name} | {m['items_per_second']:,.0f} | {m['perplexity']:.1f} +- "
                 f"{sd['perplexity']:.1f} | {m['ndcg@25']:.4f} +- {sd['ndcg@25']:.4f} | "
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
      spread = f" +- {sd['perplexity']:.1f}" if sd else ""
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
    out += ["", f"User {example['user']}, last items: " + "; ".join(example["last_items"]) + ".", "",
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
  quality = {}
  for name in sorted(os.listdir(_QUALITY_DIR.value)) if os.path.isdir(_QUALITY_DIR.value) else ():
    if name.startswith("hrnn_meta") and name.endswith(".json"):
      for dataset, runs in (_load(os.path.join(_QUALITY_DIR.value, name)) or {}).get("runs", {}).items():
        quality.setdefault(dataset, []).extend(runs.get("hrnn_meta", []))
  if quality:
    out += ["### S3-Rec protocol (benchmarks/quality.py)\n",
            "| data | seeds | HR@10 | NDCG@10 | HR@20 | NDCG@20 |", "|---|---|---|---|---|---|"]
    for dataset, runs in quality.items():
      m = mean_over([r["metrics"] for r in runs])
      out.append(f"| {dataset} | {','.join(str(r['seed']) for r in runs)} | {m['hr@10']:.4f} | "
                 f"{m['ndcg@10']:.4f} | {m['hr@20']:.4f} | {m['ndcg@20']:.4f} |")
    out.append("")
  text = "\n".join(out) if out else "(no results found)"
  with open(os.path.join(_WORK_DIR.value, "report.md"), "w") as f:
    f.write(text + "\n")
  print(text)


def main(argv):
  del argv
  unknown = sorted(set(_EXPERIMENTS.value) - set(EXPERIMENTS))
  if unknown:
    raise ValueError(f"--experiments: unknown {unknown}; choose from {EXPERIMENTS}.")
  os.makedirs(_WORK_DIR.value, exist_ok=True)
  for name in _EXPERIMENTS.value:
    globals()[name]()


if __name__ == "__main__":
  app.run(main)
