r"""DSS's own experiments on amazon_beauty: Table 2's ablation and section 4.3's robustness.

    python benchmarks/dss_experiments.py --experiment=ablation --seeds=0,1,2
    python benchmarks/dss_experiments.py --experiment=robustness --noise=0.1,0.2,0.3,0.4,0.5
    python benchmarks/dss_experiments.py --experiment=protocols \
        --runs=dss=runs/quality/amazon_beauty/dss/seed_0
    python benchmarks/dss_experiments.py --experiment=gradients \
        --runs=dss=runs/quality/amazon_beauty/dss/seed_0

Both train with the trainer library at the S3-Rec protocol's settings (preset `s3rec`:
Adam 1e-3, batch 256, length 50, D 64, full softmax; `--epochs` passes over the
model's training windows, the checkpoint with the best valid NDCG@10 tested), on the
leave-last-one-out split of ../shared/data/amazon_beauty (`--shared_dir`), and report
each run under two protocols:

- full ranking over all 12,101 items with the history masked (the project's protocol,
  docs/evaluation.md): HR@10, NDCG@10;
- the paper's (section 4.1, after BERT4Rec): the test item ranked among 100 negatives
  drawn by popularity (training counts) from the items the user has not interacted
  with: Recall@1/5/10, NDCG@5/10, MRR. Computed from the run's export (its serving
  signature and candidates), so it scores exactly what is served; ties pessimistic.

`ablation`: DSS, DSS without seq2seq (Table 2 variant 1), DSS reconstructing the next
3 items one by one (variant 3) and every future item one by one (variant 2), and the
`sasrec` baseline, per seed.

`robustness` (Figure 4): the training clicks of each user (all but the last two, the
validation and test targets) are replaced with uniformly drawn items with probability
`--noise`; DSS and DSS without seq2seq are trained on each corrupted copy and their
full-ranking NDCG@10 is divided by the clean one. The plot goes to `--plot`.

`protocols`: no training; each `--runs` entry VARIANT=RUN_DIR is a finished run (its
metrics.json and export, e.g. from `benchmarks/quality.py --export`), reported under
both protocols in the ablation's table.

`gradients`: no training; for each `--runs` entry (a finished run with the latent
seq2seq), at its initialization (the run's seed) and at its best valid checkpoint, the
gradients of eq 7's two terms, seq2item and seq2seq, over `--gradient_batches`
training batches (dropout on, as in training): per variable group (item table, SASRec
encoder, disentanglement, all) their norms (the root of the batches' summed squares)
and cosine. Run from the repository root when the run's data_dir is relative.

Results: `--work_dir`/dss_EXPERIMENT.json; docs/dss.md.
"""

import dataclasses
import json
import math
import os
from typing import Dict, List

from absl import app
from absl import flags
from absl import logging
import numpy as np

from common import files
from common import names
from input_pipeline import data_spec
from input_pipeline import dataset as dataset_lib
from input_pipeline import prepare
from retrieval import requests
from trainer import config as config_lib
import plots
import tensorflow as tf  # pylint: disable=g-bad-import-order  (after our packages: Keras 2)
import tf_keras

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET = "amazon_beauty"
BEAUTY_FILES = ("Beauty.txt", "Beauty_item2attributes.json")
# Table 2 of the paper: the method and its variants, as `dss` model parameters.
VARIANTS = {
    "dss": {},
    "dss_no_seq2seq": {"seq2seq": "none"},
    "dss_next_3_items": {"seq2seq": "next_items", "reconstruct_items": 3},
    "dss_all_future_items": {"seq2seq": "next_items", "reconstruct_items": 50},
}
PAPER_TABLE_2 = {  # Beauty (BERT4Rec's processing), 100 popularity-sampled negatives
    "dss": (0.1522, 0.3225, 0.4171, 0.2404, 0.2709, 0.2448),
    "dss_no_seq2seq": (0.1358, 0.3002, 0.3891, 0.2369, 0.2675, 0.2420),
    "dss_all_future_items": (0.1071, 0.2709, 0.3744, 0.1916, 0.2251, 0.1992),
    "dss_next_3_items": (0.1202, 0.2914, 0.3898, 0.2084, 0.2403, 0.2139),
}
SAMPLED_METRICS = ("recall@1", "recall@5", "recall@10", "ndcg@5", "ndcg@10", "mrr")

