"""The versioned artifact layout (retrieval/versions.py), on hand-made directories."""

import os

import pytest

from retrieval import versions


def _version(base, number, manifest=True):
  path = base / str(number)
  (path / "assets.extra").mkdir(parents=True)
  (path / "saved_model.pb").write_bytes(b"")
  if manifest:
    (path / "assets.extra" / "retrieval_meta.json").write_text("{}")
  return str(path)


def test_versions_resolve_to_the_newest_or_the_one_asked_for(tmp_path):
  base = tmp_path / "out" / "artifact"
  assert versions.list_versions(str(base)) == [] and versions.next_version(str(base)) == 1
  first, tenth = _version(base, 1), _version(base, 10)
  (base / ".11.tmp-host-123-0123abcd").mkdir()  # a job writing version 11: not a version
  assert versions.list_versions(str(base)) == [1, 10]  # numerically, not "1" < "10" < "2"
  assert versions.next_version(str(base)) == 11
  out = str(tmp_path / "out")
  assert versions.resolve(out) == versions.resolve(str(base)) == tenth
  assert versions.resolve(out, version=1) == first
  assert versions.resolve(first) == first  # one version's directory is itself
  assert versions.base_of(out) == str(base) and versions.base_of(first) is None
  with pytest.raises(FileNotFoundError, match=r"No retrieval artifact at .*: expected version 7"):
    versions.resolve(out, version=7)
  with pytest.raises(FileNotFoundError, match="expected a SavedModel"):
    versions.resolve(str(tmp_path / "nothing"))
  versions.check_base(str(base))  # only our versions and a temporary: fine


def test_check_base_refuses_what_is_not_ours(tmp_path):
  base = tmp_path / "artifact"
  _version(base, 1)
  _version(base, 2, manifest=False)  # a SavedModel, but not one the index job wrote
  (base / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match=r"not artifact versions written by this project "
                                       r"\(notes.txt, 2\)"):
    versions.check_base(str(base))
  file_base = tmp_path / "file"
  file_base.write_text("")
  with pytest.raises(ValueError, match="is a file"):
    versions.check_base(str(file_base))
  assert sorted(os.listdir(base)) == ["1", "2", "notes.txt"]
