"""Reading delimited text with pyarrow, and errors that name the offending file and line.

pyarrow parses fast but its errors rarely say which line broke. On a parse or
conversion error we re-scan the text in Python (only then) to find the first line that
does not match the expected layout and report `path:line: expected ..., got ...`.
Input quoted in a message is cut to an excerpt; bytes that are not UTF-8 (a binary
file) are reported by line and column, a quote that is never closed by the line it
opens on. Reading shows its progress over the file's bytes (`common.cli.progress`).
"""

import contextlib
import csv
import gzip
import io
import os
from typing import BinaryIO, Callable, Dict, Iterator, List, Optional, Sequence

import pyarrow as pa
import pyarrow.csv as pa_csv

from common import cli

_EXCERPT_CHARS = 100


def excerpt(value) -> str:
  """`repr(value)` cut to about 100 characters: messages quote input, never all of it."""
  text = repr(value)
  if len(text) <= _EXCERPT_CHARS:
    return text
  return f"{text[:_EXCERPT_CHARS]}... ({len(text):,} characters)"


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


class _Counted(io.RawIOBase):
  """A binary file that passes the number of bytes of each read to `advance`."""

  def __init__(self, raw: BinaryIO, advance: Callable[[int], None]):
    super().__init__()
    self._raw, self._advance = raw, advance

  def readable(self) -> bool:
    return True

  def readinto(self, buffer) -> Optional[int]:
    count = self._raw.readinto(buffer)
    self._advance(count or 0)
    return count


def _not_text(path: str, expected: str, encoding: str) -> ValueError:
  """The error for a file that is not `encoding` text, naming its first bad byte."""
  name = encoding.upper()
  with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
    for line_number, line in enumerate(f, start=1):
      try:
        line.decode(encoding)
      except UnicodeDecodeError as error:
        return ValueError(
            f"{path}:{line_number}: expected {name} text ({expected}), got byte "
            f"0x{line[error.start]:02x} at column {error.start + 1}, which is not {name}: a "
            f"binary or compressed file? Pass the text file itself (gzipped text needs a name "
            f"ending in .gz), or convert it to {name}.")
  return ValueError(f"{path}: expected {name} text ({expected}); convert it to {name}.")


@contextlib.contextmanager
def _decoding_errors(path: str, expected: str, encoding: str) -> Iterator[None]:
  """Turns a failure to decode `path` inside the block into a ValueError naming the file."""
  try:
    yield
  except UnicodeDecodeError:
    raise _not_text(path, expected, encoding) from None
  except (gzip.BadGzipFile, EOFError) as error:
    raise ValueError(f"{path}: expected gzip-compressed text ({expected}) as the name ends in "
                     f".gz, got {error}. Pass the uncompressed file under a name without .gz, "
                     f"or compress it with gzip.") from None


@contextlib.contextmanager
def _binary(path: str, expected: str, encoding: str = "utf-8") -> Iterator[BinaryIO]:
  """The bytes of `path` (gunzipped for `*.gz`), read with progress and `_decoding_errors`."""
  with open(path, "rb", buffering=0) as raw, \
       cli.progress(f"Reading {os.path.basename(path)}", os.path.getsize(path), "B") as advance, \
       _decoding_errors(path, expected, encoding):
    stream = io.BufferedReader(_Counted(raw, advance), 1 << 20)
    yield gzip.GzipFile(fileobj=stream) if path.endswith(".gz") else stream


@contextlib.contextmanager
def open_text(path: str, expected: str, encoding: str = "utf-8") -> Iterator[io.TextIOBase]:
  """Opens a text file (gunzipping `*.gz`); bytes that are not `encoding` raise a ValueError.

  Args:
    path: the file.
    expected: what it should hold, for messages, e.g. "'user item item ...' lines".
    encoding: the text encoding.
  """
  with _binary(path, expected, encoding) as binary, \
       io.TextIOWrapper(binary, encoding=encoding, newline="") as text:
    yield text


def read_bytes(path: str, expected: str) -> bytes:
  """All bytes of a file (gunzipped for `*.gz`)."""
  with _binary(path, expected) as binary:
    return binary.read()


def header_names(path: str, delimiter: str = ",") -> List[str]:
  """Column names in the first line of a CSV file."""
  with open_text(path, "a CSV file with a header line") as f:
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


def _unclosed_quote(path: str, line: int, expected: str) -> ValueError:
  return ValueError(f"{path}:{line}: expected {expected}; got a '\"' that opens a quoted value "
                    f"not closed on this line. Close the quote, or remove the stray '\"'.")


def _check_rows(rows, path: str, num_fields: int, int_fields: Sequence[int],
                float_fields: Sequence[int], expected: str) -> None:
  """Raises a ValueError at the first row of the `csv.reader` `rows` that does not fit."""
  line = rows.line_num + 1  # where the next row starts
  while True:
    try:
      fields = next(rows, None)
    except csv.Error:  # a value longer than csv.field_size_limit(): a quote not closed
      raise _unclosed_quote(path, line, expected) from None
    if fields is None:
      return
    if fields and fields != [""]:  # pyarrow skips empty lines too
      if len(fields) != num_fields:
        if any("\n" in value or "\r" in value for value in fields):
          raise _unclosed_quote(path, line, expected)
        raise ValueError(f"{path}:{line}: expected {expected} ({num_fields} fields), got "
                         f"{len(fields)} fields: {excerpt(fields)}.")
      for index, convert, kind in ([(i, int, "an integer") for i in int_fields] +
                                   [(i, float, "a number") for i in float_fields]):
        try:
          convert(fields[index])
        except ValueError:
          raise ValueError(f"{path}:{line}: expected {expected}; field {index + 1} should be "
                           f"{kind}, got {excerpt(fields[index])}.") from None
    line = rows.line_num + 1


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
  # Tab-separated logs are never quoted; a stray '"' in a title must not open a quote.
  quoted = delimiter != "\t"
  options = dict(
      read_options=pa_csv.ReadOptions(column_names=list(column_names) if column_names else None,
                                      block_size=1 << 24),
      parse_options=pa_csv.ParseOptions(delimiter=delimiter, quote_char='"' if quoted else False),
      convert_options=pa_csv.ConvertOptions(column_types=column_types,
                                            include_columns=include_columns,
                                            strings_can_be_null=False))
  try:
    if data is not None:
      return pa_csv.read_csv(pa.BufferReader(data), **options)
    with _binary(path, expected) as binary:
      return pa_csv.read_csv(binary, **options)
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
    names = list(column_names) if column_names else header_names(path, delimiter)
    int_fields = [names.index(c) for c, t in column_types.items() if pa.types.is_integer(t) and c in names]
    float_fields = [names.index(c) for c, t in column_types.items() if pa.types.is_floating(t) and c in names]
    if data is None:
      text = open_text(path, expected)
    else:
      with _decoding_errors(path, expected, "utf-8"):
        text = contextlib.nullcontext(io.StringIO(data.decode("utf-8"), newline=""))
    with text as f:
      rows = csv.reader(f, delimiter=delimiter,
                        quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE)
      if not column_names:
        next(rows, None)
      _check_rows(rows, path, len(names), int_fields, float_fields, expected)
    raise ValueError(f"{path}: could not parse as {expected}: {cli.one_line(str(error), 300)}"
                     ) from error