_EXPERIMENT = flags.DEFINE_enum("experiment", "ablation",
                                ["ablation", "robustness", "protocols", "gradients"],
                                "Which experiment.")
_SHARED_DIR = flags.DEFINE_string(
    "shared_dir", os.environ.get("DCG_SHARED_DIR", os.path.join(os.path.dirname(_REPO_ROOT), "shared")),
    "Folder holding data/amazon_beauty/ (read-only).")
_WORK_DIR = flags.DEFINE_string("work_dir", os.path.join(_REPO_ROOT, "runs", "dss"),
                                "Prepared data, runs and results go here.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Training seeds.")
_EPOCHS = flags.DEFINE_float("epochs", 60.0, "Passes over the training windows.")
_EVAL_EVERY_EPOCHS = flags.DEFINE_float("eval_every_epochs", 5.0, "Valid evaluations.")
_PATIENCE = flags.DEFINE_integer("patience", 5, "Valid evaluations without improvement "
                                 "before a run stops.")
_VARIANTS = flags.DEFINE_list("variants", list(VARIANTS) + ["sasrec"], "ablation: runs.")
_NOISE = flags.DEFINE_list("noise", ["0.1", "0.2", "0.3", "0.4", "0.5"],
                           "robustness: fractions of training clicks replaced.")
_NUM_NEGATIVES = flags.DEFINE_integer("sampled_negatives", 100, "The paper's protocol.")
_MODEL_PARAM = flags.DEFINE_multi_string("model_param", [], "NAME=VALUE for every dss run.")
_RUNS = flags.DEFINE_list("runs", [], "protocols, gradients: VARIANT=RUN_DIR of finished runs "
                          "(exported, for protocols).")
_GRADIENT_BATCHES = flags.DEFINE_integer(
    "gradient_batches", 32, "gradients: training batches (32: one shuffle-and-bucket window, so "
    "every length bucket is in).")
_PLOT = flags.DEFINE_string("plot", os.path.join(_REPO_ROOT, "docs", "dss_robustness.png"),
                            "robustness: the figure.")


def prepared(name: str, source_dir: str) -> str:
  data_dir = os.path.join(_WORK_DIR.value, "data", name)
  if not os.path.exists(os.path.join(data_dir, "stats.json")):
    prepare.prepare_dataset(prepare.PrepareConfig(output_dir=data_dir, dataset=DATASET,
                                                  input_path=source_dir))
  return data_dir


def corrupted_copy(noise: float, seed: int = 0) -> str:
  """Beauty.txt with each training click replaced by a uniform item with prob `noise`."""
  source = os.path.join(_SHARED_DIR.value, "data", DATASET)
  folder = os.path.join(_WORK_DIR.value, "raw", f"noise_{noise:g}")
  if not os.path.exists(os.path.join(folder, BEAUTY_FILES[0])):
    rng = np.random.default_rng(seed)
    with open(os.path.join(source, BEAUTY_FILES[0])) as f:
      lines = [line.split() for line in f if line.strip()]
    catalog = sorted({item for line in lines for item in line[1:]})
    corrupted = []
    for user, *items in lines:
      training = len(items) - 2  # the last two are the validation and test targets
      replace = rng.random(len(items)) < noise
      replace[max(training, 0):] = False
      items = [catalog[rng.integers(len(catalog))] if r else item
               for item, r in zip(items, replace)]
      corrupted.append(" ".join([user] + items))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, BEAUTY_FILES[0]), "w") as f:
      f.write("\n".join(corrupted) + "\n")
    with open(os.path.join(source, BEAUTY_FILES[1])) as src, \
        open(os.path.join(folder, BEAUTY_FILES[1]), "w") as dst:
      dst.write(src.read())
  return prepared(f"beauty_noise_{noise:g}", folder)


