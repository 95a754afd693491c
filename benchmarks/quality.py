r"""Quality on the S3-Rec data sets, next to the published full-ranking table.

    python benchmarks/quality.py --models=poprec                       # minutes
    python benchmarks/quality.py --models=poprec,sine --epochs=20      # hours on 2 CPUs

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
3. each trained model (`sine`, or any registered name): train with the trainer library
   (`trainer.loop.train_and_evaluate`, preset `s3rec`: Adam 1e-3, batch 256, length
   50, D = 64, full softmax; every setting is a flag), in `--work_dir`/NAME/MODEL;
4. evaluate on the test split over ALL items with the user's history masked, HR and
   NDCG at `--ks` (5, 10, 20, 50), and print them beside ../shared/BENCHMARKS.md's rows.

Results also go to `--work_dir`/quality.json. Recorded numbers: docs/quality.md.
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

from input_pipeline import dataset as dataset_lib
from input_pipeline import prepare
from input_pipeline import schema
from trainer import config as config_lib
from trainer import evaluation
import tensorflow as tf  # pylint: disable=g-bad-import-order  (after our packages: Keras 2)

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = ("amazon_beauty", "amazon_toys", "lastfm_hetrec_s3rec")
POPREC = "poprec"  # training counts
POPREC_ALL = "poprec_all"  # counts over all interactions, test targets included (S3-Rec's)

_SHARED_DIR = flags.DEFINE_string(
    "shared_dir", os.environ.get("DCG_SHARED_DIR", os.path.join(os.path.dirname(_REPO_ROOT), "shared")),
    "Folder holding data/<dataset>/ (read-only); default $DCG_SHARED_DIR or ../shared.")
_DATASETS = flags.DEFINE_list("datasets", list(DATASETS), "Data sets to run.")
_MODELS = flags.DEFINE_list("models", [POPREC, POPREC_ALL, "sine"],
                           f"{POPREC}, {POPREC_ALL} and/or registered model names.")
_WORK_DIR = flags.DEFINE_string("work_dir", os.path.join(_REPO_ROOT, "runs", "quality"),
                                "Prepared data, training runs and quality.json go here.")
_KS = flags.DEFINE_list("ks", ["5", "10", "20", "50"], "Cut-offs.")
_MASK_HISTORY = flags.DEFINE_bool("mask_history", True, "Mask the user's history (S3-Rec).")
_EVAL_BATCH_SIZE = flags.DEFINE_integer("eval_batch_size", 512, "Users ranked together.")
# Training (preset s3rec, then these).
_EPOCHS = flags.DEFINE_float("epochs", 20.0, "Passes over the training prefixes (sets "
                             "train_steps = epochs * prefixes / batch_size).")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", None, "Final step; overrides --epochs.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Training batch (preset: 256).")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", None, "Learning rate (preset: 1e-3).")
_OPTIMIZER = flags.DEFINE_enum("optimizer", None, list(config_lib.OPTIMIZERS),
                               "Optimizer (preset: adam).")
_EMBEDDING_DIM = flags.DEFINE_integer("embedding_dim", None, "D (preset: 64).")
_MAX_LENGTH = flags.DEFINE_integer("max_length", None, "History length (preset: 50).")
_NUM_NEGATIVES = flags.DEFINE_integer(
    "num_negatives", None, "Sampled negatives (preset: more than the catalog = full softmax).")
_MODEL_PARAM = flags.DEFINE_multi_string("model_param", [], "NAME=VALUE model override, "
                                         "e.g. --model_param=num_prototypes=50.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 0, "Steps between valid evaluations (0: end).")
_SELECT_BEST = flags.DEFINE_string(
    "select_best", "", "Valid metric (e.g. ndcg@10) whose best checkpoint is tested "
    "(RecBole's best-validation protocol); needs --eval_every. Empty: the final step.")
_SEED = flags.DEFINE_integer("seed", 0, "Training seed.")

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


def all_interaction_counts(data_dir: str) -> np.ndarray:
  """Item counts `[num_items]` over every event: the test split's whole timelines.

  Raises:
    ValueError: the test split does not hold every event (not leave-last-one-out).
  """
  stats = schema.read_stats(data_dir)
  counts = np.zeros([int(stats["num_items"])], np.float32)
  records = tf.data.TFRecordDataset(schema.split_files(data_dir, "test"))
  for timelines in records.batch(4096).map(schema.parse_timelines):
    np.add.at(counts, timelines[schema.ITEMS].flat_values.numpy(), 1)
  if counts.sum() != stats["num_events"]:
    raise ValueError(f"{POPREC_ALL} needs every event in the test split (leave-last-one-out); "
                     f"{data_dir!r} has {int(counts.sum())} of {stats['num_events']} there.")
  return counts


def run_poprec(data_dir: str, ks, counts: np.ndarray) -> evaluation.EvalResult:
  stats = schema.read_stats(data_dir)
  user_vectors_fn, table = evaluation.popularity_scorer(counts)
  test = dataset_lib.make_dataset(dataset_lib.eval_config(
      data_dir, "test", batch_size=_EVAL_BATCH_SIZE.value))
  return evaluation.evaluate(user_vectors_fn=user_vectors_fn, item_embeddings=table, dataset=test,
                             num_items=int(stats["num_items"]), protocol=stats["split"], ks=ks,
                             mask_history=_MASK_HISTORY.value)


def train_config(model: str, data_dir: str, ks) -> config_lib.TrainConfig:
  """Preset `s3rec` with the flags applied; steps from --epochs unless --train_steps."""
  base = config_lib.s3rec()
  data = dataclasses.replace(base.data, data_dir=data_dir, **{
      k: v for k, v in (("batch_size", _BATCH_SIZE.value), ("max_length", _MAX_LENGTH.value))
      if v is not None})
  steps = _TRAIN_STEPS.value
  if steps is None:
    train = schema.read_stats(data_dir)["splits"]["train"]
    # The all-prefixes builder makes one sample per training event after a user's first.
    prefixes = train["num_events"] - train["num_users"]
    steps = math.ceil(_EPOCHS.value * prefixes / data.batch_size)
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
  return dataclasses.replace(
      base, model_dir=os.path.join(_WORK_DIR.value, os.path.basename(data_dir), model),
      data=data, model=config_lib.ModelConfig(name=model, overrides=overrides),
      optimizer=optimizer, loss=loss,
      schedule=dataclasses.replace(base.schedule, train_steps=steps, seed=_SEED.value),
      eval=dataclasses.replace(base.eval, ks=ks, mask_history=_MASK_HISTORY.value,
                               every_steps=_EVAL_EVERY.value, select_best=_SELECT_BEST.value,
                               batch_size=_EVAL_BATCH_SIZE.value))


def run_model(model: str, data_dir: str, ks) -> Dict[str, float]:
  from trainer import loop  # pylint: disable=g-import-not-at-top  (heavy: only when training)

  config = train_config(model, data_dir, ks)
  logging.info("training %s on %s for %d steps in %s", model, data_dir,
               config.schedule.train_steps, config.model_dir)
  return loop.train_and_evaluate(config)["metrics"]


def format_table(results: Dict[str, Dict[str, Dict[str, float]]], models: List[str], ks) -> str:
  """Markdown table: our columns, then the S3-Rec table's (blank where it has no value)."""
  header = ["data", "metric"] + [f"{m} (ours)" for m in models] + list(REFERENCE_COLUMNS)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name, by_model in results.items():
    for k in ks:
      for metric in ("hr", "ndcg"):
        key = evaluation.metric_name(metric, k)
        ours = [f"{by_model[m][key]:.4f}" if m in by_model else "" for m in models]
        reference = REFERENCE.get(name, {}).get(key)
        theirs = [f"{v:.4f}" for v in reference] if reference else [""] * len(REFERENCE_COLUMNS)
        lines.append("| " + " | ".join([name, key.upper()] + ours + theirs) + " |")
  return "\n".join(lines)


