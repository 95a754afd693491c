"""The one place that turns the environment into a `tf.distribute.Strategy`.

Set-ups, picked from the environment:

* No cluster (`TF_CONFIG` unset or without a `cluster`): the default strategy on
  one CPU or GPU, or `MirroredStrategy` when the machine has more than one GPU.
* `TF_CONFIG` naming `ps`, `worker` and `chief` tasks: the chief is the coordinator
  and trains under `ParameterServerStrategy`; every table (a variable with at least
  `TABLE_ROWS_PER_COLUMN` times more rows than columns: the item table, item biases,
  large feature vocabularies) larger than `min_shard_bytes` is split by rows into up
  to one shard per parameter server (`MinSizePartitioner`). Other weights stay whole:
  Keras' fused GRU cannot take a kernel split over tasks ("Cannot colocate nodes"),
  and nothing gains from splitting a square kernel. Workers compute on their GPU(s)
  when they have them: the strategy discovers the workers' devices when it connects.
* `TF_CONFIG` for a `ps` or `worker` task: that process only serves
  (`start_server(...).join()`); the chief sends it work.
* `TF_CONFIG` for an `evaluator` task: a side-car that evaluates the chief's
  checkpoints (`trainer.loop.evaluate_checkpoints`). It is not part of the cluster:
  the training operator lists an Evaluator replica in every task's cluster spec,
  and a coordinator that tried to connect to it would wait forever (it runs no
  server), so the cluster this module hands to TensorFlow never holds it.

A bad `TF_CONFIG` is refused at once with what was expected (`ValueError`), and the
chief waits at most `cluster_wait_s` for every worker and ps to accept connections
before it names the ones it could not reach: TensorFlow itself waits for an
unreachable task without end.

Only `trainer/steps.py` knows the `ClusterCoordinator`; everything here is about
building the strategy and the servers.
"""

import json
import os
import socket
import time
from typing import Dict, Optional

from absl import logging
import tensorflow as tf

CHIEF = "chief"
WORKER = "worker"
PS = "ps"
EVALUATOR = "evaluator"
SERVER_ROLES = (WORKER, PS)
TASK_TYPES = (CHIEF, WORKER, PS, EVALUATOR)

# Variables below this size stay whole: sharding a 64-float bias over the parameter
# servers buys nothing and costs a round trip per shard. The item table (rows x dim x 4
# bytes) is far above it for any real catalog.
DEFAULT_MIN_SHARD_BYTES = 256 << 10
# A GRU's kernels are [input, 3 x units] and [units, 3 x units], attention and
# feed-forward kernels [D, k x D]: never this tall. Tables are [rows, D] with rows >> D.
TABLE_ROWS_PER_COLUMN = 4
# How long the chief waits for the workers and parameter servers to listen. Pods of a
# TFJob start in any order; a task that is not up by then is named in the error.
DEFAULT_CLUSTER_WAIT_S = 120.0
_PROBE_TIMEOUT_S = 1.0
_WAIT_LOG_EVERY_S = 10.0


class ParameterServerFailure(RuntimeError):
  """A parameter server failed under the coordinator: its variables are gone.

  ClusterCoordinator recovers from worker failures by itself, not from these; the
  job goes on only by restarting the chief, which resumes from its last checkpoint.
  """


def _cluster_from_tf_config(raw: str) -> Optional[dict]:
  """TF_CONFIG parsed and checked; None when it names no cluster."""
  try:
    tf_config = json.loads(raw)
  except json.JSONDecodeError as e:
    raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {raw[:200]!r}. Expected e.g. "
                     '{"cluster": {"chief": [...], "worker": [...], "ps": [...]}, '
                     '"task": {"type": "worker", "index": 0}}.') from e
  if not isinstance(tf_config, dict):
    raise ValueError(f"TF_CONFIG must be a JSON object with 'cluster' and 'task', got {raw[:200]!r}.")
  cluster = tf_config.get("cluster") or {}
  if not cluster:
    return None
  for job, addresses in cluster.items():
    if not (isinstance(addresses, list) and all(isinstance(a, str) and ":" in a for a in addresses)):
      raise ValueError(f"TF_CONFIG cluster job {job!r} must list 'host:port' addresses, got "
                       f"{addresses!r} (a TFJob with enableDynamicWorker gives a sparse cluster, "
                       "which parameter-server training does not support).")
  return tf_config


