"""Full-catalog evaluation: HR, NDCG, MRR, Recall, Precision and F1 at k; perplexity.

Every user is ranked against *all* items `[0, num_items)` (no sampled negatives); the
OOV and padding rows of the item table are never ranked. Definitions, protocols and
the tie rule are documented in docs/evaluation.md; in short, for one user with the set
of relevant items `T` (the de-duplicated `eval_targets`) and `rank(t)` the number of
items placed before target `t`:

    HR@k        = 1 if any target has rank < k              (held-out users: any hit)
    Recall@k    = hits / |T|,    hits = #{t in T: rank(t) < k}
    Precision@k = hits / k
    F1@k        = 2 P R / (P + R) = 2 hits / (|T| + k)      (0 without hits)
    NDCG@k      = sum_{hit t} 1 / log2(rank(t) + 2)  /  sum_{j < min(|T|, k)} 1 / log2(j + 2)
    MRR@k       = 1 / (min_t rank(t) + 1) if that rank < k, else 0

each averaged over the users that have at least one target, and

    perplexity  = exp(mean over targets of -log softmax_i(s_i)[t])      (all items i)

the exponentiated full-softmax cross entropy of the targets (HRNN-meta's PPL, after
Brown et al. 1992): a model with perplexity p is as uncertain as a uniform choice among
p items. It is averaged over targets, not users, like a language model's per-token
PPL (the same with one target per user), and normalizes over the whole catalog
`[0, num_items)` with no item masked: it measures the distribution the model was
trained to output (the full softmax), not the masked ranking.

Scores. A user with `K` vectors `u_1..u_K` (`user_vectors [batch, K, dim]`) scores item
`i` as `max_k <u_k, e_i> + b_i` (the model's candidate side: item vectors `e` and an
optional bias `b`). Ranking by that max is exactly what merging the K per-interest top
lists by score, de-duplicated, gives.

Ranks, not top-k lists. Instead of materializing the `[users, items]` score matrix or
keeping running top-k lists, the evaluator scores the catalog in chunks of
`item_chunk_size` rows and only *counts*, for every target, how many items of the
chunk score at least as high (one comparison for a single target; with several,
`tf.searchsorted` against the user's sorted target scores and a per-user histogram).
Memory is `[batch, K, chunk]` floats at any catalog size, and the counts add up
exactly across chunks, so the result does not depend on the chunk size. The counts
give each target's position in the full ranking, from which every metric follows. The
softmax normalizer of the perplexity is accumulated over the same chunks (a running
log-sum-exp of the unmasked scores).

Tie rule (pessimistic): an item that scores exactly as high as a target is ranked
before it, so `rank(t) = #{i != t, not masked: s_i >= s_t}`. A model that gives every
item the same score therefore gets 0 at every k instead of inheriting the order of the
frequency-ranked ids. A target whose score is not finite (NaN, inf) counts as a miss.

Masking (`mask_history`). The user's own targets are never counted as items ranked
before another target through the catalog scan; they are compared with each other
separately. The items of `eval_exclude` (the whole input history) are removed from the
ranking under "all" and "keep_targets"; they differ for a target the user consumed
before: "all" (the default, as the S3-Rec code and RecBole do) masks it with the rest
of the history, so it counts as a miss; "keep_targets" keeps it rankable. "none"
ranks the history items like any other.
"""

import dataclasses
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from common import cli
from common import files
from common import names
from input_pipeline import schema
from models import base

DEFAULT_KS = (10, 20, 50, 80, 100)
MASK_ALL = "all"
MASK_KEEP_TARGETS = "keep_targets"
MASK_NONE = "none"
MASK_HISTORY_MODES = (MASK_ALL, MASK_KEEP_TARGETS, MASK_NONE)
METRICS = ("hr", "ndcg", "mrr", "recall", "precision", "f1")
PERPLEXITY = "perplexity"  # not at a cut-off: one value per evaluation
TIE_RULE = "pessimistic"
# Rows of the item table scored at once: the step holds `[batch, K, chunk]` float32
# scores, 64 MB at batch 256 and K = 4.
DEFAULT_ITEM_CHUNK_SIZE = 16384