def train(model: str, overrides: Dict[str, str], data_dir: str, run: str,
          seed: int) -> Dict[str, object]:
  """One run at the s3rec preset with validation selection; returns its metrics.json."""
  from trainer import loop  # pylint: disable=g-import-not-at-top  (heavy)

  base = config_lib.s3rec()
  config = dataclasses.replace(
      base, model_dir=os.path.join(_WORK_DIR.value, "runs", run, f"seed_{seed}"),
      data=dataclasses.replace(base.data, data_dir=data_dir),
      model=config_lib.ModelConfig(model, {**base.model.overrides, **overrides}))
  steps_per_epoch = loop.training_samples_per_epoch(config) / config.data.batch_size
  eval_every = max(1, round(_EVAL_EVERY_EPOCHS.value * steps_per_epoch))
  config = dataclasses.replace(
      config,
      schedule=dataclasses.replace(config.schedule, seed=seed, log_every=min(eval_every, 100),
                                   train_steps=math.ceil(_EPOCHS.value * steps_per_epoch)),
      checkpoint=dataclasses.replace(config.checkpoint, every_steps=eval_every),
      eval=dataclasses.replace(config.eval, ks=(10, 20), every_steps=eval_every,
                               select_best="ndcg@10", patience=_PATIENCE.value))
  logging.info("training %s (%s) seed %d: %d steps into %s", run, overrides, seed,
               config.schedule.train_steps, config.model_dir)
  return loop.train_and_evaluate(config)


def sampled_protocol(export_dir: str, data_dir: str, seed: int) -> Dict[str, float]:
  """The paper's protocol: the test item among `--sampled_negatives` popularity-drawn items."""
  data = data_spec.read(data_dir)
  loaded = tf.saved_model.load(export_dir)
  serve = loaded.signatures[names.SERVING_SIGNATURE]
  items = loaded.signatures[names.CANDIDATES_SIGNATURE]()
  embeddings, bias = items[names.EMBEDDINGS].numpy(), items[names.ITEM_BIAS].numpy()
  index = {raw: i for i, raw in enumerate(data.item_ids)}
  users = [u for u in requests.test_users(data_dir, data.stats["splits"]["test"]["num_users"])
           if u.history and u.targets]
  popularity = data.item_counts / data.item_counts.sum()
  rng = np.random.default_rng(seed)
  ranks = []
  for start in range(0, len(users), 512):
    batch = users[start:start + 512]
    inputs = requests.to_inputs(batch, serve.structured_input_signature[1])
    vectors = serve(**{k: tf.constant(v) for k, v in inputs.items()})[names.USER_VECTORS].numpy()
    for user, user_vectors in zip(batch, vectors):
      target = index[user.targets[0]]
      seen = {index[i] for i in user.history} | {target}
      allowed = popularity.copy()
      allowed[list(seen)] = 0
      negatives = rng.choice(len(allowed), size=_NUM_NEGATIVES.value, replace=False,
                             p=allowed / allowed.sum())
      candidates = np.concatenate([[target], negatives])
      scores = (user_vectors @ embeddings[candidates].T).max(axis=0) + bias[candidates]
      ranks.append(int((scores[1:] >= scores[0]).sum()))  # pessimistic ties
  ranks = np.array(ranks)
  dcg = lambda k: np.where(ranks < k, 1 / np.log2(ranks + 2), 0).mean()
  return {"recall@1": float((ranks < 1).mean()), "recall@5": float((ranks < 5).mean()),
          "recall@10": float((ranks < 10).mean()), "ndcg@5": float(dcg(5)),
          "ndcg@10": float(dcg(10)), "mrr": float((1 / (ranks + 1)).mean()),
          "users": len(ranks)}


