r"""Training throughput, memory and evaluation time on CPU through the trainer library,
optionally side by side with RecBole.

    python benchmarks/train_benchmark.py                         # every model, scenario, size
    python benchmarks/train_benchmark.py --models=sasrec --scenarios=beauty
    python benchmarks/train_benchmark.py --models=sine --scenarios=million --steps=3000
    # Ours and RecBole's alternately (ours, RecBole, ours, ...), then the ratio:
    python benchmarks/train_benchmark.py --models=sasrec --scenarios=beauty \
        --recbole_python=/tmp/recbole-venv/bin/python

Models (`--models`) and their sizes (`--variants`), D = `--embedding_dim` (64) in all:

    sine     recbole   RecBole 1.2.1's SINE: K = 3 interests, L = 50 prototypes
             default   `models.sine.SINEConfig`: K = 4, L = 500 (Table 3's Amazon row)
    sasrec   recbole   RecBole's SASRec: 2 blocks, 2 heads, dropout 0.5
    gru4rec  recbole   RecBole's GRU4Rec: 1 GRU layer of 128 units, dropout 0.3
    dss      recbole   RecBole's SASRec's encoder (2 blocks, dropout 0.5; one head as
                       the paper), K = 4 intentions, latent seq2seq (`models.dss`);
                       side by side with RecBole's SASRec, since RecBole has no DSS

Scenarios (`--scenarios`):

    beauty   amazon_beauty from `--shared_dir`/data (default `$DCG_SHARED_DIR` or
             ../shared beside the repository), leave-last-one-out, at RecBole's
             settings: preset `s3rec` (Adam 1e-3, batch 256, max length 50, full softmax
             over the 12,101 items). An epoch is 131,413 training prefixes: one sample
             each for `sine` (`samples.AllPrefixes`), about one window per user that
             trains every prefix in it for `sasrec`, `gru4rec` (`samples.AllPositions`) and `dss`
             (`samples.AllPositionsWithFuture`).
    million  a synthetic log with a 1,000,000-item catalog (`input_pipeline.prepare`,
             `--million_events` clicks, no impressions; items that never occur are
             dropped, and with the default 10 million clicks 961,714 occur), preset
             `default`: AdaGrad 0.1, 20,000 log-uniform sampled negatives with logQ
             correction, batch 256, max length 50.

Data sets are prepared once into `--work_dir`/data/ and reused. Each (scenario, model,
variant) then runs in a fresh Python process, so its peak RSS is its own. That
process builds the trainer's own pieces (`trainer.loop.TrainingRun` and `trainer.steps.LocalSteps`:
model, optimizer, loss head, the real input pipeline and the `tf.function` that runs
`--interval` steps per call, exactly what `train_and_evaluate` runs between two
progress lines), with no checkpoints, summaries or export. The first
`--warmup_steps` (tracing, Grappler, first allocations) are not timed; then calls of
`--interval` steps are timed until `--prefixes` training prefixes (default 4 epochs
on beauty) and at least `--min_calls` calls are done (or exactly `--steps` steps), and
after each call the resident set size is read from /proc/self/status. After the timed
steps, on the scenarios of `--evaluate` (beauty: its 22,363 test users), the trainer's
full-catalog evaluation of the test split (`TrainingRun.evaluate`) runs twice and is
timed: the first call traces it, the second is what every later evaluation costs.

Reported per run: training prefixes per second (the trainer's `targets/s`: real
labels, the unit RecBole's figures count), examples (samples) per second, ms/step,
prefixes per CPU-second of the process (less sensitive to other processes on a
shared machine), peak RSS of the training (VmHWM before the evaluation, the whole
process: TensorFlow itself is about 0.5 GB), RSS after 10%, 50% and 100% of the timed
calls and its growth from 10% to 100%, the evaluation's seconds, and the load average
before and after.

Side by side (`--recbole_python`, the beauty scenario): for each model, its `recbole`
variant and RecBole's model (`benchmarks/recbole_benchmark.py` run by that
interpreter, one epoch) are measured alternately, ours first and last
(`--rounds` RecBole runs), each in its own process, and the ratio of the mean
prefixes/s is printed. Before every measurement the driver waits up to
`--quiet_wait_s` for other heavy jobs (`BUSY_PATTERN`) to end and records any it saw.
Recorded figures: docs/benchmarks.md.
"""

