"""The columnar interaction log every reader returns, and the operations prepare runs on it.

A reader turns a raw file into one `EventLog`: parallel numpy columns (one row per click,
one row per impressed-but-unclicked item) with users and items as dense codes into
`user_ids` / `item_ids`. Nothing here is per-event Python objects, so a 10-million-event
log costs a few hundred megabytes and every step is a handful of vectorized passes.
"""

import dataclasses
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_EMPTY_INT = np.zeros(0, np.int64)


@dataclasses.dataclass
class FeatureTable:
  """Multi-valued categorical features of users or items, as compressed rows.

  Row r (a user or item code) carries `names[values[offsets[r]:offsets[r + 1]]]`.

  Attributes:
    names: feature names such as "genre=Comedy" `[num_features]`.
    offsets: int64 `[num_rows + 1]`.
    values: int64 `[nnz]` indices into `names`.
  """
  names: List[str]
  offsets: np.ndarray
  values: np.ndarray

  @property
  def num_rows(self) -> int:
    return len(self.offsets) - 1

  @classmethod
  def from_rows(cls, rows: Sequence[Sequence[str]]) -> "FeatureTable":
    """Builds the table from per-row lists of feature names (duplicates within a row dropped)."""
    index = {}
    values, lengths = [], []
    for row in rows:
      unique = list(dict.fromkeys(row))
      values.extend(index.setdefault(name, len(index)) for name in unique)
      lengths.append(len(unique))
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return cls(list(index), offsets, np.asarray(values, np.int64))

  def take(self, rows: np.ndarray) -> "FeatureTable":
    """The table restricted to `rows` (in that order)."""
    starts, ends = self.offsets[rows], self.offsets[np.asarray(rows) + 1]
    lengths = ends - starts
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return FeatureTable(self.names, offsets, self.values[ranges(starts, lengths)])

  def by_count(self) -> Tuple["FeatureTable", np.ndarray]:
    """Renumbers features by descending row count (ties by name), dropping unused ones.

    Returns:
      The renumbered table and the counts `[num_used_features]` in the new order.
    """
    counts = np.bincount(self.values, minlength=len(self.names))
    used = np.flatnonzero(counts)
    order = used[sorted(range(len(used)), key=lambda i: (-counts[used[i]], self.names[used[i]]))]
    new_index = np.full(len(self.names), -1, np.int64)
    new_index[order] = np.arange(len(order))
    return FeatureTable([self.names[i] for i in order], self.offsets,
                        new_index[self.values]), counts[order]


@dataclasses.dataclass
class EventLog:
  """An interaction log in columns.

  Attributes:
    user_ids: raw user ids, `pa.StringArray [num_users]`; user code u is `user_ids[u]`.
    item_ids: raw item ids, `pa.StringArray [num_items]`.
    users: int64 `[num_events]` user codes of the clicks / interactions.
    items: int64 `[num_events]` item codes.
    timestamps: int64 `[num_events]` unix seconds, or positions for order-only data.
    feedback: float32 `[num_events]` (rating, watch ratio...) or None.
    impression_users: int64 `[num_impressions]`, impressed-but-unclicked rows.
    impression_items: int64 `[num_impressions]`.
    impression_timestamps: int64 `[num_impressions]`.
    item_features: features per item code, or None.
    user_features: features per user code, or None.
    has_timestamps: False when `timestamps` are only positions in each user's sequence.
    source: what was read (for stats.json and messages).
  """
  user_ids: pa.Array
  item_ids: pa.Array
  users: np.ndarray
  items: np.ndarray
  timestamps: np.ndarray
  feedback: Optional[np.ndarray] = None
  impression_users: np.ndarray = dataclasses.field(default_factory=lambda: _EMPTY_INT)
  impression_items: np.ndarray = dataclasses.field(default_factory=lambda: _EMPTY_INT)
  impression_timestamps: np.ndarray = dataclasses.field(default_factory=lambda: _EMPTY_INT)
  item_features: Optional[FeatureTable] = None
  user_features: Optional[FeatureTable] = None
  has_timestamps: bool = True
  source: str = ""

  @property
  def num_events(self) -> int:
    return len(self.users)

  @property
  def num_users(self) -> int:
    return len(self.user_ids)

  @property
  def num_items(self) -> int:
    return len(self.item_ids)

  @property
  def num_impressions(self) -> int:
    return len(self.impression_users)

  def validate(self) -> None:
    """Checks that the columns line up and no id is empty; raises ValueError naming the source."""
    n, m = self.num_events, self.num_impressions
    columns = {"items": self.items, "timestamps": self.timestamps}
    if self.feedback is not None:
      columns["feedback"] = self.feedback
    for name, column in columns.items():
      if len(column) != n:
        raise ValueError(f"{self.source}: {n} users but {len(column)} {name} values.")
    for name in ("impression_items", "impression_timestamps"):
      if len(getattr(self, name)) != m:
        raise ValueError(f"{self.source}: {m} impression users but {len(getattr(self, name))} {name}.")
    for ids, what in ((self.user_ids, "user"), (self.item_ids, "item")):
      if ids.null_count or pc.index(ids, "").as_py() >= 0:
        raise ValueError(f"{self.source}: an empty {what} id; expected every event to name its "
                         f"{what}. Remove the lines or rows without one.")
    for codes, ids, what in ((self.users, self.user_ids, "user"), (self.items, self.item_ids, "item"),
                             (self.impression_users, self.user_ids, "user"),
                             (self.impression_items, self.item_ids, "item")):
      if len(codes) and (codes.min() < 0 or codes.max() >= len(ids)):
        raise ValueError(f"{self.source}: {what} codes outside [0, {len(ids)}).")
    for table, rows, what in ((self.item_features, self.num_items, "item"),
                              (self.user_features, self.num_users, "user")):
      if table is not None and table.num_rows != rows:
        raise ValueError(f"{self.source}: {what} feature table has {table.num_rows} rows, "
                         f"expected {rows}.")


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """Concatenation of `arange(starts[i], starts[i] + lengths[i])`, int64 `[sum(lengths)]`."""
  starts = np.asarray(starts, np.int64)
  lengths = np.asarray(lengths, np.int64)
  total = int(lengths.sum())
  if total == 0:
    return np.zeros(0, np.int64)
  cumulative = np.cumsum(lengths)
  index = np.repeat(starts - (cumulative - lengths), lengths)
  index += np.arange(total, dtype=np.int64)
  return index