def cluster_resolver_from_environment() -> Optional[tf.distribute.cluster_resolver.ClusterResolver]:
  """This task's place in the cluster that `TF_CONFIG` describes; None without a cluster.

  The resolver's cluster spec never holds an `evaluator` job (see the module docstring).

  Raises:
    ValueError: `TF_CONFIG` is not JSON; the cluster lacks a chief, a worker or a ps
      (only the parameter-server set-up is supported across machines); the task's
      type is unknown or not in the cluster; its index is out of range.
  """
  raw = os.environ.get("TF_CONFIG", "")
  if not raw.strip():
    return None
  tf_config = _cluster_from_tf_config(raw)
  if tf_config is None:
    return None
  cluster = {job: list(addresses) for job, addresses in tf_config["cluster"].items()
             if job != EVALUATOR}
  if not cluster.get(PS):
    raise ValueError(
        f"TF_CONFIG describes a cluster with jobs {sorted(cluster)} but no 'ps' job. Only "
        "parameter-server training is supported across machines: add 'ps' tasks (and a "
        "'chief'), or unset TF_CONFIG to train on this machine's devices.")
  missing = [job for job in (CHIEF, WORKER) if not cluster.get(job)]
  if missing:
    raise ValueError(f"TF_CONFIG's cluster {sorted(cluster)} has no {' and no '.join(map(repr, missing))} "
                     "task: parameter-server training needs one chief (it coordinates) and at "
                     "least one worker. A TFJob's replica types are Chief, PS, Worker (and "
                     "optionally Evaluator).")
  task = tf_config.get("task") or {}
  task_type, index = task.get("type"), task.get("index", 0)
  if task_type not in TASK_TYPES:
    raise ValueError(f"TF_CONFIG task type {task_type!r} is not supported; expected one of "
                     f"{TASK_TYPES} (the chief coordinates, workers and ps serve, an evaluator "
                     "evaluates checkpoints).")
  if not isinstance(index, int) or index < 0 or (
      task_type != EVALUATOR and index >= len(cluster[task_type])):
    raise ValueError(f"TF_CONFIG task {task_type!r} index {index!r} is out of range: the cluster "
                     f"has {len(cluster.get(task_type, []))} {task_type!r} task(s) "
                     f"{cluster.get(task_type, [])}. Every task must get the same cluster and "
                     "its own index.")
  return tf.distribute.cluster_resolver.SimpleClusterResolver(
      tf.train.ClusterSpec(cluster), task_type=task_type, task_id=index,
      rpc_layer=tf_config.get("rpc_layer") or "grpc")


def task_role(cluster_resolver: Optional[tf.distribute.cluster_resolver.ClusterResolver]) -> str:
  """This process's job: 'chief' (also without a cluster), 'worker', 'ps' or 'evaluator'."""
  if cluster_resolver is None:
    return CHIEF
  role = cluster_resolver.task_type
  if role not in TASK_TYPES:
    raise ValueError(f"TF_CONFIG task type {role!r} is not supported; expected one of {TASK_TYPES}.")
  return role


def _unreachable(addresses: Dict[str, str]) -> Dict[str, str]:
  """{task: reason} of the tasks whose address does not accept a TCP connection now."""
  failed = {}
  for task, address in addresses.items():
    host, _, port = address.rpartition(":")
    try:
      with socket.create_connection((host, int(port)), timeout=_PROBE_TIMEOUT_S):
        pass
    except (OSError, ValueError) as e:
      failed[task] = f"{address}: {e.strerror or e}" if isinstance(e, OSError) else f"{address}: {e}"
  return failed


def wait_for_servers(cluster_spec: tf.train.ClusterSpec, timeout_s: float) -> None:
  """Waits until every worker and ps task accepts connections.

  Raises:
    ValueError: some did not within `timeout_s`; the message names them.
  """
  spec = cluster_spec.as_dict()
  waiting = {f"{job} {i}": address for job in (PS, WORKER)
             for i, address in enumerate(spec.get(job, []))}
  deadline = time.monotonic() + timeout_s
  next_log = time.monotonic()
  while True:
    failed = _unreachable(waiting)
    if not failed:
      return
    waiting = {task: waiting[task] for task in failed}
    now = time.monotonic()
    if now >= deadline:
      raise ValueError(
          f"Could not reach {len(failed)} task(s) of the cluster within {timeout_s:.0f} s: "
          f"{'; '.join(f'{task} at {why}' for task, why in failed.items())}. Check that these "
          "tasks run (their logs), that every task got the same TF_CONFIG cluster, and that "
          "the addresses are reachable from the chief; --cluster_wait_s sets the wait.")
    if now >= next_log:
      logging.info("waiting for %s (giving up in %.0f s)", ", ".join(failed), deadline - now)
      next_log = now + _WAIT_LOG_EVERY_S
    time.sleep(min(_PROBE_TIMEOUT_S, max(0.0, deadline - now)))


