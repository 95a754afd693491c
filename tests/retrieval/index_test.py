"""Tests of the indexes, their sizing and the per-interest merge."""

import math

import numpy as np
import pytest

from retrieval import index as index_lib
import tensorflow as tf  # pylint: disable=g-bad-import-order


def test_scann_params_sized_from_catalog():
  # 100k items, k = 100: round(sqrt(1e5)) = 316 leaves of 316.5 items; 2.5% of them is
  # 8 leaves, but scoring 100 k = 10,000 items takes ceil(10000 / 316.5) = 32 leaves.
  params = index_lib.scann_params(100_000, k=100)
  assert (params.num_leaves, params.num_leaves_to_search) == (316, 32)
  # Reorder max(4k, 100) = 400; the tree trains on min(N, 100k) vectors.
  assert (params.reorder, params.training_sample_size) == (400, 100_000)
  # 1M items, k = 10: 1000 leaves; 2.5% = 25 leaves beats 1,000 items / 1,000 per leaf.
  params = index_lib.scann_params(1_000_000, k=10)
  assert (params.num_leaves, params.num_leaves_to_search, params.reorder) == (1000, 25, 100)
  # 1,000 items: round(sqrt) = 32 leaves (1000 // 20 = 50 would allow more); scoring
  # 100 k = 1,000 items means searching all 32.
  params = index_lib.scann_params(1_000, k=10)
  assert (params.num_leaves, params.num_leaves_to_search) == (32, 32)
  # 100 items: min(10, 100 // 20 = 5) = 5 leaves of >= 20 items, all searched.
  params = index_lib.scann_params(100, k=10)
  assert (params.num_leaves, params.num_leaves_to_search) == (5, 5)


def test_scann_params_overrides_and_errors():
  config = index_lib.IndexConfig(num_leaves=10, num_leaves_to_search=3, reorder=50)
  params = index_lib.scann_params(1_000, k=100, config=config)
  # Reordering fewer candidates than k would drop results: raised to k.
  assert (params.num_leaves, params.num_leaves_to_search, params.reorder) == (10, 3, 100)
  with pytest.raises(ValueError, match="num_leaves=500 exceeds the 100 items"):
    index_lib.scann_params(100, k=10, config=index_lib.IndexConfig(num_leaves=500))
  with pytest.raises(ValueError, match="Unknown index kind 'faiss'"):
    index_lib.IndexConfig(kind="faiss")


def test_merge_interests_keeps_best_score_of_each_item():
  # Interest 0 finds items 7, 2, 9 (scores 5, 3, 1); interest 1 finds 2, 4, 7 (4, 3, 2).
  # Best per item: 7 -> 5, 2 -> max(3, 4) = 4, 4 -> 3, 9 -> 1. Top 3: 7, 2, 4.
  scores = tf.constant([[[5., 3., 1.], [4., 3., 2.]]])
  indices = tf.constant([[[7, 2, 9], [2, 4, 7]]])
  top_scores, top_indices = index_lib.merge_interests(scores, indices, k=3)
  np.testing.assert_array_equal(top_indices.numpy(), [[7, 2, 4]])
  np.testing.assert_array_equal(top_scores.numpy(), [[5., 4., 3.]])


def test_merge_interests_identical_interests_and_missing_results():
  # Two identical lists merge into one; -1 / -inf (no result) never shows up while
  # real items remain, and pads the list when fewer than k distinct items exist.
  scores = tf.constant([[[3., 2., -math.inf], [3., 2., -math.inf]]])
  indices = tf.constant([[[1, 0, -1], [1, 0, -1]]])
  top_scores, top_indices = index_lib.merge_interests(scores, indices, k=3)
  np.testing.assert_array_equal(top_indices.numpy(), [[1, 0, -1]])
  np.testing.assert_array_equal(top_scores.numpy(), [[3., 2., -math.inf]])


def test_brute_force_index_matches_numpy():
  rng = np.random.default_rng(0)
  items = rng.standard_normal((50, 4)).astype(np.float32)
  queries = rng.standard_normal((3, 4)).astype(np.float32)
  index = index_lib.build_index(items, k=5)  # 50 items: auto -> brute force
  assert index.kind == index_lib.BRUTE_FORCE and index.is_exact()
  scores, indices = index(tf.constant(queries), k=5)
  exact = queries @ items.T
  np.testing.assert_array_equal(indices.numpy(), np.argsort(-exact, axis=1)[:, :5])
  np.testing.assert_allclose(scores.numpy(), -np.sort(-exact, axis=1)[:, :5], rtol=1e-5)


