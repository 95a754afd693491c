"""Local multi-process cluster launcher; Kubernetes manifests live beside it."""
