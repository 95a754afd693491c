"""The exported model in, the top-k retrieval artifact out (docs/architecture.md 5-6).

`load_export` finds and checks the trainer's SavedModel; `RetrievalArtifact` chains
its user model with an index (`retrieval/index.py`) into one serving function;
`save_artifact` writes it as the next numbered version of a model base path
(`retrieval/versions.py`) with its manifest, atomically.
"""

import json
import math
import os
from typing import Dict, NamedTuple, Tuple

import numpy as np
import tensorflow as tf

from common import files
from common import names
from retrieval import index as index_lib
from retrieval import versions

SERVING_SIGNATURE = names.SERVING_SIGNATURE
ITEM_EMBEDDINGS_SIGNATURE = names.CANDIDATES_SIGNATURE
EXPORT_META_FILE = names.EXPORT_META_FILE
ARTIFACT_META_FILE = names.ARTIFACT_META_FILE
# What the artifact reads of the export's signatures (trainer/export.py).
EXPORT_OUTPUTS = (names.USER_VECTORS, names.HISTORY_LENGTH, names.UNKNOWN_ITEMS)
CANDIDATE_OUTPUTS = (names.ITEM_IDS, names.EMBEDDINGS, names.ITEM_BIAS, names.ITEM_COUNTS)

_SAVED_MODEL_FILE = "saved_model.pb"


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


def load_saved_model(path: str, fix: str):
  """`tf.saved_model.load(path)`, with damaged files reported as a `ValueError` naming them.

  Args:
    path: a SavedModel directory.
    fix: how to get a good one, for the message.
  """
  try:
    return tf.saved_model.load(path)
  except (IndexError, OSError, tf.errors.OpError) as e:
    # Truncated variables give a bare "Read less bytes than requested", missing ones a
    # NotFoundError with an unrelated hint about experimental_io_device.
    reason = e.message if isinstance(e, tf.errors.OpError) else str(e)
    raise ValueError(f"The SavedModel {path!r} cannot be loaded: its files are damaged or "
                     f"incomplete ({reason.splitlines()[0][:200]}). {fix}") from e


def load_export(export_path: str):
  """Loads an export and checks its two signatures against the contract.

  Returns:
    The loaded SavedModel object.

  Raises:
    ValueError: damaged files; a signature is missing, or lacks an input or output the
      artifact uses.
  """
  loaded = load_saved_model(export_path, "Export the model again (run the trainer with the "
                            "same --model_dir: it finds the finished training and re-exports).")
  signatures = dict(loaded.signatures)
  missing = [name for name in (SERVING_SIGNATURE, ITEM_EMBEDDINGS_SIGNATURE)
             if name not in signatures]
  if missing:
    raise ValueError(
        f"Export {export_path!r} lacks signature(s) {missing}; it has {sorted(signatures)}. "
        f"Expected {SERVING_SIGNATURE!r} (raw request -> {list(EXPORT_OUTPUTS)}) and "
        f"{ITEM_EMBEDDINGS_SIGNATURE!r} (-> {list(CANDIDATE_OUTPUTS)}) as trainer/export.py "
        f"writes them.")
  serving = signatures[SERVING_SIGNATURE]
  history = serving.structured_input_signature[1].get(names.RAW_HISTORY)
  if history is None or (history.dtype, history.shape.rank) != (tf.string, 2):
    raise ValueError(f"Export {export_path!r}: {SERVING_SIGNATURE!r} must take "
                     f"{names.RAW_HISTORY!r} (string [batch, len]); it takes "
                     f"{ {n: _describe(v) for n, v in serving.structured_input_signature[1].items()} }.")
  for signature, wanted in ((SERVING_SIGNATURE, EXPORT_OUTPUTS),
                            (ITEM_EMBEDDINGS_SIGNATURE, CANDIDATE_OUTPUTS)):
    outputs = signatures[signature].structured_outputs
    absent = [name for name in wanted if name not in outputs]
    if absent:
      raise ValueError(f"Export {export_path!r}: {signature!r} lacks the outputs {absent}; it "
                       f"has {sorted(outputs)}. Re-export it with trainer/export.py.")
  if serving.structured_outputs[names.USER_VECTORS].shape.rank != 3:
    raise ValueError(f"Export {export_path!r}: {names.USER_VECTORS!r} must be float32 [batch, "
                     f"num_vectors, dim], got {_describe(serving.structured_outputs[names.USER_VECTORS])}.")
  return loaded


