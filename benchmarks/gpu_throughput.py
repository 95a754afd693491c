r"""Training examples/second of every registered model on one GPU (or, to test it, the CPU).

    # On a machine with a GPU (a few minutes):
    python benchmarks/gpu_throughput.py --beauty_data_dir=runs/train_benchmark/data/amazon_beauty \
        --out_dir=$OUT
    # Anywhere, tiny sizes, every code path once (what the test suite's CPU run does):
    python benchmarks/gpu_throughput.py --smoke --out_dir=/tmp/gpu_smoke

Rows:

    million  every registered model (`--models`) on a synthetic 1,000,000-item catalog
             (`--million_users` users, `--million_events` clicks, impressions for XDM),
             preset `default`: AdaGrad 0.1, 20,000 log-uniform sampled negatives (logQ
             corrected), max length 50, the model's own sizes, at each batch size of
             `--batch_sizes` (256 and a larger one).
    beauty   `sasrec` on amazon_beauty (a data set prepared by input_pipeline.prepare,
             `--beauty_data_dir`) at RecBole's settings: preset `s3rec` (Adam 1e-3, full
             softmax over the 12,101 items, batch 256, max length 50, D = 64), RecBole's
             SASRec sizes (2 blocks, 2 heads, dropout 0.5). Published PyTorch models of
             that size train at about 9,000 prefixes/s on one GPU on this data.

Each row builds the trainer's own pieces (`trainer.loop.TrainingRun` and `trainer.steps.LocalSteps`:
model, optimizer, loss head, the real input pipeline, `--interval` steps per
`tf.function` call) on one device, runs `--warmup_steps` untimed (tracing, autotuning),
then times `--steps` steps. Reported: examples/s (samples), targets/s (training
prefixes: the unit RecBole counts), ms/step, and the device's peak memory. All rows run
in this one process (one TensorFlow start; GPU memory grows on demand and is reset
between rows); a row that runs out of memory is reported as such. Results go to
OUT_DIR/gpu_throughput.json and a markdown table to stdout and OUT_DIR/gpu_throughput.md.
"""

import dataclasses
import gc
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List

from absl import app
from absl import flags
from absl import logging

os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO_ROOT)

from common import environment  # noqa: F401  pylint: disable=g-import-not-at-top,wrong-import-position,unused-import  (Keras 2)
from input_pipeline import prepare  # pylint: disable=g-import-not-at-top,wrong-import-position
from input_pipeline import schema  # pylint: disable=g-import-not-at-top,wrong-import-position
from input_pipeline.synthetic import SyntheticConfig  # pylint: disable=g-import-not-at-top,wrong-import-position
from models import registry  # pylint: disable=g-import-not-at-top,wrong-import-position
from trainer import config as config_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from trainer import loop  # pylint: disable=g-import-not-at-top,wrong-import-position
from trainer import steps as steps_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position,g-bad-import-order
import tf_keras  # pylint: disable=g-import-not-at-top,wrong-import-position,g-bad-import-order

