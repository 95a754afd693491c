"""HRNN-meta (models/hrnn_meta.py): step inputs, GRU, eq 2, trend, sampling, export.

The references below are numpy transcriptions of the paper's description (section 2.2's
concatenated inputs, GRU4Rec's GRU with Keras' gate layout, eq 2, eq 5); they read the
model's weights but none of its code.
"""

import dataclasses
import json
import os

import numpy as np
import pytest

from common import names
from input_pipeline import data_spec as data_spec_lib
from input_pipeline import prepare
from input_pipeline import reward_weights
from input_pipeline import samples
from input_pipeline import schema
from input_pipeline import synthetic
from input_pipeline.splits import SplitConfig
from models import all_models  # noqa: F401  (fills the registry)
from models import hrnn_meta
from models import losses
from models import registry
from retrieval import job
from trainer import config as config_lib
from trainer import loop

import tensorflow as tf  # after `models`, which selects Keras 2
import tf_keras

NUM_ITEMS = 6
PAD = schema.pad_id(NUM_ITEMS)
# Items 0-5; item features: genres 0-2 (field "genre"), brand 3 (field "brand"). Item 5
# has no training events: a cold item.
ITEM_FEATURES = np.array([[0, 3], [1, 4], [0, 2], [2, 4], [1, 3], [0, 1]], np.int64)  # 4 pads
ITEM_FEATURE_NAMES = ("genre=a", "genre=b", "genre=c", "brand=x")
USER_FEATURE_NAMES = ("age=18", "age=25", "gender=F")
COUNTS = np.array([5, 4, 3, 2, 1, 0], np.float32)


def data_spec(**stats):
  return data_spec_lib.DataSpec(
      num_items=NUM_ITEMS, item_ids=tuple("abcdef"), item_counts=COUNTS,
      item_features=ITEM_FEATURES, item_feature_names=ITEM_FEATURE_NAMES,
      user_feature_names=USER_FEATURE_NAMES,
      stats={"split": schema.LEAVE_LAST_ONE_OUT, "has_timestamps": True, "has_feedback": True,
             **stats})


def make_model(seed=0, data=None, **overrides):
  tf_keras.utils.set_random_seed(seed)
  config = hrnn_meta.HRNNMetaConfig(**{
      "embedding_dim": 3, "hidden_dim": 4, "max_length": 4, "time_embedding_dim": 2,
      "num_time_buckets": 8, "session_gap": 100.0, "user_feature_dim": 2,
      "item_feature_dim": 2, "feedback_mean": 3.0, "feedback_std": 2.0, **overrides})
  model = hrnn_meta.HRNNMeta(config, data=data or data_spec())
  model.create_variables()
  rng = np.random.default_rng(seed)
  for variable in model.trainable_weights:  # non-zero biases too, so that they are tested
    variable.assign(rng.normal(size=variable.shape).astype(np.float32) * 0.5)
  return model


def features(request_time=(130, 400), labels=None, weights=None):
  batch = {
      names.HISTORY: tf.constant([[3, 1, 4, 0], [2, 5, PAD, PAD]], tf.int64),
      names.HISTORY_LENGTH: tf.constant([4, 2], tf.int64),
      names.HISTORY_TIMESTAMPS: tf.constant([[0, 10, 20, 120], [5, 300, 0, 0]], tf.int64),
      names.REQUEST_TIME: tf.constant(request_time, tf.int64),
      names.HISTORY_FEEDBACK: tf.constant([[5, 1, 3, 4], [2, 4, 0, 0]], tf.float32),
      names.USER_FEATURES: tf.constant([[1, 2], [0, 3]], tf.int64),  # 3 pads
  }
  if labels is not None:
    batch[names.LABELS] = tf.constant(labels, tf.int64)
    batch[names.LABEL_WEIGHTS] = tf.constant(weights, tf.float32)
  return batch


def sigmoid(x):
  return 1 / (1 + np.exp(-x))


def reference_tower(model):
  """w(f), b(f) `[rows, D]`, `[rows]`: field means, one ReLU layer, a linear layer."""
  tower = model.item_features
  table = tower.pooling.embedding.embeddings.numpy()
  rows = np.concatenate([ITEM_FEATURES, np.full([2, 2], 4)])  # OOV, padding rows
  pooled = []
  for row in rows:
    parts = []
    for members in ((3,), (0, 1, 2)):  # fields in name order: brand, genre
      chosen = [f for f in row if f in members]
      parts.append(table[chosen].mean(0) if chosen else np.zeros(2))
    pooled.append(np.concatenate(parts))
  kernel, offset = (w.numpy() for w in tower.hidden[0].weights)
  hidden = np.maximum(np.stack(pooled) @ kernel + offset, 0)
  kernel, offset = (w.numpy() for w in tower.output_layer.weights)
  out = hidden @ kernel + offset
  return out[:, :3], out[:, 3]


