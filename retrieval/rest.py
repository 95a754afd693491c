"""TensorFlow Serving's REST predict format, for the retrieval artifact's signature.

A request is a JSON object with either `instances` (row format: a list of objects, one
per user, keyed by the signature's input names) or `inputs` (columnar format: an
object of input name -> list with one entry per user):

    {"instances": [{"history": ["i3", "i7"], "history_timestamps": [1700000000, 1700003600]}]}
    {"inputs": {"history": [["i3", "i7"], ["i1"]]}}

The answer is `{"predictions": [{"item_ids": [...], "scores": [...],
"popular_fallback": false, "unknown_items": 0}, ...]}` for `instances` and
`{"outputs": {"item_ids": [[...]], ...}}` for `inputs`. Unlike TensorFlow Serving,
users of one request may have histories of different lengths (they are padded here),
and inputs other than `history` may be left out: timestamps then default to one hour
apart, the request time to an hour after the last event, feedback to 1, impressions
and user features to none (`requests.UserRequest`). Anything malformed raises
`RequestError` with the HTTP status to answer and a message that says what was
expected, what arrived and how to fix it.
"""

import json
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from common import names
from retrieval import requests

# What each input must hold per user: (kind, description for messages).
_STRINGS, _INTS, _NUMBERS, _INT = "strings", "ints", "numbers", "int"
_FIELDS = {
    names.RAW_HISTORY: (_STRINGS, "raw item ids, oldest first"),
    names.RAW_HISTORY_TIMESTAMPS: (_INTS, "unix seconds aligned with history"),
    names.RAW_HISTORY_FEEDBACK: (_NUMBERS, "feedback values aligned with history"),
    names.RAW_IMPRESSIONS: (_STRINGS, "raw ids shown but not clicked"),
    names.RAW_IMPRESSION_TIMESTAMPS: (_INTS, "unix seconds aligned with impressions"),
    names.RAW_USER_FEATURES: (_STRINGS, "raw user feature names such as \"age=25\""),
    names.RAW_REQUEST_TIME: (_INT, "unix seconds of the request"),
}
# Lists that must have one entry per entry of another list.
_ALIGNED = {names.RAW_HISTORY_TIMESTAMPS: names.RAW_HISTORY,
            names.RAW_HISTORY_FEEDBACK: names.RAW_HISTORY,
            names.RAW_IMPRESSION_TIMESTAMPS: names.RAW_IMPRESSIONS}
_EXAMPLE = '{"instances": [{"history": ["i3", "i7"]}]}'


