"""Tests of the softmax retrieval head and the covariance regularizer (models/losses.py)."""

import math

import numpy as np
import pytest

from models import base
from models import losses

import tensorflow as tf  # after `models`, which selects Keras 2


def _np_sampled_loss(query, table, label, sampled, true_expected, sampled_expected, bias=None):
  """Reference sampled softmax for one row: logQ subtracted, accidental hits dropped."""
  bias = np.zeros(len(table)) if bias is None else bias
  true_logit = query @ table[label] + bias[label] - math.log(true_expected)
  negatives = [query @ table[s] + bias[s] - math.log(e)
               for s, e in zip(sampled, sampled_expected) if s != label]
  logits = np.array([true_logit] + negatives)
  return np.log(np.exp(logits - logits.max()).sum()) + logits.max() - true_logit


def _np_full_loss(query, table, label, num_items, bias=None):
  logits = table[:num_items] @ query + (0 if bias is None else bias[:num_items])
  return np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[label]


def _sampled_values(sampled, true_expected, sampled_expected):
  return (tf.constant(sampled, tf.int64), tf.constant(true_expected, tf.float32)[:, None],
          tf.constant(sampled_expected, tf.float32))


@pytest.fixture
def tables():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(12, 3)).astype(np.float32)  # 10 items + OOV + padding
  query = rng.normal(size=(2, 3)).astype(np.float32)
  return table, query


def test_log_uniform_sampler_follows_frequency_order():
  num_items, num_negatives, draws = 100, 10, 3000
  head = losses.RetrievalLoss(losses.SoftmaxConfig(num_negatives=num_negatives, seed=1),
                              num_items=num_items)
  sample = tf.function(lambda: head.sample(tf.zeros([1, 1], tf.int64)))
  counts = np.zeros(num_items + 2)
  expected = None
  for _ in range(draws):
    sampled, _, sampled_expected = sample()
    counts[sampled.numpy()] += 1
    if expected is None:
      expected = dict(zip(sampled.numpy(), sampled_expected.numpy()))
  frequency = counts / draws  # how often each id is among the J negatives
  assert counts[num_items:].sum() == 0  # OOV and padding are outside the sampler's range
  # Popular (low) ids are drawn more often: bucket averages strictly decrease.
  buckets = [frequency[a:b].mean() for a, b in ((0, 5), (5, 20), (20, 50), (50, 100))]
  assert buckets == sorted(buckets, reverse=True)
  # The sampler's own expected counts follow the log-uniform law: drawing until J
  # distinct ids takes T tries, and E(k) = 1 - (1 - p(k))^T with
  # p(k) = log((k + 2) / (k + 1)) / log(num_items + 1). Solve T from one id, check the rest.
  def p(k):
    return math.log((k + 2) / (k + 1)) / math.log(num_items + 1)

  ids = sorted(expected)
  tries = math.log(1 - expected[ids[0]]) / math.log(1 - p(ids[0]))
  for k in ids[1:]:
    assert expected[k] == pytest.approx(1 - (1 - p(k))**tries, rel=1e-3)
  # And the empirical inclusion rates match those expected counts (3000 draws: a
  # standard error below 0.01).
  for k in (0, 1, 10, 99):
    rate = 1 - (1 - p(k))**tries
    assert frequency[k] == pytest.approx(rate, abs=0.03)


def test_padding_and_oov_never_sampled_even_when_most_items_are_needed():
  # 15 distinct negatives out of 16 items: the sampler must still stay in [0, 16).
  head = losses.RetrievalLoss(losses.SoftmaxConfig(num_negatives=15, seed=3), num_items=16)
  sample = tf.function(lambda: head.sample(tf.zeros([4, 1], tf.int64))[0])
  drawn = np.concatenate([sample().numpy() for _ in range(200)])
  assert drawn.min() >= 0 and drawn.max() < 16
  assert set(drawn) == set(range(16))


def test_unigram_sampler_uses_counts_to_the_power():
  counts = [8.0, 4.0, 1.0, 0.0, 1.0, 1.0]
  head = losses.RetrievalLoss(
      losses.SoftmaxConfig(num_negatives=1, sampler=losses.UNIGRAM, unigram_power=0.5, seed=5),
      num_items=6, item_counts=counts)
  assert not head.full_softmax
  sample = tf.function(lambda: head.sample(tf.zeros([1, 1], tf.int64)))
  drawn = np.array([sample()[0].numpy()[0] for _ in range(4000)])
  # q(k) ~ counts^0.5 = [2.83, 2, 1, 0, 1, 1] / 7.83; with one draw E(k) = q(k).
  q = np.sqrt(counts) / np.sqrt(counts).sum()
  frequency = np.bincount(drawn, minlength=6) / len(drawn)
  np.testing.assert_allclose(frequency, q, atol=0.025)
  assert frequency[3] == 0  # a zero count is never drawn
  _, true_expected, _ = sample()
  assert true_expected.numpy()[0, 0] == pytest.approx(q[0], rel=1e-5)


