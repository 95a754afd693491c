r"""Training throughput and memory of SINE on CPU through the trainer library.

    python benchmarks/train_benchmark.py                         # both scenarios, both sizes
    python benchmarks/train_benchmark.py --scenarios=beauty --variants=recbole
    python benchmarks/train_benchmark.py --scenarios=million --steps=3000

Scenarios (`--scenarios`):

    beauty   amazon_beauty from `--shared_dir`/data (default `$DCG_SHARED_DIR` or
             ../shared beside the repository), leave-last-one-out, at RecBole's
             settings: preset `s3rec` (Adam 1e-3, batch 256, max length 50, D = 64, full
             softmax over the 12,101 items). ../shared/BENCHMARKS.md measured RecBole's
             SINE at about 1,870-2,230 prefixes/s on a 2-core machine; the target is 3x.
    million  a synthetic log with a 1,000,000-item catalog (`input_pipeline.prepare`,
             `--million_events` clicks, no impressions; items that never occur are
             dropped, and with the default 10 million clicks 961,714 occur), preset
             `default`: AdaGrad 0.1, 20,000 log-uniform sampled negatives with logQ
             correction, batch 256, max length 50, D = 64.

SINE sizes (`--variants`): `recbole` is RecBole's SINE (K = 3 interests, L = 50
prototypes), `default` keeps `models.sine.SINEConfig`'s K = 4, L = 500 (Table 3's
Amazon row); both at D = `--embedding_dim` (64).

Data sets are prepared once into `--work_dir`/data/ and reused. Each (scenario,
variant) then runs in a fresh Python process, so its peak RSS is its own. That
process builds the trainer's own pieces (`trainer.loop`: model, optimizer, loss head,
the real input pipeline and the `tf.function` that runs `--interval` steps per call,
exactly what `train_and_evaluate` runs between two progress lines), with no
checkpoints, summaries, evaluation or export: it measures training only. The first
`--warmup_steps` (tracing, Grappler, first allocations) are not timed; then
`--steps` steps are timed in calls of `--interval` steps, and after each call the
resident set size is read from /proc/self/status.

Reported per run: examples/s (wall), ms/step, examples per CPU-second of the process
(less sensitive to other processes on a shared machine), peak RSS (VmHWM, the whole
process: TensorFlow itself is about 0.5 GB), RSS after 10%, 50% and 100% of the timed
steps and its growth from 10% to 100%, and the load average before and after. Recorded
figures and the RecBole comparison (benchmarks/recbole_benchmark.py): docs/benchmarks.md.
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List

from absl import app
from absl import flags
from absl import logging

from input_pipeline import prepare
from input_pipeline import schema
from input_pipeline.synthetic import SyntheticConfig
from trainer import config as config_lib
import tensorflow as tf  # pylint: disable=g-bad-import-order  (after our packages: Keras 2)

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEAUTY = "beauty"
MILLION = "million"
SCENARIOS = (BEAUTY, MILLION)
# SINE sizes: model config overrides on top of `--embedding_dim`.
VARIANTS = {
    "recbole": {"num_interests": 3, "num_prototypes": 50},  # RecBole 1.2.1's SINE defaults
    "default": {},  # SINEConfig: K = 4, L = 500
}
DEFAULT_STEPS = {BEAUTY: 2000, MILLION: 1000}  # beauty: about 4 epochs of 514 steps
MILLION_ITEMS = 1_000_000
RSS_FRACTIONS = (0.1, 0.5, 1.0)

_SCENARIOS = flags.DEFINE_list("scenarios", list(SCENARIOS), f"Any of {SCENARIOS}.")
_VARIANTS = flags.DEFINE_list("variants", list(VARIANTS), f"SINE sizes: any of {sorted(VARIANTS)}.")
_SHARED_DIR = flags.DEFINE_string(
    "shared_dir", os.environ.get("DCG_SHARED_DIR", os.path.join(os.path.dirname(_REPO_ROOT), "shared")),
    "Folder holding data/amazon_beauty/ (read-only); default $DCG_SHARED_DIR or ../shared.")
_WORK_DIR = flags.DEFINE_string("work_dir", os.path.join(_REPO_ROOT, "runs", "train_benchmark"),
                                "Prepared data sets go to WORK_DIR/data/ and are reused.")
_STEPS = flags.DEFINE_integer("steps", None, f"Timed steps (default {DEFAULT_STEPS}).")
_WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", 100, "Untimed steps first (tracing etc.).")
_INTERVAL = flags.DEFINE_integer("interval", 50, "Steps per tf.function call (the trainer's "
                                 "log_every); RSS is read after each call.")
_EMBEDDING_DIM = flags.DEFINE_integer("embedding_dim", 64, "D.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Global batch size.")
_MILLION_EVENTS = flags.DEFINE_integer("million_events", 10_000_000,
                                       "Clicks in the 1M-item synthetic log.")
_MILLION_USERS = flags.DEFINE_integer("million_users", 250_000, "Users in the 1M-item synthetic log.")
_RESULT_JSON = flags.DEFINE_string("result_json", None, "Internal: measure one (scenario, "
                                   "variant) in this process and write the result here.")


def beauty_data_dir() -> str:
  """amazon_beauty, leave-last-one-out (as benchmarks/quality.py prepares it), once."""
  data_dir = os.path.join(_WORK_DIR.value, "data", "amazon_beauty")
  if not os.path.exists(os.path.join(data_dir, schema.STATS_FILE)):
    source = os.path.join(_SHARED_DIR.value, "data", "amazon_beauty")
    if not os.path.isdir(source):
      raise FileNotFoundError(f"{source!r} not found: pass --shared_dir (the folder holding "
                              f"data/amazon_beauty/) or set DCG_SHARED_DIR.")
    logging.info("preparing amazon_beauty from %s into %s", source, data_dir)
    prepare.prepare_dataset(prepare.PrepareConfig(output_dir=data_dir, dataset="amazon_beauty",
                                                  input_path=source))
  return data_dir


def million_data_dir() -> str:
  """The 1M-item synthetic log, prepared once per size."""
  data_dir = os.path.join(_WORK_DIR.value, "data",
                          f"synthetic_1m_items_{_MILLION_EVENTS.value}_events")
  if not os.path.exists(os.path.join(data_dir, schema.STATS_FILE)):
    logging.info("preparing the %d-item synthetic log into %s", MILLION_ITEMS, data_dir)
    prepare.prepare_dataset(prepare.PrepareConfig(
        output_dir=data_dir, synthetic=SyntheticConfig(
            num_users=_MILLION_USERS.value, num_items=MILLION_ITEMS,
            num_events=_MILLION_EVENTS.value, impressions_per_event=0)))
  return data_dir


def train_config(scenario: str, variant: str, data_dir: str, model_dir: str) -> config_lib.TrainConfig:
  """The scenario's preset with D, batch size and the SINE sizes applied."""
  base = config_lib.s3rec() if scenario == BEAUTY else config_lib.default()
  overrides = {**base.model.overrides, **VARIANTS[variant], "embedding_dim": _EMBEDDING_DIM.value}
  return dataclasses.replace(
      base, model_dir=model_dir,
      data=dataclasses.replace(base.data, data_dir=data_dir, batch_size=_BATCH_SIZE.value),
      model=config_lib.ModelConfig(name="sine", overrides=overrides),
      schedule=dataclasses.replace(base.schedule, log_every=_INTERVAL.value),
      export=dataclasses.replace(base.export, enabled=False))


