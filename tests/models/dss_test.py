"""DSS (models/dss.py) against numpy transcriptions of the paper's equations (8-13, 3-4).

The references below are written from ../shared/papers/dss.md, not from the model's
code. Eq 5-6 (the seq2item loss with K vectors) is the trainer's multi-vector softmax
head, tested in tests/models/losses_test.py::test_multi_vector_queries_follow_dss_eq6.
"""

import math

import numpy as np
import pytest

from common import names
from input_pipeline import schema
from input_pipeline.data_spec import DataSpec
from models import all_models  # noqa: F401  (fills the registry)
from models import dss
from models import registry

import tensorflow as tf  # after `models`, which selects Keras 2
import tf_keras

NUM_ITEMS = 12
PAD = schema.pad_id(NUM_ITEMS)
DIM = 4
EPSILON = 1e-6


def _random_weights(model, seed):
  rng = np.random.default_rng(seed)
  for variable in model.weights:
    variable.assign(rng.normal(size=variable.shape).astype(np.float32) * 0.5)


def _model(seed=0, **overrides):
  tf_keras.utils.set_random_seed(seed)
  config = dss.DSSConfig(**{"embedding_dim": DIM, "max_length": 5, "num_blocks": 1,
                            "num_intentions": 3, "future_length": 4, "dropout": 0.2,
                            **overrides})
  model = dss.DSS(config, data=DataSpec.for_catalog(NUM_ITEMS))
  model.create_variables()
  _random_weights(model, seed)
  return model


def _layer_norm(x, layer):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + EPSILON) * layer.gamma.numpy() + layer.beta.numpy()


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _disentangle(layer, z, beta_set, mean=False):
  """Eq 8-13 for one sequence of n real items z `[n, D]`: `[n, K, D]`, row t = phi(x_{0..t}).

  mean: divide eq 13's sum by each intention's total weight sum_i p_{k|i} p_i.
  """
  n, d = z.shape
  scale = 1 / np.sqrt(d)
  prototypes = layer.prototypes.numpy()
  p_k_given_i = _softmax(_layer_norm(z, layer.intention_norm) @
                         _layer_norm(prototypes, layer.prototype_norm).T * scale)  # eq 8
  alpha = layer.positions.embeddings.numpy()[n - 1 - np.arange(n)]  # newest = position 0
  key_tilde = _layer_norm(alpha + z, layer.key_norm)  # eq 11
  keys = key_tilde + np.maximum(key_tilde @ layer.key_dense.kernel.numpy() +
                                layer.key_dense.bias.numpy(), 0)  # eq 10
  out = np.zeros([n, len(prototypes), d])
  for t in range(n):
    query = _layer_norm(alpha[t] + z[t] + layer.query_bias.numpy(), layer.query_norm)  # eq 12
    p_i = _softmax(keys[:t + 1] @ query * scale)  # eq 9, over i <= t
    pooled = np.einsum("i,ik,id->kd", p_i, p_k_given_i[:t + 1], z[:t + 1])
    if mean:
      pooled /= np.einsum("i,ik->k", p_i, p_k_given_i[:t + 1])[:, None]
    out[t] = _layer_norm(layer.betas.numpy()[beta_set] + pooled, layer.output_norm)  # eq 13
  return out


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_disentanglement_layer_matches_eq_8_to_13(pooling):
  model = _model(intention_pooling=pooling)
  history = tf.constant([[3, 1, 4, 1, 5], [9, 2, PAD, PAD, PAD]], tf.int64)
  mask = model.item_embedding.padding_mask(history)
  z = model.encoder(model.item_embedding(history), mask).numpy()
  for beta_set in (dss.INPUT_BETAS, dss.LABEL_BETAS):
    phi = model.disentangle(tf.constant(z), mask, beta_set).numpy()  # [2, 5, K, D]
    assert np.isfinite(phi).all()  # padding rows too
    for row, n in enumerate((5, 2)):
      expected = _disentangle(model.disentangle, z[row, :n], beta_set, mean=pooling == "mean")
      np.testing.assert_allclose(phi[row, :n], expected, rtol=2e-4, atol=2e-5)
  # The two beta sets give different outputs (eq 13: input vs label sequences).
  assert not np.allclose(model.disentangle(tf.constant(z), mask, 0).numpy(),
                         model.disentangle(tf.constant(z), mask, 1).numpy())


