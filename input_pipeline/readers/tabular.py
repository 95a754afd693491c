"""Generic interaction tables: CSV (optionally gzipped) or Parquet with named columns.

One row per interaction. Column names come from `TableColumns` (the prepare flags
`--user_column`, `--item_column`, ...):
  user, item        required, strings or integers (kept as strings); a missing or
                    empty id is an error naming its row.
  timestamp         unix seconds as integers or floats (fractions are dropped), or a
                    date-time column, never true/false; empty name: the rows' order
                    within each user is the sequence order (`has_timestamps` False).
  rating            optional number, stored as feedback.
  category          optional item category; values split on `category_separator` become
                    multi-valued item features "category=<value>" (an item's first row wins).
  label             optional click label: rows with label 0 are impressed-but-unclicked
                    items (impressions), all other rows are clicks.

The yoochoose sample (`uid,timestamp,sid`, float seconds) is such a table (`YOOCHOOSE`).
"""

import dataclasses
import os
from typing import Dict, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from absl import logging

from common import cli
from input_pipeline.readers import delimited
from input_pipeline.readers.event_log import EventLog, FeatureTable, factorize
from input_pipeline.readers.sasrec import positions_within_users

_TIME_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


@dataclasses.dataclass(frozen=True)
class TableColumns:
  """Column names and CSV options of a generic interaction table.

  Attributes:
    user: user id column.
    item: item id column.
    timestamp: time column; "" for order-only data.
    rating: feedback column or "".
    category: item category column or "".
    label: click label column or "" (0 = impressed, not clicked).
    category_separator: separates several categories in one cell.
    delimiter: CSV field delimiter.
  """
  user: str = "user_id"
  item: str = "item_id"
  timestamp: str = "timestamp"
  rating: str = ""
  category: str = ""
  label: str = ""
  category_separator: str = "|"
  delimiter: str = ","


YOOCHOOSE = TableColumns(user="uid", item="sid", timestamp="timestamp")


def _first_bad(values: pa.ChunkedArray, convert) -> Optional[int]:
  """Index of the first null or unconvertible value (slow path, used only for errors)."""
  for index, value in enumerate(values.to_pylist()):
    try:
      if value is None:
        return index
      convert(value)
    except (TypeError, ValueError):
      return index
  return None


def _row_error(path: str, is_csv: bool, index: int, column: str, value, expected: str,
               fix: str = "") -> ValueError:
  where = f"line {index + 2}" if is_csv else f"row {index + 1}"  # CSV line 1 is the header
  got = "an empty value" if value is None else delimited.excerpt(value)
  return ValueError(f"{path}: {where}: column {column!r} should be {expected}, got {got}.{fix}")


def _numbers(table: pa.Table, column: str, path: str, is_csv: bool, expected: str) -> np.ndarray:
  """float64 values of a numeric column; a row-naming error for text, missing or infinite values."""
  values = table[column]
  if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type) or
          pa.types.is_boolean(values.type)) or values.null_count:
    bad = _first_bad(values, float)
    if bad is not None:
      raise _row_error(path, is_csv, bad, column, values[bad].as_py(), expected)
    values = pc.cast(values, pa.float64())
  numbers = pc.cast(values, pa.float64()).to_numpy()
  if not np.isfinite(numbers).all():
    bad = int(np.flatnonzero(~np.isfinite(numbers))[0])
    raise _row_error(path, is_csv, bad, column, float(numbers[bad]), expected)
  return numbers


def _seconds(table: pa.Table, column: str, path: str, is_csv: bool) -> np.ndarray:
  """int64 unix seconds from numbers, date-times or dates; never from booleans."""
  values = table[column]
  if pa.types.is_boolean(values.type):
    raise ValueError(f"{path}: column {column!r} (--timestamp_column) holds true/false values; "
                     f"expected unix seconds or date-times. Name the time column with "
                     f"--timestamp_column, or pass --timestamp_column= for data without times.")
  if pa.types.is_date(values.type):
    values = pc.cast(values, pa.timestamp("s"))
  if pa.types.is_timestamp(values.type):
    if values.null_count:
      bad = _first_bad(values, lambda v: v)
      raise _row_error(path, is_csv, bad, column, None, "a date-time")
    raw = pc.cast(values, pa.int64()).to_numpy()
    return np.floor_divide(raw, _TIME_UNITS[values.type.unit])
  return np.floor(_numbers(table, column, path, is_csv, "unix seconds (a number) or a date-time")
                  ).astype(np.int64)


def _ids(table: pa.Table, column: str, path: str, is_csv: bool) -> Tuple[np.ndarray, pa.Array]:
  """`factorize`d ids of a user or item column; a missing or empty id is an error naming its row."""
  values = table[column]
  kind = values.type.value_type if pa.types.is_dictionary(values.type) else values.type
  if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)):
    raise ValueError(f"{path}: column {column!r} holds {values.type} values; expected ids as "
                     f"strings or integers (floats often mean that missing ids became NaN). "
                     f"Convert the column, or name another one.")
  fix = " Remove the rows without an id, or fill them in."
  if values.null_count:
    raise _row_error(path, is_csv, pc.index(pc.is_null(values), True).as_py(), column, None,
                     "a non-empty id", fix)
  codes, ids = factorize(pc.cast(values, pa.string()))
  empty = pc.index(ids, "").as_py()
  if empty >= 0:
    raise _row_error(path, is_csv, int(np.argmax(codes == empty)), column, None,
                     "a non-empty id", fix)
  return codes, ids


