"""Serving requests: users in raw ids, turned into the inputs an export's signature takes.

A `UserRequest` holds what a client knows about one user (raw item ids, times, the
items shown but not clicked, raw user feature names, the request time). `to_inputs`
packs a list of them into exactly the arrays an export's (or artifact's)
`serving_default` signature declares, padding with `""` and 0. The index job measures
recall with these (test users of the data set, or synthetic users), `retrieval.serve`
queries with them.
"""

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from common import names
from input_pipeline import data_spec
from input_pipeline import schema

_HOUR = 3600


@dataclasses.dataclass(frozen=True)
class UserRequest:
  """One user's request in raw ids.

  Attributes:
    history: raw item ids, oldest first.
    timestamps: aligned with `history` (unix seconds, or positions).
    feedback: aligned with `history`; None: all 1.
    impressions: raw ids shown but not clicked.
    impression_timestamps: aligned with `impressions`.
    user_features: raw user feature names ("age=25", ...).
    request_time: when the request is made; None: an hour after the last event.
    user_id: for display.
    targets: the held-out items of a test user (for display and checks), raw ids.
  """
  history: Sequence[str]
  timestamps: Sequence[int]
  feedback: Optional[Sequence[float]] = None
  impressions: Sequence[str] = ()
  impression_timestamps: Sequence[int] = ()
  user_features: Sequence[str] = ()
  request_time: Optional[int] = None
  user_id: str = ""
  targets: Sequence[str] = ()

  def __post_init__(self):
    if len(self.timestamps) != len(self.history):
      raise ValueError(f"User {self.user_id!r}: {len(self.history)} history items but "
                       f"{len(self.timestamps)} timestamps.")
    if self.feedback is not None and len(self.feedback) != len(self.history):
      raise ValueError(f"User {self.user_id!r}: {len(self.history)} history items but "
                       f"{len(self.feedback)} feedback values.")
    if len(self.impression_timestamps) != len(self.impressions):
      raise ValueError(f"User {self.user_id!r}: {len(self.impressions)} impressions but "
                       f"{len(self.impression_timestamps)} impression timestamps.")

  @classmethod
  def from_history(cls, history: Sequence[str], timestamps: Optional[Sequence[int]] = None,
                   **fields) -> "UserRequest":
    """A request with timestamps one hour apart unless given."""
    if timestamps is None:
      timestamps = [_HOUR * (i + 1) for i in range(len(history))]
    return cls(history=list(history), timestamps=list(timestamps), **fields)

  def time(self) -> int:
    if self.request_time is not None:
      return self.request_time
    return (self.timestamps[-1] if self.timestamps else 0) + _HOUR


def _padded(rows: List[Sequence], fill, dtype) -> np.ndarray:
  width = max([len(r) for r in rows] + [1])
  out = np.full([len(rows), width], fill, dtype=dtype)
  for i, row in enumerate(rows):
    out[i, :len(row)] = row
  return out


def to_inputs(requests: Sequence[UserRequest], input_specs: Mapping[str, tf.TensorSpec],
              max_length: Optional[int] = None) -> Dict[str, np.ndarray]:
  """The arrays of the signature inputs `input_specs` for these requests.

  Args:
    requests: the users.
    input_specs: the signature's inputs (`fn.structured_input_signature[1]`).
    max_length: keep only the newest `max_length` history items (the model reads no
      more); None keeps all.

  Raises:
    ValueError: the signature takes an input this module does not know.
  """
  cut = slice(-max_length, None) if max_length else slice(None)
  columns = {
      names.RAW_HISTORY: lambda: _padded([list(r.history)[cut] for r in requests], "", object),
      names.RAW_HISTORY_TIMESTAMPS: lambda: _padded(
          [list(r.timestamps)[cut] for r in requests], 0, np.int64),
      names.RAW_HISTORY_FEEDBACK: lambda: _padded(
          [list(r.feedback if r.feedback is not None else [1.0] * len(r.history))[cut]
           for r in requests], 0.0, np.float32),
      names.RAW_IMPRESSIONS: lambda: _padded([r.impressions for r in requests], "", object),
      names.RAW_IMPRESSION_TIMESTAMPS: lambda: _padded(
          [r.impression_timestamps for r in requests], 0, np.int64),
      names.RAW_USER_FEATURES: lambda: _padded([r.user_features for r in requests], "", object),
      names.RAW_REQUEST_TIME: lambda: np.array([r.time() for r in requests], np.int64),
  }
  unknown = sorted(set(input_specs) - set(columns))
  if unknown:
    raise ValueError(f"The serving signature takes inputs {unknown} that retrieval/requests.py "
                     f"cannot fill; known inputs: {sorted(columns)}.")
  inputs = {}
  for name in input_specs:
    value = columns[name]()
    inputs[name] = value.astype(bytes) if value.dtype == object else value
  return inputs


def test_users(data_dir: str, count: int, first: int = 0, split: str = "test") -> List[UserRequest]:
  """Users `first .. first + count - 1` (file order) of a prepared data set's `split`.

  Each request holds the model input `items[:target_start]` with its side sequences,
  the impressions and user features, the request time (the first target's time),
  and `targets = items[target_start:]`, all in raw ids. Fewer than `count` when the
  split ends first.
  """
  files = schema.split_files(data_dir, split)
  raw_ids = schema.read_vocab(data_dir)
  user_feature_names = data_spec.read_feature_vocab(data_dir, schema.USER_FEATURE_VOCAB_FILE)
  batches = list(tf.data.TFRecordDataset(files).skip(first).take(count).batch(max(count, 1)))
  if not batches:
    return []
  timelines = schema.parse_timelines(batches[0])
  columns = {name: timelines[name].to_list() for name in (
      schema.ITEMS, schema.TIMESTAMPS, schema.FEEDBACK, schema.IMPRESSIONS,
      schema.IMPRESSION_TIMESTAMPS, schema.USER_FEATURES)}

  def raw(indices):
    # Index num_items (and above: padding) maps to "", which the export skips.
    return [raw_ids[i] if i < len(raw_ids) else "" for i in indices]

  users = []
  for row, (user_id, start) in enumerate(zip(timelines[schema.USER_ID].numpy(),
                                             timelines[schema.TARGET_START].numpy())):
    items, times = raw(columns[schema.ITEMS][row]), columns[schema.TIMESTAMPS][row]
    users.append(UserRequest(
        history=items[:start], timestamps=times[:start],
        feedback=columns[schema.FEEDBACK][row][:start],
        impressions=raw(columns[schema.IMPRESSIONS][row]),
        impression_timestamps=columns[schema.IMPRESSION_TIMESTAMPS][row],
        user_features=[user_feature_names[i] for i in columns[schema.USER_FEATURES][row]],
        request_time=times[start] if start < len(times) else None,
        user_id=user_id.decode(), targets=items[start:]))
  return users
