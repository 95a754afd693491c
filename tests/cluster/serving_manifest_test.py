"""cluster/serving.yaml against the Kubernetes schemas and the server it runs (no cluster needed).

The schemas are vendored in tests/cluster/schemas/ (PROVENANCE.md says where from).
"""

import copy
import json
import os
import re
import subprocess
import sys

import jsonschema
import pytest
import yaml

from retrieval import server

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SCHEMAS = {
    ("apps/v1", "Deployment"): "deployment-apps-v1.json",
    ("v1", "Service"): "service-v1.json",
}


def _read(*path):
  with open(os.path.join(_ROOT, *path)) as f:
    return f.read()


@pytest.fixture(scope="module")
def manifests():
  deployment, service = yaml.safe_load_all(_read("cluster", "serving.yaml"))
  return deployment, service


def _schema_errors(document):
  schema = json.loads(_read("tests", "cluster", "schemas",
                            _SCHEMAS[document["apiVersion"], document["kind"]]))
  # openapi2jsonschema writes draft-4 schemas (its "$schema" names no draft).
  return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
          for e in jsonschema.Draft4Validator(schema).iter_errors(document)]


def _container(deployment):
  (container,) = deployment["spec"]["template"]["spec"]["containers"]
  return container


def test_deployment_and_service_match_the_kubernetes_schemas(manifests):
  deployment, service = manifests
  assert (deployment["kind"], service["kind"]) == ("Deployment", "Service")
  assert _schema_errors(deployment) == []
  assert _schema_errors(service) == []


@pytest.mark.parametrize("mistake, error", [
    (lambda d: _container(d).update(readinesProbe=_container(d).pop("readinessProbe")),
     "'readinesProbe' was unexpected"),
    (lambda d: d["spec"].update(replicas="2"), r"spec.replicas: '2' is not of type"),
    (lambda d: _container(d)["ports"][0].update(containerPort="8501"),
     r"containerPort: '8501' is not of type"),
    (lambda d: _container(d)["livenessProbe"]["httpGet"].pop("port"), "'port' is a required"),
])
def test_the_schema_check_catches_mistakes(manifests, mistake, error):
  broken = copy.deepcopy(manifests[0])
  mistake(broken)
  assert any(re.search(error, message) for message in _schema_errors(broken)), \
      _schema_errors(broken)


def test_probes_ports_and_selectors_fit_the_server(manifests):
  deployment, service = manifests
  container = _container(deployment)
  (port,) = container["ports"]
  assert (port["name"], port["containerPort"]) == ("http", 8501)
  probes = {kind: container[kind]["httpGet"] for kind in
            ("startupProbe", "livenessProbe", "readinessProbe")}
  assert {kind: (p["path"], p["port"]) for kind, p in probes.items()} == {
      "startupProbe": (server.LIVENESS_PATH, "http"),
      "livenessProbe": (server.LIVENESS_PATH, "http"),
      "readinessProbe": (server.READINESS_PATH, "http")}
  labels = deployment["spec"]["template"]["metadata"]["labels"]
  assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
  assert service["spec"]["selector"].items() <= labels.items()
  (service_port,) = service["spec"]["ports"]
  assert (service_port["port"], service_port["targetPort"]) == (8501, "http")
  # Nothing may be lost in a rollout: a new pod is ready before an old one stops, and
  # the grace period covers Uvicorn's 30 s of finishing requests in flight.
  assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
  assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 30


def test_the_container_runs_serve_with_its_flags_as_the_images_user(manifests):
  deployment, _ = manifests
  container = _container(deployment)
  assert container["command"] == ["python", "-m", "retrieval.serve"]
  args = dict(re.fullmatch(r"--(\w+)=(.*)", arg).groups() for arg in container["args"])
  assert (args["host"], args["port"]) == ("0.0.0.0", "8501")  # reachable from the Service
  helps = subprocess.run([sys.executable, "-m", "retrieval.serve", "--helpshort"], cwd=_ROOT,
                         capture_output=True, text=True, timeout=120).stdout
  defined = set(re.findall(r"^  --(\w+):", helps, flags=re.MULTILINE))
  assert "artifact_dir" in defined and not set(args) - defined, set(args) - defined
  # The artifact comes from the claim mounted there, read-only.
  (mount,) = container["volumeMounts"]
  assert args["artifact_dir"].startswith(mount["mountPath"] + "/") and mount["readOnly"]
  # The pod runs as the image's user.
  uid = re.search(r"useradd .*--uid (\d+)", _read("cluster", "Dockerfile")).group(1)
  assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)
