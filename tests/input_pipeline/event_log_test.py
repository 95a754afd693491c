"""The columnar event log: feature tables, filtering, sorting into timelines."""

import numpy as np
import pyarrow as pa
import pytest

from input_pipeline.readers.event_log import (EventLog, FeatureTable, factorize, filter_log, ranges,
                                              sort_into_timelines)


def _log(users, items, timestamps, **kwargs):
  return EventLog(user_ids=pa.array([f"u{i}" for i in range(max(users) + 1)]),
                  item_ids=pa.array([f"i{i}" for i in range(max(items) + 1)]),
                  users=np.array(users, np.int64), items=np.array(items, np.int64),
                  timestamps=np.array(timestamps, np.int64), source="test", **kwargs)


def test_ranges():
  np.testing.assert_array_equal(ranges([5, 0, 2], [2, 0, 3]), [5, 6, 2, 3, 4])
  assert ranges([1], [0]).size == 0


def test_factorize_keeps_first_appearance_order():
  codes, ids = factorize(pa.array(["b", "a", "b", "c"]))
  np.testing.assert_array_equal(codes, [0, 1, 0, 2])
  assert ids.to_pylist() == ["b", "a", "c"]


def test_feature_table_take_and_by_count():
  table = FeatureTable.from_rows([["x", "y", "x"], [], ["y", "z"]])  # duplicate "x" dropped
  assert table.names == ["x", "y", "z"]
  np.testing.assert_array_equal(table.offsets, [0, 2, 2, 4])
  taken = table.take(np.array([2, 0]))
  np.testing.assert_array_equal(taken.values, [1, 2, 0, 1])  # rows "y z" then "x y"
  # Counts: y on 2 rows, x and z on 1 (tie broken by name); nothing unused.
  renumbered, counts = table.by_count()
  assert renumbered.names == ["y", "x", "z"]
  np.testing.assert_array_equal(counts, [2, 1, 1])
  np.testing.assert_array_equal(renumbered.values, [1, 0, 0, 2])


def test_filter_log_items_then_users_and_recode():
  # Item counts: i0 x3, i1 x1, i2 x2, i3 x1. min_item_count=2 drops i1 and i3 (and the
  # impression of i1). Then u1 has 1 event left (< 2) and is dropped; u0 and u2 keep
  # [i0, i2] each. Codes become dense: users u0, u2 -> 0, 1; items i0, i2 -> 0, 1.
  log = _log(users=[0, 0, 0, 1, 1, 2, 2], items=[0, 2, 1, 0, 3, 0, 2],
             timestamps=[1, 2, 3, 1, 2, 1, 2],
             impression_users=np.array([0, 2]), impression_items=np.array([1, 2]),
             impression_timestamps=np.array([5, 5]))
  out = filter_log(log, min_item_count=2, min_user_events=2)
  assert out.user_ids.to_pylist() == ["u0", "u2"]
  assert out.item_ids.to_pylist() == ["i0", "i2"]
  np.testing.assert_array_equal(out.users, [0, 0, 1, 1])
  np.testing.assert_array_equal(out.items, [0, 1, 0, 1])
  np.testing.assert_array_equal(out.impression_users, [1])
  np.testing.assert_array_equal(out.impression_items, [1])


def test_filter_log_refuses_to_empty_the_log():
  with pytest.raises(ValueError, match="no events left after filtering 2 events"):
    filter_log(_log([0, 1], [0, 1], [0, 0]), min_item_count=5, min_user_events=1)


def test_sort_into_timelines_is_stable():
  # u1's two events at time 7 keep their input order (items 3 then 1).
  log = _log(users=[1, 0, 1, 1, 0], items=[3, 0, 1, 2, 4], timestamps=[7, 9, 7, 1, 2],
             feedback=np.array([0.1, 0.2, 0.3, 0.4, 0.5], np.float32))
  offsets, impression_offsets = sort_into_timelines(log)
  np.testing.assert_array_equal(offsets, [0, 2, 5])
  np.testing.assert_array_equal(impression_offsets, [0, 0, 0])
  np.testing.assert_array_equal(log.users, [0, 0, 1, 1, 1])
  np.testing.assert_array_equal(log.items, [4, 0, 2, 3, 1])
  np.testing.assert_array_equal(log.timestamps, [2, 9, 1, 7, 7])
  np.testing.assert_allclose(log.feedback, [0.5, 0.2, 0.4, 0.1, 0.3])


def test_validate_names_the_source():
  log = _log([0, 0], [0, 1], [0, 1])
  log.timestamps = np.array([0])
  with pytest.raises(ValueError, match="test: 2 users but 1 timestamps"):
    log.validate()
