"""The one place that turns the environment into a `tf.distribute.Strategy`.

Three set-ups, picked from the environment:

* No cluster (`TF_CONFIG` unset or without a `cluster`): the default strategy on
  one CPU or GPU, or `MirroredStrategy` when the machine has more than one GPU.
* `TF_CONFIG` naming `ps`, `worker` and `chief` tasks: the chief is the coordinator
  and trains under `ParameterServerStrategy`; every variable larger than
  `min_shard_bytes` (in practice: the item table) is split into up to one shard per
  parameter server by `MinSizePartitioner`. Workers compute on their GPU(s) when
  they have them: the strategy discovers the workers' devices when it connects.
* `TF_CONFIG` for a `ps` or `worker` task: that process only serves
  (`start_server(...).join()`); the chief sends it work.

Only `trainer/loop.py` knows the `ClusterCoordinator`; everything here is about
building the strategy and the servers.
"""

import json
import os
from typing import Optional

import tensorflow as tf

CHIEF = "chief"
WORKER = "worker"
PS = "ps"
SERVER_ROLES = (WORKER, PS)

# Variables below this size stay whole: sharding a 64-float bias over the parameter
# servers buys nothing and costs a round trip per shard. The item table (rows x dim x 4
# bytes) is far above it for any real catalog.
DEFAULT_MIN_SHARD_BYTES = 256 << 10


def cluster_resolver_from_environment() -> Optional[tf.distribute.cluster_resolver.ClusterResolver]:
  """A `TFConfigClusterResolver` when `TF_CONFIG` describes a cluster, else None.

  Raises:
    ValueError: `TF_CONFIG` is not JSON, or its cluster has workers but no
      parameter servers (only the parameter-server set-up is supported).
  """
  raw = os.environ.get("TF_CONFIG", "")
  if not raw.strip():
    return None
  try:
    tf_config = json.loads(raw)
  except json.JSONDecodeError as e:
    raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {raw[:200]!r}. Expected e.g. "
                     '{"cluster": {"chief": [...], "worker": [...], "ps": [...]}, '
                     '"task": {"type": "worker", "index": 0}}.') from e
  cluster = tf_config.get("cluster") or {}
  if not cluster:
    return None
  if not cluster.get(PS):
    raise ValueError(
        f"TF_CONFIG describes a cluster with jobs {sorted(cluster)} but no 'ps' job. Only "
        "parameter-server training is supported across machines: add 'ps' tasks (and a "
        "'chief'), or unset TF_CONFIG to train on this machine's devices.")
  return tf.distribute.cluster_resolver.TFConfigClusterResolver()


def task_role(cluster_resolver: Optional[tf.distribute.cluster_resolver.ClusterResolver]) -> str:
  """This process's job in the cluster: 'chief' (also without a cluster), 'worker' or 'ps'."""
  if cluster_resolver is None:
    return CHIEF
  role = cluster_resolver.task_type
  if role not in (CHIEF,) + SERVER_ROLES:
    raise ValueError(f"TF_CONFIG task type {role!r} is not supported; expected one of "
                     f"{(CHIEF,) + SERVER_ROLES} (the chief coordinates, workers and ps serve).")
  return role


def build_strategy(
    cluster_resolver: Optional[tf.distribute.cluster_resolver.ClusterResolver] = None,
    *,
    min_shard_bytes: int = DEFAULT_MIN_SHARD_BYTES,
) -> tf.distribute.Strategy:
  """Builds the training strategy for the chief (or the only process).

  Args:
    cluster_resolver: the cluster; read from `TF_CONFIG` when None.
    min_shard_bytes: variables are cut into shards of at least this many bytes, at
      most one per parameter server (parameter-server training only).

  Returns:
    `ParameterServerStrategy` for a cluster, `MirroredStrategy` on a machine with
    several GPUs, otherwise the default strategy.

  Raises:
    ValueError: this process is a worker or ps task (it should serve, not train).
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
    raise ValueError(f"This process is the {role!r} task {cluster_resolver.task_id}: it must run "
                     "`start_server(...).join()`, only the chief builds the training strategy.")
  num_ps = len(cluster_resolver.cluster_spec().as_dict().get(PS, []))
  partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
      min_shard_bytes=min_shard_bytes, max_shards=num_ps)
  return tf.distribute.ParameterServerStrategy(cluster_resolver, variable_partitioner=partitioner)


def is_parameter_server(strategy: tf.distribute.Strategy) -> bool:
  return isinstance(strategy, tf.distribute.ParameterServerStrategy)


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
  """Starts this process's worker or ps server; the caller `join()`s it (or keeps it, in tests)."""
  role = task_role(cluster_resolver)
  if role not in SERVER_ROLES:
    raise ValueError(f"Only {SERVER_ROLES} tasks run a server; this process is {role!r}.")
  cluster_spec = cluster_resolver.cluster_spec()
  num_workers = len(cluster_spec.as_dict().get(WORKER, []))
  return tf.distribute.Server(
      cluster_spec,
      job_name=role,
      task_index=cluster_resolver.task_id,
      protocol=cluster_resolver.rpc_layer or "grpc",
      config=server_config(num_workers),
      start=True)
