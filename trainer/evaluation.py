"""Full-catalog evaluation: HR, NDCG, MRR, Recall, Precision and F1 at k.

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

each averaged over the users that have at least one target.

Scores. A user with `K` vectors `u_1..u_K` (`user_vectors [batch, K, dim]`) scores item
`i` as `max_k <u_k, e_i>`. Ranking by that max is exactly what merging the K
per-interest top lists by score, de-duplicated, gives.

Ranks, not top-k lists. Instead of materializing the `[users, items]` score matrix or
keeping running top-k lists, the evaluator scores the catalog in chunks of
`item_chunk_size` rows and only *counts*, for every target, how many items of the
chunk score at least as high (one comparison for a single target; with several,
`tf.searchsorted` against the user's sorted target scores and a per-user histogram).
Memory is `[batch, K, chunk]` floats at any catalog size, and the counts add up
exactly across chunks, so the result does not depend on the chunk size. The counts
give each target's position in the full ranking, from which every metric follows.

Tie rule (pessimistic): an item that scores exactly as high as a target is ranked
before it, so `rank(t) = #{i != t, not masked: s_i >= s_t}`. A model that gives every
item the same score therefore gets 0 at every k instead of inheriting the order of the
frequency-ranked ids. A target whose score is not finite (NaN, inf) counts as a miss.

Masking. The user's own targets are never counted as items ranked before another
target through the catalog scan; they are compared with each other separately (so a
target that also appears in the history stays rankable). With `mask_history`, the
items of `eval_exclude` (the input history) are removed from the ranking, as in the
S3-Rec protocol.
"""

import dataclasses
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from common import files
from input_pipeline import schema
from input_pipeline.samples import EVAL_EXCLUDE, EVAL_TARGETS
from models import base

DEFAULT_KS = (10, 20, 50, 80, 100)
METRICS = ("hr", "ndcg", "mrr", "recall", "precision", "f1")
TIE_RULE = "pessimistic"
# Rows of the item table scored at once: the step holds `[batch, K, chunk]` float32
# scores, 64 MB at batch 256 and K = 4.
DEFAULT_ITEM_CHUNK_SIZE = 16384
_LOG_EVERY_SECONDS = 30.0