import dataclasses
import json
import math
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
# Model sizes: model config overrides on top of `--embedding_dim`, per model and variant.
RECBOLE = "recbole"  # the variant at RecBole 1.2.1's defaults, the one compared side by side
MODELS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "sine": {RECBOLE: {"num_interests": 3, "num_prototypes": 50},
             "default": {}},  # SINEConfig: K = 4, L = 500
    "sasrec": {RECBOLE: {"num_blocks": 2, "num_heads": 2, "dropout": 0.5}},
    "gru4rec": {RECBOLE: {"hidden_dim": 128, "num_layers": 1, "dropout": 0.3}},
    "dss": {RECBOLE: {"num_blocks": 2, "dropout": 0.5}},  # RecBole's SASRec's; K = 4
}
# RecBole has no DSS: DSS is compared with its encoder and baseline, RecBole's SASRec.
RECBOLE_NAMES = {"sine": "SINE", "sasrec": "SASRec", "gru4rec": "GRU4Rec", "dss": "SASRec"}
BEAUTY_PREFIXES = 131_413  # training prefixes of one amazon_beauty epoch
DEFAULT_PREFIXES = {BEAUTY: 4 * BEAUTY_PREFIXES, MILLION: 256_000}
MILLION_ITEMS = 1_000_000
RSS_FRACTIONS = (0.1, 0.5, 1.0)
# Other jobs that would share the two cores (pgrep -f pattern).
BUSY_PATTERN = "quality.py|pytest|trainer.main|train_benchmark|recbole_benchmark"

_MODELS = flags.DEFINE_list("models", list(MODELS), f"Any of {sorted(MODELS)}.")
_VARIANTS = flags.DEFINE_list("variants", None, "Model sizes (default: all of each model's); "
                              f"per model: { {m: sorted(v) for m, v in MODELS.items()} }.")
_SCENARIOS = flags.DEFINE_list("scenarios", list(SCENARIOS), f"Any of {SCENARIOS}.")
_SHARED_DIR = flags.DEFINE_string(
    "shared_dir", os.environ.get("DCG_SHARED_DIR", os.path.join(os.path.dirname(_REPO_ROOT), "shared")),
    "Folder holding data/amazon_beauty/ (read-only); default $DCG_SHARED_DIR or ../shared.")
_WORK_DIR = flags.DEFINE_string("work_dir", os.path.join(_REPO_ROOT, "runs", "train_benchmark"),
                                "Prepared data sets go to WORK_DIR/data/ and are reused.")
_STEPS = flags.DEFINE_integer("steps", None, "Timed steps; overrides --prefixes and --min_calls.")
_PREFIXES = flags.DEFINE_integer("prefixes", None, "Timed training prefixes, at least "
                                 f"(default {DEFAULT_PREFIXES}).")
_MIN_CALLS = flags.DEFINE_integer("min_calls", 4, "Timed calls of --interval steps, at least.")
_WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", 100, "Untimed steps first (tracing etc.).")
_INTERVAL = flags.DEFINE_integer("interval", 50, "Steps per tf.function call (the trainer's "
                                 "log_every); RSS is read after each call.")
_EMBEDDING_DIM = flags.DEFINE_integer("embedding_dim", 64, "D.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Global batch size.")
_EVALUATE = flags.DEFINE_list("evaluate", [BEAUTY], "Scenarios whose test evaluation is timed "
                              "after the timed steps.")
_MILLION_EVENTS = flags.DEFINE_integer("million_events", 10_000_000,
                                       "Clicks in the 1M-item synthetic log.")
_MILLION_USERS = flags.DEFINE_integer("million_users", 250_000, "Users in the 1M-item synthetic log.")
_RECBOLE_PYTHON = flags.DEFINE_string(
    "recbole_python", None, "Interpreter of RecBole's own virtualenv (e.g. "
    "/tmp/recbole-venv/bin/python): measures RecBole's model alternately with ours on beauty.")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Side by side: RecBole runs, each between two of ours.")
_RECBOLE_EPOCHS = flags.DEFINE_integer("recbole_epochs", 1, "Side by side: RecBole epochs per run.")
_RECBOLE_MAX_BATCHES = flags.DEFINE_integer("recbole_max_batches", 0, "Side by side: cut "
                                            "RecBole's epochs short (0: whole; quick checks).")
_RECBOLE_THREADS = flags.DEFINE_integer("recbole_threads", 0, "Side by side: torch threads "
                                        "(0: torch's default, one per core).")
_QUIET_WAIT_S = flags.DEFINE_integer("quiet_wait_s", 0, "Before each measurement, wait up to "
                                     "this long for other heavy jobs to end.")
_RESULT_JSON = flags.DEFINE_string("result_json", None, "Internal: measure one (scenario, "
                                   "model, variant) in this process and write the result here.")


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


DATA_DIRS = {BEAUTY: beauty_data_dir, MILLION: million_data_dir}


