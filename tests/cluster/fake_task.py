"""A stand-in for `trainer.main` in the launcher tests: no TensorFlow, instant start.

Servers (ps, worker) listen on their TF_CONFIG port and block in a C call (as a TF
server blocks in `join()`), dying on SIGTERM as the trainer's servers do. The chief
appends its TF_CONFIG, arguments and environment as one JSON line to `--out` and exits
with `--exit_code` (after `--chief_sleep` seconds). `--crash=worker-1` makes that
task exit at once with status 3 on its first start; `--crash_status` sets another
status (e.g. 137 to stand for SIGKILL). `--chief_first_status=203` makes the chief's
first start exit with that status (a chief that lost a parameter server). An evaluator
appends its line to `--out` like the chief and exits with 0 after `--chief_sleep`.
"""

import argparse
import json
import os
import signal
import socket
import sys
import time


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", default="")
  parser.add_argument("--exit_code", type=int, default=0)
  parser.add_argument("--crash", default="")
  parser.add_argument("--crash_status", type=int, default=3)
  parser.add_argument("--chief_first_status", type=int, default=None)
  parser.add_argument("--chief_sleep", type=float, default=0.0)
  args, unknown = parser.parse_known_args()
  tf_config = json.loads(os.environ["TF_CONFIG"])
  task = tf_config["task"]
  name = f"{task['type']}-{task['index']}"
  print(f"{name} started with {sys.argv[1:]}", flush=True)
  starts_log = os.environ["FAKE_TASK_LOG"]  # one line "name pid" per start of any task
  with open(starts_log, "a") as f:
    f.write(f"{name} {os.getpid()}\n")
  with open(starts_log) as f:
    first_start = [line.split()[0] for line in f].count(name) == 1
  if task["type"] not in ("chief", "evaluator"):
    if name == args.crash and first_start:
      sys.exit(args.crash_status)
    host, port = tf_config["cluster"][task["type"]][task["index"]].rsplit(":", 1)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, int(port)))
    server.listen()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
      server.accept()[0].close()
  with open(args.out, "a") as f:
    f.write(json.dumps({"tf_config": tf_config, "unknown_args": unknown, "pid": os.getpid(),
                        "allow_growth": os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH"),
                        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\n")
  time.sleep(args.chief_sleep)
  if task["type"] == "evaluator":
    sys.exit(0)
  if args.chief_first_status is not None and first_start:
    sys.exit(args.chief_first_status)
  sys.exit(args.exit_code)


if __name__ == "__main__":
  main()