def reference_inputs(model, batch):
  """x_t of every real step, per row (the module docstring's concatenation)."""
  items = model.item_embedding.embeddings.numpy()
  feature_vectors, _ = reference_tower(model)
  time_table = model.time_controls.embedding.embeddings.numpy()
  user_table = model.user_features.embedding.embeddings.numpy()
  rows = []
  for b in range(2):
    length = int(batch[names.HISTORY_LENGTH][b])
    times = batch[names.HISTORY_TIMESTAMPS].numpy()[b]
    following = list(times[1:length]) + [int(batch[names.REQUEST_TIME][b])]
    user = batch[names.USER_FEATURES].numpy()[b]
    # Fields in name order: age (0, 1), gender (2).
    pooled = np.concatenate([
        np.mean([user_table[f] for f in user if f in members], 0)
        if any(f in members for f in user) else np.zeros(2) for members in ((0, 1), (2,))])
    steps = []
    for t in range(length):
      item = int(batch[names.HISTORY][b, t])
      gap = following[t] - times[t]
      bucket = 0 if gap <= 0 else min(1 + int(np.floor(np.log2(gap))), 7)
      feedback = (float(batch[names.HISTORY_FEEDBACK][b, t]) - 3.0) / 2.0
      steps.append(np.concatenate([items[item], feature_vectors[item], time_table[bucket],
                                   [1.0 if gap > 100 else 0.0], [feedback], pooled]))
    rows.append(np.stack(steps))
  return rows


def reference_outputs(model, inputs):
  """o_t = W h_t + b of a numpy GRU (Keras layout, reset after) over `inputs` `[n, width]`."""
  [gru] = model.encoder.recurrent_layers
  kernel, recurrent, bias = (w.numpy() for w in gru.cell.weights)
  units = recurrent.shape[0]
  h = np.zeros(units)
  out = []
  for x in inputs:
    xs = x @ kernel + bias[0]
    hs = h @ recurrent + bias[1]
    z = sigmoid(xs[:units] + hs[:units])
    r = sigmoid(xs[units:2 * units] + hs[units:2 * units])
    h = z * h + (1 - z) * np.tanh(xs[2 * units:] + r * hs[2 * units:])
    out.append(h @ model.encoder.projection.kernel.numpy() + model.encoder.projection.bias.numpy())
  return np.stack(out)


def test_step_inputs_concatenate_item_features_time_feedback_and_user_features():
  model = make_model()
  batch = features()
  inputs = model.step_inputs(batch).numpy()
  for b, expected in enumerate(reference_inputs(model, batch)):
    np.testing.assert_allclose(inputs[b, :len(expected)], expected, rtol=1e-5, atol=1e-6)
  # Gaps of row 0: 10, 10, 100, 10 -> buckets 4, 4, 7, 4; no gap above 100 -> no session.
  # Row 1: 295 (a session break), then 100 to the request.
  session = inputs[:, :, 3 + 3 + 2]
  assert session[0].tolist() == [0, 0, 0, 0] and session[1, :2].tolist() == [1, 0]


def test_user_vector_is_eq2_user_side_of_the_gru_output_at_the_newest_step():
  model = make_model()
  batch = features()
  vectors = model(batch, training=False)[names.USER_VECTORS].numpy()
  assert vectors.shape == (2, 1, 2 * 3 + 2)
  for b, inputs in enumerate(reference_inputs(model, batch)):
    o = reference_outputs(model, inputs)[-1]
    # inference_mix 0.5: [(1 - l) o, l o, 1 - l, l].
    np.testing.assert_allclose(vectors[b, 0], np.concatenate([0.5 * o, 0.5 * o, [0.5, 0.5]]),
                               rtol=1e-4, atol=1e-5)


