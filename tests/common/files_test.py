"""common.files: what an output may replace, atomic directories and files, stale temporaries."""

import json
import os
import subprocess
import sys

import pytest

from common import files

_OURS = files.Ownership(what="test output", marker="MARK", entries=frozenset({"MARK", "data"}))


def _ours(path):
  path.mkdir()
  (path / "MARK").write_text("ok")
  (path / "data").write_text("old")
  return path


def _check(path, **kwargs):
  files.ensure_replaceable(str(path), _OURS, **{"overwrite": True, **kwargs})


def test_missing_empty_and_own_directories_are_replaceable(tmp_path):
  _check(tmp_path / "missing")
  (tmp_path / "empty").mkdir()
  _check(tmp_path / "empty", overwrite=False)
  _check(_ours(tmp_path / "ours"))


def test_non_empty_needs_overwrite(tmp_path):
  with pytest.raises(files.UnsafeOutputError, match="not empty; pass --overwrite"):
    _check(_ours(tmp_path / "ours"), overwrite=False)


@pytest.mark.parametrize("extra", ["notes.txt", ".hidden"])
def test_foreign_entries_are_never_replaced(tmp_path, extra):
  path = _ours(tmp_path / "ours")
  (path / extra).write_text("mine")
  with pytest.raises(files.UnsafeOutputError, match=f"other entries \\({extra}\\)"):
    _check(path)


def test_directory_without_our_marker_is_never_replaced(tmp_path):
  (tmp_path / "theirs").mkdir()
  (tmp_path / "theirs" / "data").write_text("x")
  with pytest.raises(files.UnsafeOutputError, match="not a test output written by this project"):
    _check(tmp_path / "theirs")
  marked = files.Ownership(what="test output", marker="MARK", entries=_OURS.entries,
                           is_marker_ours=lambda p: open(p).read() == "ok")
  path = tmp_path / "fake"
  path.mkdir()
  (path / "MARK").write_text("forged")
  with pytest.raises(files.UnsafeOutputError, match="no valid MARK"):
    files.ensure_replaceable(str(path), marked, overwrite=True)


def test_working_directory_and_its_ancestors_are_never_replaced(tmp_path, monkeypatch):
  work = _ours(tmp_path / "work")
  monkeypatch.chdir(work)
  with pytest.raises(files.UnsafeOutputError, match="is the working directory"):
    _check(".")
  with pytest.raises(files.UnsafeOutputError, match="holds the working directory"):
    _check(tmp_path)


def test_home_and_root_are_never_replaced(tmp_path, monkeypatch):
  home = _ours(tmp_path / "home")
  monkeypatch.setenv("HOME", str(home))
  with pytest.raises(files.UnsafeOutputError, match="is your home directory"):
    _check(home)
  with pytest.raises(files.UnsafeOutputError, match="file system root"):
    _check("/")


def test_input_and_the_folders_holding_it_are_never_replaced(tmp_path):
  folder = _ours(tmp_path / "logs")
  log = folder / "data"
  with pytest.raises(files.UnsafeOutputError, match="holds the job's input"):
    _check(folder, inputs=[str(log)])
  with pytest.raises(files.UnsafeOutputError, match="is the job's input"):
    _check(folder, inputs=[str(folder)])
  with pytest.raises(files.UnsafeOutputError, match="holds the job's input"):
    _check(tmp_path, inputs=[str(log)])
  # A symbolic link to the input's folder is the same folder.
  os.symlink(folder, tmp_path / "link")
  with pytest.raises(files.UnsafeOutputError, match="holds the job's input"):
    _check(tmp_path / "link", inputs=[str(log)])


def test_replace_directory_commits_or_rolls_back(tmp_path):
  target = tmp_path / "out"
  with files.replace_directory(str(target), _OURS) as temporary:
    assert not target.exists() and os.path.dirname(temporary) == str(tmp_path)
    (open(os.path.join(temporary, "MARK"), "w")).write("ok")
  assert os.listdir(target) == ["MARK"]
  with pytest.raises(KeyError):
    with files.replace_directory(str(target), _OURS, overwrite=True) as temporary:
      open(os.path.join(temporary, "data"), "w").close()
      raise KeyError("boom")
  assert os.listdir(target) == ["MARK"]  # the old output survives a failed rewrite
  with files.replace_directory(str(target), _OURS, overwrite=True) as temporary:
    open(os.path.join(temporary, "data"), "w").write("new")
  assert sorted(os.listdir(target)) == ["data"]
  assert sorted(os.listdir(tmp_path)) == ["out"]


def test_replace_directory_checks_again_before_the_swap(tmp_path):
  target = _ours(tmp_path / "out")
  with pytest.raises(files.UnsafeOutputError, match="other entries"):
    with files.replace_directory(str(target), _OURS, overwrite=True) as temporary:
      open(os.path.join(temporary, "MARK"), "w").close()
      (target / "written meanwhile.txt").write_text("mine")
  assert sorted(os.listdir(target)) == ["MARK", "data", "written meanwhile.txt"]
  assert sorted(os.listdir(tmp_path)) == ["out"]


def test_without_ownership_an_existing_path_is_never_replaced(tmp_path):
  (tmp_path / "out").mkdir()
  with pytest.raises(files.UnsafeOutputError, match="exists already"):
    with files.replace_directory(str(tmp_path / "out")):
      pass


def _dead_pid():
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


def test_temporaries_of_dead_processes_are_removed(tmp_path):
  host = files._host()
  dead = tmp_path / f".out.tmp-{host}-{_dead_pid()}-0123abcd"
  alive = tmp_path / f".out.tmp-{host}-{os.getpid()}-0123abcd"
  elsewhere = tmp_path / f".out.tmp-otherhost-{_dead_pid()}-0123abcd"
  other_output = tmp_path / f".other.tmp-{host}-{_dead_pid()}-0123abcd"
  for path in (dead, alive, elsewhere, other_output):
    path.mkdir()
  with files.replace_directory(str(tmp_path / "out"), _OURS):
    pass
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
      ["out", alive.name, elsewhere.name, other_output.name])


def test_write_json_replaces_atomically(tmp_path):
  path = tmp_path / "sub" / "m.json"
  files.write_json(str(path), {"b": 1, "a": [1, 2]})
  files.write_json(str(path), {"c": 3})
  assert json.loads(path.read_text()) == {"c": 3}
  assert os.listdir(path.parent) == ["m.json"]
