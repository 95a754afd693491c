#!/usr/bin/env bash
# Runs the test suite (creates .venv and installs the project on first use).
# Extra arguments go to pytest, e.g. ./run_tests.sh tests/models -k sine
source "$(dirname "${BASH_SOURCE[0]}")/tools/bootstrap.sh"
exec python -m pytest -q tests "$@"
