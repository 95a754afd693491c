"""Eq 2 of HRNN-meta (models/layers/hybrid_decoder.py) as dot products, checked by numpy.

    phi~_j(h) = (1 - lambda)(w_j . h + b_j) + lambda (w(f_j) . h + b(f_j)),
    cold items: phi'(h, f_j) = w(f_j) . h + b(f_j) whatever lambda.
"""

import numpy as np

from models.layers import hybrid_decoder

import tensorflow as tf  # after `models`, which selects Keras 2

RNG = np.random.default_rng(0)
W = RNG.normal(size=[4, 3]).astype(np.float32)  # w_j
B = RNG.normal(size=[4]).astype(np.float32)  # b_j
WF = RNG.normal(size=[4, 3]).astype(np.float32)  # w(f_j)
BF = RNG.normal(size=[4]).astype(np.float32)  # b(f_j)
H = RNG.normal(size=[2, 3]).astype(np.float32)  # two users' h


def scores(mix, cold=(False, False, False, False)):
  items = hybrid_decoder.item_side(W, B, WF, BF, tf.constant(cold))
  users = hybrid_decoder.user_side(tf.constant(H), mix)
  return (users @ tf.transpose(items)).numpy()


def test_lambda_zero_is_the_item_decoder_and_one_the_feature_decoder():
  np.testing.assert_allclose(scores(0.0), H @ W.T + B, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(scores(1.0), H @ WF.T + BF, rtol=1e-5, atol=1e-6)


def test_lambda_in_between_mixes_per_user():
  mix = np.array([[0.25], [0.8]], np.float32)
  expected = (1 - mix) * (H @ W.T + B) + mix * (H @ WF.T + BF)
  np.testing.assert_allclose(scores(tf.constant(mix)), expected, rtol=1e-5, atol=1e-6)


def test_cold_items_score_from_their_features_whatever_lambda():
  cold = (False, True, False, True)
  for mix in (0.0, 0.3, 1.0):
    got = scores(mix, cold)
    np.testing.assert_allclose(got[:, [1, 3]], (H @ WF.T + BF)[:, [1, 3]], rtol=1e-5, atol=1e-6)
    warm = (1 - mix) * (H @ W.T + B) + mix * (H @ WF.T + BF)
    np.testing.assert_allclose(got[:, [0, 2]], warm[:, [0, 2]], rtol=1e-5, atol=1e-6)


def test_user_side_keeps_leading_dimensions():
  hidden = tf.ones([2, 5, 3])
  mix = tf.constant([[[0.5]], [[1.0]]])
  out = hybrid_decoder.user_side(hidden, mix).numpy()
  assert out.shape == (2, 5, 8)
  np.testing.assert_allclose(out[1, 0], [0, 0, 0, 1, 1, 1, 0, 1])


def test_feature_tower_pools_then_projects():
  # One field, features 0 and 1 (2 pads), no hidden layer: out = mean(E) A + c.
  tower = hybrid_decoder.ItemFeatureTower(np.array([[0, 1], [1, 2], [2, 2]]), 2, {"g": (0, 1)},
                                          dim=2, feature_dim=3, hidden_layers=0)
  vectors, bias = (t.numpy() for t in tower(None))
  table = tower.pooling.embedding.embeddings.numpy()
  kernel, offset = (w.numpy() for w in tower.output_layer.weights)
  pooled = np.stack([(table[0] + table[1]) / 2, table[1], np.zeros(3)])
  out = pooled @ kernel + offset
  np.testing.assert_allclose(vectors, out[:, :2], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(bias, out[:, 2], rtol=1e-5, atol=1e-6)
