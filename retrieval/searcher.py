r"""A loaded retrieval artifact, queried with users in raw ids.

    searcher = searcher.load_artifact("OUT")          # the newest version of OUT/artifact/
    [[(item_id, score), ...]] = searcher.query_histories([["i3", "i7", "i1"]])
    searcher.query([requests.UserRequest.from_history(["i3"], user_features=["age=25"])])
    outputs = searcher.predict(users)                 # every output: ids, scores, fallback, unknown

The command line (`retrieval/serve.py`) and the HTTP server (`retrieval/server.py`)
both query through this class.
"""

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from common import names
from retrieval import artifact as artifact_lib
from retrieval import requests
from retrieval import versions

# Importing the ScaNN ops registers the kernels that artifacts with a ScaNN index need.
from scann.scann_ops.py import scann_ops  # noqa: F401  pylint: disable=unused-import,g-bad-import-order


class Searcher:
  """One artifact version: `query` users, get top-k raw item ids and scores.

  Attributes:
    path: the version's SavedModel directory.
    meta: its manifest (assets.extra/retrieval_meta.json).
    version: its version number (0 for artifacts written before versions existed).
    k: items per user.
  """

  def __init__(self, artifact_dir: str, version: Optional[int] = None):
    """Args: artifact_dir: a version, a base path or the index job's OUTPUT_DIR
    (`versions.resolve`); version: which version of a base path (default: newest)."""
    self.path = versions.resolve(artifact_dir, version)
    self._loaded = artifact_lib.load_saved_model(
        self.path, "Build the artifact again with `python -m retrieval.index_main`.")
    self._serve = self._loaded.signatures[artifact_lib.SERVING_SIGNATURE]
    with tf.io.gfile.GFile(os.path.join(self.path, artifact_lib.ARTIFACT_META_FILE)) as f:
      self.meta = json.load(f)
    self.version = int(self.meta.get("version", 0))
    self.k = self.meta["k"]

  @property
  def input_specs(self) -> Dict[str, tf.TensorSpec]:
    """The signature's inputs: the request fields the artifact's model reads."""
    return dict(self._serve.structured_input_signature[1])

  @property
  def inputs(self) -> List[str]:
    return sorted(self.input_specs)

  @property
  def output_specs(self) -> Dict[str, tf.TensorSpec]:
    return dict(self._serve.structured_outputs)

  def predict(self, users: Sequence[requests.UserRequest]) -> Dict[str, np.ndarray]:
    """Every output of the artifact for these users: `item_ids` (bytes) and `scores`
    `[n, k]`, `popular_fallback` and `unknown_items` `[n]`."""
    if not users:
      raise ValueError("predict needs at least one user.")
    inputs = requests.to_inputs(users, self.input_specs)
    out = self._serve(**{name: tf.constant(value) for name, value in inputs.items()})
    return {name: value.numpy() for name, value in out.items()}

  def query(self, users: Sequence[requests.UserRequest]) -> List[List[Tuple[str, float]]]:
    """Top items of each user, as `(raw_item_id, score)` pairs by descending score.

    Fewer than k only when the catalog minus the user's history is smaller than k.
    """
    out = self.predict(users)
    return [[(i.decode(), float(s)) for i, s in zip(row_ids, row_scores) if i]
            for row_ids, row_scores in zip(out[names.ITEM_IDS], out[names.SCORES])]

  def query_histories(self, histories: Sequence[Sequence[str]],
                      timestamps=None) -> List[List[Tuple[str, float]]]:
    """`query` for plain histories (timestamps one hour apart unless given)."""
    timestamps = timestamps or [None] * len(histories)
    if len(timestamps) != len(histories):
      raise ValueError(f"{len(histories)} histories but {len(timestamps)} timestamp lists.")
    return self.query([requests.UserRequest.from_history(h, t)
                       for h, t in zip(histories, timestamps)])

  def warm_up(self) -> None:
    """Runs both paths once (popular fallback, and a search), so that the first real
    request does not pay for creating ScaNN's searcher."""
    (popular,) = self.query_histories([[]])
    self.query_histories([[popular[0][0]]])


def load_artifact(artifact_dir: str, version: Optional[int] = None) -> Searcher:
  return Searcher(artifact_dir, version)