def test_unigram_sampler_needs_valid_counts():
  config = losses.SoftmaxConfig(num_negatives=2, sampler=losses.UNIGRAM)
  with pytest.raises(ValueError, match="item_counts"):
    losses.RetrievalLoss(config, num_items=5)
  with pytest.raises(ValueError, match="5 non-negative"):
    losses.RetrievalLoss(config, num_items=5, item_counts=[1, 2, 3])
  with pytest.raises(ValueError, match="positive count"):
    losses.RetrievalLoss(config, num_items=5, item_counts=[1, 0, 0, 0, 0])


def test_config_validation():
  with pytest.raises(ValueError, match="Unknown sampler"):
    losses.SoftmaxConfig(sampler="uniform")
  with pytest.raises(ValueError, match="num_negatives"):
    losses.SoftmaxConfig(num_negatives=0)


def test_logq_is_subtracted(tables):
  table, query = tables
  # Hand-picked expected counts, far from 1 so that adding log Q instead would differ.
  sampled, sampled_expected = [4, 7, 2], [0.9, 0.2, 0.05]
  true_expected = [0.5, 0.3]
  labels = [[1], [3]]
  loss = losses.sampled_softmax_loss(
      table, query, tf.constant(labels, tf.int64), num_items=10,
      sampled_values=_sampled_values(sampled, true_expected, sampled_expected))
  expected = [_np_sampled_loss(query[b], table, labels[b][0], sampled, true_expected[b],
                               sampled_expected) for b in range(2)]
  np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
  # The same numbers with log Q added instead give a different loss: the test can fail.
  added = [_np_sampled_loss(query[b], table, labels[b][0], sampled, 1 / true_expected[b],
                            [1 / e for e in sampled_expected]) for b in range(2)]
  assert not np.allclose(loss.numpy(), added, rtol=1e-3)


def test_accidental_hits_are_removed(tables):
  table, query = tables
  # Row 0's label 4 is also a sampled negative; row 1's label 5 is not.
  sampled, sampled_expected = [4, 7, 2], [0.5, 0.5, 0.5]
  values = _sampled_values(sampled, [0.5, 0.5], sampled_expected)
  loss = losses.sampled_softmax_loss(table, query, tf.constant([[4], [5]], tf.int64),
                                     num_items=10, sampled_values=values)
  # Row 0 must equal the loss computed with negatives {7, 2} only.
  without_hit = losses.sampled_softmax_loss(
      table, query[:1], tf.constant([[4]], tf.int64), num_items=10,
      sampled_values=_sampled_values([7, 2], [0.5], [0.5, 0.5]))
  assert loss.numpy()[0] == pytest.approx(without_hit.numpy()[0], rel=1e-6)
  assert loss.numpy()[1] == pytest.approx(
      _np_sampled_loss(query[1], table, 5, sampled, 0.5, sampled_expected), rel=1e-5)


def test_padded_labels_are_ignored_and_real_labels_averaged(tables):
  table, query = tables
  pad, oov = 11, 10
  values = _sampled_values([4, 7, 2], [0.5] * 6, [0.3, 0.2, 0.1])
  loss = losses.sampled_softmax_loss(
      table, query, tf.constant([[1, 3, pad], [pad, oov, pad]], tf.int64), num_items=10,
      sampled_values=values)
  one = _np_sampled_loss(query[0], table, 1, [4, 7, 2], 0.5, [0.3, 0.2, 0.1])
  three = _np_sampled_loss(query[0], table, 3, [4, 7, 2], 0.5, [0.3, 0.2, 0.1])
  # Example 0: the mean over its two real labels; example 1 has none: exactly 0.
  np.testing.assert_allclose(loss.numpy(), [(one + three) / 2, 0.0], rtol=1e-5)


