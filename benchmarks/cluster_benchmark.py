r"""Parameter-server cluster figures on this machine: scaling, recovery times, SIGTERM.

    python benchmarks/cluster_benchmark.py --measure=scaling      # 1, 2, 4 workers
    python benchmarks/cluster_benchmark.py --measure=recovery     # killed tasks
    python benchmarks/cluster_benchmark.py --measure=sigterm      # SIGTERM -> checkpoint

Every run is real processes started by `cluster.local_cluster` (or one
`python -m trainer.main` for the one-process rows), training SINE with the `default`
preset (AdaGrad, batch 256, max length 50) on a synthetic data set prepared once into
`--work_dir`/data/.

scaling   the built-in synthetic data set (3,000 items: the full softmax), 1 ps and 1, 2
          and 4 workers, then one process without a cluster; `--steps` steps logged
          every `--log_every`. Throughput is the trainer's own examples/s of each
          logged interval, the first (tracing) left out, averaged; efficiency is
          throughput(W) / (W x throughput(1 worker)).
recovery  the same data, 1 ps and 2 workers, one drill (cluster/fault_drill.py): worker
          0 killed (SIGKILL) at step 50, then the ps at step 150 (after the checkpoint
          of step 100), then the chief stopped (SIGTERM), then the chief killed
          (SIGKILL), each once the previous one was recovered from.
sigterm   a 1,000,000-item synthetic catalog (`--million_events` clicks), D = 64 and 256
          (`--dims`):
          one process training, SIGTERM right after a progress line (mid-interval), and
          a cluster (1 ps, 2 workers) whose chief gets SIGTERM; the times from the
          signal to the checkpoint written and to the exit.

Prints markdown tables; docs/cluster.md records them.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Dict, List, Sequence

from absl import app
from absl import flags

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO_ROOT)

from cluster import fault_drill  # pylint: disable=g-import-not-at-top,wrong-import-position
from cluster import local_cluster  # pylint: disable=g-import-not-at-top,wrong-import-position

_MEASURE = flags.DEFINE_list("measure", ["scaling"], "Any of scaling, recovery, sigterm.")
_WORK_DIR = flags.DEFINE_string("work_dir", os.path.join(_REPO_ROOT, "runs", "cluster_benchmark"),
                                "Data sets and runs go here.")
_WORKERS = flags.DEFINE_list("workers", ["1", "2", "4"], "Worker counts of the scaling rows.")
_STEPS = flags.DEFINE_integer("steps", 400, "Training steps of each scaling run.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 50, "Steps per logged interval.")
_MILLION_ITEMS = flags.DEFINE_integer("million_items", 1_000_000, "Catalog of the sigterm rows.")
_MILLION_EVENTS = flags.DEFINE_integer(
    "million_events", 10_000_000,
    "Clicks of the sigterm rows' synthetic log (10M: about 96% of the items occur).")
_DIMS = flags.DEFINE_list("dims", ["64", "256"], "Embedding sizes of the sigterm rows.")

_EXAMPLES_PER_S = re.compile(r"step (\d+)/\d+: .*?, (\d+) examples/s")


def _prepare(name: str, **synthetic) -> str:
  from input_pipeline import prepare  # pylint: disable=g-import-not-at-top
  from input_pipeline import schema  # pylint: disable=g-import-not-at-top
  from input_pipeline.synthetic import SyntheticConfig  # pylint: disable=g-import-not-at-top

  data_dir = os.path.join(_WORK_DIR.value, "data", name)
  if not os.path.exists(os.path.join(data_dir, schema.STATS_FILE)):
    prepare.prepare_dataset(prepare.PrepareConfig(output_dir=data_dir,
                                                  synthetic=SyntheticConfig(**synthetic)))
  return data_dir


def _trainer_args(data_dir: str, model_dir: str, *extra: str) -> List[str]:
  return ["--model=sine", f"--data_dir={data_dir}", f"--model_dir={model_dir}",
          "--export=false", *extra]


def _load() -> str:
  return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def _throughput(log_text: str) -> float:
  rates = [int(rate) for _, rate in _EXAMPLES_PER_S.findall(log_text)]
  if len(rates) < 2:
    raise RuntimeError(f"fewer than two progress lines in the log:\n{log_text[-2000:]}")
  return sum(rates[1:]) / len(rates[1:])


def _fresh(path: str) -> str:
  subprocess.run(["rm", "-rf", path], check=True)
  return path


def measure_scaling() -> None:
  data_dir = _prepare("synthetic_default")
  steps = [f"--train_steps={_STEPS.value}", f"--log_every={_LOG_EVERY.value}",
           f"--checkpoint_every={_STEPS.value}"]
  rows = []
  for workers in map(int, _WORKERS.value):
    run_dir = _fresh(os.path.join(_WORK_DIR.value, f"scaling_{workers}"))
    load = _load()
    started = time.monotonic()
    status = local_cluster.run_cluster(local_cluster.ClusterConfig(
        num_ps=1, num_workers=workers, log_dir=os.path.join(run_dir, "logs"), timeout_s=1200,
        trainer_args=tuple(_trainer_args(data_dir, os.path.join(run_dir, "model"), *steps))))
    with open(os.path.join(run_dir, "logs", "chief-0.log")) as f:
      log_text = f.read()
    if status:
      raise RuntimeError(f"the {workers}-worker cluster exited with {status}:\n{log_text[-2000:]}")
    rows.append((f"{workers} worker(s), 1 ps", _throughput(log_text), time.monotonic() - started,
                 load, _load()))
  run_dir = _fresh(os.path.join(_WORK_DIR.value, "scaling_one_process"))
  load = _load()
  started = time.monotonic()
  result = subprocess.run([sys.executable, "-m", "trainer.main",
                           *_trainer_args(data_dir, os.path.join(run_dir, "model"), *steps)],
                          cwd=_REPO_ROOT, capture_output=True, text=True, check=True)
  rows.append(("one process, no cluster", _throughput(result.stderr), time.monotonic() - started,
               load, _load()))
  base = rows[0][1] if _WORKERS.value[0] == "1" else None
  print("\n| set-up | examples/s | efficiency vs 1 worker | wall s (start to exit) | load before | load after |")
  print("|---|---|---|---|---|---|")
  for (name, rate, seconds, before, after), workers in zip(rows, list(map(int, _WORKERS.value)) + [None]):
    efficiency = f"{rate / (workers * base):.2f}" if base and workers else ""
    print(f"| {name} | {rate:,.0f} | {efficiency} | {seconds:.0f} | {before} | {after} |")


def _report_recovery(report: fault_drill.Report) -> None:
  print(f"\nlauncher status {report.status}; events (seconds since launch):")
  for event in report.events:
    if event.kind != "progress":
      print(f"  {event.seconds:7.2f}  {event.kind:9s} {event.task:9s} "
            f"{'' if event.step is None else event.step} {event.detail}")
  print("\n| fault | at step | detected | recovered | first step after | redone steps |")
  print("|---|---|---|---|---|---|")
  for fault in [e for e in report.events if e.kind == "fault"]:
    if fault.task.startswith("worker"):
      recovered = report.first("recovered", after=fault.seconds)
      detected = report.first("exited", fault.task, after=fault.seconds)
      first = report.first("progress", after=fault.seconds)
      redone = 0
    else:
      recovered = report.first("resumed", after=fault.seconds)
      detected = (report.first("ps_failed", after=fault.seconds) if fault.task.startswith("ps")
                  else report.first("exited", fault.task, after=fault.seconds))
      first = report.first("progress", after=recovered.seconds) if recovered else None
      redone = fault.step - recovered.step if recovered else None
    def since(event):
      return f"{event.seconds - fault.seconds:.1f} s" if event else "never"
    print(f"| {fault.task} {fault.detail} | {fault.step} | {since(detected)} | {since(recovered)} | "
          f"{since(first)} | {redone} |")


def measure_recovery() -> None:
  data_dir = _prepare("synthetic_default")
  run_dir = _fresh(os.path.join(_WORK_DIR.value, "recovery"))
  config = local_cluster.ClusterConfig(
      num_ps=1, num_workers=2, log_dir=os.path.join(run_dir, "logs"), max_restarts=6,
      trainer_args=tuple(_trainer_args(data_dir, os.path.join(run_dir, "model"),
                                       "--train_steps=1500", "--log_every=10",
                                       "--checkpoint_every=100")))
  print(f"load before: {_load()}")
  report = fault_drill.run_drill(config, [
      fault_drill.Fault("worker-0", at_step=50),
      fault_drill.Fault("ps-0", at_step=150),  # after the first checkpoint (step 100)
      fault_drill.Fault("chief-0", at_step=0, signal=signal.SIGTERM),
      fault_drill.Fault("chief-0", at_step=0, signal=signal.SIGKILL)], timeout_s=1200)
  print(f"load after: {_load()}")
  _report_recovery(report)


def _sigterm_one_process(data_dir: str, dim: int) -> Dict[str, float]:
  run_dir = _fresh(os.path.join(_WORK_DIR.value, f"sigterm_one_{dim}"))
  trainer = subprocess.Popen(
      [sys.executable, "-m", "trainer.main",
       *_trainer_args(data_dir, os.path.join(run_dir, "model"), "--train_steps=100000",
                      "--log_every=100", "--checkpoint_every=100000", f"--embedding_dim={dim}")],
      cwd=_REPO_ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
  times: Dict[str, float] = {}
  sent = None
  for line in trainer.stderr:
    now = time.monotonic()
    if sent is None and re.search(r"step 100/", line):
      trainer.send_signal(signal.SIGTERM)
      sent = now
    elif sent is not None and "interrupted at step" in line:
      times["loop stopped"] = now - sent
      times["step"] = int(re.search(r"interrupted at step (\d+)", line).group(1))
    elif sent is not None and "saved checkpoint" in line:
      times["checkpoint written"] = now - sent
  trainer.wait()
  times["exited"] = time.monotonic() - sent
  times["status"] = trainer.returncode
  return times


def _sigterm_cluster(data_dir: str, dim: int) -> Dict[str, float]:
  run_dir = _fresh(os.path.join(_WORK_DIR.value, f"sigterm_cluster_{dim}"))
  config = local_cluster.ClusterConfig(
      num_ps=1, num_workers=2, log_dir=os.path.join(run_dir, "logs"), max_restarts=0,
      trainer_args=tuple(_trainer_args(data_dir, os.path.join(run_dir, "model"),
                                       "--train_steps=100000", "--log_every=100",
                                       "--checkpoint_every=100000", f"--embedding_dim={dim}")))
  report = fault_drill.run_drill(config, [fault_drill.Fault("chief-0", 100, signal.SIGTERM)],
                                 timeout_s=900)
  fault = report.first("fault", "chief-0")
  saved = report.first("saved", after=fault.seconds)
  exited = [e for e in report.events if e.kind == "exited" and e.seconds > fault.seconds]
  return {"step": saved.step if saved else None,
          "checkpoint written": saved.seconds - fault.seconds if saved else None,
          "exited": (exited[0].seconds if exited else float("nan")) - fault.seconds,
          "status": report.status}


def measure_sigterm() -> None:
  data_dir = _prepare(f"synthetic_{_MILLION_ITEMS.value}_items_{_MILLION_EVENTS.value}_events",
                      num_users=50_000,
                      num_items=_MILLION_ITEMS.value, num_events=_MILLION_EVENTS.value,
                      impressions_per_event=0)
  with open(os.path.join(data_dir, "stats.json")) as f:
    num_items = json.load(f)["num_items"]
  print(f"\n{num_items:,} items in the table; load before: {_load()}")
  print("\n| set-up | D | table + AdaGrad slots | SIGTERM at step | checkpoint of step | loop stopped | checkpoint written | exited | status |")
  print("|---|---|---|---|---|---|---|---|---|")
  for dim in map(int, _DIMS.value):
    size = f"{2 * (num_items + 2) * dim * 4 / 2**20:,.0f} MB"
    one = _sigterm_one_process(data_dir, dim)
    print(f"| one process | {dim} | {size} | 100 + | {one.get('step')} | {one.get('loop stopped', 0):.2f} s | "
          f"{one.get('checkpoint written', float('nan')):.2f} s | {one['exited']:.2f} s | {one['status']} |",
          flush=True)
    ps = _sigterm_cluster(data_dir, dim)
    written = ps["checkpoint written"]
    print(f"| 1 ps, 2 workers | {dim} | {size} | 100 + | {ps['step']} | | "
          f"{'never' if written is None else f'{written:.2f} s'} | {ps['exited']:.2f} s | "
          f"{ps['status']} |", flush=True)
  print(f"\nload after: {_load()}")


def main(argv: Sequence[str]) -> None:
  del argv
  os.chdir(_REPO_ROOT)  # the launcher and the trainer run as `python -m` from the repository
  for measure in _MEASURE.value:
    {"scaling": measure_scaling, "recovery": measure_recovery, "sigterm": measure_sigterm}[measure]()


if __name__ == "__main__":
  app.run(main)
