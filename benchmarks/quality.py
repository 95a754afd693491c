r"""Quality on the S3-Rec data sets, next to the published full-ranking table.

    python benchmarks/quality.py --models=poprec                              # minutes
    python benchmarks/quality.py --models=sasrec --seeds=0,1,2 --epochs=200   # hours on 2 CPUs

For each of amazon_beauty, amazon_toys and lastfm_hetrec_s3rec (read-only, from
`--shared_dir`/data, default `$DCG_SHARED_DIR` or ../shared beside the repository):

1. prepare it once into `--work_dir`/data/NAME with the leave-last-one-out split
   (last item = test target, second to last = validation target; the test input
   includes the validation item), exactly the S3-Rec protocol;
2. PopRec: rank all items by training count (`trainer.evaluation.popularity_scorer`),
   through the same evaluator as the models. `poprec_all` counts every interaction
   of the data set instead, test targets included: that leaks the test items, but it
   is how the S3-Rec table's PopRec row was computed (it reproduces that row), so it
   checks our evaluator against the published numbers;
3. each trained model (`sasrec`, `gru4rec`, `sine`, any registered name), once per
   seed of `--seeds`: train with the trainer library (`trainer.loop.train_and_evaluate`,
   preset `s3rec`: Adam 1e-3, batch 256, length 50, D = 64, full softmax; every
   setting is a flag) in `--work_dir`/NAME/MODEL/seed_S, evaluating the valid split
   every `--eval_every_epochs` and testing the checkpoint with the best valid
   `--select_best` metric (model selection on validation only; the test split is
   evaluated once per run, at the end);
4. evaluate on the test split over ALL items with the user's history masked
   (`--mask_history`, default "all": a re-consumed target is a miss, as S3-Rec and
   RecBole count it), HR and NDCG at `--ks` (5, 10, 20, 50), and print the mean over
   the seeds beside ../shared/BENCHMARKS.md's rows, then every seed's figures.

An epoch is one pass over the model's training samples of the train split (counted
by running its sample builder once): every training prefix for `sine`
(`AllPrefixes`, 131,413 on amazon_beauty), about one window per user for `sasrec` and
`gru4rec` (`AllPositions`: each window trains every prefix in it).

Results also go to `--work_dir`/`--results` (quality.json);
`--report=a.json,b.json` prints several such files as one table. Recorded numbers:
docs/quality.md.
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
from input_pipeline import data_spec
from input_pipeline import dataset as dataset_lib
from input_pipeline import prepare
from input_pipeline import samples
from input_pipeline import schema
from trainer import config as config_lib
from trainer import evaluation
import tensorflow as tf  # pylint: disable=g-bad-import-order  (after our packages: Keras 2)

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = ("amazon_beauty", "amazon_toys", "lastfm_hetrec_s3rec")
POPREC = "poprec"  # training counts
POPREC_ALL = "poprec_all"  # counts over all interactions, test targets included (S3-Rec's)
MAX_LENGTH = 50  # the protocol's history length

_SHARED_DIR = flags.DEFINE_string(
    "shared_dir", os.environ.get("DCG_SHARED_DIR", os.path.join(os.path.dirname(_REPO_ROOT), "shared")),
    "Folder holding data/<dataset>/ (read-only); default $DCG_SHARED_DIR or ../shared.")
_DATASETS = flags.DEFINE_list("datasets", list(DATASETS), "Data sets to run.")
_MODELS = flags.DEFINE_list("models", [POPREC, POPREC_ALL, "sasrec"],
                           f"{POPREC}, {POPREC_ALL} and/or registered model names.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds; the mean is reported.")
_WORK_DIR = flags.DEFINE_string("work_dir", os.path.join(_REPO_ROOT, "runs", "quality"),
                                "Prepared data, training runs and quality.json go here.")
_RESULTS = flags.DEFINE_string("results", "quality.json",
                               "Results file name under --work_dir (one per invocation).")
_KS = flags.DEFINE_list("ks", ["5", "10", "20", "50"], "Cut-offs.")
_MASK_HISTORY = flags.DEFINE_enum("mask_history", "all", list(evaluation.MASK_HISTORY_MODES),
                                  "History masking of the ranking (all: S3-Rec and RecBole).")
_EVAL_BATCH_SIZE = flags.DEFINE_integer("eval_batch_size", 512, "Users ranked together.")
# Training (preset s3rec, then these).
_EPOCHS = flags.DEFINE_float("epochs", 200.0, "Passes over the model's training samples.")
_EVAL_EVERY_EPOCHS = flags.DEFINE_float(
    "eval_every_epochs", 5.0, "Epochs between valid evaluations (candidates for selection).")
_SELECT_BEST = flags.DEFINE_string(
    "select_best", "ndcg@10", "Valid metric whose best checkpoint is tested; empty: the final "
    "step (no selection).")
_PATIENCE = flags.DEFINE_integer(
    "patience", 10, "Stop a run after this many valid evaluations without a better "
    "--select_best metric (0: train all --epochs).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Training batch (preset: 256).")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", None, "Learning rate (preset: 1e-3).")
_OPTIMIZER = flags.DEFINE_enum("optimizer", None, list(config_lib.OPTIMIZERS),
                               "Optimizer (preset: adam).")
_EMBEDDING_DIM = flags.DEFINE_integer("embedding_dim", None, "D (preset: 64).")
_NUM_NEGATIVES = flags.DEFINE_integer(
    "num_negatives", None, "Sampled negatives (preset: more than the catalog = full softmax).")
_MODEL_PARAM = flags.DEFINE_multi_string("model_param", [], "NAME=VALUE model override, "
                                         "e.g. --model_param=num_prototypes=50.")
_EXPORT = flags.DEFINE_bool("export", False, "Export each run's selected checkpoint.")
_REPORT = flags.DEFINE_list("report", None, "Results files (under --work_dir, or paths) of "
                            "earlier invocations: print their tables merged, train nothing.")

# ../shared/BENCHMARKS.md: S3-Rec (CIKM 2020) full-ranking table, history masked.
REFERENCE_COLUMNS = ("PopRec", "GRU4Rec", "SASRec", "S3-Rec")
REFERENCE = {
    "amazon_beauty": {
        "hr@10": (0.0152, 0.0283, 0.0605, 0.0647), "ndcg@10": (0.0068, 0.0137, 0.0318, 0.0327),
        "hr@20": (0.0217, 0.0479, 0.0902, 0.0994), "ndcg@20": (0.0084, 0.0187, 0.0394, 0.0414)},
    "amazon_toys": {
        "hr@10": (0.0113, 0.0176, 0.0675, 0.0700), "ndcg@10": (0.0061, 0.0084, 0.0374, 0.0376),
        "hr@20": (0.0163, 0.0301, 0.0941, 0.1065), "ndcg@20": (0.0073, 0.0116, 0.0441, 0.0468)},
    "lastfm_hetrec_s3rec": {
        "hr@10": (0.0440, 0.0367, 0.0688, 0.0743), "ndcg@10": (0.0203, 0.0187, 0.0390, 0.0427),
        "hr@20": (0.0615, 0.0606, 0.0972, 0.1229)},
}


def prepared_data_dir(name: str) -> str:
  """The leave-last-one-out dataset directory of `name`, prepared on first use."""
  data_dir = os.path.join(_WORK_DIR.value, "data", name)
  if os.path.exists(os.path.join(data_dir, schema.STATS_FILE)):
    return data_dir
  source = os.path.join(_SHARED_DIR.value, "data", name)
  if not os.path.isdir(source):
    raise FileNotFoundError(f"{source!r} not found: pass --shared_dir (the folder holding data/"
                            f"{name}/) or set DCG_SHARED_DIR.")
  logging.info("preparing %s from %s into %s", name, source, data_dir)
  prepare.prepare_dataset(prepare.PrepareConfig(output_dir=data_dir, dataset=name,
                                                input_path=source))
  return data_dir


def history_spec() -> samples.SampleSpec:
  """What PopRec's evaluation batches hold: the history (which it ignores)."""
  return samples.SampleSpec(features=(samples.History(MAX_LENGTH),), training=samples.AllPrefixes())


