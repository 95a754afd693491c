r"""Load test of the HTTP server: latency p50/p99 and requests/second at fixed concurrency.

    python benchmarks/serve_benchmark.py --artifact_dir=runs/quickstart/retrieval \
        --data_dir=runs/data/synthetic --concurrency=1,8,32 --num_requests=2000

Starts `python -m retrieval.serve --artifact_dir=... --port=0` as its own process (or
uses a running server with `--url`), waits until it is ready, then for each
concurrency sends `--num_requests` predict requests (`--users_per_request` users
each, in the row format) from that many client threads, each over one keep-alive
connection, and stops early after `--time_limit_s`. Histories are the test users of
`--data_dir` (their inputs as the index job uses them), cycled; without it, the
artifact's popular items in random order. Prints per concurrency: requests sent and
failed, seconds, requests/second, users/second and latency percentiles in ms, as a
table for docs/retrieval.md. Client and server share this machine's cores.
"""

import http.client
import json
import random
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from typing import Dict, List

from absl import app
from absl import flags
import numpy as np

from retrieval import requests

_URL = flags.DEFINE_string("url", None, "A running server's base URL, e.g. http://127.0.0.1:8501.")
_ARTIFACT_DIR = flags.DEFINE_string("artifact_dir", None,
                                    "Instead of --url: start a server for this artifact.")
_MODEL_NAME = flags.DEFINE_string("model_name", None, "NAME in the URLs (default: the server's).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Prepared data set whose test users are sent.")
_NUM_USERS = flags.DEFINE_integer("num_users", 1000, "Distinct users to cycle through.")
_CONCURRENCY = flags.DEFINE_list("concurrency", ["1", "8", "32"], "Client threads, one run each.")
_NUM_REQUESTS = flags.DEFINE_integer("num_requests", 2000, "Requests per run.")
_USERS_PER_REQUEST = flags.DEFINE_integer("users_per_request", 1, "Instances per request.")
_TIME_LIMIT_S = flags.DEFINE_float("time_limit_s", 120.0, "A run stops after this long.")
_SERVER_ARGS = flags.DEFINE_list("server_args", [], "Extra flags for the started server.")


def _instances(users: List[requests.UserRequest]) -> List[Dict]:
  return [{"history": list(u.history), "history_timestamps": [int(t) for t in u.timestamps]}
          for u in users]


def _start_server(artifact_dir: str):
  """Starts `retrieval.serve` on a free port; returns (process, base URL) once it serves."""
  command = [sys.executable, "-m", "retrieval.serve", f"--artifact_dir={artifact_dir}", "--port=0",
             *_SERVER_ARGS.value]
  if _MODEL_NAME.value:
    command.append(f"--model_name={_MODEL_NAME.value}")
  process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
  for line in process.stderr:
    sys.stderr.write(line)
    found = re.search(r"at (http://[\d.]+:\d+)/", line)
    if found:
      # Keep draining the server's log so that it never blocks on a full pipe.
      threading.Thread(target=process.stderr.read, daemon=True).start()
      return process, found.group(1)
  raise RuntimeError(f"The server exited with status {process.wait()} before serving.")


def _request(url: str, method: str, path: str, payload=None) -> Dict:
  parts = urllib.parse.urlsplit(url)
  connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
  body = None if payload is None else json.dumps(payload)
  connection.request(method, path, body, {"Content-Type": "application/json"})
  return json.loads(connection.getresponse().read())


def run_load(url: str, path: str, bodies: List[bytes], num_requests: int, concurrency: int,
             time_limit_s: float) -> Dict:
  """Sends `num_requests` POSTs of `bodies` (cycled) from `concurrency` threads.

  Returns:
    sent, failed (non-200 or connection errors), seconds, and the latencies (s) of
    the successful ones.
  """
  parts = urllib.parse.urlsplit(url)
  counter, lock, latencies, failures = iter(range(num_requests)), threading.Lock(), [], []
  deadline = time.perf_counter() + time_limit_s

  def client():
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    while time.perf_counter() < deadline:
      with lock:
        number = next(counter, None)
      if number is None:
        return
      start = time.perf_counter()
      try:
        connection.request("POST", path, bodies[number % len(bodies)],
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        ok = response.status == 200
      except (OSError, http.client.HTTPException):
        connection.close()  # reconnects on the next request
        ok = False
      with lock:
        (latencies if ok else failures).append(time.perf_counter() - start)

  threads = [threading.Thread(target=client) for _ in range(concurrency)]
  start = time.perf_counter()
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  return {"sent": len(latencies) + len(failures), "failed": len(failures),
          "seconds": time.perf_counter() - start, "latencies": latencies}


def _users(url: str, path: str, manifest: Dict) -> List[requests.UserRequest]:
  if _DATA_DIR.value:
    max_length = int(manifest.get("export_meta", {}).get("max_length", 50))
    return [requests.UserRequest(history=u.history[-max_length:],
                                 timestamps=u.timestamps[-max_length:])
            for u in requests.test_users(_DATA_DIR.value, _NUM_USERS.value) if u.history]
  popular = _request(url, "POST", path, {"instances": [{"history": []}]})
  items = popular["predictions"][0]["item_ids"]
  rng = random.Random(0)
  return [requests.UserRequest.from_history(rng.sample(items, min(5, len(items))))
          for _ in range(_NUM_USERS.value)]


def main(argv):
  del argv
  if (_URL.value is None) == (_ARTIFACT_DIR.value is None):
    raise app.UsageError("Give exactly one of --url and --artifact_dir.")
  process = None
  if _ARTIFACT_DIR.value:
    process, url = _start_server(_ARTIFACT_DIR.value)
  else:
    url = _URL.value.rstrip("/")
  try:
    name = _MODEL_NAME.value or _request(url, "GET", "/readyz")["model"]
    metadata = _request(url, "GET", f"/v1/models/{name}/metadata")
    manifest = metadata["manifest"]
    path = f"/v1/models/{name}:predict"
    users = _users(url, path, manifest)
    per = _USERS_PER_REQUEST.value
    bodies = [json.dumps({"instances": _instances(users[i:i + per])}).encode()
              for i in range(0, len(users) - per + 1, per)]
    print(f"model {name} version {metadata['model_spec']['version']}: {manifest['num_items']} "
          f"items, index {manifest['index']['kind']}, k={manifest['k']}; {len(users)} users "
          f"({'test users of ' + _DATA_DIR.value if _DATA_DIR.value else 'popular items'}), "
          f"{per} per request")
    print("concurrency\trequests\tfailed\tseconds\trequests/s\tusers/s\tp50_ms\tp90_ms\tp99_ms")
    run_load(url, path, bodies, min(50, _NUM_REQUESTS.value), 4, _TIME_LIMIT_S.value)  # warm-up
    for concurrency in (int(c) for c in _CONCURRENCY.value):
      result = run_load(url, path, bodies, _NUM_REQUESTS.value, concurrency, _TIME_LIMIT_S.value)
      ok = result["latencies"] or [float("nan")]
      p50, p90, p99 = 1000 * np.percentile(ok, [50, 90, 99])
      rps = (result["sent"] - result["failed"]) / result["seconds"]
      print(f"{concurrency}\t{result['sent']}\t{result['failed']}\t{result['seconds']:.1f}\t"
            f"{rps:.0f}\t{rps * per:.0f}\t{p50:.1f}\t{p90:.1f}\t{p99:.1f}", flush=True)
  finally:
    if process is not None:
      process.terminate()
      process.wait(timeout=60)


if __name__ == "__main__":
  app.run(main)
