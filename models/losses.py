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
from typing import NamedTuple, Optional, Sequence

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
  then `loss_fn(model.candidates(), head)` for every head of every step.

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

  def __call__(self, candidates, head):
    """Per-example softmax loss of one head.

    Args:
      candidates: `models.base.Candidates`: item vectors `[>= num_items, dim]` (a
        tensor, a variable, a list of row shards, or a ShardedVariable) and an
        optional bias `[>= num_items]`.
      head: `models.base.Head`: query `[batch, dim]` or `[batch, steps, dim]`, labels
        `[batch, steps]` (ids outside `[0, num_items)` are ignored) and optional
        per-label weights.

    Returns:
      `[batch]`: each example's weighted sum over its real labels (by default the mean).
    """
    labels = tf.cast(head.labels, tf.int64)
    common = dict(num_items=self.num_items, bias=candidates.bias, weights=head.weights)
    if self.full_softmax:
      return full_softmax_loss(candidates.vectors, head.query, labels, **common)
    # Padding labels get id 0 for the sampler; their loss is dropped.
    safe = tf.where(_real_labels(labels, self.num_items), labels, tf.zeros_like(labels))
    sampled_values = self.sample(tf.reshape(safe, [-1, 1]))
    return sampled_softmax_loss(candidates.vectors, head.query, labels,
                                sampled_values=sampled_values, **common)


class _Labels(NamedTuple):
  """The real labels of a batch, flattened: what every softmax loss scores.

  Attributes:
    queries: `[R, V, dim]` distinct query rows (one per example, or one per label),
      each with V vectors (V = 1 but for multi-vector heads).
    query_of: `[N]` the query row of each real label.
    ids: `[N]` label item ids.
    example: `[N]` the example of each real label.
    weight: `[N]` its weight in the example's loss.
    position: `[N, 2]` its (example, step) in `[batch, steps]`.
    batch: the batch size.
  """
  queries: tf.Tensor
  query_of: tf.Tensor
  ids: tf.Tensor
  example: tf.Tensor
  weight: tf.Tensor
  position: tf.Tensor
  batch: tf.Tensor


def _flatten(query, labels, weights, num_items) -> _Labels:
  """Keeps the real labels only, so no work is spent on padding steps.

  `query` is `[batch, dim]` (one vector per example), `[batch, steps, dim]` (one per
  label) or `[batch, steps, V, dim]` (V per label; steps may be 1: V per example).
  """
  query = tf.convert_to_tensor(query)
  if labels.shape.rank != 2:
    raise ValueError(f"labels must be [batch, steps], got shape {labels.shape}.")
  if query.shape.rank == 2:
    query = query[:, tf.newaxis, tf.newaxis, :]
  elif query.shape.rank == 3:
    query = query[:, :, tf.newaxis, :]
  elif query.shape.rank != 4:
    raise ValueError(f"query must be [batch, dim], [batch, steps, dim] or [batch, steps, "
                     f"vectors, dim], got shape {query.shape}.")
  real = _real_labels(labels, num_items)
  position = tf.where(real)  # [N, 2]
  example = position[:, 0]
  if weights is None:
    count = tf.reduce_sum(tf.cast(real, query.dtype), axis=1)
    weight = tf.gather(1.0 / tf.maximum(count, 1.0), example)
  else:
    weight = tf.gather_nd(tf.cast(weights, query.dtype), position)
  if query.shape[1] == 1:  # one query per example, broadcast over its labels
    queries, query_of = query[:, 0], example
  else:
    queries, query_of = tf.gather_nd(query, position), tf.range(tf.shape(position)[0])
  return _Labels(queries, tf.cast(query_of, tf.int64), tf.gather_nd(labels, position), example,
                 weight, position, tf.shape(labels)[0])


def _true_scores(flat: _Labels, item_table, bias, dtype):
  """`[N, V]`: every vector of each label's query against the label item (+ its bias)."""
  positives = _rows(item_table, flat.ids, dtype)  # [N, D]
  scores = tf.einsum("nvd,nd->nv", tf.gather(flat.queries, flat.query_of), positives)
  if bias is not None:
    scores += _rows(bias, flat.ids, dtype)[:, tf.newaxis]
  return scores


def _per_example(label_losses, flat: _Labels):
  """`[batch]` weighted sums of the `[N]` label losses."""
  return tf.math.unsorted_segment_sum(label_losses * flat.weight, flat.example, flat.batch)