UserVectorsFn = Callable[[Mapping[str, tf.Tensor]], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Averaged metrics of one evaluation run.

  Attributes:
    metrics: `"hr@10"`, `"ndcg@10"`, ... (one key per metric in `METRICS` and k).
    num_users: users averaged over (those with at least one target).
    num_targets: distinct targets of those users.
    num_users_without_targets: users skipped because every target was padding.
    protocol: the split protocol of the data set (`input_pipeline.schema.SPLIT_PROTOCOLS`).
    ks: the cut-offs.
    mask_history: whether the input history was removed from the ranking.
    num_items: size of the ranked catalog.
    seconds: wall time of the run.
  """
  metrics: Dict[str, float]
  num_users: int
  num_targets: int
  num_users_without_targets: int
  protocol: str
  ks: Tuple[int, ...]
  mask_history: bool
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
  """Rows `[0, num_items)` of an item table as one local `[num_items, dim]` float32 tensor.

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
  if table.shape.rank != 2 or table.shape[0] < num_items:
    raise ValueError(f"Expected an item table of shape [>= {num_items}, dim], got {table.shape}.")
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
) -> Tuple[tf.Tensor, tf.Tensor]:
  """Position of every target in the user's full ranking (pessimistic ties).

  Args:
    user_vectors: `[batch, K, dim]` float32.
    items: `[num_items, dim]` float32, the whole rankable catalog.
    targets: `[batch, T]` int64 item indices; ids outside `[0, num_items)` are padding.
    masked: `[batch, M]` int64 items removed from the ranking (the history when
      masking; may contain padding ids, which are ignored). Targets are always
      handled apart from the catalog scan, so they need not be listed.
    item_chunk_size: catalog rows scored at once.

  Returns:
    `(ranks, valid)`: `ranks [batch, T]` int64, the number of rankable items placed
    before each target (`num_items` for targets with a non-finite score), and
    `valid [batch, T]` bool marking real, de-duplicated targets.
  """
  num_items = tf.shape(items, out_type=tf.int64)[0]
  batch = tf.shape(user_vectors)[0]
  k_vectors = tf.shape(user_vectors)[1]
  dim = tf.shape(user_vectors)[2]
  num_targets = tf.shape(targets)[1]
  valid = _dedupe_targets(targets, num_items)

  # Target scores [B, T]: max over the user's vectors.
  target_emb = tf.gather(items, tf.where(valid, targets, 0))
  target_scores = tf.reduce_max(tf.einsum("bkd,btd->btk", user_vectors, target_emb), axis=2)
  scored = valid & tf.math.is_finite(target_scores)
  # Sort keys: unscored targets go last with +inf, which no finite item score reaches.
  keys = tf.where(scored, target_scores, np.inf)
  order = tf.argsort(keys, axis=1, stable=True)
  sorted_keys = tf.gather(keys, order, batch_dims=1)

  # Targets and the history are taken out of the catalog scan.
  removed = tf.concat([tf.cast(masked, tf.int64), tf.cast(targets, tf.int64)], axis=1)
  flat_vectors = tf.reshape(user_vectors, [-1, dim])

  ahead_sorted = tf.zeros([batch, num_targets], tf.int64)
  for start in tf.range(tf.constant(0, tf.int64), num_items, tf.constant(item_chunk_size, tf.int64)):
    end = tf.minimum(start + item_chunk_size, num_items)
    size = end - start
    scores = tf.matmul(flat_vectors, items[start:end], transpose_b=True)
    scores = tf.reduce_max(tf.reshape(scores, [batch, k_vectors, -1]), axis=1)  # [B, C]
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
  return tf.where(scored, ranks, num_items), valid


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


