"""SIGTERM ends training within about a step, not a whole in-graph interval.

On one device the trainer runs `--log_every` steps inside one `tf.function` call, and
Python runs its SIGTERM handler only when that call returns; the loop also checks,
before each step, a flag that a thread sets as soon as the signal arrives
(trainer/loop.py). Here the trainer runs 400 steps per call: SIGTERM sent a quarter
of a call's time after the progress line of step 800 (the next call then runs; the
first call's rate includes tracing, the second's does not) must give a checkpoint a
little past 800, not at 1200, named by the step it holds, and exit status 143
(128 + SIGTERM, which a TFJob's ExitCode policy restarts).
"""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.trainer import tiny_data
import tensorflow as tf

pytestmark = pytest.mark.large

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOG_EVERY = 400
BATCH = 16


def test_sigterm_checkpoints_the_step_it_stopped_at_without_finishing_the_interval(tmp_path):
  data_dir = tiny_data.write(str(tmp_path / "data"))
  model_dir = tmp_path / "model"
  trainer = subprocess.Popen(
      [sys.executable, "-m", "trainer.main", "--model=sine", f"--data_dir={data_dir}",
       f"--model_dir={model_dir}", "--train_steps=100000", f"--log_every={LOG_EVERY}",
       "--checkpoint_every=100000", f"--batch_size={BATCH}", "--embedding_dim=8",
       "--model_param=num_prototypes=4", "--model_param=num_interests=2", "--export=false"],
      cwd=_REPO_ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  lines = queue.Queue()
  threading.Thread(target=lambda: [lines.put(line) for line in trainer.stderr], daemon=True).start()
  log = []
  try:
    deadline = time.monotonic() + 180
    while not (progress := re.search(rf"step {2 * LOG_EVERY}/.*, (\d+) examples/s", "".join(log))):
      assert time.monotonic() < deadline and trainer.poll() is None, "".join(log)[-3000:]
      try:
        log.append(lines.get(timeout=1))
      except queue.Empty:
        pass
    # A signal between two calls is handled before the next starts (a checkpoint at
    # 800, also right): wait until the next call is a quarter done.
    time.sleep(0.25 * LOG_EVERY * BATCH / int(progress.group(1)))
    sent = time.monotonic()
    trainer.send_signal(signal.SIGTERM)
    status = trainer.wait(timeout=60)
    latency = time.monotonic() - sent
  finally:
    if trainer.poll() is None:
      trainer.kill()
  time.sleep(0.5)  # the reader thread drains stderr
  while not lines.empty():
    log.append(lines.get())
  text = "".join(log)
  assert status == 128 + signal.SIGTERM, text[-3000:]
  step = int(re.search(r"interrupted at step (\d+)", text).group(1))
  assert 2 * LOG_EVERY < step < 3 * LOG_EVERY, text[-3000:]
  prefix = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
  assert prefix.endswith(f"ckpt-{step}")
  assert tf.train.load_variable(prefix, "step/.ATTRIBUTES/VARIABLE_VALUE") == step
  print(f"\nSIGTERM in the call after step {2 * LOG_EVERY}: checkpoint of step {step}, exited "
        f"{latency:.2f} s later")
