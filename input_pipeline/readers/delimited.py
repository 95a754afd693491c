"""Reading delimited text with pyarrow, and errors that name the offending file and line.

pyarrow parses fast but its errors rarely say which line broke. On a parse or
conversion error we re-scan the text in Python (only then) to find the first line that
does not match the expected layout and report `path:line: expected ..., got ...`.
"""

import csv
import gzip
import io
import os
from typing import Dict, Iterable, List, Optional, Sequence

import pyarrow as pa
import pyarrow.csv as pa_csv


def find_file(path: str, candidates: Sequence[str], what: str) -> str:
  """`path` itself if it is a file, else the first of `candidates` inside directory `path`."""
  if os.path.isfile(path):
    return path
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path!r} does not exist; expected {what}.")
  for name in candidates:
    if os.path.isfile(os.path.join(path, name)):
      return os.path.join(path, name)
  raise FileNotFoundError(f"{path!r} holds none of {list(candidates)}; expected {what}. "
                          f"Found: {sorted(os.listdir(path))[:20]}.")


def find_single(path: str, suffixes: Sequence[str], what: str) -> str:
  """`path` itself if it is a file, else the one file in directory `path` ending in a suffix."""
  if os.path.isfile(path):
    return path
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path!r} does not exist; expected {what}.")
  names = sorted(n for n in os.listdir(path) if n.endswith(tuple(suffixes)))
  if len(names) != 1:
    raise FileNotFoundError(f"{path!r} holds {len(names)} files ending in {list(suffixes)} "
                            f"({names[:10]}); expected exactly one, {what}. Pass the file itself "
                            f"with --input.")
  return os.path.join(path, names[0])


def open_text(path: str, encoding: str = "utf-8") -> io.TextIOBase:
  """Opens a text file, gunzipping `*.gz`."""
  if path.endswith(".gz"):
    return gzip.open(path, "rt", encoding=encoding, newline="")
  return open(path, encoding=encoding, newline="")


def read_bytes(path: str) -> bytes:
  with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
    return f.read()


def header_names(path: str, delimiter: str = ",") -> List[str]:
  """Column names in the first line of a CSV file."""
  with open_text(path) as f:
    return next(csv.reader(f, delimiter=delimiter), [])


def require_columns(path: str, available: Sequence[str], required: Dict[str, str]) -> None:
  """Raises a ValueError naming the file when a required column is missing.

  Args:
    path: the file, for the message.
    available: its column names.
    required: column name -> where the requirement comes from (a flag, a format).
  """
  for column, origin in required.items():
    if column not in available:
      raise ValueError(f"{path}: no column {column!r} (required by {origin}); the file has "
                       f"columns {list(available)}.")


def _check_rows(rows: Iterable[List[str]], path: str, first_line: int, num_fields: int,
                int_fields: Sequence[int], float_fields: Sequence[int], expected: str) -> None:
  """Raises a ValueError at the first row that does not fit the expected layout."""
  for line, fields in enumerate(rows, start=first_line):
    if not fields or fields == [""]:
      continue  # pyarrow skips empty lines too
    if len(fields) != num_fields:
      raise ValueError(f"{path}:{line}: expected {expected} ({num_fields} fields), got "
                       f"{len(fields)} fields: {fields!r}.")
    for index, convert, kind in ([(i, int, "an integer") for i in int_fields] +
                                 [(i, float, "a number") for i in float_fields]):
      try:
        convert(fields[index])
      except ValueError:
        raise ValueError(f"{path}:{line}: expected {expected}; field {index + 1} should be "
                         f"{kind}, got {fields[index]!r}.") from None


def read_table(path: str, *, column_names: Optional[Sequence[str]], delimiter: str,
               column_types: Dict[str, pa.DataType], expected: str,
               include_columns: Optional[Sequence[str]] = None,
               data: Optional[bytes] = None) -> pa.Table:
  """Reads a delimited file (or `data`, its already-transformed bytes) into a pa.Table.

  Args:
    path: the file; named in errors, and read unless `data` is given.
    column_names: names of a header-less file; None when the first line is a header.
    delimiter: one character.
    column_types: types to convert columns to (others are inferred).
    expected: a human description of one line, e.g. "'user item'".
    include_columns: columns to keep (None: all).
    data: the file's bytes after a transformation (e.g. '::' replaced by tabs).

  Returns:
    The table.

  Raises:
    ValueError: naming `path:line` of the first malformed line.
  """
  source = pa.BufferReader(data) if data is not None else path
  read_options = pa_csv.ReadOptions(column_names=list(column_names) if column_names else None,
                                    block_size=1 << 24)
  # Tab-separated logs are never quoted; a stray '"' in a title must not open a quote.
  parse_options = pa_csv.ParseOptions(delimiter=delimiter, quote_char=False if delimiter == "\t" else '"')
  convert_options = pa_csv.ConvertOptions(column_types=column_types,
                                          include_columns=include_columns,
                                          strings_can_be_null=False)
  try:
    return pa_csv.read_csv(source, read_options=read_options, parse_options=parse_options,
                           convert_options=convert_options)
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
    names = list(column_names) if column_names else header_names(path, delimiter)
    int_fields = [names.index(c) for c, t in column_types.items() if pa.types.is_integer(t) and c in names]
    float_fields = [names.index(c) for c, t in column_types.items() if pa.types.is_floating(t) and c in names]
    text = (data.decode("utf-8", errors="replace").splitlines() if data is not None else None)
    if text is not None:
      rows = csv.reader(text, delimiter=delimiter, quoting=csv.QUOTE_NONE)
      _check_rows(rows, path, 1, len(names), int_fields, float_fields, expected)
    else:
      with open_text(path) as f:
        rows = csv.reader(f, delimiter=delimiter,
                          quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
        if not column_names:
          next(rows, None)
        _check_rows(rows, path, 1 if column_names else 2, len(names), int_fields, float_fields,
                    expected)
    raise ValueError(f"{path}: could not parse as {expected}: {error}") from error
