"""SDM's session and long-term feature sets and XDM's unclicked filters on hand-made timelines.

Every expected list is derived in the comments from the timeline next to it.
"""

import pytest

from common import names
from input_pipeline import samples
from input_pipeline import schema
from input_pipeline import sessions
from input_pipeline.data_spec import DataSpec
import tensorflow as tf

PAD = 99

# One user, 7 clicks. Gaps: 100, 900, 100, 50, 3850, 50. With gap 600 the time rule
# starts runs at positions 0, 2 (900 > 600) and 5 (3850 > 600): runs [0, 1], [2, 3, 4],
# [5, 6]. With max_length 2 the run [2, 3, 4] is cut into [2, 3] and [4].
ITEMS = [10, 11, 12, 13, 14, 15, 16]
TIMES = [0, 100, 1000, 1100, 1150, 5000, 5050]


def _parse(timelines):
  """timelines: (items, timestamps[, impressions, impression times]) per user."""
  serialized = []
  for u, (items, times, *shown) in enumerate(timelines):
    impressions, impression_times = shown or ((), ())
    serialized.append(schema.encode_timeline(
        user_id=f"u{u}", items=items, timestamps=times, target_start=0,
        impressions=impressions, impression_timestamps=impression_times, user_features=[]))
  return schema.parse_timelines(tf.constant(serialized))


def _build(feature_set, timelines, rows, ends, request_times):
  out = feature_set.build(_parse(timelines), tf.constant(rows, tf.int64),
                          tf.constant(ends, tf.int64), tf.constant(request_times, tf.int64))
  samples.check_specs(out, feature_set.specs)
  return {key: value.to_list() if isinstance(value, tf.RaggedTensor) else value.numpy().tolist()
          for key, value in out.items()}


def test_session_start_cuts_at_gaps_and_at_the_length_limit():
  rule = sessions.SessionRule(gap=600, max_length=2)
  ends = [0, 1, 2, 3, 4, 5, 6, 7]
  starts = rule.session_start(_parse([(ITEMS, TIMES)]), tf.zeros([8], tf.int64),
                              tf.constant(ends, tf.int64))
  # end 0: no events (start = end). The newest event before end e is e - 1:
  # events 0, 1 -> run start 0; 2, 3 -> chunk [2, 3]; 4 -> chunk [4]; 5, 6 -> run [5, 6].
  assert starts.numpy().tolist() == [0, 0, 0, 2, 2, 4, 5, 5]


def test_short_term_is_the_latest_session_before_the_cut():
  out = _build(sessions.ShortTermSession(2, gap=600), [(ITEMS, TIMES)], [0] * 7, [1, 2, 3, 4, 5, 6, 7],
               [100, 1000, 1100, 1150, 5000, 5050, 9999])
  assert out[names.HISTORY] == [[10], [10, 11], [12], [12, 13], [14], [15], [15, 16]]
  assert out[names.HISTORY_TIMESTAMPS][6] == [5000, 5050]
  assert out[names.HISTORY_LENGTH] == [1, 2, 1, 2, 1, 1, 2]


def test_a_request_after_a_gap_still_reads_the_latest_session():
  # The request (time 9999) comes 4949 s after the last click: the short-term session
  # is still the last recorded one, [15, 16], not an empty new session.
  out = _build(sessions.ShortTermSession(50, gap=600), [(ITEMS, TIMES)], [0], [7], [9999])
  assert out[names.HISTORY] == [[15, 16]]


def test_long_term_is_the_window_before_the_session():
  rule = sessions.SessionRule(gap=600, max_length=2)
  long_term = sessions.LongTermBehaviors(rule, window=4000, max_items=2)
  out = _build(long_term, [(ITEMS, TIMES)], [0, 0, 0, 0], [3, 5, 6, 7], [1100, 5000, 5050, 5100])
  # end 3 (request 1100): session [12] starts at 2; events 0, 1 are after 1100 - 4000.
  # end 5 (request 5000): session [14] starts at 4; window from 1000: events 2, 3.
  # end 6 (request 5050): session [15] starts at 5; window from 1050: events 3, 4
  #   (12 at 1000 is too old).
  # end 7 (request 5100): session [15, 16] starts at 5; window from 1100: events 3, 4.
  assert out[sessions.LONG_TERM] == [[10, 11], [12, 13], [13, 14], [13, 14]]
  assert out[sessions.LONG_TERM_LENGTH] == [2, 2, 2, 2]
  assert long_term.uses_request_time


def test_long_term_keeps_the_newest_max_items_and_may_be_empty():
  rule = sessions.SessionRule(gap=600, max_length=50)
  long_term = sessions.LongTermBehaviors(rule, window=None, max_items=2)
  # end 2: the session [10, 11] starts at 0, nothing older. end 5: session [12, 13, 14]
  # starts at 2: [10, 11]. end 7: session [15, 16] at 5: the newest 2 of 0..4 = [13, 14].
  out = _build(long_term, [(ITEMS, TIMES)], [0, 0, 0], [2, 5, 7], [0, 0, 0])
  assert out[sessions.LONG_TERM] == [[], [10, 11], [13, 14]]
  assert not long_term.uses_request_time
  # A window of 0 keeps only events at the request time itself: none here.
  zero = sessions.LongTermBehaviors(rule, window=0, max_items=5)
  assert _build(zero, [(ITEMS, TIMES)], [0], [7], [5100])[sessions.LONG_TERM] == [[]]


