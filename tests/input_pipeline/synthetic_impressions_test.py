"""The synthetic generator's impressions are XDM's "intermediate feedback".

XDM (../shared/papers/xdm.md, section 1 and 3.3) assumes that the items a user was
shown but did not click are closer to the user's interests than random items and
farther than the items the user clicks. Measured on the generated log with no access
to the generator's hidden interests: a user's profile is the category distribution of
the first half of their clicks; on the second half of their timeline, the mean
profile weight of the categories of (a) the clicked items, (b) the shown-but-unclicked
items and (c) random catalog items (uniform, and drawn by popularity) must be ordered
(a) > (b) > (c).
"""

import numpy as np

from input_pipeline import synthetic


def _category_affinity():
  log = synthetic.generate(synthetic.SyntheticConfig(
      num_users=600, num_items=500, num_events=20_000, num_categories=15, seed=3))
  table = log.item_features
  category = np.asarray(table.values)[np.asarray(table.offsets)[:-1]]  # first feature: category
  users, items, times = (np.asarray(a) for a in (log.users, log.items, log.timestamps))
  num_users, num_categories = int(users.max()) + 1, int(category.max()) + 1
  # Each user's split time: the median of their click times.
  split = np.array([np.median(times[users == u]) for u in range(num_users)])
  early = times <= split[users]
  profile = np.zeros([num_users, num_categories])
  np.add.at(profile, (users[early], category[items[early]]), 1.0)
  profile /= np.maximum(profile.sum(axis=1, keepdims=True), 1.0)

  late = ~early
  clicked = profile[users[late], category[items[late]]].mean()
  shown_users, shown_items, shown_times = (np.asarray(a) for a in (
      log.impression_users, log.impression_items, log.impression_timestamps))
  later = shown_times > split[shown_users]
  unclicked = profile[shown_users[later], category[shown_items[later]]].mean()
  rng = np.random.default_rng(0)
  random_users = rng.integers(0, num_users, 50_000)
  uniform = profile[random_users, category[rng.integers(0, len(category), 50_000)]].mean()
  popularity = np.bincount(items, minlength=len(category)) / len(items)
  popular = profile[random_users, category[rng.choice(len(category), 50_000, p=popularity)]].mean()
  return clicked, unclicked, uniform, popular


def test_unclicked_impressions_lie_between_clicks_and_random_items():
  clicked, unclicked, uniform, popular = _category_affinity()
  assert clicked > unclicked > max(uniform, popular)
  # Clearly apart, not by noise: at least 1.5x at each step on this log.
  assert clicked > 1.5 * unclicked and unclicked > 1.5 * max(uniform, popular)
