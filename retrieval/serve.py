r"""Loads a retrieval artifact and queries it with user requests.

Library:

    searcher = serve.load_artifact("OUT/artifact")
    [[(item_id, score), ...]] = searcher.query_histories([["i3", "i7", "i1"]])
    searcher.query([requests.UserRequest.from_history(["i3"], user_features=["age=25"])])

Command line (prints the top-k raw item ids and scores of one user):

    python -m retrieval.serve --artifact_dir=OUT/artifact --history=i3,i7,i1 [--top=10]
    python -m retrieval.serve --artifact_dir=OUT/artifact --data_dir=DIR [--user_index=0]

The second form queries with one test user of a prepared data set (its input history
and whatever else the model reads) and marks that user's held-out items in the list.

The artifact takes what its model declared (docs/retrieval.md): timestamps default to
one hour apart (--timestamps=t1,t2,... in unix seconds), the request time to an hour
after the last event (--request_time), user features and impressions to none
(--user_features=age=25,gender=f). An empty or entirely unknown history gets the most
popular items.
"""

import json
import os
from typing import List, Sequence, Tuple

from absl import app
from absl import flags

from common import cli  # before TensorFlow is imported: quiets its C++ start-up logs
from common import names
from retrieval import artifact as artifact_lib
from retrieval import requests
from retrieval import versions
import tensorflow as tf  # pylint: disable=g-bad-import-order

# Importing the ScaNN ops registers the kernels that artifacts with a ScaNN index need.
from scann.scann_ops.py import scann_ops  # noqa: F401  pylint: disable=unused-import,g-bad-import-order


class Searcher:
  """A loaded artifact: `query` users, get top-k raw item ids and scores."""

  def __init__(self, artifact_dir: str):
    self.path = versions.resolve(artifact_dir)
    self._loaded = artifact_lib.load_saved_model(
        self.path, "Build the artifact again with `python -m retrieval.index_main`.")
    self._serve = self._loaded.signatures[artifact_lib.SERVING_SIGNATURE]
    with open(os.path.join(self.path, artifact_lib.ARTIFACT_META_FILE)) as f:
      self.meta = json.load(f)
    self.k = self.meta["k"]

  @property
  def inputs(self) -> List[str]:
    """The request fields the artifact's model reads."""
    return sorted(self._serve.structured_input_signature[1])

  def query(self, users: Sequence[requests.UserRequest]) -> List[List[Tuple[str, float]]]:
    """Top-k items of each user, as `(raw_item_id, score)` pairs by descending score."""
    if not users:
      raise ValueError("query needs at least one user.")
    inputs = requests.to_inputs(users, self._serve.structured_input_signature[1])
    out = self._serve(**{name: tf.constant(value) for name, value in inputs.items()})
    return [[(i.decode(), float(s)) for i, s in zip(row_ids, row_scores)]
            for row_ids, row_scores in zip(out[names.ITEM_IDS].numpy(),
                                           out[names.SCORES].numpy())]

  def query_histories(self, histories: Sequence[Sequence[str]],
                      timestamps=None) -> List[List[Tuple[str, float]]]:
    """`query` for plain histories (timestamps one hour apart unless given)."""
    timestamps = timestamps or [None] * len(histories)
    if len(timestamps) != len(histories):
      raise ValueError(f"{len(histories)} histories but {len(timestamps)} timestamp lists.")
    return self.query([requests.UserRequest.from_history(h, t)
                       for h, t in zip(histories, timestamps)])


def load_artifact(artifact_dir: str) -> Searcher:
  return Searcher(artifact_dir)


def test_user(data_dir: str, user_index: int = 0) -> requests.UserRequest:
  """One test user of a prepared data set (`requests.test_users`)."""
  if user_index < 0:
    raise ValueError(f"user_index must be >= 0, got {user_index}.")
  users = requests.test_users(data_dir, 1, first=user_index)
  if not users:
    raise ValueError(f"The test split of {data_dir!r} has no user number {user_index}.")
  return users[0]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  if (args.history is None) == (args.data_dir is None):
    raise app.UsageError("Give exactly one of --history and --data_dir.")
  if args.data_dir is not None:
    user = test_user(args.data_dir, args.user_index)
    print(f"Test user {user.user_id}: {len(user.history)} history items, last ones "
          f"{', '.join(user.history[-5:])}; held out: {', '.join(user.targets)}")
  else:
    user = requests.UserRequest.from_history(
        args.history, [int(t) for t in args.timestamps] if args.timestamps else None,
        user_features=args.user_features or (), request_time=args.request_time)
  searcher = load_artifact(args.artifact_dir)
  for rank, (item_id, score) in enumerate(searcher.query([user])[0][:args.top], start=1):
    mark = "\t<- held out" if item_id in user.targets else ""
    print(f"{rank}\t{item_id}\t{score:.6f}{mark}")


def run():
  # Defined here, not at import, so that importing the library defines no flags.
  flags.DEFINE_string("artifact_dir", None, "OUT/artifact or the index job's OUT.")
  flags.DEFINE_list("history", None, "Raw item ids, oldest first.")
  flags.DEFINE_list("timestamps", None, "Unix seconds aligned with --history.")
  flags.DEFINE_integer("request_time", None, "Unix seconds of the request (models that read "
                       "it); default an hour after the last event.")
  flags.DEFINE_list("user_features", None, "Raw user feature names, e.g. age=25,gender=f "
                    "(models that read them).")
  flags.DEFINE_string("data_dir", None, "Instead of --history: a prepared data set whose "
                      "test user --user_index is queried.")
  flags.DEFINE_integer("user_index", 0, "Which test user of --data_dir (file order).")
  flags.DEFINE_integer("top", 10, "Print only the first N of the k items.")
  flags.mark_flags_as_required(["artifact_dir"])
  cli.run(main)


if __name__ == "__main__":
  run()
