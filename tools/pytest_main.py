"""The `main` of every py_test made by tools/pytest.bzl: runs pytest on one test file.

Bazel runs a test from its runfiles tree (read-only in the sandbox) and passes the file
as an argument (`$(rootpath ...)`). This runner maps Bazel's test protocol onto pytest:
  - XML_OUTPUT_FILE -> --junitxml, so `bazel test` shows per-case results;
  - TESTBRIDGE_TEST_ONLY (`bazel test --test_filter=EXPR`) -> -k EXPR;
  - TEST_TMPDIR -> --basetemp, so tmp_path lives in Bazel's per-test scratch space;
  - no .pytest_cache (the runfiles tree is not ours to write).
"""

import os
import sys

import pytest


def pytest_args(argv, environ):
  """Returns pytest's command line for Bazel's `argv` (test files, options) and `environ`."""
  args = ["-p", "no:cacheprovider"]
  if "XML_OUTPUT_FILE" in environ:
    args.append("--junitxml=" + environ["XML_OUTPUT_FILE"])
  if environ.get("TESTBRIDGE_TEST_ONLY"):
    args += ["-k", environ["TESTBRIDGE_TEST_ONLY"]]
  if "TEST_TMPDIR" in environ:
    args.append("--basetemp=" + os.path.join(environ["TEST_TMPDIR"], "pytest"))
  return args + list(argv)


def main():
  sys.exit(pytest.main(pytest_args(sys.argv[1:], os.environ)))


if __name__ == "__main__":
  main()
