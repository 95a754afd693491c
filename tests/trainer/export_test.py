"""Export tests: the SavedModel reloads in a fresh process and serves what was trained."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from common import names as base
from input_pipeline import data_spec
from input_pipeline import schema
from models import sine
from trainer import export

import tensorflow as tf  # after our packages: they select Keras 2

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_LENGTH = 4
TINY_SINE = sine.SINEConfig(embedding_dim=8, max_length=MAX_LENGTH, num_interests=2,
                            num_prototypes=3)

# Loads an export with TensorFlow alone (no project code, no Keras) and writes what
# both signatures return.
_RELOAD_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
export_dir, request, out = sys.argv[1:4]
with open(request) as f:
  request = json.load(f)
loaded = tf.saved_model.load(export_dir)
user = loaded.signatures["serving_default"](
    history=tf.constant(request["history"], tf.string),
    history_timestamps=tf.constant(request["timestamps"], tf.int64))
items = loaded.signatures["item_embeddings"]()
np.savez(out, **{name: value.numpy() for name, value in user.items()},
         item_ids=items["item_ids"].numpy().astype(str), embeddings=items["embeddings"].numpy(),
         item_bias=items["item_bias"].numpy(), item_counts=items["item_counts"].numpy())
"""


def run_python(code, *args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=_REPO_ROOT)
  result = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=240)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def write_dataset(data_dir, raw_ids):
  os.makedirs(data_dir, exist_ok=True)
  schema.write_tsv(os.path.join(data_dir, schema.VOCAB_FILE), ["index", "item_id", "count"],
                   [[i, raw, len(raw_ids) - i] for i, raw in enumerate(raw_ids)])
  schema.write_stats(data_dir, {"dataset": "tiny", "split": schema.LEAVE_LAST_ONE_OUT,
                                "num_items": len(raw_ids)})


def reload_in_fresh_process(tmp_path, export_dir, history, timestamps):
  request = os.path.join(tmp_path, "request.json")
  with open(request, "w") as f:
    json.dump({"history": history, "timestamps": timestamps}, f)
  out = os.path.join(tmp_path, "served.npz")
  result = run_python(_RELOAD_SCRIPT, export_dir, request, out)
  # Grappler warns about every Softmax op of a loaded function (tensorflow#50575); the
  # models use an exp-normalize softmax, so serving prints none of those lines.
  assert "PredictCost" not in result.stderr, result.stderr[-2000:]
  return np.load(out)


# Raw histories and the index batches the input pipeline would build from them
# (vocabulary "A0".."A6" -> 0..6; unknown ids are dropped and counted; padding 8; the
# last 4 items kept).
RAW_HISTORIES = [
    ["A1", "A2", "", "", "", ""],
    ["", "A3", "", "A5", "", ""],  # "" anywhere is padding; order is kept
    ["A0", "A1", "A2", "A3", "A4", "A5"],  # longer than MAX_LENGTH: keeps A2..A5
    ["nope", "A6", "", "", "", ""],  # an unseen id is ignored, not fed as OOV
]
RAW_TIMESTAMPS = [[10, 20, 0, 0, 0, 0], [0, 30, 0, 50, 0, 0], [1, 2, 3, 4, 5, 6], [7, 8, 0, 0, 0, 0]]
INDEX_HISTORY = [[1, 2, 8, 8], [3, 5, 8, 8], [2, 3, 4, 5], [6, 8, 8, 8]]
INDEX_LENGTH = [2, 2, 4, 1]
INDEX_TIMESTAMPS = [[10, 20, 0, 0], [30, 50, 0, 0], [3, 4, 5, 6], [8, 0, 0, 0]]
UNKNOWN_ITEMS = [0, 0, 0, 1]


def index_features(num_items=7):
  """The index batch for a catalog of `num_items` (the first 7 ids are A0..A6)."""
  history = np.array(INDEX_HISTORY)
  history = np.where(history == 8, schema.pad_id(num_items), history)
  return {base.HISTORY: tf.constant(history, tf.int64),
          base.HISTORY_LENGTH: tf.constant(INDEX_LENGTH, tf.int64),
          base.HISTORY_TIMESTAMPS: tf.constant(INDEX_TIMESTAMPS, tf.int64)}