def test_the_request_time_changes_the_recommendation_only_through_the_newest_gap():
  model = make_model()
  labels = [[1, 4, 0, 2], [5, 3, PAD, PAD]]
  weights = [[1, 1, 1, 1], [1, 1, 0, 0]]
  # Row 0's newest event is at 120: a request 10 s later or a day later.
  soon, late = (model(features((request, 400), labels, weights), training=False)[names.HEADS]
                ["next_item"].query.numpy() for request in (130, 120 + 86_400))
  np.testing.assert_allclose(soon[0, :3], late[0, :3], rtol=1e-6)  # earlier steps unchanged
  assert np.abs(soon[0, 3] - late[0, 3]).max() > 1e-3
  np.testing.assert_allclose(soon[1], late[1], rtol=1e-6)  # row 1's request did not move


def test_cold_items_are_scored_from_their_features():
  model = make_model()
  candidates = model.candidates()
  assert candidates.bias is None  # b_j sits in the vectors' last-but-one column
  vectors = candidates.vectors.numpy()
  w, b = model.item_embedding.embeddings.numpy(), model.item_bias.numpy()
  wf, bf = reference_tower(model)
  # Item 5 has no training events: [w(f), w(f), b(f), b(f)]; the others [w, w(f), b, b(f)].
  np.testing.assert_allclose(vectors[5], np.concatenate([wf[5], wf[5], [bf[5]], [bf[5]]]),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(vectors[:5], np.concatenate(
      [w[:5], wf[:5], b[:5, None], bf[:5, None]], axis=1), rtol=1e-5, atol=1e-6)
  # Scores at inference: 0.5 (w . o + b) + 0.5 (w(f) . o + b(f)) for warm items,
  # w(f) . o + b(f) for the cold one.
  user = model(features(), training=False)[names.USER_VECTORS].numpy()[:, 0]
  o = user[:, :3] / 0.5
  scores = user @ vectors[:NUM_ITEMS].T
  expected = 0.5 * (o @ w[:NUM_ITEMS].T + b[:NUM_ITEMS]) + 0.5 * (o @ wf[:NUM_ITEMS].T + bf[:NUM_ITEMS])
  expected[:, 5] = o @ wf[5] + bf[5]
  np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)


def test_training_draws_one_lambda_per_sample_and_passes_the_label_weights():
  model = make_model()
  labels = [[1, 4, 0, 2], [5, 3, PAD, PAD]]
  weights = [[1, 0.5, 1, 1], [1, 1, 0, 0]]
  head = model(features(labels=labels, weights=weights), training=True)[names.HEADS]["next_item"]
  query = head.query.numpy()
  mix = query[:, :, -1]  # lambda, the last column of [(1 - l) o, l o, 1 - l, l]
  np.testing.assert_allclose(query[:, :, -2], 1 - mix, rtol=1e-6)
  assert np.all((mix >= 0) & (mix <= 1))
  assert np.ptp(mix[0]) == 0 and np.ptp(mix[1, :2]) == 0 and mix[0, 0] != mix[1, 0]
  np.testing.assert_array_equal(head.weights.numpy(), weights)
  np.testing.assert_array_equal(head.labels.numpy(), labels)


def test_without_item_features_the_bias_is_the_candidates_bias_and_trend_adds_log_q():
  model = make_model(use_item_features=False, trend_correction=True, trend_smoothing=1.0)
  candidates = model.candidates()
  assert candidates.vectors.shape == (NUM_ITEMS + 2, 3)
  # log q of counts 5, 4, 3, 2, 1, 0 with alpha 1: (c + 1) / (15 + 6).
  log_q = np.log((COUNTS + 1) / 21)
  np.testing.assert_allclose(candidates.bias.numpy()[:NUM_ITEMS],
                             model.item_bias.numpy()[:NUM_ITEMS] + log_q, rtol=1e-5)
  model.set_trend(np.array([0, 0, 0, 0, 0, 9], np.float32))  # a recent window: only item 5
  np.testing.assert_allclose(model.candidates().bias.numpy()[:NUM_ITEMS] -
                             model.item_bias.numpy()[:NUM_ITEMS],
                             np.log(np.array([1, 1, 1, 1, 1, 10]) / 15), rtol=1e-5)
  assert model.user_vectors(features()).shape == (2, 1, 3)
  with pytest.raises(ValueError, match="trend_correction"):
    make_model().set_trend(COUNTS)


