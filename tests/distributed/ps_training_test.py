"""SINE under ParameterServerStrategy on an in-process localhost cluster.

This process is the chief (coordinator); two workers and two parameter servers are
`tf.distribute.Server`s started in it by `trainer.strategy.start_server`, on free
ports, with the inter-op thread pool that 2-core machines need (DESIGN.md). The
strategy comes from `TF_CONFIG` exactly as in a real job. The item table is big
enough to be split over both parameter servers and every other variable is small
enough to stay whole, so the test can check the sharding itself, the sampled
softmax on the sharded table, training through the coordinator, and the export that
rebuilds the model outside the strategy from the checkpoint.
"""

import dataclasses
import json
import os
import socket

import numpy as np
import pytest

from common import names
from input_pipeline import schema
from input_pipeline.data_spec import DataSpec
from models import losses
from models import sine
from tests.trainer import tiny_data
from trainer import config as config_lib
from trainer import loop
from trainer import strategy as strategy_lib
import tensorflow as tf

NUM_ITEMS = 200
DIM = 16
# The item table is (200 + 2) x 16 float32 = 12,928 bytes: at least 4,096 bytes per
# shard and at most one shard per ps gives min(2, 12928 // 4096) = 2 shards. The next
# largest variable, a [16, 2 * 16] attention kernel, is 2,048 bytes: one shard.
MIN_SHARD_BYTES = 4096


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


@pytest.fixture(scope="module")
def cluster():
  """Starts 2 workers and 2 ps in this process; returns the cluster dict."""
  ports = _free_ports(5)
  spec = {
      "chief": [f"localhost:{ports[0]}"],
      "worker": [f"localhost:{p}" for p in ports[1:3]],
      "ps": [f"localhost:{p}" for p in ports[3:5]],
  }
  servers = []
  for job in ("worker", "ps"):
    for index in range(len(spec[job])):
      resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
          tf.train.ClusterSpec(spec), task_type=job, task_id=index, rpc_layer="grpc")
      servers.append(strategy_lib.start_server(resolver))
  yield spec
  del servers  # The servers live as long as the process; nothing to stop them.


@pytest.fixture(scope="module")
def strategy(cluster):
  previous = os.environ.get("TF_CONFIG")
  os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})
  try:
    yield strategy_lib.build_strategy(min_shard_bytes=MIN_SHARD_BYTES)
  finally:
    if previous is None:
      del os.environ["TF_CONFIG"]
    else:
      os.environ["TF_CONFIG"] = previous


def _model(strategy):
  """A tiny SINE with its variables created in the strategy's scope, as the trainer does."""
  with strategy.scope():
    model = sine.SINE(sine.SINEConfig(embedding_dim=DIM, max_length=10, num_interests=2,
                                      num_prototypes=10), data=DataSpec.for_catalog(NUM_ITEMS))
    model.create_variables()
  return model


@pytest.mark.large
def test_item_table_is_sharded_over_both_ps(strategy):
  assert isinstance(strategy, tf.distribute.ParameterServerStrategy)
  model = _model(strategy)
  table = model.item_table
  # (ShardedVariable has no public class outside tf.__internal__.)
  assert type(table).__name__ == "ShardedVariable"
  shards = table.variables
  assert [s.shape[0] for s in shards] == [101, 101]  # 202 rows, split evenly
  assert sorted({s.device.split("/task:")[1][0] for s in shards}) == ["0", "1"]
  assert all("/job:ps/" in s.device for s in shards)
  # Only the table is partitioned.
  sharded = [v.name for v in model.variables if "/part_1" in v.name]
  assert len(sharded) == 1 and "item_embedding" in sharded[0]


@pytest.mark.large
def test_sampled_softmax_on_sharded_table_equals_unsharded(strategy):
  table = _model(strategy).item_table
  rng = np.random.default_rng(0)
  query = tf.constant(rng.normal(size=[4, DIM]), tf.float32)
  labels = tf.constant([[0], [7], [150], [199]], tf.int64)
  head = losses.RetrievalLoss(losses.SoftmaxConfig(num_negatives=50, seed=1), num_items=NUM_ITEMS)
  assert not head.full_softmax
  sampled_values = head.sample(labels)
  kwargs = dict(num_items=NUM_ITEMS, sampled_values=sampled_values)
  sharded = losses.sampled_softmax_loss(table, query, labels, **kwargs)
  dense = losses.sampled_softmax_loss(tf.concat([tf.convert_to_tensor(s) for s in table.variables],
                                                axis=0), query, labels, **kwargs)
  assert sharded.shape == [4]
  np.testing.assert_allclose(sharded.numpy(), dense.numpy(), rtol=1e-6)
  # A sampled softmax over 50 negatives with near-random vectors: about log(51).
  assert 2.0 < float(tf.reduce_mean(dense)) < 6.0