def test_export_reloads_in_fresh_process_with_same_outputs(tmp_path):
  raw_ids = [f"A{i}" for i in range(7)]
  data_dir = os.path.join(tmp_path, "data")
  model_dir = os.path.join(tmp_path, "run")
  write_dataset(data_dir, raw_ids)
  data = data_spec.read(data_dir)
  tf.random.set_seed(0)
  model = export.build_model("sine", TINY_SINE, data)
  # The trainer's checkpoint also holds the step and the optimizer: expect_partial.
  tf.train.Checkpoint(model=model, step=tf.Variable(5, dtype=tf.int64)).save(
      os.path.join(model_dir, export.CHECKPOINT_SUBDIR, "ckpt"))
  expected = model(index_features(), training=False)[base.USER_VECTORS].numpy()

  export_dir = export.export_saved_model(model_name="sine", model_config=TINY_SINE, data=data,
                                         model_dir=model_dir, extra_meta={"step": 5})
  assert os.path.dirname(export_dir) == os.path.join(model_dir, "export")
  assert os.path.basename(export_dir).isdigit()
  assert os.listdir(os.path.join(model_dir, "export")) == [os.path.basename(export_dir)]
  with open(os.path.join(export_dir, base.EXPORT_META_FILE)) as f:
    meta = json.load(f)
  assert (meta["model"], meta["num_items"], meta["dim"], meta["max_length"]) == ("sine", 7, 8, 4)
  assert meta["num_vectors"] == 1 and meta["step"] == 5 and meta["data_stats"]["num_items"] == 7
  assert meta["signatures"]["serving_default"]["inputs"] == ["history", "history_timestamps"]

  served = reload_in_fresh_process(tmp_path, export_dir, RAW_HISTORIES, RAW_TIMESTAMPS)
  np.testing.assert_allclose(served["user_vectors"], expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(served["history_length"], INDEX_LENGTH)
  np.testing.assert_array_equal(served["unknown_items"], UNKNOWN_ITEMS)
  assert served["item_ids"].tolist() == raw_ids
  np.testing.assert_array_equal(served["embeddings"], model.item_table.numpy()[:7])
  np.testing.assert_array_equal(served["item_bias"], np.zeros(7))  # SINE has no bias
  np.testing.assert_array_equal(served["item_counts"], [7, 6, 5, 4, 3, 2, 1])

  # A second export in the same second gets the next timestamp, not an overwrite.
  second = export.export_saved_model(model_name="sine", model_config=TINY_SINE, data=data,
                                     model_dir=model_dir)
  assert int(os.path.basename(second)) > int(os.path.basename(export_dir))


def test_export_errors_are_explained(tmp_path):
  data_dir = os.path.join(tmp_path, "data")
  write_dataset(data_dir, [f"A{i}" for i in range(7)])
  data = data_spec.read(data_dir)
  with pytest.raises(FileNotFoundError, match="No checkpoint"):
    export.export_saved_model(model_name="sine", model_config=TINY_SINE, data=data,
                              model_dir=os.path.join(tmp_path, "empty"))
  # A checkpoint of another model (no SINE variables) is refused, not half-restored.
  other = os.path.join(tmp_path, "other", "ckpt")
  tf.train.Checkpoint(model=tf.Module()).save(other)
  with pytest.raises(ValueError, match="does not hold every variable"):
    export.export_saved_model(model_name="sine", model_config=TINY_SINE, data=data,
                              model_dir=tmp_path, checkpoint_path=other + "-1")
  assert not os.path.exists(os.path.join(tmp_path, "export"))
  with pytest.raises(ValueError, match="outside any distribution strategy"):
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
      export.build_model("sine", TINY_SINE, data)


def train_under_parameter_servers_and_export(data_dir, model_dir, out):
  """Run in a subprocess by the next test (a PS cluster changes the process's context).

  Trains a few Adagrad steps of a tiny SINE under ParameterServerStrategy on an
  in-process cluster (this process is the chief; 1 worker and 2 ps servers run in it),
  with the item table sharded over both ps, checkpoints as the trainer does, exports
  outside the strategy scope, and saves what the PS model computes, including a
  full-catalog evaluation read from the sharded table (as the trainer evaluates).
  """
  import socket  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  from trainer import evaluation  # pylint: disable=g-import-not-at-top
  from trainer import strategy as strategy_lib  # pylint: disable=g-import-not-at-top

  def free_port():
    with socket.socket() as s:
      s.bind(("localhost", 0))
      return s.getsockname()[1]

  cluster = {"chief": [f"localhost:{free_port()}"], "worker": [f"localhost:{free_port()}"],
             "ps": [f"localhost:{free_port()}", f"localhost:{free_port()}"]}
  spec = tf.train.ClusterSpec(cluster)
  servers = [tf.distribute.Server(spec, job_name=job, task_index=i, protocol="grpc",  # pylint: disable=unused-variable
                                  config=strategy_lib.server_config(1), start=True)
             for job, i in (("worker", 0), ("ps", 0), ("ps", 1))]
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      spec, task_type="chief", task_id=0, rpc_layer="grpc")
  # The item table (302 x 8 floats = 9.7 kB) is sharded; the small variables are not.
  strategy = strategy_lib.build_strategy(resolver, min_shard_bytes=4096)
  data = data_spec.read(data_dir)
  with strategy.scope():
    model = sine.SINE(TINY_SINE, data=data)
    model.create_variables()
    optimizer = tf_keras.optimizers.Adagrad(0.5)
  shards = model.item_table.variables
  if len(shards) != 2:
    raise RuntimeError(f"expected the item table in 2 shards, got {shards}")
  coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
  features = index_features(300)

  @tf.function
  def train_step():
    def replica_fn():
      with tf.GradientTape() as tape:
        query = model(features, training=True)[base.USER_VECTORS][:, 0]
        logits = tf.matmul(query, model.item_table[:300], transpose_b=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.constant([1, 2, 3, 4]), logits=logits))
      optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                    model.trainable_variables))
    strategy.run(replica_fn)

  before = tf.concat(shards, 0).numpy()
  for _ in range(3):
    coordinator.schedule(train_step)
  coordinator.join()
  table = tf.concat(shards, 0).numpy()
  if np.allclose(table, before):
    raise RuntimeError("training did not change the sharded table")
  # As trainer/loop.py checkpoints: model, optimizer (with slots of the shards), step.
  tf.train.Checkpoint(model=model, optimizer=optimizer, step=optimizer.iterations).save(
      os.path.join(model_dir, export.CHECKPOINT_SUBDIR, "ckpt"))
  with strategy.scope():
    vectors = model(features, training=False)[base.USER_VECTORS].numpy()
  eval_batch = {**features, base.EVAL_TARGETS: tf.constant(EVAL_TARGETS, tf.int64),
                base.EVAL_EXCLUDE: features[base.HISTORY]}
  metrics = evaluation.model_evaluator(
      model, protocol=schema.LEAVE_LAST_ONE_OUT, ks=EVAL_KS, item_chunk_size=64)(
          tf.data.Dataset.from_tensors(eval_batch)).metrics
  export_dir = export.export_saved_model(model_name="sine", model_config=TINY_SINE, data=data,
                                         model_dir=model_dir)
  np.savez(out, user_vectors=vectors, table=table[:300], export_dir=export_dir,
           hr=[metrics[f"hr@{k}"] for k in EVAL_KS], mrr=[metrics[f"mrr@{k}"] for k in EVAL_KS])