def _proc_status_mb(field: str) -> float:
  """A memory field of /proc/self/status (VmRSS, VmHWM) in MB."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) / 1024  # kB
  raise ValueError(f"/proc/self/status has no {field} line.")


def measure(scenario: str, variant: str, data_dir: str, steps: int) -> Dict[str, Any]:
  """Warms up, then times `steps` training steps; returns the figures."""
  from trainer import loop  # pylint: disable=g-import-not-at-top  (heavy: only in the child)

  interval = _INTERVAL.value
  num_calls = max(1, round(steps / interval))
  load_before = os.getloadavg()[0]
  with tempfile.TemporaryDirectory() as model_dir:
    config = train_config(scenario, variant, data_dir, model_dir)
    tf.random.set_seed(config.schedule.seed)
    run = loop._Run(config, tf.distribute.get_strategy())  # pylint: disable=protected-access
    run_steps = loop._LocalSteps(run, seed=config.schedule.seed)  # pylint: disable=protected-access
    warmup_calls = max(1, round(_WARMUP_STEPS.value / interval))
    started = time.perf_counter()
    for _ in range(warmup_calls):
      run_steps(interval)
    warmup_seconds = time.perf_counter() - started
    rss_after_warmup = _proc_status_mb("VmRSS")
    wall = cpu = examples = 0.0
    rss: List[float] = []
    losses = []
    for call in range(num_calls):
      wall_start, cpu_start = time.perf_counter(), time.process_time()
      sums = run_steps(interval)
      wall += time.perf_counter() - wall_start
      cpu += time.process_time() - cpu_start
      examples += sums[loop._EXAMPLES]  # pylint: disable=protected-access
      rss.append(_proc_status_mb("VmRSS"))
      losses.append(sums[loop.TOTAL_TERM] / interval)
      if (call + 1) % max(1, num_calls // 10) == 0:
        logging.info("%s/%s: %d of %d timed steps, %.0f examples/s so far, loss %.3f, RSS %.0f MB",
                     scenario, variant, (call + 1) * interval, num_calls * interval,
                     examples / wall, losses[-1], rss[-1])
  at = {f"{fraction:.0%}": rss[max(0, round(fraction * num_calls) - 1)] for fraction in RSS_FRACTIONS}
  stats = schema.read_stats(data_dir)
  return {
      "scenario": scenario, "variant": variant, "model_config": dataclasses.asdict(run.model_config),
      "num_items": int(stats["num_items"]), "num_negatives": config.loss.num_negatives,
      "full_softmax": int(stats["num_items"]) <= config.loss.num_negatives,
      "optimizer": config.optimizer.name, "batch_size": config.data.batch_size,
      "max_length": config.data.max_length, "warmup_steps": warmup_calls * interval,
      "warmup_seconds": warmup_seconds, "timed_steps": num_calls * interval,
      "examples": examples, "wall_seconds": wall, "cpu_seconds": cpu,
      "examples_per_second": examples / wall, "ms_per_step": 1000 * wall / (num_calls * interval),
      "examples_per_cpu_second": examples / cpu,
      "peak_rss_mb": _proc_status_mb("VmHWM"), "rss_after_warmup_mb": rss_after_warmup,
      "rss_mb_at": at, "rss_growth_mb": at["100%"] - at["10%"],
      "loss_first": losses[0], "loss_last": losses[-1],
      "load_before": load_before, "load_after": os.getloadavg()[0], "cpus": os.cpu_count(),
      "tensorflow": tf.__version__,
  }


def format_table(results: List[Dict[str, Any]]) -> str:
  header = ("scenario", "SINE K/L", "items", "softmax", "examples/s", "ms/step", "ex/CPU-s",
            "peak RSS MB", "RSS 10/50/100% MB", "growth MB", "load")
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in results:
    m = r["model_config"]
    softmax = "full" if r["full_softmax"] else f"{r['num_negatives']:,} sampled"
    lines.append("| " + " | ".join([
        r["scenario"], f"{m['num_interests']}/{m['num_prototypes']} ({r['variant']})",
        f"{r['num_items']:,}", softmax, f"{r['examples_per_second']:,.0f}", f"{r['ms_per_step']:.1f}",
        f"{r['examples_per_cpu_second']:,.0f}", f"{r['peak_rss_mb']:,.0f}",
        " / ".join(f"{v:,.0f}" for v in r["rss_mb_at"].values()), f"{r['rss_growth_mb']:+.0f}",
        f"{r['load_before']:.2f}-{r['load_after']:.2f}"]) + " |")
  return "\n".join(lines)


def _child_command(scenario: str, variant: str, steps: int, result_json: str) -> List[str]:
  """This script, measuring one (scenario, variant) in a fresh process (which finds the
  data directory the parent prepared)."""
  return [sys.executable, os.path.abspath(__file__), f"--scenarios={scenario}",
          f"--variants={variant}", f"--steps={steps}", f"--warmup_steps={_WARMUP_STEPS.value}",
          f"--interval={_INTERVAL.value}", f"--embedding_dim={_EMBEDDING_DIM.value}",
          f"--batch_size={_BATCH_SIZE.value}", f"--million_events={_MILLION_EVENTS.value}",
          f"--million_users={_MILLION_USERS.value}", f"--work_dir={_WORK_DIR.value}",
          f"--shared_dir={_SHARED_DIR.value}", f"--result_json={result_json}"]


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  unknown = sorted(set(_SCENARIOS.value) - set(SCENARIOS)) + sorted(set(_VARIANTS.value) - set(VARIANTS))
  if unknown:
    raise ValueError(f"Unknown scenario or variant {unknown}; scenarios {SCENARIOS}, "
                     f"variants {sorted(VARIANTS)}.")
  data_dirs = {BEAUTY: beauty_data_dir, MILLION: million_data_dir}
  if _RESULT_JSON.value:
    (scenario,), (variant,) = _SCENARIOS.value, _VARIANTS.value
    result = measure(scenario, variant, data_dirs[scenario](),
                     _STEPS.value or DEFAULT_STEPS[scenario])
    with open(_RESULT_JSON.value, "w") as f:
      json.dump(result, f, indent=2)
    return
  results = []
  with tempfile.TemporaryDirectory() as temp:
    for scenario in _SCENARIOS.value:
      data_dirs[scenario]()  # prepared here, so that no child's peak RSS includes it
      for variant in _VARIANTS.value:
        steps = _STEPS.value or DEFAULT_STEPS[scenario]
        result_json = os.path.join(temp, f"{scenario}_{variant}.json")
        logging.info("measuring %s with SINE %s: %d steps in a fresh process", scenario, variant,
                     steps)
        subprocess.run(_child_command(scenario, variant, steps, result_json), check=True)
        with open(result_json) as f:
          results.append(json.load(f))
        print(format_table(results[-1:]).splitlines()[-1], flush=True)
  print(format_table(results))
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  app.run(main)
