"""Fault drills on a real local cluster: kill tasks at given steps, time the recovery.

    report = fault_drill.run_drill(local_cluster.ClusterConfig(...), [
        fault_drill.Fault("worker-0", at_step=20), fault_drill.Fault("ps-0", at_step=60)])

runs `python -m cluster.local_cluster` (which restarts what fails, see its docstring)
as a child process, reads the launcher's and the chief's logs as they grow, and
sends each fault's signal to the named task's current process once the previous
fault has been recovered from (a worker: the coordinator logged "Cluster successfully
recovered"; the ps or the chief: the restarted chief resumed from its checkpoint, or
from step 0 when there was none yet) and
the chief has since logged a progress line at or past `at_step`. The report holds
every event with its time since the launch, so tests check the behaviour and
`benchmarks/cluster_benchmark.py` reports the recovery times.
"""

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from cluster import local_cluster

_POLL_S = 0.05
_STARTED = re.compile(r"Started (\w+-\d+) \(pid (\d+)\)")
_PROGRESS = re.compile(r"step (\d+)/(\d+): loss")
_RESUMED = re.compile(r"resumed from \S+ckpt-(\d+) at step (\d+)")
_FROM_SCRATCH = re.compile(r"no checkpoint in \S+: training from scratch")
_SAVED = re.compile(r"saved checkpoint \S+ckpt-(\d+)")
_RECOVERED = re.compile(r"Cluster successfully recovered")
_PS_FAILED = re.compile(r"A parameter server failed")
_EXITED = re.compile(r"(\w+-\d+) exited with status (-?\d+)")  # restarted or not


@dataclasses.dataclass(frozen=True)
class Fault:
  """Send `signal` to `task` (e.g. "worker-0") once the chief logged step >= `at_step`."""
  task: str
  at_step: int
  signal: int = signal.SIGKILL


@dataclasses.dataclass
class Event:
  seconds: float  # since the launcher started
  kind: str  # started, exited, fault, progress, saved, resumed, recovered, ps_failed
  task: str
  step: Optional[int] = None
  detail: str = ""


@dataclasses.dataclass
class Report:
  status: int  # the launcher's exit status
  events: List[Event]
  log_dir: str
  faults_left: List[Fault]  # not injected: the job ended first

  def first(self, kind: str, task: str = "", after: float = -1.0, step: Optional[int] = None
            ) -> Optional[Event]:
    """The first event of `kind` (for `task`, at `step`) later than `after` seconds."""
    for event in self.events:
      if (event.kind == kind and event.seconds > after and (not task or event.task == task)
          and (step is None or event.step == step)):
        return event
    return None

  def progress(self) -> List[Tuple[float, int]]:
    return [(e.seconds, e.step) for e in self.events if e.kind == "progress"]


class _Tail:
  """New complete lines of a growing file."""

  def __init__(self, path: str):
    self._path, self._offset, self._partial = path, 0, ""

  def lines(self) -> List[str]:
    if not os.path.exists(self._path):
      return []
    with open(self._path, errors="replace") as f:
      f.seek(self._offset)
      text = f.read()
      self._offset = f.tell()
    text, self._partial = self._partial + text, ""
    lines = text.split("\n")
    self._partial = lines.pop()
    return lines


def chief_event(line: str) -> Optional[Tuple[str, Optional[int], str]]:
  """(kind, step, detail) of a chief log line the drill follows, or None."""
  if match := _PROGRESS.search(line):
    return "progress", int(match.group(1)), ""
  if match := _RESUMED.search(line):
    return "resumed", int(match.group(2)), f"ckpt-{match.group(1)}"
  if _FROM_SCRATCH.search(line):  # a restart before the first checkpoint resumes at 0
    return "resumed", 0, "no checkpoint"
  if match := _SAVED.search(line):
    return "saved", int(match.group(1)), ""
  if _RECOVERED.search(line):
    return "recovered", None, ""
  if _PS_FAILED.search(line):
    return "ps_failed", None, ""
  return None


def run_drill(config: local_cluster.ClusterConfig, faults: Sequence[Fault], *,
              timeout_s: float = 600.0) -> Report:
  """Runs the cluster of `config` (its trainer_args are the job) with `faults` injected."""
  if not config.log_dir:
    raise ValueError("run_drill reads the task logs: give the ClusterConfig a log_dir.")
  os.makedirs(config.log_dir, exist_ok=True)
  launcher_log = os.path.join(config.log_dir, "launcher.log")
  command = [sys.executable, "-m", "cluster.local_cluster", f"--num_ps={config.num_ps}",
             f"--num_workers={config.num_workers}", f"--log_dir={config.log_dir}",
             f"--max_restarts={config.max_restarts}", f"--timeout_s={timeout_s}", "--",
             *config.trainer_args]
  started = time.monotonic()
  events: List[Event] = []
  pids: Dict[str, int] = {}
  pending = list(faults)
  last_fault: Optional[Event] = None
  tails = {"launcher": _Tail(launcher_log),
           "chief-0": _Tail(os.path.join(config.log_dir, "chief-0.log"))}

  def add(kind, task, step=None, detail=""):
    events.append(Event(round(time.monotonic() - started, 2), kind, task, step, detail))

  with open(launcher_log, "w") as log:
    launcher = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
  try:
    while True:
      status = launcher.poll()
      for line in tails["launcher"].lines():
        if match := _STARTED.search(line):
          pids[match.group(1)] = int(match.group(2))
          add("started", match.group(1))
        elif match := _EXITED.search(line):
          add("exited", match.group(1), detail=f"status {match.group(2)}")
      for line in tails["chief-0"].lines():
        if event := chief_event(line):
          add(event[0], "chief-0", *event[1:])
      if status is not None:
        return Report(status, events, config.log_dir, pending)
      since = -1.0
      if last_fault is not None:
        recovery = "recovered" if last_fault.task.startswith("worker") else "resumed"
        recovered = [e.seconds for e in events if e.kind == recovery
                     and e.seconds > last_fault.seconds]
        since = recovered[0] if recovered else float("inf")
      progress = [e.step for e in events if e.kind == "progress" and e.seconds > since]
      if pending and progress and max(progress) >= pending[0].at_step:
        fault = pending.pop(0)
        os.kill(pids[fault.task], fault.signal)
        add("fault", fault.task, max(progress), detail=signal.Signals(fault.signal).name)
        last_fault = events[-1]
      time.sleep(_POLL_S)
  finally:
    if launcher.poll() is None:
      launcher.send_signal(signal.SIGTERM)  # the launcher stops its tasks
      launcher.wait()
