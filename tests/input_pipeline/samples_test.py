"""Sample building on hand-made timelines (expected arrays derived in the comments)."""

import numpy as np
import pytest

from common import names
from input_pipeline import samples
from input_pipeline import schema
from input_pipeline.data_spec import DataSpec
import tensorflow as tf

PAD = 99


def _parse(timelines):
  """timelines: (items, timestamps, target_start[, impressions, impression times]) per user."""
  serialized = []
  for u, (items, ts, start, *shown) in enumerate(timelines):
    impressions, impression_times = shown or ((), ())
    serialized.append(schema.encode_timeline(
        user_id=f"u{u}", items=items, timestamps=ts, target_start=start,
        impressions=impressions, impression_timestamps=impression_times,
        user_features=[u, u + 10][:u]))
  return schema.parse_timelines(tf.constant(serialized))


def _lists(features):
  return {key: value.to_list() if isinstance(value, tf.RaggedTensor) else value.numpy().tolist()
          for key, value in features.items()}


def _spec(training, max_length, *extra):
  return samples.SampleSpec(features=(samples.History(max_length), *extra), training=training)


def _build(training, timelines, max_length):
  spec = _spec(training, max_length)
  features = spec.training_batch(_parse(timelines), PAD)
  samples.check_specs(features, spec.specs(training=True))
  return _lists(features)


def _evaluate(timelines, max_length, *extra):
  spec = _spec(samples.AllPrefixes(), max_length, *extra)
  features = spec.evaluation_batch(_parse(timelines))
  samples.check_specs(features, spec.specs(evaluation=True))
  return _lists(features)


# Train timelines (target_start 0): u0 has 4 events, u1 2, u2 a single one.
TRAIN = [([10, 11, 12, 13], [100, 200, 300, 400], 0),
         ([20, 21], [5, 6], 0),
         ([30], [7], 0)]


def test_all_prefixes():
  # Positions i >= 1 of each timeline; history = the last 2 items before i.
  # u0: i=1 [10]->11, i=2 [10,11]->12, i=3 [11,12]->13 (10 falls out of the window);
  # u1: i=1 [20]->21; u2 has no position >= 1.
  out = _build(samples.AllPrefixes(), TRAIN, max_length=2)
  assert out[names.HISTORY] == [[10], [10, 11], [11, 12], [20]]
  assert out[names.HISTORY_TIMESTAMPS] == [[100], [100, 200], [200, 300], [5]]
  assert out[names.HISTORY_LENGTH] == [1, 2, 2, 1]
  assert out[names.LABELS] == [[11], [12], [13], [21]]


def test_all_prefixes_starts_at_target_start():
  # target_start 3: only position 3 is a target; its history is everything before it.
  out = _build(samples.AllPrefixes(), [([10, 11, 12, 13], [1, 2, 3, 4], 3)], max_length=50)
  assert out[names.HISTORY] == [[10, 11, 12]]
  assert out[names.LABELS] == [[13]]


def test_next_k():
  # k = 2 labels items[i:i+2], padded with PAD past the end; histories capped at 3.
  out = _build(samples.NextK(2), TRAIN, max_length=3)
  assert out[names.HISTORY] == [[10], [10, 11], [10, 11, 12], [20]]
  assert out[names.LABELS] == [[11, 12], [12, 13], [13, PAD], [21, PAD]]


def test_last_item():
  # One sample per timeline of length >= 2: the last item from the 2 before it.
  out = _build(samples.LastItem(), TRAIN, max_length=2)
  assert out[names.HISTORY] == [[11, 12], [20]]
  assert out[names.HISTORY_TIMESTAMPS] == [[200, 300], [5]]
  assert out[names.HISTORY_LENGTH] == [2, 1]
  assert out[names.LABELS] == [[13], [21]]


def test_evaluation():
  # u0: input [10, 11, 12] (history keeps the last 2), target [13].
  # u1: input [20], targets [21, 22].
  # u2 (target_start 0: no input) and u3 (target_start == length: no target) are skipped.
  timelines = [([10, 11, 12, 13], [1, 2, 3, 4], 3),
               ([20, 21, 22], [5, 6, 7], 1),
               ([30, 31], [8, 9], 0),
               ([40, 41], [8, 9], 2)]
  out = _evaluate(timelines, max_length=2)
  assert out[names.HISTORY] == [[11, 12], [20]]
  assert out[names.HISTORY_TIMESTAMPS] == [[2, 3], [5]]
  assert out[names.HISTORY_LENGTH] == [2, 1]
  assert out[names.EVAL_TARGETS] == [[13], [21, 22]]
  # The whole input, not just the max_length window, so masking removes all of it.
  assert out[names.EVAL_EXCLUDE] == [[10, 11, 12], [20]]
  assert names.LABELS not in out


