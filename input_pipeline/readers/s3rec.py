"""S3-Rec-style sequence files: `user item item ...`, one user a line, items in order.

The format of the S3-Rec repository's `data/*.txt` (amazon_beauty's Beauty.txt,
amazon_toys' Toys_and_Games.txt, lastfm_hetrec_s3rec's LastFM.txt): space-separated ids,
the user first, then that user's items in chronological order. Every user appears on
one line. There are no timestamps, so an event's timestamp is its position in the
sequence (`has_timestamps` is False).

Item attributes come from `<name>_item2attributes.json` beside the sequence file, a JSON
object `{"<item id>": [attribute id, ...]}`; they become item features "attribute=<id>".
"""

import json
import os
from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa
from absl import logging

from input_pipeline.readers import delimited
from input_pipeline.readers.event_log import EventLog, factorize, features_for

# The files of the S3-Rec data sets, for --dataset=NAME with --input=DIR.
FILES = {
    "amazon_beauty": "Beauty.txt",
    "amazon_toys": "Toys_and_Games.txt",
    "lastfm_hetrec_s3rec": "LastFM.txt",
}
_ATTRIBUTES_SUFFIX = "_item2attributes.json"


def _attributes_file(sequence_file: str) -> Optional[str]:
  stem = os.path.splitext(sequence_file)[0]
  path = stem + _ATTRIBUTES_SUFFIX
  return path if os.path.exists(path) else None


def read_attributes(path: str) -> Dict[str, List[str]]:
  """item id -> ["attribute=<id>", ...] from an `*_item2attributes.json` file."""
  with delimited.open_text(path, "a JSON object") as f:
    try:
      table = json.load(f)
    except json.JSONDecodeError as error:
      raise ValueError(f"{path}:{error.lineno}: expected a JSON object "
                       f"{{\"<item id>\": [attribute ids]}}: {error.msg}.") from None
  if not isinstance(table, dict):
    raise ValueError(f"{path}: expected a JSON object {{\"<item id>\": [attribute ids]}}, got a "
                     f"{type(table).__name__}.")
  features = {}
  for item, attributes in table.items():
    if not isinstance(attributes, list):
      raise ValueError(f"{path}: item {item!r} maps to {delimited.excerpt(attributes)}; "
                       f"expected a list of attribute ids.")
    features[str(item)] = [f"attribute={a}" for a in attributes]
  return features


def read(path: str, file_name: Optional[str] = None) -> EventLog:
  """Reads a sequence file, or `file_name` (else the only `*.txt`) inside directory `path`."""
  if file_name and os.path.isdir(path):
    path = delimited.find_file(path, (file_name,), f"the S3-Rec sequence file {file_name}")
  path = delimited.find_single(path, (".txt",), "an S3-Rec 'user item item ...' file")
  user_tokens, item_tokens, lengths = [], [], []
  first_line = {}
  with delimited.open_text(path, "'user item item ...' lines") as f:
    for line_number, line in enumerate(f, start=1):
      fields = line.split()
      if not fields:
        continue
      if len(fields) < 2:
        raise ValueError(f"{path}:{line_number}: expected 'user item item ...' (a user id and at "
                         f"least one item), got {delimited.excerpt(line.rstrip())}.")
      if fields[0] in first_line:
        raise ValueError(f"{path}:{line_number}: user {fields[0]!r} already has a line "
                         f"({first_line[fields[0]]}); expected one line per user.")
      first_line[fields[0]] = line_number
      user_tokens.append(fields[0])
      item_tokens.extend(fields[1:])
      lengths.append(len(fields) - 1)
  if not lengths:
    raise ValueError(f"{path}: no sequences; expected lines 'user item item ...'.")
  logging.info("Read %d users with %d interactions from %s.", len(lengths), len(item_tokens), path)
  lengths = np.asarray(lengths, np.int64)
  users = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
  positions = np.arange(len(users), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
  items, item_ids = factorize(pa.array(item_tokens, pa.string()))
  del item_tokens
  attributes_path = _attributes_file(path)
  return EventLog(
      user_ids=pa.array(user_tokens, pa.string()), item_ids=item_ids, users=users, items=items,
      timestamps=positions,
      item_features=features_for(item_ids, read_attributes(attributes_path)) if attributes_path else None,
      has_timestamps=False, source=path)
