"""The TF_CONFIG that Kubeflow's training operator injects into each TFJob replica.

A transcription of kubeflow/training-operator v1.9.0 (commit 6f74c7f6b2ed6c27aabd82d0a316b23f0646059c),
pkg/controller.v1/tensorflow/tensorflow.go (`genTFConfigJSONStr`, `genClusterSpec`)
and util.go (`isDistributed`, `GetPortFromTFJob`), for tests that feed the operator's
TF_CONFIG to the trainer:

* every replica type is a job of the cluster, lowercased (`Evaluator` included), with
  `replicas` addresses `<job name>-<type>-<index>.<namespace>.svc:<port>`; the port is
  the tensorflow container's port named `tfjob-port`, else 2222;
* the task is `{"type": <type lowercased>, "index": i}`, plus `"environment": "cloud"`;
* a TFJob with one replica in all gets no TF_CONFIG (not distributed);
* only the container named `tensorflow` gets it (not modelled: one container per pod).
"""

import json
from typing import Any, Dict, Mapping, Tuple

DEFAULT_PORT = 2222
PORT_NAME = "tfjob-port"
CONTAINER_NAME = "tensorflow"


def _port(replica_spec: Mapping[str, Any]) -> int:
  for container in replica_spec["template"]["spec"]["containers"]:
    if container["name"] == CONTAINER_NAME:
      for port in container.get("ports", []):
        if port.get("name") == PORT_NAME:
          return port["containerPort"]
  return DEFAULT_PORT


def cluster_spec(tfjob: Mapping[str, Any], namespace: str = "default") -> Dict[str, list]:
  name = tfjob["metadata"]["name"]
  return {
      replica.lower(): [f"{name}-{replica.lower()}-{i}.{namespace}.svc:{_port(spec)}"
                        for i in range(spec.get("replicas", 1))]
      for replica, spec in tfjob["spec"]["tfReplicaSpecs"].items()}


def tf_configs(tfjob: Mapping[str, Any], namespace: str = "default") -> Dict[Tuple[str, int], str]:
  """{(task type, index): TF_CONFIG} of every replica; {} when the job is not distributed."""
  specs = tfjob["spec"]["tfReplicaSpecs"]
  if sum(spec.get("replicas", 1) for spec in specs.values()) == 1:
    return {}
  cluster = cluster_spec(tfjob, namespace)
  return {(job, i): json.dumps({"cluster": cluster, "task": {"type": job, "index": i},
                                "environment": "cloud"})
          for job, addresses in cluster.items() for i in range(len(addresses))}
