"""Tests of the full-catalog evaluator on rankings small enough to check by hand."""

import json
import math
import os

import numpy as np
import pytest

from common import names as base
from common.names import EVAL_EXCLUDE, EVAL_TARGETS
from input_pipeline import schema
from trainer import evaluation

import tensorflow as tf  # after our packages: they select Keras 2

# Six items on a line: with the user vector [[1]] item i scores 6 - i, so the full
# ranking is 0, 1, 2, 3, 4, 5 and item i has exactly i items before it.
LINE_ITEMS = np.array([[6.0], [5.0], [4.0], [3.0], [2.0], [1.0]], np.float32)
NUM_LINE_ITEMS = 6
PAD = schema.pad_id(NUM_LINE_ITEMS)


def ranks_of(user_vectors, items, targets, masked, chunk=1024, bias=None, mask_targets=False):
  # Traced as in `evaluate` (the chunk loop becomes a tf.while_loop).
  ranks, valid = tf.function(evaluation.target_ranks)(
      tf.constant(user_vectors, tf.float32), tf.constant(items, tf.float32),
      tf.constant(targets, tf.int64), tf.constant(masked, tf.int64), chunk,
      None if bias is None else tf.constant(bias, tf.float32), mask_targets)
  return ranks.numpy(), valid.numpy()


def sums_to_dict(sums, ks):
  return {evaluation.metric_name(m, k): sums[i, j]
          for i, k in enumerate(ks) for j, m in enumerate(evaluation.METRICS)}


def line_dataset(targets, exclude, batch_size=2):
  """Eval batches over the six line items; every user has the same vector [[1]]."""
  n = len(targets)
  history = np.full([n, 3], PAD, np.int64)
  features = {
      base.HISTORY: history,
      base.HISTORY_LENGTH: np.zeros([n], np.int64),
      base.HISTORY_TIMESTAMPS: np.zeros([n, 3], np.int64),
      EVAL_TARGETS: np.asarray(targets, np.int64),
      EVAL_EXCLUDE: np.asarray(exclude, np.int64),
  }
  return tf.data.Dataset.from_tensor_slices(features).batch(batch_size)


def ones_user(features):
  return tf.ones([tf.shape(features[base.HISTORY])[0], 1, 1])


def test_single_target_metrics_by_hand():
  # Target item 2 has items 0 and 1 before it: rank 2 (0-based), position 3.
  ranks, valid = ranks_of([[[1.0]]], LINE_ITEMS, [[2]], [[PAD]])
  assert ranks.tolist() == [[2]] and valid.tolist() == [[True]]
  ks = (1, 2, 3, 5)
  m = sums_to_dict(evaluation.metric_sums(ranks, valid, ks).numpy(), ks)
  # Miss at k = 1, 2; hit at k = 3, 5.
  assert [m[f"hr@{k}"] for k in ks] == [0, 0, 1, 1]
  # NDCG@3 = (1 / log2(2 + 2)) / (1 / log2(0 + 2)) = 0.5; the same at k = 5.
  assert m["ndcg@3"] == pytest.approx(0.5) and m["ndcg@5"] == pytest.approx(0.5)
  # MRR@3 = 1 / (2 + 1).
  assert m["mrr@3"] == pytest.approx(1 / 3) and m["mrr@2"] == 0
  # One target: Recall = hits / 1; Precision@5 = 1 / 5; F1@5 = 2 * 0.2 * 1 / 1.2 = 1/3.
  assert m["recall@3"] == 1 and m["precision@5"] == pytest.approx(0.2)
  assert m["f1@5"] == pytest.approx(2 * 0.2 * 1.0 / 1.2)