def factorize(values: pa.Array) -> Tuple[np.ndarray, pa.Array]:
  """Dense codes in order of first appearance: `(codes int64 [n], unique ids as strings)`."""
  encoded = pc.dictionary_encode(values)
  if isinstance(encoded, pa.ChunkedArray):
    encoded = encoded.combine_chunks()
  codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
  return codes, encoded.dictionary.cast(pa.string())


def features_for(ids: pa.Array, table: Mapping[str, Sequence[str]]) -> FeatureTable:
  """Feature table for the raw `ids` (rows in code order) from a raw id -> names mapping."""
  return FeatureTable.from_rows([table.get(raw_id, ()) for raw_id in ids.to_pylist()])


def filter_log(log: EventLog, *, min_item_count: int, min_user_events: int) -> EventLog:
  """Drops rare items, then users with too few remaining events, and re-codes densely.

  One pass in that order (not an iterated k-core): items with fewer than `min_item_count`
  interactions disappear together with their impressions; then users with fewer than
  `min_user_events` remaining interactions (and always users with none) disappear.

  Raises:
    ValueError: when nothing is left.
  """
  keep_events = np.ones(log.num_events, bool)
  keep_impressions = np.ones(log.num_impressions, bool)
  if min_item_count > 0:
    item_counts = np.bincount(log.items, minlength=log.num_items)
    keep_events &= item_counts[log.items] >= min_item_count
    keep_impressions &= item_counts[log.impression_items] >= min_item_count
  user_counts = np.bincount(log.users[keep_events], minlength=log.num_users)
  keep_users = user_counts >= max(1, min_user_events)
  keep_events &= keep_users[log.users]
  keep_impressions &= keep_users[log.impression_users]
  if not keep_events.any():
    raise ValueError(
        f"{log.source}: no events left after filtering {log.num_events} events with "
        f"min_item_count={min_item_count} and min_user_events={min_user_events}; lower the "
        f"thresholds.")

  columns = ("users", "items", "timestamps", "feedback")
  changes = {}
  if not keep_events.all():
    changes.update({c: getattr(log, c)[keep_events] for c in columns if getattr(log, c) is not None})
  if not keep_impressions.all():
    changes.update({c: getattr(log, c)[keep_impressions]
                    for c in ("impression_users", "impression_items", "impression_timestamps")})
  log = dataclasses.replace(log, **changes)

  users_present = np.bincount(log.users, minlength=log.num_users) > 0
  items_present = (np.bincount(log.items, minlength=log.num_items) +
                   np.bincount(log.impression_items, minlength=log.num_items)) > 0
  if users_present.all() and items_present.all():
    return log
  user_rows, item_rows = np.flatnonzero(users_present), np.flatnonzero(items_present)
  user_codes = np.cumsum(users_present) - 1
  item_codes = np.cumsum(items_present) - 1
  return dataclasses.replace(
      log,
      user_ids=log.user_ids.take(pa.array(user_rows)),
      item_ids=log.item_ids.take(pa.array(item_rows)),
      users=user_codes[log.users],
      items=item_codes[log.items],
      impression_users=user_codes[log.impression_users],
      impression_items=item_codes[log.impression_items],
      item_features=log.item_features.take(item_rows) if log.item_features else None,
      user_features=log.user_features.take(user_rows) if log.user_features else None)


def _is_sorted(users: np.ndarray, timestamps: np.ndarray) -> bool:
  """Whether rows are ordered by (user, timestamp); boolean temporaries only."""
  if np.any(users[1:] < users[:-1]):
    return False
  return not np.any((timestamps[1:] < timestamps[:-1]) & (users[1:] == users[:-1]))


def sort_into_timelines(log: EventLog) -> Tuple[np.ndarray, np.ndarray]:
  """Sorts the log's columns by (user, timestamp), ties keeping their input order.

  The columns are replaced one at a time, so at most one extra column is alive.

  Returns:
    `(offsets, impression_offsets)`, int64 `[num_users + 1]` each: user u's events are
    rows `offsets[u]:offsets[u + 1]`, its impressions likewise.
  """
  for user_column, time_column, names in (
      ("users", "timestamps", ("users", "timestamps", "items", "feedback")),
      ("impression_users", "impression_timestamps",
       ("impression_users", "impression_timestamps", "impression_items"))):
    users, timestamps = getattr(log, user_column), getattr(log, time_column)
    if len(users) and not _is_sorted(users, timestamps):
      order = np.lexsort((timestamps, users))  # stable: equal keys keep their input order
      del users, timestamps
      for name in names:
        if getattr(log, name) is not None:
          setattr(log, name, getattr(log, name)[order])
  offsets = np.zeros(log.num_users + 1, np.int64)
  np.cumsum(np.bincount(log.users, minlength=log.num_users), out=offsets[1:])
  impression_offsets = np.zeros(log.num_users + 1, np.int64)
  np.cumsum(np.bincount(log.impression_users, minlength=log.num_users), out=impression_offsets[1:])
  return offsets, impression_offsets
