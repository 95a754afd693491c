"""SavedModel export with serving signatures on raw item ids (docs/architecture.md, 5).

`export_saved_model` builds a fresh model *outside* any distribution strategy,
restores it from the training checkpoint and writes

    MODEL_DIR/export/<unix-timestamp>/
        saved_model.pb, variables/          signatures below
        assets.extra/export_meta.json       model, num_items, dim, max_length, data stats

with the signatures
    serving_default(history: string [batch, len], history_timestamps: int64 [batch, len])
        -> user_vectors: float32 [batch, num_vectors, dim]
    item_embeddings()
        -> item_ids: string [num_items], embeddings: float32 [num_items, dim]

Serving input. `history` holds the data set's raw item ids, oldest first, padded with
`""` anywhere; the real ids are gathered to the left (order kept), the last
`max_length` of them kept, mapped to indices through the vocabulary (ids unseen in
training get `oov_id`), padded with `pad_id` to `[batch, max_length]`, and
`history_length` is their count: exactly the batches `input_pipeline` feeds the model.

Why a fresh model and a checkpoint. Under ParameterServerStrategy the item table is a
`ShardedVariable` spread over the parameter servers and the model's functions are
traced for the cluster; saving that object directly fails or yields a model that
needs the cluster. A `ShardedVariable` checkpoints as slices of one full tensor
(`SaveSliceInfo`), so restoring the same object graph into an unsharded variable of
the full shape just works with `tf.train.Checkpoint`: one code path for every
strategy. The trainer's checkpoint must hold the model under the key `model`
(`tf.train.Checkpoint(model=model, optimizer=..., ...)`); the optimizer's slots are
ignored (`expect_partial`) and every model variable must be found
(`assert_existing_objects_matched`).

The Keras model itself is not saved as a Keras object: the export tracks its
variables and two `tf.function`s, so loading needs only TensorFlow
(`tf.saved_model.load`), not our code or Keras.
"""

import dataclasses
import os
import time
from typing import Any, Dict, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from common import files
from input_pipeline import schema
from models import base

EXPORT_SUBDIR = "export"
CHECKPOINT_SUBDIR = "checkpoints"
CHECKPOINT_MODEL_KEY = "model"
META_FILE = os.path.join("assets.extra", "export_meta.json")
SERVING_SIGNATURE = "serving_default"
ITEM_EMBEDDINGS_SIGNATURE = "item_embeddings"
# Signature input and output names.
HISTORY = base.HISTORY
HISTORY_TIMESTAMPS = base.HISTORY_TIMESTAMPS
USER_VECTORS = base.USER_VECTORS
ITEM_IDS = "item_ids"
EMBEDDINGS = "embeddings"


def build_model(model_name: str, model_config: Any, num_items: int, max_length: int) -> base.RetrievalModel:
  """A registered model with its variables created, built outside any strategy.

  Raises:
    ValueError: called inside a `tf.distribute` strategy scope.
  """
  if tf.distribute.has_strategy():
    raise ValueError(
        f"export builds the serving model outside any distribution strategy, but it was called "
        f"inside the scope of {type(tf.distribute.get_strategy()).__name__}. Call it after "
        f"leaving `strategy.scope()`.")
  from models import all_models  # pylint: disable=unused-import,g-import-not-at-top
  from models import registry  # pylint: disable=g-import-not-at-top

  model = registry.lookup(model_name).model_class(model_config, num_items=num_items)
  model.create_variables(max_length)
  return model


def restore_model(model: base.RetrievalModel, checkpoint_path: str) -> None:
  """Restores the model's variables from a training checkpoint (maybe PS-sharded).

  Raises:
    FileNotFoundError: no checkpoint at `checkpoint_path`.
    ValueError: the checkpoint lacks some of the model's variables (another model or
      config, or a checkpoint not written as `tf.train.Checkpoint(model=...)`).
  """
  if not tf.io.gfile.exists(checkpoint_path + ".index"):
    raise FileNotFoundError(f"No checkpoint at {checkpoint_path!r} (expected "
                            f"{checkpoint_path}.index). Train first, or pass checkpoint_path.")
  status = tf.train.Checkpoint(**{CHECKPOINT_MODEL_KEY: model}).restore(checkpoint_path)
  try:
    status.expect_partial().assert_existing_objects_matched()
  except AssertionError as e:
    raise ValueError(
        f"Checkpoint {checkpoint_path!r} does not hold every variable of the model "
        f"{type(model).__name__}: was it written by the same model and config, as "
        f"tf.train.Checkpoint({CHECKPOINT_MODEL_KEY}=model, ...)? {e}") from e


