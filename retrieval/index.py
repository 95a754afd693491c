"""Top-k indexes over item vectors, their tuning, and the merge of multi-interest results.

Both indexes are TFRS `factorized_top_k` layers (`TopK`: `index(candidates)`, then
`layer(queries, k=...)` returns `(scores, indices)` of shape `[num_queries, k]`):

  * `BruteForceIndex` is TFRS's `BruteForce`: one matmul with every item, exact; used
    for small catalogs and as the reference that ScaNN's recall is measured against.
  * `ScannIndex` implements TFRS's `TopK` with ScaNN's TensorFlow ops directly (tree +
    anisotropic asymmetric hashing + exact float reordering), so that it lives inside
    a SavedModel. It is not TFRS's `ScaNN` layer because that layer fixes the leaves
    searched and the reordering at build time and has no anisotropic quantization:
    the tuner below sets both after one build, from measured recall
    (docs/architecture.md section 6).

A multi-interest user asks with all its vectors and `merge_interests` folds the
per-interest lists into one de-duplicated top-k list.

Tuning (`tune`). The catalog size fixes the structure, from ScaNN's tuning guide:
about sqrt(N) leaves, asymmetric hashing with 2 dimensions per block and anisotropic
threshold 0.2 (the setting for dot products), a training sample of min(N, 100k).
The search effort cannot be derived from the size: with the same sizing, recall@100
over 1M items was 0.98 on clustered vectors and 0.16 on i.i.d. Gaussian ones
(docs/retrieval.md). So the effort follows measured recall: starting from 2.5% of the
leaves (at least enough to score 100 k items) and max(4 k, 100) reordered candidates,
the tuner doubles the leaves searched and, for each, finds the fewest reordered
candidates whose recall@k against exact search reaches the target; of these
configurations it keeps the fastest.
"""

import dataclasses
import math
import time
from typing import List, Optional, Sequence, Tuple, Union

from absl import logging
import numpy as np
import tensorflow as tf
from tensorflow_recommenders.layers import factorized_top_k

AUTO = "auto"
SCANN = "scann"
BRUTE_FORCE = "brute_force"
INDEX_KINDS = (AUTO, SCANN, BRUTE_FORCE)

# Up to this many items `auto` picks brute force: at 20k items ScaNN was only about 2x
# faster on this kind of machine and lost 5% of the top 100 (docs/retrieval.md).
DEFAULT_BRUTE_FORCE_MAX_ITEMS = 20_000
DEFAULT_TARGET_RECALL = 0.95

# The starting effort: fraction of the leaves searched; items scored per wanted result.
_LEAVES_TO_SEARCH_FRACTION = 0.025
_MIN_SCORED_PER_K = 100
# Candidates reordered exactly per wanted result, and the tuner's ceiling on them.
_REORDER_PER_K = 4
_MIN_REORDER = 100
_MAX_REORDER_DOUBLINGS = 5
# K-means of the tree trains on a sample: its cost grows with sample x leaves.
_MAX_TRAINING_SAMPLE = 100_000
# Leaves smaller than this make k-means unstable and searches return too few items.
_MIN_ITEMS_PER_LEAF = 20
# ScaNN's asymmetric hashing (LUT16) trains 16 centres per block.
_MIN_SCANN_ITEMS = 16
# Cap on queries x items scored at once by exact search (floats; 128 MB).
_EXACT_SCORES_PER_BATCH = 1 << 25


@dataclasses.dataclass(frozen=True)
class IndexConfig:
  """How to index the item vectors.

  Attributes:
    kind: `auto` (brute force up to `brute_force_max_items` items, ScaNN above),
      `scann` or `brute_force`.
    brute_force_max_items: the `auto` threshold.
    num_leaves: ScaNN tree leaves; None sizes it from the catalog (about sqrt(N)).
    num_leaves_to_search: leaves scored per query; None: tuned to `target_recall`.
    reorder: candidates rescored exactly per query; None: tuned to `target_recall`.
    target_recall: recall@k against exact search that the tuner reaches with the
      least effort (on the tuning queries, as a 95% lower confidence bound).
    dimensions_per_block: asymmetric-hashing block size (2 is ScaNN's default).
    anisotropic_quantization_threshold: ScaNN's recommended 0.2 for dot products.
    training_sample_size: vectors the tree and hash train on; None: min(N, 100k).
  """
  kind: str = AUTO
  brute_force_max_items: int = DEFAULT_BRUTE_FORCE_MAX_ITEMS
  num_leaves: Optional[int] = None
  num_leaves_to_search: Optional[int] = None
  reorder: Optional[int] = None
  target_recall: float = DEFAULT_TARGET_RECALL
  dimensions_per_block: int = 2
  anisotropic_quantization_threshold: float = 0.2
  training_sample_size: Optional[int] = None

  def __post_init__(self):
    if self.kind not in INDEX_KINDS:
      raise ValueError(f"Unknown index kind {self.kind!r}; expected one of {INDEX_KINDS}.")
    for name in ("num_leaves", "num_leaves_to_search", "reorder", "training_sample_size"):
      value = getattr(self, name)
      if value is not None and value < 1:
        raise ValueError(f"{name} must be positive or None (sized from the catalog), got {value}.")
    if not 0 < self.target_recall <= 1:
      raise ValueError(f"target_recall must be in (0, 1], got {self.target_recall}.")