@pytest.mark.parametrize("fraction,count,kept", [
    (0.5, 6, 3), (0.34, 6, 3),  # ceil(2.04) = 3
    (0.0, 6, 0), (1.0, 6, 6), (0.1, 7, 1)])
def test_confidence_selection_keeps_the_ceil_lambda_smallest(fraction, count, kept):
  losses = tf.constant([5.0, 1.0, 3.0, 0.5, 4.0, 2.0, 6.0][:count])
  mask = dss.confident_terms(losses, fraction).numpy()
  assert mask.sum() == kept == math.ceil(fraction * count)
  # The kept ones are the smallest: every kept loss <= every dropped loss.
  values = losses.numpy()
  assert kept in (0, count) or values[mask].max() <= values[~mask].min()


@pytest.mark.parametrize("negatives", ["all", "same_intention"])
def test_seq2seq_loss_matches_eq_3_and_4(negatives):
  # 3 prefixes (the first two from the same window), K = 2, D = 2. Eq 3's denominator
  # runs over every intention of the batch's futures ("all") or over intention k only.
  rng = np.random.default_rng(1)
  prefix = rng.normal(size=(3, 2, 2)).astype(np.float32)
  future = rng.normal(size=(3, 2, 2)).astype(np.float32)
  example = tf.constant([0, 0, 1], tf.int64)
  terms = np.zeros([3, 2])
  for n in range(3):
    for k in range(2):
      # Eq 3's denominator: every future intention of the batch, except those of the
      # same window's other prefixes (module docstring).
      allowed = [(m, kk) for m in range(3) for kk in range(2)
                 if not (example.numpy()[m] == example.numpy()[n] and m != n)
                 and (negatives == dss.ALL_INTENTIONS or kk == k)]
      logits = np.array([prefix[n, k] @ future[m, kk] for m, kk in allowed])
      terms[n, k] = np.log(np.exp(logits).sum()) - prefix[n, k] @ future[n, k]
  for fraction in (1.0, 0.5):
    kept = np.zeros_like(terms, bool)
    kept.flat[np.argsort(terms, axis=None, kind="stable")[:math.ceil(fraction * 6)]] = True
    got = dss.seq2seq_losses(tf.constant(prefix), tf.constant(future), example, fraction,
                             negatives)
    np.testing.assert_allclose(got.numpy(), (terms * kept).sum(axis=1), rtol=1e-5)


def _training_features():
  # Window [3, 1, 4] -> labels [1, 4, 6], future of the window's start: [7, 6, 4, 1]
  # (newest first); a second user [9] -> [2] with future [2].
  return {
      names.HISTORY: tf.constant([[3, 1, 4], [9, PAD, PAD]], tf.int64),
      names.HISTORY_LENGTH: tf.constant([3, 1], tf.int64),
      names.HISTORY_TIMESTAMPS: tf.zeros([2, 3], tf.int64),
      names.LABELS: tf.constant([[1, 4, 6], [2, PAD, PAD]], tf.int64),
      names.LABEL_WEIGHTS: tf.constant([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]),
      names.FUTURE: tf.constant([[7, 6, 4, 1], [2, PAD, PAD, PAD]], tf.int64),
      names.FUTURE_LENGTH: tf.constant([4, 1], tf.int64),
  }


def test_outputs_serve_k_vectors_and_train_both_losses():
  model = _model(seq2seq_prefixes=3, item_logit_scale=0.5)  # every prefix of the windows
  features = _training_features()
  outputs = model(features, training=False)
  intentions = model.intentions(features[names.HISTORY]).numpy()
  # Serving: the K intentions of the whole history, times item_logit_scale (eq 5-6).
  np.testing.assert_allclose(outputs[names.USER_VECTORS].numpy(),
                             np.stack([intentions[0, 2], intentions[1, 0]]) * 0.5, rtol=1e-5)
  head = outputs[names.HEADS]["next_item"]
  assert head.query.shape == (2, 3, 3, DIM)  # every position, K vectors
  np.testing.assert_allclose(head.query.numpy(), intentions * 0.5, rtol=1e-5)
  phi = intentions / np.float32(np.sqrt(DIM))  # eq 3's scale, whatever item_logit_scale
  # Seq2seq: position p of the window meets the future at FUTURE[len - 1 - p]; with
  # lambda 0.5, ceil(0.5 * 4 prefixes * 3) = 6 terms are kept. The order in which the
  # prefixes were drawn does not matter for the per-window sums.
  future = model.intentions(features[names.FUTURE], beta_set=dss.LABEL_BETAS).numpy()
  positives = np.stack([future[0, 3], future[0, 2], future[0, 1], future[1, 0]])
  expected = dss.seq2seq_losses(tf.constant(np.stack([phi[0, 0], phi[0, 1], phi[0, 2], phi[1, 0]])),
                                tf.constant(positives), tf.constant([0, 0, 0, 1], tf.int64), 0.5)
  per_window = [expected.numpy()[:3].sum(), expected.numpy()[3]]
  np.testing.assert_allclose(outputs[names.AUX_LOSSES]["seq2seq"].numpy(), per_window, rtol=1e-5)


