"""A seeded synthetic interaction log with the structure sequential recommenders learn.

The generative story, all vectorized numpy (10 million events take seconds):
  - Items belong to categories (Zipf-sized) and carry multi-valued features: their
    category, a brand within the category, and one or two tags that neighbouring
    categories share. Item popularity is Zipf (`popularity_exponent`) over a random
    permutation of the ids, so raw ids say nothing about frequency.
  - Each user has 1..`max_interests` interests (categories drawn by popularity) and
    features (age bucket correlated with the first interest, gender, region).
  - A user's events form sessions (geometric lengths, mean `mean_session_length`):
    seconds to minutes apart within a session, about a day and a half between sessions.
    Each session focuses on one of the user's current interests; at each new session,
    with probability `drift_probability`, one interest is replaced by a new category.
  - A click is an item of the session's interest category, drawn by popularity within
    it; with probability `noise_probability` it is a popular item of any category.
  - Every click comes with `impressions_per_event` shown-but-unclicked items at the same
    time: with probability `related_impression_probability` from one of the user's
    current interests, otherwise popular items of any category.
  - Feedback is a watch ratio in (0, 1), higher for interest clicks than for noise clicks.

Sequence lengths are log-normal (at least 3 events, so every user can be evaluated
leave-last-one-out) and sum exactly to `num_events`.
"""

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from input_pipeline.readers.event_log import EventLog, FeatureTable