UserVectorsFn = Callable[[Mapping[str, tf.Tensor]], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Averaged metrics of one evaluation run.

  Attributes:
    metrics: `"hr@10"`, `"ndcg@10"`, ... (one key per metric in `METRICS` and k), and
      `"perplexity"` when the evaluator computes it.
    num_users: users averaged over (those with at least one target).
    num_targets: distinct targets of those users.
    num_users_without_targets: users skipped because every target was padding.
    protocol: the split protocol of the data set (`input_pipeline.schema.SPLIT_PROTOCOLS`).
    ks: the cut-offs.
    mask_history: how the input history was removed from the ranking
      (`MASK_HISTORY_MODES`).
    num_items: size of the ranked catalog.
    seconds: wall time of the run.
  """
  metrics: Dict[str, float]
  num_users: int
  num_targets: int
  num_users_without_targets: int
  protocol: str
  ks: Tuple[int, ...]
  mask_history: str
  num_items: int
  seconds: float

  def to_json(self) -> Dict[str, Any]:
    record = dataclasses.asdict(self)
    record["ks"] = list(self.ks)
    record["tie_rule"] = TIE_RULE
    return record


def metric_name(metric: str, k: int) -> str:
  return f"{metric}@{k}"


def item_rows(item_embeddings, num_items: int) -> tf.Tensor:
  """Rows `[0, num_items)` of an item table (or bias) as one local float32 tensor.

  Args:
    item_embeddings: a tensor, a variable, a `ShardedVariable` (ParameterServerStrategy
      splits the table along rows) or a list of row shards; it may hold more rows than
      `num_items` (the OOV and padding rows), which are dropped.
    num_items: number of real items.

  Returns:
    The table read once, so that scoring does not pull it from the parameter servers
    for every batch.
  """
  if hasattr(item_embeddings, "variables") and not isinstance(item_embeddings, tf.Module):
    shards = list(item_embeddings.variables)  # ShardedVariable
  elif isinstance(item_embeddings, (list, tuple)):
    shards = list(item_embeddings)
  else:
    shards = [item_embeddings]
  table = tf.concat([tf.cast(tf.convert_to_tensor(s), tf.float32) for s in shards], axis=0)
  if table.shape.rank not in (1, 2) or table.shape[0] < num_items:
    raise ValueError(f"Expected an item table [>= {num_items}, dim] or bias [>= {num_items}], "
                     f"got shape {table.shape}.")
  return table[:num_items]


def _dedupe_targets(targets: tf.Tensor, num_items: int) -> tf.Tensor:
  """`[B, T]` bool: real targets, each item counted once per user."""
  in_catalog = (targets >= 0) & (targets < num_items)
  same = tf.equal(targets[:, :, None], targets[:, None, :]) & in_catalog[:, None, :]
  t = tf.shape(targets)[1]
  earlier = tf.linalg.band_part(tf.ones([t, t], tf.bool), -1, 0) & ~tf.eye(t, dtype=tf.bool)
  repeated = tf.reduce_any(same & earlier[None], axis=2)  # [b, t, t']: t' < t holds the same item
  return in_catalog & ~repeated


def _count_at_or_above(scores: tf.Tensor, sorted_keys: tf.Tensor) -> tf.Tensor:
  """`[B, T]` int64: per sorted target key, how many of the `[B, C]` scores are >= it."""
  num_targets = tf.shape(sorted_keys)[1]

  def one_target():  # leave-one-out: a plain comparison is several times faster
    return tf.math.count_nonzero(scores >= sorted_keys, axis=1, keepdims=True)

  def many_targets():
    # below[b, i] = how many of the user's sorted keys are <= score i; the key at
    # sorted position p has score i at or above it iff below > p.
    below = tf.searchsorted(sorted_keys, scores, side="right")
    histogram = tf.math.bincount(below, minlength=num_targets + 1, maxlength=num_targets + 1,
                                 axis=-1, dtype=tf.int64)
    size = tf.shape(scores, out_type=tf.int64)[1]
    return size - tf.cumsum(histogram, axis=1)[:, :num_targets]

  return tf.cond(num_targets == 1, one_target, many_targets)


def target_ranks(
    user_vectors: tf.Tensor,
    items: tf.Tensor,
    targets: tf.Tensor,
    masked: tf.Tensor,
    item_chunk_size: int,
    bias: Optional[tf.Tensor] = None,
    mask_targets: bool = False,
) -> Tuple[tf.Tensor, tf.Tensor]:
  """Position of every target in the user's full ranking (pessimistic ties).

  Arguments and ranks as in `target_scan`, which also returns the target scores and
  the catalog's log-normalizer.
  """
  ranks, valid, _, _ = target_scan(user_vectors, items, targets, masked, item_chunk_size, bias,
                                   mask_targets, with_normalizer=False)
  return ranks, valid


def target_scan(
    user_vectors: tf.Tensor,
    items: tf.Tensor,
    targets: tf.Tensor,
    masked: tf.Tensor,
    item_chunk_size: int,
    bias: Optional[tf.Tensor] = None,
    mask_targets: bool = False,
    with_normalizer: bool = True,
) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """Ranks of the targets and the softmax normalizer, in one scan of the catalog.

  Args:
    user_vectors: `[batch, K, dim]` float32.
    items: `[num_items, dim]` float32, the whole rankable catalog.
    targets: `[batch, T]` int64 item indices; ids outside `[0, num_items)` are padding.
    masked: `[batch, M]` int64 items removed from the ranking (the history when
      masking; may contain padding ids, which are ignored). Targets are always
      handled apart from the catalog scan, so they need not be listed.
    item_chunk_size: catalog rows scored at once.
    bias: `[num_items]` float32 added to every item's score, or None.
    mask_targets: a target that is also in `masked` counts as a miss (S3-Rec, RecBole);
      otherwise it stays rankable.

  Returns:
    `(ranks, valid, target_scores, log_normalizer)`: `ranks [batch, T]` int64, the
    number of rankable items placed before each target (`num_items` for targets with a
    non-finite score); `valid [batch, T]` bool marking real, de-duplicated targets;
    `target_scores [batch, T]` float32; `log_normalizer [batch]` float32,
    `log sum_i exp(s_i)` over the whole catalog, no item masked (for the perplexity;
    -inf without `with_normalizer`, which skips its pass over the scores).
  """
  num_items = tf.shape(items, out_type=tf.int64)[0]
  batch = tf.shape(user_vectors)[0]
  k_vectors = tf.shape(user_vectors)[1]
  dim = tf.shape(user_vectors)[2]
  num_targets = tf.shape(targets)[1]
  valid = _dedupe_targets(targets, num_items)

  # Target scores [B, T]: max over the user's vectors.
  safe_targets = tf.where(valid, targets, 0)
  target_emb = tf.gather(items, safe_targets)
  target_scores = tf.reduce_max(tf.einsum("bkd,btd->btk", user_vectors, target_emb), axis=2)
  if bias is not None:
    target_scores += tf.gather(bias, safe_targets)
  scored = valid & tf.math.is_finite(target_scores)
  if mask_targets:
    in_history = tf.reduce_any(targets[:, :, None] == tf.cast(masked, tf.int64)[:, None, :], axis=2)
    scored &= ~in_history
  # Sort keys: unscored targets go last with +inf, which no finite item score reaches.
  keys = tf.where(scored, target_scores, np.inf)
  order = tf.argsort(keys, axis=1, stable=True)
  sorted_keys = tf.gather(keys, order, batch_dims=1)

  # Targets and the history are taken out of the catalog scan.
  removed = tf.concat([tf.cast(masked, tf.int64), tf.cast(targets, tf.int64)], axis=1)
  flat_vectors = tf.reshape(user_vectors, [-1, dim])

  ahead_sorted = tf.zeros([batch, num_targets], tf.int64)
  log_normalizer = tf.fill([batch], tf.constant(-np.inf, tf.float32))
  for start in tf.range(tf.constant(0, tf.int64), num_items, tf.constant(item_chunk_size, tf.int64)):
    end = tf.minimum(start + item_chunk_size, num_items)
    size = end - start
    scores = tf.matmul(flat_vectors, items[start:end], transpose_b=True)
    scores = tf.reduce_max(tf.reshape(scores, [batch, k_vectors, -1]), axis=1)  # [B, C]
    if bias is not None:
      scores += bias[tf.newaxis, start:end]
    if with_normalizer:
      log_normalizer = tf.reduce_logsumexp(
          tf.stack([log_normalizer, tf.reduce_logsumexp(scores, axis=1)], axis=1), axis=1)
    local = removed - start
    where = tf.where((local >= 0) & (local < size))  # [n, 2]: (user, column of `removed`)
    updates = tf.stack([where[:, 0], tf.gather_nd(local, where)], axis=1)
    scores = tf.tensor_scatter_nd_update(scores, updates,
                                         tf.fill([tf.shape(updates)[0]], -np.inf))
    ahead_sorted += tf.ensure_shape(_count_at_or_above(scores, sorted_keys), ahead_sorted.shape)
  ahead = tf.gather(ahead_sorted, tf.argsort(order, axis=1), batch_dims=1)

  # The user's other targets scoring at least as high.
  other_ahead = (scored[:, None, :] & (target_scores[:, None, :] >= target_scores[:, :, None]) &
                 ~tf.eye(num_targets, dtype=tf.bool)[None])
  ranks = ahead + tf.reduce_sum(tf.cast(other_ahead, tf.int64), axis=2)
  return tf.where(scored, ranks, num_items), valid, target_scores, log_normalizer


def cross_entropy_sum(target_scores: tf.Tensor, log_normalizer: tf.Tensor,
                      valid: tf.Tensor) -> tf.Tensor:
  """Sum over the valid targets of `-log softmax(s)[t] = log_normalizer - s_t` (float64).

  A target with a non-finite score makes the sum non-finite (a diverged model's
  perplexity is not a number, not a good one).
  """
  entropy = tf.cast(log_normalizer[:, tf.newaxis] - target_scores, tf.float64)
  return tf.reduce_sum(tf.where(valid, entropy, tf.zeros_like(entropy)))


def metric_sums(ranks: tf.Tensor, valid: tf.Tensor, ks: Sequence[int]) -> tf.Tensor:
  """Per-batch sums of each metric over users with targets.

  Args:
    ranks: `[batch, T]` int64 target positions (see `target_ranks`).
    valid: `[batch, T]` bool.
    ks: cut-offs.

  Returns:
    `[len(ks), len(METRICS)]` float64 sums over users, in `METRICS` order.
  """
  ranks = tf.cast(ranks, tf.float64)
  count = tf.reduce_sum(tf.cast(valid, tf.float64), axis=1)  # |T| per user
  users = count > 0
  first = tf.reduce_min(tf.where(valid, ranks, np.inf), axis=1)
  # discount[j] = 1 / log2(j + 2); ideal[n] = sum_{j < n} discount[j].
  max_k = max(ks)
  discount = 1.0 / (tf.math.log(tf.range(2, max_k + 2, dtype=tf.float64)) / np.log(2.0))
  ideal = tf.concat([[0.0], tf.cumsum(discount)], axis=0)
  safe_count = tf.maximum(count, 1.0)
  rows = []
  for k in ks:
    hit = valid & (ranks < k)
    hits = tf.reduce_sum(tf.cast(hit, tf.float64), axis=1)
    dcg = tf.reduce_sum(tf.where(hit, 1.0 / (tf.math.log(ranks + 2.0) / np.log(2.0)), 0.0), axis=1)
    idcg = tf.gather(ideal, tf.cast(tf.minimum(count, k), tf.int32))
    per_user = {
        "hr": tf.cast(hits > 0, tf.float64),
        "ndcg": dcg / tf.maximum(idcg, 1e-12),
        "mrr": tf.where(first < k, 1.0 / (first + 1.0), 0.0),
        "recall": hits / safe_count,
        "precision": hits / k,
        "f1": 2.0 * hits / (safe_count + k),
    }
    rows.append(tf.stack([tf.reduce_sum(tf.where(users, per_user[m], 0.0)) for m in METRICS]))
  return tf.stack(rows)


def _any_size(spec: tf.TensorSpec) -> tf.TensorSpec:
  """The spec with every dimension unknown (rank and dtype kept)."""
  if not isinstance(spec, tf.TensorSpec) or spec.shape.rank is None:
    return spec
  return tf.TensorSpec([None] * spec.shape.rank, spec.dtype)


class Evaluator:
  """Ranks the whole catalog for every user of an evaluation split.

  Built once per job: its step function is traced on the first call and reused by
  every later evaluation (periodic ones included), whatever the batch widths.

  Args:
    user_vectors_fn: maps a feature batch (without `eval_targets`/`eval_exclude`, so
      it cannot see the answers) to `[batch, K, dim]` user vectors.
    num_items: number of real items.
    protocol: split protocol, one of `input_pipeline.schema.SPLIT_PROTOCOLS`
      (`stats.json` "split"); recorded in the result.
    ks: cut-offs, positive.
    mask_history: one of `MASK_HISTORY_MODES` (module docstring).
    item_chunk_size: catalog rows scored at once (memory `[batch, K, chunk]` floats).
    perplexity: also report the full-catalog perplexity (one log-sum-exp pass over
      each scored chunk).
  """

  def __init__(self, *, user_vectors_fn: UserVectorsFn, num_items: int, protocol: str,
               ks: Sequence[int] = DEFAULT_KS, mask_history: str = MASK_ALL,
               item_chunk_size: int = DEFAULT_ITEM_CHUNK_SIZE, perplexity: bool = True):
    if protocol not in schema.SPLIT_PROTOCOLS:
      raise ValueError(f"Unknown protocol {protocol!r}; expected one of {schema.SPLIT_PROTOCOLS} "
                       f"(the 'split' entry of the data set's {schema.STATS_FILE}).")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
      raise ValueError(f"Cut-offs must be positive integers, got {ks}.")
    if mask_history not in MASK_HISTORY_MODES:
      raise ValueError(f"Unknown mask_history {mask_history!r}; expected one of "
                       f"{MASK_HISTORY_MODES}.")
    if item_chunk_size < 1:
      raise ValueError(f"item_chunk_size must be positive, got {item_chunk_size}.")
    self.user_vectors_fn = user_vectors_fn
    self.num_items = num_items
    self.protocol = protocol
    self.ks = ks
    self.mask_history = mask_history
    self.item_chunk_size = item_chunk_size
    self.perplexity = perplexity
    self._step = None
    self._spec = None

  def _step_fn(self, features, items, bias):
    features = dict(features)
    targets = features.pop(names.EVAL_TARGETS)
    exclude = features.pop(names.EVAL_EXCLUDE)
    num_items = self.num_items
    pad = schema.pad_id(num_items)
    tf.debugging.assert_equal(
        tf.reduce_all(((targets >= 0) & (targets < num_items)) | (targets == pad)), True,
        message=f"eval_targets must be item indices in [0, {num_items}) or pad_id {pad}")
    vectors = self.user_vectors_fn(features)
    if vectors.shape.rank != 3:
      raise ValueError(f"user_vectors_fn must return [batch, num_vectors, dim], got shape "
                       f"{vectors.shape}.")
    vectors = tf.cast(vectors, tf.float32)
    masked = exclude[:, :0] if self.mask_history == MASK_NONE else exclude
    ranks, valid, target_scores, log_normalizer = target_scan(
        vectors, items, targets, masked, self.item_chunk_size, bias,
        mask_targets=self.mask_history == MASK_ALL, with_normalizer=self.perplexity)
    entropy = (cross_entropy_sum(target_scores, log_normalizer, valid) if self.perplexity
               else tf.zeros([], tf.float64))
    return (metric_sums(ranks, valid, self.ks), tf.reduce_sum(tf.cast(valid, tf.int64), axis=1),
            entropy)

  def _traced_step(self, spec, items, bias):
    # One trace for every batch: history, target and exclusion widths vary by batch.
    spec = tf.nest.map_structure(_any_size, spec)
    if self._step is None:
      self._spec = spec
      self._step = tf.function(self._step_fn, input_signature=[
          spec, tf.TensorSpec(items.shape, tf.float32), tf.TensorSpec(bias.shape, tf.float32)])
    elif spec != self._spec:
      raise ValueError(f"This Evaluator was traced for batches {self._spec}, got {spec}.")
    return self._step

  def __call__(self, dataset: tf.data.Dataset, item_embeddings, item_bias=None,
               expected_users: Optional[int] = None) -> EvalResult:
    """Evaluates one split.

    Args:
      dataset: a plain (not distributed) `tf.data.Dataset` of evaluation batches from
        `input_pipeline.dataset.make_dataset` with `eval_config`: the model's features
        plus `eval_targets [batch, T]` and `eval_exclude [batch, M]` (int64, padded
        with `pad_id`). For a quick periodic evaluation pass `dataset.take(n)`.
      item_embeddings: the candidate vectors (see `item_rows`); rows `[0, num_items)`
        are ranked.
      item_bias: the candidates' bias (same forms), or None.
      expected_users: users the dataset holds, for the progress bar (None: unknown).

    Returns:
      The averaged metrics.

    Raises:
      ValueError: batches without the evaluation keys.
    """
    spec = dataset.element_spec
    if (not isinstance(spec, Mapping) or names.EVAL_TARGETS not in spec or
        names.EVAL_EXCLUDE not in spec):
      raise ValueError(f"Evaluation batches must be dicts with {names.EVAL_TARGETS!r} and "
                       f"{names.EVAL_EXCLUDE!r}; got {spec}. Build the dataset with "
                       f"input_pipeline.dataset.eval_config on a valid/test split.")
    items = item_rows(item_embeddings, self.num_items)
    # A zero bias costs one addition per scored chunk and keeps one traced function.
    bias = (tf.zeros([self.num_items]) if item_bias is None
            else item_rows(item_bias, self.num_items))
    step = self._traced_step(spec, items, bias)

    start_time = time.time()
    sums = np.zeros([len(self.ks), len(METRICS)])
    entropy = 0.0
    num_users = num_targets = num_empty = 0
    with cli.progress(f"Ranking {self.num_items:,} items", expected_users, "users") as advance:
      for features in dataset:
        batch_sums, counts, batch_entropy = step(features, items, bias)
        counts = counts.numpy()
        sums += batch_sums.numpy()
        entropy += float(batch_entropy.numpy())
        num_users += int((counts > 0).sum())
        num_targets += int(counts.sum())
        num_empty += int((counts == 0).sum())
        advance(len(counts))
    if num_empty:
      logging.warning("evaluation: %d users had no target and were skipped", num_empty)
    means = sums / max(num_users, 1)
    metrics = {metric_name(m, k): float(means[i, j]) for i, k in enumerate(self.ks)
               for j, m in enumerate(METRICS)}
    if self.perplexity:
      metrics[PERPLEXITY] = float(np.exp(entropy / num_targets)) if num_targets else float("nan")
    result = EvalResult(
        metrics=metrics,
        num_users=num_users, num_targets=num_targets, num_users_without_targets=num_empty,
        protocol=self.protocol, ks=self.ks, mask_history=self.mask_history,
        num_items=self.num_items, seconds=time.time() - start_time)
    logging.info("evaluation (%s, history mask %s, %d users, %.1f s): %s", self.protocol,
                 self.mask_history, num_users, result.seconds, format_metrics(result))
    return result


def evaluate(*, user_vectors_fn: UserVectorsFn, item_embeddings, dataset: tf.data.Dataset,
             num_items: int, item_bias=None, **kwargs) -> EvalResult:
  """One evaluation with a new `Evaluator` (kwargs: protocol, ks, mask_history, ...)."""
  evaluator = Evaluator(user_vectors_fn=user_vectors_fn, num_items=num_items, **kwargs)
  return evaluator(dataset, item_embeddings, item_bias)


def model_evaluator(model: base.RetrievalModel, **kwargs) -> Callable[..., EvalResult]:
  """An evaluation function of a `RetrievalModel`: its user vectors against its candidates.

  `kwargs` are `Evaluator`'s other arguments (protocol, ks, mask_history, ...). The
  candidates are read anew at every call, so the function follows training. It takes
  the dataset and, optionally, `expected_users` (for the progress bar).
  """
  evaluator = Evaluator(user_vectors_fn=model.user_vectors, num_items=model.num_items, **kwargs)

  def evaluate_dataset(dataset: tf.data.Dataset,
                       expected_users: Optional[int] = None) -> EvalResult:
    candidates = model.candidates()
    return evaluator(dataset, candidates.vectors, candidates.bias, expected_users)

  return evaluate_dataset


def format_metrics(result: EvalResult) -> str:
  """One line per k: `@10 hr 0.0512 ndcg 0.0261 ...`, then the perplexity if computed."""
  lines = [f"@{k:<4d}" + " ".join(f"{m} {result.metrics[metric_name(m, k)]:.4f}" for m in METRICS)
           for k in result.ks]
  if PERPLEXITY in result.metrics:
    lines.append(f"{PERPLEXITY} {result.metrics[PERPLEXITY]:.2f}")
  return "\n".join(lines)


def write_metrics(result: EvalResult, path: str,
                  extra: Optional[Mapping[str, Any]] = None) -> None:
  """Writes the result (protocol, ks, users, metrics, plus `extra`) as JSON, atomically.

  Args:
    result: from `evaluate`.
    path: e.g. `MODEL_DIR/metrics.json`; its directory is created.
    extra: more top-level entries (model name, step, split, ...); must not reuse the
      result's keys.
  """
  record = result.to_json()
  clash = sorted(set(record) & set(extra or {}))
  if clash:
    raise ValueError(f"extra entries {clash} would overwrite the evaluation result's own keys.")
  record.update(extra or {})
  files.write_json(path, record)
  logging.info("wrote evaluation metrics to %s", path)


def read_item_counts(data_dir: str) -> np.ndarray:
  """Training counts `[num_items]` from the data set's vocab.tsv (index order)."""
  return np.asarray(schema.read_vocab_counts(data_dir), np.float32)


def popularity_scorer(item_counts: np.ndarray) -> Tuple[UserVectorsFn, tf.Tensor]:
  """PopRec: every user scores item i by its training count.

  Runs through the same `evaluate` as the models: the user vector is `[[1]]` and the
  item table is the counts `[num_items, 1]`. Items with equal counts tie, and the tie
  rule ranks them all before an equally popular target.

  Args:
    item_counts: `[num_items]` training counts (`read_item_counts`).

  Returns:
    `(user_vectors_fn, item_embeddings)` for `evaluate`.
  """
  table = tf.constant(np.asarray(item_counts, np.float32)[:, None])

  def user_vectors_fn(features):
    return tf.ones([tf.shape(features[names.HISTORY])[0], 1, 1])

  return user_vectors_fn, table