def all_interaction_counts(data: data_spec.DataSpec) -> np.ndarray:
  """Item counts `[num_items]` over every event: the test split's whole timelines.

  Raises:
    ValueError: the test split does not hold every event (not leave-last-one-out).
  """
  counts = np.zeros([data.num_items], np.float32)
  records = tf.data.TFRecordDataset(schema.split_files(data.data_dir, "test"))
  for timelines in records.batch(4096).map(schema.parse_timelines):
    np.add.at(counts, timelines[schema.ITEMS].flat_values.numpy(), 1)
  if counts.sum() != data.stats["num_events"]:
    raise ValueError(f"{POPREC_ALL} needs every event in the test split (leave-last-one-out); "
                     f"{data.data_dir!r} has {int(counts.sum())} of {data.stats['num_events']} "
                     f"there.")
  return counts


def run_poprec(data: data_spec.DataSpec, ks, counts: np.ndarray) -> Dict[str, float]:
  user_vectors_fn, table = evaluation.popularity_scorer(counts)
  test = dataset_lib.make_dataset(dataset_lib.eval_config(
      data.data_dir, "test", batch_size=_EVAL_BATCH_SIZE.value), history_spec(), data)
  return evaluation.evaluate(user_vectors_fn=user_vectors_fn, item_embeddings=table, dataset=test,
                             num_items=data.num_items, protocol=data.protocol, ks=ks,
                             mask_history=_MASK_HISTORY.value).metrics