def test_data_without_timestamps_falls_back_to_fixed_chunks():
  # Timestamps are positions; no time rule: chunks of 3 from the first event,
  # [0, 1, 2], [3, 4, 5], [6]. Two users in one block check the row offsets.
  rule = sessions.SessionRule(gap=None, max_length=3)
  timelines = [([1, 2, 3, 4, 5, 6, 7], list(range(7))), ([8, 9, 10, 11], list(range(4)))]
  short = _build(sessions.ShortTermSession(3, gap=None), timelines, [0, 0, 0, 1, 1],
                 [3, 4, 7, 3, 4], [3, 4, 7, 3, 4])
  assert short[names.HISTORY] == [[1, 2, 3], [4], [7], [8, 9, 10], [11]]
  long_term = _build(sessions.LongTermBehaviors(rule, window=None, max_items=10), timelines,
                     [0, 0, 0, 1, 1], [3, 4, 7, 3, 4], [3, 4, 7, 3, 4])
  assert long_term[sessions.LONG_TERM] == [[], [1, 2, 3], [1, 2, 3, 4, 5, 6], [], [8, 9, 10]]


def test_gap_zero_makes_every_new_timestamp_a_session():
  # Equal timestamps (gap 0 is not > 0) stay together: [5, 6] share time 1.
  out = _build(sessions.ShortTermSession(50, gap=0), [([4, 5, 6], [0, 1, 1])], [0], [3], [2])
  assert out[names.HISTORY] == [[5, 6]]


def test_training_batches_read_the_session_as_their_history():
  rule = sessions.SessionRule(gap=600, max_length=50)
  spec = samples.SampleSpec(
      features=(sessions.ShortTermSession(50, gap=600),
                sessions.LongTermBehaviors(rule, window=4000, max_items=5)),
      training=samples.NextK(2))
  assert spec.max_length == 50 and spec.reads == (schema.ITEMS, schema.TIMESTAMPS)
  features = spec.training_batch(_parse([(ITEMS, TIMES)]), PAD)
  samples.check_specs(features, spec.specs(training=True))
  # Cut 6 predicts [16, PAD] at request time 5050: the history is the session [15] (so
  # batches bucket by session length), long-term = events 1 .. 4 after 1050: [13, 14]
  # (the window drops 10, 11, 12).
  assert features[names.HISTORY].to_list()[5] == [15]
  # Sessions [10, 11], [12, 13, 14] (no chunking at 50), [15, 16]: lengths at cuts 1..6.
  assert features[names.HISTORY_LENGTH].numpy().tolist() == [1, 2, 1, 2, 3, 1]
  assert features[sessions.LONG_TERM].to_list()[5] == [13, 14]
  assert features[names.LABELS].numpy().tolist()[5] == [16, PAD]
  padded = samples.pad(features, spec.paddings(DataSpec.for_catalog(PAD - 1), training=True))
  assert padded[sessions.LONG_TERM].numpy().tolist()[0] == [PAD, PAD]  # first cut: nothing older


def test_bad_parameters_are_rejected():
  with pytest.raises(ValueError, match="max_length"):
    sessions.SessionRule(max_length=0)
  with pytest.raises(ValueError, match="gap"):
    sessions.SessionRule(gap=-1)
  with pytest.raises(ValueError, match="gap"):
    sessions.ShortTermSession(5, gap=-1)
  with pytest.raises(ValueError, match="window"):
    sessions.LongTermBehaviors(window=-5)
  with pytest.raises(ValueError, match="max_items"):
    sessions.LongTermBehaviors(max_items=0)
  with pytest.raises(ValueError, match="exposed_more_than"):
    samples.Unclicked(exposed_more_than=-1)


# XDM's unclicked sequence (samples.Unclicked) with the filters of section 4.1.
# Shown before the request at time 6: 50 (t1), 51 (t2), 50 (t3), 52 (t4), 51 (t5);
# 50 again at t6 is not before the request. Latest first: [51, 52, 50, 51, 50].
SHOWN = ([1, 2], [0, 1], [50, 51, 50, 52, 51, 50], [1, 2, 3, 4, 5, 6])


def test_unclicked_keeps_every_impression_by_default():
  out = _build(samples.Unclicked(max_items=4), [SHOWN], [0], [2], [6])
  assert out[names.UNCLICKED] == [[51, 52, 50, 51]]
  assert out[names.UNCLICKED_LENGTH] == [4]


def test_unclicked_keeps_items_exposed_more_than_k_times():
  # Counts before t6: 50 twice, 51 twice, 52 once. More than once: 51 (latest t5), then 50.
  out = _build(samples.Unclicked(exposed_more_than=1), [SHOWN], [0], [2], [6])
  assert out[names.UNCLICKED] == [[51, 50]]
  assert out[names.UNCLICKED_LENGTH] == [2]
  # More than 0 times: every distinct item once, by latest exposure; capped at 2.
  out = _build(samples.Unclicked(max_items=2, exposed_more_than=0), [SHOWN], [0], [2], [6])
  assert out[names.UNCLICKED] == [[51, 52]]


def test_unclicked_window_and_exposure_filter_combine():
  # Window 3 before request 6: times >= 3, i.e. 50 (t3), 52 (t4), 51 (t5): each once.
  assert _build(samples.Unclicked(window=3), [SHOWN], [0], [2], [6])[names.UNCLICKED] == [
      [51, 52, 50]]
  assert _build(samples.Unclicked(window=3, exposed_more_than=1), [SHOWN], [0], [2],
                [6])[names.UNCLICKED] == [[]]
  # Two samples of the same user and one user without impressions in one call: the
  # keys of different samples never merge. Request 3: 51 (t2), 50 (t1); 50 once.
  out = _build(samples.Unclicked(exposed_more_than=0), [SHOWN, ([7], [0])], [0, 1, 0], [2, 1, 2],
               [3, 5, 6])
  assert out[names.UNCLICKED] == [[51, 50], [], [51, 52, 50]]
  assert out[names.UNCLICKED_LENGTH] == [2, 0, 3]