@dataclasses.dataclass(frozen=True)
class ScannParams:
  """A ScaNN configuration (recorded in the index report and the manifest)."""
  num_leaves: int
  num_leaves_to_search: int
  reorder: int
  training_sample_size: int
  dimensions_per_block: int
  anisotropic_quantization_threshold: float


def scann_params(num_items: int, k: int, config: IndexConfig = IndexConfig()) -> ScannParams:
  """Sizes a ScaNN index for `num_items` items and top-`k` queries: the tuner's start.

  Examples with k = 100: 100k items -> 316 leaves, 32 searched (32 x 316 >= 100 k);
  1M items -> 1000 leaves, 25 searched (2.5%); 400 candidates reordered (4 k).
  """
  num_leaves = config.num_leaves or max(1, min(round(math.sqrt(num_items)),
                                               num_items // _MIN_ITEMS_PER_LEAF))
  if num_leaves > num_items:
    raise ValueError(f"num_leaves={num_leaves} exceeds the {num_items} items to index; "
                     f"use fewer leaves or the brute-force index.")
  items_per_leaf = num_items / num_leaves
  to_search = config.num_leaves_to_search or max(
      math.ceil(_LEAVES_TO_SEARCH_FRACTION * num_leaves),
      math.ceil(_MIN_SCORED_PER_K * k / items_per_leaf))
  return ScannParams(
      num_leaves=num_leaves,
      num_leaves_to_search=min(to_search, num_leaves),
      reorder=max(config.reorder or max(_REORDER_PER_K * k, _MIN_REORDER), k),
      training_sample_size=config.training_sample_size or min(num_items, _MAX_TRAINING_SAMPLE),
      dimensions_per_block=config.dimensions_per_block,
      anisotropic_quantization_threshold=config.anisotropic_quantization_threshold,
  )


def _check_embeddings(embeddings, k: int) -> tf.Tensor:
  embeddings = tf.convert_to_tensor(embeddings, tf.float32)
  if embeddings.shape.rank != 2:
    raise ValueError(f"Item embeddings must be [num_items, dim], got shape {embeddings.shape}.")
  num_items = embeddings.shape[0]
  if not 1 <= k <= num_items:
    raise ValueError(f"k={k} must be between 1 and the catalog size {num_items}.")
  return embeddings


class BruteForceIndex(factorized_top_k.BruteForce):
  """TFRS's exact top-k (one matmul against the whole catalog), returning row indices.

  Its memory per call is queries x items floats, so large catalogs are served with
  ScaNN. Built from standard ops only: artifacts with it load in stock TF Serving.
  """

  kind = BRUTE_FORCE

  def __init__(self, embeddings, k: int):
    """Args: embeddings `[num_items, dim]`; k: the default number of results."""
    embeddings = _check_embeddings(embeddings, k)
    super().__init__(k=k, name="brute_force_index")
    self.num_items, self.dim = (int(d) for d in embeddings.shape)
    self.index(embeddings)  # identifiers default to the row indices

  def config(self) -> dict:
    return {"kind": self.kind}

  def get_config(self) -> dict:  # Keras records it when saving
    return self.config()

  def size_bytes(self) -> int:
    """Bytes of the indexed vectors and their row indices."""
    return self.num_items * (self.dim + 1) * 4


class ScannIndex(factorized_top_k.TopK):
  """ScaNN tree + asymmetric hashing + exact reordering, as TF ops (saveable).

  `layer(queries, k=...)` searches `params.num_leaves_to_search` leaves and reorders
  `params.reorder` candidates (set them with `set_effort`, e.g. from `tune`); `search`
  takes both per call. A SavedModel holding the index must be saved with
  `tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])` and loaded by a process
  that imported `scann.scann_ops.py.scann_ops` (which registers the ops).
  """

  kind = SCANN

  def __init__(self, embeddings, k: int, params: ScannParams):
    """Trains the index.

    Args:
      embeddings: `[num_items, dim]` float32.
      k: the default number of results.
      params: from `scann_params`; its leaves searched and reordering are the
        build's defaults, which `set_effort` replaces.
    """
    super().__init__(k=k, name="scann_index")
    self.params = params
    self.index(_check_embeddings(embeddings, k))

  def index(self, candidates, identifiers=None) -> "ScannIndex":
    """Builds the index over `candidates` `[num_items, dim]`; results are row indices."""
    from scann.scann_ops.py import scann_ops  # pylint: disable=g-import-not-at-top

    if identifiers is not None:
      raise ValueError("ScannIndex returns row indices; map them to identifiers after the "
                       "search (the artifact gathers raw item ids).")
    self.num_items, self.dim = (int(d) for d in candidates.shape)
    if self.num_items < _MIN_SCANN_ITEMS:
      raise ValueError(f"ScaNN's asymmetric hashing trains {_MIN_SCANN_ITEMS} centres per block "
                       f"and needs at least that many items; the catalog has {self.num_items}. "
                       f"Use the brute-force index (--index=brute_force or auto).")
    params = self.params
    builder = scann_ops.builder(candidates, self._k, "dot_product").tree(
        num_leaves=params.num_leaves,
        num_leaves_to_search=params.num_leaves_to_search,
        training_sample_size=params.training_sample_size,
        min_partition_size=min(50, max(1, self.num_items // (4 * params.num_leaves))),
    ).score_ah(
        params.dimensions_per_block,
        anisotropic_quantization_threshold=params.anisotropic_quantization_threshold,
        training_sample_size=params.training_sample_size,
    ).reorder(params.reorder)
    # The searcher is a resource; its tensors (tree, codes, float dataset for
    # reordering) become variables of this layer so that the index is saved.
    self.state = builder.build().serialize_to_module()
    return self

  def set_effort(self, num_leaves_to_search: int, reorder: int) -> None:
    """What `call` searches from now on (before the artifact is traced)."""
    if not 1 <= num_leaves_to_search <= self.params.num_leaves:
      raise ValueError(f"num_leaves_to_search={num_leaves_to_search} must be between 1 and "
                       f"the {self.params.num_leaves} leaves.")
    self.params = dataclasses.replace(self.params, num_leaves_to_search=num_leaves_to_search,
                                      reorder=reorder)

  def config(self) -> dict:
    return {"kind": self.kind, **dataclasses.asdict(self.params)}

  def get_config(self) -> dict:  # Keras records it when saving
    return self.config()

  def size_bytes(self) -> int:
    """Bytes of the index's tensors (tree, codes, float vectors for reordering)."""
    return sum(int(v.numpy().nbytes) if v.dtype != tf.string else
               sum(len(s) for s in np.ravel(v.numpy()))
               for v in self.state.variables)

  def search(self, queries, k, num_leaves_to_search, reorder) -> Tuple[tf.Tensor, tf.Tensor]:
    """Args: queries `[n, dim]`; k (int or int32 scalar tensor, at most num_items) and
    the effort: leaves searched and candidates reordered (at least k are).

    Returns: scores `[n, k]` (descending) and int32 indices `[n, k]`. Scores are exact
    dot products (reordered in float32), so lists of different vectors compare. A query
    whose searched leaves hold fewer than k items gets -inf / -1 in the missing columns.
    """
    from scann.scann_ops.py import scann_ops  # pylint: disable=g-import-not-at-top

    # Inside a tf.function the handle is created once and cached by the op kernel.
    searcher = scann_ops.searcher_from_module(self.state)
    result = searcher.search_batched_parallel(
        queries, final_num_neighbors=k, pre_reorder_num_neighbors=tf.maximum(reorder, k),
        leaves_to_search=num_leaves_to_search)
    missing = k - tf.shape(result.indices)[1]
    return (tf.pad(result.distances, [[0, 0], [0, missing]], constant_values=-math.inf),
            tf.pad(result.indices, [[0, 0], [0, missing]], constant_values=-1))

  def call(self, queries, k=None) -> Tuple[tf.Tensor, tf.Tensor]:
    k = self._k if k is None else k
    return self.search(queries, k, self.params.num_leaves_to_search, self.params.reorder)

  def is_exact(self) -> bool:
    return False


Index = Union[BruteForceIndex, ScannIndex]


def build_index(embeddings, k: int, config: IndexConfig = IndexConfig()) -> Index:
  """Builds the index `config` asks for (see `IndexConfig.kind`), untuned."""
  num_items = int(tf.convert_to_tensor(embeddings).shape[0])
  kind = config.kind
  if kind == AUTO:
    kind = BRUTE_FORCE if num_items <= config.brute_force_max_items else SCANN
  if kind == BRUTE_FORCE:
    return BruteForceIndex(embeddings, k)
  return ScannIndex(embeddings, k, scann_params(num_items, k, config))


def exact_top_k(embeddings, queries, k: int) -> np.ndarray:
  """Indices `[n, k]` of the exact top-k items of each query (matmul in bounded batches)."""
  embeddings = tf.convert_to_tensor(embeddings, tf.float32)
  batch = max(1, _EXACT_SCORES_PER_BATCH // int(embeddings.shape[0]))
  return np.concatenate([
      tf.math.top_k(tf.matmul(tf.constant(queries[start:start + batch]), embeddings,
                              transpose_b=True), k=k).indices.numpy()
      for start in range(0, len(queries), batch)])


def recall_per_query(found: np.ndarray, exact: np.ndarray) -> np.ndarray:
  """|found row & exact row| / k per row; missing results (-1, b"") are never hits."""
  k = exact.shape[1]
  return np.array([len(set(f.tolist()) & set(e.tolist()) - {-1, b""}) / k
                   for f, e in zip(found, exact)])


@dataclasses.dataclass(frozen=True)
class Trial:
  """One search effort the tuner measured.

  Attributes:
    num_leaves_to_search, reorder: the effort.
    recall: mean recall@k over the tuning queries.
    recall_lower_bound: recall minus 1.96 standard errors (what must reach the target).
    qps: queries/second of the search alone (measured for the candidates only).
  """
  num_leaves_to_search: int
  reorder: int
  recall: float
  recall_lower_bound: float
  qps: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class Tuning:
  """What `tune` chose and why (recorded in the manifest).

  Attributes:
    target_recall, num_queries: the goal and the tuning queries it was measured on.
    chosen: the effort set on the index (with its measured qps).
    met_target: whether `chosen.recall_lower_bound` reaches the target.
    trials: every effort measured, in the order tried.
  """
  target_recall: float
  num_queries: int
  chosen: Trial
  met_target: bool
  trials: Tuple[Trial, ...]

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def _doublings(start: int, stop: int) -> List[int]:
  values = [start]
  while values[-1] < stop:
    values.append(min(2 * values[-1], stop))
  return values


def _queries_per_second(index: ScannIndex, queries: np.ndarray, k: int, trial: Trial,
                        batch_size: int) -> float:
  batches = [tf.constant(queries[i:i + batch_size]) for i in range(0, len(queries), batch_size)]
  index.search(batches[0], k, trial.num_leaves_to_search, trial.reorder)  # warm-up
  start = time.perf_counter()
  for batch in batches:
    index.search(batch, k, trial.num_leaves_to_search, trial.reorder)
  return len(queries) / (time.perf_counter() - start)


def tune(index: ScannIndex, embeddings, queries: np.ndarray, k: int, target_recall: float,
         leaves_to_search: Optional[Sequence[int]] = None,
         reorders: Optional[Sequence[int]] = None, batch_size: int = 256) -> Tuning:
  """Sets `index`'s effort to the fastest one that reaches `target_recall` (module doc).

  Args:
    index: a built ScaNN index; its params' effort is the smallest one tried.
    embeddings: the `[num_items, dim]` vectors it indexes (for the exact reference).
    queries: `[n, dim]` tuning query vectors (not the ones recall is reported on).
    k: results per query.
    target_recall: what the 95% lower confidence bound of the mean recall@k must
      reach, so that the target holds on queries beyond these.
    leaves_to_search: the values to try (default: doublings up to every leaf).
    reorders: the values to try, ascending (default: doublings up to 32 times the
      start, at most the catalog).
    batch_size: queries per call when timing.

  Returns:
    The chosen effort (already set on `index`) and every trial. When no effort reaches
    the target: the one with the best recall, and `met_target` False.
  """
  queries = np.asarray(queries, np.float32)
  start = index.params
  leaves_to_search = leaves_to_search or _doublings(start.num_leaves_to_search, start.num_leaves)
  reorders = reorders or _doublings(
      start.reorder, max(start.reorder, min(index.num_items, start.reorder << _MAX_REORDER_DOUBLINGS)))
  exact = exact_top_k(embeddings, queries, k)
  query_tensor = tf.constant(queries)
  trials = []

  def trial(leaves: int, reorder: int) -> Trial:
    _, found = index.search(query_tensor, k, leaves, reorder)
    recalls = recall_per_query(found.numpy(), exact)
    error = recalls.std(ddof=1) / math.sqrt(len(recalls)) if len(recalls) > 1 else 0.0
    trials.append(Trial(leaves, reorder, float(recalls.mean()), float(recalls.mean() - 1.96 * error)))
    logging.info("Tuning ScaNN: %d of %d leaves, %d reordered: recall@%d %.4f (target %.3f).",
                 leaves, start.num_leaves, reorder, k, trials[-1].recall, target_recall)
    return trials[-1]

  # Per number of leaves searched, the fewest reordered candidates reaching the target.
  # Once one is found, more leaves are only worth trying with fewer candidates.
  reaching = []
  for leaves in leaves_to_search:
    for reorder in reorders:
      if reaching and reorder >= reaching[-1].reorder:
        break
      if trial(leaves, reorder).recall_lower_bound >= target_recall:
        reaching.append(trials[-1])
        break
    if reaching and reaching[-1].reorder == reorders[0]:
      break
  if not reaching:
    reaching = [max(trials, key=lambda t: (t.recall, -t.num_leaves_to_search, -t.reorder))]
    logging.warning("No ScaNN effort tried reaches recall@%d %.3f; the best reached %.4f.",
                    k, target_recall, reaching[0].recall)
  timed = [dataclasses.replace(t, qps=_queries_per_second(index, queries, k, t, batch_size))
           for t in reaching]
  chosen = max(timed, key=lambda t: t.qps)
  index.set_effort(chosen.num_leaves_to_search, chosen.reorder)
  return Tuning(target_recall=target_recall, num_queries=len(queries), chosen=chosen,
                met_target=chosen.recall_lower_bound >= target_recall, trials=tuple(trials))


def merge_interests(scores: tf.Tensor, indices: tf.Tensor, k: int) -> Tuple[tf.Tensor, tf.Tensor]:
  """Merges per-interest top lists into one top-k list without duplicates.

  An item's score for a user is its largest score over the user's vectors
  (`models/base.py`). Every item of the exact top k by that score is in the exact
  top k of the vector that attains its maximum, so merging the per-vector top-k
  lists loses nothing.

  Args:
    scores: `[batch, num_vectors, n]` per-vector scores, n >= k; -inf marks no result.
    indices: `[batch, num_vectors, n]` int item indices; -1 marks no result.
    k: list length.

  Returns:
    scores `[batch, k]` descending and indices `[batch, k]` (distinct items; -inf / -1
    only when fewer than k distinct items were found).
  """
  batch = tf.shape(scores)[0]
  scores = tf.reshape(scores, [batch, -1])
  indices = tf.reshape(tf.cast(indices, tf.int64), [batch, -1])
  # Sort by score, then stably by item: each item's first copy has its best score.
  by_score = tf.argsort(scores, axis=1, direction="DESCENDING", stable=True)
  scores = tf.gather(scores, by_score, batch_dims=1)
  indices = tf.gather(indices, by_score, batch_dims=1)
  by_item = tf.argsort(indices, axis=1, stable=True)
  scores = tf.gather(scores, by_item, batch_dims=1)
  indices = tf.gather(indices, by_item, batch_dims=1)
  first_copy = tf.concat(
      [tf.ones([batch, 1], tf.bool), indices[:, 1:] != indices[:, :-1]], axis=1)
  scores = tf.where(first_copy & (indices >= 0), scores, -math.inf)
  top_scores, positions = tf.math.top_k(scores, k=k)
  top_indices = tf.gather(indices, positions, batch_dims=1)
  return top_scores, tf.where(top_scores > -math.inf, top_indices, -1)