def train_config(model: str, data: data_spec.DataSpec, ks, seed: int,
                 run_name: str = "") -> config_lib.TrainConfig:
  """Preset `s3rec` with the flags applied; steps from --epochs of the model's samples.

  The run goes to `--work_dir`/DATA/RUN_NAME (default: the model)/seed_SEED.
  """
  from trainer import loop  # pylint: disable=g-import-not-at-top  (heavy: only when training)

  base = config_lib.s3rec()
  data_config = dataclasses.replace(base.data, data_dir=data.data_dir, max_length=MAX_LENGTH,
                                    **({"batch_size": _BATCH_SIZE.value} if _BATCH_SIZE.value
                                       else {}))
  overrides = dict(base.model.overrides)
  for entry in _MODEL_PARAM.value:
    name, sep, value = entry.partition("=")
    if not sep:
      raise ValueError(f"--model_param expects NAME=VALUE, got {entry!r}.")
    overrides[name.strip()] = value.strip()
  if _EMBEDDING_DIM.value is not None:
    overrides["embedding_dim"] = _EMBEDDING_DIM.value
  optimizer = dataclasses.replace(base.optimizer, **{
      k: v for k, v in (("name", _OPTIMIZER.value), ("learning_rate", _LEARNING_RATE.value))
      if v is not None})
  loss = (base.loss if _NUM_NEGATIVES.value is None
          else dataclasses.replace(base.loss, num_negatives=_NUM_NEGATIVES.value))
  config = dataclasses.replace(
      base, model_dir=os.path.join(_WORK_DIR.value, os.path.basename(data.data_dir),
                                   run_name or model, f"seed_{seed}"),
      data=data_config, model=config_lib.ModelConfig(name=model, overrides=overrides),
      optimizer=optimizer, loss=loss)
  steps_per_epoch = loop.training_samples_per_epoch(config) / data_config.batch_size
  eval_every = max(1, round(_EVAL_EVERY_EPOCHS.value * steps_per_epoch))
  return dataclasses.replace(
      config,
      schedule=dataclasses.replace(base.schedule, train_steps=math.ceil(
          _EPOCHS.value * steps_per_epoch), seed=seed, log_every=min(eval_every, 100)),
      checkpoint=dataclasses.replace(base.checkpoint, every_steps=eval_every),
      eval=dataclasses.replace(base.eval, ks=ks, mask_history=_MASK_HISTORY.value,
                               every_steps=eval_every if _SELECT_BEST.value else 0,
                               select_best=_SELECT_BEST.value, batch_size=_EVAL_BATCH_SIZE.value,
                               patience=_PATIENCE.value if _SELECT_BEST.value else 0),
      export=dataclasses.replace(base.export, enabled=_EXPORT.value))


def run_model(model: str, data: data_spec.DataSpec, ks, seed: int) -> Dict[str, object]:
  """One seed's training run: test metrics of the selected checkpoint, valid, step."""
  from trainer import loop  # pylint: disable=g-import-not-at-top  (heavy: only when training)

  config = train_config(model, data, ks, seed)
  logging.info("training %s on %s (seed %d) for %d steps in %s", model, data.data_dir, seed,
               config.schedule.train_steps, config.model_dir)
  result = loop.train_and_evaluate(config)
  return {"seed": seed, "step": result["step"], "train_steps": config.schedule.train_steps,
          "metrics": result["metrics"], "valid": result["valid"]["metrics"],
          "targets_per_second": result["training"].get("targets_per_second")}


def mean_metrics(runs: List[Dict[str, object]]) -> Dict[str, float]:
  return {key: float(np.mean([run["metrics"][key] for run in runs])) for key in runs[0]["metrics"]}


def format_table(results: Dict[str, Dict[str, Dict[str, float]]], models: List[str], ks,
                 runs: Dict[str, Dict[str, List[Dict[str, object]]]]) -> str:
  """Markdown table: our columns (means over seeds, ± their sample standard deviation when
  there are several), then the S3-Rec table's."""
  header = ["data", "metric"] + [f"{m} (ours)" for m in models] + list(REFERENCE_COLUMNS)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name, by_model in results.items():
    for k in ks:
      for metric in ("hr", "ndcg"):
        key = evaluation.metric_name(metric, k)
        ours = []
        for model in models:
          seeds = runs.get(name, {}).get(model, [])
          spread = (f" ± {np.std([run['metrics'][key] for run in seeds], ddof=1):.4f}"
                    if len(seeds) > 1 else "")
          ours.append(f"{by_model[model][key]:.4f}{spread}" if model in by_model else "")
        reference = REFERENCE.get(name, {}).get(key)
        theirs = [f"{v:.4f}" for v in reference] if reference else [""] * len(REFERENCE_COLUMNS)
        lines.append("| " + " | ".join([name, key.upper()] + ours + theirs) + " |")
  return "\n".join(lines)


