"""A stand-in for `trainer.main` in the launcher tests: no TensorFlow, instant start.

Servers (ps, worker) wait for a signal; ps tasks ignore SIGTERM like a TF server
blocked in `join()`. The chief writes its TF_CONFIG, arguments and environment to `--out` and
exits with `--exit_code` (after `--chief_sleep` seconds). `--crash=worker-1` makes
that task exit at once with status 3.
"""

import argparse
import json
import os
import signal
import sys
import time


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", default="")
  parser.add_argument("--exit_code", type=int, default=0)
  parser.add_argument("--crash", default="")
  parser.add_argument("--chief_sleep", type=float, default=0.0)
  args, unknown = parser.parse_known_args()
  task = json.loads(os.environ["TF_CONFIG"])["task"]
  name = f"{task['type']}-{task['index']}"
  print(f"{name} started with {sys.argv[1:]}", flush=True)
  if name == args.crash:
    sys.exit(3)
  if task["type"] != "chief":
    if task["type"] == "ps":
      signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
      signal.pause()
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"tf_config": json.loads(os.environ["TF_CONFIG"]), "unknown_args": unknown,
                 "allow_growth": os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH")}, f)
  time.sleep(args.chief_sleep)
  sys.exit(args.exit_code)


if __name__ == "__main__":
  main()