def serving_module(model: base.RetrievalModel, raw_item_ids, max_length: int) -> tf.Module:
  """A `tf.Module` with the two signatures' functions and only the state they need.

  Args:
    model: a built (restored) model.
    raw_item_ids: `[num_items]` raw ids in index order (`schema.read_vocab`).
    max_length: histories are cut to their last `max_length` real items.

  Returns:
    A module whose `serve` and `item_embeddings` are signature-ready `tf.function`s.
  """
  num_items = model.num_items
  if len(raw_item_ids) != num_items:
    raise ValueError(f"The vocabulary has {len(raw_item_ids)} ids but the model has "
                     f"{num_items} items: is the data_dir the one the model was trained on?")
  pad, oov = schema.pad_id(num_items), schema.oov_id(num_items)
  root = tf.Module()
  root.model_variables = list(model.variables)
  root.item_ids = tf.Variable(np.asarray(raw_item_ids, dtype=object), trainable=False,
                              dtype=tf.string, name="item_ids")
  root.vocabulary = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(
          tf.constant(raw_item_ids, tf.string), tf.range(num_items, dtype=tf.int64)),
      default_value=oov)

  @tf.function(input_signature=[
      tf.TensorSpec([None, None], tf.string, name=HISTORY),
      tf.TensorSpec([None, None], tf.int64, name=HISTORY_TIMESTAMPS)])
  def serve(history, history_timestamps):
    real = tf.not_equal(history, "")
    ids = tf.ragged.boolean_mask(history, real)[:, -max_length:]
    times = tf.ragged.boolean_mask(history_timestamps, real)[:, -max_length:]
    features = {
        base.HISTORY: tf.ragged.map_flat_values(root.vocabulary.lookup, ids).to_tensor(
            default_value=pad, shape=[None, max_length]),
        base.HISTORY_LENGTH: ids.row_lengths(),
        base.HISTORY_TIMESTAMPS: times.to_tensor(default_value=0, shape=[None, max_length]),
    }
    vectors = model(features, training=False)[base.USER_VECTORS]
    return {USER_VECTORS: tf.cast(vectors, tf.float32)}

  @tf.function(input_signature=[])
  def item_embeddings():
    table = tf.convert_to_tensor(model.item_table)
    return {ITEM_IDS: tf.identity(root.item_ids),
            EMBEDDINGS: tf.cast(table[:num_items], tf.float32)}

  root.serve = serve
  root.item_embeddings = item_embeddings
  return root


def _next_export_dir(export_base: str) -> str:
  """`export_base/<unix-seconds>`, bumped past existing ones (two exports in a second)."""
  stamp = int(time.time())
  while tf.io.gfile.exists(os.path.join(export_base, str(stamp))):
    stamp += 1
  return os.path.join(export_base, str(stamp))


def export_saved_model(
    *,
    model_name: str,
    model_config: Any,
    data_dir: str,
    model_dir: str,
    max_length: int,
    checkpoint_path: Optional[str] = None,
    extra_meta: Optional[Dict[str, Any]] = None,
) -> str:
  """Exports the trained model as `MODEL_DIR/export/<unix-timestamp>/` (see module doc).

  Call it after training, outside any `strategy.scope()` (also after
  ParameterServerStrategy training: the model is rebuilt here and restored from the
  checkpoint, the parameter servers are not needed).

  Args:
    model_name: the registered model name (`sine`, ...).
    model_config: that model's config dataclass instance, as used for training.
    data_dir: the prepared data set trained on (vocab.tsv, stats.json).
    model_dir: the training run's directory; the export goes to `model_dir/export/`.
    max_length: the training history length (`DataConfig.max_length`); serving keeps
      the last `max_length` items of a history.
    checkpoint_path: a checkpoint prefix written as `tf.train.Checkpoint(model=...)`;
      default: the latest one in `model_dir/checkpoints/`.
    extra_meta: more entries for export_meta.json (e.g. the training step).

  Returns:
    The export directory.

  Raises:
    FileNotFoundError: no checkpoint or no data set.
    ValueError: inside a strategy scope, or the checkpoint does not match the model.
  """
  if max_length < 1:
    raise ValueError(f"max_length must be >= 1, got {max_length}.")
  if checkpoint_path is None:
    checkpoint_dir = os.path.join(model_dir, CHECKPOINT_SUBDIR)
    checkpoint_path = tf.train.latest_checkpoint(checkpoint_dir)
    if checkpoint_path is None:
      raise FileNotFoundError(f"No checkpoint in {checkpoint_dir!r} to export; train first "
                              f"or pass checkpoint_path.")
  stats = schema.read_stats(data_dir)
  raw_item_ids = schema.read_vocab(data_dir)
  num_items = int(stats["num_items"])
  model = build_model(model_name, model_config, num_items, max_length)
  restore_model(model, checkpoint_path)
  root = serving_module(model, raw_item_ids, max_length)
  user_vectors = root.serve(tf.constant([[raw_item_ids[0]]]), tf.zeros([1, 1], tf.int64))
  meta = {
      "model": model_name,
      "model_config": dataclasses.asdict(model_config) if dataclasses.is_dataclass(model_config)
                      else repr(model_config),
      "num_items": num_items,
      "num_vectors": int(user_vectors[USER_VECTORS].shape[1]),
      "dim": int(user_vectors[USER_VECTORS].shape[2]),
      "max_length": max_length,
      "checkpoint": checkpoint_path,
      "data_dir": os.path.abspath(data_dir),
      "data_stats": stats,
      "signatures": {SERVING_SIGNATURE: {"inputs": [HISTORY, HISTORY_TIMESTAMPS],
                                         "outputs": [USER_VECTORS]},
                     ITEM_EMBEDDINGS_SIGNATURE: {"inputs": [], "outputs": [ITEM_IDS, EMBEDDINGS]}},
      **(extra_meta or {}),
  }

  export_base = os.path.join(model_dir, EXPORT_SUBDIR)
  final_dir = _next_export_dir(export_base)
  # A crash leaves only a hidden temporary directory (removed by the next export), never
  # a half export under a timestamp that the index job would pick up.
  with files.replace_directory(final_dir, flag="export") as temporary_dir:
    tf.saved_model.save(root, temporary_dir, signatures={
        SERVING_SIGNATURE: root.serve.get_concrete_function(),
        ITEM_EMBEDDINGS_SIGNATURE: root.item_embeddings.get_concrete_function()})
    files.write_json(os.path.join(temporary_dir, META_FILE), meta, default=str)
  logging.info("exported %s (%d items, %d x %d user vectors) from %s to %s", model_name, num_items,
               meta["num_vectors"], meta["dim"], checkpoint_path, final_dir)
  return final_dir

