"""Split protocols on hand-made timelines (numbers derived in the comments)."""

import numpy as np
import pytest

from input_pipeline import schema
from input_pipeline.splits import SplitConfig, make_split


def _offsets(lengths):
  return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _plan(config, timelines, impressions, has_timestamps=True):
  """timelines / impressions: one list of (sorted) timestamps per user."""
  return make_split(
      config, offsets=_offsets([len(t) for t in timelines]),
      timestamps=np.array(sum(timelines, []), np.int64),
      impression_offsets=_offsets([len(i) for i in impressions]),
      impression_timestamps=np.array(sum(impressions, []), np.int64),
      has_timestamps=has_timestamps)


def test_leave_last_one_out():
  # User 0: 5 events. train keeps 3 (ts 10, 20, 30); the first left-out event is at 40,
  # so train keeps the impressions before 40: [15]. valid keeps 4 events (targets from 3),
  # impressions before 50: [15, 40, 45]. test keeps all 5 (target 4) and all 4 impressions.
  # User 1: 2 events, too short to evaluate: all in train (SASRec), with all impressions.
  # User 2: exactly 3 events: train 1, valid 2 (target 1), test 3 (target 2).
  plan = _plan(SplitConfig(), [[10, 20, 30, 40, 50], [5, 6], [1, 2, 3]],
               [[15, 40, 45, 55], [7], []])
  np.testing.assert_array_equal(plan.ends["train"], [3, 2, 1])
  np.testing.assert_array_equal(plan.ends["valid"], [4, 0, 2])
  np.testing.assert_array_equal(plan.ends["test"], [5, 0, 3])
  np.testing.assert_array_equal(plan.target_starts["train"], [0, 0, 0])
  np.testing.assert_array_equal(plan.target_starts["valid"], [3, 0, 1])
  np.testing.assert_array_equal(plan.target_starts["test"], [4, 0, 2])
  np.testing.assert_array_equal(plan.impression_ends["train"], [1, 1, 0])
  np.testing.assert_array_equal(plan.impression_ends["valid"], [3, 0, 0])
  np.testing.assert_array_equal(plan.impression_ends["test"], [4, 0, 0])
  assert plan.info["users_too_short_for_evaluation"] == 1


def test_temporal_with_explicit_cutoffs():
  # t1 = 30, t2 = 45.
  # User 0 [10 20 30 40 50]: 2 events before t1, 4 before t2 -> train 2; valid 4 with
  #   targets from 2 (30, 40); test 5 with target 4 (50). Impressions [15 40 45 55]:
  #   train < 30 -> 1, valid < 45 -> 2, test all 4.
  # User 1 [35 36]: nothing before t1 -> no train, no valid input; test has no target.
  # User 2 [5 60]: train 1; valid has no target in [30, 45); test: input [5], target 60.
  plan = _plan(SplitConfig(protocol=schema.TEMPORAL, valid_start_time=30, test_start_time=45),
               [[10, 20, 30, 40, 50], [35, 36], [5, 60]], [[15, 40, 45, 55], [1], []])
  np.testing.assert_array_equal(plan.ends["train"], [2, 0, 1])
  np.testing.assert_array_equal(plan.ends["valid"], [4, 0, 0])
  np.testing.assert_array_equal(plan.ends["test"], [5, 0, 2])
  np.testing.assert_array_equal(plan.target_starts["valid"], [2, 0, 0])
  np.testing.assert_array_equal(plan.target_starts["test"], [4, 0, 1])
  np.testing.assert_array_equal(plan.impression_ends["train"], [1, 0, 0])
  np.testing.assert_array_equal(plan.impression_ends["valid"], [2, 0, 0])
  np.testing.assert_array_equal(plan.impression_ends["test"], [4, 0, 0])
  assert plan.info["valid_start_time"] == 30 and plan.info["test_start_time"] == 45


def test_temporal_default_cutoffs_are_event_quantiles():
  # One user with events at 0..99: 10% of events at or after t2 = 90, 20% at or after t1 = 80.
  plan = _plan(SplitConfig(protocol=schema.TEMPORAL), [list(range(100))], [[]])
  assert plan.info["valid_start_time"] == 80 and plan.info["test_start_time"] == 90
  assert plan.ends["train"][0] == 80
  assert (plan.ends["valid"][0], plan.target_starts["valid"][0]) == (90, 80)
  assert (plan.ends["test"][0], plan.target_starts["test"][0]) == (100, 90)


def test_temporal_needs_timestamps():
  with pytest.raises(ValueError, match="order of events"):
    _plan(SplitConfig(protocol=schema.TEMPORAL), [[0, 1, 2]], [[]], has_timestamps=False)


def test_held_out_users():
  # Users 0..9 with lengths 1..10; 20% test users, 20% validation users.
  lengths = list(range(1, 11))
  plan = _plan(SplitConfig(protocol=schema.HELD_OUT_USERS, valid_fraction=0.2, test_fraction=0.2,
                           seed=3),
               [list(range(n)) for n in lengths], [[0]] * 10)
  in_train, in_valid, in_test = (plan.ends[s] > 0 for s in schema.SPLITS)
  # Every user is in exactly one split, with its whole timeline.
  np.testing.assert_array_equal(in_train.astype(int) + in_valid + in_test, np.ones(10))
  np.testing.assert_array_equal(plan.ends["train"] + plan.ends["valid"] + plan.ends["test"], lengths)
  # The documented assignment: a seeded permutation, test users first, then validation
  # users; user 0 (1 event) cannot be split into input and target and stays in train.
  order = np.random.default_rng(3).permutation(10)
  np.testing.assert_array_equal(np.flatnonzero(in_test), sorted(set(order[:2]) - {0}))
  np.testing.assert_array_equal(np.flatnonzero(in_valid), sorted(set(order[2:4]) - {0}))
  assert in_train[0]
  for split in ("valid", "test"):
    for user in np.flatnonzero(plan.ends[split]):
      n = lengths[user]
      assert plan.target_starts[split][user] == min(max(int(0.8 * n), 1), n - 1)
      assert plan.impression_ends[split][user] == 1
  # The same seed gives the same users.
  again = _plan(SplitConfig(protocol=schema.HELD_OUT_USERS, valid_fraction=0.2, test_fraction=0.2,
                            seed=3), [list(range(n)) for n in lengths], [[0]] * 10)
  np.testing.assert_array_equal(again.ends["test"], plan.ends["test"])


@pytest.mark.parametrize("config, message", [
    (SplitConfig(protocol="random"), "Unknown split"),
    (SplitConfig(valid_fraction=0.5, test_fraction=0.5), "below 1"),
    (SplitConfig(input_fraction=1.0), "input_fraction"),
    (SplitConfig(protocol=schema.TEMPORAL, valid_start_time=50, test_start_time=40), "after"),
])
def test_bad_configs(config, message):
  with pytest.raises(ValueError, match=message):
    config.validate()
