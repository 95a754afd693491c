r"""Runs a real multi-process parameter-server cluster on this machine.

    python -m cluster.local_cluster --num_ps=2 --num_workers=2 --log_dir=/tmp/cluster \
        -- --model=sine --data_dir=DIR --model_dir=DIR --train_steps=200

Starts `num_ps` parameter servers, `num_workers` workers and one chief, each a
separate `python -m trainer.main <arguments after -->` process with its own
`TF_CONFIG` on free localhost ports: the same processes a Kubernetes TFJob starts
(cluster/tfjob_ps.yaml), on one machine. The ps and worker tasks start a
`tf.distribute.Server` and wait; the chief starts once they all listen and trains
under ParameterServerStrategy. With `--evaluator` a side-car evaluator starts with
the chief: the same command with TF_CONFIG task type `evaluator`, which the training
operator lists in every task's cluster and the trainer keeps out of the cluster it
connects (trainer/strategy.py); it evaluates each checkpoint, and the launcher waits
for it to evaluate the last one. Each task logs to `LOG_DIR/<task>-<index>.log` (a
restarted task appends to its log).

Restarts follow the training operator's `ExitCode` policy (trainer/main.py): a task
that exits with a status of 128 or more, or is killed by a signal, is restarted on
the same port, up to `--max_restarts` times in all; a task that exits with 1-127 (a
bug, a user's mistake) stops the cluster. So a killed worker rejoins (the coordinator
goes on with the others meanwhile), and after a killed ps the chief, which exits with
203 when it loses a parameter server, is restarted and resumes from its checkpoint.
The launcher exits with the chief's status once the chief exits otherwise (0: done),
with a failed server's status, or with 124 after `--timeout_s`.

No task outlives the launcher: each is started with the parent-death signal
(Linux `PR_SET_PDEATHSIG`: SIGKILL when the launcher dies, even by `kill -9`), and
on a normal exit, Ctrl-C or SIGTERM the launcher stops them itself (the chief first
gets SIGTERM and writes a checkpoint).

On a machine with GPUs the parameter servers are hidden from them
(`CUDA_VISIBLE_DEVICES=""`: they only hold variables), every task allocates GPU
memory on demand (`TF_FORCE_GPU_ALLOW_GROWTH=true`), and `--worker_gpus=0,1` gives
worker i the GPU `worker_gpus[i % len]` alone.
"""

import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from absl import flags
from absl import logging

from common import cli

CHIEF = "chief"
WORKER = "worker"
PS = "ps"
EVALUATOR = "evaluator"
TRAINER_MODULE = "trainer.main"
EXIT_TIMEOUT = 124

_POLL_S = 0.2
# The chief checkpoints on SIGTERM (trainer/main.py); servers die on it at once.
_CHIEF_GRACE_S = 30.0
_SERVER_GRACE_S = 2.0
_LOG_TAIL_CHARS = 3000
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
  """A local cluster.

  Attributes:
    num_ps: parameter-server tasks.
    num_workers: worker tasks.
    log_dir: receives one log per task; empty: a new temporary directory.
    trainer_args: arguments of every task's `python -m <module>`.
    timeout_s: stop the cluster (exit status 124) after this long; None: no limit.
    module: the Python module each task runs.
    host: the address the tasks listen on and reach each other at.
    max_restarts: restarts of failed tasks (exit status >= 128 or a signal), in all.
    server_wait_s: how long the servers may take to listen before the chief starts.
    worker_gpus: GPU ids; worker i sees only `worker_gpus[i % len(worker_gpus)]`.
      Empty: every worker sees every GPU.
    evaluator: also run a side-car evaluator.
    cluster: the cluster's `{job: [address, ...]}` instead of free localhost ports
      (its addresses must be this machine's); its job sizes replace num_ps,
      num_workers and evaluator.
  """
  num_ps: int = 2
  num_workers: int = 2
  log_dir: str = ""
  trainer_args: Tuple[str, ...] = ()
  timeout_s: Optional[float] = None
  module: str = TRAINER_MODULE
  host: str = "localhost"
  max_restarts: int = 3
  server_wait_s: float = 120.0
  worker_gpus: Tuple[str, ...] = ()
  evaluator: bool = False
  cluster: Optional[Mapping[str, Sequence[str]]] = None

  def __post_init__(self):
    if self.cluster is not None:
      jobs = sorted(self.cluster)
      if (jobs not in (sorted((CHIEF, WORKER, PS)), sorted((CHIEF, WORKER, PS, EVALUATOR)))
          or len(self.cluster[CHIEF]) != 1 or len(self.cluster.get(EVALUATOR, [])) > 1):
        raise ValueError(f"A cluster needs one 'chief', 'worker' and 'ps' tasks and at most one "
                         f"'evaluator', no other job; got {dict(self.cluster)}.")
      object.__setattr__(self, "num_ps", len(self.cluster[PS]))
      object.__setattr__(self, "num_workers", len(self.cluster[WORKER]))
      object.__setattr__(self, "evaluator", EVALUATOR in self.cluster)
    if self.num_ps < 1 or self.num_workers < 1:
      raise ValueError(f"A parameter-server cluster needs at least one ps and one worker; got "
                       f"num_ps={self.num_ps}, num_workers={self.num_workers}.")
    if self.max_restarts < 0:
      raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}.")


