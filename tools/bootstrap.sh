# Sourced by quickstart.sh and run_tests.sh: creates .venv in the repository root and
# installs the project into it on first use (or when setup.py changed), then activates it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.installed-setup.py"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating virtualenv $VENV" >&2
  python3 -m venv "$VENV"
fi
if ! cmp -s "$ROOT/setup.py" "$STAMP"; then
  echo "[bootstrap] installing the project and its pinned dependencies (first use, a few minutes)" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]"
  cp "$ROOT/setup.py" "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export TF_USE_LEGACY_KERAS=1
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
cd "$ROOT"
