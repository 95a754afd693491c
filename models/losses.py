"""Losses: the softmax retrieval head (sampled or full) and the covariance regularizer.

The softmax head scores query vectors against the item table and returns one loss per
example, `[batch]`; the trainer reduces it with `tf.nn.compute_average_loss` over the
global batch, so the same loss works under every strategy.

Sampled softmax (Jean et al., 2015; Covington et al., 2016). All rows of a batch share
one set of J negatives drawn from a proposal q over the catalog `[0, num_items)`:
    log-uniform: q(k) = log((k + 2) / (k + 1)) / log(num_items + 1), which follows item
        popularity because ids are ranked by descending training frequency (id 0 is the
        most frequent; see `input_pipeline.schema`);
    unigram:     q(k) proportional to count(k) ** unigram_power (HRNN-meta samples with
        frequencies raised to the 0.75th power).
Negatives are drawn without replacement (`unique=True`), so the sampler reports each
id's expected count E(k) = 1 - (1 - q(k)) ** tries rather than J * q(k). The logits
are corrected by subtracting log E(k) from the label's and every negative's logit (the
logQ correction), and a negative equal to the row's own label (an accidental hit) is
removed from that row. The OOV and padding rows (`num_items`, `num_items + 1`) lie
outside the sampler's range and are never drawn.

When the catalog is not larger than the number of negatives the head computes the full
softmax over `[0, num_items)` instead: exact, and cheaper than sampling all items.
"""

import dataclasses
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

LOG_UNIFORM = "log_uniform"
UNIGRAM = "unigram"
SAMPLERS = (LOG_UNIFORM, UNIGRAM)


@dataclasses.dataclass(frozen=True)
class SoftmaxConfig:
  """Configuration of the softmax retrieval head.

  Attributes:
    num_negatives: J, negatives shared by the batch. The head uses the full softmax
      when `num_items <= num_negatives`.
    sampler: "log_uniform" (needs frequency-ranked ids) or "unigram" (needs item counts).
    unigram_power: exponent applied to the item counts by the unigram sampler.
    seed: op-level seed of the sampler; None draws from the global seed.
  """
  num_negatives: int = 20_000
  sampler: str = LOG_UNIFORM
  unigram_power: float = 0.75
  seed: Optional[int] = None

  def __post_init__(self):
    if self.num_negatives < 1:
      raise ValueError(f"num_negatives must be >= 1, got {self.num_negatives}.")
    if self.sampler not in SAMPLERS:
      raise ValueError(f"Unknown sampler {self.sampler!r}; expected one of {SAMPLERS}.")
    if self.unigram_power < 0:
      raise ValueError(f"unigram_power must be >= 0, got {self.unigram_power}.")


class RetrievalLoss:
  """Softmax of query vectors over the item catalog, one loss per example.

  Built once by the trainer: `RetrievalLoss(config, num_items=n, item_counts=counts)`,
  then `loss_fn(model.item_table, outputs[QUERY], features[LABELS])` in every step.

  Attributes:
    full_softmax: True when the catalog is small enough for the exact softmax.
  """

  def __init__(self, config: SoftmaxConfig, *, num_items: int,
               item_counts: Optional[Sequence[float]] = None):
    """Validates the configuration against the catalog.

    Args:
      config: the head's configuration.
      num_items: real items; ids `[0, num_items)`.
      item_counts: training count per item id `[num_items]`; required by the unigram
        sampler (`vocab.tsv`'s count column).

    Raises:
      ValueError: on a bad catalog size or missing/invalid counts.
    """
    if num_items < 1:
      raise ValueError(f"num_items must be >= 1, got {num_items}.")
    self.config = config
    self.num_items = num_items
    self.full_softmax = num_items <= config.num_negatives
    self._unigrams = None
    if config.sampler == UNIGRAM and not self.full_softmax:
      if item_counts is None:
        raise ValueError("The unigram sampler needs item_counts (the count column of vocab.tsv).")
      counts = np.asarray(item_counts, dtype=np.float64)
      if counts.shape != (num_items,) or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"item_counts must be {num_items} non-negative numbers with a positive "
                         f"sum, got shape {counts.shape} with sum {counts.sum()}.")
      if np.count_nonzero(counts) < config.num_negatives:
        raise ValueError(f"The unigram sampler draws {config.num_negatives} distinct negatives "
                         f"but only {np.count_nonzero(counts)} items have a positive count; lower "
                         f"num_negatives or use the log_uniform sampler.")
      self._unigrams = counts.tolist()

  def sample(self, true_labels):
    """Draws the shared negatives: `(sampled [J], true_expected [N, 1], sampled_expected [J])`.

    Args:
      true_labels: `[N, 1]` int64 ids in `[0, num_items)`.
    """
    common = dict(true_classes=true_labels, num_true=1, num_sampled=self.config.num_negatives,
                  unique=True, range_max=self.num_items, seed=self.config.seed)
    if self._unigrams is None:
      return tf.random.log_uniform_candidate_sampler(**common)
    return tf.random.fixed_unigram_candidate_sampler(
        **common, unigrams=self._unigrams, distortion=self.config.unigram_power)

  def __call__(self, item_table, query, labels):
    """Per-example softmax loss.

    Args:
      item_table: `[>= num_items, dim]` item embeddings: a tensor, a variable, a list
        of row shards (concatenated in order), or a ShardedVariable.
      query: `[batch, dim]` (one vector scored against every label) or
        `[batch, steps, dim]` (one vector per label).
      labels: `[batch, steps]` int ids; ids outside `[0, num_items)` (padding, OOV)
        are ignored.

    Returns:
      `[batch]`: the mean loss over each example's real labels (0 if it has none).
    """
    labels = tf.cast(labels, tf.int64)
    if self.full_softmax:
      return full_softmax_loss(item_table, query, labels, num_items=self.num_items)
    # Padding rows get label 0 for the sampler and the lookups; their loss is dropped.
    safe = tf.where(_real_labels(labels, self.num_items), labels, tf.zeros_like(labels))
    sampled_values = self.sample(tf.reshape(safe, [-1, 1]))
    return sampled_softmax_loss(item_table, query, labels, num_items=self.num_items,
                                sampled_values=sampled_values)


