"""Strategy selection from the environment (TF_CONFIG), without starting a cluster."""

import json
import socket
import time

import pytest

from trainer import strategy as strategy_lib
import tensorflow as tf

CLUSTER = {
    "chief": ["localhost:2220"],
    "worker": ["localhost:2221", "localhost:2222"],
    "ps": ["localhost:2223", "localhost:2224"],
}


def _set_tf_config(monkeypatch, task_type, index=0, cluster=None):
  monkeypatch.setenv("TF_CONFIG", json.dumps({
      "cluster": CLUSTER if cluster is None else cluster,
      "task": {"type": task_type, "index": index},
  }))


def test_no_tf_config_gives_default_strategy(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  assert strategy_lib.cluster_resolver_from_environment() is None
  assert strategy_lib.task_role(None) == "chief"
  strategy = strategy_lib.build_strategy()
  # This machine has no GPU (or one): the default strategy, one replica.
  if len(tf.config.list_logical_devices("GPU")) <= 1:
    assert strategy is tf.distribute.get_strategy()
    assert not strategy_lib.is_parameter_server(strategy)
  assert strategy.num_replicas_in_sync == max(1, len(tf.config.list_logical_devices("GPU")))


def test_tf_config_without_cluster_is_local(monkeypatch):
  monkeypatch.setenv("TF_CONFIG", json.dumps({"task": {"type": "worker", "index": 0}}))
  assert strategy_lib.cluster_resolver_from_environment() is None


def test_tf_config_chief_is_parsed(monkeypatch):
  _set_tf_config(monkeypatch, "chief")
  resolver = strategy_lib.cluster_resolver_from_environment()
  assert strategy_lib.task_role(resolver) == "chief"
  assert resolver.cluster_spec().as_dict() == CLUSTER
  assert (resolver.task_type, resolver.task_id, resolver.rpc_layer) == ("chief", 0, "grpc")


def test_the_evaluator_is_kept_out_of_the_cluster(monkeypatch):
  # The training operator lists an Evaluator replica in every task's cluster; a chief
  # that connected to it would wait forever (it runs no server).
  with_evaluator = {**CLUSTER, "evaluator": ["localhost:2225"]}
  for task_type in ("chief", "worker", "evaluator"):
    _set_tf_config(monkeypatch, task_type, cluster=with_evaluator)
    resolver = strategy_lib.cluster_resolver_from_environment()
    assert resolver.cluster_spec().as_dict() == CLUSTER
    assert strategy_lib.task_role(resolver) == task_type


@pytest.mark.parametrize("task_type,index", [("worker", 1), ("ps", 0)])
def test_server_tasks_do_not_build_a_strategy(monkeypatch, task_type, index):
  _set_tf_config(monkeypatch, task_type, index)
  resolver = strategy_lib.cluster_resolver_from_environment()
  assert strategy_lib.task_role(resolver) == task_type
  assert resolver.task_id == index
  with pytest.raises(ValueError, match="start_server"):
    strategy_lib.build_strategy(resolver)


def test_cluster_without_ps_is_rejected(monkeypatch):
  _set_tf_config(monkeypatch, "worker", cluster={"worker": ["localhost:1", "localhost:2"]})
  with pytest.raises(ValueError, match="no 'ps' job"):
    strategy_lib.cluster_resolver_from_environment()


def test_malformed_tf_config(monkeypatch):
  monkeypatch.setenv("TF_CONFIG", "{cluster: ")
  with pytest.raises(ValueError, match="not valid JSON"):
    strategy_lib.cluster_resolver_from_environment()


@pytest.mark.parametrize("tf_config,message", [
    ({"cluster": CLUSTER, "task": {"type": "master", "index": 0}}, "task type 'master' is not supported"),
    ({"cluster": CLUSTER, "task": {"type": "worker", "index": 2}},
     r"'worker' index 2 is out of range: the cluster has 2 'worker' task\(s\)"),
    ({"cluster": CLUSTER, "task": {"type": "ps", "index": -1}}, "'ps' index -1 is out of range"),
    ({"cluster": {"worker": CLUSTER["worker"], "ps": CLUSTER["ps"]}, "task": {"type": "worker"}},
     "has no 'chief' task"),
    ({"cluster": {**CLUSTER, "worker": {"1": "localhost:2222"}}, "task": {"type": "ps"}},
     "must list 'host:port' addresses"),
    (["chief"], "must be a JSON object"),
])
def test_bad_tf_config_is_refused_with_what_was_expected(monkeypatch, tf_config, message):
  monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
  with pytest.raises(ValueError, match=message):
    strategy_lib.cluster_resolver_from_environment()


def _listening_socket():
  listener = socket.socket()
  listener.bind(("localhost", 0))
  listener.listen()
  return listener


def test_the_chief_names_the_tasks_it_cannot_reach_within_its_wait():
  listener = _listening_socket()
  closed = _listening_socket()
  closed_port = closed.getsockname()[1]
  closed.close()  # nothing listens there any more
  up = f"localhost:{listener.getsockname()[1]}"
  with listener:
    strategy_lib.wait_for_servers(tf.train.ClusterSpec({"worker": [up], "ps": [up]}), 2.0)
    started = time.monotonic()
    with pytest.raises(ValueError, match=rf"Could not reach 1 task\(s\) of the cluster within 1 s: "
                                         rf"ps 0 at localhost:{closed_port}: Connection refused"):
      strategy_lib.wait_for_servers(tf.train.ClusterSpec(
          {"chief": ["localhost:1"], "worker": [up], "ps": [f"localhost:{closed_port}"]}), 1.0)
    assert time.monotonic() - started < 5


def test_a_server_whose_port_is_taken_says_so():
  with _listening_socket() as taken:
    address = f"localhost:{taken.getsockname()[1]}"
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({"chief": ["localhost:1"], "worker": [address], "ps": ["localhost:2"]}),
        task_type="worker", task_id=0, rpc_layer="grpc")
    with pytest.raises(ValueError, match=f"The worker 0 could not listen on {address}.*another "
                                         "process uses that port"):
      strategy_lib.start_server(resolver)


def test_server_config_has_enough_inter_op_threads():
  # 2 workers need at least 3 inter-op threads, whatever the core count.
  assert strategy_lib.server_config(num_workers=2).inter_op_parallelism_threads >= 3
  assert strategy_lib.server_config(num_workers=40).inter_op_parallelism_threads >= 41


def test_only_tables_are_partitioned():
  partitioner = strategy_lib.TablePartitioner(min_shard_bytes=4096, max_shards=2)
  shards = lambda *shape: partitioner(tf.TensorShape(shape), tf.float32)  # noqa: E731
  # MinSizePartitioner's count: ceil(bytes / 4,096), at most max_shards.
  # An item table of 202 x 16 floats (12,928 bytes): min(4, 2) = 2 shards.
  assert shards(202, 16) == [2, 1]
  # An item bias: a vector is a table of one column. 1,000 floats: 1 shard.
  assert shards(1000) == [1] and shards(2000) == [2]
  # A GRU's recurrent kernel (64 units: 64 x 192, 49 kB) and input kernel stay whole:
  # Keras' fused GRU cannot take them split over tasks.
  assert shards(64, 192) == [1, 1] and shards(16, 192) == [1, 1]
  # Not 4 rows per column: not a table, whatever its size.
  assert shards(202, 64) == [1, 1]