def test_multi_target_metrics_by_hand():
  # Targets {1, 4}: ranks 1 and 4.
  ranks, valid = ranks_of([[[1.0]]], LINE_ITEMS, [[4, 1]], [[PAD]])
  assert ranks.tolist() == [[4, 1]]
  ks = (1, 2, 5)
  m = sums_to_dict(evaluation.metric_sums(ranks, valid, ks).numpy(), ks)
  d = lambda r: 1 / math.log2(r + 2)  # discount of 0-based rank r
  # k = 1: no hit (best rank 1).
  assert m["hr@1"] == 0 and m["ndcg@1"] == 0 and m["mrr@1"] == 0
  # k = 2: item 1 hits. Recall 1/2, Precision 1/2, F1 = 2 * 1 / (2 + 2) = 0.5,
  # NDCG = d(1) / (d(0) + d(1)), MRR = 1/2.
  assert m["hr@2"] == 1 and m["recall@2"] == 0.5 and m["precision@2"] == 0.5
  assert m["f1@2"] == pytest.approx(0.5)
  assert m["ndcg@2"] == pytest.approx(d(1) / (d(0) + d(1)))
  assert m["mrr@2"] == 0.5
  # k = 5: both hit. Recall 1, Precision 2/5, F1 = 2 * 2 / (2 + 5),
  # NDCG = (d(1) + d(4)) / (d(0) + d(1)) = (0.630930 + 0.386853) / 1.630930 = 0.624051.
  assert m["recall@5"] == 1 and m["precision@5"] == pytest.approx(0.4)
  assert m["f1@5"] == pytest.approx(4 / 7)
  assert m["ndcg@5"] == pytest.approx((d(1) + d(4)) / (d(0) + d(1)))
  assert m["ndcg@5"] == pytest.approx(0.624051, abs=1e-6)


def test_duplicate_and_padding_targets_count_once():
  # Targets [1, 1, pad]: one relevant item at rank 1.
  ranks, valid = ranks_of([[[1.0]]], LINE_ITEMS, [[1, 1, PAD]], [[PAD]])
  assert valid.tolist() == [[True, False, False]] and ranks[0, 0] == 1
  m = sums_to_dict(evaluation.metric_sums(ranks, valid, (2,)).numpy(), (2,))
  assert m["recall@2"] == 1.0  # 1 hit / 1 distinct target, not 1 / 2


def test_history_masking_removes_items_and_a_reconsumed_target_unless_kept():
  # History {0, 1, 2}, target 2 (re-consumed): masking removes 0 and 1 from the
  # ranking; with mask_targets (the "all" rule) the target itself is a miss (rank =
  # num_items), otherwise it stays rankable, at rank 0.
  ranks, valid = ranks_of([[[1.0]]], LINE_ITEMS, [[2]], [[0, 1, 2, PAD]], mask_targets=True)
  assert ranks.tolist() == [[NUM_LINE_ITEMS]] and valid.tolist() == [[True]]
  ranks, _ = ranks_of([[[1.0]]], LINE_ITEMS, [[2]], [[0, 1, 2, PAD]])
  assert ranks.tolist() == [[0]]
  # Without masking it keeps rank 2.
  ranks, _ = ranks_of([[[1.0]]], LINE_ITEMS, [[2]], [[PAD]])
  assert ranks.tolist() == [[2]]
  # The OOV id and padding in the history are ignored.
  ranks, _ = ranks_of([[[1.0]]], LINE_ITEMS, [[3]], [[NUM_LINE_ITEMS, PAD, 1]])
  assert ranks.tolist() == [[2]]


def test_item_bias_adds_to_every_score():
  # Bias 0, 0, 0, 0, 2.5, 0: item 4 scores 2 + 2.5 = 4.5, above items 2 (4) and 3 (3)
  # but below 0 (6) and 1 (5). Target 3 now has 0, 1, 2 and 4 before it.
  bias = [0.0, 0.0, 0.0, 0.0, 2.5, 0.0]
  ranks, _ = ranks_of([[[1.0]], [[1.0]]], LINE_ITEMS, [[4], [3]], [[PAD], [PAD]], bias=bias)
  assert ranks.tolist() == [[2], [4]]


def test_ties_are_pessimistic():
  # Scores 3, 2, 2, 1: target 2 ties with item 1, which is placed before it (rank 2,
  # not 1); target 1 likewise has items 0 and 2 before it.
  items = [[3.0], [2.0], [2.0], [1.0]]
  ranks, _ = ranks_of([[[1.0]], [[1.0]]], items, [[2], [1]], [[6], [6]])
  assert ranks.tolist() == [[2], [2]]
  # Two targets with equal scores each count the other: ranks 2 and 2.
  ranks, _ = ranks_of([[[1.0]]], items, [[1, 2]], [[6]])
  assert ranks.tolist() == [[2, 2]]
  # A constant model ranks every target last: 0 at every k below the catalog size.
  ranks, _ = ranks_of([[[0.0]]], items, [[0]], [[6]])
  assert ranks.tolist() == [[3]]


def test_non_finite_score_is_a_miss():
  ranks, valid = ranks_of([[[np.nan]]], LINE_ITEMS, [[0]], [[PAD]])
  assert valid.tolist() == [[True]] and ranks.tolist() == [[NUM_LINE_ITEMS]]