class TablePartitioner(tf.distribute.experimental.partitioners.Partitioner):
  """`MinSizePartitioner` for tables only; any other variable stays one piece."""

  def __init__(self, min_shard_bytes: int, max_shards: int):
    self._by_size = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=min_shard_bytes, max_shards=max_shards)

  def __call__(self, shape, dtype, axis=0):
    columns = shape.num_elements() // max(1, shape[axis])
    if shape[axis] < TABLE_ROWS_PER_COLUMN * columns:
      return [1] * shape.rank
    return self._by_size(shape, dtype, axis)


def _port_in_use(error: tf.errors.OpError, role: str, index: int, address: str) -> ValueError:
  return ValueError(
      f"The {role} {index} could not listen on {address} ({error.message}): another process "
      "uses that port, or the host is not this machine. Give this task a free port in "
      "TF_CONFIG (the same cluster for every task), or stop the other process.")


def build_strategy(
    cluster_resolver: Optional[tf.distribute.cluster_resolver.ClusterResolver] = None,
    *,
    min_shard_bytes: int = DEFAULT_MIN_SHARD_BYTES,
    cluster_wait_s: float = DEFAULT_CLUSTER_WAIT_S,
) -> tf.distribute.Strategy:
  """Builds the training strategy for the chief (or the only process).

  Args:
    cluster_resolver: the cluster; read from `TF_CONFIG` when None.
    min_shard_bytes: tables are cut into shards of at least this many bytes, at
      most one per parameter server (parameter-server training only).
    cluster_wait_s: how long the chief waits for the workers and ps to listen.

  Returns:
    `ParameterServerStrategy` for a cluster, `MirroredStrategy` on a machine with
    several GPUs, otherwise the default strategy.

  Raises:
    ValueError: this process is a worker, ps or evaluator task (it should not train);
      a worker or ps cannot be reached; the chief's port is taken.
  """
  if cluster_resolver is None:
    cluster_resolver = cluster_resolver_from_environment()
  if cluster_resolver is None:
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
      return tf.distribute.MirroredStrategy([gpu.name for gpu in gpus])
    return tf.distribute.get_strategy()
  role = task_role(cluster_resolver)
  if role != CHIEF:
    raise ValueError(f"This process is the {role!r} task {cluster_resolver.task_id}: only the "
                     "chief builds the training strategy (workers and ps run "
                     "`start_server(...).join()`, an evaluator evaluates checkpoints).")
  cluster_spec = cluster_resolver.cluster_spec()
  wait_for_servers(cluster_spec, cluster_wait_s)
  num_ps = len(cluster_spec.as_dict().get(PS, []))
  partitioner = TablePartitioner(min_shard_bytes=min_shard_bytes, max_shards=num_ps)
  try:
    return tf.distribute.ParameterServerStrategy(cluster_resolver, variable_partitioner=partitioner)
  except tf.errors.UnknownError as e:  # "Could not start gRPC server"
    raise _port_in_use(e, CHIEF, 0, cluster_spec.task_address(CHIEF, 0)) from e


def is_parameter_server(strategy: tf.distribute.Strategy) -> bool:
  return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def num_workers(strategy: tf.distribute.ParameterServerStrategy) -> int:
  """The cluster's worker tasks (the strategy's `cluster_resolver` property is None)."""
  return strategy.extended._num_workers  # pylint: disable=protected-access


def server_config(num_workers: int) -> tf.compat.v1.ConfigProto:
  """Session config for a worker or ps server.

  With fewer cores than workers + 1, TF's default inter-op pool is too small for the
  blocking RecvTensor calls of concurrently scheduled steps and the cluster hangs
  (seen on 2-core machines, see DESIGN.md), so the pool never goes below that.
  """
  config = tf.compat.v1.ConfigProto()
  config.inter_op_parallelism_threads = max(num_workers + 1, os.cpu_count() or 1)
  return config


def start_server(cluster_resolver: tf.distribute.cluster_resolver.ClusterResolver) -> tf.distribute.Server:
  """Starts this process's worker or ps server; the caller `join()`s it (or keeps it, in tests).

  Raises:
    ValueError: this task is not a worker or ps, or its port is taken.
  """
  role = task_role(cluster_resolver)
  if role not in SERVER_ROLES:
    raise ValueError(f"Only {SERVER_ROLES} tasks run a server; this process is {role!r}.")
  cluster_spec = cluster_resolver.cluster_spec()
  num_workers = len(cluster_spec.as_dict().get(WORKER, []))
  try:
    return tf.distribute.Server(
        cluster_spec,
        job_name=role,
        task_index=cluster_resolver.task_id,
        protocol=cluster_resolver.rpc_layer or "grpc",
        config=server_config(num_workers),
        start=True)
  except tf.errors.UnknownError as e:  # "Could not start gRPC server"
    raise _port_in_use(e, role, cluster_resolver.task_id,
                       cluster_spec.task_address(role, cluster_resolver.task_id)) from e

