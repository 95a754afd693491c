"""Tests of the local cluster launcher: TF_CONFIG, process handling, and a real cluster."""

import json
import os
import subprocess
import sys
import time

import pytest

from cluster import local_cluster

_FAKE = "tests.cluster.fake_task"
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_cluster_spec_and_tf_config():
  cluster = local_cluster.cluster_spec(2, 2, [5000, 5001, 5002, 5003, 5004])
  assert cluster == {"chief": ["localhost:5000"], "worker": ["localhost:5001", "localhost:5002"],
                     "ps": ["localhost:5003", "localhost:5004"]}
  assert json.loads(local_cluster.tf_config(cluster, "worker", 1)) == {
      "cluster": cluster, "task": {"type": "worker", "index": 1}}
  with pytest.raises(ValueError, match="No 'ps' task 2"):
    local_cluster.tf_config(cluster, "ps", 2)
  with pytest.raises(ValueError, match=r"Need 5 ports \(1 chief, 2 workers, 2 ps\), got 4"):
    local_cluster.cluster_spec(2, 2, [1, 2, 3, 4])
  with pytest.raises(ValueError, match="at least one ps and one worker"):
    local_cluster.ClusterConfig(num_ps=0)


def test_task_environment_hides_gpus_from_parameter_servers():
  cluster = local_cluster.cluster_spec(1, 3, [1, 2, 3, 4, 5])
  ps = local_cluster.task_environment(cluster, "ps", 0, base={"PATH": "/bin"})
  worker = local_cluster.task_environment(cluster, "worker", 0, base={"CUDA_VISIBLE_DEVICES": "1"})
  assert ps["CUDA_VISIBLE_DEVICES"] == "" and ps["PATH"] == "/bin"
  assert worker["CUDA_VISIBLE_DEVICES"] == "1" and worker["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
  assert json.loads(worker["TF_CONFIG"])["task"] == {"type": "worker", "index": 0}
  # --worker_gpus=0,1: workers 0, 1, 2 get GPU 0, 1, 0 alone.
  assert [local_cluster.task_environment(cluster, "worker", i, base={}, worker_gpus=("0", "1"))
          ["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["0", "1", "0"]


def test_free_ports_are_distinct():
  ports = local_cluster.free_ports(6)
  assert len(set(ports)) == 6 and all(0 < p < 65536 for p in ports)


@pytest.fixture
def starts(tmp_path, monkeypatch):
  """Reads the fake tasks' starts: [(name, pid), ...] in order."""
  path = tmp_path / "starts.log"
  path.touch()
  monkeypatch.setenv("FAKE_TASK_LOG", str(path))
  return lambda: [tuple(line.split()) for line in path.read_text().splitlines()]


def _run(tmp_path, *args, timeout_s=30.0, max_restarts=3, evaluator=False):
  config = local_cluster.ClusterConfig(
      num_ps=2, num_workers=2, log_dir=str(tmp_path / "logs"), module=_FAKE,
      trainer_args=(f"--out={tmp_path / 'chief.jsonl'}",) + tuple(args), timeout_s=timeout_s,
      max_restarts=max_restarts, evaluator=evaluator)
  open(os.environ["FAKE_TASK_LOG"], "w").close()  # each run starts its tasks afresh
  cwd = os.getcwd()
  os.chdir(_REPO_ROOT)  # the fake task is imported as tests.cluster.fake_task
  try:
    return local_cluster.run_cluster(config)
  finally:
    os.chdir(cwd)


def _chief_runs(tmp_path):
  with open(tmp_path / "chief.jsonl") as f:
    return [json.loads(line) for line in f]


def test_launcher_passes_flags_and_returns_the_chiefs_status(tmp_path, starts):
  assert _run(tmp_path, "--model=sine") == 0
  (chief,) = _chief_runs(tmp_path)
  assert chief["tf_config"]["task"] == {"type": "chief", "index": 0}
  assert len(chief["tf_config"]["cluster"]["ps"]) == 2
  assert chief["unknown_args"] == ["--model=sine"]
  # Every task logged; the servers had started (and listened) before the chief.
  logs = sorted(os.listdir(tmp_path / "logs"))
  assert logs == ["chief-0.log", "ps-0.log", "ps-1.log", "worker-0.log", "worker-1.log"]
  with open(tmp_path / "logs" / "ps-1.log") as f:
    assert f.read().startswith("ps-1 started with")
  assert [name for name, _ in starts()][-1] == "chief-0"

  assert _run(tmp_path, "--exit_code=7") == 7


def test_a_killed_worker_is_restarted_on_its_port_and_the_job_goes_on(tmp_path, starts):
  # 137 = 128 + SIGKILL: retryable, as for the training operator's ExitCode policy.
  assert _run(tmp_path, "--crash=worker-1", "--crash_status=137", "--chief_sleep=3") == 0
  assert [name for name, _ in starts()].count("worker-1") == 2
  with open(tmp_path / "logs" / "worker-1.log") as f:
    assert "===== worker-1 restarted (start 2) =====" in f.read()


def test_a_chief_that_lost_a_parameter_server_is_restarted(tmp_path, starts):
  assert _run(tmp_path, "--chief_first_status=203") == 0
  assert [name for name, _ in starts()].count("chief-0") == 2
  # The restarted chief got the same cluster (the servers kept their ports).
  first, second = _chief_runs(tmp_path)
  assert first["tf_config"] == second["tf_config"]


def test_a_side_car_evaluator_runs_beside_the_chief_and_is_waited_for(tmp_path, starts):
  # The launcher waits for the evaluator's own end (0), and only then stops the servers.
  assert _run(tmp_path, "--chief_sleep=2", evaluator=True) == 0
  chief, evaluator = sorted(_chief_runs(tmp_path), key=lambda run: run["tf_config"]["task"]["type"])
  assert evaluator["tf_config"]["task"] == {"type": "evaluator", "index": 0}
  # Like the training operator, every task's cluster lists the evaluator.
  assert chief["tf_config"]["cluster"]["evaluator"] == evaluator["tf_config"]["cluster"]["evaluator"]
  assert sorted(name for name, _ in starts())[:2] == ["chief-0", "evaluator-0"]


def test_failures_that_are_not_retried_stop_the_cluster(tmp_path, starts):
  # A status of 1-127 is a bug or a user's mistake: never retried.
  assert _run(tmp_path, "--crash=worker-1", "--chief_sleep=60") == 3
  # A retryable failure with no restarts left: the task's status.
  assert _run(tmp_path, "--crash=ps-0", "--crash_status=137", "--chief_sleep=60",
              max_restarts=0) == 137
  assert _run(tmp_path, "--chief_sleep=60", timeout_s=2.0) == local_cluster.EXIT_TIMEOUT


_LAUNCHER = """
import sys
from cluster import local_cluster
local_cluster.run_cluster(local_cluster.ClusterConfig(
    num_ps=2, num_workers=2, log_dir=sys.argv[1], module="tests.cluster.fake_task",
    trainer_args=("--out=" + sys.argv[2], "--chief_sleep=600")))
"""


def _alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
  except FileNotFoundError:
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_no_task_outlives_a_launcher_killed_with_sigkill(tmp_path, starts):
  launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(tmp_path / "logs"),
                               str(tmp_path / "chief.jsonl")], cwd=_REPO_ROOT)
  try:
    deadline = time.monotonic() + 30
    while len(starts()) < 5 and time.monotonic() < deadline:  # 2 ps, 2 workers, the chief
      time.sleep(0.1)
    pids = [int(pid) for _, pid in starts()]
    assert len(pids) == 5 and all(_alive(pid) for pid in pids)
  finally:
    launcher.kill()
    launcher.wait()
  deadline = time.monotonic() + 10
  while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
    time.sleep(0.1)
  assert not [pid for pid in pids if _alive(pid)]


def _localized(cluster):
  """The operator's cluster with each address replaced by a free localhost port."""
  ports = iter(local_cluster.free_ports(sum(map(len, cluster.values()))))
  return {job: [f"localhost:{next(ports)}" for _ in addresses] for job, addresses in cluster.items()}


@pytest.mark.large
def test_sine_trains_and_exports_on_the_tfjobs_cluster_run_locally(tmp_path):
  """cluster/tfjob_ps.yaml's cluster as the training operator writes it into TF_CONFIG
  (its Evaluator replica included), with 1 worker instead of 4 for this 2-core machine
  and localhost ports for its service names: 1 chief, 1 worker, 2 ps and the side-car
  evaluator, each a `python -m trainer.main` process, on tiny data."""
  from tests.cluster import operator_tf_config  # pylint: disable=g-import-not-at-top
  from tests.trainer import tiny_data  # pylint: disable=g-import-not-at-top  (imports TF)
  import yaml  # pylint: disable=g-import-not-at-top

  with open(os.path.join(_REPO_ROOT, "cluster", "tfjob_ps.yaml")) as f:
    tfjob = yaml.safe_load(f)
  tfjob["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] = 1
  cluster = _localized(operator_tf_config.cluster_spec(tfjob))
  assert sorted(cluster) == ["chief", "evaluator", "ps", "worker"] and len(cluster["ps"]) == 2
  data_dir = tiny_data.write(str(tmp_path / "data"))
  model_dir = tmp_path / "model"
  config = local_cluster.ClusterConfig(
      cluster=cluster, log_dir=str(tmp_path / "logs"), timeout_s=240,
      trainer_args=("--model=sine", f"--data_dir={data_dir}", f"--model_dir={model_dir}",
                    "--train_steps=6", "--batch_size=16", "--embedding_dim=8",
                    "--model_param=num_prototypes=4", "--model_param=num_interests=2",
                    "--eval_every=0", "--log_every=2", "--checkpoint_every=2", "--ks=10"))
  cwd = os.getcwd()
  os.chdir(_REPO_ROOT)
  try:
    status = local_cluster.run_cluster(config)
  finally:
    os.chdir(cwd)
  logs = {name: (tmp_path / "logs" / f"{name}.log").read_text()
          for name in ("chief-0", "evaluator-0")}
  assert status == 0, logs["chief-0"][-3000:] + logs["evaluator-0"][-3000:]
  with open(model_dir / "metrics.json") as f:
    metrics = json.load(f)
  assert metrics["step"] == 6, metrics  # the coordinator ran all steps on the worker
  exports = [name for name in os.listdir(model_dir / "export") if name.isdigit()]
  assert len(exports) == 1
  assert os.path.exists(model_dir / "export" / exports[0] / "saved_model.pb")
  # The chief really trained under ParameterServerStrategy, on a cluster without the
  # evaluator (connecting to it would have hung).
  assert "ParameterServerStrategy" in logs["chief-0"]
  assert "'evaluator'" not in logs["chief-0"].split("is initialized with cluster_spec:")[1].split("\n")[0]
  # The evaluator scored checkpoints up to the last one.
  assert "evaluator: valid at step 6" in logs["evaluator-0"]