def _read_parquet(path: str, wanted: Dict[str, str]) -> pa.Table:
  """The `wanted` columns (name -> flag) of a Parquet file, row group by row group."""
  try:
    parquet = pq.ParquetFile(path)
    schema = parquet.schema_arrow
    delimited.require_columns(path, schema.names, wanted)
    for column, flag in wanted.items():
      if pa.types.is_nested(schema.field(column).type):
        raise ValueError(f"{path}: column {column!r} ({flag}) holds {schema.field(column).type} "
                         f"values; expected one plain value (a string, number or date-time) per "
                         f"row. Store one value per row (explode the lists), or name another "
                         f"column with {flag}.")
    groups = []
    with cli.progress(f"Reading {os.path.basename(path)}", parquet.metadata.num_rows,
                      "rows") as advance:
      for index in range(parquet.num_row_groups):
        groups.append(parquet.read_row_group(index, columns=list(wanted)))
        advance(groups[-1].num_rows)
    return pa.concat_tables(groups) if groups else parquet.read(columns=list(wanted))
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as error:  # not Parquet, damaged
    raise ValueError(f"{path}: expected a Parquet file, got one that pyarrow cannot read "
                     f"({cli.one_line(str(error), 200)}). Pass a Parquet file, or "
                     f"--dataset=csv for CSV text.") from None


def _read(path: str, columns: TableColumns, is_csv: bool) -> pa.Table:
  flags = {"--user_column": columns.user, "--item_column": columns.item,
           "--timestamp_column": columns.timestamp, "--rating_column": columns.rating,
           "--category_column": columns.category, "--label_column": columns.label}
  wanted = {name: flag for flag, name in flags.items() if name}
  if not is_csv:
    return _read_parquet(path, wanted)
  available = delimited.header_names(path, columns.delimiter)
  delimited.require_columns(path, available, wanted)
  string_columns = [c for c in (columns.user, columns.item, columns.category) if c]
  return delimited.read_table(
      path, column_names=None, delimiter=columns.delimiter,
      column_types={c: pa.string() for c in string_columns}, include_columns=list(wanted),
      expected=f"a row with the columns {available}")


def read(path: str, columns: TableColumns = TableColumns(), file_format: str = "") -> EventLog:
  """Reads a CSV/Parquet interaction table.

  Args:
    path: the file, or a directory holding exactly one `.csv`, `.csv.gz`, `.txt`,
      `.tsv` or `.parquet` file.
    columns: the column names.
    file_format: "csv" or "parquet"; "" decides by the file name (`.parquet`/`.pq`).

  Returns:
    The event log.
  """
  path = delimited.find_single(path, (".csv", ".csv.gz", ".txt", ".tsv", ".parquet", ".pq"),
                               "a CSV or Parquet interaction table")
  is_csv = (file_format == "csv" or
            (not file_format and not path.endswith((".parquet", ".pq"))))
  table = _read(path, columns, is_csv)
  logging.info("Read %d rows from %s.", table.num_rows, path)
  if table.num_rows == 0:
    raise ValueError(f"{path}: the table has no rows.")
  users, user_ids = _ids(table, columns.user, path, is_csv)
  items, item_ids = _ids(table, columns.item, path, is_csv)
  if columns.timestamp:
    timestamps = _seconds(table, columns.timestamp, path, is_csv)
  else:
    timestamps = positions_within_users(users)
  feedback = (_numbers(table, columns.rating, path, is_csv, "a number").astype(np.float32)
              if columns.rating else None)
  clicked = (_numbers(table, columns.label, path, is_csv, "a click label (0 = not clicked)") != 0
             if columns.label else np.ones(table.num_rows, bool))

  item_features = None
  if columns.category:
    _, first_rows = np.unique(items, return_index=True)
    cells = table[columns.category].take(pa.array(first_rows)).to_pylist()
    item_features = FeatureTable.from_rows(
        [[f"category={v}" for v in (cell or "").split(columns.category_separator) if v]
         for cell in cells])
  del table
  log = EventLog(user_ids=user_ids, item_ids=item_ids, users=users, items=items,
                 timestamps=timestamps, feedback=feedback, item_features=item_features,
                 has_timestamps=bool(columns.timestamp), source=os.path.abspath(path))
  if clicked.all():
    return log
  shown = ~clicked
  return dataclasses.replace(
      log, users=users[clicked], items=items[clicked], timestamps=timestamps[clicked],
      feedback=feedback[clicked] if feedback is not None else None,
      impression_users=users[shown], impression_items=items[shown],
      impression_timestamps=timestamps[shown])
