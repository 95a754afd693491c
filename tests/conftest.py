"""Shared test fixtures: where the read-only public data sets live."""

import os

import pytest

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def shared_data_dir():
  """../shared/data beside the repository, or $DCG_SHARED_DIR/data; None when absent."""
  shared = os.environ.get("DCG_SHARED_DIR", os.path.join(os.path.dirname(_REPO_ROOT), "shared"))
  data = os.path.join(shared, "data")
  return data if os.path.isdir(data) else None


@pytest.fixture
def shared_data():
  data = shared_data_dir()
  if data is None:
    pytest.skip("public data sets not found: put the shared/ folder beside the repository "
                "or set DCG_SHARED_DIR")
  return data
