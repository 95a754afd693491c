"""TF Serving's REST predict format: parsing, checks and answers (retrieval/rest.py)."""

import json
import math

import numpy as np
import pytest

from retrieval import rest

_INPUTS = ["history", "history_timestamps", "request_time"]
_HOUR = 3600


def _parse(payload, inputs=_INPUTS, max_users=4, max_list_length=5):
  body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
  return rest.parse_predict(body, inputs, max_users, max_list_length)


def test_row_and_columnar_formats_give_the_same_users():
  rows, row_format = _parse({"instances": [
      {"history": ["i3", "i7"], "history_timestamps": [10, 20], "request_time": 99},
      {"history": []}]})
  columns, columnar = _parse({"inputs": {"history": [["i3", "i7"], []],
                                         "history_timestamps": [[10, 20], []]}})
  assert row_format and not columnar
  assert [(list(u.history), list(u.timestamps)) for u in rows] == [
      (["i3", "i7"], [10, 20]), ([], [])]
  assert [list(u.history) for u in columns] == [["i3", "i7"], []]
  # Given request time, or an hour after the last event (no events: 0 + 1 hour).
  assert [u.time() for u in rows] == [99, _HOUR]
  assert columns[0].time() == 20 + _HOUR


def test_left_out_inputs_get_the_command_lines_defaults():
  (user,), _ = _parse({"instances": [{"history": ["a", "b", "c"]}]})
  assert list(user.timestamps) == [_HOUR, 2 * _HOUR, 3 * _HOUR]  # one hour apart
  assert user.time() == 4 * _HOUR and user.feedback is None


@pytest.mark.parametrize("payload, message", [
    (b"{'instances': []}", r"not valid JSON \(Expecting property name"),
    (b"\xff\xfe", "not valid JSON"),
    ([1, 2], "must be a JSON object .* got list"),
    ({"instances": [], "inputs": {}}, "exactly one of \"instances\""),
    ({"examples": []}, r"exactly one of .* it has \['examples'\]"),
    ({"instances": [{"history": ["a"]}], "signature_name": "other"},
     "Unknown signature_name 'other'"),
    ({"instances": {"history": ["a"]}}, "\"instances\" must be a list .* got dict"),
    ({"instances": []}, "The request has no users"),
    ({"instances": ["a"]}, r"instances\[0\] must be an object keyed by input names"),
    ({"instances": [{"history_timestamps": [1]}]}, r"instances\[0\] lacks 'history'"),
    ({"instances": [{"history": ["a"], "weather": "sunny"}]},
     r"input\(s\) \['weather'\] that the model does not take; it takes \['history', "),
    ({"instances": [{"history": "i3,i7"}]}, r"instances\[0\].history must be a list of strings, "
                                            r"got str \"i3,i7\""),
    ({"instances": [{"history": ["a", 7]}]},
     r"history\[1\] must be a string \(raw ids are strings: send \"3\", not 3\), got int 7"),
    ({"instances": [{"history": ["a"], "history_timestamps": [True]}]},
     r"history_timestamps\[0\] must be an int, got bool true"),
    ({"instances": [{"history": ["a"], "history_timestamps": ["noon"]}]},
     r"history_timestamps\[0\] must be an int, got str"),
    ({"instances": [{"history": ["a"], "request_time": 1.5}]},
     r"request_time must be an int \(unix seconds of the request\), got float 1.5"),
    ({"instances": [{"history": ["a", "b"], "history_timestamps": [1]}]},
     "history has 2 entries but history_timestamps has 1; they must be aligned"),
    ({"inputs": {"history": [["a"], ["b"]], "history_timestamps": [[1]]}},
     "equal lengths; got {'history': 2, 'history_timestamps': 1}"),
    ({"inputs": {"history": "a"}}, r"\"inputs\".history must be a list with one entry per user"),
    ({"inputs": [["a"]]}, "\"inputs\" must be an object of input name"),
])
def test_malformed_requests_are_explained(payload, message):
  with pytest.raises(rest.RequestError, match=message) as raised:
    _parse(payload)
  assert raised.value.status == 400


def test_oversized_requests_are_413():
  with pytest.raises(rest.RequestError, match="has 5 users; at most 4") as raised:
    _parse({"instances": [{"history": ["a"]}] * 5})
  assert raised.value.status == 413
  with pytest.raises(rest.RequestError, match="history has 6 entries; at most 5") as raised:
    _parse({"instances": [{"history": list("abcdef")}]})
  assert raised.value.status == 413


def test_impressions_need_their_timestamps_when_the_model_reads_them():
  inputs = ["history", "impressions", "impression_timestamps"]
  with pytest.raises(rest.RequestError, match="impressions needs impression_timestamps"):
    _parse({"instances": [{"history": ["a"], "impressions": ["b"]}]}, inputs=inputs)
  (user,), _ = _parse({"instances": [{"history": ["a"], "impressions": ["b"],
                                      "impression_timestamps": [5]}]}, inputs=inputs)
  assert (list(user.impressions), list(user.impression_timestamps)) == (["b"], [5])


def test_reload_bodies():
  assert rest.parse_reload(b"") is None and rest.parse_reload(b"{}") is None
  assert rest.parse_reload(b'{"version": "latest"}') is None
  assert rest.parse_reload(b'{"version": 3}') == 3
  for body, message in ((b'{"version": "3"}', "version number or \"latest\", got \"3\""),
                        (b'{"version": -1}', "got -1"), (b"[3]", "must be {\"version\": N}"),
                        (b"{", "not valid JSON")):
    with pytest.raises(rest.RequestError, match=message):
      rest.parse_reload(body)


def test_answers_drop_padding_and_keep_every_output():
  # User 1's catalog minus its history had only 2 items: the third column is padding.
  outputs = {"item_ids": np.array([[b"x", b"y", b""], [b"p", b"q", b"r"]]),
             "scores": np.array([[2.5, 1.0, -math.inf], [9.0, 8.0, 7.0]], np.float32),
             "popular_fallback": np.array([False, True]), "unknown_items": np.array([1, 0])}
  rows = rest.format_predictions(outputs, row_format=True)
  assert rows == {"predictions": [
      {"item_ids": ["x", "y"], "scores": [2.5, 1.0], "popular_fallback": False, "unknown_items": 1},
      {"item_ids": ["p", "q", "r"], "scores": [9.0, 8.0, 7.0], "popular_fallback": True,
       "unknown_items": 0}]}
  columns = rest.format_predictions(outputs, row_format=False)
  assert columns == {"outputs": {"item_ids": [["x", "y"], ["p", "q", "r"]],
                                 "scores": [[2.5, 1.0], [9.0, 8.0, 7.0]],
                                 "popular_fallback": [False, True], "unknown_items": [1, 0]}}
  json.dumps(rows, allow_nan=False)  # every score is a finite JSON number