def free_ports(count: int, host: str = "localhost") -> List[int]:
  """`count` distinct ports that were free a moment ago (the OS picks them)."""
  with contextlib.ExitStack() as stack:
    sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
               for _ in range(count)]
    for s in sockets:  # all bound at once, so the OS cannot hand out one port twice
      s.bind((host, 0))
    return [s.getsockname()[1] for s in sockets]


def cluster_spec(num_ps: int, num_workers: int, ports: Sequence[int],
                 host: str = "localhost", evaluator: bool = False) -> Dict[str, List[str]]:
  """The `cluster` part of TF_CONFIG: chief first, then workers, ps, the evaluator.

  Example: `cluster_spec(1, 2, [5000, 5001, 5002, 5003])` is
  `{"chief": ["localhost:5000"], "worker": ["localhost:5001", "localhost:5002"],
  "ps": ["localhost:5003"]}`. The evaluator's address is only a name (like the
  training operator's): it runs no server.
  """
  if len(ports) != 1 + num_workers + num_ps + evaluator:
    raise ValueError(f"Need {1 + num_workers + num_ps + evaluator} ports (1 chief, {num_workers} "
                     f"workers, {num_ps} ps{', 1 evaluator' if evaluator else ''}), got {len(ports)}.")
  addresses = [f"{host}:{port}" for port in ports]
  cluster = {CHIEF: addresses[:1], WORKER: addresses[1:1 + num_workers],
             PS: addresses[1 + num_workers:1 + num_workers + num_ps]}
  if evaluator:
    cluster[EVALUATOR] = addresses[-1:]
  return cluster


def tf_config(cluster: Mapping[str, Sequence[str]], task_type: str, index: int) -> str:
  """The TF_CONFIG JSON of one task."""
  if not 0 <= index < len(cluster.get(task_type, [])):
    raise ValueError(f"No {task_type!r} task {index} in a cluster of {dict(cluster)}.")
  return json.dumps({"cluster": {job: list(a) for job, a in cluster.items()},
                     "task": {"type": task_type, "index": index}})


def task_environment(cluster: Mapping[str, Sequence[str]], task_type: str, index: int,
                     base: Optional[Mapping[str, str]] = None,
                     worker_gpus: Sequence[str] = ()) -> Dict[str, str]:
  """The environment of one task: `base` (default: ours) plus TF_CONFIG and GPU settings."""
  env = dict(os.environ if base is None else base)
  env["TF_CONFIG"] = tf_config(cluster, task_type, index)
  env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
  if task_type == PS:
    env["CUDA_VISIBLE_DEVICES"] = ""
  elif task_type == WORKER and worker_gpus:
    env["CUDA_VISIBLE_DEVICES"] = worker_gpus[index % len(worker_gpus)]
  return env


def is_retryable(status: int) -> bool:
  """The training operator's ExitCode rule (>= 128); a signal (negative here) too."""
  return status < 0 or status >= 128


def _die_with_parent(parent_pid: int):
  """preexec_fn: SIGKILL this child when the launcher dies, however it dies (Linux)."""
  def set_parent_death_signal():
    if sys.platform.startswith("linux"):
      ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the launcher died before prctl took effect
      os._exit(1)
  return set_parent_death_signal


