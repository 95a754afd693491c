"""Top-k indexes over item embeddings, and the merge of multi-interest results.

Two indexes answer the same question, "the k items with the largest dot product
with each query vector":

  * `BruteForceIndex` scores every item (exact; used for small catalogs and as the
    reference that ScaNN's recall is measured against).
  * `ScannIndex` is ScaNN's tree + asymmetric hashing + exact reordering, built with
    ScaNN's TensorFlow ops so that it can live inside a SavedModel.

Both are `tf.Module`s whose `search(queries, k)` returns `(scores, indices)` of shape
`[num_queries, k]`; a multi-interest user asks with all its vectors and
`merge_interests` folds the per-interest lists into one de-duplicated top-k list.

Sizing (`scann_params`) follows ScaNN's and AlloyDB's tuning guides: about sqrt(N)
leaves, anisotropic quantization threshold 0.2 for dot products, and exact float
reordering of a few times k candidates, so the scores ScaNN returns are true dot
products and comparable across interests. Each query searches 2.5% of the leaves, but
at least enough leaves to score 100 k items: with `benchmarks/retrieval_benchmark.py`
that gave recall@100 of about 0.97 at 100k and 0.99 at 1M clustered items
(docs/retrieval.md).
"""

import dataclasses
import math
from typing import Optional, Tuple, Union

import tensorflow as tf

AUTO = "auto"
SCANN = "scann"
BRUTE_FORCE = "brute_force"
INDEX_KINDS = (AUTO, SCANN, BRUTE_FORCE)

# Up to this many items `auto` picks brute force: at 20k items ScaNN was only about 2x
# faster on this kind of machine and lost 5% of the top 100 (docs/retrieval.md).
DEFAULT_BRUTE_FORCE_MAX_ITEMS = 20_000

# Fraction of the leaves each query searches; items scored per wanted result at least.
_LEAVES_TO_SEARCH_FRACTION = 0.025
_MIN_SCORED_PER_K = 100
# Candidates reordered exactly per wanted result.
_REORDER_PER_K = 4
_MIN_REORDER = 100
# K-means of the tree trains on a sample: its cost grows with sample x leaves.
_MAX_TRAINING_SAMPLE = 100_000
# Leaves smaller than this make k-means unstable and searches return too few items.
_MIN_ITEMS_PER_LEAF = 20


@dataclasses.dataclass(frozen=True)
class IndexConfig:
  """How to index the item embeddings.

  Attributes:
    kind: `auto` (brute force up to `brute_force_max_items` items, ScaNN above),
      `scann` or `brute_force`.
    brute_force_max_items: the `auto` threshold.
    num_leaves: ScaNN tree leaves; None sizes it from the catalog (about sqrt(N)).
    num_leaves_to_search: leaves scored per query; None: 2.5% of the leaves, but
      enough leaves to hold 100 k items.
    reorder: candidates rescored exactly per query; None: max(4 k, 100).
    dimensions_per_block: asymmetric-hashing block size (2 is ScaNN's default).
    anisotropic_quantization_threshold: ScaNN's recommended 0.2 for dot products.
    training_sample_size: vectors the tree and hash train on; None: min(N, 100k).
  """
  kind: str = AUTO
  brute_force_max_items: int = DEFAULT_BRUTE_FORCE_MAX_ITEMS
  num_leaves: Optional[int] = None
  num_leaves_to_search: Optional[int] = None
  reorder: Optional[int] = None
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


@dataclasses.dataclass(frozen=True)
class ScannParams:
  """The resolved ScaNN configuration (recorded in the index report)."""
  num_leaves: int
  num_leaves_to_search: int
  reorder: int
  training_sample_size: int
  dimensions_per_block: int
  anisotropic_quantization_threshold: float


