"""Checks of the Kubernetes manifests and the container recipe (no cluster needed).

Each manifest is read with PyYAML and validated against its API's own schema, kept
in tests/cluster/schemas/ (PROVENANCE.md says where from): the TFJobs against the
openAPIV3Schema of the training operator's TFJob CRD, the index Job against
Kubernetes' standalone-strict Job schema. Both are strict: a field the schema does
not know is an error, as `kubectl apply` (server-side strict field validation, the
default since Kubernetes 1.27) rejects it; the CRD's schema is made strict here. The
operator checks in code (its validating webhook, and what its controller needs to set
TF_CONFIG and restart pods) are checked here too, each with the operator's source,
and the TF_CONFIG the operator would inject into each replica is generated from the
manifest and given to the trainer's strategy code.
"""

import ast
import copy
import json
import os
import re

import jsonschema
import pytest
import yaml

from tests.cluster import operator_tf_config

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SCHEMAS = os.path.join(_ROOT, "tests", "cluster", "schemas")
TFJOBS = ("tfjob_ps.yaml", "tfjob_mirrored.yaml")

# kubeflow/training-operator v1.9.0, pkg/apis/kubeflow.org/v1/{tensorflow,common}_types.go.
REPLICA_TYPES = {"Chief", "Master", "PS", "Worker", "Evaluator"}
RESTART_POLICIES = {"Always", "OnFailure", "Never", "ExitCode"}
CLEAN_POD_POLICIES = {"All", "Running", "None"}


def _read(name):
  with open(os.path.join(_ROOT, "cluster", name)) as f:
    return f.read()


def _load(name):
  return yaml.safe_load(_read(name))