def test_sample_spec_follows_the_data_and_the_switches():
  full = make_model().sample_spec()
  assert [type(f) for f in full.features] == [samples.History, samples.RequestTime,
                                              samples.HistoryFeedback, samples.UserFeatures]
  assert type(full.training) is samples.AllPositions
  weighted = make_model(reward_threshold=4.0, negative_reward=0.2).sample_spec().training
  assert isinstance(weighted, reward_weights.RewardWeightedPositions)
  assert (weighted.positive_threshold, weighted.negative_weight) == (4.0, 0.2)
  # Order-only data without feedback or features: a GRU over items, like GRU4Rec plus b_j.
  bare = data_spec_lib.DataSpec.for_catalog(NUM_ITEMS)
  model = make_model(data=bare)
  assert [type(f) for f in model.sample_spec().features] == [samples.History]
  assert not (model.uses_time or model.uses_feedback or model.uses_user_features or
              model.uses_item_features)
  assert model.user_vectors({names.HISTORY: tf.constant([[1, 2]], tf.int64),
                             names.HISTORY_LENGTH: tf.constant([2], tf.int64)}).shape == (1, 1, 3)


def test_bad_configurations_are_rejected():
  with pytest.raises(ValueError, match="inference_mix"):
    hrnn_meta.HRNNMetaConfig(inference_mix=1.5)
  with pytest.raises(ValueError, match="has_feedback"):
    make_model(data=data_spec_lib.DataSpec.for_catalog(NUM_ITEMS), reward_threshold=4.0)
  with pytest.raises(ValueError, match="item input"):
    make_model(data=data_spec_lib.DataSpec.for_catalog(NUM_ITEMS), use_item_ids=False)
  assert registry.lookup("hrnn_meta").model_class is hrnn_meta.HRNNMeta


def test_log_q_correction_makes_the_full_softmax_optimum_a_stationary_point_of_the_sampled_loss():
  # Section 3.1: negatives drawn from q (item counts ** 0.75) with log q subtracted from
  # the label's and the negatives' logits give a model that is consistent with the full
  # softmax. On a 50-item catalog with labels drawn from p (Zipf counts), at the full
  # softmax's optimum (logits log p + const) the full softmax's expected gradient is 0;
  # the sampled loss's, averaged over 600 draws of 10 negatives, is 0 within its
  # sampling noise with the correction, and clearly not without it (the uncorrected
  # loss pushes the popular items, drawn more often as negatives, down).
  n, draws = 50, 600
  counts = np.round(500 / np.arange(1, n + 1) ** 1.1) + 1
  p = counts / counts.sum()
  logits = np.log(p).astype(np.float32) + 0.3
  loss_fn = losses.RetrievalLoss(losses.SoftmaxConfig(num_negatives=10, sampler=losses.UNIGRAM,
                                                      unigram_power=0.75, seed=7),
                                 num_items=n, item_counts=counts)
  table = tf.constant(np.eye(n + 2, n, dtype=np.float32))  # query . e_j = logit j
  labels = tf.constant(np.arange(n)[:, None], tf.int64)  # every label once, weighted by p
  weights = tf.constant(p[:, None], tf.float32)

  @tf.function
  def expected_gradients():
    sums = [tf.zeros([n]), tf.zeros([n]), tf.zeros([n])]
    for _ in tf.range(draws):
      query = tf.tile(tf.constant(logits)[tf.newaxis], [n, 1])
      sampled = loss_fn.sample(labels)
      uncorrected = (sampled[0], tf.ones_like(sampled[1]), tf.ones_like(sampled[2]))
      with tf.GradientTape() as tape:
        tape.watch(query)
        terms = [losses.sampled_softmax_loss(table, query, labels, num_items=n,
                                             sampled_values=values, weights=weights)
                 for values in (sampled, uncorrected)]
        terms.append(losses.full_softmax_loss(table, query, labels, num_items=n, weights=weights))
        total = tf.stack([tf.reduce_sum(t) for t in terms])
      jacobian = tape.jacobian(total, query)  # [3, n, n]
      sums = [s + tf.reduce_sum(jacobian[k], axis=0) for k, s in enumerate(sums)]
    return [s / draws for s in sums]

  corrected, uncorrected, full = (g.numpy() for g in expected_gradients())
  assert np.abs(full).sum() < 1e-5
  # |p| = 1; the standard error of the corrected sum is about 0.05 at 600 draws.
  assert np.abs(corrected).sum() < 0.15
  assert np.abs(uncorrected).sum() > 0.35
  assert np.abs(uncorrected).sum() > 3 * np.abs(corrected).sum()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp("hrnn_meta")
  data_dir = str(root / "data")
  # Synthetic users have sessions (seconds to minutes apart, days between), feedback,
  # user features; items have features. The temporal split leaves a few items without
  # training events (cold items).
  prepare.prepare_dataset(prepare.PrepareConfig(
      output_dir=data_dir, num_shards=2, split=SplitConfig(protocol=schema.TEMPORAL),
      synthetic=synthetic.SyntheticConfig(num_users=300, num_items=400, num_events=6000,
                                          num_categories=8)))
  config = config_lib.TrainConfig(
      model_dir=str(root / "run"),
      data=config_lib.DataConfig(data_dir=data_dir, max_length=10, batch_size=32),
      model=config_lib.ModelConfig("hrnn_meta", overrides={
          "embedding_dim": 8, "hidden_dim": 16, "trend_correction": True,
          "reward_threshold": 0.5}),
      optimizer=config_lib.OptimizerConfig(name="adam", learning_rate=0.01),
      loss=config_lib.LossConfig(num_negatives=50, sampler="unigram"),  # 200 items > 50
      schedule=config_lib.ScheduleConfig(train_steps=40, log_every=20),
      eval=config_lib.EvalConfig(ks=(10, 50), batch_size=64))
  result = loop.train_and_evaluate(config)
  report = job.run_index_job(job.JobConfig(export_dir=result["export_dir"],
                                           output_dir=str(root / "retrieval"), k=10,
                                           num_eval_queries=50))
  return data_dir, result, report