def train_config(scenario: str, model: str, variant: str, data_dir: str,
                 model_dir: str) -> config_lib.TrainConfig:
  """The scenario's preset with the model, its sizes, D and the batch size applied."""
  base = config_lib.s3rec() if scenario == BEAUTY else config_lib.default()
  overrides = {**MODELS[model][variant], "embedding_dim": _EMBEDDING_DIM.value}
  return dataclasses.replace(
      base, model_dir=model_dir,
      data=dataclasses.replace(base.data, data_dir=data_dir, batch_size=_BATCH_SIZE.value),
      model=config_lib.ModelConfig(name=model, overrides=overrides),
      schedule=dataclasses.replace(base.schedule, log_every=_INTERVAL.value),
      export=dataclasses.replace(base.export, enabled=False))


def _proc_status_mb(field: str) -> float:
  """A memory field of /proc/self/status (VmRSS, VmHWM) in MB."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) / 1024  # kB
  raise ValueError(f"/proc/self/status has no {field} line.")


def _done(calls: int, prefixes: float, scenario: str) -> bool:
  """Whether the timed part is complete after `calls` calls that trained `prefixes`."""
  if _STEPS.value:
    return calls * _INTERVAL.value >= _STEPS.value
  budget = _PREFIXES.value or DEFAULT_PREFIXES[scenario]
  return calls >= _MIN_CALLS.value and prefixes >= budget


def measure(scenario: str, model: str, variant: str, data_dir: str) -> Dict[str, Any]:
  """Warms up, times training steps, then the test evaluation; returns the figures."""
  from trainer import loop  # pylint: disable=g-import-not-at-top  (heavy: only in the child)
  from trainer import steps  # pylint: disable=g-import-not-at-top

  interval = _INTERVAL.value
  load_before = os.getloadavg()[0]
  name = f"{scenario}/{model}/{variant}"
  with tempfile.TemporaryDirectory() as model_dir:
    config = train_config(scenario, model, variant, data_dir, model_dir)
    tf.random.set_seed(config.schedule.seed)
    run = loop.TrainingRun(config, tf.distribute.get_strategy())
    run_steps = steps.LocalSteps(run)  # the input seeded by config.schedule.seed
    warmup_calls = max(1, round(_WARMUP_STEPS.value / interval))
    started = time.perf_counter()
    for _ in range(warmup_calls):
      run_steps(interval)
    warmup_seconds = time.perf_counter() - started
    rss_after_warmup = _proc_status_mb("VmRSS")
    wall = cpu = examples = prefixes = 0.0
    rss: List[float] = []
    losses: List[float] = []
    log_every = 1
    while not _done(len(rss), prefixes, scenario):
      wall_start, cpu_start = time.perf_counter(), time.process_time()
      sums = run_steps(interval)
      wall += time.perf_counter() - wall_start
      cpu += time.process_time() - cpu_start
      examples += sums[loop.EXAMPLES_TERM]
      prefixes += sums[loop.TARGETS_TERM]
      rss.append(_proc_status_mb("VmRSS"))
      losses.append(sums[loop.TOTAL_TERM] / interval)
      if len(rss) == 1 and not _STEPS.value:  # about ten progress lines
        budget = _PREFIXES.value or DEFAULT_PREFIXES[scenario]
        log_every = max(1, max(_MIN_CALLS.value, math.ceil(budget / prefixes)) // 10)
      if len(rss) % log_every == 0:
        logging.info("%s: %d timed steps, %.0f prefixes/s and %.0f examples/s so far, loss %.3f, "
                     "RSS %.0f MB", name, len(rss) * interval, prefixes / wall, examples / wall,
                     losses[-1], rss[-1])
    num_calls = len(rss)
    peak_rss_training = _proc_status_mb("VmHWM")
    evaluation = {}
    if scenario in _EVALUATE.value:
      first, warm = run.evaluate("test"), run.evaluate("test")
      evaluation = {"eval_users": first.num_users, "eval_items": first.num_items,
                    "eval_seconds_first": first.seconds, "eval_seconds": warm.seconds,
                    "eval_hr@10": first.metrics.get("hr@10")}
  at = {f"{fraction:.0%}": rss[max(0, round(fraction * num_calls) - 1)] for fraction in RSS_FRACTIONS}
  stats = schema.read_stats(data_dir)
  return {
      "scenario": scenario, "model": model, "variant": variant,
      "model_config": dataclasses.asdict(run.model_config),
      "num_items": int(stats["num_items"]), "num_negatives": config.loss.num_negatives,
      "full_softmax": int(stats["num_items"]) <= config.loss.num_negatives,
      "optimizer": config.optimizer.name, "batch_size": config.data.batch_size,
      "max_length": config.data.max_length, "warmup_steps": warmup_calls * interval,
      "warmup_seconds": warmup_seconds, "timed_steps": num_calls * interval,
      "examples": examples, "prefixes": prefixes, "wall_seconds": wall, "cpu_seconds": cpu,
      "prefixes_per_second": prefixes / wall, "examples_per_second": examples / wall,
      "ms_per_step": 1000 * wall / (num_calls * interval),
      "prefixes_per_cpu_second": prefixes / cpu,
      "peak_rss_mb": peak_rss_training, "peak_rss_with_eval_mb": _proc_status_mb("VmHWM"),
      "rss_after_warmup_mb": rss_after_warmup, "rss_mb_at": at,
      "rss_growth_mb": at["100%"] - at["10%"],
      "loss_first": losses[0], "loss_last": losses[-1], **evaluation,
      "load_before": load_before, "load_after": os.getloadavg()[0], "cpus": os.cpu_count(),
      "tensorflow": tf.__version__,
  }


def format_table(results: List[Dict[str, Any]]) -> str:
  header = ("scenario", "model/variant", "items", "softmax", "prefixes/s", "examples/s",
            "ms/step", "prefixes/CPU-s", "peak RSS MB", "RSS 10/50/100% MB", "growth MB",
            "eval s (first/warm, users)", "load")
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in results:
    softmax = "full" if r["full_softmax"] else f"{r['num_negatives']:,} sampled"
    evaluation = (f"{r['eval_seconds_first']:.1f} / {r['eval_seconds']:.1f} ({r['eval_users']:,})"
                  if "eval_seconds" in r else "-")
    lines.append("| " + " | ".join([
        r["scenario"], f"{r['model']}/{r['variant']}", f"{r['num_items']:,}", softmax,
        f"{r['prefixes_per_second']:,.0f}", f"{r['examples_per_second']:,.0f}",
        f"{r['ms_per_step']:.1f}", f"{r['prefixes_per_cpu_second']:,.0f}",
        f"{r['peak_rss_mb']:,.0f}", " / ".join(f"{v:,.0f}" for v in r["rss_mb_at"].values()),
        f"{r['rss_growth_mb']:+.0f}", evaluation,
        f"{r['load_before']:.2f}-{r['load_after']:.2f}"]) + " |")
  return "\n".join(lines)


def _mean(values: List[float]) -> float:
  return sum(values) / len(values)


def format_side_by_side(ours: List[Dict[str, Any]], theirs: List[Dict[str, Any]]) -> str:
  """Our runs and RecBole's of one model, in the order they ran, and the ratios."""
  model = ours[0]["model"]
  ours_rate = _mean([r["prefixes_per_second"] for r in ours])
  theirs_rate = _mean([r["prefixes_per_second"] for r in theirs])
  ours_cpu = _mean([r["prefixes_per_cpu_second"] for r in ours])
  theirs_cpu = _mean([r["prefixes_per_cpu_second"] for r in theirs])
  runs = [f"ours {r['prefixes_per_second']:,.0f}" for r in ours]
  for i, r in enumerate(theirs):
    runs.insert(2 * i + 1, f"RecBole {r['prefixes_per_second']:,.0f}")
  loads = [load for r in ours + theirs for load in (r["load_before"], r["load_after"])]
  return (f"side by side, {model}/{RECBOLE} vs RecBole {RECBOLE_NAMES[model]} (prefixes/s, in "
          f"the order run: {', '.join(runs)}): ours {ours_rate:,.0f}, RecBole {theirs_rate:,.0f}, "
          f"ratio {ours_rate / theirs_rate:.1f}x; per CPU-second {ours_cpu:,.0f} vs "
          f"{theirs_cpu:,.0f}, ratio {ours_cpu / theirs_cpu:.1f}x; load {min(loads):.2f}-"
          f"{max(loads):.2f}")


