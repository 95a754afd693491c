"""Bazel's test protocol -> pytest's command line (tools/pytest_main.py)."""

from tools import pytest_main


def test_bare_run_only_disables_the_cache():
  # Outside `bazel test` (no Bazel variables) the file is passed through unchanged.
  assert pytest_main.pytest_args(["tests/models/sine_test.py"], {}) == [
      "-p", "no:cacheprovider", "tests/models/sine_test.py"]


def test_bazel_variables_map_to_pytest_options():
  environ = {
      "XML_OUTPUT_FILE": "/out/test.xml",
      "TESTBRIDGE_TEST_ONLY": "interest and not slow",  # bazel test --test_filter=...
      "TEST_TMPDIR": "/scratch",
  }
  assert pytest_main.pytest_args(["a_test.py", "-x"], environ) == [
      "-p", "no:cacheprovider",
      "--junitxml=/out/test.xml",
      "-k", "interest and not slow",
      "--basetemp=/scratch/pytest",
      "a_test.py", "-x",
  ]


def test_empty_test_filter_selects_everything():
  # Bazel sets TESTBRIDGE_TEST_ONLY="" when --test_filter is given empty; no -k then.
  assert "-k" not in pytest_main.pytest_args(["a_test.py"], {"TESTBRIDGE_TEST_ONLY": ""})