class _Task:
  """One task's process, restarted in place; its log is appended to."""

  def __init__(self, task_type: str, index: int, command: Sequence[str], env: Mapping[str, str],
               log_path: str):
    self.task_type, self.index = task_type, index
    self.name = f"{task_type}-{index}"
    self._command, self._env, self.log_path = list(command), dict(env), log_path
    self.starts = 0
    self.process: Optional[subprocess.Popen] = None

  def start(self) -> None:
    with open(self.log_path, "a") as log:
      if self.starts:
        log.write(f"\n===== {self.name} restarted (start {self.starts + 1}) =====\n")
        log.flush()
      self.process = subprocess.Popen(self._command, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=self._env,
                                      preexec_fn=_die_with_parent(os.getpid()))
    self.starts += 1
    logging.info("Started %s (pid %d): %s", self.name, self.process.pid, " ".join(self._command))

  def poll(self) -> Optional[int]:
    return self.process.poll()

  def log_tail(self) -> str:
    with open(self.log_path, errors="replace") as f:
      return f.read()[-_LOG_TAIL_CHARS:]


def _stop(tasks: Sequence[_Task]) -> None:
  """SIGTERM to each running task, SIGKILL to those still alive after their grace time."""
  running = [t for t in tasks if t.process is not None and t.process.poll() is None]
  for task in running:
    task.process.terminate()
  start = time.monotonic()
  for task in running:
    grace = _CHIEF_GRACE_S if task.task_type == CHIEF else _SERVER_GRACE_S
    try:
      task.process.wait(timeout=max(0.0, start + grace - time.monotonic()))
    except subprocess.TimeoutExpired:
      logging.info("%s (pid %d) still runs %.0f s after SIGTERM; killing it.", task.name,
                   task.process.pid, grace)
      task.process.kill()
      task.process.wait()


def _listening(address: str) -> bool:
  host, _, port = address.rpartition(":")
  try:
    with socket.create_connection((host, int(port)), timeout=1.0):
      return True
  except OSError:
    return False


class _Failed(Exception):
  """A task failed for good; `status` is what the launcher exits with."""

  def __init__(self, status: int):
    super().__init__(status)
    self.status = status


def _check(tasks: Sequence[_Task], restarts: List[int], config: ClusterConfig) -> None:
  """Restarts failed servers (and a failed chief) that may be retried; raises _Failed else."""
  for task in tasks:
    status = task.poll()
    if status is None:
      continue  # running
    if task.task_type == CHIEF and not is_retryable(status):
      continue  # done, or failed for good: the caller ends the cluster with its status
    if task.task_type == EVALUATOR and status == 0:
      continue  # it evaluated the chief's last checkpoint
    if is_retryable(status) and restarts[0] < config.max_restarts:
      restarts[0] += 1
      logging.warning("%s exited with status %d; restarting it (restart %d of at most %d).",
                      task.name, status, restarts[0], config.max_restarts)
      task.start()
      continue
    if is_retryable(status):
      why = "no restarts left"
    elif status == 0:
      why = "a server only exits when it fails"
    else:
      why = "a status of 1-127 is not retried: a bug or a mistake"
    logging.error("%s exited with status %d (%s). Its log (%s) ends with:\n%s", task.name,
                  status, why, task.log_path, task.log_tail())
    raise _Failed(128 - status if status < 0 else status or 1)


