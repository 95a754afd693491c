"""The exported model in, the top-k retrieval artifact out (docs/architecture.md 5-6).

`load_export` finds and checks the trainer's SavedModel; `RetrievalArtifact` chains
its user model with an index (`retrieval/index.py`) into one serving function;
`save_artifact` writes it as a SavedModel beside its metadata, atomically.
"""

import json
import math
import os
from typing import Dict, Optional, Tuple

import tensorflow as tf

from common import files
from retrieval import index as index_lib

SERVING_SIGNATURE = "serving_default"
ITEM_EMBEDDINGS_SIGNATURE = "item_embeddings"
EXPORT_META_FILE = os.path.join("assets.extra", "export_meta.json")
ARTIFACT_META_FILE = os.path.join("assets.extra", "retrieval_meta.json")

# The export contract (trainer/export.py): input name -> (dtype, rank).
EXPORT_INPUTS = {"history": (tf.string, 2), "history_timestamps": (tf.int64, 2)}
USER_VECTORS = "user_vectors"
ITEM_IDS = "item_ids"
EMBEDDINGS = "embeddings"
SCORES = "scores"

_SAVED_MODEL_FILE = "saved_model.pb"

# What the index job may replace at OUTPUT_DIR/artifact (common/files.py): a SavedModel
# directory holding our retrieval_meta.json and nothing else.
ARTIFACT_OWNERSHIP = files.Ownership(
    what="retrieval artifact", marker=ARTIFACT_META_FILE,
    entries=frozenset({_SAVED_MODEL_FILE, "fingerprint.pb", "variables", "assets",
                       "assets.extra"}))


def resolve_export_dir(export_dir: str) -> str:
  """The SavedModel to index: `export_dir` itself, or its newest timestamped child.

  Args:
    export_dir: `MODEL_DIR/export/<timestamp>` or `MODEL_DIR/export`.

  Raises:
    FileNotFoundError: when neither holds a SavedModel.
  """
  if os.path.exists(os.path.join(export_dir, _SAVED_MODEL_FILE)):
    return export_dir
  if not os.path.isdir(export_dir):
    raise FileNotFoundError(
        f"Export directory {export_dir!r} does not exist. Pass the trainer's "
        f"MODEL_DIR/export (the newest export is used) or one MODEL_DIR/export/<timestamp>.")
  # Only finished exports: the trainer writes to a temporary name and renames it to
  # its unix timestamp, so half-written exports never have an all-digit name.
  stamps = [name for name in os.listdir(export_dir)
            if name.isdigit() and os.path.exists(os.path.join(export_dir, name, _SAVED_MODEL_FILE))]
  if not stamps:
    raise FileNotFoundError(
        f"No SavedModel in {export_dir!r}: expected {_SAVED_MODEL_FILE} there or in a "
        f"<unix-timestamp>/ subdirectory, found {sorted(os.listdir(export_dir))}. Train with "
        f"`python -m trainer.main ... --model_dir=DIR` and pass DIR/export.")
  return os.path.join(export_dir, max(stamps, key=int))


def _describe(spec: tf.TensorSpec) -> str:
  return f"{spec.dtype.name} {spec.shape}"


def load_export(export_path: str):
  """Loads an export and checks its two signatures against the contract.

  Returns:
    The loaded SavedModel object.

  Raises:
    ValueError: a signature is missing or has other inputs/outputs than the contract.
  """
  loaded = tf.saved_model.load(export_path)
  signatures = dict(loaded.signatures)
  missing = [name for name in (SERVING_SIGNATURE, ITEM_EMBEDDINGS_SIGNATURE)
             if name not in signatures]
  if missing:
    raise ValueError(
        f"Export {export_path!r} lacks signature(s) {missing}; it has {sorted(signatures)}. "
        f"Expected {SERVING_SIGNATURE!r} (history, history_timestamps -> {USER_VECTORS}) and "
        f"{ITEM_EMBEDDINGS_SIGNATURE!r} (-> {ITEM_IDS}, {EMBEDDINGS}) as trainer/export.py writes.")
  serving = signatures[SERVING_SIGNATURE]
  inputs = serving.structured_input_signature[1]
  wrong = {name: _describe(spec) for name, spec in inputs.items()
           if name not in EXPORT_INPUTS or (spec.dtype, spec.shape.rank) != EXPORT_INPUTS[name]}
  absent = sorted(set(EXPORT_INPUTS) - set(inputs))
  if wrong or absent:
    raise ValueError(
        f"Export {export_path!r}: {SERVING_SIGNATURE!r} must take history (string [batch, len]) "
        f"and history_timestamps (int64 [batch, len]); unexpected inputs {wrong}, "
        f"missing {absent}.")
  outputs = serving.structured_outputs
  if USER_VECTORS not in outputs or outputs[USER_VECTORS].shape.rank != 3:
    got = {name: _describe(spec) for name, spec in outputs.items()}
    raise ValueError(f"Export {export_path!r}: {SERVING_SIGNATURE!r} must output {USER_VECTORS!r} "
                     f"float32 [batch, num_vectors, dim]; it outputs {got}.")
  item_outputs = signatures[ITEM_EMBEDDINGS_SIGNATURE].structured_outputs
  if set(item_outputs) != {ITEM_IDS, EMBEDDINGS}:
    raise ValueError(f"Export {export_path!r}: {ITEM_EMBEDDINGS_SIGNATURE!r} must output "
                     f"{ITEM_IDS!r} and {EMBEDDINGS!r}; it outputs {sorted(item_outputs)}.")
  return loaded