def _rows(table, ids, dtype):
  """`table[ids]` for a tensor, variable, list of shards or ShardedVariable."""
  return tf.cast(tf.nn.embedding_lookup(table, ids), dtype)


def sampled_softmax_loss(item_table, query, labels, *, num_items, sampled_values, bias=None,
                         weights=None):
  """Sampled softmax with logQ correction and accidental hits removed.

  With V vectors per query (DSS eq 6), the label's logit is its best over the vectors
  and the normalizer runs over every (item, vector) pair:
  loss = log sum_{v, j in {label} + negatives} exp(s_vj) - max_v s_v,label.

  Args:
    item_table: see `RetrievalLoss.__call__`.
    query: `[batch, dim]`, `[batch, steps, dim]` or `[batch, steps, V, dim]`.
    labels: `[batch, steps]` int64.
    num_items: real items.
    sampled_values: `(sampled [J], true_expected [batch * steps, 1], sampled_expected [J])`
      from a `tf.random.*_candidate_sampler` called on the flattened labels.
    bias: `[>= num_items]` per-item bias added to every logit, or None.
    weights: `[batch, steps]` per-label weights, or None (mean over real labels).

  Returns:
    `[batch]` per-example losses.
  """
  flat = _flatten(query, labels, weights, num_items)
  sampled, true_expected, sampled_expected = (tf.stop_gradient(v) for v in sampled_values)
  sampled = tf.cast(sampled, tf.int64)
  dtype = flat.queries.dtype

  negatives = _rows(item_table, sampled, dtype)  # [J, D]
  negative_logits = tf.einsum("rvd,jd->rvj", flat.queries, negatives)  # [R, V, J]
  negative_logits -= tf.math.log(tf.cast(sampled_expected, dtype))  # logQ correction
  true_logits = _true_scores(flat, item_table, None, dtype)  # [N, V]
  true_expected = tf.reshape(tf.cast(true_expected, dtype), tf.shape(labels))
  true_logits -= tf.math.log(tf.gather_nd(true_expected, flat.position))[:, tf.newaxis]
  if bias is not None:
    negative_logits += _rows(bias, sampled, dtype)
    true_logits += _rows(bias, flat.ids, dtype)[:, tf.newaxis]

  hits = tf.equal(flat.ids[:, tf.newaxis], sampled)  # [N, J]
  label_losses = (_sampled_log_normalizer(true_logits, negative_logits, flat.query_of, hits) -
                  tf.reduce_max(true_logits, axis=1))
  return _per_example(label_losses, flat)


@tf.custom_gradient
def _sampled_log_normalizer(true_logits, negative_logits, query_of, hits):
  """log sum_v (exp(t_v) + sum_j [not hit_j] exp(n_vj)) per label, with a lean gradient.

  Equivalent to reduce_logsumexp over the true logits and the label's query's negatives
  with the hits set to -inf, without materializing that concatenation and with one pass
  over the `[N, V, J]` logits in the gradient.

  Args:
    true_logits: `[N, V]`.
    negative_logits: `[R, V, J]`, row `query_of[n]` belongs to label n.
    query_of: `[N]` int64.
    hits: `[N, J]` bool, negatives to leave out of each label's normalizer.

  Returns:
    `[N]` log-normalizers.
  """
  label_negatives = tf.gather(negative_logits, query_of)  # [N, V, J]
  # Any shift >= the largest kept logit is safe; a hit's logit equals its vector's true
  # logit (same item, same expected count), so including hits in the max changes nothing.
  shift = tf.maximum(tf.reduce_max(label_negatives, axis=[1, 2]),
                     tf.reduce_max(true_logits, axis=1))  # [N]
  exp = tf.where(hits[:, tf.newaxis, :], tf.zeros([], label_negatives.dtype),
                 tf.exp(label_negatives - shift[:, tf.newaxis, tf.newaxis]))  # [N, V, J]
  exp_true = tf.exp(true_logits - shift[:, tf.newaxis])  # [N, V]
  total = tf.reduce_sum(exp, axis=[1, 2]) + tf.reduce_sum(exp_true, axis=1)

  def grad(upstream):
    scale = upstream / total
    d_negative = tf.math.unsorted_segment_sum(exp * scale[:, tf.newaxis, tf.newaxis], query_of,
                                              tf.shape(negative_logits)[0])
    return exp_true * scale[:, tf.newaxis], d_negative, None, None

  return tf.math.log(total) + shift, grad