def sampled_softmax_loss(item_table, query, labels, *, num_items, sampled_values):
  """Sampled softmax with logQ correction and accidental hits removed.

  Args:
    item_table: see `RetrievalLoss.__call__`.
    query: `[batch, dim]` or `[batch, steps, dim]`.
    labels: `[batch, steps]` int64.
    num_items: real items.
    sampled_values: `(sampled [J], true_expected [batch * steps, 1], sampled_expected [J])`
      from a `tf.random.*_candidate_sampler` called on the flattened labels.

  Returns:
    `[batch]` mean loss over each example's real labels.
  """
  query, labels, real = _align(query, labels, num_items)  # [B, Q, D], [B, S], [B, S]
  sampled, true_expected, sampled_expected = (tf.stop_gradient(v) for v in sampled_values)
  sampled = tf.cast(sampled, tf.int64)
  dtype = query.dtype
  batch, query_steps, dim = tf.shape(query)[0], tf.shape(query)[1], tf.shape(query)[2]
  steps = tf.shape(labels)[1]

  negatives = tf.cast(tf.nn.embedding_lookup(item_table, sampled), dtype)  # [J, D]
  negative_logits = tf.matmul(tf.reshape(query, [-1, dim]), negatives, transpose_b=True)
  negative_logits = tf.reshape(negative_logits, [batch, query_steps, -1])
  negative_logits -= tf.math.log(tf.cast(sampled_expected, dtype))  # logQ correction

  safe = tf.where(real, labels, tf.zeros_like(labels))
  positives = tf.cast(tf.nn.embedding_lookup(item_table, safe), dtype)  # [B, S, D]
  true_logits = tf.reduce_sum(query * positives, axis=-1)  # query broadcasts over steps
  true_logits -= tf.math.log(tf.reshape(tf.cast(true_expected, dtype), [batch, steps]))

  hits = tf.equal(safe[:, :, tf.newaxis], sampled)  # [B, S, J]
  losses = _sampled_log_normalizer(true_logits, negative_logits, hits) - true_logits  # [B, S]
  return _mean_over_real(losses, real)


@tf.custom_gradient
def _sampled_log_normalizer(true_logits, negative_logits, hits):
  """log(exp(t) + sum_j [not hit_j] exp(n_j)) per label, with a lean gradient.

  Equivalent to reduce_logsumexp over the concatenation of the true logit and the
  negatives with the hits set to -inf, without materializing that concatenation and
  with one pass over the `[B, S, J]` logits in the gradient instead of several.

  Args:
    true_logits: `[B, S]`.
    negative_logits: `[B, Q, J]` with Q == S or Q == 1 (broadcast over the labels).
    hits: `[B, S, J]` bool, negatives to leave out of each label's normalizer.

  Returns:
    `[B, S]` log-normalizers.
  """
  # Any shift >= the largest kept logit is safe; a hit's logit equals the true logit
  # (same item, same expected count), so including hits in the max changes nothing.
  shift = tf.maximum(tf.reduce_max(negative_logits, axis=-1), true_logits)  # [B, S]
  exp = tf.where(hits, tf.zeros([], negative_logits.dtype),
                 tf.exp(negative_logits - shift[:, :, tf.newaxis]))  # [B, S, J]
  exp_true = tf.exp(true_logits - shift)
  total = tf.reduce_sum(exp, axis=-1) + exp_true

  def grad(upstream):
    scale = upstream / total
    d_negative = exp * scale[:, :, tf.newaxis]
    if negative_logits.shape[1] == 1 and hits.shape[1] != 1:  # one query, several labels
      d_negative = tf.reduce_sum(d_negative, axis=1, keepdims=True)
    return exp_true * scale, d_negative, None

  return tf.math.log(total) + shift, grad