def scann_params(num_items: int, k: int, config: IndexConfig = IndexConfig()) -> ScannParams:
  """Sizes a ScaNN index for `num_items` items and top-`k` queries.

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


def _check_embeddings(embeddings: tf.Tensor, k: int) -> tf.Tensor:
  embeddings = tf.convert_to_tensor(embeddings, tf.float32)
  if embeddings.shape.rank != 2:
    raise ValueError(f"Item embeddings must be [num_items, dim], got shape {embeddings.shape}.")
  num_items = embeddings.shape[0]
  if not 1 <= k <= num_items:
    raise ValueError(f"k={k} must be between 1 and the catalog size {num_items}.")
  return embeddings


def _pad_columns(scores: tf.Tensor, indices: tf.Tensor, k) -> Tuple[tf.Tensor, tf.Tensor]:
  """Pads `[n, <=k]` results to `[n, k]` with score -inf and index -1."""
  missing = k - tf.shape(indices)[1]
  scores = tf.pad(scores, [[0, 0], [0, missing]], constant_values=-math.inf)
  indices = tf.pad(indices, [[0, 0], [0, missing]], constant_values=-1)
  return scores, indices


class BruteForceIndex(tf.Module):
  """Exact top-k by one matmul against the whole catalog."""

  kind = BRUTE_FORCE

  def __init__(self, embeddings, k: int):
    """Args: embeddings `[num_items, dim]`; k: the largest k `search` will be asked for."""
    super().__init__(name="brute_force_index")
    embeddings = _check_embeddings(embeddings, k)
    self.num_items, self.dim = embeddings.shape
    self.embeddings = tf.Variable(embeddings, trainable=False, name="embeddings")

  def config(self) -> dict:
    return {"kind": self.kind}

  def search(self, queries: tf.Tensor, k) -> Tuple[tf.Tensor, tf.Tensor]:
    """Args: queries `[n, dim]`; k: int or int32 scalar tensor, at most num_items.

    Returns: scores `[n, k]` (descending) and int32 indices `[n, k]`.
    """
    scores = tf.matmul(queries, self.embeddings, transpose_b=True)
    return tf.math.top_k(scores, k=k)


class ScannIndex(tf.Module):
  """ScaNN tree + asymmetric hashing + exact reordering, as TF ops (saveable).

  A SavedModel holding it must be saved with
  `tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])` and loaded by a
  process that imported `scann.scann_ops.py.scann_ops` (which registers the ops).
  """

  kind = SCANN

  def __init__(self, embeddings, k: int, params: ScannParams):
    """Trains the index.

    Args:
      embeddings: `[num_items, dim]` float32.
      k: the default number of neighbors.
      params: from `scann_params`.
    """
    super().__init__(name="scann_index")
    from scann.scann_ops.py import scann_ops  # pylint: disable=g-import-not-at-top

    embeddings = _check_embeddings(embeddings, k)
    self.num_items, self.dim = embeddings.shape
    self.params = params
    builder = scann_ops.builder(embeddings, k, "dot_product").tree(
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
    # reordering) become variables of this module so that the index is saved.
    self.state = builder.build().serialize_to_module()

  def config(self) -> dict:
    return {"kind": self.kind, **dataclasses.asdict(self.params)}

  def search(self, queries: tf.Tensor, k) -> Tuple[tf.Tensor, tf.Tensor]:
    """Args: queries `[n, dim]`; k: int or int32 scalar tensor, at most num_items.

    Returns: scores `[n, k]` (descending) and int32 indices `[n, k]`. Scores are exact
    dot products (reordered in float32). A query whose searched leaves hold fewer
    than k items gets -inf / -1 in the missing columns.
    """
    from scann.scann_ops.py import scann_ops  # pylint: disable=g-import-not-at-top

    # Inside a tf.function the handle is created once and cached by the op kernel.
    searcher = scann_ops.searcher_from_module(self.state)
    result = searcher.search_batched_parallel(
        queries, final_num_neighbors=k,
        pre_reorder_num_neighbors=tf.maximum(self.params.reorder, k))
    return _pad_columns(result.distances, result.indices, k)


Index = Union[BruteForceIndex, ScannIndex]


def build_index(embeddings, k: int, config: IndexConfig = IndexConfig()) -> Index:
  """Builds the index `config` asks for (see `IndexConfig.kind`)."""
  num_items = int(tf.convert_to_tensor(embeddings).shape[0])
  kind = config.kind
  if kind == AUTO:
    kind = BRUTE_FORCE if num_items <= config.brute_force_max_items else SCANN
  if kind == BRUTE_FORCE:
    return BruteForceIndex(embeddings, k)
  return ScannIndex(embeddings, k, scann_params(num_items, k, config))


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
