r"""Loads a retrieval artifact and queries it with user histories.

Library:

    searcher = serve.load_artifact("OUT/artifact")
    [[(item_id, score), ...]] = searcher.query([["i3", "i7", "i1"]])

Command line (prints the top-k raw item ids and scores of one history):

    python -m retrieval.serve --artifact_dir=OUT/artifact --history=i3,i7,i1 [--top=10]
    python -m retrieval.serve --artifact_dir=OUT/artifact --data_dir=DIR [--user_index=0]

The second form queries with the input history of one test user of a prepared data set
and marks that user's held-out items in the list.

Timestamps default to one hour apart; pass --timestamps=t1,t2,... (unix seconds) for
models that use them.
"""

import json
import os
from typing import List, Optional, Sequence, Tuple

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from retrieval import artifact as artifact_lib
from retrieval import job

# Importing the ScaNN ops registers the kernels that artifacts with a ScaNN index need.
from scann.scann_ops.py import scann_ops  # pylint: disable=unused-import,g-bad-import-order

_HOUR = 3600


class Searcher:
  """A loaded artifact: `query` user histories, get top-k raw item ids and scores."""

  def __init__(self, artifact_dir: str):
    self.path = _resolve(artifact_dir)
    self._loaded = tf.saved_model.load(self.path)
    self._serve = self._loaded.signatures[artifact_lib.SERVING_SIGNATURE]
    with open(os.path.join(self.path, artifact_lib.ARTIFACT_META_FILE)) as f:
      self.meta = json.load(f)
    self.k = self.meta["k"]

  def query(self, histories: Sequence[Sequence[str]],
            timestamps: Optional[Sequence[Sequence[int]]] = None) -> List[List[Tuple[str, float]]]:
    """Top-k items of each user.

    Args:
      histories: per user, raw item ids in chronological order.
      timestamps: per user, unix seconds aligned with the history; by default one
        hour apart.

    Returns:
      Per user, k `(raw_item_id, score)` pairs by descending score.
    """
    if not histories or any(len(h) == 0 for h in histories):
      raise ValueError("Every user needs at least one history item; got "
                       f"lengths {[len(h) for h in histories]}.")
    if timestamps is None:
      timestamps = [[_HOUR * (i + 1) for i in range(len(h))] for h in histories]
    if [len(t) for t in timestamps] != [len(h) for h in histories]:
      raise ValueError(f"History lengths {[len(h) for h in histories]} and timestamp lengths "
                       f"{[len(t) for t in timestamps]} differ.")
    width = max(len(h) for h in histories)
    history = np.array([list(h) + [""] * (width - len(h)) for h in histories], dtype=object)
    times = np.array([list(t) + [0] * (width - len(t)) for t in timestamps], dtype=np.int64)
    out = self._serve(history=tf.constant(history.astype(str)),
                      history_timestamps=tf.constant(times))
    ids = out[artifact_lib.ITEM_IDS].numpy()
    scores = out[artifact_lib.SCORES].numpy()
    return [[(i.decode(), float(s)) for i, s in zip(row_ids, row_scores)]
            for row_ids, row_scores in zip(ids, scores)]


def _resolve(artifact_dir: str) -> str:
  """Accepts OUT/artifact or the index job's OUT."""
  for path in (artifact_dir, os.path.join(artifact_dir, "artifact")):
    if os.path.exists(os.path.join(path, "saved_model.pb")):
      return path
  raise FileNotFoundError(
      f"No retrieval artifact at {artifact_dir!r} (expected saved_model.pb there or in "
      f"artifact/). Build one with `python -m retrieval.index_main --export_dir=... "
      f"--output_dir={artifact_dir}`.")


def load_artifact(artifact_dir: str) -> Searcher:
  return Searcher(artifact_dir)


def test_user(data_dir: str, user_index: int = 0):
  """One test user of a prepared data set, as `job.test_users` reads it.

  Returns:
    `(user_id, history, timestamps, targets)` in raw ids.
  """
  if user_index < 0:
    raise ValueError(f"user_index must be >= 0, got {user_index}.")
  users = job.test_users(data_dir, 1, first=user_index)
  if not users:
    raise ValueError(f"The test split of {data_dir!r} has no user number {user_index}.")
  return users[0]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  if (args.history is None) == (args.data_dir is None):
    raise app.UsageError("Give exactly one of --history and --data_dir.")
  targets = ()
  if args.data_dir is not None:
    user_id, history, timestamps, targets = test_user(args.data_dir, args.user_index)
    print(f"Test user {user_id}: {len(history)} history items, last ones "
          f"{', '.join(history[-5:])}; held out: {', '.join(targets)}")
  else:
    history = args.history
    timestamps = [int(t) for t in args.timestamps] if args.timestamps else None
  searcher = load_artifact(args.artifact_dir)
  results = searcher.query([history], None if timestamps is None else [timestamps])[0]
  for rank, (item_id, score) in enumerate(results[:args.top], start=1):
    mark = "\t<- held out" if item_id in targets else ""
    print(f"{rank}\t{item_id}\t{score:.6f}{mark}")


def run():
  # Defined here, not at import, so that importing the library defines no flags.
  flags.DEFINE_string("artifact_dir", None, "OUT/artifact or the index job's OUT.")
  flags.DEFINE_list("history", None, "Raw item ids, oldest first.")
  flags.DEFINE_list("timestamps", None, "Unix seconds aligned with --history.")
  flags.DEFINE_string("data_dir", None, "Instead of --history: a prepared data set whose "
                      "test user --user_index is queried.")
  flags.DEFINE_integer("user_index", 0, "Which test user of --data_dir (file order).")
  flags.DEFINE_integer("top", 10, "Print only the first N of the k items.")
  flags.mark_flags_as_required(["artifact_dir"])
  app.run(main)


if __name__ == "__main__":
  run()