@pytest.mark.large
def test_train_and_export_under_parameter_servers(strategy, tmp_path):
  data_dir = tiny_data.write(str(tmp_path / "data"), num_items=NUM_ITEMS)
  config = config_lib.TrainConfig(
      model_dir=str(tmp_path / "run"),
      data=config_lib.DataConfig(data_dir=data_dir, max_length=10, batch_size=16),
      model=config_lib.ModelConfig("sine", {"embedding_dim": DIM, "num_interests": 2,
                                            "num_prototypes": 10}),
      loss=config_lib.LossConfig(num_negatives=50),
      schedule=config_lib.ScheduleConfig(train_steps=8, log_every=4),
      checkpoint=config_lib.CheckpointConfig(every_steps=4),
      eval=config_lib.EvalConfig(ks=(10,), batch_size=64))
  result = loop.train_and_evaluate(config, strategy)
  assert result["step"] == 8
  assert np.isfinite(result["training"]["total"])
  assert result["training"]["examples_per_second"] > 0
  assert 0.0 <= result["metrics"]["hr@10"] <= 1.0 and result["num_users"] == 96

  # The export was built outside the strategy from the (sharded) checkpoint: its item
  # table is the checkpoint's full table.
  checkpoint = tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints"))
  assert checkpoint.endswith("ckpt-8")
  key = next(name for name, shape in tf.train.list_variables(checkpoint)
             if name.startswith("model/item_embedding/embeddings") and "OPTIMIZER" not in name)
  saved_table = tf.train.load_variable(checkpoint, key)
  assert saved_table.shape == (schema.embedding_rows(NUM_ITEMS), DIM)
  exported = tf.saved_model.load(result["export_dir"])
  items = exported.signatures["item_embeddings"]()
  np.testing.assert_allclose(items["embeddings"].numpy(), saved_table[:NUM_ITEMS])
  vectors = exported.signatures["serving_default"](
      history=tf.constant([["item3", "item4", ""]]), history_timestamps=tf.zeros([1, 3], tf.int64))
  assert vectors[names.USER_VECTORS].shape == (1, 1, DIM)


def _tiny_config(data_dir, model_dir):
  return config_lib.TrainConfig(
      model_dir=model_dir,
      data=config_lib.DataConfig(data_dir=data_dir, max_length=10, batch_size=32),
      model=config_lib.ModelConfig("sine", {"embedding_dim": DIM, "num_interests": 2,
                                            "num_prototypes": 10}),
      schedule=config_lib.ScheduleConfig(train_steps=60, log_every=20),
      checkpoint=config_lib.CheckpointConfig(every_steps=60),
      # The tiny data's targets are often items consumed before (see loop_test).
      eval=config_lib.EvalConfig(ks=(1, 10), batch_size=128, mask_history="keep_targets"),
      export=config_lib.ExportConfig(enabled=False))


@pytest.mark.large
def test_cluster_training_matches_one_process_and_so_do_its_metrics(strategy, tmp_path):
  """The same data and steps under the cluster and in one process reach a similar loss;
  the cluster's final metrics are those of its checkpoint evaluated in one process."""
  data_dir = tiny_data.write(str(tmp_path / "data"))  # 40 items: the full softmax
  cluster = loop.train_and_evaluate(_tiny_config(data_dir, str(tmp_path / "ps")), strategy)
  alone = loop.train_and_evaluate(_tiny_config(data_dir, str(tmp_path / "one")),
                                  tf.distribute.get_strategy())
  assert cluster["step"] == alone["step"] == 60
  # The softmax over 40 items starts near log(40) = 3.7. Both runs learn the tiny
  # data's successor rule; the cluster's two workers apply their updates
  # asynchronously (each step reads parameters up to one step old), which costs a
  # little. Measured: see docs/cluster.md.
  losses = cluster["training"]["softmax"], alone["training"]["softmax"]
  print(f"\nmean softmax loss of steps 41-60: cluster {losses[0]:.3f}, one process {losses[1]:.3f}")
  assert max(losses) < 2.5 and abs(losses[0] - losses[1]) < 0.25 * losses[1]
  assert cluster["metrics"]["hr@10"] > 0.5 and alone["metrics"]["hr@10"] > 0.5

  # The cluster's checkpoint restored and evaluated in this process, on one device.
  one_process = loop.TrainingRun(_tiny_config(data_dir, str(tmp_path / "ps")),
                                 tf.distribute.get_strategy())
  assert one_process.step == 60
  metrics = one_process.evaluate("test").metrics
  assert metrics.keys() == cluster["metrics"].keys()
  for name, value in metrics.items():
    assert value == pytest.approx(cluster["metrics"][name], rel=1e-6, abs=1e-9), name


@pytest.mark.large
def test_a_gru_model_trains_with_its_table_sharded_and_its_gru_whole(strategy, tmp_path):
  """GRU4Rec's 64-unit GRU weighs more than a 4,096-byte shard; split over the ps tasks
  Keras' fused GRU fails ("Cannot colocate nodes"), so only the item table is."""
  data_dir = tiny_data.write(str(tmp_path / "data"), num_items=NUM_ITEMS)
  config = dataclasses.replace(
      _tiny_config(data_dir, str(tmp_path / "gru")),
      model=config_lib.ModelConfig("gru4rec", {"embedding_dim": DIM, "hidden_dim": 64}),
      loss=config_lib.LossConfig(num_negatives=50),
      schedule=config_lib.ScheduleConfig(train_steps=4, log_every=2))
  result = loop.train_and_evaluate(config, strategy)
  assert result["step"] == 4 and np.isfinite(result["training"]["total"])
  run = loop.TrainingRun(config, strategy)  # the trained model, restored
  sharded = sorted({v.name.split("/part_")[0] for v in run.model.variables if "/part_" in v.name})
  assert len(sharded) == 1 and "item_embedding" in sharded[0], sharded

