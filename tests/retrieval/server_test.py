"""The HTTP server on 127.0.0.1, with real requests (retrieval/server.py, retrieval/serve.py).

Artifacts come from the toy export (tests/retrieval/toy_export.py) through the index
job; the expected lists come from the same artifact queried in-process.
"""

import concurrent.futures
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from retrieval import job
from retrieval import searcher as searcher_lib
from retrieval import server
from tests.retrieval import toy_export

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_ITEM_IDS = np.array([str(i) for i in range(1, 401)])  # raw ids like the synthetic data set's
_LIMITS = server.ServerConfig(max_batch_size=8, max_list_length=50, max_body_bytes=4096,
                              poll_seconds=0)


def _build(root, seed, output_dir):
  """Writes an export of the toy model over random embeddings and indexes it (k = 5)."""
  embeddings = np.random.default_rng(seed).standard_normal((len(_ITEM_IDS), 4)).astype(np.float32)
  export = toy_export.write_toy_export(os.path.join(root, f"export{seed}"), _ITEM_IDS, embeddings)
  return job.run_index_job(job.JobConfig(export_dir=export, output_dir=output_dir, k=5,
                                         num_eval_queries=0))


def _call(url, body=None, method=None):
  """(status, JSON answer) of one HTTP request."""
  data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
  request = urllib.request.Request(url, data=data, method=method,
                                   headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(request, timeout=60) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
  root = tmp_path_factory.mktemp("served")
  _build(str(root), seed=0, output_dir=str(root / "out"))
  return str(root / "out")


@pytest.fixture(scope="module")
def url(artifact):
  manager = server.ModelManager(artifact)
  manager.sync()
  with server.serve_in_thread(manager, _LIMITS) as base_url:
    yield base_url


def _expected(artifact, histories):
  return searcher_lib.load_artifact(artifact).query_histories(histories)


def test_predict_in_row_and_columnar_format(url, artifact):
  histories = [["3", "17", "250"], ["40"], []]
  want = _expected(artifact, histories)
  status, answer = _call(f"{url}/v1/models/toy:predict",
                         {"instances": [{"history": h} for h in histories]})
  assert status == 200
  predictions = answer["predictions"]
  assert [list(zip(p["item_ids"], p["scores"])) for p in predictions] == [
      [(i, pytest.approx(s, rel=1e-6)) for i, s in row] for row in want]
  # The empty history gets the most popular items (toy counts: "1" most, then "2", ...).
  assert [p["popular_fallback"] for p in predictions] == [False, False, True]
  assert predictions[2]["item_ids"] == ["1", "2", "3", "4", "5"]

  status, answer = _call(f"{url}/v1/models/toy:predict", {"inputs": {"history": histories}})
  assert status == 200
  assert answer["outputs"]["item_ids"] == [p["item_ids"] for p in predictions]


def test_unknown_ids_are_ignored_and_counted(url, artifact):
  status, answer = _call(f"{url}/v1/models/toy:predict", {"instances": [
      {"history": ["3", "no-such-item", "17", "gone"]}, {"history": ["nope"]}]})
  assert status == 200
  first, second = answer["predictions"]
  assert first["unknown_items"] == 2 and second["unknown_items"] == 1
  # (The export drops unknown ids from the user model: trainer/export.py's tests.)
  assert first["item_ids"] == [
      i for i, _ in _expected(artifact, [["3", "no-such-item", "17", "gone"]])[0]]
  assert second["popular_fallback"] and second["item_ids"][:2] == ["1", "2"]


@pytest.mark.parametrize("path, body, status, message", [
    ("toy:predict", b'{"instances": [', 400, "not valid JSON"),
    ("toy:predict", {"instances": [{"history": [3, 7]}]}, 400, "raw ids are strings"),
    ("toy:predict", {"instances": [{"history": ["3"], "user_features": ["age=25"]}]}, 400,
     r"\['user_features'\] that the model does not take"),
    ("toy:predict", {"instances": [{"history": ["3"]}] * 9}, 413, "has 9 users; at most 8"),
    ("toy:predict", {"instances": [{"history": ["3"] * 51}]}, 413, "51 entries; at most 50"),
    ("toy:predict", {"instances": [{"history": ["x" * 5000]}]}, 413, "exceeds 4096 bytes"),
    ("sine:predict", {"instances": [{"history": ["3"]}]}, 404,
     "serves the model 'toy', not 'sine'"),
    ("toy/versions/7:predict", {"instances": [{"history": ["3"]}]}, 404,
     "Version 7 is not the one served"),
    ("toy:reload", {"version": 9}, 404, r"No version 9 under .*; available: \[1\]"),
    ("toy:reload", {"version": "old"}, 400, "a version number or \"latest\""),
])
def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(url, path, body, status, message):
  got, answer = _call(f"{url}/v1/models/{path}", body)
  assert got == status and re.search(message, answer["error"]), answer
  assert _call(f"{url}/v1/models/toy:predict", {"instances": [{"history": ["3"]}]})[0] == 200


def test_status_metadata_and_health(url, artifact):
  assert _call(f"{url}/v1/models/toy") == (200, {
      "model_version_status": [{"version": "1", "state": "AVAILABLE",
                                "status": {"error_code": "OK", "error_message": ""}}],
      "policy": {"pinned": None, "available": [1], "base_path": os.path.join(artifact, "artifact")}})
  status, metadata = _call(f"{url}/v1/models/toy/metadata")
  signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
  assert status == 200 and metadata["model_spec"]["version"] == "1"
  assert signature["inputs"]["history"]["dtype"] == "DT_STRING"
  assert set(signature["outputs"]) == {"item_ids", "scores", "popular_fallback", "unknown_items"}
  assert metadata["manifest"]["model"] == "toy" and metadata["manifest"]["k"] == 5
  assert _call(f"{url}/healthz") == (200, {"status": "alive"})
  # Small answers are not held back by Nagle's algorithm (~40 ms each without TCP_NODELAY).
  times = []
  for _ in range(15):
    start = time.perf_counter()
    _call(f"{url}/healthz")
    times.append(time.perf_counter() - start)
  assert np.median(times) < 0.02, times
  assert _call(f"{url}/readyz") == (200, {"status": "ready", "model": "toy", "version": 1})


def test_concurrent_requests_are_batched_and_never_block_the_server(artifact):
  # Eight one-user requests sent at once, the artifact's first calls held: two run alone
  # on the two batch threads, the other six wait and share calls. Meanwhile the event
  # loop still answers.
  manager = server.ModelManager(artifact)
  manager.sync()
  loaded = manager.current
  real_predict, sizes, finished = loaded.predict, [], []
  # The first batch is held until healthz has answered (or 10 s: a healthz stuck behind
  # the batch would answer only after it finished, and fail the check below).
  predicting, release = threading.Event(), threading.Event()

  def held_predict(users):
    sizes.append(len(users))
    predicting.set()
    release.wait(10)
    finished.append(len(users))
    return real_predict(users)

  loaded.predict = held_predict
  histories = [[str(i)] for i in range(1, 9)]
  with server.serve_in_thread(manager, _LIMITS) as base_url:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      answers = [pool.submit(_call, f"{base_url}/v1/models/toy:predict",
                             {"instances": [{"history": h}]}) for h in histories]
      assert predicting.wait(30), "no batch reached the model"
      time.sleep(0.2)  # the other requests queue behind the held batch
      assert _call(f"{base_url}/healthz")[0] == 200
      assert not finished  # healthz answered while the batch was still held
      release.set()
      results = [a.result() for a in answers]
  assert sum(sizes) == 8 and len(sizes) < 8 and max(sizes) > 1, sizes
  # Each request gets its own user's list back out of the shared batch.
  want = _expected(artifact, histories)
  for row, (status, answer) in zip(want, results):
    assert status == 200 and answer["predictions"][0]["item_ids"] == [i for i, _ in row]


def test_hot_swap_without_dropping_requests_and_rollback(tmp_path):
  # Version 1 and 2 index different embeddings of the same items, so every answer tells
  # which version gave it. Requests keep coming while version 2 is written and swapped
  # in: every one must succeed, first with version 1's list, then with version 2's.
  output_dir = str(tmp_path / "out")
  _build(str(tmp_path), seed=0, output_dir=output_dir)
  manager = server.ModelManager(output_dir)
  manager.sync()
  config = server.ServerConfig(poll_seconds=0.1)
  request = {"instances": [{"history": ["3", "17"]}]}
  answers, stop = [], threading.Event()
  with server.serve_in_thread(manager, config) as base_url:
    predict = f"{base_url}/v1/models/toy:predict"

    def keep_asking():
      while not stop.is_set():
        sent = time.perf_counter()
        status, answer = _call(predict, request)
        answers.append((sent, status, answer))

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
      for _ in range(3):
        pool.submit(keep_asking)
      version_1 = _call(predict, request)[1]["predictions"][0]["item_ids"]
      _build(str(tmp_path), seed=1, output_dir=output_dir)  # writes version 2
      deadline = time.monotonic() + 30
      while _call(f"{base_url}/readyz")[1]["version"] != 2:
        assert time.monotonic() < deadline, "version 2 was not picked up"
        time.sleep(0.05)
      switched = time.perf_counter()
      time.sleep(0.3)
      stop.set()
    version_2 = _call(predict, request)[1]["predictions"][0]["item_ids"]
    assert version_1 != version_2
    assert len(answers) > 10 and all(status == 200 for _, status, _ in answers)  # none dropped
    lists = [(sent, answer["predictions"][0]["item_ids"]) for sent, _, answer in answers]
    assert {tuple(ids) for _, ids in lists} == {tuple(version_1), tuple(version_2)}
    assert all(ids == version_2 for sent, ids in lists if sent > switched)

    # Rollback: pin version 1, then follow the newest again.
    status, answer = _call(f"{base_url}/v1/models/toy:reload", {"version": 1})
    assert status == 200 and answer["policy"]["pinned"] == 1
    assert _call(predict, request)[1]["predictions"][0]["item_ids"] == version_1
    assert [(s["version"], s["state"]) for s in answer["model_version_status"]] == [
        ("2", "END"), ("1", "AVAILABLE")]
    assert _call(f"{base_url}/v1/models/toy:reload", {"version": 5})[0] == 404
    status, answer = _call(f"{base_url}/v1/models/toy:reload", {})
    assert status == 200 and answer["policy"] == {"pinned": None, "available": [1, 2],
                                                  "base_path": str(tmp_path / "out" / "artifact")}
    assert _call(predict, request)[1]["predictions"][0]["item_ids"] == version_2
    # Answered by a named version only when it is the one served.
    assert _call(f"{base_url}/v1/models/toy/versions/2:predict", request)[0] == 200
    assert _call(f"{base_url}/v1/models/toy/versions/1:predict", request)[0] == 404


def test_status_and_predictions_answer_while_a_version_loads(tmp_path, monkeypatch):
  output_dir = str(tmp_path / "out")
  _build(str(tmp_path), seed=0, output_dir=output_dir)
  manager = server.ModelManager(output_dir)
  manager.sync()
  _build(str(tmp_path), seed=1, output_dir=output_dir)
  # Version 2's warm-up holds its load until the test has asked its questions (or 10 s
  # have passed: a server that waited for the load would answer only then, with
  # version 2 AVAILABLE, and fail the assertions instead of hanging).
  loading, release = threading.Event(), threading.Event()

  def held_warm_up(searcher):
    loading.set()
    release.wait(10)

  monkeypatch.setattr(searcher_lib.Searcher, "warm_up", held_warm_up)
  request = {"instances": [{"history": ["3"]}]}
  with server.serve_in_thread(manager, _LIMITS) as base_url:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      reload = pool.submit(_call, f"{base_url}/v1/models/toy:reload", {"version": 2})
      assert loading.wait(30), "version 2 never started loading"
      status, answer = _call(f"{base_url}/v1/models/toy")
      assert status == 200
      assert [(s["version"], s["state"]) for s in answer["model_version_status"]] == [
          ("2", "LOADING"), ("1", "AVAILABLE")]
      assert _call(f"{base_url}/readyz")[1]["version"] == 1
      assert _call(f"{base_url}/v1/models/toy:predict", request)[0] == 200
      release.set()
      assert reload.result()[0] == 200
    assert _call(f"{base_url}/readyz")[1]["version"] == 2


def test_a_version_that_fails_to_load_is_reported_and_skipped(tmp_path):
  output_dir = str(tmp_path / "out")
  _build(str(tmp_path), seed=0, output_dir=output_dir)
  _build(str(tmp_path), seed=1, output_dir=output_dir)
  os.remove(tmp_path / "out" / "artifact" / "2" / "variables" / "variables.index")  # damaged
  manager = server.ModelManager(output_dir)
  with pytest.raises(ValueError, match="cannot be loaded: its files are damaged"):
    manager.sync()  # nothing to fall back on at start: the error says what is wrong
  manager.pin(1)
  manager.pin(None)  # follow the newest again: version 2 is tried again, still damaged
  manager.sync()  # and not retried by the polling
  assert manager.current.version == 1
  entries = manager.status()["model_version_status"]
  assert [(e["version"], e["state"], e["status"]["error_code"]) for e in entries] == [
      ("2", "END", "UNKNOWN"), ("1", "AVAILABLE", "OK")]
  assert "damaged" in entries[0]["status"]["error_message"]


def _docs_curl():
  """The curl example of docs/retrieval.md, as an argument list."""
  with open(os.path.join(_REPO_ROOT, "docs", "retrieval.md")) as f:
    text = f.read()
  command = re.search(r"^curl .*?(?<!\\)$", text, flags=re.MULTILINE | re.DOTALL).group(0)
  return shlex.split(command.replace("\\\n", " "))


@pytest.mark.large
def test_command_line_server_answers_the_documented_curl_and_stops_on_sigterm(artifact):
  # The docs' example queries the quickstart's SINE artifact on port 8501; this serves
  # the toy artifact (same raw id style) under that name on a free port.
  process = subprocess.Popen(
      [sys.executable, "-m", "retrieval.serve", f"--artifact_dir={artifact}", "--port=0",
       "--model_name=sine"], cwd=_REPO_ROOT, stderr=subprocess.PIPE, text=True,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  try:
    port = None
    for line in process.stderr:
      found = re.search(r"Serving version 1 of model 'sine' .* at http://[\d.]+:(\d+)/", line)
      if found:
        port = found.group(1)
        break
    assert port, "the server never said where it listens"
    command = [arg.replace(":8501", f":{port}") for arg in _docs_curl()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (prediction,) = json.loads(result.stdout)["predictions"]
    assert len(prediction["item_ids"]) == 5 and not prediction["popular_fallback"]
  finally:
    process.send_signal(signal.SIGTERM)
    # Uvicorn shuts down gracefully, then re-raises the signal: the status says SIGTERM.
    assert process.wait(timeout=60) == -signal.SIGTERM
