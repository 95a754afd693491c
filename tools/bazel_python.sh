#!/usr/bin/env bash
# The interpreter of the Bazel Python toolchain (tools/BUILD): runs the project's
# virtualenv, <workspace>/.venv/bin/python, which tools/bootstrap.sh creates.
#
# Bazel starts this script from a runfiles tree, where it is a symlink (through the
# execroot) to the checked-in file, so the workspace is found by resolving that link:
# no checkout path is written down anywhere. `bazel run` also sets
# BUILD_WORKSPACE_DIRECTORY, used when the link cannot be resolved (e.g. a copied tree).
set -euo pipefail

self="$(readlink -f "${BASH_SOURCE[0]}")"
workspace="$(dirname "$(dirname "$self")")"
if [[ ! -x "$workspace/.venv/bin/python" && -n "${BUILD_WORKSPACE_DIRECTORY:-}" ]]; then
  workspace="$BUILD_WORKSPACE_DIRECTORY"
fi
python="$workspace/.venv/bin/python"
if [[ ! -x "$python" ]]; then
  echo "tools/bazel_python.sh: expected the project's virtualenv at $python, found none." >&2
  echo "Create it once with: source tools/bootstrap.sh   (or ./run_tests.sh)" >&2
  exit 1
fi

# TFRS needs Keras 2; the switch must be set before TensorFlow is first imported.
export TF_USE_LEGACY_KERAS="${TF_USE_LEGACY_KERAS:-1}"
# `bazel run` starts a binary in its runfiles tree; run it from the directory the command
# was typed in instead, so that relative paths in flags mean what they mean in the shell
# (Bazel's launcher has already made the paths it needs absolute).
if [[ -n "${BUILD_WORKING_DIRECTORY:-}" ]]; then
  cd "$BUILD_WORKING_DIRECTORY"
fi
exec "$python" "$@"
