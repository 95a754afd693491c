"""Sample builders on hand-made timelines (expected arrays derived in the comments)."""

import numpy as np
import pytest

from input_pipeline import samples
from input_pipeline import schema
from models import base
import tensorflow as tf

PAD = 99


def _parse(timelines):
  """timelines: (items, timestamps, target_start) per user -> a parsed block."""
  serialized = [schema.encode_timeline(user_id=f"u{u}", items=items, timestamps=ts,
                                       target_start=start)
                for u, (items, ts, start) in enumerate(timelines)]
  return schema.parse_timelines(tf.constant(serialized))


def _lists(value):
  return value.to_list() if isinstance(value, tf.RaggedTensor) else value.numpy().tolist()


def _build(name, timelines, max_length, num_labels=5):
  features = samples.lookup(name)(_parse(timelines),
                                  samples.SampleParams(max_length, PAD, num_labels))
  return {key: _lists(value) for key, value in features.items()}


# Train timelines (target_start 0): u0 has 4 events, u1 2, u2 a single one.
TRAIN = [([10, 11, 12, 13], [100, 200, 300, 400], 0),
         ([20, 21], [5, 6], 0),
         ([30], [7], 0)]


def test_all_prefixes():
  # Positions i >= 1 of each timeline; history = the last 2 items before i.
  # u0: i=1 [10]->11, i=2 [10,11]->12, i=3 [11,12]->13 (10 falls out of the window);
  # u1: i=1 [20]->21; u2 has no position >= 1.
  out = _build("all_prefixes", TRAIN, max_length=2)
  assert out[base.HISTORY] == [[10], [10, 11], [11, 12], [20]]
  assert out[base.HISTORY_TIMESTAMPS] == [[100], [100, 200], [200, 300], [5]]
  assert out[base.HISTORY_LENGTH] == [1, 2, 2, 1]
  assert out[base.LABELS] == [[11], [12], [13], [21]]


def test_all_prefixes_starts_at_target_start():
  # target_start 3: only position 3 is a target; its history is everything before it.
  out = _build("all_prefixes", [([10, 11, 12, 13], [1, 2, 3, 4], 3)], max_length=50)
  assert out[base.HISTORY] == [[10, 11, 12]]
  assert out[base.LABELS] == [[13]]


def test_next_k():
  # k = 2 labels items[i:i+2], padded with PAD past the end; histories capped at 3.
  out = _build("next_k", TRAIN, max_length=3, num_labels=2)
  assert out[base.HISTORY] == [[10], [10, 11], [10, 11, 12], [20]]
  assert out[base.LABELS] == [[11, 12], [12, 13], [13, PAD], [21, PAD]]


def test_last_item():
  # One sample per timeline of length >= 2: the last item from the 2 before it.
  out = _build("last_item", TRAIN, max_length=2)
  assert out[base.HISTORY] == [[11, 12], [20]]
  assert out[base.HISTORY_TIMESTAMPS] == [[200, 300], [5]]
  assert out[base.HISTORY_LENGTH] == [2, 1]
  assert out[base.LABELS] == [[13], [21]]


def test_evaluation():
  # u0: input [10, 11, 12] (history keeps the last 2), target [13].
  # u1: input [20], targets [21, 22].
  # u2 (target_start 0: no input) and u3 (target_start == length: no target) are skipped.
  timelines = [([10, 11, 12, 13], [1, 2, 3, 4], 3),
               ([20, 21, 22], [5, 6, 7], 1),
               ([30, 31], [8, 9], 0),
               ([40, 41], [8, 9], 2)]
  out = _build("evaluation", timelines, max_length=2)
  assert out[base.HISTORY] == [[11, 12], [20]]
  assert out[base.HISTORY_TIMESTAMPS] == [[2, 3], [5]]
  assert out[base.HISTORY_LENGTH] == [2, 1]
  assert out[samples.EVAL_TARGETS] == [[13], [21, 22]]
  # The whole input, not just the max_length window, so masking removes all of it.
  assert out[samples.EVAL_EXCLUDE] == [[10, 11, 12], [20]]
  assert base.LABELS not in out


def test_evaluation_history_never_sees_targets():
  # Random timelines of distinct items: every history item comes from before
  # target_start, so no target can appear in a history.
  rng = np.random.default_rng(0)
  timelines = []
  for _ in range(50):
    n = int(rng.integers(2, 30))
    items = rng.permutation(1000)[:n].tolist()
    timelines.append((items, list(range(n)), int(rng.integers(1, n))))
  out = _build("evaluation", timelines, max_length=8)
  assert len(out[base.HISTORY]) == 50
  for (items, _, start), history, targets, exclude in zip(
      timelines, out[base.HISTORY], out[samples.EVAL_TARGETS], out[samples.EVAL_EXCLUDE]):
    assert history == items[:start][-8:]
    assert targets == items[start:]
    assert exclude == items[:start]
    assert not set(history) & set(targets)


def test_unknown_builder_lists_known_names():
  with pytest.raises(ValueError, match="Unknown sample builder 'nope'.*all_prefixes.*evaluation"):
    samples.lookup("nope")


def test_duplicate_registration_is_refused():
  with pytest.raises(ValueError, match="already registered"):
    samples.register("all_prefixes")(lambda timelines, params: {})


def test_window_cuts_aligned_side_sequences():
  # The shared gather: rows [1, 0] with [begin, end) = [0, 2) and [1, 3).
  sequence = tf.ragged.constant([[1, 2, 3], [4, 5]], dtype=tf.int64)
  row = tf.constant([1, 0], tf.int64)
  cut = samples.window(sequence, row, tf.constant([0, 1], tf.int64), tf.constant([2, 3], tf.int64))
  assert cut.to_list() == [[4, 5], [2, 3]]
  assert samples.gather_at(sequence, row, tf.constant([1, 2], tf.int64)).numpy().tolist() == [5, 3]