EVAL_TARGETS = [[10], [20], [30], [1]]
EVAL_KS = (50, 300)  # MRR@300 covers the whole catalog: it depends on every rank


_PS_SCRIPT = """
import sys
from tests.trainer import export_test
export_test.train_under_parameter_servers_and_export(*sys.argv[1:4])
"""


@pytest.mark.large
def test_export_after_parameter_server_training(tmp_path):
  raw_ids = [f"A{i}" for i in range(300)]
  data_dir = os.path.join(tmp_path, "data")
  write_dataset(data_dir, raw_ids)
  trained = os.path.join(tmp_path, "trained.npz")
  run_python(_PS_SCRIPT, data_dir, os.path.join(tmp_path, "run"), trained)
  trained = np.load(trained)
  served = reload_in_fresh_process(tmp_path, str(trained["export_dir"]), RAW_HISTORIES,
                                   RAW_TIMESTAMPS)
  # The sharded table comes back whole, in row order, and serves the same vectors.
  np.testing.assert_array_equal(served["embeddings"], trained["table"])
  np.testing.assert_allclose(served["user_vectors"], trained["user_vectors"], rtol=1e-5,
                             atol=1e-6)
  # The evaluation the chief ran against the sharded table agrees with a numpy ranking
  # of the served vectors against the served table (history masked).
  scores = served["user_vectors"][:, 0, :] @ served["embeddings"].T  # [4, 300]
  history = index_features(300)[base.HISTORY].numpy()
  ranks = []
  for user, (target,) in enumerate(EVAL_TARGETS):
    rankable = np.ones(300, bool)
    rankable[[i for i in history[user] if i < 300] + [target]] = False
    ranks.append(int((rankable & (scores[user] >= scores[user, target])).sum()))
  np.testing.assert_allclose(trained["hr"], [np.mean([r < k for r in ranks]) for k in EVAL_KS])
  np.testing.assert_allclose(trained["mrr"], [np.mean([1 / (r + 1) if r < k else 0 for r in ranks])
                                              for k in EVAL_KS])