class Catalog(NamedTuple):
  """An export's candidate side (`trainer/export.py`'s item_embeddings signature).

  Attributes:
    item_ids: `[num_items]` raw ids.
    embeddings: `[num_items, dim]` float32.
    bias: `[num_items]` float32, added to every score (zeros without a bias).
    counts: `[num_items]` float32 training counts.
  """
  item_ids: tf.Tensor
  embeddings: tf.Tensor
  bias: tf.Tensor
  counts: tf.Tensor

  @property
  def has_bias(self) -> bool:
    return bool(np.any(self.bias.numpy() != 0))

  def index_vectors(self) -> tf.Tensor:
    """What the index holds: the embeddings, with the bias appended as a last column.

    A dot-product index cannot add a per-item bias, but `<[u, 1], [e, b]> = <u, e> + b`,
    so augmenting the items with their bias (and the user vectors with 1) ranks by the
    model's real scores.
    """
    if not self.has_bias:
      return self.embeddings
    return tf.concat([self.embeddings, self.bias[:, tf.newaxis]], axis=1)


def catalog(loaded) -> Catalog:
  """The candidate side of a loaded export."""
  items = loaded.signatures[ITEM_EMBEDDINGS_SIGNATURE]()
  result = Catalog(items[names.ITEM_IDS], items[names.EMBEDDINGS], items[names.ITEM_BIAS],
                   items[names.ITEM_COUNTS])
  num_items = result.item_ids.shape[0]
  if (result.embeddings.shape.rank != 2 or result.embeddings.shape[0] != num_items or
      result.bias.shape != (num_items,) or result.counts.shape != (num_items,)):
    raise ValueError(f"{ITEM_EMBEDDINGS_SIGNATURE!r} returned {num_items} ids, embeddings "
                     f"{result.embeddings.shape}, bias {result.bias.shape} and counts "
                     f"{result.counts.shape}; expected [num_items], [num_items, dim], "
                     f"[num_items] and [num_items].")
  return result