_MODELS = flags.DEFINE_list("models", None, "Registered models of the million rows; default all.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["256", "2048"], "Batch sizes of the million rows.")
_NUM_NEGATIVES = flags.DEFINE_integer("num_negatives", 20_000, "Sampled negatives per batch.")
_MILLION_ITEMS = flags.DEFINE_integer("million_items", 1_000_000, "Items of the synthetic catalog.")
_MILLION_USERS = flags.DEFINE_integer("million_users", 100_000, "Users of the synthetic log.")
_MILLION_EVENTS = flags.DEFINE_integer("million_events", 2_000_000, "Clicks of the synthetic log.")
_BEAUTY_DATA_DIR = flags.DEFINE_string(
    "beauty_data_dir", None, "amazon_beauty prepared by input_pipeline.prepare (e.g. "
    "runs/train_benchmark/data/amazon_beauty); unset: no beauty row.")
_WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", 100, "Untimed steps first.")
_STEPS = flags.DEFINE_integer("steps", 500, "Timed steps.")
_INTERVAL = flags.DEFINE_integer("interval", 50, "Steps per tf.function call.")
_WORK_DIR = flags.DEFINE_string("work_dir", os.path.join(_REPO_ROOT, "runs", "gpu_throughput"),
                                "The synthetic data set is prepared here once.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the results go (default: work_dir).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny sizes: 2,000 items, 5 timed steps, batches "
                           "32 and 64, 500 negatives; for testing the script on a CPU.")

RECBOLE_SASREC = {"num_blocks": 2, "num_heads": 2, "dropout": 0.5, "embedding_dim": 64}


def _sizes() -> Dict[str, Any]:
  if _SMOKE.value:
    return dict(items=2_000, users=500, events=20_000, batches=[32, 64], negatives=500,
                warmup=2, steps=5, interval=5)
  return dict(items=_MILLION_ITEMS.value, users=_MILLION_USERS.value, events=_MILLION_EVENTS.value,
              batches=[int(b) for b in _BATCH_SIZES.value], negatives=_NUM_NEGATIVES.value,
              warmup=_WARMUP_STEPS.value, steps=_STEPS.value, interval=_INTERVAL.value)


def million_data_dir(sizes: Dict[str, Any]) -> str:
  data_dir = os.path.join(_WORK_DIR.value, "data",
                          f"synthetic_{sizes['items']}_items_{sizes['events']}_events")
  if not os.path.exists(os.path.join(data_dir, schema.STATS_FILE)):
    logging.info("preparing the %d-item synthetic log into %s", sizes["items"], data_dir)
    prepare.prepare_dataset(prepare.PrepareConfig(output_dir=data_dir, synthetic=SyntheticConfig(
        num_users=sizes["users"], num_items=sizes["items"], num_events=sizes["events"])))
  return data_dir


def _config(base: config_lib.TrainConfig, model: str, overrides: Dict[str, Any], data_dir: str,
            batch_size: int, num_negatives: int, interval: int) -> config_lib.TrainConfig:
  return dataclasses.replace(
      base, data=dataclasses.replace(base.data, data_dir=data_dir, batch_size=batch_size),
      model=config_lib.ModelConfig(name=model, overrides={**base.model.overrides, **overrides}),
      loss=dataclasses.replace(base.loss, num_negatives=num_negatives),
      schedule=dataclasses.replace(base.schedule, log_every=interval),
      export=dataclasses.replace(base.export, enabled=False))


def _device() -> str:
  gpus = tf.config.list_logical_devices("GPU")
  return "GPU:0" if gpus else "CPU:0"


def measure(row: str, config: config_lib.TrainConfig, sizes: Dict[str, Any]) -> Dict[str, Any]:
  """Warms up, then times `sizes['steps']` steps of `config` on one device."""
  device = _device()
  result = {"row": row, "model": config.model.name, "batch_size": config.data.batch_size,
            "num_negatives": config.loss.num_negatives, "device": device}
  tf_keras.backend.clear_session()
  gc.collect()
  if device.startswith("GPU"):
    tf.config.experimental.reset_memory_stats(device)
  interval = sizes["interval"]
  try:
    with tempfile.TemporaryDirectory() as model_dir, tf.device(device):
      run = loop.TrainingRun(dataclasses.replace(config, model_dir=model_dir),
                             tf.distribute.get_strategy())
      steps = steps_lib.LocalSteps(run, seed=config.schedule.seed)
      result["num_items"] = run.data.num_items
      result["full_softmax"] = run.loss.full_softmax
      for _ in range(max(1, sizes["warmup"] // interval)):
        steps(interval)
      calls = max(1, sizes["steps"] // interval)
      examples = targets = 0.0
      started = time.perf_counter()
      for _ in range(calls):
        sums = steps(interval)
        examples += sums[loop.EXAMPLES_TERM]
        targets += sums[loop.TARGETS_TERM]
      seconds = time.perf_counter() - started
  except tf.errors.ResourceExhaustedError as e:
    result["error"] = f"out of memory: {e.message.splitlines()[0][:200]}"
    return result
  result.update(timed_steps=calls * interval, seconds=seconds,
                examples_per_second=examples / seconds, targets_per_second=targets / seconds,
                ms_per_step=1000 * seconds / (calls * interval))
  if device.startswith("GPU"):
    result["peak_memory_mb"] = tf.config.experimental.get_memory_info(device)["peak"] / 2**20
  return result


def format_table(results: List[Dict[str, Any]]) -> str:
  lines = ["| row | model | items | softmax | batch | examples/s | targets/s | ms/step | peak device memory |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    if "error" in r:
      lines.append(f"| {r['row']} | {r['model']} | | | {r['batch_size']} | {r['error']} | | | |")
      continue
    softmax = "full" if r["full_softmax"] else f"{r['num_negatives']:,} sampled"
    memory = f"{r['peak_memory_mb']:,.0f} MB" if "peak_memory_mb" in r else f"({r['device']})"
    lines.append(f"| {r['row']} | {r['model']} | {r['num_items']:,} | {softmax} | {r['batch_size']} | "
                 f"{r['examples_per_second']:,.0f} | {r['targets_per_second']:,.0f} | "
                 f"{r['ms_per_step']:.1f} | {memory} |")
  return "\n".join(lines)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  sizes = _sizes()
  models = _MODELS.value or registry.names()
  unknown = sorted(set(models) - set(registry.names()))
  if unknown:
    raise ValueError(f"Unknown models {unknown}; registered: {registry.names()}.")
  out_dir = _OUT_DIR.value or _WORK_DIR.value
  os.makedirs(out_dir, exist_ok=True)
  logging.info("devices: %s", tf.config.list_logical_devices())
  jobs = []
  million = million_data_dir(sizes)
  for model in models:
    for batch in sizes["batches"]:
      jobs.append(("million", _config(config_lib.default(), model, {}, million, batch,
                                      sizes["negatives"], sizes["interval"])))
  if _BEAUTY_DATA_DIR.value:
    jobs.append(("beauty", _config(config_lib.s3rec(), "sasrec", RECBOLE_SASREC,
                                   _BEAUTY_DATA_DIR.value, 256, config_lib.s3rec().loss.num_negatives,
                                   sizes["interval"])))
  results = []
  for row, config in jobs:
    logging.info("measuring %s %s at batch %d", row, config.model.name, config.data.batch_size)
    results.append(measure(row, config, sizes))
    print(format_table(results[-1:]).splitlines()[-1], flush=True)
    with open(os.path.join(out_dir, "gpu_throughput.json"), "w") as f:
      json.dump({"tensorflow": tf.__version__, "devices": [d.name for d in tf.config.list_logical_devices()],
                 "gpu": [tf.config.experimental.get_device_details(g).get("device_name")
                         for g in tf.config.list_physical_devices("GPU")],
                 "sizes": sizes, "results": results}, f, indent=2)
  table = format_table(results)
  with open(os.path.join(out_dir, "gpu_throughput.md"), "w") as f:
    f.write(table + "\n")
  print(table)


if __name__ == "__main__":
  app.run(main)
