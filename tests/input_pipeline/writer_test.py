"""Writer pieces: the vocabulary order and the atomic output directory."""

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


def test_atomic_directory_commits_or_rolls_back(tmp_path):
  target = str(tmp_path / "out")
  with writer.atomic_directory(target, overwrite=False) as temporary:
    assert temporary != target and not os.path.exists(target)
    open(os.path.join(temporary, "a.txt"), "w").close()
  assert os.listdir(target) == ["a.txt"]
  with pytest.raises(KeyError):
    with writer.atomic_directory(target, overwrite=True) as temporary:
      open(os.path.join(temporary, "b.txt"), "w").close()
      raise KeyError("boom")
  assert os.listdir(target) == ["a.txt"]  # the old dataset survives a failed rewrite
  assert sorted(os.listdir(tmp_path)) == ["out"]


def test_output_dir_that_is_a_file(tmp_path):
  (tmp_path / "f").write_text("x")
  with pytest.raises(ValueError, match="is a file"):
    writer.check_output_dir(str(tmp_path / "f"), overwrite=True)