def run_cluster(config: ClusterConfig) -> int:
  """Starts the cluster, keeps it up while the chief runs, stops every task.

  Returns:
    The chief's exit status; a failed server's status when it could not be
    restarted; 124 on timeout.
  """
  log_dir = config.log_dir or tempfile.mkdtemp(prefix="local_cluster-")
  os.makedirs(log_dir, exist_ok=True)
  if config.cluster is not None:
    cluster = {job: list(addresses) for job, addresses in config.cluster.items()}
  else:
    num_tasks = 1 + config.num_workers + config.num_ps + config.evaluator
    cluster = cluster_spec(config.num_ps, config.num_workers, free_ports(num_tasks, config.host),
                           config.host, config.evaluator)
  logging.info("Cluster %s; logs in %s", json.dumps(cluster), log_dir)
  command = [sys.executable, "-m", config.module, *config.trainer_args]
  tasks = [_Task(task_type, index, command,
                 task_environment(cluster, task_type, index, worker_gpus=config.worker_gpus),
                 os.path.join(log_dir, f"{task_type}-{index}.log"))
           for task_type in (PS, WORKER, CHIEF, EVALUATOR)
           for index in range(len(cluster.get(task_type, [])))]
  for task in tasks:  # a rerun into the same log_dir starts fresh logs
    open(task.log_path, "w").close()
  servers = [t for t in tasks if t.task_type in (PS, WORKER)]
  chief = next(t for t in tasks if t.task_type == CHIEF)
  evaluators = [t for t in tasks if t.task_type == EVALUATOR]
  restarts = [0]
  deadline = None if config.timeout_s is None else time.monotonic() + config.timeout_s

  def out_of_time() -> bool:
    if deadline is None or time.monotonic() < deadline:
      return False
    running = chief if chief.process else servers[0]
    logging.error("The cluster did not finish within %.0f s; stopping it. %s's log (%s) ends "
                  "with:\n%s", config.timeout_s, running.name, running.log_path, running.log_tail())
    return True

  try:
    for task in servers:
      task.start()
    # The chief starts once the servers listen (it would otherwise wait for them).
    listen_by = time.monotonic() + config.server_wait_s
    waiting = list(servers)
    while waiting:
      _check(servers, restarts, config)
      waiting = [t for t in waiting if not _listening(cluster[t.task_type][t.index])]
      if waiting and time.monotonic() > listen_by:
        logging.error("%s did not listen within %.0f s. %s's log ends with:\n%s",
                      ", ".join(t.name for t in waiting), config.server_wait_s, waiting[0].name,
                      waiting[0].log_tail())
        return 1
      if out_of_time():
        return EXIT_TIMEOUT
      time.sleep(_POLL_S)
    for task in [chief] + evaluators:
      task.start()
    while True:
      _check(tasks, restarts, config)
      status = chief.poll()
      # The evaluator ends by itself after the chief's last checkpoint.
      if status is not None and (status or all(t.poll() == 0 for t in evaluators)):
        break
      if out_of_time():
        return EXIT_TIMEOUT
      time.sleep(_POLL_S)
    if status == 0:
      logging.info("The chief finished; stopping the servers.")
    else:
      logging.error("The chief exited with status %d. Its log (%s) ends with:\n%s", status,
                    chief.log_path, chief.log_tail())
    return status
  except _Failed as e:
    return e.status
  finally:
    _stop(tasks)


_NUM_PS = flags.DEFINE_integer("num_ps", 2, "Parameter-server tasks.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 2, "Worker tasks.")
_TIMEOUT_S = flags.DEFINE_float("timeout_s", None, "Stop the cluster after this many seconds.")
_MAX_RESTARTS = flags.DEFINE_integer(
    "max_restarts", 3, "Restarts of tasks that exit with status >= 128 or by a signal, in all.")
_WORKER_GPUS = flags.DEFINE_list("worker_gpus", [], "GPU ids; worker i sees only "
                                 "worker_gpus[i % len]. Empty: every worker sees every GPU.")
_EVALUATOR = flags.DEFINE_bool("evaluator", False, "Also run a side-car evaluator (TF_CONFIG "
                               "task type evaluator) that evaluates each checkpoint.")


def config_from_flags(trainer_args: Sequence[str]) -> ClusterConfig:
  # --log_dir is absl.logging's own flag ("directory to write logfiles into"): the
  # launcher reuses it for the per-task logs rather than defining a clashing one.
  return ClusterConfig(num_ps=_NUM_PS.value, num_workers=_NUM_WORKERS.value,
                       log_dir=flags.FLAGS.log_dir, trainer_args=tuple(trainer_args),
                       timeout_s=_TIMEOUT_S.value, max_restarts=_MAX_RESTARTS.value,
                       worker_gpus=tuple(_WORKER_GPUS.value), evaluator=_EVALUATOR.value)


def main(argv):
  # absl leaves everything after `--` in argv: those are the trainer's flags.
  sys.exit(run_cluster(config_from_flags(argv[1:])))


def run():
  """Console-script entry point (`dcg-local-cluster`); a bad flag value ends it with one
  line `error: ...` and exit status 2 (`common.cli`)."""
  cli.interrupt_on_sigterm()  # stops the launcher through run_cluster's clean-up
  cli.run(main)


if __name__ == "__main__":
  run()
