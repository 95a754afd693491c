"""A bad cluster configuration ends a task with a one-line error within seconds.

Each case runs `python -m trainer.main` with its own TF_CONFIG and checks the exit
status 2 of a user's mistake (common/cli.py), the message, and the time: TensorFlow
itself waits without end for an unreachable task, and starts no server on a taken
port with only "Could not start gRPC server".
"""

import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.trainer import tiny_data

pytestmark = pytest.mark.large

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# TensorFlow's import takes seconds on a loaded 2-core machine; the waits are 2 s.
MAX_SECONDS = 60


def _closed_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()  # nothing listens there now
  return ports


def _cluster(ports):
  return {"chief": [f"localhost:{ports[0]}"], "worker": [f"localhost:{ports[1]}"],
          "ps": [f"localhost:{ports[2]}"]}


def _run(tf_config, data_dir, model_dir):
  started = time.monotonic()
  result = subprocess.run(
      [sys.executable, "-m", "trainer.main", "--model=sine", f"--data_dir={data_dir}",
       f"--model_dir={model_dir}", "--cluster_wait_s=2"],
      cwd=_REPO_ROOT, capture_output=True, text=True, timeout=MAX_SECONDS,
      env={**os.environ, "TF_CONFIG": tf_config})
  return result, time.monotonic() - started


def test_bad_cluster_configurations_get_a_clear_error_in_seconds(tmp_path):
  data_dir = tiny_data.write(str(tmp_path / "data"))
  ports = _closed_ports(3)
  taken = socket.socket()
  taken.bind(("localhost", 0))
  taken.listen()
  taken_cluster = {**_cluster(ports), "worker": [f"localhost:{taken.getsockname()[1]}"]}
  cases = {
      "malformed": ('{"cluster": {"chief": ["localhost:1"]', "TF_CONFIG is not valid JSON"),
      "index out of range": (json.dumps({"cluster": _cluster(ports), "task": {"type": "worker",
                                                                             "index": 1}}),
                             "'worker' index 1 is out of range"),
      "unreachable ps": (json.dumps({"cluster": _cluster(ports), "task": {"type": "chief"}}),
                         f"Could not reach 2 task(s) of the cluster within 2 s: ps 0 at "
                         f"localhost:{ports[2]}: Connection refused; worker 0"),
      "port in use": (json.dumps({"cluster": taken_cluster, "task": {"type": "worker"}}),
                      "The worker 0 could not listen on"),
  }
  with taken, concurrent.futures.ThreadPoolExecutor(2) as pool:  # 2 cores
    runs = dict(zip(cases, pool.map(lambda case: _run(cases[case][0], data_dir,
                                                      str(tmp_path / case.replace(" ", "_"))),
                                    cases)))
  for case, (result, seconds) in runs.items():
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and last.startswith("error: "), (case, result.stderr[-2000:])
    assert cases[case][1] in last, (case, last)
    assert "Traceback" not in result.stderr, case
    print(f"{case}: {seconds:.1f} s: {last[:160]}")