def test_scann_index_recall_on_clustered_catalog():
  # 20k items in 200 clusters, as learned embeddings cluster by topic; queries near items.
  rng = np.random.default_rng(1)
  centres = rng.standard_normal((200, 16)).astype(np.float32)
  items = centres[rng.integers(200, size=20_000)] + 0.5 * rng.standard_normal((20_000, 16))
  items = items.astype(np.float32)
  queries = (items[rng.integers(20_000, size=50)] + 0.5 * rng.standard_normal((50, 16)))
  queries = queries.astype(np.float32)
  index = index_lib.build_index(items, k=10, config=index_lib.IndexConfig(kind=index_lib.SCANN))
  assert index.kind == index_lib.SCANN
  scores, indices = index(tf.constant(queries), k=10)
  exact = queries @ items.T
  exact_top = np.argsort(-exact, axis=1)[:, :10]
  recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(indices.numpy(), exact_top)])
  assert recall >= 0.9, recall
  # Reordering makes ScaNN's scores exact dot products of the items it returns.
  np.testing.assert_allclose(scores.numpy(), np.take_along_axis(exact, indices.numpy(), axis=1),
                             rtol=1e-4, atol=1e-4)


def test_tuning_raises_the_effort_until_recall_reaches_the_target():
  # i.i.d. Gaussian items, 2 of 32 leaves searched: most of the exact top 10 lies in
  # other leaves, so the tuner must search more; all 32 leaves with all 1,000 items
  # reordered is exact, so the target is reachable.
  rng = np.random.default_rng(4)
  items = rng.standard_normal((1_000, 8)).astype(np.float32)
  queries = rng.standard_normal((200, 8)).astype(np.float32)
  config = index_lib.IndexConfig(kind=index_lib.SCANN, num_leaves=32)
  index = index_lib.build_index(items, k=10, config=config)
  start = index.params
  # 2.5% of 32 leaves is 1; scoring 100 k = 1,000 items of 31.25 per leaf takes all 32.
  assert start.num_leaves_to_search == 32
  index.set_effort(2, 100)
  low = index_lib.recall_per_query(index(tf.constant(queries), k=10)[1].numpy(),
                                   index_lib.exact_top_k(items, queries, 10)).mean()
  assert low < 0.8, low  # 2 of 32 leaves: most of the exact top 10 lies elsewhere
  tuning = index_lib.tune(index, items, queries, k=10, target_recall=0.95,
                          leaves_to_search=[2, 4, 8, 16, 32], reorders=[100, 1000])
  chosen = tuning.chosen
  assert tuning.met_target and chosen.recall_lower_bound >= 0.95 and chosen.qps > 0
  assert (index.params.num_leaves_to_search, index.params.reorder) == (
      chosen.num_leaves_to_search, chosen.reorder)
  assert chosen.num_leaves_to_search > 2
  # Trials run in order: for each number of leaves, reordering grows until the target
  # is met; after a success, only fewer reordered candidates are worth trying.
  tried = [(t.num_leaves_to_search, t.reorder) for t in tuning.trials]
  assert tried[:2] == [(2, 100), (2, 1000)]
  for trial in tuning.trials:
    assert 0 <= trial.recall_lower_bound <= trial.recall <= 1


def test_tuning_that_cannot_reach_the_target_keeps_the_best_and_says_so():
  rng = np.random.default_rng(5)
  items = rng.standard_normal((1_000, 8)).astype(np.float32)
  queries = rng.standard_normal((100, 8)).astype(np.float32)
  index = index_lib.build_index(items, k=10, config=index_lib.IndexConfig(
      kind=index_lib.SCANN, num_leaves=32))
  tuning = index_lib.tune(index, items, queries, k=10, target_recall=1.0,
                          leaves_to_search=[1, 2], reorders=[10])
  assert not tuning.met_target and len(tuning.trials) == 2
  best = max(tuning.trials, key=lambda t: t.recall)
  assert tuning.chosen.recall == best.recall and index.params.reorder == 10


def test_k_larger_than_catalog_and_tiny_scann_catalogs_are_rejected():
  with pytest.raises(ValueError, match="k=10 must be between 1 and the catalog size 3"):
    index_lib.BruteForceIndex(np.ones((3, 2), np.float32), k=10)
  # ScaNN itself would fail with "Number of clusters per block (16) is greater than
  # asymmetric hashing training data size (6)".
  with pytest.raises(ValueError, match="at least that many items; the catalog has 6. Use the "
                                       "brute-force index"):
    index_lib.build_index(np.ones((6, 2), np.float32), k=2,
                          config=index_lib.IndexConfig(kind=index_lib.SCANN))