def test_multi_vector_score_is_max_and_duplicates_count_once():
  # Interests u1 = [1, 0], u2 = [0, 1]. Items a = [1, 1], b = [.9, 0], c = [0, .8],
  # d = [.5, .5]. Per-interest lists: u1: a 1, b .9, d .5, c 0; u2: a 1, c .8, d .5,
  # b 0. Merged by score and de-duplicated: a, b, c, d (a appears in both lists once),
  # so d has rank 3, and c rank 2.
  items = [[1.0, 1.0], [0.9, 0.0], [0.0, 0.8], [0.5, 0.5]]
  ranks, _ = ranks_of([[[1.0, 0.0], [0.0, 1.0]]], items, [[3, 2]], [[9]])
  assert ranks.tolist() == [[3, 2]]


def merged_top_list(user_vectors, items, k):
  """Reference: merge per-interest sorted lists by score, keep first occurrences."""
  entries = []
  for u in user_vectors:
    scores = items @ u
    entries += [(-scores[i], i) for i in np.argsort(-scores, kind="stable")[:k]]
  merged = []
  for _, i in sorted(entries):
    if i not in merged:
      merged.append(i)
  return merged[:k]


def test_ranks_agree_with_merged_per_interest_top_lists():
  rng = np.random.default_rng(0)
  items = rng.normal(size=[200, 8]).astype(np.float32)
  users = rng.normal(size=[5, 3, 8]).astype(np.float32)
  targets = rng.integers(0, 200, size=[5, 4])
  k = 50
  ranks, valid = ranks_of(users, items, targets, np.full([5, 1], 201))
  for b in range(5):
    top = merged_top_list(users[b].astype(np.float64), items.astype(np.float64), k)
    for t in range(4):
      if valid[b, t]:
        # The merged list holds the other targets too; rank counts them.
        expected = top.index(targets[b, t]) if targets[b, t] in top else None
        assert (ranks[b, t] < k) == (expected is not None)
        if expected is not None:
          assert ranks[b, t] == expected


@pytest.mark.parametrize("num_targets", [1, 5])  # 1: leave-one-out's fast path
def test_chunked_equals_unchunked_and_numpy(num_targets):
  rng = np.random.default_rng(num_targets)
  num_items = 1000
  items = rng.normal(size=[num_items, 8]).astype(np.float32)
  users = rng.normal(size=[16, 3, 8]).astype(np.float32)
  targets = rng.integers(0, num_items + 2, size=[16, num_targets])  # includes OOV/pad ids
  targets[targets == num_items] = num_items + 1
  masked = rng.integers(0, num_items + 2, size=[16, 30])
  whole, valid = ranks_of(users, items, targets, masked, chunk=num_items)
  for chunk in (1, 7, 128, 999):  # 1: every item its own chunk
    ranks, _ = ranks_of(users, items, targets, masked, chunk=chunk)
    np.testing.assert_array_equal(ranks, whole)
  # And against numpy: items ranked before t = unmasked, non-target items with a
  # score >= t's, plus the other targets scoring >= t's.
  scores = np.einsum("bkd,nd->bkn", users.astype(np.float64), items).max(axis=1)
  assert valid.sum() > 10
  for b in range(16):
    rankable = np.ones(num_items, bool)
    rankable[[i for i in set(masked[b]) | set(targets[b]) if i < num_items]] = False
    for t in range(num_targets):
      if valid[b, t]:
        s = scores[b, targets[b, t]]
        others = int((rankable & (scores[b] >= s)).sum())
        tied = sum(1 for u in set(targets[b][valid[b]]) - {targets[b, t]} if scores[b, u] >= s)
        assert whole[b, t] == others + tied


def test_million_item_catalog_in_chunks():
  num_items = 1_000_000
  rng = np.random.default_rng(2)
  items = rng.normal(size=[num_items, 4]).astype(np.float32)
  users = rng.normal(size=[2, 2, 4]).astype(np.float32)
  targets = np.array([[5], [999_999]])
  ranks, _ = ranks_of(users, items, targets, np.full([2, 1], num_items + 1), chunk=1 << 17)
  scores = np.einsum("bkd,nd->bkn", users, items).max(axis=1)
  for b in range(2):
    # Float32 in both; a different summation order may flip exact near-ties only.
    expected = int((scores[b] >= scores[b, targets[b, 0]]).sum()) - 1
    assert abs(ranks[b, 0] - expected) <= 1