class RequestError(ValueError):
  """A request the server refuses; `status` is the HTTP status to answer with."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _check_list(value, kind: str, where: str, max_length: int) -> List:
  if not isinstance(value, list):
    raise RequestError(f"{where} must be a list of {kind}, got {type(value).__name__} "
                       f"{json.dumps(value)[:80]}.")
  if len(value) > max_length:
    raise RequestError(f"{where} has {len(value)} entries; at most {max_length} are served "
                       f"(the server's --max_list_length). Send the newest ones.", status=413)
  wanted, each = {
      _STRINGS: (lambda v: isinstance(v, str), "a string"),
      _INTS: (_is_int, "an int"),
      _NUMBERS: (lambda v: (_is_int(v) or isinstance(v, float)) and math.isfinite(v),
                 "a finite number")}[kind]
  for position, entry in enumerate(value):
    if not wanted(entry):
      hint = ' (raw ids are strings: send "3", not 3)' if kind == _STRINGS else ""
      raise RequestError(f"{where}[{position}] must be {each}{hint}, got "
                         f"{type(entry).__name__} {json.dumps(entry)[:80]}.")
  return value


def _user(instance, where: str, inputs: Sequence[str], max_length: int) -> requests.UserRequest:
  """One user's request from its row, checked against the signature's inputs."""
  if not isinstance(instance, dict):
    raise RequestError(f"{where} must be an object keyed by input names (e.g. "
                       f'{{"history": ["i3", "i7"]}}), got {type(instance).__name__}.')
  unknown = sorted(set(instance) - set(inputs))
  if unknown:
    raise RequestError(f"{where} has input(s) {unknown} that the model does not take; it "
                       f"takes {sorted(inputs)}.")
  if names.RAW_HISTORY not in instance:
    raise RequestError(f"{where} lacks {names.RAW_HISTORY!r} (raw item ids, oldest first; [] "
                       f"for a user without history, who gets the popular items).")
  values = {}
  for name, value in instance.items():
    kind, meaning = _FIELDS[name]
    field = f"{where}.{name}"
    if kind == _INT:
      if not _is_int(value):
        raise RequestError(f"{field} must be an int ({meaning}), got {type(value).__name__} "
                           f"{json.dumps(value)[:80]}.")
      values[name] = value
    else:
      values[name] = _check_list(value, kind, field, max_length)
  for name, leader in _ALIGNED.items():
    if name in values and len(values[name]) != len(values.get(leader, [])):
      raise RequestError(f"{where}: {leader} has {len(values.get(leader, []))} entries but "
                         f"{name} has {len(values[name])}; they must be aligned.")
  if names.RAW_IMPRESSIONS in values and names.RAW_IMPRESSION_TIMESTAMPS in inputs and \
      names.RAW_IMPRESSION_TIMESTAMPS not in values:
    raise RequestError(f"{where}: {names.RAW_IMPRESSIONS} needs "
                       f"{names.RAW_IMPRESSION_TIMESTAMPS} (unix seconds, aligned).")
  return requests.UserRequest.from_history(
      values[names.RAW_HISTORY], values.get(names.RAW_HISTORY_TIMESTAMPS),
      feedback=values.get(names.RAW_HISTORY_FEEDBACK),
      impressions=values.get(names.RAW_IMPRESSIONS, ()),
      impression_timestamps=values.get(names.RAW_IMPRESSION_TIMESTAMPS, ()),
      user_features=values.get(names.RAW_USER_FEATURES, ()),
      request_time=values.get(names.RAW_REQUEST_TIME))


def _rows_of_columns(columns, inputs: Sequence[str]) -> List[Dict[str, Any]]:
  """`inputs` (columnar) -> one object per user."""
  if not isinstance(columns, dict):
    raise RequestError(f'"inputs" must be an object of input name -> one value per user '
                       f'(e.g. {{"history": [["i3", "i7"]]}}), got {type(columns).__name__}.')
  unknown = sorted(set(columns) - set(inputs))
  if unknown:
    raise RequestError(f'"inputs" has input(s) {unknown} that the model does not take; it '
                       f"takes {sorted(inputs)}.")
  for name, value in columns.items():
    if not isinstance(value, list):
      raise RequestError(f'"inputs".{name} must be a list with one entry per user, got '
                         f"{type(value).__name__}.")
  sizes = {name: len(value) for name, value in columns.items()}
  if len(set(sizes.values())) > 1:
    raise RequestError(f'"inputs" lists must have one entry per user, i.e. equal lengths; got '
                       f"{sizes}.")
  count = next(iter(sizes.values()), 0)
  return [{name: value[row] for name, value in columns.items()} for row in range(count)]


def parse_predict(body: bytes, inputs: Sequence[str], max_users: int,
                  max_list_length: int) -> Tuple[List[requests.UserRequest], bool]:
  """Checks a predict request and returns (users, whether it used the row format).

  Args:
    body: the HTTP body.
    inputs: the signature's input names.
    max_users: most users per request (413 beyond).
    max_list_length: most entries per list input (413 beyond).

  Raises:
    RequestError: with what was expected, what arrived and how to fix it.
  """
  try:
    payload = json.loads(body)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise RequestError(f"The body is not valid JSON ({e}); send e.g. {_EXAMPLE}.") from e
  if not isinstance(payload, dict):
    raise RequestError(f"The body must be a JSON object with \"instances\" or \"inputs\", got "
                       f"{type(payload).__name__}; send e.g. {_EXAMPLE}.")
  extra = sorted(set(payload) - {"instances", "inputs", "signature_name"})
  if extra or ("instances" in payload) == ("inputs" in payload):
    raise RequestError(f"The body must have exactly one of \"instances\" (row format) and "
                       f"\"inputs\" (columnar format), and optionally \"signature_name\"; it "
                       f"has {sorted(payload)}. Send e.g. {_EXAMPLE}.")
  signature = payload.get("signature_name", names.SERVING_SIGNATURE)
  if signature != names.SERVING_SIGNATURE:
    raise RequestError(f"Unknown signature_name {signature!r}; the artifact has only "
                       f"{names.SERVING_SIGNATURE!r}.")
  row_format = "instances" in payload
  if row_format:
    rows = payload["instances"]
    if not isinstance(rows, list):
      raise RequestError(f'"instances" must be a list with one object per user, got '
                         f"{type(rows).__name__}; send e.g. {_EXAMPLE}.")
    label = "instances[{}]"
  else:
    rows = _rows_of_columns(payload["inputs"], inputs)
    label = "inputs[user {}]"
  if not rows:
    raise RequestError(f"The request has no users; send e.g. {_EXAMPLE}.")
  if len(rows) > max_users:
    raise RequestError(f"The request has {len(rows)} users; at most {max_users} are served per "
                       f"request (the server's --max_batch_size). Split it.", status=413)
  return [_user(row, label.format(i), inputs, max_list_length) for i, row in enumerate(rows)], \
      row_format


def parse_reload(body: bytes) -> Optional[int]:
  """The version a `:reload` request asks for; None for the newest.

  Accepts `{"version": N}`, `{"version": "latest"}`, `{}` or an empty body.
  """
  try:
    payload = json.loads(body or b"{}")
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise RequestError(f'The body is not valid JSON ({e}); send {{"version": 3}} or '
                       f'{{"version": "latest"}}.') from e
  if not isinstance(payload, dict) or set(payload) - {"version"}:
    raise RequestError(f'The body must be {{"version": N}} or {{"version": "latest"}} (or empty), '
                       f"got {json.dumps(payload)[:80]}.")
  version = payload.get("version", "latest")
  if version == "latest":
    return None
  if not _is_int(version) or version < 0:
    raise RequestError(f'"version" must be a version number or "latest", got '
                       f"{json.dumps(version)[:80]}.")
  return version


def format_predictions(outputs: Mapping[str, np.ndarray], row_format: bool) -> Dict[str, Any]:
  """The JSON answer for the artifact's outputs (`Searcher.predict`).

  Each user's list holds only real items: the `""` / -inf padding of a catalog smaller
  than k (minus the history) is dropped, so every score is a finite JSON number.
  """
  ids, scores = outputs[names.ITEM_IDS], outputs[names.SCORES]
  columns = {
      names.ITEM_IDS: [[i.decode() for i in row if i] for row in ids],
      names.SCORES: [[float(s) for i, s in zip(row_ids, row) if i]
                     for row_ids, row in zip(ids, scores)],
      names.POPULAR_FALLBACK: [bool(v) for v in outputs[names.POPULAR_FALLBACK]],
      names.UNKNOWN_ITEMS: [int(v) for v in outputs[names.UNKNOWN_ITEMS]],
  }
  if not row_format:
    return {"outputs": columns}
  return {"predictions": [dict(zip(columns, values)) for values in zip(*columns.values())]}
