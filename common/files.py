"""Writing outputs without ever losing a user's files.

Every job that writes a directory or a JSON file goes through here:

* `replace_directory(path, ownership)` writes a whole directory (a prepared data set,
  an export, a retrieval artifact) into a hidden temporary sibling and renames it into
  place when the block succeeds, so a crash never leaves half an output under the
  real name. An existing `path` is replaced only when `ensure_replaceable` allows it.
* `ensure_replaceable(path, ownership)` is the one rule for what may be replaced: a
  missing or empty directory, or one this project wrote (it holds the ownership
  marker, e.g. a data set's stats.json, and nothing but the entries such a directory
  has). Never the working directory, a home directory, the file system root, an
  ancestor of any of them, the job's input or a folder holding it, and never a folder
  with foreign files in it. docs/reliability.md lists the guarantee and its tests.
* `write_json(path, value)` replaces one file atomically.
* Temporary siblings carry the host name and process id (`.NAME.tmp-HOST-PID-RANDOM`);
  `remove_stale_temporaries` deletes those of processes that died on this host, so a
  killed job leaves nothing behind after its next run.

Paths go through `tf.io.gfile` so that model directories on object stores (`gs://`,
`s3://`) work as on a cluster; TensorFlow is imported on first use only, so that
light-weight callers (the prepare readers) stay importable without it.
"""

import contextlib
import dataclasses
import json
import os
import re
import socket
import uuid
from typing import Any, Callable, FrozenSet, Iterator, Optional, Sequence

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<host>[^-]+)-(?P<pid>\d+)-[0-9a-f]{8}$")


class UnsafeOutputError(ValueError):
  """An output path that a job refuses to replace (it could hold the user's files)."""


@dataclasses.dataclass(frozen=True)
class Ownership:
  """How to recognize a directory that this project wrote.

  Attributes:
    what: a name for the message, e.g. "prepared data set".
    marker: a relative path that such a directory always holds (e.g. "stats.json").
    entries: the top-level names such a directory may hold; anything else is foreign.
    is_marker_ours: checks the marker file's content (None: its presence suffices).
  """
  what: str
  marker: str
  entries: FrozenSet[str]
  is_marker_ours: Optional[Callable[[str], bool]] = None


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  return tf.io.gfile


def _is_local(path: str) -> bool:
  return "://" not in path


def _is_ancestor_or_same(parent: str, child: str) -> bool:
  """Whether local real path `parent` is `child` or one of its ancestors."""
  return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def _protected_reason(real: str, inputs: Sequence[str]) -> Optional[str]:
  """Why a local real path must never be replaced, or None."""
  if real == os.path.abspath(os.sep):
    return "is the file system root"
  checks = [(os.getcwd(), "the working directory"), (os.path.expanduser("~"), "your home directory")]
  for other, name in checks:
    other = os.path.realpath(other)
    if real == other:
      return f"is {name}"
    if _is_ancestor_or_same(real, other):
      return f"holds {name} ({other})"
  for given in inputs:
    if not given:
      continue
    other = os.path.realpath(given)
    if real == other:
      return f"is the job's input ({given})"
    if _is_ancestor_or_same(real, other):
      return f"holds the job's input ({given})"
  return None


def ensure_replaceable(path: str, ownership: Ownership, *, overwrite: bool,
                       inputs: Sequence[str] = (), flag: str = "--output_dir") -> None:
  """Raises `UnsafeOutputError` unless `path` may be replaced by a new output.

  Args:
    path: the output directory.
    ownership: how a directory written by this project looks.
    overwrite: whether the user allowed replacing an existing output (`--overwrite`).
    inputs: the job's input files or folders: `path` must not be one of them nor hold one.
    flag: how the user named `path`, for the message.
  """
  gfile = _gfile()
  if _is_local(path):
    reason = _protected_reason(os.path.realpath(path), inputs)
    if reason:
      raise UnsafeOutputError(f"{flag}={path} {reason}; it is never replaced. Choose a new "
                              f"directory for the {ownership.what}.")
  if not gfile.exists(path):
    return
  if not gfile.isdir(path):
    raise UnsafeOutputError(f"{flag}={path} exists and is a file; choose a directory path.")
  entries = sorted(name.rstrip("/") for name in gfile.listdir(path))
  if not entries:
    return
  if not overwrite:
    raise UnsafeOutputError(f"{flag}={path} exists and is not empty; pass --overwrite to replace "
                            f"a {ownership.what} written earlier, or choose another directory.")
  marker = os.path.join(path, ownership.marker)
  if not gfile.exists(marker) or (ownership.is_marker_ours and not ownership.is_marker_ours(marker)):
    raise UnsafeOutputError(
        f"{flag}={path} holds {len(entries)} entries ({_excerpt(entries)}) but is not a "
        f"{ownership.what} written by this project (no valid {ownership.marker}); --overwrite only "
        f"replaces those. Choose another directory, or empty this one yourself.")
  foreign = [name for name in entries if name not in ownership.entries]
  if foreign:
    raise UnsafeOutputError(
        f"{flag}={path} is a {ownership.what} but also holds {len(foreign)} other entries "
        f"({_excerpt(foreign)}), which --overwrite would delete. Move them out, or choose "
        f"another directory.")


