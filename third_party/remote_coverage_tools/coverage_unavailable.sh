#!/bin/sh
# Stands in for Bazel's downloaded coverage tools (see third_party/README.md).
echo "bazel coverage is not available offline" >&2
exit 1
