"""The versioned artifact directory: TensorFlow Serving's model base path layout.

    OUTPUT_DIR/artifact/          the base path (`--model_base_path` of TF Serving)
        1/ 2/ 3/ ...              one SavedModel per index job run, numbered upwards,
                                  each with its manifest (assets.extra/retrieval_meta.json)

The index job adds version max + 1 (written to a hidden temporary name and renamed,
so a numbered directory is always complete) and never deletes one; the server
(`retrieval/server.py`) serves the newest and switches when a newer one appears.
Paths go through `tf.io.gfile`, so the base path may be on an object store.
"""

import os
from typing import List, Optional

import tensorflow as tf

from common import files
from common import names

SAVED_MODEL_FILE = "saved_model.pb"
ARTIFACT_SUBDIR = "artifact"


def _entries(base: str) -> List[str]:
  return [name.rstrip("/") for name in tf.io.gfile.listdir(base)]


def list_versions(base: str) -> List[int]:
  """The complete versions under `base`, ascending (hidden temporaries are skipped)."""
  if not tf.io.gfile.isdir(base):
    return []
  return sorted(int(name) for name in _entries(base)
                if name.isdigit() and tf.io.gfile.exists(os.path.join(base, name, SAVED_MODEL_FILE)))


def version_path(base: str, version: int) -> str:
  return os.path.join(base, str(version))


def check_base(base: str, flag: str = "--output_dir's artifact/") -> None:
  """Raises `files.UnsafeOutputError` unless the job may add a version to `base`.

  `base` may be missing or empty, or hold only versions this project wrote (and hidden
  temporaries of running or dead jobs); anything else is someone's files.
  """
  if not tf.io.gfile.exists(base):
    return
  if not tf.io.gfile.isdir(base):
    raise files.UnsafeOutputError(f"{flag}={base} exists and is a file; choose a directory path.")
  entries = _entries(base)
  if SAVED_MODEL_FILE in entries:
    raise files.UnsafeOutputError(
        f"{flag}={base} holds an unversioned artifact written by an earlier version of the "
        f"index job; artifacts now live in numbered versions ({base}/1, {base}/2, ...). Keep "
        f"it as version 1 with `mv {base} {base}.old && mkdir {base} && mv {base}.old "
        f"{base}/1`, or choose another --output_dir.")
  foreign = sorted(name for name in entries if not name.isdigit() and not name.startswith("."))
  foreign += [name for name in entries if name.isdigit() and not tf.io.gfile.exists(
      os.path.join(base, name, names.ARTIFACT_META_FILE))]
  if foreign:
    raise files.UnsafeOutputError(
        f"{flag}={base} holds entries that are not artifact versions written by this project "
        f"({', '.join(foreign[:5])}); the index job adds numbered versions beside its own only. "
        f"Move them out, or choose another --output_dir.")


def next_version(base: str) -> int:
  """The number the next version gets: one more than the largest numbered entry."""
  numbers = [int(name) for name in _entries(base) if name.isdigit()] if tf.io.gfile.isdir(base) else []
  return max(numbers, default=0) + 1


def resolve(path: str, version: Optional[int] = None) -> str:
  """The SavedModel directory `path` names: a version, or the newest (or `version`) of a
  base path, or of the index job's OUTPUT_DIR.

  Raises:
    FileNotFoundError: no artifact there, saying what was looked for.
  """
  if version is None and tf.io.gfile.exists(os.path.join(path, SAVED_MODEL_FILE)):
    return path
  for base in (path, os.path.join(path, ARTIFACT_SUBDIR)):
    available = list_versions(base)
    if version is not None and version in available:
      return version_path(base, version)
    if version is None and available:
      return version_path(base, available[-1])
  wanted = f"version {version}" if version is not None else "a SavedModel"
  raise FileNotFoundError(
      f"No retrieval artifact at {path!r}: expected {wanted} there (saved_model.pb), in a "
      f"numbered version directory ({path}/N/) or in {path}/{ARTIFACT_SUBDIR}/N/. Build one "
      f"with `python -m retrieval.index_main --export_dir=... --output_dir=OUT` and pass OUT.")


def base_of(path: str) -> Optional[str]:
  """The base path whose versions the server follows for `path`, or None for a lone SavedModel."""
  for base in (path, os.path.join(path, ARTIFACT_SUBDIR)):
    if list_versions(base):
      return base
  return None
