"""MovieLens ratings with their movie genres and user demographics.

Reads whichever the folder holds:
  ML-1M:   ratings.dat  `UserID::MovieID::Rating::Timestamp`
           movies.dat   `MovieID::Title::Genres` (latin-1, genres '|'-separated)
           users.dat    `UserID::Gender::Age::Occupation::Zip-code`
  ML-100K: u.data       `user<TAB>item<TAB>rating<TAB>timestamp` (random order)
           u.item       `id|title|release|video release|IMDb URL|` + 19 genre flags (latin-1)
           u.genre      `name|index`, the order of the genre flags
           u.user       `id|age|gender|occupation|zip`

Every rating is an interaction with the rating as feedback. Item features are the
genres ("genre=Comedy"); user features gender, age group and occupation (ML-100K ages
are bucketed into ML-1M's groups 1/18/25/35/45/50/56). The movie and user files are
optional; without them the features are empty.
"""

import os
from typing import Dict, Iterator, List, Tuple

import numpy as np
import pyarrow as pa
from absl import logging

from input_pipeline.readers import delimited
from input_pipeline.readers.event_log import EventLog, factorize, features_for

_ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                  "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                  "Romance", "Sci-Fi", "Thriller", "War", "Western")
_ML1M_AGE_GROUPS = (1, 18, 25, 35, 45, 50, 56)  # group g holds ages in [g, next group)


def _rows(path: str, separator: str, min_fields: int, expected: str,
          encoding: str = "latin-1") -> Iterator[Tuple[int, List[str]]]:
  with open(path, encoding=encoding) as f:
    for line_number, line in enumerate(f, start=1):
      line = line.rstrip("\r\n")
      if not line:
        continue
      fields = line.split(separator)
      if len(fields) < min_fields:
        raise ValueError(f"{path}:{line_number}: expected {expected}, got "
                         f"{delimited.excerpt(line)}.")
      yield line_number, fields


def _age_group(path: str, line_number: int, age: str) -> int:
  try:
    years = int(age)
  except ValueError:
    raise ValueError(f"{path}:{line_number}: expected an integer age, got {age!r}.") from None
  return max(g for g in _ML1M_AGE_GROUPS if g <= max(years, 1))


def _ml1m_features(directory: str) -> Tuple[Dict[str, List[str]], Dict[str, List[str]]]:
  items, users = {}, {}
  movies = os.path.join(directory, "movies.dat")
  if os.path.exists(movies):
    for _, (movie, _, genres) in _rows(movies, "::", 3, "'MovieID::Title::Genres'"):
      items[movie] = [f"genre={g}" for g in genres.split("|") if g]
  user_file = os.path.join(directory, "users.dat")
  if os.path.exists(user_file):
    for _, fields in _rows(user_file, "::", 5, "'UserID::Gender::Age::Occupation::Zip-code'"):
      users[fields[0]] = [f"gender={fields[1]}", f"age={fields[2]}", f"occupation={fields[3]}"]
  return items, users


def _ml100k_features(directory: str) -> Tuple[Dict[str, List[str]], Dict[str, List[str]]]:
  items, users = {}, {}
  genres = list(_ML100K_GENRES)
  genre_file = os.path.join(directory, "u.genre")
  if os.path.exists(genre_file):
    genres = [fields[0] for _, fields in _rows(genre_file, "|", 2, "'name|index'")]
  item_file = os.path.join(directory, "u.item")
  if os.path.exists(item_file):
    expected = f"'id|title|release|video release|URL|' and {len(genres)} genre flags"
    for line_number, fields in _rows(item_file, "|", 5 + len(genres), expected):
      flags = fields[5:5 + len(genres)]
      if any(flag not in ("0", "1") for flag in flags):
        raise ValueError(f"{item_file}:{line_number}: expected 0/1 genre flags, got {flags}.")
      items[fields[0]] = [f"genre={g}" for g, flag in zip(genres, flags) if flag == "1"]
  user_file = os.path.join(directory, "u.user")
  if os.path.exists(user_file):
    for line_number, fields in _rows(user_file, "|", 5, "'id|age|gender|occupation|zip'"):
      users[fields[0]] = [f"gender={fields[2]}",
                          f"age={_age_group(user_file, line_number, fields[1])}",
                          f"occupation={fields[3]}"]
  return items, users


def read(path: str) -> EventLog:
  """Reads a MovieLens folder (or its ratings.dat / u.data file)."""
  ratings = delimited.find_file(path, ("ratings.dat", "u.data"),
                                "MovieLens ratings.dat (ML-1M) or u.data (ML-100K)")
  directory = os.path.dirname(ratings)
  names = ("user", "item", "rating", "timestamp")
  types = {"user": pa.string(), "item": pa.string(), "rating": pa.float32(),
           "timestamp": pa.int64()}
  if os.path.basename(ratings) == "u.data":
    table = delimited.read_table(ratings, column_names=names, delimiter="\t", column_types=types,
                                 expected="'user<TAB>item<TAB>rating<TAB>timestamp'")
    item_features, user_features = _ml100k_features(directory)
  else:
    # pyarrow needs a one-character delimiter; ratings never contain tabs.
    expected = "'UserID::MovieID::Rating::Timestamp'"
    data = delimited.read_bytes(ratings, expected).replace(b"::", b"\t")
    table = delimited.read_table(ratings, column_names=names, delimiter="\t", column_types=types,
                                 expected=expected, data=data)
    del data
    item_features, user_features = _ml1m_features(directory)
  logging.info("Read %d ratings from %s.", table.num_rows, ratings)
  users, user_ids = factorize(table["user"])
  items, item_ids = factorize(table["item"])
  feedback = table["rating"].to_numpy().astype(np.float32)
  timestamps = table["timestamp"].to_numpy().astype(np.int64)
  del table
  return EventLog(
      user_ids=user_ids, item_ids=item_ids, users=users, items=items, timestamps=timestamps,
      feedback=feedback,
      item_features=features_for(item_ids, item_features) if item_features else None,
      user_features=features_for(user_ids, user_features) if user_features else None,
      has_timestamps=True, source=ratings)
