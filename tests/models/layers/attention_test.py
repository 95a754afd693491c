"""Tests of models/layers/attention.py."""

import numpy as np
import pytest

from models.layers import attention

import tensorflow as tf  # after `models`, which selects Keras 2


def test_masked_softmax_by_hand():
  weights = attention.masked_softmax(tf.constant([[0.0, np.log(3.0), 5.0]]),
                                     tf.constant([[True, True, False]]))
  # exp(0) : exp(log 3) = 1 : 3 over the two real positions; the masked one gets 0.
  np.testing.assert_allclose(weights.numpy(), [[0.25, 0.75, 0.0]], atol=1e-7)


def test_masked_softmax_all_masked_is_finite():
  weights = attention.masked_softmax(tf.zeros([1, 4]), tf.zeros([1, 4], tf.bool))
  np.testing.assert_allclose(weights.numpy(), [[0.25] * 4])


@pytest.mark.parametrize("hidden_dim,use_bias", [(None, False), (3, True)])
def test_self_attentive_pooling_matches_numpy_per_head(hidden_dim, use_bias):
  rng = np.random.default_rng(0)
  layer = attention.SelfAttentivePooling(num_heads=3, hidden_dim=hidden_dim, use_bias=use_bias)
  x = rng.normal(size=(2, 4, 5)).astype(np.float32)
  mask = np.array([[True, True, True, True], [True, True, False, False]])
  layer.build(x.shape)
  for variable in layer.weights:
    variable.assign(rng.normal(size=variable.shape).astype(np.float32))
  got = layer(tf.constant(x), tf.constant(mask)).numpy()  # [batch, heads, seq_len]
  hidden = hidden_dim or 5
  w1, w2 = layer.hidden_kernel.numpy(), layer.score_kernel.numpy()
  bias = layer.hidden_bias.numpy() if use_bias else np.zeros(3 * hidden)
  for b in range(2):
    n = mask[b].sum()
    for h in range(3):  # a^h = softmax(tanh(X W_{h,1} + b_h) w_{h,2}) over real positions
      block = slice(h * hidden, (h + 1) * hidden)
      logits = np.tanh(x[b, :n] @ w1[:, block] + bias[block]) @ w2[h]
      expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
      np.testing.assert_allclose(got[b, h, :n], expected, rtol=1e-5)
      assert not got[b, h, n:].any()


def test_self_attentive_pooling_rejects_zero_heads():
  with pytest.raises(ValueError, match="num_heads"):
    attention.SelfAttentivePooling(num_heads=0)