def test_seq2seq_prefixes_are_drawn_per_window():
  model = _model(seq2seq_prefixes=2)
  labels = tf.constant([[1, 4, 6, PAD], [2, PAD, PAD, PAD], [PAD] * 4], tf.int64)
  for _ in range(5):
    drawn = model._drawn_prefixes(labels).numpy()
    windows = drawn[:, 0].tolist()
    # Two distinct real positions of window 0, the only one of window 1, none of 2.
    assert sorted(windows) == [0, 0, 1]
    positions = {tuple(p) for p in drawn.tolist()}
    assert len(positions) == 3 and (1, 0) in positions
    assert all(labels.numpy()[w, p] != PAD for w, p in drawn)


def test_lambda_zero_is_seq2item_only_training():
  with_seq2seq = _model(confidence=0.0)
  seq2item_only = _model(seq2seq=dss.NONE)
  seq2item_only.set_weights(with_seq2seq.get_weights())
  features = _training_features()
  outputs = with_seq2seq(features, training=False)
  assert outputs[names.AUX_LOSSES]["seq2seq"].numpy().tolist() == [0.0, 0.0]
  plain = seq2item_only(features, training=False)
  assert names.AUX_LOSSES not in plain
  np.testing.assert_array_equal(outputs[names.HEADS]["next_item"].query.numpy(),
                                plain[names.HEADS]["next_item"].query.numpy())
  # Gradients agree too: the seq2seq branch contributes exactly nothing.
  with tf.GradientTape(persistent=True) as tape:
    a = tf.reduce_sum(with_seq2seq(features, training=False)[names.HEADS]["next_item"].query)
    a += tf.reduce_sum(with_seq2seq(features, training=False)[names.AUX_LOSSES]["seq2seq"])
    b = tf.reduce_sum(seq2item_only(features, training=False)[names.HEADS]["next_item"].query)
  for va, vb in zip(with_seq2seq.trainable_variables, seq2item_only.trainable_variables):
    ga, gb = tape.gradient(a, va), tape.gradient(b, vb)
    if ga is None or gb is None:
      assert ga is None or not tf.convert_to_tensor(ga).numpy().any(), va.name
      continue
    np.testing.assert_allclose(tf.convert_to_tensor(ga).numpy(), tf.convert_to_tensor(gb).numpy(),
                               atol=1e-6)


def test_next_items_ablation_predicts_the_following_items():
  model = _model(seq2seq=dss.NEXT_ITEMS, reconstruct_items=3)
  heads = model(_training_features(), training=False)[names.HEADS]
  assert sorted(heads) == ["next_item", "next_item_2", "next_item_3"]
  # Window [3, 1, 4] in timeline [3, 1, 4, 6, 7]: position p predicts items p+1, p+2, p+3.
  assert heads["next_item_2"].labels.numpy().tolist() == [[4, 6, 7], [PAD, PAD, PAD]]
  assert heads["next_item_3"].labels.numpy().tolist() == [[6, 7, PAD], [PAD, PAD, PAD]]


def test_config_checks_and_registration():
  assert registry.lookup("dss").model_class is dss.DSS
  with pytest.raises(ValueError, match="confidence"):
    dss.DSSConfig(confidence=1.5)
  with pytest.raises(ValueError, match="seq2seq"):
    dss.DSSConfig(seq2seq="both")
  with pytest.raises(ValueError, match="item_logit_scale"):
    dss.DSSConfig(item_logit_scale=0.0)
  with pytest.raises(ValueError, match="intention_pooling"):
    dss.DSSConfig(intention_pooling="max")
  with pytest.raises(ValueError, match="seq2seq_negatives"):
    dss.DSSConfig(seq2seq_negatives="none")