def summarize(result: Dict[str, object], seed: int) -> Dict[str, object]:
  """A run's metrics.json under both protocols."""
  if not result.get("export_dir"):
    raise ValueError(f"the run in {result['config']['model_dir']} has no export: the sampled "
                     "protocol scores the served model")
  return {"seed": seed, "step": result["step"],
          "full": {k: result["metrics"][k] for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20")},
          "valid_ndcg@10": result["valid"]["metrics"]["ndcg@10"],
          "sampled": sampled_protocol(result["export_dir"], result["data_dir"], seed)}


def run_once(model: str, overrides, data_dir: str, run: str, seed: int) -> Dict[str, object]:
  return summarize(train(model, overrides, data_dir, run, seed), seed)


def protocols() -> Dict[str, List[Dict[str, object]]]:
  results = {}
  for variant, run_dir in finished_runs().items():
    with open(os.path.join(run_dir, "metrics.json")) as f:
      result = json.load(f)
    results.setdefault(variant, []).append(summarize(result, result["config"]["schedule"]["seed"]))
  return results


def finished_runs() -> Dict[str, str]:
  """`--runs` as {variant: run directory}."""
  runs = {}
  for entry in _RUNS.value:
    variant, _, run_dir = entry.partition("=")
    if not run_dir:
      raise app.UsageError(f"--runs entries are VARIANT=RUN_DIR, got {entry!r}")
    runs[variant] = run_dir
  return runs


GRADIENT_GROUPS = ("item_embedding", "encoder", "disentangle")


def gradient_alignment(run_dir: str, at_best: bool) -> Dict[str, Dict[str, float]]:
  """{group: {"seq2item", "seq2seq" (gradient norms), "cosine"}} of a finished DSS run."""
  from trainer import checkpoints, export, loop  # pylint: disable=g-import-not-at-top  (heavy)

  with open(os.path.join(run_dir, "metrics.json")) as f:
    config = json.load(f)["config"]
  data = data_spec.read(config["data"]["data_dir"])
  tf_keras.utils.set_random_seed(config["schedule"]["seed"])
  model = export.build_model(config["model"]["name"], config_lib.build_model_config(
      config_lib.ModelConfig(**config["model"]), max_length=config["data"]["max_length"]), data)
  if at_best:
    best_dir = os.path.join(run_dir, loop.CHECKPOINT_SUBDIR, loop.BEST_SUBDIR)
    export.restore_model(model, checkpoints.read_best(best_dir)["checkpoint"])
  loss = loop.make_loss(config_lib.LossConfig(**config["loss"]), data)
  batch_size = config["data"]["batch_size"]
  batches = dataset_lib.make_dataset(dataset_lib.InputConfig(
      data_dir=data.data_dir, batch_size=batch_size, seed=0, num_epochs=1, drop_remainder=True,
      deterministic=True), model.sample_spec(), data)
  sums = {group: np.zeros(3) for group in GRADIENT_GROUPS + ("all",)}  # |a|^2, |b|^2, a.b
  for batch in batches.take(_GRADIENT_BATCHES.value):
    with tf.GradientTape(persistent=True) as tape:
      outputs = model(batch, training=True)
      candidates = model.candidates()
      terms = loop.loss_terms(outputs, {name: loss(candidates, head)
                                        for name, head in outputs[names.HEADS].items()}, batch_size)
    variables = model.trainable_variables
    for variable, seq2item, seq2seq in zip(variables, tape.gradient(terms["next_item"], variables),
                                           tape.gradient(terms["seq2seq"], variables)):
      a, b = (np.zeros(variable.shape) if g is None else tf.convert_to_tensor(g).numpy()
              for g in (seq2item, seq2seq))
      products = np.array([np.sum(a * a), np.sum(b * b), np.sum(a * b)])
      sums["all"] += products
      for group in GRADIENT_GROUPS:
        if f"/{group}/" in variable.name:
          sums[group] += products
  return {group: {"seq2item": float(np.sqrt(aa)), "seq2seq": float(np.sqrt(bb)),
                  "cosine": float(ab / max(np.sqrt(aa * bb), 1e-30))}
          for group, (aa, bb, ab) in sums.items()}


def gradients() -> Dict[str, Dict[str, Dict[str, Dict[str, float]]]]:
  return {variant: {moment: gradient_alignment(run_dir, moment == "best")
                    for moment in ("initialization", "best")}
          for variant, run_dir in finished_runs().items()}


def format_gradients(results) -> str:
  lines = ["| run | at | group | seq2item gradient norm | seq2seq | ratio | cosine |",
           "|---|---|---|---|---|---|---|"]
  for variant, by_moment in results.items():
    for moment, by_group in by_moment.items():
      for group, g in by_group.items():
        lines.append(f"| {variant} | {moment} | {group} | {g['seq2item']:.3f} | {g['seq2seq']:.3f} | "
                     f"{g['seq2seq'] / max(g['seq2item'], 1e-30):.2f} | {g['cosine']:+.3f} |")
  return "\n".join(lines)


def model_params() -> Dict[str, str]:
  params = {}
  for entry in _MODEL_PARAM.value:
    name, _, value = entry.partition("=")
    params[name] = value
  return params


def ablation() -> Dict[str, List[Dict[str, object]]]:
  data_dir = prepared(DATASET, os.path.join(_SHARED_DIR.value, "data", DATASET))
  results = {}
  for variant in _VARIANTS.value:
    model = "sasrec" if variant == "sasrec" else "dss"
    overrides = {} if model == "sasrec" else {**model_params(), **VARIANTS[variant]}
    results[variant] = [run_once(model, overrides, data_dir, variant, int(seed))
                        for seed in _SEEDS.value]
  return results


def _mean(runs, protocol, metric):
  return float(np.mean([run[protocol][metric] for run in runs]))


def format_ablation(results) -> str:
  lines = ["| variant | HR@10 | NDCG@10 (full ranking) | " +
           " | ".join(m.replace("recall", "Recall").replace("ndcg", "NDCG").replace("mrr", "MRR")
                      for m in SAMPLED_METRICS) + " (100 sampled) | paper Recall@10 / NDCG@10 |",
           "|---|---|---|" + "---|" * len(SAMPLED_METRICS) + "---|"]
  for variant, runs in results.items():
    paper = PAPER_TABLE_2.get(variant)
    lines.append(f"| {variant} | {_mean(runs, 'full', 'hr@10'):.4f} | "
                 f"{_mean(runs, 'full', 'ndcg@10'):.4f} | " +
                 " | ".join(f"{_mean(runs, 'sampled', m):.4f}" for m in SAMPLED_METRICS) +
                 f" | {f'{paper[2]:.4f} / {paper[4]:.4f}' if paper else ''} |")
  return "\n".join(lines)


def robustness() -> Dict[str, Dict[str, List[Dict[str, object]]]]:
  levels = [0.0] + [float(n) for n in _NOISE.value]
  results = {}
  for noise in levels:
    data_dir = (prepared(DATASET, os.path.join(_SHARED_DIR.value, "data", DATASET))
                if noise == 0 else corrupted_copy(noise))
    results[f"{noise:g}"] = {
        variant: [run_once("dss", {**model_params(), **VARIANTS[variant]}, data_dir,
                           f"{variant}_noise_{noise:g}", int(seed)) for seed in _SEEDS.value]
        for variant in ("dss", "dss_no_seq2seq")}
  return results


def plot_robustness(results, path: str) -> None:
  levels = sorted(results, key=float)
  series = {}
  for variant, label in (("dss", "DSS (seq2item + seq2seq)"),
                         ("dss_no_seq2seq", "seq2item only")):
    clean = _mean(results["0"][variant], "full", "ndcg@10")
    series[label] = [(float(level), _mean(results[level][variant], "full", "ndcg@10") / clean)
                     for level in levels]
  plots.line_plot(path, series, title="amazon_beauty, full ranking",
                  xlabel="fraction of training clicks replaced by random items",
                  ylabel="NDCG@10 / NDCG@10 on clean data")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _EXPERIMENT.value in ("ablation", "protocols"):
    results = ablation() if _EXPERIMENT.value == "ablation" else protocols()
    print(format_ablation(results))
  elif _EXPERIMENT.value == "gradients":
    results = gradients()
    print(format_gradients(results))
  else:
    results = robustness()
    plot_robustness(results, _PLOT.value)
    print(f"plot: {_PLOT.value}")
  path = os.path.join(_WORK_DIR.value, f"dss_{_EXPERIMENT.value}.json")
  files.write_json(path, results)
  print(json.dumps(results, indent=1)[:4000])
  print(f"written to {path}")


if __name__ == "__main__":
  app.run(main)