def _excerpt(names: Sequence[str], limit: int = 5) -> str:
  shown = ", ".join(names[:limit])
  return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _host() -> str:
  return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def _temporary_name(name: str) -> str:
  return f".{name}.tmp-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _process_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, another user's
    return True
  return True


def remove_stale_temporaries(parent: str, name: Optional[str] = None) -> list:
  """Deletes the temporary siblings left in `parent` by dead processes of this host.

  Args:
    parent: a directory that may hold `.NAME.tmp-HOST-PID-RANDOM` entries.
    name: only those of this output name; None: all.

  Returns:
    The paths removed.
  """
  gfile = _gfile()
  if not gfile.isdir(parent):
    return []
  host = _host()
  removed = []
  for entry in gfile.listdir(parent):
    match = _TEMPORARY.match(entry.rstrip("/"))
    if not match or (name is not None and match["name"] != name):
      continue
    if match["host"] != host or _process_alive(int(match["pid"])):
      continue  # another machine's, or a job still running
    stale = os.path.join(parent, entry.rstrip("/"))
    if gfile.isdir(stale):
      gfile.rmtree(stale)
    else:
      gfile.remove(stale)
    removed.append(stale)
  return removed


@contextlib.contextmanager
def replace_directory(path: str, ownership: Optional[Ownership] = None, *, overwrite: bool = False,
                      inputs: Sequence[str] = (), flag: str = "--output_dir") -> Iterator[str]:
  """Yields a temporary sibling of `path`; puts it in place of `path` if the block succeeds.

  Checks `ensure_replaceable` before and again right before the swap (the block may
  run for minutes). On any exception the temporary directory is removed and `path`
  is left as it was. Without `ownership`, `path` must not exist.
  """
  gfile = _gfile()
  local = _is_local(path)
  if local:
    path = os.path.abspath(path)
  parent, name = os.path.split(path.rstrip("/"))

  def check():
    if ownership is not None:
      ensure_replaceable(path, ownership, overwrite=overwrite, inputs=inputs, flag=flag)
    elif gfile.exists(path):
      raise UnsafeOutputError(f"{flag}={path} exists already; it is never replaced.")

  check()
  gfile.makedirs(parent)
  remove_stale_temporaries(parent, name)
  temporary = os.path.join(parent, _temporary_name(name))
  gfile.makedirs(temporary)
  try:
    yield temporary
    check()
    if gfile.exists(path):
      retired = os.path.join(parent, _temporary_name(name))
      gfile.rename(path, retired)
      gfile.rename(temporary, path)
      gfile.rmtree(retired)
    else:
      gfile.rename(temporary, path)
  except BaseException:
    if gfile.exists(temporary):
      gfile.rmtree(temporary)
    raise


def write_json(path: str, value: Any, **dump_options) -> None:
  """Writes `value` as JSON to `path` atomically (temporary sibling, then rename)."""
  gfile = _gfile()
  parent, name = os.path.split(path)
  if parent:
    gfile.makedirs(parent)
    remove_stale_temporaries(parent, name)
  temporary = os.path.join(parent, _temporary_name(name))
  try:
    with gfile.GFile(temporary, "w") as f:
      json.dump(value, f, **{"indent": 2, "sort_keys": True, **dump_options})
    gfile.rename(temporary, path, overwrite=True)
  except BaseException:
    if gfile.exists(temporary):
      gfile.remove(temporary)
    raise