_MIN_EVENTS_PER_USER = 3
_DAY = 86_400
# Impressions are drawn for this many events at a time, bounding temporary memory.
_IMPRESSION_CHUNK = 2_000_000


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Size and shape of the synthetic log.

  The default (4,000 users, 3,000 items, 150,000 events, about 37 events per user) is
  prepared in a few seconds and lets a few hundred SINE steps plus evaluation finish in
  a few minutes on 2 CPU cores.

  Attributes:
    num_users: users.
    num_items: items in the catalog (a few rarely drawn ones may never occur).
    num_events: clicks in total (at least 3 per user).
    seed: everything is a deterministic function of the config.
    num_categories: item categories (at most `num_items`).
    max_interests: most interests a user holds at once.
    mean_session_length: mean events per session.
    drift_probability: chance that a new session replaces one of the user's interests.
    noise_probability: chance that a click ignores the user's interests.
    impressions_per_event: shown-but-unclicked items logged with each click (0: none).
    related_impression_probability: chance that an unclicked shown item comes from the
      user's interests rather than from the whole catalog.
    popularity_exponent: Zipf exponent of item popularity.
    start_time: unix time of the earliest possible event.
  """
  num_users: int = 4_000
  num_items: int = 3_000
  num_events: int = 150_000
  seed: int = 0
  num_categories: int = 40
  max_interests: int = 4
  mean_session_length: float = 8.0
  drift_probability: float = 0.2
  noise_probability: float = 0.1
  impressions_per_event: int = 2
  related_impression_probability: float = 0.5
  popularity_exponent: float = 0.8
  start_time: int = 1_700_000_000

  def validate(self) -> None:
    if self.num_users < 1 or self.num_items < 2:
      raise ValueError(f"Synthetic data needs at least 1 user and 2 items, got "
                       f"num_users={self.num_users}, num_items={self.num_items}.")
    if self.num_events < _MIN_EVENTS_PER_USER * self.num_users:
      raise ValueError(f"num_events={self.num_events} is below {_MIN_EVENTS_PER_USER} events per "
                       f"user for num_users={self.num_users}; raise num_events to at least "
                       f"{_MIN_EVENTS_PER_USER * self.num_users} or lower num_users.")
    for name in ("drift_probability", "noise_probability", "related_impression_probability"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
    if self.num_categories < 1 or self.max_interests < 1 or self.mean_session_length < 1:
      raise ValueError("num_categories, max_interests and mean_session_length must be >= 1.")
    if self.impressions_per_event < 0:
      raise ValueError(f"impressions_per_event must be >= 0, got {self.impressions_per_event}.")


class _ItemSampler:
  """Draws items by popularity, within given categories or from the whole catalog.

  Items are laid out category by category along one cumulative-weight axis; a draw is a
  point on that axis (anywhere, or inside its category's block) mapped back to the item
  whose weight interval holds it. The mapping uses a guide table (Chen & Asau): the
  axis is cut into equal cells that remember their first item, so a lookup is a couple
  of steps instead of a binary search.
  """

  def __init__(self, categories: np.ndarray, weights: np.ndarray, num_categories: int):
    self._order = np.argsort(categories, kind="stable")
    self._cumulative = np.cumsum(weights[self._order])
    self._total = float(self._cumulative[-1])
    sizes = np.bincount(categories, minlength=num_categories)
    self._ends = np.cumsum(sizes)  # category c occupies [ends[c] - sizes[c], ends[c])
    self._starts = self._ends - sizes
    self._high = self._cumulative[self._ends - 1]
    self._low = self._high - np.bincount(categories, weights=weights, minlength=num_categories)
    self._cells = 2 * len(self._order)
    edges = np.arange(self._cells) * (self._total / self._cells)
    self._guide = np.searchsorted(self._cumulative, edges, side="right")

  def _lookup(self, x: np.ndarray) -> np.ndarray:
    """Positions i with cumulative[i - 1] <= x < cumulative[i] (clipped to the last item)."""
    shape, x = x.shape, x.reshape(-1)
    cell = np.minimum((x * (self._cells / self._total)).astype(np.int64), self._cells - 1)
    position = self._guide[cell]
    last = len(self._cumulative) - 1
    todo = np.flatnonzero((position < last) & (self._cumulative[np.minimum(position, last)] <= x))
    while todo.size:
      position[todo] += 1
      todo = todo[(position[todo] < last) & (self._cumulative[position[todo]] <= x[todo])]
    return np.minimum(position, last).reshape(shape)

  def in_categories(self, rng: np.random.Generator, categories: np.ndarray) -> np.ndarray:
    low = self._low[categories]
    position = self._lookup(low + rng.random(categories.shape) * (self._high[categories] - low))
    # Rounding can land one slot outside the category's block.
    position = np.maximum(np.minimum(position, self._ends[categories] - 1), self._starts[categories])
    return self._order[position]

  def anywhere(self, rng: np.random.Generator, shape) -> np.ndarray:
    return self._order[self._lookup(rng.random(shape) * self._total)]


def _item_features(rng, categories: np.ndarray, num_categories: int) -> FeatureTable:
  """category, brand (about 8 items each, within the category) and 1-2 neighbouring tags."""
  num_items = len(categories)
  brands_per_category = max(1, num_items // (num_categories * 8))
  num_tags = 4 * num_categories
  brand = categories * brands_per_category + rng.integers(0, brands_per_category, num_items)
  first_tag = (categories * 4 + rng.integers(0, 6, num_items)) % num_tags
  ids = np.stack([categories, num_categories + brand,
                  num_categories * (1 + brands_per_category) + first_tag,
                  num_categories * (1 + brands_per_category) + (first_tag + 1) % num_tags], axis=1)
  present = np.ones(ids.shape, bool)
  present[:, 3] = rng.random(num_items) < 0.5
  offsets = np.zeros(num_items + 1, np.int64)
  np.cumsum(present.sum(axis=1), out=offsets[1:])
  names = ([f"category={c}" for c in range(num_categories)] +
           [f"brand={b}" for b in range(num_categories * brands_per_category)] +
           [f"tag={t}" for t in range(num_tags)])
  return FeatureTable(names, offsets, ids[present])


def _user_features(rng, first_interest: np.ndarray) -> FeatureTable:
  num_users = len(first_interest)
  age = (first_interest + rng.integers(0, 2, num_users)) % 6
  ids = np.stack([age, 6 + rng.integers(0, 2, num_users), 8 + rng.integers(0, 20, num_users)], axis=1)
  names = [f"age={a}" for a in range(6)] + ["gender=f", "gender=m"] + [f"region={r}" for r in range(20)]
  return FeatureTable(names, np.arange(0, 3 * num_users + 1, 3, dtype=np.int64), ids.reshape(-1))


def _lengths(rng, num_users: int, num_events: int) -> np.ndarray:
  """Log-normal sequence lengths, each >= 3, summing exactly to num_events."""
  weights = rng.lognormal(0.0, 1.0, num_users)
  extra = num_events - _MIN_EVENTS_PER_USER * num_users
  lengths = _MIN_EVENTS_PER_USER + np.floor(weights / weights.sum() * extra).astype(np.int64)
  remainder = num_events - int(lengths.sum())  # < num_users: each floor lost less than 1
  lengths[rng.choice(num_users, remainder, replace=False)] += 1
  return lengths


def _interest_rows(rng, session_user, first_session, initial, num_interests, drift_probability,
                   category_p):
  """`[num_sessions, max_interests]` interests of the user at each session, with drift."""
  num_sessions, width = len(session_user), initial.shape[1]
  changed = np.zeros((num_sessions, width), bool)
  values = np.zeros((num_sessions, width), np.int64)
  changed[first_session] = True
  values[first_session] = initial[session_user[first_session]]
  drift = np.flatnonzero((rng.random(num_sessions) < drift_probability) & ~first_session)
  slot = rng.integers(0, num_interests[session_user[drift]])
  changed[drift, slot] = True
  values[drift, slot] = rng.choice(len(category_p), size=len(drift), p=category_p)
  # Forward-fill each slot from its last change; a user's first session sets every slot,
  # so nothing carries over from the previous user.
  last = np.where(changed, np.arange(num_sessions)[:, None], 0)
  np.maximum.accumulate(last, axis=0, out=last)
  return values[last, np.arange(width)[None, :]]


def _impressions(rng, config, sampler, users, items, timestamps, session, interests,
                 num_interests):
  """(users, items, timestamps) of the shown-but-unclicked items, `impressions_per_event` per click."""
  shown = config.impressions_per_event
  # Filled chunk by chunk, then cut to the rows kept (no concatenation copy at the end).
  out_users, out_items, out_times = (np.empty(len(users) * shown, np.int64) for _ in range(3))
  filled = 0
  for begin in range(0, len(users) if shown else 0, _IMPRESSION_CHUNK):
    end = min(begin + _IMPRESSION_CHUNK, len(users))
    related = rng.random((end - begin, shown)) < config.related_impression_probability
    candidates = np.empty(related.shape, np.int64)
    # Flat positions instead of 2-d (row, column) indices: np.nonzero of a 2-d mask and
    # 2-d fancy indexing are several times slower than their flat counterparts.
    flat = np.flatnonzero(related)
    event = flat // shown + begin
    slots = rng.integers(0, num_interests[users[event]])
    candidates.reshape(-1)[flat] = sampler.in_categories(
        rng, interests.reshape(-1)[session[event] * interests.shape[1] + slots])
    candidates[~related] = sampler.anywhere(rng, int(related.size - len(event)))
    keep = candidates != items[begin:end, None]  # the clicked item is not "unclicked"
    kept = int(keep.sum())
    out_users[filled:filled + kept] = np.broadcast_to(users[begin:end, None], keep.shape)[keep]
    out_items[filled:filled + kept] = candidates[keep]
    out_times[filled:filled + kept] = np.broadcast_to(timestamps[begin:end, None], keep.shape)[keep]
    filled += kept
  return out_users[:filled], out_items[:filled], out_times[:filled]


def generate(config: SyntheticConfig = SyntheticConfig()) -> EventLog:
  """Generates the log described in the module docstring."""
  config.validate()
  rng = np.random.default_rng(config.seed)
  num_users, num_items, num_events = config.num_users, config.num_items, config.num_events
  num_categories = min(config.num_categories, num_items)

  category_size_p = 1.0 / np.arange(1, num_categories + 1) ** 0.8
  category_size_p /= category_size_p.sum()
  categories = np.concatenate([np.arange(num_categories),  # no empty category
                               rng.choice(num_categories, num_items - num_categories, p=category_size_p)])
  categories = categories[rng.permutation(num_items)]
  popularity = (rng.permutation(num_items) + 1.0) ** -config.popularity_exponent
  sampler = _ItemSampler(categories, popularity, num_categories)
  category_p = np.bincount(categories, weights=popularity, minlength=num_categories)
  category_p /= category_p.sum()

  num_interests = rng.integers(1, config.max_interests + 1, num_users)
  initial = rng.choice(num_categories, size=(num_users, config.max_interests), p=category_p)

  lengths = _lengths(rng, num_users, num_events)
  users = np.repeat(np.arange(num_users, dtype=np.int64), lengths)
  starts = np.cumsum(lengths) - lengths
  first_event = np.zeros(num_events, bool)
  first_event[starts] = True
  new_session = first_event | (rng.random(num_events) < 1.0 / config.mean_session_length)
  session = np.cumsum(new_session.astype(np.int64)) - 1  # bool cumsum is ~8x slower
  session_user = users[new_session]
  interests = _interest_rows(rng, session_user, first_event[new_session], initial, num_interests,
                             config.drift_probability, category_p)
  focus = rng.integers(0, num_interests[session_user])
  event_category = interests[np.arange(len(session_user)), focus][session]

  items = sampler.in_categories(rng, event_category)
  del event_category
  noise = rng.random(num_events) < config.noise_probability
  items[noise] = sampler.anywhere(rng, int(noise.sum()))
  # Watch ratio: uniform on (0.4, 1) for interest clicks, on (0, 0.6) for noise clicks.
  feedback = (rng.random(num_events, np.float32) * np.float32(0.6) +
              np.where(noise, np.float32(0.0), np.float32(0.4)))

  # Exponential gaps: mean 1.5 days (+30 min) between sessions, 2 min (+30 s) within.
  gaps = (rng.exponential(1.0, num_events) * np.where(new_session, 1.5 * _DAY, 120.0) +
          np.where(new_session, 1_800, 30)).astype(np.int64)
  gaps[starts] = rng.integers(0, 30 * _DAY, num_users)
  elapsed = np.cumsum(gaps)
  timestamps = config.start_time + elapsed - np.repeat(elapsed[starts] - gaps[starts], lengths)
  del gaps, elapsed

  impressions = _impressions(rng, config, sampler, users, items, timestamps, session,
                             interests, num_interests)

  def raw_ids(n):
    return pc.cast(pa.array(np.arange(1, n + 1)), pa.string())

  return EventLog(
      user_ids=raw_ids(num_users), item_ids=raw_ids(num_items),
      users=users, items=items, timestamps=timestamps, feedback=feedback,
      impression_users=impressions[0], impression_items=impressions[1],
      impression_timestamps=impressions[2],
      item_features=_item_features(rng, categories, num_categories),
      user_features=_user_features(rng, initial[:, 0]),
      has_timestamps=True,
      source=(f"synthetic(users={num_users}, items={num_items}, events={num_events}, "
              f"seed={config.seed})"))
