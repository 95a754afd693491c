"""Time controls of a recurrent step: the gap to the next prediction, bucketized, and a session bit.

HRNN (Ma et al., KDD 2020, section 2.2, Figures 1-2) replaces the hierarchical GRU's
session layer by *control inputs* concatenated to each step's input: a learned
embedding of the time delta and a session-start bit, so the GRU learns when to reset.

Which delta. The input of step t is the event a_t and the context of the prediction
made from h_t, which is the next event a_{t+1}: the control of step t is the gap
`g_t = time(next prediction) - time(a_t)`, i.e. `timestamps[t + 1] - timestamps[t]` inside
the history and `request_time - timestamps[length - 1]` at the newest event. That last
gap is what makes the same history recommend differently after a minute and after a
day (the paper's Table 2); in training and evaluation the request time is the
target's own time (`samples.RequestTime`), at serving the request's.

    bucket(g) = 0                                        g <= 0 (same second, or
                                                         clocks out of order)
              = min(1 + floor(log_base(g)), num_buckets - 1)   g >= 1
    session(g) = 1 if g > session_gap else 0            (the next event opens a session)
    control_t = [E_time[bucket(g_t)], session(g_t)]

Gaps are in the data set's time unit (unix seconds for logs with timestamps; data sets
that keep only the order store positions, so every gap is 1 and the controls are
constant). The paper does not give the bucketing; log-scaled buckets of base 2 resolve
seconds within a session and days between sessions alike, 32 of them reach 2^30 s
(34 years).
"""

import math

import tensorflow as tf
import tf_keras


def next_gaps(timestamps, lengths, request_time):
  """`g_t`: from each history event to the moment of the prediction made after it.

  Args:
    timestamps: `[batch, len]` int64, left-aligned history times (padding after).
    lengths: `[batch]` int64 real events per row.
    request_time: `[batch]` int64 time of the prediction after the newest event.

  Returns:
    `[batch, len]` int64: `timestamps[:, t + 1] - timestamps[:, t]` for `t < length - 1`,
    `request_time - timestamps[:, length - 1]` at the newest event, 0 on padding.
  """
  timestamps = tf.cast(timestamps, tf.int64)
  lengths = tf.cast(lengths, tf.int64)
  width = tf.shape(timestamps, out_type=tf.int64)[1]
  following = tf.concat([timestamps[:, 1:], tf.zeros_like(timestamps[:, :1])], axis=1)
  position = tf.range(width)[tf.newaxis, :]
  newest = position == (lengths[:, tf.newaxis] - 1)
  following = tf.where(newest, tf.cast(request_time, tf.int64)[:, tf.newaxis], following)
  return tf.where(position < lengths[:, tf.newaxis], following - timestamps, 0)


def bucketize(gaps, num_buckets: int, log_base: float):
  """Log-scaled bucket of each gap (module docstring): `[...]` int64 -> `[...]` int32."""
  gaps = tf.cast(gaps, tf.float64)
  # The 1e-9 guards exact powers of the base against log rounding (log(8)/log(2) may be
  # 2.9999999999999996).
  scaled = tf.math.floor(tf.math.log(tf.maximum(gaps, 1.0)) / math.log(log_base) + 1e-9)
  buckets = tf.where(gaps >= 1.0, 1.0 + scaled, 0.0)
  return tf.cast(tf.minimum(buckets, num_buckets - 1), tf.int32)


def session_bits(gaps, session_gap: float):
  """1.0 where the gap exceeds `session_gap` (the next event opens a session), else 0.0."""
  return tf.cast(tf.cast(gaps, tf.float64) > session_gap, tf.float32)


class TimeGapControls(tf_keras.layers.Layer):
  """`[batch, len, dim + 1]` control inputs: the gap's bucket embedding and the session bit.

  Attributes:
    num_buckets: time-delta buckets (bucket 0: gaps <= 0).
    log_base: bucket widths grow by this factor.
    session_gap: a gap above this (in the data's time unit) is a session break.
    dim: size of the bucket embedding.
  """

  def __init__(self, num_buckets: int, log_base: float, session_gap: float, dim: int, **kwargs):
    super().__init__(**kwargs)
    if num_buckets < 2 or log_base <= 1.0 or dim < 1 or session_gap < 0:
      raise ValueError(f"TimeGapControls needs num_buckets >= 2, log_base > 1, dim >= 1 and "
                       f"session_gap >= 0, got {num_buckets}, {log_base}, {dim}, {session_gap}.")
    self.num_buckets = num_buckets
    self.log_base = log_base
    self.session_gap = session_gap
    self.embedding = tf_keras.layers.Embedding(num_buckets, dim, name="time_bucket_embedding")

  def call(self, timestamps, lengths, request_time):
    """Controls of every history step (see `next_gaps` for the arguments)."""
    gaps = next_gaps(timestamps, lengths, request_time)
    embedded = self.embedding(bucketize(gaps, self.num_buckets, self.log_base))
    return tf.concat([embedded, session_bits(gaps, self.session_gap)[..., tf.newaxis]], axis=-1)