def read_export_meta(export_path: str) -> Dict:
  """`assets.extra/export_meta.json` of an export ({} when the export has none)."""
  path = os.path.join(export_path, EXPORT_META_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


class RetrievalArtifact(tf.Module):
  """Raw request -> user vectors (the export) -> per-vector top-k (index) -> merged top-k.

  `serving_fn()` is the concrete serving function; its inputs are the export's
  serving inputs (whatever the model declared), its outputs `item_ids` string
  `[batch, k]`, `scores` float32 `[batch, k]`, `popular_fallback` bool `[batch]` and
  `unknown_items` int64 `[batch]` (request ids not in the vocabulary, ignored).

  An item's score is the model's: its best over the user's vectors of
  `<vector, embedding> + bias`. With `exclude_history`, items of the user's `history`
  are never served (the evaluation's history masking, at serving time): each vector
  then asks the index for k + history-length items, so that k remain after removing
  the history. A user with no known history item gets the k most popular items
  (scores: their training counts) and `popular_fallback` True, not a list computed
  from padding.
  """

  def __init__(self, export, index: index_lib.Index, items: Catalog, k: int,
               exclude_history: bool = True):
    """Args:
      export: a SavedModel loaded by `load_export`.
      index: built over `items.index_vectors()`, row i = items.item_ids[i].
      items: the export's candidate side (`catalog(export)`).
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
    self.augmented = items.has_bias
    self.item_ids = tf.Variable(items.item_ids, trainable=False, name="item_ids")
    self.item_index = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(items.item_ids,
                                            tf.range(index.num_items, dtype=tf.int32)),
        default_value=-1)
    popular_scores, popular = tf.math.top_k(items.counts, k=k)
    self.popular_ids = tf.Variable(tf.gather(items.item_ids, popular), trainable=False,
                                   name="popular_ids")
    self.popular_scores = tf.Variable(popular_scores, trainable=False, name="popular_scores")
    user_model = export.signatures[SERVING_SIGNATURE]
    self._serve = tf.function(self._retrieve).get_concrete_function(
        **user_model.structured_input_signature[1])

  def serving_fn(self):
    return self._serve

  def user_vectors(self, **features) -> tf.Tensor:
    """The export's `[batch, num_vectors, dim]` user vectors."""
    return self.export.signatures[SERVING_SIGNATURE](**features)[names.USER_VECTORS]

  def _retrieve(self, **features) -> Dict[str, tf.Tensor]:
    user = self.export.signatures[SERVING_SIGNATURE](**features)
    vectors = user[names.USER_VECTORS]
    batch, num_vectors = tf.shape(vectors)[0], tf.shape(vectors)[1]
    if self.augmented:
      vectors = tf.concat([vectors, tf.ones([batch, num_vectors, 1])], axis=2)
    history = features[names.RAW_HISTORY]
    per_vector = self.k + tf.shape(history)[1] if self.exclude_history else self.k
    per_vector = tf.minimum(per_vector, self.index.num_items)
    scores, indices = self.index(tf.reshape(vectors, [batch * num_vectors, -1]), k=per_vector)
    scores = tf.reshape(scores, [batch, num_vectors, per_vector])
    indices = tf.reshape(indices, [batch, num_vectors, per_vector])
    if self.exclude_history:
      seen = self.item_index.lookup(history)  # [batch, len]; -1 for padding and unknown ids
      in_history = tf.reduce_any(indices[:, :, :, None] == seen[:, None, None, :], axis=-1)
      scores = tf.where(in_history, -math.inf, scores)
      indices = tf.where(in_history, -1, indices)
    scores, indices = index_lib.merge_interests(scores, indices, self.k)
    ids = tf.where(indices >= 0, tf.gather(self.item_ids, tf.maximum(indices, 0)), "")
    fallback = user[names.HISTORY_LENGTH] == 0
    return {
        names.ITEM_IDS: tf.where(fallback[:, tf.newaxis], self.popular_ids[tf.newaxis], ids),
        names.SCORES: tf.where(fallback[:, tf.newaxis], self.popular_scores[tf.newaxis], scores),
        names.POPULAR_FALLBACK: fallback,
        names.UNKNOWN_ITEMS: user[names.UNKNOWN_ITEMS],
    }


def directory_bytes(path: str) -> int:
  """Total size of the files under `path`."""
  return sum(tf.io.gfile.stat(os.path.join(root, name)).length
             for root, _, names_ in tf.io.gfile.walk(path) for name in names_)


def save_artifact(artifact: RetrievalArtifact, base: str, manifest: Dict) -> Tuple[str, Dict]:
  """Writes the artifact as the next version under the base path `base` (retrieval/versions.py).

  The SavedModel is written to a temporary sibling directory and renamed to its number,
  so a crash never leaves a half-written version; older versions are left as they are.

  Args:
    artifact: what to save.
    base: the model base path (`OUTPUT_DIR/artifact`); checked with `versions.check_base`.
    manifest: entries for `assets.extra/retrieval_meta.json`; `version` and
      `artifact_bytes` (the SavedModel's size) are added.

  Returns:
    The version's path and the manifest as written.
  """
  versions.check_base(base)
  version = versions.next_version(base)
  path = versions.version_path(base, version)
  with files.replace_directory(path, flag="--output_dir's artifact version") as tmp:
    tf.saved_model.save(
        artifact, tmp, signatures={SERVING_SIGNATURE: artifact.serving_fn()},
        # ScaNN's ops live in the "Scann" namespace, which SavedModel refuses by default.
        options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]))
    manifest = {**manifest, "version": version, "artifact_bytes": directory_bytes(tmp)}
    files.write_json(os.path.join(tmp, ARTIFACT_META_FILE), manifest)
  return path, manifest