def test_evaluation_history_never_sees_targets():
  # Random timelines of distinct items: every history item comes from before
  # target_start, so no target can appear in a history.
  rng = np.random.default_rng(0)
  timelines = []
  for _ in range(50):
    n = int(rng.integers(2, 30))
    items = rng.permutation(1000)[:n].tolist()
    timelines.append((items, list(range(n)), int(rng.integers(1, n))))
  out = _evaluate(timelines, max_length=8)
  assert len(out[names.HISTORY]) == 50
  for (items, _, start), history, targets, exclude in zip(
      timelines, out[names.HISTORY], out[names.EVAL_TARGETS], out[names.EVAL_EXCLUDE]):
    assert history == items[:start][-8:]
    assert targets == items[start:]
    assert exclude == items[:start]
    assert not set(history) & set(targets)


def test_all_positions_labels_every_target_once():
  # max_length 2. u0 [10..13]: targets 1..3 in chunks of 2, newest first:
  #   end 3: history [11, 12] -> labels [12, 13]; end 1: history [10] -> labels [11].
  # u1 [20, 21]: end 1: [20] -> [21]. u2 has no target.
  out = _build(samples.AllPositions(), TRAIN, max_length=2)
  assert out[names.HISTORY] == [[11, 12], [10], [20]]
  assert out[names.HISTORY_LENGTH] == [2, 1, 1]
  assert out[names.LABELS] == [[12, 13], [11], [21]]
  assert out[names.LABEL_WEIGHTS] == [[1.0, 1.0], [1.0], [1.0]]
  # With room for the whole timeline: one sample per user, labels shifted by one.
  out = _build(samples.AllPositions(), TRAIN, max_length=50)
  assert out[names.HISTORY] == [[10, 11, 12], [20]]
  assert out[names.LABELS] == [[11, 12, 13], [21]]


def test_all_positions_with_future_gives_each_windows_reversed_future():
  # The docstring's example: [10..14] with max_length 3 and future_length 2.
  timelines = [([10, 11, 12, 13, 14], [1, 2, 3, 4, 5], 0)]
  out = _build(samples.AllPositionsWithFuture(future_length=2), timelines, max_length=3)
  assert out[names.HISTORY] == [[11, 12, 13], [10]]
  assert out[names.LABELS] == [[12, 13, 14], [11]]
  assert out[names.FUTURE] == [[14, 13, 12], [12, 11]]
  assert out[names.FUTURE_LENGTH] == [3, 2]
  # Position p's future (FUTURE[FUTURE_LENGTH - 1 - p:] reversed back) starts with its label.
  for labels, future in zip(out[names.LABELS], out[names.FUTURE]):
    for p, label in enumerate(labels):
      assert future[len(future) - 1 - p] == label


def test_all_positions_keeps_inputs_before_target_start_out_of_the_labels():
  # target_start 3 of [10, 11, 12, 13, 14]: targets are positions 3 and 4 only; the
  # window [10, 11, 12, 13] predicts [11, 12, 13, 14] of which 11 and 12 are padding.
  out = _build(samples.AllPositions(), [([10, 11, 12, 13, 14], [1, 2, 3, 4, 5], 3)],
               max_length=50)
  assert out[names.HISTORY] == [[10, 11, 12, 13]]
  assert out[names.LABELS] == [[PAD, PAD, 13, 14]]
  assert out[names.LABEL_WEIGHTS] == [[0.0, 0.0, 1.0, 1.0]]


def test_all_positions_covers_every_prefix_exactly_once():
  rng = np.random.default_rng(5)
  timelines = [(list(range(100 * u, 100 * u + n)), list(range(n)), 0)
               for u, n in enumerate(rng.integers(1, 40, size=30))]
  for max_length in (1, 3, 7, 50):
    out = _build(samples.AllPositions(), timelines, max_length)
    pairs = sorted((h[i], label) for h, labels in zip(out[names.HISTORY], out[names.LABELS])
                   for i, label in enumerate(labels))
    # Every target position t >= 1 once, predicted from the item just before it.
    expected = sorted((items[t - 1], items[t]) for items, _, _ in timelines
                      for t in range(1, len(items)))
    assert pairs == expected
    assert max(len(h) for h in out[names.HISTORY]) <= max_length


