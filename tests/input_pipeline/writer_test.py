"""Writer pieces: the vocabulary order (the atomic output directory: tests/common/files_test.py)."""

import os

import numpy as np
import pyarrow as pa
import pytest

from input_pipeline import writer


def test_frequency_order_ties_by_numeric_then_string_id():
  counts = np.array([2, 5, 2, 0, 2])
  # Counts desc; the three items with count 2 ordered by numeric id 9 < 10 < 100.
  order = writer.frequency_order(counts, pa.array(["10", "3", "9", "1", "100"]))
  np.testing.assert_array_equal(order, [1, 2, 0, 4, 3])
  # Non-numeric ids: string order "b" < "c" < "d".
  order = writer.frequency_order(counts, pa.array(["d", "a", "b", "e", "c"]))
  np.testing.assert_array_equal(order, [1, 2, 4, 0, 3])