def item_embeddings(loaded) -> Tuple[tf.Tensor, tf.Tensor]:
  """Returns raw item ids `[num_items]` and embeddings `[num_items, dim]` of an export."""
  items = loaded.signatures[ITEM_EMBEDDINGS_SIGNATURE]()
  ids, embeddings = items[ITEM_IDS], items[EMBEDDINGS]
  if embeddings.shape.rank != 2 or ids.shape[0] != embeddings.shape[0]:
    raise ValueError(f"{ITEM_EMBEDDINGS_SIGNATURE!r} returned {ids.shape[0]} ids for embeddings "
                     f"of shape {embeddings.shape}; expected [num_items] and [num_items, dim].")
  return ids, embeddings


def read_export_meta(export_path: str) -> Dict:
  """`assets.extra/export_meta.json` of an export ({} when the export has none)."""
  path = os.path.join(export_path, EXPORT_META_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


class RetrievalArtifact(tf.Module):
  """User history -> user vectors (the export) -> per-vector top-k (index) -> merged top-k.

  `serving_fn()` is the concrete serving function; its inputs are the export's
  serving inputs, its outputs `item_ids` string `[batch, k]` and `scores` float32
  `[batch, k]`.

  With `exclude_history`, items of the user's `history` are never served (the
  evaluation's history masking, at serving time): each vector then asks the index
  for k + history-length items, so that k remain after removing the history.
  """

  def __init__(self, export, index: index_lib.Index, item_ids: tf.Tensor, k: int,
               exclude_history: bool = True):
    """Args:
      export: a SavedModel loaded by `load_export`.
      index: built over the export's item embeddings, row i = item_ids[i].
      item_ids: `[num_items]` raw item ids.
      k: list length served.
      exclude_history: drop the user's history items from the list.
    """
    super().__init__(name="retrieval_artifact")
    if not 1 <= k <= index.num_items:
      raise ValueError(f"k={k} must be between 1 and the catalog size {index.num_items}.")
    self.export = export
    self.index = index
    self.k = k
    self.exclude_history = exclude_history
    self.item_ids = tf.Variable(item_ids, trainable=False, name="item_ids")
    self.item_index = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(item_ids, tf.range(index.num_items, dtype=tf.int32)),
        default_value=-1)
    user_model = export.signatures[SERVING_SIGNATURE]
    self._serve = tf.function(self._retrieve).get_concrete_function(
        **user_model.structured_input_signature[1])

  def serving_fn(self):
    return self._serve

  def user_vectors(self, **features) -> tf.Tensor:
    """The export's `[batch, num_vectors, dim]` user vectors."""
    return self.export.signatures[SERVING_SIGNATURE](**features)[USER_VECTORS]

  def _retrieve(self, **features) -> Dict[str, tf.Tensor]:
    vectors = self.user_vectors(**features)
    batch, num_vectors = tf.shape(vectors)[0], tf.shape(vectors)[1]
    history = features["history"]
    per_vector = self.k + tf.shape(history)[1] if self.exclude_history else self.k
    per_vector = tf.minimum(per_vector, self.index.num_items)
    scores, indices = self.index.search(tf.reshape(vectors, [batch * num_vectors, -1]), per_vector)
    scores = tf.reshape(scores, [batch, num_vectors, per_vector])
    indices = tf.reshape(indices, [batch, num_vectors, per_vector])
    if self.exclude_history:
      seen = self.item_index.lookup(history)  # [batch, len]; -1 for padding and unknown ids
      in_history = tf.reduce_any(indices[:, :, :, None] == seen[:, None, None, :], axis=-1)
      scores = tf.where(in_history, -math.inf, scores)
      indices = tf.where(in_history, -1, indices)
    scores, indices = index_lib.merge_interests(scores, indices, self.k)
    ids = tf.where(indices >= 0, tf.gather(self.item_ids, tf.maximum(indices, 0)), "")
    return {ITEM_IDS: ids, SCORES: scores}


def save_artifact(artifact: RetrievalArtifact, path: str, meta: Optional[Dict] = None) -> None:
  """Writes the artifact SavedModel to `path`, replacing an older artifact atomically.

  The SavedModel is written to a temporary sibling directory and renamed, so a crash
  never leaves a half-written artifact at `path`; an existing `path` is replaced only
  when it is an artifact written by this job (`ARTIFACT_OWNERSHIP`) or empty.
  """
  with files.replace_directory(path, ARTIFACT_OWNERSHIP, overwrite=True,
                               flag="--output_dir's artifact/") as tmp:
    tf.saved_model.save(
        artifact, tmp, signatures={SERVING_SIGNATURE: artifact.serving_fn()},
        # ScaNN's ops live in the "Scann" namespace, which SavedModel refuses by default.
        options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]))
    files.write_json(os.path.join(tmp, ARTIFACT_META_FILE),
                     {"k": artifact.k, "exclude_history": artifact.exclude_history,
                      "index": artifact.index.config(), **(meta or {})})