def main(argv):
  del argv
  ks = tuple(int(k) for k in _KS.value)
  unknown = sorted(set(_DATASETS.value) - set(DATASETS))
  if unknown:
    raise ValueError(f"--datasets: {unknown} are not S3-Rec data sets; choose from {DATASETS}.")
  results = {}
  for name in _DATASETS.value:
    data_dir = prepared_data_dir(name)
    results[name] = {}
    for model in _MODELS.value:
      if model == POPREC:
        results[name][model] = run_poprec(data_dir, ks, evaluation.read_item_counts(data_dir)).metrics
      elif model == POPREC_ALL:
        results[name][model] = run_poprec(data_dir, ks, all_interaction_counts(data_dir)).metrics
      else:
        results[name][model] = run_model(model, data_dir, ks)
      logging.info("%s %s: %s", name, model, {k: round(v, 4) for k, v in results[name][model].items()
                                              if k.startswith(("hr@", "ndcg@"))})
  os.makedirs(_WORK_DIR.value, exist_ok=True)
  path = os.path.join(_WORK_DIR.value, "quality.json")
  with open(path, "w") as f:
    json.dump({"ks": list(ks), "mask_history": _MASK_HISTORY.value, "results": results}, f,
              indent=2, sort_keys=True)
  print(format_table(results, list(_MODELS.value), ks))
  print(f"\nwritten to {path}")


if __name__ == "__main__":
  app.run(main)