def _ancestors() -> List[int]:
  """This process and its ancestors (whose command lines may name this script)."""
  pids, pid = [], os.getpid()
  while pid > 1:
    pids.append(pid)
    with open(f"/proc/{pid}/stat") as f:
      pid = int(f.read().rsplit(")", 1)[1].split()[1])  # the field after the state
  return pids


def wait_for_quiet() -> List[str]:
  """Waits up to --quiet_wait_s for other heavy jobs to end; returns those still running."""
  deadline = time.time() + _QUIET_WAIT_S.value
  ours = _ancestors()
  while True:
    found = subprocess.run(["pgrep", "-af", BUSY_PATTERN], capture_output=True, text=True).stdout
    busy = [line for line in found.splitlines() if int(line.split()[0]) not in ours]
    if not busy or time.time() >= deadline:
      if busy:
        logging.warning("other jobs share the machine: %s", busy)
      return busy
    time.sleep(10)


def _flags_for_child() -> List[str]:
  names = ("steps", "prefixes", "min_calls", "warmup_steps", "interval", "embedding_dim",
           "batch_size", "evaluate", "million_events", "million_users", "work_dir", "shared_dir")
  return [flag for name in names if (flag := flags.FLAGS[name].serialize())]


def run_ours(scenario: str, model: str, variant: str, temp: str) -> Dict[str, Any]:
  """One (scenario, model, variant) in a fresh process (which finds the data the parent
  prepared)."""
  result_json = os.path.join(temp, "ours.json")
  busy = wait_for_quiet()
  logging.info("measuring %s/%s/%s in a fresh process", scenario, model, variant)
  subprocess.run([sys.executable, os.path.abspath(__file__), f"--scenarios={scenario}",
                  f"--models={model}", f"--variants={variant}", f"--result_json={result_json}",
                  *_flags_for_child()], check=True)
  with open(result_json) as f:
    result = json.load(f)
  print(format_table([result]).splitlines()[-1], flush=True)
  return {**result, "busy": busy}


