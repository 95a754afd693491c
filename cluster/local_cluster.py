r"""Runs a real multi-process parameter-server cluster on this machine.

    python -m cluster.local_cluster --num_ps=2 --num_workers=2 --log_dir=/tmp/cluster \
        -- --model=sine --data_dir=DIR --model_dir=DIR --train_steps=200

Starts `num_ps` parameter servers, `num_workers` workers and one chief, each a
separate `python -m trainer.main <arguments after -->` process with its own
`TF_CONFIG` on free localhost ports: the same processes a Kubernetes TFJob starts
(cluster/tfjob_ps.yaml), on one machine. The ps and worker tasks start a
`tf.distribute.Server` and wait; the chief trains under ParameterServerStrategy.
Each task logs to `LOG_DIR/<task>-<index>.log`. When the chief exits the servers are
stopped and its exit status becomes the launcher's; a server that dies first, or
`--timeout_s` passing, stops the whole cluster with a non-zero status.

On a machine with GPUs the parameter servers are hidden from them
(`CUDA_VISIBLE_DEVICES=""`: they only hold variables) and every task allocates GPU
memory on demand (`TF_FORCE_GPU_ALLOW_GROWTH=true`) so that the tasks can share.
"""

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

from absl import flags
from absl import logging

from common import cli

CHIEF = "chief"
WORKER = "worker"
PS = "ps"
TRAINER_MODULE = "trainer.main"

