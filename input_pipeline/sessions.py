"""SDM's feature sets: the short-term session and the long-term behaviors before it.

SDM (Lv et al., CIKM 2019; ../shared/papers/sdm-notes.md) reads a user's clicks in two
parts, both cut at the same `(row, end)` cuts as every other feature set
(`input_pipeline.samples`), so training, evaluation and serving see the same thing:

    short-term S_u   the latest session among the events before the cut
                     (`ShortTermSession`, the model's `History`: batches are bucketed
                     by session length);
    long-term  L_u   the events before that session inside a lookback window that ends
                     at the request time (7 days in the paper), newest `max_items`
                     (`LongTermBehaviors`).

Sessions (`SessionRule`). A user's events, in time order, start a new session where
the time since the previous event exceeds `gap` (the paper's 10 minutes; coarser public
timestamps need a larger one, chosen per data set by the model config) and where a
session reaches `max_length` items (50 in the paper): a long run of events without a
gap is cut into consecutive chunks of `max_length` counted from its first event. With
`gap=None` only the length rule cuts: that is the fallback for data without timestamps
(the S3-Rec files, whose timestamps are positions 0..n-1), whose sessions are
fixed-length chunks of `max_length` items counted from the user's first event.

"The latest session" is the session of the newest event before the cut, even when the
request comes after a gap (the request would open a new, still empty session): a user
with any history always has a non-empty short-term session, as SDM's serving uses the
latest recorded session.

Long-term window. `window` is in the timeline's time unit (seconds for real logs):
an event belongs to L_u when its time is at least `request_time - window` and it is
older than the short-term session. `window=None` keeps every older event (data
without timestamps: the newest `max_items` events before the session).
"""

import dataclasses
from typing import Optional

import tensorflow as tf

from common import names
from input_pipeline import samples
from input_pipeline import schema

# Feature names (model features, like those of `common.names`; only SDM and XDM read them).
LONG_TERM = "long_term"  # [batch, M] int64 the long-term behaviors' items, oldest first
LONG_TERM_LENGTH = "long_term_length"  # [batch] int64

DAY = 86_400


@dataclasses.dataclass(frozen=True)
class SessionRule:
  """Where sessions start.

  Attributes:
    gap: a new session starts after more than `gap` time units without an event (the
      paper: 600 seconds); None: no time rule (data without timestamps).
    max_length: a session holds at most this many items; longer runs are cut into
      consecutive chunks counted from the run's first event (the paper: 50).
  """
  gap: Optional[int] = 600
  max_length: int = 50

  def __post_init__(self):
    if self.gap is not None and self.gap < 0:
      raise ValueError(f"SessionRule.gap must be >= 0 (or None for no time rule), got {self.gap}.")
    if self.max_length < 1:
      raise ValueError(f"SessionRule.max_length must be >= 1, got {self.max_length}.")

  def session_start(self, timelines, row: tf.Tensor, end: tf.Tensor) -> tf.Tensor:
    """The first position of the latest session in events `[0, end)` of each cut.

    Args:
      timelines: a parsed block (`schema.parse_timelines`).
      row: `[num_samples]` int64 timeline of each cut.
      end: `[num_samples]` int64 cut.

    Returns:
      `[num_samples]` int64 start `<= end` (equal to `end` when `end` is 0).
    """
    timestamps = timelines[schema.TIMESTAMPS]
    flat = timestamps.flat_values
    size = tf.size(flat, out_type=tf.int64)
    row_of = timestamps.value_rowids()
    first_of_row = tf.range(size) == tf.gather(timestamps.row_splits, row_of)
    starts = first_of_row
    if self.gap is not None:
      previous = tf.concat([flat[:1], flat[:-1]], axis=0)
      starts |= (flat - previous) > self.gap
    # Every event's run (time-gap session before the length rule) and the run's start.
    run_of = tf.cumsum(tf.cast(starts, tf.int64)) - 1
    run_start = tf.where(starts)[:, 0]
    # A sentinel run 0 at position `size` keeps the gathers in range for end == 0.
    run_of = tf.concat([run_of, [0]], axis=0)
    run_start = tf.concat([run_start, [0]], axis=0)
    offset = tf.gather(timestamps.row_splits, row)
    newest = tf.where(end > 0, offset + end - 1, size)
    begin = tf.gather(run_start, tf.gather(run_of, newest)) - offset
    chunk = (end - 1 - begin) // self.max_length * self.max_length
    return tf.where(end > 0, begin + chunk, end)


@dataclasses.dataclass(frozen=True)
class ShortTermSession(samples.History):
  """The model's history is the latest session before the cut: HISTORY (oldest first),
  HISTORY_TIMESTAMPS, HISTORY_LENGTH.

  A `samples.History` whose window starts at the session start instead of
  `max_length` items back, so batches are bucketed (and padded) by session length,
  and the serving signature's `history_length` counts the session's items.

  Attributes:
    max_length: the longest session (the paper: 50 items).
    gap: the session gap in time units (the paper: 600 seconds); None: fixed chunks of
      `max_length` items (data without timestamps).
  """
  gap: Optional[int] = 600

  @property
  def rule(self) -> SessionRule:
    return SessionRule(gap=self.gap, max_length=self.max_length)

  def __post_init__(self):
    super().__post_init__()
    _ = self.rule  # SessionRule checks the gap

  def build(self, timelines, row, end, request_time):
    del request_time
    begin = self.rule.session_start(timelines, row, end)
    return {
        names.HISTORY: samples.window(timelines[schema.ITEMS], row, begin, end),
        names.HISTORY_TIMESTAMPS: samples.window(timelines[schema.TIMESTAMPS], row, begin, end),
        names.HISTORY_LENGTH: end - begin,
    }


@dataclasses.dataclass(frozen=True)
class LongTermBehaviors(samples.FeatureSet):
  """LONG_TERM: events older than the short-term session inside the lookback window.

  Attributes:
    rule: where sessions start (the same rule as the model's `ShortTermSession`).
    window: an event counts when its time is `>= request_time - window` (the paper:
      7 days); None: no time limit (data without timestamps).
    max_items: the newest this many events are kept.
  """
  rule: SessionRule = SessionRule()
  window: Optional[int] = 7 * DAY
  max_items: int = 50
  specs = (samples.FeatureSpec(LONG_TERM, tf.int64, padding=samples.ITEM_PADDING),
           samples.FeatureSpec(LONG_TERM_LENGTH, tf.int64, ragged=False))
  reads = (schema.ITEMS, schema.TIMESTAMPS)

  def __post_init__(self):
    if self.window is not None and self.window < 0:
      raise ValueError(f"LongTermBehaviors.window must be >= 0 (or None), got {self.window}.")
    if self.max_items < 1:
      raise ValueError(f"LongTermBehaviors.max_items must be >= 1, got {self.max_items}.")

  @property
  def uses_request_time(self) -> bool:
    return self.window is not None

  def build(self, timelines, row, end, request_time):
    stop = self.rule.session_start(timelines, row, end)
    begin = tf.maximum(stop - self.max_items, 0)
    if self.window is not None:
      # Times are sorted within a timeline: the events inside the window are a suffix
      # of [begin, stop).
      times = samples.window(timelines[schema.TIMESTAMPS], row, begin, stop)
      too_old = tf.reduce_sum(tf.cast(times < (request_time - self.window)[:, tf.newaxis],
                                      tf.int64), axis=1)
      begin += too_old
    return {LONG_TERM: samples.window(timelines[schema.ITEMS], row, begin, stop),
            LONG_TERM_LENGTH: stop - begin}