def test_per_step_queries(tables):
  table, _ = tables
  query = np.random.default_rng(1).normal(size=(1, 2, 3)).astype(np.float32)
  values = _sampled_values([4, 7], [0.5, 0.25], [0.3, 0.2])
  loss = losses.sampled_softmax_loss(table, query, tf.constant([[1, 3]], tf.int64),
                                     num_items=10, sampled_values=values)
  expected = np.mean([_np_sampled_loss(query[0, 0], table, 1, [4, 7], 0.5, [0.3, 0.2]),
                      _np_sampled_loss(query[0, 1], table, 3, [4, 7], 0.25, [0.3, 0.2])])
  assert loss.numpy()[0] == pytest.approx(expected, rel=1e-5)


def test_full_softmax_fallback_equals_numpy_cross_entropy(tables):
  table, query = tables
  head = losses.RetrievalLoss(losses.SoftmaxConfig(num_negatives=10), num_items=10)
  assert head.full_softmax  # 10 items <= 10 negatives
  labels = [[1, 11], [9, 0]]  # 11 is padding
  loss = head(base.Candidates(tf.Variable(table)), base.Head(query, tf.constant(labels, tf.int64)))
  expected = [_np_full_loss(query[0], table, 1, 10),
              (_np_full_loss(query[1], table, 9, 10) + _np_full_loss(query[1], table, 0, 10)) / 2]
  np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
  # Per-step queries take the other branch: one query row per label.
  per_step = np.stack([query, query[::-1]], axis=1)  # [2, 2, 3]
  loss = head(base.Candidates(table), base.Head(per_step, tf.constant([[1, 2], [11, 4]], tf.int64)))
  expected = [(_np_full_loss(query[0], table, 1, 10) + _np_full_loss(query[1], table, 2, 10)) / 2,
              _np_full_loss(query[0], table, 4, 10)]
  np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)