def _strict(schema):
  """`schema` with unknown fields forbidden wherever it lists the known ones."""
  schema = copy.deepcopy(schema)

  def visit(node):
    if isinstance(node, dict):
      if ("properties" in node and "additionalProperties" not in node
          and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
      for value in node.values():
        visit(value)
    elif isinstance(node, list):
      for value in node:
        visit(value)

  visit(schema)
  return schema


@pytest.fixture(scope="module")
def tfjob_schema():
  with open(os.path.join(_SCHEMAS, "kubeflow.org_tfjobs.v1.json")) as f:
    return _strict(json.load(f))


def _validate_tfjob(job, schema):
  jsonschema.Draft7Validator(schema).validate(job)


def _pods(job):
  return {replica: spec["template"]["spec"] for replica, spec in job["spec"]["tfReplicaSpecs"].items()}


def _containers(replica_spec):
  return replica_spec["template"]["spec"]["containers"]


def test_manifests_parse_with_pyyaml_and_the_anchors_resolve():
  job = _load("tfjob_ps.yaml")
  specs = job["spec"]["tfReplicaSpecs"]
  # The chief's and the evaluator's arguments are one YAML list (&job / *job).
  assert _containers(specs["Evaluator"])[0]["args"] == _containers(specs["Chief"])[0]["args"]
  assert specs["PS"]["template"]["spec"]["securityContext"]["runAsUser"] == 1000


@pytest.mark.parametrize("name", TFJOBS)
def test_tfjobs_validate_against_the_operators_crd_schema(name, tfjob_schema):
  _validate_tfjob(_load(name), tfjob_schema)


def test_the_schema_check_can_fail(tfjob_schema):
  job = _load("tfjob_ps.yaml")
  misspelt = copy.deepcopy(job)
  misspelt["spec"]["tfReplicaSpec"] = misspelt["spec"].pop("tfReplicaSpecs")
  with pytest.raises(jsonschema.ValidationError, match="tfReplicaSpec"):
    _validate_tfjob(misspelt, tfjob_schema)
  wrong_type = copy.deepcopy(job)
  wrong_type["spec"]["tfReplicaSpecs"]["PS"]["replicas"] = "two"
  with pytest.raises(jsonschema.ValidationError, match="'two' is not of type 'integer'"):
    _validate_tfjob(wrong_type, tfjob_schema)
  unknown_pod_field = copy.deepcopy(job)
  _pods(unknown_pod_field)["Worker"]["containers"][0]["gpus"] = 1
  with pytest.raises(jsonschema.ValidationError, match="'gpus' was unexpected"):
    _validate_tfjob(unknown_pod_field, tfjob_schema)


@pytest.mark.parametrize("name", TFJOBS)
def test_tfjobs_follow_the_operators_rules(name):
  job = _load(name)
  # pkg/webhooks/tensorflow/tfjob_webhook.go: a DNS-1035 name, at most one Chief or
  # Master, in every replica a container named "tensorflow" with an image.
  assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", job["metadata"]["name"])
  specs = job["spec"]["tfReplicaSpecs"]
  assert set(specs) <= REPLICA_TYPES
  assert sum(specs[r]["replicas"] for r in ("Chief", "Master") if r in specs) <= 1
  assert job["spec"]["runPolicy"].get("cleanPodPolicy", "None") in CLEAN_POD_POLICIES
  for replica, spec in specs.items():
    # ExitCode: 128-255 restarts the pod (trainer.main exits 203 after losing a ps,
    # 143 after SIGTERM, 137 when killed), 1-127 fails the job (2: a mistake).
    assert spec["restartPolicy"] == "ExitCode", replica
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    # The operator sets TF_CONFIG only in the container named "tensorflow".
    assert container["name"] == "tensorflow" and container["image"], replica
    assert container["command"] == ["python", "-m", "trainer.main"], replica
    # Not root, no privilege escalation, no capabilities.
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 1000
    assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                            "capabilities": {"drop": ["ALL"]}}
    # Requests and limits for CPU and memory; a GPU limit equals its request.
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) <= set(resources["limits"]), replica
    gpus = resources["limits"].get("nvidia.com/gpu", 0)
    assert resources["requests"].get("nvidia.com/gpu", 0) == gpus
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    assert (gpus == 0) == (env.get("CUDA_VISIBLE_DEVICES") == ""), replica
    volumes = {volume["name"] for volume in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
      assert mount["name"] in volumes, (replica, mount)


def test_parameter_server_tfjob():
  job = _load("tfjob_ps.yaml")
  specs = job["spec"]["tfReplicaSpecs"]
  assert set(specs) == {"Chief", "PS", "Worker", "Evaluator"}
  assert (specs["Chief"]["replicas"], specs["PS"]["replicas"], specs["Evaluator"]["replicas"]) == (1, 2, 1)
  # Workers compute on a GPU each; the others see none.
  assert specs["Worker"]["replicas"] >= 1
  assert _containers(specs["Worker"])[0]["resources"]["limits"]["nvidia.com/gpu"] == 1
  # Servers stop when the chief is done (they would otherwise serve forever).
  assert job["spec"]["runPolicy"]["cleanPodPolicy"] == "Running"
  # Servers get no flags; the chief and the evaluator read the data and the model dir
  # from the shared claims; the workers read the data.
  assert "args" not in _containers(specs["PS"])[0] and "args" not in _containers(specs["Worker"])[0]
  chief_args = _containers(specs["Chief"])[0]["args"]
  assert "--data_dir=/data/dataset" in chief_args and "--model_dir=/models/sine-ps" in chief_args
  for replica, paths in (("Chief", {"/data", "/models"}), ("Evaluator", {"/data", "/models"}),
                         ("Worker", {"/data"})):
    assert {m["mountPath"] for m in _containers(specs[replica])[0]["volumeMounts"]} == paths
  # The chief has time to checkpoint after SIGTERM (docs/cluster.md measures it).
  assert specs["Chief"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60
  _check_flags_exist(chief_args, "trainer.main")


def test_mirrored_tfjob_is_one_pod_with_several_gpus():
  job = _load("tfjob_mirrored.yaml")
  specs = job["spec"]["tfReplicaSpecs"]
  # One replica in all: the operator sets no TF_CONFIG (operator_tf_config checks the
  # rule), so the trainer picks MirroredStrategy over the pod's GPUs.
  assert list(specs) == ["Worker"] and specs["Worker"]["replicas"] == 1
  assert operator_tf_config.tf_configs(job) == {}
  assert _containers(specs["Worker"])[0]["resources"]["limits"]["nvidia.com/gpu"] > 1
  _check_flags_exist(_containers(specs["Worker"])[0]["args"], "trainer.main")


def test_index_job_validates_against_the_kubernetes_job_schema():
  with open(os.path.join(_SCHEMAS, "job-batch-v1.json")) as f:
    # openapi2jsonschema writes draft-4 schemas (its "$schema" names no draft).
    validator = jsonschema.Draft4Validator(json.load(f))
  job = _load("index_job.yaml")
  validator.validate(job)
  misspelt = copy.deepcopy(job)
  misspelt["spec"]["template"]["spec"]["restartpolicy"] = "Never"
  with pytest.raises(jsonschema.ValidationError, match="'restartpolicy' was unexpected"):
    validator.validate(misspelt)
  incomplete = copy.deepcopy(job)
  del incomplete["spec"]["podFailurePolicy"]["rules"][1]["onPodConditions"][0]["status"]
  with pytest.raises(jsonschema.ValidationError, match="'status' is a required property"):
    validator.validate(incomplete)
  pod = job["spec"]["template"]["spec"]
  # podFailurePolicy needs restartPolicy Never; it fails the Job at once on a bug (1)
  # or a user's mistake (2), the statuses of common.cli.
  assert pod["restartPolicy"] == "Never"
  (fail,) = [r for r in job["spec"]["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
  assert fail["onExitCodes"] == {"containerName": "index", "operator": "In", "values": [1, 2]}
  (container,) = pod["containers"]
  assert container["command"] == ["python", "-m", "retrieval.index_main"]
  assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"][
      "allowPrivilegeEscalation"] is False
  # It reads the export the TFJob's chief writes.
  chief_args = _containers(_load("tfjob_ps.yaml")["spec"]["tfReplicaSpecs"]["Chief"])[0]["args"]
  model_dir = next(a.split("=", 1)[1] for a in chief_args if a.startswith("--model_dir="))
  assert f"--export_dir={model_dir}/export" in container["args"]
  _check_flags_exist(container["args"], "retrieval.index_main")


def _check_flags_exist(args, module):
  """Every `--name=value` of `args` is a flag that `module` defines (read from its source:
  trainer.main and retrieval.index_main define some flags alike, and absl refuses to
  define a flag twice in one process)."""
  with open(os.path.join(_ROOT, *module.split(".")) + ".py") as f:
    defined = {node.args[0].value for node in ast.walk(ast.parse(f.read()))
               if isinstance(node, ast.Call) and getattr(node.func, "attr", "").startswith("DEFINE")
               and node.args and isinstance(node.args[0], ast.Constant)}
  names = {re.match(r"--(\w+)=", arg).group(1) for arg in args}
  assert defined and not names - defined, f"flags {module} does not define: {names - defined}"


def test_the_tf_config_the_operator_injects_is_accepted(monkeypatch):
  from trainer import strategy as strategy_lib  # pylint: disable=g-import-not-at-top

  job = _load("tfjob_ps.yaml")
  configs = operator_tf_config.tf_configs(job, namespace="ml")
  assert sorted(configs) == (
      [("chief", 0), ("evaluator", 0)] + [("ps", i) for i in range(2)]
      + [("worker", i) for i in range(4)])
  chief = json.loads(configs[("chief", 0)])
  assert chief["cluster"]["ps"] == ["dcg-sine-ps-ps-0.ml.svc:2222", "dcg-sine-ps-ps-1.ml.svc:2222"]
  assert chief["environment"] == "cloud" and "evaluator" in chief["cluster"]
  for (task_type, index), tf_config in configs.items():
    monkeypatch.setenv("TF_CONFIG", tf_config)
    resolver = strategy_lib.cluster_resolver_from_environment()
    assert (strategy_lib.task_role(resolver), resolver.task_id) == (task_type, index)
    # The evaluator is kept out of the cluster the chief connects to.
    assert sorted(resolver.cluster_spec().as_dict()) == ["chief", "ps", "worker"]


def test_dockerfile_installs_the_pinned_versions_and_every_package():
  dockerfile = _read("Dockerfile")
  with open(os.path.join(_ROOT, "setup.py")) as f:
    setup_call = next(node for node in ast.walk(ast.parse(f.read()))
                      if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
  keywords = {k.arg: k.value for k in setup_call.keywords}
  for requirement in ast.literal_eval(keywords["install_requires"]):
    if requirement.startswith("tensorflow=="):  # each variant pins its own TensorFlow
      version = requirement.split("==")[1].rstrip("*")
      assert f'gpu) tensorflow="tensorflow[and-cuda]=={version}' in dockerfile
      assert f'cpu) tensorflow="tensorflow=={version}' in dockerfile
    else:
      assert f'"{requirement}"' in dockerfile, requirement
  packages = ast.literal_eval(keywords["packages"].keywords[0].value)  # find_packages(include=)
  for package in packages:
    name = package.rstrip("*")
    assert f"COPY {name} ./{name}" in dockerfile, name
  # The manifests' runAsUser.
  assert "useradd --create-home --uid 1000 dcg" in dockerfile and "USER 1000" in dockerfile
