"""SASRec-style interaction files: one `user item` pair per line, in chronological order.

The format of SASRec's `data/*.txt` (e.g. `ml-1m.txt`): user and item ids separated by
one space, each user's lines in the order the interactions happened. There are no
timestamps, so an event's timestamp is its position in the user's sequence
(`has_timestamps` is False).
"""

import numpy as np
import pyarrow as pa
from absl import logging

from input_pipeline.readers import delimited
from input_pipeline.readers.event_log import EventLog, factorize


def positions_within_users(users: np.ndarray) -> np.ndarray:
  """0, 1, 2, ... counting each user's rows in file order (order-only timestamps)."""
  order = np.argsort(users, kind="stable")
  counts = np.bincount(users)
  starts = np.repeat(np.cumsum(counts) - counts, counts)
  positions = np.empty(len(users), np.int64)
  positions[order] = np.arange(len(users)) - starts
  return positions


def read(path: str) -> EventLog:
  """Reads a `user item` pair file (or the only `*.txt` file of a directory)."""
  path = delimited.find_single(path, (".txt",), "a SASRec 'user item' file")
  table = delimited.read_table(path, column_names=("user", "item"), delimiter=" ",
                               column_types={"user": pa.string(), "item": pa.string()},
                               expected="'user item'")
  logging.info("Read %d interactions from %s.", table.num_rows, path)
  users, user_ids = factorize(table["user"])
  items, item_ids = factorize(table["item"])
  del table
  return EventLog(user_ids=user_ids, item_ids=item_ids, users=users, items=items,
                  timestamps=positions_within_users(users), has_timestamps=False, source=path)
