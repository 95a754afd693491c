"""The synthetic generator: sizes, determinism, and the structure models should learn."""

import dataclasses

import numpy as np
import pytest

from input_pipeline.synthetic import SyntheticConfig, generate

_SMALL = SyntheticConfig(num_users=300, num_items=500, num_events=12_000, num_categories=20)


@pytest.fixture(scope="module")
def log():
  return generate(_SMALL)


def _item_category(log):
  # The first feature of every item is its category ("category=<c>" has feature id c).
  return log.item_features.values[log.item_features.offsets[:-1]]


def test_sizes_and_ranges(log):
  log.validate()
  assert log.num_events == 12_000 and log.num_users == 300 and log.num_items == 500
  assert np.bincount(log.users, minlength=300).min() >= 3
  assert log.has_timestamps
  assert 0.0 < log.feedback.min() and log.feedback.max() < 1.0
  # Up to 2 unclicked items per click; the clicked item itself is removed when drawn.
  assert 0.9 * 2 * 12_000 < log.num_impressions <= 2 * 12_000
  assert log.user_features.num_rows == 300 and log.item_features.num_rows == 500
  assert all(name.startswith(("category=", "brand=", "tag=")) for name in log.item_features.names)


def test_deterministic_by_seed(log):
  again = generate(_SMALL)
  np.testing.assert_array_equal(again.items, log.items)
  np.testing.assert_array_equal(again.timestamps, log.timestamps)
  np.testing.assert_array_equal(again.impression_items, log.impression_items)
  other = generate(dataclasses.replace(_SMALL, seed=1))
  assert not np.array_equal(other.items, log.items)


def test_timelines_are_sorted_with_session_gaps(log):
  same_user = np.diff(log.users) == 0
  gaps = np.diff(log.timestamps)[same_user]
  assert gaps.min() >= 30  # in-session gaps are 30 s + exponential
  # A new session (gap >= 30 min) starts with probability 1/8 per event.
  assert 0.08 < np.mean(gaps >= 1_800) < 0.17


def test_popularity_is_skewed(log):
  counts = np.sort(np.bincount(log.items, minlength=log.num_items))[::-1]
  # Zipf(0.8) over 500 items gives the top 5% of items far more than 5% of the clicks.
  assert counts[:25].sum() > 0.25 * log.num_events


def test_consecutive_clicks_share_interests(log):
  """Sessions focus on one interest: learnable structure beyond popularity."""
  category = _item_category(log)[log.items]
  same_user = np.diff(log.users) == 0
  same_category = (np.diff(category) == 0)[same_user].mean()
  shares = np.bincount(category) / len(category)
  chance = (shares ** 2).sum()  # two independent clicks in the same category
  assert same_category > 0.5 > 3 * chance


def test_unclicked_impressions_are_related_more_often_than_random(log):
  category = _item_category(log)
  clicked = set(zip(log.users.tolist(), category[log.items].tolist()))
  related = np.mean([(u, c) in clicked for u, c in
                     zip(log.impression_users.tolist(), category[log.impression_items].tolist())])
  rng = np.random.default_rng(0)
  random_items = rng.integers(0, log.num_items, log.num_impressions)
  baseline = np.mean([(u, c) in clicked for u, c in
                      zip(log.impression_users.tolist(), category[random_items].tolist())])
  assert related > baseline + 0.2


def test_interests_drift():
  def categories_per_user(drift):
    log = generate(dataclasses.replace(_SMALL, drift_probability=drift, noise_probability=0.0))
    category = _item_category(log)[log.items]
    return np.mean([len(set(category[log.users == u])) for u in range(log.num_users)])
  # Without drift a user only ever clicks its <= 4 interests; with drift it wanders.
  assert categories_per_user(0.0) <= 4
  assert categories_per_user(1.0) > categories_per_user(0.0) + 1


def test_too_few_events_is_a_clear_error():
  with pytest.raises(ValueError, match="at least 3 events per user|below 3 events per user"):
    generate(SyntheticConfig(num_users=10, num_items=5, num_events=20))