def test_evaluate_end_to_end_and_write_metrics(tmp_path):
  # User 1: target 2, history {0} masked -> rank 1. User 2: target 5 -> rank 5.
  # User 3: only padding targets -> skipped. User 4: targets {0, 3} -> ranks 0, 3.
  targets = [[2, PAD], [5, PAD], [PAD, PAD], [0, 3]]
  exclude = [[0, PAD], [PAD, PAD], [PAD, PAD], [PAD, PAD]]
  seen_keys = []

  def user_fn(features):
    seen_keys.append(sorted(features))
    return ones_user(features)

  result = evaluation.evaluate(
      user_vectors_fn=user_fn, item_embeddings=np.concatenate([LINE_ITEMS, [[9.0], [9.0]]]),
      dataset=line_dataset(targets, exclude), num_items=NUM_LINE_ITEMS,
      protocol=schema.LEAVE_LAST_ONE_OUT, ks=(1, 2), mask_history="all", item_chunk_size=4)
  # The OOV and padding rows score 9 but are never ranked; the model never sees answers.
  assert all(EVAL_TARGETS not in keys and EVAL_EXCLUDE not in keys for keys in seen_keys)
  assert result.num_users == 3 and result.num_targets == 4
  assert result.num_users_without_targets == 1
  # HR@2: users 1 and 4 -> 2/3. Recall@2: (1 + 0 + 1/2) / 3 = 0.5.
  # MRR@2: (1/2 + 0 + 1) / 3 = 0.5. NDCG@2 user 1: d(1)/d(0) = 0.63093; user 4:
  # d(0) / (d(0) + d(1)) = 0.61315; mean (0.63093 + 0.61315) / 3.
  assert result.metrics["hr@2"] == pytest.approx(2 / 3)
  assert result.metrics["recall@2"] == pytest.approx(0.5)
  assert result.metrics["mrr@2"] == pytest.approx(0.5)
  d1 = 1 / math.log2(3)
  assert result.metrics["ndcg@2"] == pytest.approx((d1 + 1 / (1 + d1)) / 3)
  # Without masking user 1's target falls to rank 2: HR@2 = 1/3.
  unmasked = evaluation.evaluate(
      user_vectors_fn=ones_user, item_embeddings=LINE_ITEMS,
      dataset=line_dataset(targets, exclude), num_items=NUM_LINE_ITEMS,
      protocol=schema.LEAVE_LAST_ONE_OUT, ks=(2,), mask_history="none")
  assert unmasked.metrics["hr@2"] == pytest.approx(1 / 3)
  assert unmasked.to_json()["mask_history"] == "none"

  path = os.path.join(tmp_path, "run", "metrics.json")
  evaluation.write_metrics(result, path, extra={"split": "test"})
  with open(path) as f:
    record = json.load(f)
  assert record["protocol"] == schema.LEAVE_LAST_ONE_OUT and record["ks"] == [1, 2]
  assert record["num_users"] == 3 and record["tie_rule"] == "pessimistic"
  assert record["split"] == "test" and record["metrics"]["hr@2"] == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match="overwrite"):
    evaluation.write_metrics(result, path, extra={"metrics": {}})


def test_reconsumed_target_counts_as_a_miss_by_default():
  # User 1's target 1 is also in its history: a miss under "all" (the S3-Rec and
  # RecBole rule), rank 0 under "keep_targets" (item 0 is masked), rank 1 under "none".
  targets, exclude = [[1], [3]], [[0, 1], [PAD, PAD]]
  hr = {mode: evaluation.evaluate(
      user_vectors_fn=ones_user, item_embeddings=LINE_ITEMS,
      dataset=line_dataset(targets, exclude), num_items=NUM_LINE_ITEMS,
      protocol=schema.LEAVE_LAST_ONE_OUT, ks=(1, 2), mask_history=mode).metrics
      for mode in evaluation.MASK_HISTORY_MODES}
  # User 2's target 3 has rank 3: never a hit at k <= 2.
  assert hr["all"]["hr@2"] == 0.0
  assert hr["keep_targets"]["hr@1"] == pytest.approx(0.5)
  assert hr["none"]["hr@1"] == 0.0 and hr["none"]["hr@2"] == pytest.approx(0.5)
  with pytest.raises(ValueError, match="Unknown mask_history"):
    evaluation.Evaluator(user_vectors_fn=ones_user, num_items=6, protocol=schema.TEMPORAL,
                         mask_history="yes")