_POLL_S = 0.2
# The chief checkpoints on SIGTERM (trainer/main.py); servers block in join() and
# cannot run Python signal handlers, so they get only a moment before SIGKILL.
_CHIEF_GRACE_S = 30.0
_SERVER_GRACE_S = 2.0
_LOG_TAIL_CHARS = 3000


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
  """
  num_ps: int = 2
  num_workers: int = 2
  log_dir: str = ""
  trainer_args: Tuple[str, ...] = ()
  timeout_s: Optional[float] = None
  module: str = TRAINER_MODULE
  host: str = "localhost"

  def __post_init__(self):
    if self.num_ps < 1 or self.num_workers < 1:
      raise ValueError(f"A parameter-server cluster needs at least one ps and one worker; got "
                       f"num_ps={self.num_ps}, num_workers={self.num_workers}.")


def free_ports(count: int, host: str = "localhost") -> List[int]:
  """`count` distinct ports that were free a moment ago (the OS picks them)."""
  with contextlib.ExitStack() as stack:
    sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
               for _ in range(count)]
    for s in sockets:  # all bound at once, so the OS cannot hand out one port twice
      s.bind((host, 0))
    return [s.getsockname()[1] for s in sockets]


def cluster_spec(num_ps: int, num_workers: int, ports: Sequence[int],
                 host: str = "localhost") -> Dict[str, List[str]]:
  """The `cluster` part of TF_CONFIG: chief first, then workers, then ps.

  Example: `cluster_spec(1, 2, [5000, 5001, 5002, 5003])` is
  `{"chief": ["localhost:5000"], "worker": ["localhost:5001", "localhost:5002"],
  "ps": ["localhost:5003"]}`.
  """
  if len(ports) != 1 + num_workers + num_ps:
    raise ValueError(f"Need {1 + num_workers + num_ps} ports (1 chief, {num_workers} workers, "
                     f"{num_ps} ps), got {len(ports)}.")
  addresses = [f"{host}:{port}" for port in ports]
  return {CHIEF: addresses[:1], WORKER: addresses[1:1 + num_workers],
          PS: addresses[1 + num_workers:]}


def tf_config(cluster: Dict[str, List[str]], task_type: str, index: int) -> str:
  """The TF_CONFIG JSON of one task."""
  if not 0 <= index < len(cluster.get(task_type, [])):
    raise ValueError(f"No {task_type!r} task {index} in a cluster of {cluster}.")
  return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def task_environment(cluster: Dict[str, List[str]], task_type: str, index: int,
                     base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
  """The environment of one task: `base` (default: ours) plus TF_CONFIG and GPU settings."""
  env = dict(os.environ if base is None else base)
  env["TF_CONFIG"] = tf_config(cluster, task_type, index)
  env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
  if task_type == PS:
    env["CUDA_VISIBLE_DEVICES"] = ""
  return env


@dataclasses.dataclass
class _Task:
  name: str  # "worker-1"
  process: subprocess.Popen
  log_path: str

  def log_tail(self) -> str:
    with open(self.log_path, errors="replace") as f:
      return f.read()[-_LOG_TAIL_CHARS:]


def _stop(tasks: Sequence[_Task]) -> None:
  """SIGTERM to each running task, SIGKILL to those still alive after their grace time."""
  running = [t for t in tasks if t.process.poll() is None]
  for task in running:
    task.process.terminate()
  start = time.monotonic()
  for task in running:
    grace = _CHIEF_GRACE_S if task.name.startswith(CHIEF) else _SERVER_GRACE_S
    try:
      task.process.wait(timeout=max(0.0, start + grace - time.monotonic()))
    except subprocess.TimeoutExpired:
      logging.info("%s (pid %d) still runs %.0f s after SIGTERM; killing it.", task.name,
                   task.process.pid, grace)
      task.process.kill()
      task.process.wait()


def run_cluster(config: ClusterConfig) -> int:
  """Starts the cluster, waits for the chief, stops the servers.

  Returns:
    The chief's exit status; 1 when a server task died first, 124 on timeout.
  """
  log_dir = config.log_dir or tempfile.mkdtemp(prefix="local_cluster-")
  os.makedirs(log_dir, exist_ok=True)
  num_tasks = 1 + config.num_workers + config.num_ps
  cluster = cluster_spec(config.num_ps, config.num_workers, free_ports(num_tasks, config.host),
                         config.host)
  logging.info("Cluster %s; logs in %s", json.dumps(cluster), log_dir)
  command = [sys.executable, "-m", config.module, *config.trainer_args]
  tasks: List[_Task] = []
  try:
    # Servers first, so that the chief finds them listening.
    for task_type, count in ((PS, config.num_ps), (WORKER, config.num_workers), (CHIEF, 1)):
      for index in range(count):
        name = f"{task_type}-{index}"
        log_path = os.path.join(log_dir, f"{name}.log")
        with open(log_path, "w") as log:
          process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL,
                                     env=task_environment(cluster, task_type, index))
        tasks.append(_Task(name, process, log_path))
        logging.info("Started %s (pid %d): %s", name, process.pid, " ".join(command))
    chief = tasks[-1]
    deadline = None if config.timeout_s is None else time.monotonic() + config.timeout_s
    while chief.process.poll() is None:
      dead = [t for t in tasks[:-1] if t.process.poll() is not None]
      if dead:
        for task in dead:
          logging.error("%s exited with status %d before the chief finished. Its log (%s) "
                        "ends with:\n%s", task.name, task.process.returncode, task.log_path,
                        task.log_tail())
        return 1
      if deadline is not None and time.monotonic() > deadline:
        logging.error("The chief did not finish within %.0f s; stopping the cluster. Chief log "
                      "(%s) ends with:\n%s", config.timeout_s, chief.log_path, chief.log_tail())
        return 124
      time.sleep(_POLL_S)
    status = chief.process.returncode
    if status == 0:
      logging.info("The chief finished; stopping the servers.")
    else:
      logging.error("The chief exited with status %d. Its log (%s) ends with:\n%s", status,
                    chief.log_path, chief.log_tail())
    return status
  finally:
    _stop(tasks)


_NUM_PS = flags.DEFINE_integer("num_ps", 2, "Parameter-server tasks.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 2, "Worker tasks.")
_TIMEOUT_S = flags.DEFINE_float("timeout_s", None, "Stop the cluster after this many seconds.")


def config_from_flags(trainer_args: Sequence[str]) -> ClusterConfig:
  # --log_dir is absl.logging's own flag ("directory to write logfiles into"): the
  # launcher reuses it for the per-task logs rather than defining a clashing one.
  return ClusterConfig(num_ps=_NUM_PS.value, num_workers=_NUM_WORKERS.value,
                       log_dir=flags.FLAGS.log_dir, trainer_args=tuple(trainer_args),
                       timeout_s=_TIMEOUT_S.value)


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
