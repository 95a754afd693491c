"""Checks of the Kubernetes manifests and the container recipe (no cluster needed)."""

import ast
import os
import re

import pytest

from tests.cluster import yaml_subset

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read(name):
  with open(os.path.join(_ROOT, "cluster", name)) as f:
    return f.read()


def _containers(replica_spec):
  return replica_spec["template"]["spec"]["containers"]


def test_yaml_subset_loader_on_hand_checked_input():
  text = 'a: 1  # one\nb:\n  - x\n  - y: "2"\n    z: [\"p\", \"q\"]\nc:\n  d: true\n'
  assert yaml_subset.load(text) == {"a": 1, "b": ["x", {"y": "2", "z": ["p", "q"]}],
                                    "c": {"d": True}}
  for unsupported in ("a: &anchor 1", "a: |\n  text", "a: 1\na: 2", "a: {b: 1}"):
    with pytest.raises(ValueError):
      yaml_subset.load(unsupported)


def _check_pods(job):
  """Every pod: the operator's container name, trainer command, mounts of declared volumes."""
  for replica, spec in job["spec"]["tfReplicaSpecs"].items():
    pod = spec["template"]["spec"]
    volumes = {volume["name"] for volume in pod.get("volumes", [])}
    (container,) = pod["containers"]
    # The training operator injects TF_CONFIG only into the container named "tensorflow".
    assert container["name"] == "tensorflow", replica
    assert container["command"] == ["python", "-m", "trainer.main"], replica
    for mount in container.get("volumeMounts", []):
      assert mount["name"] in volumes, (replica, mount)


def _trainer_flags(job):
  args = [arg for spec in job["spec"]["tfReplicaSpecs"].values()
          for arg in _containers(spec)[0].get("args", [])]
  return {re.match(r"--(\w+)=", arg).group(1) for arg in args}


def _check_flags_exist(job):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from trainer import main  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import

  unknown = sorted(name for name in _trainer_flags(job) if name not in flags.FLAGS)
  assert not unknown, f"flags the trainer does not define: {unknown}"


def test_parameter_server_tfjob():
  job = yaml_subset.load(_read("tfjob_ps.yaml"))
  assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "TFJob")
  specs = job["spec"]["tfReplicaSpecs"]
  assert set(specs) == {"Chief", "PS", "Worker"}
  assert (specs["Chief"]["replicas"], specs["PS"]["replicas"]) == (1, 2)
  assert specs["Worker"]["replicas"] >= 1
  # Workers compute on a GPU each; ps and chief see none.
  assert _containers(specs["Worker"])[0]["resources"]["limits"]["nvidia.com/gpu"] == 1
  for replica in ("Chief", "PS"):
    env = {e["name"]: e["value"] for e in _containers(specs[replica])[0]["env"]}
    assert env["CUDA_VISIBLE_DEVICES"] == ""
  # Servers stop when the chief is done (they would otherwise serve forever).
  assert job["spec"]["runPolicy"]["cleanPodPolicy"] == "Running"
  # Only the chief gets the training flags; it and the workers read the same data path.
  assert "args" not in _containers(specs["PS"])[0] and "args" not in _containers(specs["Worker"])[0]
  chief_args = _containers(specs["Chief"])[0]["args"]
  assert "--data_dir=/data/dataset" in chief_args
  assert {m["mountPath"] for m in _containers(specs["Worker"])[0]["volumeMounts"]} == {"/data"}
  _check_pods(job)
  _check_flags_exist(job)


def test_mirrored_tfjob_is_one_pod_with_several_gpus():
  job = yaml_subset.load(_read("tfjob_mirrored.yaml"))
  specs = job["spec"]["tfReplicaSpecs"]
  # One replica in all: the operator sets no TF_CONFIG, so the trainer picks
  # MirroredStrategy over the pod's GPUs (trainer/strategy.py).
  assert list(specs) == ["Worker"] and specs["Worker"]["replicas"] == 1
  assert _containers(specs["Worker"])[0]["resources"]["limits"]["nvidia.com/gpu"] > 1
  _check_pods(job)
  _check_flags_exist(job)


def test_dockerfile_installs_the_pinned_versions_and_every_package():
  dockerfile = _read("Dockerfile")
  with open(os.path.join(_ROOT, "setup.py")) as f:
    setup_call = next(node for node in ast.walk(ast.parse(f.read()))
                      if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
  keywords = {k.arg: k.value for k in setup_call.keywords}
  for requirement in ast.literal_eval(keywords["install_requires"]):
    if requirement.startswith("tensorflow=="):  # the image adds the CUDA wheels
      version = requirement.split("==")[1].rstrip("*")
      assert f'"tensorflow[and-cuda]=={version}' in dockerfile
    else:
      assert f'"{requirement}"' in dockerfile, requirement
  packages = ast.literal_eval(keywords["packages"].keywords[0].value)  # find_packages(include=)
  for package in packages:
    name = package.rstrip("*")
    assert f"COPY {name} ./{name}" in dockerfile, name
