"""The model contract end to end, with a model that exists only in this file.

`ToyModel` reads an extra input (the user's features), has two softmax heads and an
item bias. It goes through training, evaluation, export, the index job and a query of
the artifact with no change to library code: registering it is all it takes.
docs/models.md walks through it.
"""

import dataclasses
import json
import os

import numpy as np
import pytest
import tf_keras

from common import names
from input_pipeline import prepare
from input_pipeline import samples
from input_pipeline import synthetic
from models import base
from models import registry
from models.layers import embeddings
from retrieval import job
from retrieval import requests
from retrieval import serve
from trainer import config as config_lib
from trainer import loop
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class ToyConfig:
  """Attributes: embedding_dim, max_length, second_head_weight (the second head's share)."""
  embedding_dim: int = 8
  max_length: int = 10
  second_head_weight: float = 0.5


@registry.register("toy_contract", ToyConfig)
class ToyModel(base.RetrievalModel):
  """user vector = mean(history item vectors) + mean(user feature vectors); score + bias.

  Heads: "next_item" scores the user vector against the next item; "last_item" scores
  the newest history item's vector against it too, weighted `second_head_weight`.
  """

  def __init__(self, config: ToyConfig, *, data, **kwargs):
    super().__init__(data=data, **kwargs)
    self.config = config
    self.item_embedding = embeddings.ItemEmbedding(self.num_items, config.embedding_dim)
    # One extra row, index num_user_features: the padding of the user features.
    self.user_feature_embedding = tf_keras.layers.Embedding(
        data.num_user_features + 1, config.embedding_dim)
    self.item_bias = self.add_weight(name="item_bias", shape=[data.embedding_rows],
                                     initializer="zeros")

  def sample_spec(self):
    return samples.SampleSpec(
        features=(samples.History(self.config.max_length), samples.UserFeatures()),
        training=samples.AllPrefixes())

  def candidates(self):
    return base.Candidates(self.item_embedding.embeddings, self.item_bias)

  def call(self, features, training=False):
    history = features[names.HISTORY]
    mask = tf.cast(self.item_embedding.padding_mask(history), tf.float32)[:, :, None]
    items = self.item_embedding(history) * mask
    history_vector = tf.reduce_sum(items, 1) / tf.maximum(tf.reduce_sum(mask, 1), 1.0)
    user_features = features[names.USER_FEATURES]
    known = tf.cast(user_features != self.data.num_user_features, tf.float32)[:, :, None]
    feature_vector = tf.reduce_sum(self.user_feature_embedding(user_features) * known, 1)
    user_vector = history_vector + feature_vector / tf.maximum(tf.reduce_sum(known, 1), 1.0)
    outputs = {names.USER_VECTORS: user_vector[:, None, :]}
    if names.LABELS in features:
      length = tf.maximum(features[names.HISTORY_LENGTH] - 1, 0)
      newest = tf.gather(items, length, batch_dims=1)
      labels = features[names.LABELS]
      weights = tf.fill(tf.shape(labels), self.config.second_head_weight)
      outputs[names.HEADS] = {"next_item": base.Head(user_vector, labels),
                              "last_item": base.Head(newest, labels, weights)}
    return outputs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp("contract")
  data_dir = str(root / "data")
  # Synthetic users carry features (age, gender, region).
  prepare.prepare_dataset(prepare.PrepareConfig(
      output_dir=data_dir, num_shards=2, synthetic=synthetic.SyntheticConfig(
          num_users=150, num_items=200, num_events=4000, num_categories=8)))
  config = config_lib.TrainConfig(
      model_dir=str(root / "run"),
      data=config_lib.DataConfig(data_dir=data_dir, max_length=10, batch_size=32),
      model=config_lib.ModelConfig("toy_contract"),
      optimizer=config_lib.OptimizerConfig(name="adam", learning_rate=0.01),
      loss=config_lib.LossConfig(num_negatives=50),  # sampled: 200 items > 50
      schedule=config_lib.ScheduleConfig(train_steps=60, log_every=20),
      eval=config_lib.EvalConfig(ks=(10, 50), batch_size=64))
  result = loop.train_and_evaluate(config)
  report = job.run_index_job(job.JobConfig(export_dir=result["export_dir"],
                                           output_dir=str(root / "retrieval"), k=10,
                                           num_eval_queries=50))
  return root, data_dir, result, report


def test_training_and_evaluation_use_both_heads(trained):
  _, _, result, _ = trained
  assert result["step"] == 60 and result["model"] == "toy_contract"
  terms = result["training"]
  assert {"next_item", "last_item", "total"} <= set(terms)
  assert terms["total"] == pytest.approx(terms["next_item"] + terms["last_item"], rel=1e-4)
  assert result["num_users"] == 150 and 0.0 < result["metrics"]["hr@50"] <= 1.0


def test_export_takes_the_declared_inputs_and_serves_the_bias(trained):
  _, _, result, _ = trained
  with open(os.path.join(result["export_dir"], names.EXPORT_META_FILE)) as f:
    meta = json.load(f)
  assert meta["signatures"]["serving_default"]["inputs"] == [
      "history", "history_timestamps", "user_features"]
  exported = tf.saved_model.load(result["export_dir"])
  items = exported.signatures["item_embeddings"]()
  assert np.abs(items["item_bias"].numpy()).max() > 0  # trained, so not all zero


def test_artifact_ranks_by_vector_plus_bias_and_reads_user_features(trained):
  root, data_dir, result, report = trained
  assert report["item_bias"] and report["eval"]["recall_at_k"] == 1.0
  exported = tf.saved_model.load(result["export_dir"])
  items = exported.signatures["item_embeddings"]()
  ids = items["item_ids"].numpy().astype(str)
  scores_of = {}
  searcher = serve.load_artifact(str(root / "retrieval"))
  assert searcher.inputs == ["history", "history_timestamps", "user_features"]
  user = requests.test_users(data_dir, 1)[0]
  assert user.user_features  # synthetic users have features
  for features in (list(user.user_features), []):
    request = dataclasses.replace(user, user_features=features)
    inputs = requests.to_inputs([request], exported.signatures["serving_default"]
                                .structured_input_signature[1])
    vector = exported.signatures["serving_default"](
        **{k: tf.constant(v) for k, v in inputs.items()})["user_vectors"].numpy()[0, 0]
    scores = items["embeddings"].numpy() @ vector + items["item_bias"].numpy()
    history = set(request.history)
    expected = [ids[i] for i in np.argsort(-scores, kind="stable") if ids[i] not in history][:10]
    served = [item for item, _ in searcher.query([request])[0]]
    assert served == expected
    scores_of[len(features)] = served
  # The user features reach the served list.
  assert scores_of[len(user.user_features)] != scores_of[0]
