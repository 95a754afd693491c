"""A training process killed (SIGKILL) while it writes a checkpoint loses nothing else.

Each case runs the trainer in a child process that kills itself at one moment of
writing the step-20 checkpoint (trainer/checkpoints.py describes the three moves of a
write), then runs the same command again, which must resume from the newest complete
checkpoint, clean up the interrupted write and reach the requested step 30:

    before_merge   shards written to ckpt-20_temp/, not merged   -> resume at 10
    after_merge    ckpt-20 complete, the state file still says 10 -> resume at 20
    damaged_merge  ckpt-20's data file cut short, state says 10   -> resume at 10
    during_sweep   ckpt-20 recorded, older ones being deleted     -> resume at 20
"""

import concurrent.futures
import os
import re
import signal
import subprocess
import sys

import pytest

from tests.trainer import tiny_data

pytestmark = pytest.mark.large  # two subprocesses per case

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CHILD = r"""
import os, signal, sys
from absl import logging
from tensorflow.python.checkpoint import checkpoint_management
from tensorflow.python.ops import gen_io_ops
from trainer import config as config_lib
from trainer import loop

data_dir, model_dir, moment = sys.argv[1:4]
KILL_AT = "ckpt-20"
logging.set_verbosity(logging.INFO)


def die():
  os.kill(os.getpid(), signal.SIGKILL)


merge = gen_io_ops.merge_v2_checkpoints


def merge_then_maybe_die(checkpoint_prefixes, destination_prefix, *args, **kwargs):
  writing = destination_prefix.numpy().decode().endswith(KILL_AT)
  if writing and moment == "before_merge":
    die()
  result = merge(checkpoint_prefixes, destination_prefix, *args, **kwargs)
  if writing and moment == "damaged_merge":
    prefix = destination_prefix.numpy().decode()
    data = [f for f in os.listdir(os.path.dirname(prefix))
            if f.startswith(os.path.basename(prefix) + ".data")]
    with open(os.path.join(os.path.dirname(prefix), data[0]), "r+b") as f:
      f.truncate(os.path.getsize(f.name) // 2)
  if writing and moment in ("after_merge", "damaged_merge"):
    die()
  return result


sweep = checkpoint_management.CheckpointManager._sweep


def sweep_then_maybe_die(manager):
  if moment == "during_sweep" and manager.latest_checkpoint.endswith(KILL_AT):
    die()
  return sweep(manager)


gen_io_ops.merge_v2_checkpoints = merge_then_maybe_die
checkpoint_management.CheckpointManager._sweep = sweep_then_maybe_die
config = config_lib.TrainConfig(
    model_dir=model_dir,
    data=config_lib.DataConfig(data_dir=data_dir, max_length=10, batch_size=32),
    model=config_lib.ModelConfig("sine", {"embedding_dim": 16, "num_interests": 2,
                                          "num_prototypes": 10}),
    schedule=config_lib.ScheduleConfig(train_steps=30, log_every=10),
    checkpoint=config_lib.CheckpointConfig(every_steps=10, max_to_keep=1),
    eval=config_lib.EvalConfig(ks=(10,), batch_size=128),
    export=config_lib.ExportConfig(enabled=False))
print("final step", loop.train_and_evaluate(config)["step"])
"""

# moment -> the step the rerun must resume from.
CASES = {"before_merge": 10, "after_merge": 20, "damaged_merge": 10, "during_sweep": 20}


def _run(*args):
  return subprocess.run([sys.executable, "-c", _CHILD, *args], cwd=_REPO_ROOT,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("crash")
  data_dir = tiny_data.write(str(root / "data"))

  def killed_then_rerun(moment):
    model_dir = str(root / moment)
    killed = _run(data_dir, model_dir, moment)
    left_after_kill = sorted(os.listdir(os.path.join(model_dir, "checkpoints")))
    return killed, left_after_kill, _run(data_dir, model_dir, "none"), model_dir

  with concurrent.futures.ThreadPoolExecutor(2) as pool:  # the target machine has 2 cores
    return dict(zip(CASES, pool.map(killed_then_rerun, CASES)))


@pytest.mark.parametrize("moment", sorted(CASES))
def test_rerun_resumes_from_the_newest_complete_checkpoint(runs, moment):
  killed, left_after_kill, rerun, model_dir = runs[moment]
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  if moment == "before_merge":  # the interrupted write left its temporary folder
    assert "ckpt-20_temp" in left_after_kill, left_after_kill
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  resumed = re.search(r"resumed from \S+ckpt-(\d+) at step (\d+)", rerun.stderr)
  assert resumed and resumed.groups() == (str(CASES[moment]),) * 2, rerun.stderr[-3000:]
  assert "final step 30" in rerun.stdout
  left = sorted(os.listdir(os.path.join(model_dir, "checkpoints")))
  assert not [name for name in left if name.endswith("_temp")], left
  with open(os.path.join(model_dir, "checkpoints", "checkpoint")) as f:
    assert 'model_checkpoint_path: "ckpt-30"' in f.read()
