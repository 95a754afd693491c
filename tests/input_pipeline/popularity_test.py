"""The popularity window of item trend correction (input_pipeline/popularity.py)."""

import math

import numpy as np
import pytest

from input_pipeline import popularity


def test_window_counts_keep_events_in_the_half_open_window():
  items = [0, 1, 1, 2, 2, 2, 5, -1]
  times = [9, 10, 11, 12, 19, 20, 15, 15]
  # [10, 20): item 1 twice, item 2 at 12 and 19 (20 is out); 5 and -1 are outside the
  # catalog of 4 items.
  counts = popularity.window_counts(items, times, start=10, end=20, num_items=4)
  assert counts.tolist() == [0, 2, 2, 0] and counts.dtype == np.float32


def test_log_popularity_is_the_smoothed_share():
  # Counts 3, 1, 0 with alpha 1: q = (4, 2, 1) / (4 + 3) .
  log_q = popularity.log_popularity(np.array([3.0, 1.0, 0.0]), smoothing=1.0)
  np.testing.assert_allclose(log_q, [math.log(4 / 7), math.log(2 / 7), math.log(1 / 7)], rtol=1e-6)
  assert abs(np.exp(log_q).sum() - 1) < 1e-6


def test_bad_input_is_rejected():
  with pytest.raises(ValueError, match="ends before"):
    popularity.window_counts([0], [1], start=5, end=4, num_items=1)
  with pytest.raises(ValueError, match="log 0"):
    popularity.log_popularity(np.array([1.0, 0.0]), smoothing=0.0)
