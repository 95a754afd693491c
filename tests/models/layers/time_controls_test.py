"""The time controls of HRNN-meta (models/layers/time_controls.py) on hand-checked gaps."""

import math

import numpy as np
import pytest

from models.layers import time_controls

import tensorflow as tf  # after `models`, which selects Keras 2


def test_gaps_run_to_the_next_event_and_from_the_newest_to_the_request():
  # Row 0: events at 100, 160, 4000, request at 4010 -> gaps 60, 3840, 10.
  # Row 1: one event at 50, request at 50 -> gap 0; the padding gets 0.
  gaps = time_controls.next_gaps(tf.constant([[100, 160, 4000], [50, 0, 0]], tf.int64),
                                 tf.constant([3, 1], tf.int64), tf.constant([4010, 50], tf.int64))
  assert gaps.numpy().tolist() == [[60, 3840, 10], [0, 0, 0]]


def test_the_request_time_changes_only_the_newest_gap():
  timestamps = tf.constant([[10, 20, 0]], tf.int64)
  early, late = (time_controls.next_gaps(timestamps, tf.constant([2]), tf.constant([t], tf.int64))
                 .numpy() for t in (25, 86_420))
  assert early.tolist() == [[10, 5, 0]] and late.tolist() == [[10, 86_400, 0]]


def test_bucketizer_is_log_scaled_with_exact_powers_of_the_base():
  # base 2: bucket(g) = 1 + floor(log2 g) for g >= 1; 0 for g <= 0; capped at 9.
  gaps = [-5, 0, 1, 2, 3, 4, 7, 8, 1023, 1024, 10**9]
  expected = [0, 0, 1, 2, 2, 3, 3, 4, 10 - 1, 9, 9]  # 1 + log2(1023) = 10.99 -> capped 9
  got = time_controls.bucketize(tf.constant(gaps, tf.int64), num_buckets=10, log_base=2.0)
  assert got.numpy().tolist() == expected
  # Every exact power of 2 and 10 starts a new bucket (no log rounding below it).
  for base in (2.0, 10.0):
    powers = [int(base ** k) for k in range(1, 9)]
    got = time_controls.bucketize(tf.constant(powers, tf.int64), 64, base).numpy()
    assert got.tolist() == [k + 1 for k in range(1, 9)]
    below = time_controls.bucketize(tf.constant([p - 1 for p in powers], tf.int64), 64, base)
    assert below.numpy().tolist() == [k for k in range(1, 9)]
  # A day in seconds with base 2: 1 + floor(log2 86400) = 1 + 16 = 17.
  assert int(time_controls.bucketize(tf.constant(86_400, tf.int64), 32, 2.0)) == 1 + math.floor(
      math.log2(86_400))


def test_session_bit_marks_gaps_above_the_threshold():
  bits = time_controls.session_bits(tf.constant([0, 3599, 3600, 3601, 86_400]), 3600.0)
  assert bits.numpy().tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_layer_concatenates_the_bucket_embedding_and_the_session_bit():
  layer = time_controls.TimeGapControls(num_buckets=6, log_base=2.0, session_gap=30.0, dim=2)
  timestamps = tf.constant([[0, 1, 100]], tf.int64)
  controls = layer(timestamps, tf.constant([3]), tf.constant([103], tf.int64)).numpy()
  table = layer.embedding.embeddings.numpy()
  # Gaps 1, 99, 3 -> buckets 1, min(1 + 6, 5) = 5, 2; session bits 0, 1, 0.
  np.testing.assert_allclose(controls[0, :, :2], table[[1, 5, 2]])
  assert controls[0, :, 2].tolist() == [0.0, 1.0, 0.0]


def test_bad_settings_are_rejected():
  with pytest.raises(ValueError, match="log_base > 1"):
    time_controls.TimeGapControls(num_buckets=8, log_base=1.0, session_gap=10, dim=2)