def test_evaluator_traces_once_for_every_evaluation():
  evaluator = evaluation.Evaluator(user_vectors_fn=ones_user, num_items=NUM_LINE_ITEMS,
                                   protocol=schema.LEAVE_LAST_ONE_OUT, ks=(1,))
  # Different widths of targets and exclusions, and new item vectors each time.
  first = evaluator(line_dataset([[1]], [[0]]), LINE_ITEMS)
  second = evaluator(line_dataset([[2, 3], [4, PAD]], [[0, 1, 5], [PAD, PAD, PAD]]),
                     LINE_ITEMS[::-1].copy())
  assert first.metrics["hr@1"] == 1.0  # item 0 masked: item 1 ranks first
  assert evaluator._step.experimental_get_tracing_count() == 1


def test_evaluate_rejects_out_of_catalog_targets():
  # The OOV id as a target would silently shrink |T|; it is an input error.
  with pytest.raises(tf.errors.InvalidArgumentError, match="eval_targets"):
    evaluation.evaluate(
        user_vectors_fn=ones_user, item_embeddings=LINE_ITEMS,
        dataset=line_dataset([[NUM_LINE_ITEMS]], [[PAD]]), num_items=NUM_LINE_ITEMS,
        protocol=schema.TEMPORAL, ks=(1,))
  with pytest.raises(ValueError, match="protocol"):
    evaluation.evaluate(user_vectors_fn=ones_user, item_embeddings=LINE_ITEMS,
                        dataset=line_dataset([[1]], [[PAD]]), num_items=NUM_LINE_ITEMS,
                        protocol="random", ks=(1,))


def test_sharded_table_is_concatenated():
  shards = [tf.Variable(LINE_ITEMS[:4]), tf.Variable(np.concatenate([LINE_ITEMS[4:], [[0.0]]]))]
  rows = evaluation.item_rows(shards, NUM_LINE_ITEMS)
  np.testing.assert_array_equal(rows.numpy(), LINE_ITEMS)


def test_popularity_baseline_through_the_same_metrics(tmp_path):
  # Training counts 5, 3, 3, 1: item 2 ties with item 1 (pessimistic: rank 2).
  schema.write_tsv(os.path.join(tmp_path, schema.VOCAB_FILE), ["index", "item_id", "count"],
                   [[0, "a", 5], [1, "b", 3], [2, "c", 3], [3, "d", 1]])
  counts = evaluation.read_item_counts(str(tmp_path))
  np.testing.assert_array_equal(counts, [5, 3, 3, 1])
  user_fn, table = evaluation.popularity_scorer(counts)
  pad = schema.pad_id(4)
  features = {
      base.HISTORY: np.full([3, 2], pad), base.HISTORY_LENGTH: np.zeros([3], np.int64),
      base.HISTORY_TIMESTAMPS: np.zeros([3, 2], np.int64),
      # Targets: 0 (rank 0), 2 (rank 2), 3 with item 0 masked (rank 2).
      EVAL_TARGETS: np.array([[0], [2], [3]]), EVAL_EXCLUDE: np.array([[pad], [pad], [0]]),
  }
  result = evaluation.evaluate(
      user_vectors_fn=user_fn, item_embeddings=table,
      dataset=tf.data.Dataset.from_tensor_slices(features).batch(3), num_items=4,
      protocol=schema.LEAVE_LAST_ONE_OUT, ks=(1, 3))
  # HR@1 = 1/3 (user 1), HR@3 = 1; NDCG@3 = (1 + 0.5 + 0.5) / 3.
  assert result.metrics["hr@1"] == pytest.approx(1 / 3)
  assert result.metrics["hr@3"] == pytest.approx(1.0)
  assert result.metrics["ndcg@3"] == pytest.approx(2 / 3)