def full_softmax_loss(item_table, query, labels, *, num_items, bias=None, weights=None):
  """Softmax cross-entropy over the whole catalog `[0, num_items)`.

  With V vectors per query the label's logit is its best over the vectors and the
  normalizer runs over every (item, vector) pair (DSS eq 6).

  Args:
    item_table: see `RetrievalLoss.__call__`.
    query: `[batch, dim]`, `[batch, steps, dim]` or `[batch, steps, V, dim]`.
    labels: `[batch, steps]` int64.
    num_items: real items; the OOV and padding rows are not candidates.
    bias: `[>= num_items]` per-item bias, or None.
    weights: `[batch, steps]` per-label weights, or None (mean over real labels).

  Returns:
    `[batch]` per-example losses.
  """
  flat = _flatten(query, labels, weights, num_items)
  dtype = flat.queries.dtype
  table = _catalog(item_table, num_items, dtype)
  bias = None if bias is None else _catalog(bias, num_items, dtype)
  true_logits = tf.reduce_max(_true_scores(flat, table, bias, dtype), axis=1)  # [N]
  # The normalizer is computed once per query row, even when it serves several labels.
  rows, vectors = tf.shape(flat.queries)[0], tf.shape(flat.queries)[1]
  log_normalizer = _log_normalizer(tf.reshape(flat.queries, [rows * vectors, -1]), table,
                                   num_items, bias)
  log_normalizer = tf.reduce_logsumexp(tf.reshape(log_normalizer, [rows, vectors]), axis=1)
  return _per_example(tf.gather(log_normalizer, flat.query_of) - true_logits, flat)


def _catalog(table, num_items, dtype):
  """A table (or bias) as one tensor whose first `num_items` rows are the catalog."""
  if isinstance(table, (tf.Tensor, tf.Variable, np.ndarray)):
    return tf.cast(table, dtype)  # the normalizer skips the rows past num_items
  # Lists of shards and ShardedVariables: embedding_lookup knows their row layout.
  return _rows(table, tf.range(num_items), dtype)


def _log_normalizer(query, table, num_items, bias=None):
  """log sum_{j < num_items} exp(query . table_j + bias_j) per query row, with a lean gradient.

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
    bias: `[>= num_items]` tensor or None.

  Returns:
    `[rows]` log-normalizers.
  """

  def normalizer_and_exp(query, table, bias):
    catalog = table[:num_items]
    logits = tf.matmul(query, catalog, transpose_b=True)  # [rows, num_items]
    if bias is not None:
      logits += bias[tf.newaxis, :num_items]
    shift = tf.reduce_max(logits, axis=1)
    exp = tf.exp(logits - shift[:, tf.newaxis])
    total = tf.reduce_sum(exp, axis=1)
    return tf.math.log(total) + shift, exp, total, catalog

  def extra_rows(tensor):
    return [[0, tf.shape(tensor)[0] - num_items]] + [[0, 0]] * (tensor.shape.rank - 1)

  if bias is None:
    @tf.custom_gradient
    def normalizer(query, table):
      value, exp, total, catalog = normalizer_and_exp(query, table, None)

      def grad(upstream):
        # d/dlogits = softmax * upstream = exp * (upstream / total), row-scaled; the
        # scale is folded into the small operand of each gradient matmul.
        scale = (upstream / total)[:, tf.newaxis]
        d_query = tf.matmul(exp, catalog) * scale
        d_catalog = tf.matmul(exp, query * scale, transpose_a=True)
        return d_query, tf.pad(d_catalog, extra_rows(table))

      return value, grad

    return normalizer(query, table)

  @tf.custom_gradient
  def normalizer_with_bias(query, table, bias):
    value, exp, total, catalog = normalizer_and_exp(query, table, bias)

    def grad(upstream):
      scale = (upstream / total)[:, tf.newaxis]
      d_query = tf.matmul(exp, catalog) * scale
      d_catalog = tf.matmul(exp, query * scale, transpose_a=True)
      d_bias = tf.reduce_sum(exp * scale, axis=0)
      return d_query, tf.pad(d_catalog, extra_rows(table)), tf.pad(d_bias, extra_rows(bias))

    return value, grad

  return normalizer_with_bias(query, table, bias)


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