def full_softmax_loss(item_table, query, labels, *, num_items):
  """Softmax cross-entropy over the whole catalog `[0, num_items)`.

  Args:
    item_table: see `RetrievalLoss.__call__`.
    query: `[batch, dim]` or `[batch, steps, dim]`.
    labels: `[batch, steps]` int64.
    num_items: real items; the OOV and padding rows are not candidates.

  Returns:
    `[batch]` mean loss over each example's real labels.
  """
  query, labels, real = _align(query, labels, num_items)
  dtype = query.dtype
  if isinstance(item_table, (tf.Tensor, tf.Variable, np.ndarray)):
    table = tf.cast(item_table, dtype)  # the normalizer skips the rows past num_items
  else:
    # Lists of shards and ShardedVariables: embedding_lookup knows their row layout.
    table = tf.cast(tf.nn.embedding_lookup(item_table, tf.range(num_items)), dtype)
  safe = tf.where(real, labels, tf.zeros_like(labels))
  true_logits = tf.reduce_sum(query * tf.gather(table, safe), axis=-1)  # [B, S]
  # The normalizer is computed once per query vector, even when it serves several labels.
  log_normalizer = _log_normalizer(tf.reshape(query, [-1, tf.shape(query)[-1]]), table, num_items)
  log_normalizer = tf.reshape(log_normalizer, tf.shape(query)[:2])  # [B, Q]
  return _mean_over_real(log_normalizer - true_logits, real)


def _log_normalizer(query, table, num_items):
  """log sum_{j < num_items} exp(query . table_j) per query row, with a lean gradient.

  The catalog's logits `[rows, num_items]` are the biggest tensor of a training step
  with a full softmax. Written with autodiff (reduce_logsumexp, or the fused
  softmax cross-entropy op, which is slower still on CPU) the step makes about ten
  passes over them; this version makes five (matmul, max, exp, sum, and nothing but
  the two gradient matmuls afterwards), and hands back a gradient for the whole
  table, zero past num_items, without slicing it.

  Args:
    query: `[rows, dim]`.
    table: `[>= num_items, dim]` tensor.
    num_items: candidates are rows `[0, num_items)` of `table`.

  Returns:
    `[rows]` log-normalizers.
  """

  @tf.custom_gradient
  def normalizer(query, table):
    catalog = table[:num_items]
    logits = tf.matmul(query, catalog, transpose_b=True)  # [rows, num_items]
    shift = tf.reduce_max(logits, axis=1)
    exp = tf.exp(logits - shift[:, tf.newaxis])
    total = tf.reduce_sum(exp, axis=1)

    def grad(upstream):
      # d/dlogits = softmax * upstream = exp * (upstream / total), row-scaled; the
      # scale is folded into the small operand of each gradient matmul.
      scale = (upstream / total)[:, tf.newaxis]
      d_query = tf.matmul(exp, catalog) * scale
      d_catalog = tf.matmul(exp, query * scale, transpose_a=True)
      extra_rows = tf.shape(table)[0] - num_items
      return d_query, tf.pad(d_catalog, [[0, extra_rows], [0, 0]])

    return tf.math.log(total) + shift, grad

  return normalizer(query, table)


def covariance_regularizer(vectors):
  """Decorrelation penalty on a set of vectors (SINE eq 10, after Cogswell et al., 2015).

  With the rows of `vectors` C `[L, D]` as variables observed over the D dimensions,
  M = (C - C_bar)(C - C_bar)^T / D, where C_bar holds each row's mean over its D
  entries, and the penalty is 1/2 (||M||_F^2 - ||diag(M)||_2^2): the squared
  covariances between different rows.

  Args:
    vectors: `[L, D]`.

  Returns:
    Scalar penalty.
  """
  vectors = tf.convert_to_tensor(vectors)
  centered = vectors - tf.reduce_mean(vectors, axis=1, keepdims=True)
  covariance = tf.matmul(centered, centered, transpose_b=True) / tf.cast(tf.shape(vectors)[1],
                                                                         vectors.dtype)
  return 0.5 * (tf.reduce_sum(tf.square(covariance)) -
                tf.reduce_sum(tf.square(tf.linalg.diag_part(covariance))))


def _real_labels(labels, num_items):
  return tf.logical_and(labels >= 0, labels < num_items)


def _align(query, labels, num_items):
  """Checks ranks; returns query `[B, 1 or S, D]`, labels `[B, S]`, real-label mask."""
  query = tf.convert_to_tensor(query)
  if labels.shape.rank != 2:
    raise ValueError(f"labels must be [batch, steps], got shape {labels.shape}.")
  if query.shape.rank == 2:
    query = query[:, tf.newaxis, :]
  elif query.shape.rank != 3:
    raise ValueError(f"query must be [batch, dim] or [batch, steps, dim], got shape {query.shape}.")
  return query, labels, _real_labels(labels, num_items)


def _mean_over_real(losses, real):
  real = tf.cast(real, losses.dtype)
  count = tf.reduce_sum(real, axis=1)
  return tf.math.divide_no_nan(tf.reduce_sum(losses * real, axis=1), count)