def test_trains_and_exports_the_time_feedback_and_user_inputs(trained):
  data_dir, result, report = trained
  assert result["step"] == 40 and result["num_users"] > 0
  assert 0.0 <= result["metrics"]["hr@50"] <= 1.0 and result["metrics"]["perplexity"] > 1.0
  with open(os.path.join(result["export_dir"], names.EXPORT_META_FILE)) as f:
    meta = json.load(f)
  assert meta["signatures"]["serving_default"]["inputs"] == [
      "history", "history_feedback", "history_timestamps", "request_time", "user_features"]
  # The index holds the trend bias as its extra column, and is exact at this size.
  assert report["item_bias"] and report["eval"]["recall_at_k"] == 1.0

  exported = tf.saved_model.load(result["export_dir"])
  serve = exported.signatures["serving_default"]
  items = exported.signatures["item_embeddings"]()
  data = data_spec_lib.read(data_dir)
  np.testing.assert_allclose(items["item_bias"].numpy(), np.log(
      (data.item_counts + 1) / (data.item_counts.sum() + data.num_items)), rtol=1e-5)
  # Cold items are indexed from their features: [w(f), w(f), b(f), b(f)]; warm ones are not.
  embeddings = items["embeddings"].numpy()
  cold = data.item_counts == 0
  assert cold.any() and embeddings.shape[1] == 2 * 8 + 2
  np.testing.assert_array_equal(embeddings[cold, :8], embeddings[cold, 8:16])
  np.testing.assert_array_equal(embeddings[cold, 16], embeddings[cold, 17])
  assert np.abs(embeddings[~cold, :8] - embeddings[~cold, 8:16]).max() > 1e-3
  request = dict(history=tf.constant([list(data.item_ids[:3])]),
                 history_timestamps=tf.constant([[1000, 1060, 1100]], tf.int64),
                 history_feedback=tf.constant([[0.9, 0.2, 0.8]]),
                 user_features=tf.constant([[data.user_feature_names[0]]]))
  vectors = [serve(**request, request_time=tf.constant([t], tf.int64))["user_vectors"].numpy()
             for t in (1130, 1100 + 3 * 86_400)]
  assert vectors[0].shape == (1, 1, 2 * 8 + 2)
  assert np.abs(vectors[0] - vectors[1]).max() > 1e-4  # the delay reaches the served vector


def test_fixed_training_lambda_and_a_feature_only_input():
  # training_mix fixes lambda (the co-training the paper compares against).
  model = make_model(training_mix=0.25)
  head = model(features(labels=[[1, 4, 0, 2], [5, 3, PAD, PAD]],
                        weights=[[1, 1, 1, 1], [1, 1, 0, 0]]), training=True)[names.HEADS]["next_item"]
  np.testing.assert_allclose(head.query.numpy()[:, :, -1], 0.25)
  # Without the id input (Table 1's feature-only row) the step input starts with w(f) of
  # the item, and the decoder still has its w_j.
  model = make_model(use_item_ids=False)
  inputs = model.step_inputs(features()).numpy()
  feature_vectors, _ = reference_tower(model)
  np.testing.assert_allclose(inputs[0, :4, :3], feature_vectors[[3, 1, 4, 0]], rtol=1e-5, atol=1e-6)
  assert model.candidates().vectors.shape == (NUM_ITEMS + 2, 2 * 3 + 2)