def format_seeds(runs: Dict[str, Dict[str, List[Dict[str, object]]]]) -> str:
  """Markdown table: every seed's test HR@10 / NDCG@10 (and its valid NDCG@10, step)."""
  lines = ["| data | model | seed | best step / steps | valid NDCG@10 | HR@10 | NDCG@10 | HR@20 "
           "| NDCG@20 |", "|---|---|---|---|---|---|---|---|---|"]
  for name, by_model in runs.items():
    for model, seeds in by_model.items():
      for run in seeds:
        m = run["metrics"]
        lines.append(f"| {name} | {model} | {run['seed']} | {run['step']} / {run['train_steps']} "
                     f"| {run['valid'].get('ndcg@10', float('nan')):.4f} | {m['hr@10']:.4f} | "
                     f"{m['ndcg@10']:.4f} | {m.get('hr@20', float('nan')):.4f} | "
                     f"{m.get('ndcg@20', float('nan')):.4f} |")
  return "\n".join(lines)


def report(paths: List[str]) -> None:
  """Prints the tables of several results files as one.

  Seeds of one model and data set add up across files (e.g. one file per seed), and
  their mean is taken anew; a seed in several files counts once, the later file's.
  """
  results: Dict[str, Dict[str, Dict[str, float]]] = {}
  by_seed: Dict[str, Dict[str, Dict[int, Dict[str, object]]]] = {}
  models: List[str] = []
  ks: List[int] = []
  for path in paths:
    with open(path if os.path.isabs(path) else os.path.join(_WORK_DIR.value, path)) as f:
      record = json.load(f)
    ks = ks or record["ks"]
    for name, by_model in record["mean"].items():
      results.setdefault(name, {}).update(by_model)
      models += [model for model in by_model if model not in models]
    for name, by_model in record["runs"].items():
      for model, seeds in by_model.items():
        by_seed.setdefault(name, {}).setdefault(model, {}).update(
            {run["seed"]: run for run in seeds})
  runs = {name: {model: [seeds[s] for s in sorted(seeds)] for model, seeds in by_model.items()}
          for name, by_model in by_seed.items()}
  for name, by_model in runs.items():
    for model, seeds in by_model.items():
      results[name][model] = mean_metrics(seeds)
  print(format_table(results, models, ks, runs))
  print()
  print(format_seeds(runs))


def main(argv):
  del argv
  if _REPORT.value:
    report(_REPORT.value)
    return
  ks = tuple(int(k) for k in _KS.value)
  seeds = [int(s) for s in _SEEDS.value]
  unknown = sorted(set(_DATASETS.value) - set(DATASETS))
  if unknown:
    raise ValueError(f"--datasets: {unknown} are not S3-Rec data sets; choose from {DATASETS}.")
  if _SELECT_BEST.value and _SELECT_BEST.value not in config_lib.EvalConfig(ks=ks).metric_names():
    raise ValueError(f"--select_best={_SELECT_BEST.value} is not one of the metrics at --ks={ks}.")
  results: Dict[str, Dict[str, Dict[str, float]]] = {}
  runs: Dict[str, Dict[str, List[Dict[str, object]]]] = {}
  for name in _DATASETS.value:
    data = data_spec.read(prepared_data_dir(name))
    results[name], runs[name] = {}, {}
    for model in _MODELS.value:
      if model == POPREC:
        results[name][model] = run_poprec(data, ks, data.item_counts)
      elif model == POPREC_ALL:
        results[name][model] = run_poprec(data, ks, all_interaction_counts(data))
      else:
        runs[name][model] = [run_model(model, data, ks, seed) for seed in seeds]
        results[name][model] = mean_metrics(runs[name][model])
      logging.info("%s %s: %s", name, model, {k: round(v, 4) for k, v in results[name][model].items()
                                              if k.startswith(("hr@", "ndcg@"))})
  path = os.path.join(_WORK_DIR.value, _RESULTS.value)
  files.write_json(path, {"ks": list(ks), "mask_history": _MASK_HISTORY.value, "seeds": seeds,
                          "epochs": _EPOCHS.value, "select_best": _SELECT_BEST.value,
                          "mean": results, "runs": runs})
  print(format_table(results, list(_MODELS.value), ks, runs))
  if any(runs.values()):
    print()
    print(format_seeds(runs))
  print(f"\nwritten to {path}")


if __name__ == "__main__":
  app.run(main)
