"""Strategy selection from the environment (TF_CONFIG), without starting a cluster."""

import json

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
  assert isinstance(resolver, tf.distribute.cluster_resolver.TFConfigClusterResolver)
  assert strategy_lib.task_role(resolver) == "chief"
  spec = resolver.cluster_spec().as_dict()
  assert spec["ps"] == CLUSTER["ps"] and spec["worker"] == CLUSTER["worker"]


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


def test_unsupported_task_type(monkeypatch):
  _set_tf_config(monkeypatch, "evaluator")
  with pytest.raises(ValueError, match="evaluator"):
    strategy_lib.task_role(strategy_lib.cluster_resolver_from_environment())


def test_server_config_has_enough_inter_op_threads():
  # 2 workers need at least 3 inter-op threads, whatever the core count.
  assert strategy_lib.server_config(num_workers=2).inter_op_parallelism_threads >= 3
  assert strategy_lib.server_config(num_workers=40).inter_op_parallelism_threads >= 41
