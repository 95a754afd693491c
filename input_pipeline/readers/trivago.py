"""The trivago RecSys Challenge 2019 session log: clickouts with their impression lists.

CSV with header `user_id,session_id,timestamp,step,action_type,reference,platform,city,
device,current_filters,impressions,prices` (optionally gzipped). Only `clickout item`
rows are used: `reference` is the clicked accommodation (an event at `timestamp`) and
`impressions` the '|'-separated accommodations shown in that result list; the shown
ones other than the clicked one become impressed-but-unclicked rows at the same time.
User features are the platform and device of the user's first clickout.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from absl import logging

from input_pipeline.readers import delimited
from input_pipeline.readers.event_log import EventLog, FeatureTable, factorize

_CLICKOUT = "clickout item"
_COLUMNS = ("user_id", "timestamp", "action_type", "reference", "impressions", "platform", "device")


def read(path: str) -> EventLog:
  """Reads a trivago log file (or the only `*.csv` / `*.csv.gz` of a directory)."""
  path = delimited.find_single(path, (".csv", ".csv.gz"), "a trivago RecSys 2019 CSV log")
  available = delimited.header_names(path)
  delimited.require_columns(path, available, {c: "the trivago format" for c in _COLUMNS[:5]})
  include = [c for c in _COLUMNS if c in available]
  types = {c: pa.string() for c in include if c != "timestamp"}
  types["timestamp"] = pa.int64()
  table = delimited.read_table(path, column_names=None, delimiter=",", column_types=types,
                               include_columns=include,
                               expected="a trivago row with an integer timestamp")
  rows = table.num_rows
  table = table.filter(pc.and_(pc.equal(table["action_type"], _CLICKOUT),
                               pc.not_equal(table["reference"], "")))
  logging.info("Read %d rows from %s, %d clickouts.", rows, path, table.num_rows)
  if table.num_rows == 0:
    raise ValueError(f"{path}: no '{_CLICKOUT}' rows with a reference; nothing to prepare.")

  shown = pc.split_pattern(table["impressions"].combine_chunks(), "|")
  parents = pc.list_parent_indices(shown).to_numpy()
  shown_items = pc.list_flatten(shown)
  clicked = table["reference"].combine_chunks()
  unclicked = pc.and_(pc.not_equal(shown_items, clicked.take(pa.array(parents))),
                      pc.not_equal(shown_items, "")).to_numpy(zero_copy_only=False)
  parents = parents[unclicked]
  codes, item_ids = factorize(pa.concat_arrays([clicked, shown_items.filter(pa.array(unclicked))]))
  users, user_ids = factorize(table["user_id"])
  timestamps = table["timestamp"].to_numpy().astype(np.int64)

  user_features = None
  if "platform" in include and "device" in include:
    _, first_rows = np.unique(users, return_index=True)
    platform = table["platform"].take(pa.array(first_rows)).to_pylist()
    device = table["device"].take(pa.array(first_rows)).to_pylist()
    user_features = FeatureTable.from_rows(
        [[f"platform={p}", f"device={d}"] for p, d in zip(platform, device)])
  return EventLog(
      user_ids=user_ids, item_ids=item_ids, users=users, items=codes[:len(clicked)],
      timestamps=timestamps, impression_users=users[parents], impression_items=codes[len(clicked):],
      impression_timestamps=timestamps[parents], user_features=user_features,
      has_timestamps=True, source=path)