def test_popularity_reproduces_published_poprec_row(shared_data, tmp_path):
  # The S3-Rec paper's PopRec row for LastFM (../shared/BENCHMARKS.md: HR@10 0.0440,
  # HR@20 0.0615, leave-last-one-out, full ranking, history masked) is reproduced when
  # popularity counts every interaction of the file (test targets included, as that
  # table did). The counts here come straight from LastFM.txt, independently of the
  # input pipeline; the ranking goes through the evaluator and the input pipeline.
  from input_pipeline import data_spec
  from input_pipeline import dataset as dataset_lib
  from input_pipeline import prepare
  from input_pipeline import samples

  source = os.path.join(shared_data, "lastfm_hetrec_s3rec")
  data_dir = os.path.join(tmp_path, "lastfm")
  prepare.prepare_dataset(prepare.PrepareConfig(output_dir=data_dir,
                                                dataset="lastfm_hetrec_s3rec", input_path=source))
  index = {raw: i for i, raw in enumerate(schema.read_vocab(data_dir))}
  counts = np.zeros(len(index), np.float32)
  with open(os.path.join(source, "LastFM.txt")) as f:
    for line in f:
      for raw in line.split()[1:]:
        counts[index[raw]] += 1
  user_fn, table = evaluation.popularity_scorer(counts)
  spec = samples.SampleSpec(features=(samples.History(50),), training=samples.AllPrefixes())
  test = dataset_lib.make_dataset(dataset_lib.eval_config(data_dir, "test", batch_size=512), spec,
                                  data_spec.read(data_dir))
  result = evaluation.evaluate(
      user_vectors_fn=user_fn, item_embeddings=table, dataset=test,
      num_items=len(index), protocol=schema.LEAVE_LAST_ONE_OUT, ks=(10, 20))
  assert result.num_users == 1090
  assert round(result.metrics["hr@10"], 4) == 0.0440
  assert round(result.metrics["hr@20"], 4) == 0.0615


def test_evaluate_rejects_training_batches():
  train_like = tf.data.Dataset.from_tensors({base.HISTORY: [[1]], base.LABELS: [[2]]})
  with pytest.raises(ValueError, match="eval_targets"):
    evaluation.evaluate(user_vectors_fn=ones_user, item_embeddings=LINE_ITEMS, dataset=train_like,
                        num_items=NUM_LINE_ITEMS, protocol=schema.LEAVE_LAST_ONE_OUT)


def line_perplexity(targets, exclude, chunk, mask_history="all", bias=None, **kwargs):
  return evaluation.evaluate(
      user_vectors_fn=ones_user, item_embeddings=LINE_ITEMS, item_bias=bias,
      dataset=line_dataset(targets, exclude), num_items=NUM_LINE_ITEMS,
      protocol=schema.LEAVE_LAST_ONE_OUT, ks=(1,), mask_history=mask_history,
      item_chunk_size=chunk, **kwargs).metrics


def test_perplexity_is_the_exponentiated_full_softmax_cross_entropy_per_target():
  # Scores 6, 5, ..., 1; log Z = log sum_s e^s. User 1: target 2 (score 4) with item 0
  # in its history; user 2: targets 5 (score 1) and 0 (score 6) plus padding.
  # Perplexity = exp(mean over the 3 targets of log Z - s_t): per target, padding and
  # users skipped, the history NOT masked (the model's whole distribution).
  log_z = math.log(sum(math.exp(s) for s in range(1, 7)))
  expected = math.exp(((log_z - 4) + (log_z - 1) + (log_z - 6)) / 3)
  targets, exclude = [[2, PAD], [5, 0]], [[0, PAD], [PAD, PAD]]
  for chunk in (1, 4, 1000):  # the normalizer adds up over chunks
    for mode in ("all", "none"):
      metrics = line_perplexity(targets, exclude, chunk, mode)
      assert metrics["perplexity"] == pytest.approx(expected, rel=1e-5)
  # A bias enters the softmax like the scores: bias 2 on item 5 makes its score 3.
  biased = line_perplexity([[5]], [[PAD]], 4, bias=np.array([0, 0, 0, 0, 0, 2.0], np.float32))[
      "perplexity"]
  log_z = math.log(sum(math.exp(s) for s in (6, 5, 4, 3, 2, 3)))
  assert biased == pytest.approx(math.exp(log_z - 3), rel=1e-5)


def test_a_uniform_model_has_the_catalog_size_as_perplexity_and_it_can_be_switched_off():
  uniform = evaluation.evaluate(
      user_vectors_fn=ones_user, item_embeddings=np.ones([NUM_LINE_ITEMS, 1], np.float32),
      dataset=line_dataset([[3], [1]], [[PAD], [PAD]]), num_items=NUM_LINE_ITEMS,
      protocol=schema.LEAVE_LAST_ONE_OUT, ks=(1,))
  assert uniform.metrics["perplexity"] == pytest.approx(NUM_LINE_ITEMS, rel=1e-6)
  assert "perplexity" in evaluation.format_metrics(uniform)
  off = line_perplexity([[3]], [[PAD]], 4, perplexity=False)
  assert "perplexity" not in off and off["hr@1"] == 0.0