def test_full_softmax_gradient_matches_autodiff(tables):
  table, query = tables
  table_var, query_var = tf.Variable(table), tf.Variable(query)
  labels = tf.constant([[2], [7]], tf.int64)
  with tf.GradientTape(persistent=True) as tape:
    loss = tf.reduce_sum(losses.full_softmax_loss(table_var, query_var, labels, num_items=10))
    logits = tf.matmul(query_var, table_var[:10], transpose_b=True)
    reference = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels[:, 0], logits))
  for var in (table_var, query_var):
    got = tf.convert_to_tensor(tape.gradient(loss, var)).numpy()
    want = tf.convert_to_tensor(tape.gradient(reference, var)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
  # The OOV and padding rows get no gradient.
  assert not tf.convert_to_tensor(tape.gradient(loss, table_var)).numpy()[10:].any()


@pytest.mark.parametrize("query_steps", [1, 2])
def test_sampled_softmax_gradient_matches_autodiff(tables, query_steps):
  table, query = tables
  rng = np.random.default_rng(3)
  table_var = tf.Variable(table)
  query_var = tf.Variable(rng.normal(size=(2, query_steps, 3)).astype(np.float32))
  labels = tf.constant([[4, 1], [11, 7]], tf.int64)  # 4 and 7 are also negatives (hits)
  sampled, true_expected, sampled_expected = [4, 7, 2], [0.5, 0.4, 0.3, 0.2], [0.3, 0.2, 0.1]
  values = _sampled_values(sampled, true_expected, sampled_expected)
  with tf.GradientTape(persistent=True) as tape:
    loss = tf.reduce_sum(losses.sampled_softmax_loss(table_var, query_var, labels, num_items=10,
                                                     sampled_values=values))
    # Reference by plain autodiff: concatenated logits, hits set to -inf, logsumexp.
    reference = []
    for b in range(2):
      real = [(s, int(c)) for s, c in enumerate(labels.numpy()[b]) if c < 10]
      terms = []
      for s, label in real:
        q = query_var[b, min(s, query_steps - 1)]
        true_logit = tf.tensordot(q, table_var[label], 1) - np.log(true_expected[2 * b + s])
        negatives = [tf.tensordot(q, table_var[j], 1) - np.log(e)
                     for j, e in zip(sampled, sampled_expected) if j != label]
        terms.append(tf.reduce_logsumexp(tf.stack([true_logit] + negatives)) - true_logit)
      reference.append(tf.add_n(terms) / len(terms))
    reference = tf.add_n(reference)
  assert loss.numpy() == pytest.approx(reference.numpy(), rel=1e-5)
  for var in (table_var, query_var):
    got = tf.convert_to_tensor(tape.gradient(loss, var)).numpy()
    want = tf.convert_to_tensor(tape.gradient(reference, var)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_sharded_tables_give_the_unsharded_loss(tables):
  table, query = tables
  from tensorflow.python.distribute import sharded_variable  # what ParameterServerStrategy makes

  # Uneven row shards 4/4/4 of 12 rows, concatenated in order ("div" layout).
  shards = [tf.Variable(table[0:4]), tf.Variable(table[4:8]), tf.Variable(table[8:12])]
  sharded = sharded_variable.ShardedVariable(
      [tf.Variable(table[0:5]), tf.Variable(table[5:9]), tf.Variable(table[9:12])])
  labels = tf.constant([[1, 11], [9, 6]], tf.int64)
  values = _sampled_values([4, 7, 2, 8], [0.5] * 4, [0.3, 0.2, 0.1, 0.05])
  for loss_fn in (
      lambda t: losses.sampled_softmax_loss(t, query, labels, num_items=10, sampled_values=values),
      lambda t: losses.full_softmax_loss(t, query, labels, num_items=10)):
    unsharded = loss_fn(tf.Variable(table)).numpy()
    np.testing.assert_allclose(loss_fn(shards).numpy(), unsharded, rtol=1e-6)
    np.testing.assert_allclose(loss_fn(sharded).numpy(), unsharded, rtol=1e-6)


def test_head_samples_with_a_large_catalog_and_ignores_padding():
  rng = np.random.default_rng(2)
  num_items = 50
  table = tf.Variable(rng.normal(size=(num_items + 2, 4)).astype(np.float32))
  head = losses.RetrievalLoss(losses.SoftmaxConfig(num_negatives=20, seed=4), num_items=num_items)
  assert not head.full_softmax
  query = rng.normal(size=(3, 4)).astype(np.float32)
  loss = head(base.Candidates(table),
              base.Head(query, tf.constant([[5, 51], [51, 51], [0, 7]], tf.int64)))
  assert loss.shape == (3,)
  assert loss.numpy()[1] == 0.0  # only padding
  assert np.all(np.isfinite(loss.numpy())) and np.all(loss.numpy()[[0, 2]] > 0)


def test_label_weights_replace_the_mean(tables):
  # Example 0 has labels 1 and 3 with weights 2 and 0.5: 2 * l(1) + 0.5 * l(3) instead
  # of their mean; example 1's padding label carries weight 7, which is ignored.
  table, query = tables
  per_step = np.stack([query, query[::-1]], axis=1)  # [2, 2, 3]: one query per label
  labels = tf.constant([[1, 3], [11, 4]], tf.int64)
  weights = tf.constant([[2.0, 0.5], [7.0, 1.0]])
  loss = losses.full_softmax_loss(table, per_step, labels, num_items=10, weights=weights)
  expected = [2 * _np_full_loss(query[0], table, 1, 10) + 0.5 * _np_full_loss(query[1], table, 3, 10),
              _np_full_loss(query[0], table, 4, 10)]
  np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
  values = _sampled_values([4, 7, 2], [0.5, 0.4, 0.3, 0.2], [0.3, 0.2, 0.1])
  loss = losses.sampled_softmax_loss(table, per_step, labels, num_items=10, weights=weights,
                                     sampled_values=values)
  expected = [2 * _np_sampled_loss(query[0], table, 1, [4, 7, 2], 0.5, [0.3, 0.2, 0.1]) +
              0.5 * _np_sampled_loss(query[1], table, 3, [4, 7, 2], 0.4, [0.3, 0.2, 0.1]),
              _np_sampled_loss(query[0], table, 4, [4, 7, 2], 0.2, [0.3, 0.2, 0.1])]
  np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)


def test_item_bias_enters_every_logit(tables):
  table, query = tables
  bias = np.linspace(-1.0, 2.0, 12).astype(np.float32)  # far from 0: a missed term shows
  labels = tf.constant([[2], [7]], tf.int64)
  loss = losses.full_softmax_loss(table, query, labels, num_items=10, bias=bias)
  np.testing.assert_allclose(
      loss.numpy(), [_np_full_loss(query[b], table, [2, 7][b], 10, bias) for b in range(2)],
      rtol=1e-5)
  values = _sampled_values([4, 7, 2], [0.5, 0.3], [0.3, 0.2, 0.1])
  loss = losses.sampled_softmax_loss(table, query, labels, num_items=10, bias=bias,
                                     sampled_values=values)
  np.testing.assert_allclose(
      loss.numpy(), [_np_sampled_loss(query[b], table, [2, 7][b], [4, 7, 2], [0.5, 0.3][b],
                                      [0.3, 0.2, 0.1], bias) for b in range(2)], rtol=1e-5)
  assert not np.allclose(loss.numpy(), losses.sampled_softmax_loss(
      table, query, labels, num_items=10, sampled_values=values).numpy())


def test_multi_vector_queries_follow_dss_eq6(tables):
  # Two vectors per label. Eq 6: -log(max_v exp(q_v . h_label) / sum_v sum_j exp(q_v . h_j)).
  table, _ = tables
  rng = np.random.default_rng(4)
  query = rng.normal(size=(2, 1, 2, 3)).astype(np.float32)  # [batch, steps, V, D]
  labels = [[3], [8]]
  full = losses.full_softmax_loss(table, query, tf.constant(labels, tf.int64), num_items=10)
  expected = []
  for b in range(2):
    logits = query[b, 0] @ table[:10].T  # [V, 10]
    normalizer = np.log(np.exp(logits).sum())
    expected.append(normalizer - logits[:, labels[b][0]].max())
  np.testing.assert_allclose(full.numpy(), expected, rtol=1e-5)
  # Sampled: the normalizer runs over the label and the negatives of every vector, logQ
  # subtracted; the label's own logit is its best over the vectors.
  sampled, true_expected, sampled_expected = [4, 8, 2], [0.5, 0.25], [0.3, 0.2, 0.1]
  loss = losses.sampled_softmax_loss(
      table, query, tf.constant(labels, tf.int64), num_items=10,
      sampled_values=_sampled_values(sampled, true_expected, sampled_expected))
  expected = []
  for b in range(2):
    label = labels[b][0]
    true = query[b, 0] @ table[label] - np.log(true_expected[b])  # [V]
    negatives = [query[b, 0] @ table[j] - np.log(e)
                 for j, e in zip(sampled, sampled_expected) if j != label]  # hit 8 removed
    everything = np.concatenate([true] + negatives)
    expected.append(np.log(np.exp(everything).sum()) - true.max())
  np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
  # One vector gives the ordinary softmax.
  single = losses.full_softmax_loss(table, query[:, :, :1], tf.constant(labels, tf.int64),
                                    num_items=10)
  np.testing.assert_allclose(
      single.numpy(), [_np_full_loss(query[b, 0, 0], table, labels[b][0], 10) for b in range(2)],
      rtol=1e-5)


def test_full_softmax_bias_gradient_matches_autodiff(tables):
  table, query = tables
  table_var, query_var = tf.Variable(table), tf.Variable(query)
  bias_var = tf.Variable(np.linspace(-1.0, 1.0, 12).astype(np.float32))
  labels = tf.constant([[2], [7]], tf.int64)
  with tf.GradientTape(persistent=True) as tape:
    loss = tf.reduce_sum(losses.full_softmax_loss(table_var, query_var, labels, num_items=10,
                                                  bias=bias_var))
    logits = tf.matmul(query_var, table_var[:10], transpose_b=True) + bias_var[:10]
    reference = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels[:, 0], logits))
  for var in (table_var, query_var, bias_var):
    got = tf.convert_to_tensor(tape.gradient(loss, var)).numpy()
    want = tf.convert_to_tensor(tape.gradient(reference, var)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("vectors,expected", [
    # Rows [1, 1, -1, -1], [1, 1, -1, -1], [1, -1, 1, -1] have zero means, so
    # M = C C^T / 4 = [[1, 1, 0], [1, 1, 0], [0, 0, 1]]: ||M||^2 = 5, ||diag||^2 = 3,
    # penalty (5 - 3) / 2 = 1.
    ([[1, 1, -1, -1], [1, 1, -1, -1], [1, -1, 1, -1]], 1.0),
    # Rows [1, 0], [0, 1]: means 0.5, centered [.5, -.5], [-.5, .5],
    # M = [[.25, -.25], [-.25, .25]], penalty (4 * .0625 - 2 * .0625) / 2 = 0.0625.
    ([[1, 0], [0, 1]], 0.0625),
    # Rows that are constant vectors have nothing left after centering.
    ([[3, 3, 3], [-2, -2, -2]], 0.0),
])
def test_covariance_regularizer_by_hand(vectors, expected):
  value = losses.covariance_regularizer(tf.constant(vectors, tf.float32))
  assert value.numpy() == pytest.approx(expected, abs=1e-7)
