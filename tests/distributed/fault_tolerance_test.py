"""A real local cluster (1 chief, 2 workers, 1 ps, each a process) survives killed tasks.

One drill (cluster/fault_drill.py) kills worker 0 (SIGKILL) at step 25, then, once
it has rejoined, the parameter server (SIGKILL), then, once the chief has resumed,
stops the chief with SIGTERM (a Kubernetes eviction); the launcher restarts what
dies (cluster/local_cluster.py). Expected, from ClusterCoordinator's contract and the
trainer's exit statuses:

    worker killed  the chief goes on with the other worker, the worker is restarted
                   and rejoins; the chief is not restarted
    ps killed      the chief sees the ps fail, exits with 203; the launcher restarts
                   the ps and the chief, which resumes from its last checkpoint
                   (the steps since are done again)
    chief SIGTERM  the chief lets the steps already scheduled finish, writes a
                   checkpoint of the step it holds, exits with 143; restarted, it
                   resumes from exactly that step; the job reaches the final step

and, through it all, every checkpoint holds the step its name says, no step's update
is lost (the optimizer applied at least the steps that ran), and the progress
summaries of every interval, those the first chief wrote included, are there. The recovery times are printed (pytest
-s); docs/cluster.md has measured ones.
"""

import json
import os
import signal

import pytest

from cluster import fault_drill
from cluster import local_cluster
from tests.trainer import tiny_data
import tensorflow as tf

pytestmark = pytest.mark.large

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_STEPS = 300


def _checkpoint_steps(checkpoint_dir):
  """{N: the step that ckpt-N holds}."""
  held = {}
  for name in os.listdir(checkpoint_dir):
    if name.startswith("ckpt-") and name.endswith(".index"):
      prefix = os.path.join(checkpoint_dir, name[:-len(".index")])
      held[int(name[len("ckpt-"):-len(".index")])] = int(
          tf.train.load_variable(prefix, "step/.ATTRIBUTES/VARIABLE_VALUE"))
  return held


def test_a_killed_worker_rejoins_and_a_killed_ps_fails_over_to_the_last_checkpoint(tmp_path):
  data_dir = tiny_data.write(str(tmp_path / "data"))
  model_dir = tmp_path / "model"
  config = local_cluster.ClusterConfig(
      num_ps=1, num_workers=2, log_dir=str(tmp_path / "logs"), max_restarts=4,
      trainer_args=("--model=sine", f"--data_dir={data_dir}", f"--model_dir={model_dir}",
                    f"--train_steps={TRAIN_STEPS}", "--batch_size=16", "--embedding_dim=8",
                    "--model_param=num_prototypes=4", "--model_param=num_interests=2",
                    "--log_every=5", "--checkpoint_every=20", "--ks=10", "--export=false"))
  cwd = os.getcwd()
  os.chdir(_REPO_ROOT)  # the launcher runs `python -m cluster.local_cluster`
  try:
    report = fault_drill.run_drill(config, [
        fault_drill.Fault("worker-0", at_step=25),
        fault_drill.Fault("ps-0", at_step=0),  # at the first step after the worker rejoined
        fault_drill.Fault("chief-0", at_step=0, signal=signal.SIGTERM)], timeout_s=300)
  finally:
    os.chdir(cwd)
  with open(tmp_path / "logs" / "chief-0.log") as f:
    chief_log = f.read()
  events = "\n".join(map(str, report.events))
  assert report.status == 0 and not report.faults_left, f"{events}\n{chief_log[-3000:]}"

  worker_kill = report.first("fault", "worker-0")
  rejoined = report.first("recovered", after=worker_kill.seconds)
  assert report.first("started", "worker-0", after=worker_kill.seconds) and rejoined, events
  ps_kill = report.first("fault", "ps-0")
  chief_starts = [e.seconds for e in report.events if e.kind == "started" and e.task == "chief-0"]
  sigterm = report.first("fault", "chief-0")
  # The chief was restarted for the ps and for SIGTERM, not for the worker.
  assert len(chief_starts) == 3 and ps_kill.seconds < chief_starts[1] < sigterm.seconds, events
  detected = report.first("ps_failed", after=ps_kill.seconds)
  resumed = report.first("resumed", after=ps_kill.seconds)
  last_saved = max(e.step for e in report.events if e.kind == "saved" and e.seconds < ps_kill.seconds)
  assert detected and resumed.step == last_saved, events
  # SIGTERM: a checkpoint after the signal, named by the step it holds, resumed from.
  resumed_after_sigterm = report.first("resumed", after=sigterm.seconds)
  (*_, interrupted) = [e for e in report.events if e.kind == "saved"
                       and sigterm.seconds < e.seconds < resumed_after_sigterm.seconds]
  assert interrupted.step >= sigterm.step and resumed_after_sigterm.step == interrupted.step
  assert resumed_after_sigterm.detail == f"ckpt-{resumed_after_sigterm.step}", events
  assert "stopped by SIGTERM" in chief_log
  print(f"\nworker killed at step {worker_kill.step}: rejoined after "
        f"{rejoined.seconds - worker_kill.seconds:.1f} s")
  print(f"ps killed at step {ps_kill.step}: detected after {detected.seconds - ps_kill.seconds:.1f} s, "
        f"chief resumed at step {resumed.step} after {resumed.seconds - ps_kill.seconds:.1f} s, "
        f"first step after {report.first('progress', after=resumed.seconds).seconds - ps_kill.seconds:.1f} s")
  print(f"chief SIGTERM at step {sigterm.step}: checkpoint of step {interrupted.step} after "
        f"{interrupted.seconds - sigterm.seconds:.1f} s, resumed after "
        f"{resumed_after_sigterm.seconds - sigterm.seconds:.1f} s")

  with open(model_dir / "metrics.json") as f:
    metrics = json.load(f)
  assert metrics["step"] == TRAIN_STEPS
  # The last chief's steps: every step that ran was applied.
  assert metrics["steps"]["first"] == interrupted.step
  assert metrics["steps"]["applied"] >= metrics["steps"]["run"] == TRAIN_STEPS - interrupted.step
  assert "the optimizer applied" not in chief_log  # no missing update in the first chief either
  held = _checkpoint_steps(model_dir / "checkpoints")
  assert held and all(name == step for name, step in held.items()), held
  # What the first chief wrote is still there: a progress summary for every interval
  # of 5 steps (it may end a step or two late, when steps ran twice).
  steps = _summary_steps(model_dir / "summaries" / "train")
  assert all(steps & {k, k + 1, k + 2} for k in range(5, TRAIN_STEPS + 1, 5)), sorted(steps)


def _summary_steps(directory):
  steps = set()
  for name in os.listdir(directory):
    for record in tf.data.TFRecordDataset(os.path.join(directory, name)):
      event = tf.compat.v1.Event.FromString(record.numpy())
      if any(value.tag == "total" for value in event.summary.value):
        steps.add(event.step)
  return steps