def evaluate(
    *,
    user_vectors_fn: UserVectorsFn,
    item_embeddings,
    dataset: tf.data.Dataset,
    num_items: int,
    protocol: str,
    ks: Sequence[int] = DEFAULT_KS,
    mask_history: bool = True,
    item_chunk_size: int = DEFAULT_ITEM_CHUNK_SIZE,
) -> EvalResult:
  """Ranks the whole catalog for every user of an evaluation split.

  Args:
    user_vectors_fn: maps a feature batch (the `models.base` keys, without
      `eval_targets`/`eval_exclude`, so it cannot see the answers) to
      `[batch, K, dim]` user vectors.
    item_embeddings: the item table (see `item_rows`); rows `[0, num_items)` are ranked.
    dataset: a plain (not distributed) `tf.data.Dataset` of evaluation batches from
      `input_pipeline.dataset.make_dataset` on a valid/test split: dicts with the
      `models.base` keys plus `eval_targets [batch, T]` and `eval_exclude [batch, M]`
      (int64, padded with `pad_id`). For a quick periodic evaluation pass
      `dataset.take(n)`.
    num_items: number of real items.
    protocol: split protocol, one of `input_pipeline.schema.SPLIT_PROTOCOLS`
      (`stats.json` "split"); recorded in the result.
    ks: cut-offs, positive.
    mask_history: remove `eval_exclude` (the input history) from the ranking.
    item_chunk_size: catalog rows scored at once (memory `[batch, K, chunk]` floats).

  Returns:
    The averaged metrics.

  Raises:
    ValueError: bad arguments, or batches without the evaluation keys.
  """
  if protocol not in schema.SPLIT_PROTOCOLS:
    raise ValueError(f"Unknown protocol {protocol!r}; expected one of {schema.SPLIT_PROTOCOLS} "
                     f"(the 'split' entry of the data set's {schema.STATS_FILE}).")
  ks = tuple(int(k) for k in ks)
  if not ks or min(ks) < 1:
    raise ValueError(f"Cut-offs must be positive integers, got {ks}.")
  if item_chunk_size < 1:
    raise ValueError(f"item_chunk_size must be positive, got {item_chunk_size}.")
  spec = dataset.element_spec
  if not isinstance(spec, Mapping) or EVAL_TARGETS not in spec or EVAL_EXCLUDE not in spec:
    raise ValueError(f"Evaluation batches must be dicts with {EVAL_TARGETS!r} and {EVAL_EXCLUDE!r}; "
                     f"got {spec}. Build the dataset with input_pipeline.dataset.eval_config "
                     f"on a valid/test split.")
  items = item_rows(item_embeddings, num_items)

  def step(features, items):
    features = dict(features)
    targets = features.pop(EVAL_TARGETS)
    exclude = features.pop(EVAL_EXCLUDE)
    pad = schema.pad_id(num_items)
    tf.debugging.assert_equal(
        tf.reduce_all(((targets >= 0) & (targets < num_items)) | (targets == pad)), True,
        message=f"eval_targets must be item indices in [0, {num_items}) or pad_id {pad}")
    vectors = user_vectors_fn(features)
    if vectors.shape.rank != 3:
      raise ValueError(f"user_vectors_fn must return [batch, num_vectors, dim], got shape "
                       f"{vectors.shape}.")
    vectors = tf.cast(vectors, tf.float32)
    masked = exclude if mask_history else exclude[:, :0]
    ranks, valid = target_ranks(vectors, items, targets, masked, item_chunk_size)
    return metric_sums(ranks, valid, ks), tf.reduce_sum(tf.cast(valid, tf.int64), axis=1)

  # One trace for every batch: history, target and exclusion widths vary by batch.
  step = tf.function(step, input_signature=[
      tf.nest.map_structure(_any_size, spec), tf.TensorSpec(items.shape, tf.float32)])

  start_time = last_log = time.time()
  sums = np.zeros([len(ks), len(METRICS)])
  num_users = num_targets = num_empty = 0
  for features in dataset:
    batch_sums, counts = step(features, items)
    counts = counts.numpy()
    sums += batch_sums.numpy()
    num_users += int((counts > 0).sum())
    num_targets += int(counts.sum())
    num_empty += int((counts == 0).sum())
    if time.time() - last_log > _LOG_EVERY_SECONDS:
      last_log = time.time()
      logging.info("evaluation: %d users ranked against %d items (%.0f users/s)", num_users,
                   num_items, num_users / (last_log - start_time))
  if num_empty:
    logging.warning("evaluation: %d users had no target and were skipped", num_empty)
  means = sums / max(num_users, 1)
  result = EvalResult(
      metrics={metric_name(m, k): float(means[i, j]) for i, k in enumerate(ks)
               for j, m in enumerate(METRICS)},
      num_users=num_users, num_targets=num_targets, num_users_without_targets=num_empty,
      protocol=protocol, ks=ks, mask_history=mask_history, num_items=num_items,
      seconds=time.time() - start_time)
  logging.info("evaluation (%s, history %s, %d users, %.1f s): %s", protocol,
               "masked" if mask_history else "not masked", num_users, result.seconds,
               format_metrics(result))
  return result


def evaluate_model(model: base.RetrievalModel, dataset: tf.data.Dataset, **kwargs) -> EvalResult:
  """`evaluate` for a `models.base.RetrievalModel`: its `user_vectors` and `item_table`.

  `kwargs` are `evaluate`'s other keyword arguments (protocol, ks, mask_history, ...).
  """
  return evaluate(
      user_vectors_fn=lambda features: model(features, training=False)[base.USER_VECTORS],
      item_embeddings=model.item_table, dataset=dataset, num_items=model.num_items, **kwargs)


def format_metrics(result: EvalResult) -> str:
  """One line per k: `@10 hr 0.0512 ndcg 0.0261 ...`."""
  return "\n".join(f"@{k:<4d}" + " ".join(
      f"{m} {result.metrics[metric_name(m, k)]:.4f}" for m in METRICS) for k in result.ks)


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
    return tf.ones([tf.shape(features[base.HISTORY])[0], 1, 1])

  return user_vectors_fn, table