def test_request_time_and_unclicked_see_only_the_past():
  # u0 clicks 10, 11, 12 at times 1, 5, 9 and was shown 50 (t=0), 51 (t=4), 52 (t=7),
  # 53 (t=9). Evaluating at target_start 2 (request time 9): unclicked = impressions
  # strictly before 9, latest first, at most 2: [52, 51].
  timelines = [([10, 11, 12], [1, 5, 9], 2, [50, 51, 52, 53], [0, 4, 7, 9])]
  out = _evaluate(timelines, 5, samples.RequestTime(), samples.Unclicked(max_items=2))
  assert out[names.REQUEST_TIME] == [9]
  assert out[names.UNCLICKED] == [[52, 51]]
  assert out[names.UNCLICKED_LENGTH] == [2]
  # Training on every prefix: at target 11 (time 5) only 50 and 51 were shown.
  spec = _spec(samples.AllPrefixes(), 5, samples.RequestTime(), samples.Unclicked(max_items=5))
  out = _lists(spec.training_batch(_parse([timelines[0][:1] + ([1, 5, 9], 0) +
                                           timelines[0][3:]]), PAD))
  assert out[names.REQUEST_TIME] == [5, 9]
  assert out[names.UNCLICKED] == [[51, 50], [52, 51, 50]]


def test_user_features_follow_their_user():
  # _parse gives user u the features [u, u + 10][:u]: u0 none, u1 [1].
  timelines = [([10, 11], [1, 2], 1), ([20, 21, 22], [1, 2, 3], 2)]
  out = _evaluate(timelines, 5, samples.UserFeatures())
  assert out[names.USER_FEATURES] == [[], [1]]


def test_spec_needs_one_history_and_unique_features():
  with pytest.raises(ValueError, match="exactly one History"):
    samples.SampleSpec(features=(samples.RequestTime(),), training=samples.AllPrefixes())
  with pytest.raises(ValueError, match="emitted twice"):
    _spec(samples.AllPrefixes(), 5, samples.RequestTime(), samples.RequestTime())


def test_padding_follows_each_declaration():
  spec = _spec(samples.AllPositions(), 5, samples.UserFeatures())
  data = DataSpec.for_catalog(PAD - 1, user_feature_names=("age=1", "age=2"))
  padded = spec.dummy_batch(data)
  # One timeline [0, 0]: history [0] -> label [0]; no user features.
  assert padded[names.HISTORY].numpy().tolist() == [[0]]
  assert padded[names.USER_FEATURES].shape == (1, 0)
  ragged = {names.HISTORY: tf.ragged.constant([[1], [2, 3]], tf.int64),
            names.LABEL_WEIGHTS: tf.ragged.constant([[1.0], [1.0, 1.0]])}
  ragged[names.USER_FEATURES] = tf.ragged.constant([[0], []], tf.int64)
  out = samples.pad(ragged, spec.paddings(data, training=True))
  assert out[names.HISTORY].numpy().tolist() == [[1, PAD], [2, 3]]
  assert out[names.LABEL_WEIGHTS].numpy().tolist() == [[1.0, 0.0], [1.0, 1.0]]
  # User feature 0 is real; padding is one past the last feature (2 features -> 2).
  assert out[names.USER_FEATURES].numpy().tolist() == [[0], [2]]
  with pytest.raises(ValueError, match="no declared padding"):
    samples.pad({"undeclared": tf.ragged.constant([[1]])}, spec.paddings(data))


def test_window_cuts_aligned_side_sequences():
  # The shared gather: rows [1, 0] with [begin, end) = [0, 2) and [1, 3).
  sequence = tf.ragged.constant([[1, 2, 3], [4, 5]], dtype=tf.int64)
  row = tf.constant([1, 0], tf.int64)
  cut = samples.window(sequence, row, tf.constant([0, 1], tf.int64), tf.constant([2, 3], tf.int64))
  assert cut.to_list() == [[4, 5], [2, 3]]
  assert samples.gather_at(sequence, row, tf.constant([1, 2], tf.int64)).numpy().tolist() == [5, 3]
