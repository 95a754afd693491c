"""Checkpoints that survive a crash at any moment of their writing.

TensorFlow writes a checkpoint `ckpt-N` in three moves: the shards go to a temporary
folder `ckpt-N_temp/`, they are merged into `ckpt-N.index` and `ckpt-N.data-*`, and
the state file `checkpoint` is rewritten to name `ckpt-N` the latest. A process killed
between two moves leaves a temporary folder of the size of the model, or a complete
checkpoint that the state file does not name (the next run would restart from the
previous one, or from step 0), or half-merged files. `prepare_directory` runs before
every restore: it deletes the temporary folders and makes the state file name every
complete checkpoint, newest last; `restore_newest` then tries them newest first and
skips any whose files do not read back. So a crash costs at most the checkpoint being
written. Checkpoints are named by the step they hold (`save(..., step)`).

The best-validation checkpoint (`save_best`) is written under a new name before
best.json (written atomically) names it; only then are older best checkpoints deleted.
With no state file to reconcile, its folder only needs `remove_interrupted_writes`.
"""

import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
import tensorflow as tf
from tensorflow.python.checkpoint import checkpoint_management  # pylint: disable=g-direct-tensorflow-import

from common import files

STATE_FILE = "checkpoint"  # TensorFlow's name for the state file
TEMPORARY_SUFFIX = "_temp"  # TensorFlow's suffix of the shards' temporary folder
BEST_FILE = "best.json"


def _steps_and_prefixes(directory: str, name: str) -> List[Tuple[int, str]]:
  """`(N, prefix)` of every complete `NAME-N` checkpoint in `directory`, oldest first.

  Complete: its `.index` and every data shard `.data-XXXXX-of-YYYYY` it names are there.
  """
  if not tf.io.gfile.isdir(directory):
    return []
  entries = set(tf.io.gfile.listdir(directory))
  found = []
  for entry in entries:
    match = re.fullmatch(re.escape(name) + r"-(\d+)\.index", entry)
    if not match:
      continue
    prefix = entry[:-len(".index")]
    shards = [e for e in entries if e.startswith(prefix + ".data-")]
    counts = {int(s.rsplit("-of-", 1)[1]) for s in shards}
    if len(counts) == 1 and len(shards) == counts.pop():
      found.append((int(match.group(1)), os.path.join(directory, prefix)))
  return sorted(found)


def remove_interrupted_writes(directory: str) -> None:
  """Deletes the temporary shard folders of checkpoint writes that were interrupted."""
  if not tf.io.gfile.isdir(directory):
    return
  for entry in tf.io.gfile.listdir(directory):
    entry = entry.rstrip("/")
    if entry.endswith(TEMPORARY_SUFFIX) and tf.io.gfile.isdir(os.path.join(directory, entry)):
      logging.warning("removing %s, left by a checkpoint write that was interrupted", entry)
      tf.io.gfile.rmtree(os.path.join(directory, entry))


def prepare_directory(directory: str, name: str = "ckpt") -> None:
  """Deletes interrupted writes and records every complete checkpoint in the state file
  (a `tf.train.CheckpointManager` directory)."""
  remove_interrupted_writes(directory)
  complete = [prefix for _, prefix in _steps_and_prefixes(directory, name)]
  state = tf.train.get_checkpoint_state(directory)
  recorded = list(state.all_model_checkpoint_paths) if state else []
  if complete and [os.path.basename(p) for p in recorded] != [os.path.basename(p) for p in complete]:
    if not recorded or os.path.basename(recorded[-1]) != os.path.basename(complete[-1]):
      logging.warning("%s names %s as the latest checkpoint, but %s is complete and newer (an "
                      "interrupted save): resuming from it", STATE_FILE,
                      recorded[-1] if recorded else "none", complete[-1])
    # What CheckpointManager itself calls (the public tf.compat.v1 wrapper is deprecated).
    checkpoint_management.update_checkpoint_state_internal(
        save_dir=directory, model_checkpoint_path=complete[-1],
        all_model_checkpoint_paths=complete, save_relative_paths=True)


def restore_newest(checkpoint: tf.train.Checkpoint, directory: str,
                   name: str = "ckpt") -> Optional[str]:
  """Restores the newest checkpoint that reads back; returns its prefix (None: none).

  Raises:
    ValueError: a checkpoint reads back but does not hold the objects of `checkpoint`
      (another model or configuration): that is the user's to decide, not skipped.
  """
  for step, prefix in reversed(_steps_and_prefixes(directory, name)):
    try:
      tf.train.load_checkpoint(prefix)  # reads the index: fails on a damaged one
      status = checkpoint.restore(prefix)
      # Every variable of the model and optimizer must come back (the save counter of
      # the checkpoint object need not: it is created on the next save).
      status.assert_existing_objects_matched().expect_partial()
      return prefix
    except (IndexError, tf.errors.DataLossError, tf.errors.NotFoundError,
            tf.errors.OutOfRangeError, tf.errors.InvalidArgumentError) as e:
      # A truncated data file raises a bare IndexError ("Read less bytes than requested").
      reason = e.message if isinstance(e, tf.errors.OpError) else str(e)
      logging.warning("checkpoint %s (step %d) does not read back (%s): trying an older one",
                      prefix, step, reason.splitlines()[0][:200])
  return None


def save_best(checkpoint: tf.train.Checkpoint, directory: str, record: Dict[str, Any],
              step: int) -> str:
  """Writes `checkpoint` as `directory/best-STEP`, then `record` + its path to best.json.

  Returns:
    The checkpoint prefix.
  """
  prefix = checkpoint.write(os.path.join(directory, f"best-{step}"))
  files.write_json(os.path.join(directory, BEST_FILE), {**record, "checkpoint": prefix})
  for old_step, old_prefix in _steps_and_prefixes(directory, "best"):
    if old_step != step:
      for path in tf.io.gfile.glob(old_prefix + ".*"):
        tf.io.gfile.remove(path)
  return prefix


def read_best(directory: str) -> Optional[Dict[str, Any]]:
  """best.json's record, or None before the first best checkpoint.

  The record's "checkpoint" is resolved in `directory`, not taken as written: the path
  saved is relative to the working directory of the training process, and the run
  directory may since have moved or be read from elsewhere.
  """
  path = os.path.join(directory, BEST_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    record = json.load(f)
  return {**record, "checkpoint": os.path.join(directory, os.path.basename(record["checkpoint"]))}