def run_recbole(model: str, temp: str) -> Dict[str, Any]:
  """RecBole's `model` for --recbole_epochs epochs on beauty, in its own virtualenv."""
  result_json = os.path.join(temp, "recbole.json")
  busy = wait_for_quiet()
  command = [_RECBOLE_PYTHON.value, "-W", "ignore",
             os.path.join(_REPO_ROOT, "benchmarks", "recbole_benchmark.py"),
             f"--model={RECBOLE_NAMES[model]}", f"--epochs={_RECBOLE_EPOCHS.value}",
             f"--threads={_RECBOLE_THREADS.value}", f"--batch_size={_BATCH_SIZE.value}",
             f"--embedding_dim={_EMBEDDING_DIM.value}", f"--shared_dir={_SHARED_DIR.value}",
             f"--max_batches={_RECBOLE_MAX_BATCHES.value}", f"--result_json={result_json}"]
  logging.info("measuring RecBole's %s: %s", RECBOLE_NAMES[model], " ".join(command))
  subprocess.run(command, check=True)
  with open(result_json) as f:
    result = json.load(f)
  return {**result, "busy": busy}


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  unknown = sorted(set(_SCENARIOS.value) - set(SCENARIOS)) + sorted(set(_MODELS.value) - set(MODELS))
  if unknown:
    raise ValueError(f"Unknown scenario or model {unknown}; scenarios {SCENARIOS}, models "
                     f"{sorted(MODELS)}.")
  variants = {model: [v for v in (_VARIANTS.value or MODELS[model]) if v in MODELS[model]]
              for model in _MODELS.value}
  missing = [model for model, names in variants.items() if not names]
  if missing:
    raise ValueError(f"No variant of {_VARIANTS.value} exists for {missing}; variants per model: "
                     f"{ {m: sorted(v) for m, v in MODELS.items()} }.")
  if _RESULT_JSON.value:
    (scenario,), (model,) = _SCENARIOS.value, _MODELS.value
    result = measure(scenario, model, variants[model][0], DATA_DIRS[scenario]())
    with open(_RESULT_JSON.value, "w") as f:
      json.dump(result, f, indent=2)
    return
  results, side_by_side = [], []
  with tempfile.TemporaryDirectory() as temp:
    for scenario in _SCENARIOS.value:
      DATA_DIRS[scenario]()  # prepared here, so that no child's peak RSS includes it
      for model in _MODELS.value:
        for variant in variants[model]:
          if not (_RECBOLE_PYTHON.value and scenario == BEAUTY and variant == RECBOLE):
            results.append(run_ours(scenario, model, variant, temp))
            continue
          ours, theirs = [run_ours(scenario, model, variant, temp)], []
          for _ in range(_ROUNDS.value):
            theirs.append(run_recbole(model, temp))
            ours.append(run_ours(scenario, model, variant, temp))
          results.extend(ours)
          side_by_side.append({"ours": ours, "recbole": theirs,
                               "summary": format_side_by_side(ours, theirs)})
          print(side_by_side[-1]["summary"], flush=True)
  print(format_table(results))
  for comparison in side_by_side:
    print(comparison["summary"])
  print(json.dumps({"results": results, "side_by_side": side_by_side}, indent=2))


if __name__ == "__main__":
  app.run(main)
