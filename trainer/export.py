"""SavedModel export with serving signatures on raw ids (docs/architecture.md, 5).

`export_saved_model` builds a fresh model *outside* any distribution strategy,
restores it from the training checkpoint and writes

    MODEL_DIR/export/<unix-timestamp>/
        saved_model.pb, variables/          signatures below
        assets.extra/export_meta.json       model, num_items, dim, max_length, inputs, data stats

with the signatures (names in `common.names`)
    serving_default(<the raw inputs the model reads>)
        -> user_vectors: float32 [batch, num_vectors, dim]
           history_length: int64 [batch]   known history items used
           unknown_items: int64 [batch]    request ids not in the vocabulary, ignored
    item_embeddings()
        -> item_ids: string [num_items], embeddings: float32 [num_items, dim],
           item_bias: float32 [num_items] (zeros without a bias),
           item_counts: float32 [num_items] (training counts)

Serving inputs. The model's `sample_spec()` names the timeline fields its feature sets
read; the signature takes exactly their raw forms: `history` (string `[batch, len]`,
raw item ids oldest first, `""` pads anywhere) always, and as the model needs them
`history_timestamps` (int64, aligned), `history_feedback` (float32, aligned),
`impressions` + `impression_timestamps` (items shown but not clicked, any order),
`user_features` (string, raw feature names such as "age=25") and `request_time`
(int64 `[batch]`). The export maps ids through the vocabularies, drops unknown ones
(counted in `unknown_items`; they never feed the untrained OOV row into a user
vector) and padding, builds one timeline per user and runs the model's own feature
sets at its end: the same code that built its training and evaluation batches.

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
from common import names
from input_pipeline import samples
from input_pipeline import schema
from input_pipeline.data_spec import DataSpec
from models import base

EXPORT_SUBDIR = "export"
CHECKPOINT_SUBDIR = "checkpoints"
CHECKPOINT_MODEL_KEY = "model"

# Raw serving input per timeline field a model reads: (name, dtype, rank).
RAW_INPUTS = {
    schema.ITEMS: (names.RAW_HISTORY, tf.string, 2),
    schema.TIMESTAMPS: (names.RAW_HISTORY_TIMESTAMPS, tf.int64, 2),
    schema.FEEDBACK: (names.RAW_HISTORY_FEEDBACK, tf.float32, 2),
    schema.IMPRESSIONS: (names.RAW_IMPRESSIONS, tf.string, 2),
    schema.IMPRESSION_TIMESTAMPS: (names.RAW_IMPRESSION_TIMESTAMPS, tf.int64, 2),
    schema.USER_FEATURES: (names.RAW_USER_FEATURES, tf.string, 2),
}
REQUEST_TIME_INPUT = (names.RAW_REQUEST_TIME, tf.int64, 1)


def serving_inputs(sample_spec: samples.SampleSpec) -> Dict[str, tf.TensorSpec]:
  """The serving signature's inputs for a model's `SampleSpec` (name -> TensorSpec)."""
  wanted = [RAW_INPUTS[field] for field in sample_spec.reads]
  if sample_spec.uses_request_time:
    wanted.append(REQUEST_TIME_INPUT)
  return {name: tf.TensorSpec([None] * rank, dtype, name=name) for name, dtype, rank in wanted}


def build_model(model_name: str, model_config: Any, data: DataSpec) -> base.RetrievalModel:
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

  model = registry.lookup(model_name).model_class(model_config, data=data)
  model.create_variables()
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
  status = tf.train.Checkpoint(**{CHECKPOINT_MODEL_KEY: model}).read(checkpoint_path)
  try:
    status.expect_partial().assert_existing_objects_matched()
  except AssertionError as e:
    raise ValueError(
        f"Checkpoint {checkpoint_path!r} does not hold every variable of the model "
        f"{type(model).__name__}: was it written by the same model and config, as "
        f"tf.train.Checkpoint({CHECKPOINT_MODEL_KEY}=model, ...)? {e}") from e


def _vocabulary(keys) -> tf.lookup.StaticHashTable:
  """Raw string -> index table; unknown strings (and "") map to -1."""
  return tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(list(keys), tf.string),
                                          tf.range(len(keys), dtype=tf.int64)),
      default_value=-1)


def _known(vocabulary, raw):
  """Looks `[batch, n]` raw ids up; returns (indices, known mask, unknown count [batch])."""
  indices = vocabulary.lookup(raw)
  known = indices >= 0
  unknown = tf.reduce_sum(tf.cast((raw != "") & ~known, tf.int64), axis=1)
  return indices, known, unknown


def _by_time(ids, times):
  """Sorts `[batch, n]` ids (and times) by time within each row, padding (-1) last."""
  key = tf.where(ids >= 0, times, tf.int64.max)
  order = tf.argsort(key, axis=1, stable=True)
  return tf.gather(ids, order, batch_dims=1), tf.gather(times, order, batch_dims=1)


def serving_module(model: base.RetrievalModel) -> tf.Module:
  """A `tf.Module` with the two signatures' functions and only the state they need.

  Returns:
    A module whose `serve` (call `serve.get_concrete_function(**serving_inputs(spec))`)
    and `candidates` are signature-ready `tf.function`s.
  """
  data = model.data
  spec = model.sample_spec()
  reads = spec.reads
  paddings = spec.paddings(data)
  root = tf.Module()
  root.model_variables = list(model.variables)
  root.item_ids = tf.Variable(np.asarray(data.item_ids, dtype=object), trainable=False,
                              dtype=tf.string, name="item_ids")
  root.item_counts = tf.Variable(data.item_counts, trainable=False, name="item_counts")
  root.vocabulary = _vocabulary(data.item_ids)
  if schema.USER_FEATURES in reads:
    root.user_feature_vocabulary = _vocabulary(data.user_feature_names or [""])

  @tf.function
  def serve(**inputs):
    history, known, unknown = _known(root.vocabulary, inputs[names.RAW_HISTORY])
    batch = tf.shape(history, out_type=tf.int64)[0]

    def aligned(name, default_dtype):
      value = inputs[name] if name in inputs else tf.zeros(tf.shape(history), default_dtype)
      return tf.ragged.boolean_mask(value, known)

    timelines = {
        schema.ITEMS: tf.ragged.boolean_mask(history, known),
        schema.TIMESTAMPS: aligned(names.RAW_HISTORY_TIMESTAMPS, tf.int64),
        schema.FEEDBACK: aligned(names.RAW_HISTORY_FEEDBACK, tf.float32),
    }
    if schema.IMPRESSIONS in reads:
      shown, shown_known, shown_unknown = _known(root.vocabulary, inputs[names.RAW_IMPRESSIONS])
      unknown += shown_unknown
      shown, shown_times = _by_time(tf.where(shown_known, shown, -1),
                                    inputs[names.RAW_IMPRESSION_TIMESTAMPS])
      timelines[schema.IMPRESSIONS] = tf.ragged.boolean_mask(shown, shown >= 0)
      timelines[schema.IMPRESSION_TIMESTAMPS] = tf.ragged.boolean_mask(shown_times, shown >= 0)
    if schema.USER_FEATURES in reads:
      features, features_known, _ = _known(root.user_feature_vocabulary,
                                           inputs[names.RAW_USER_FEATURES])
      timelines[schema.USER_FEATURES] = tf.ragged.boolean_mask(features, features_known)
    lengths = timelines[schema.ITEMS].row_lengths()
    timelines[schema.TARGET_START] = lengths
    request_time = inputs.get(names.RAW_REQUEST_TIME, tf.zeros([batch], tf.int64))
    features = spec.features_at(timelines, tf.range(batch), lengths, request_time)
    vectors = model(samples.pad(features, paddings), training=False)[names.USER_VECTORS]
    return {names.USER_VECTORS: tf.cast(vectors, tf.float32),
            names.HISTORY_LENGTH: tf.minimum(lengths, spec.max_length),
            names.UNKNOWN_ITEMS: unknown}

  @tf.function(input_signature=[])
  def candidates():
    side = model.candidates()
    vectors = tf.convert_to_tensor(side.vectors)[:data.num_items]
    bias = (tf.zeros([data.num_items]) if side.bias is None
            else tf.convert_to_tensor(side.bias)[:data.num_items])
    return {names.ITEM_IDS: tf.identity(root.item_ids),
            names.EMBEDDINGS: tf.cast(vectors, tf.float32),
            names.ITEM_BIAS: tf.cast(bias, tf.float32),
            names.ITEM_COUNTS: tf.identity(root.item_counts)}

  root.serve = serve
  root.candidates = candidates
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
    data: DataSpec,
    model_dir: str,
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
    data: the description of the data set trained on (`data_spec.read(data_dir)`).
    model_dir: the training run's directory; the export goes to `model_dir/export/`.
    checkpoint_path: a checkpoint prefix written as `tf.train.Checkpoint(model=...)`;
      default: the latest one in `model_dir/checkpoints/`.
    extra_meta: more entries for export_meta.json (e.g. the training step).

  Returns:
    The export directory.

  Raises:
    FileNotFoundError: no checkpoint.
    ValueError: inside a strategy scope, or the checkpoint does not match the model.
  """
  if checkpoint_path is None:
    checkpoint_dir = os.path.join(model_dir, CHECKPOINT_SUBDIR)
    checkpoint_path = tf.train.latest_checkpoint(checkpoint_dir)
    if checkpoint_path is None:
      raise FileNotFoundError(f"No checkpoint in {checkpoint_dir!r} to export; train first "
                              f"or pass checkpoint_path.")
  model = build_model(model_name, model_config, data)
  restore_model(model, checkpoint_path)
  root = serving_module(model)
  spec = model.sample_spec()
  inputs = serving_inputs(spec)
  serve = root.serve.get_concrete_function(**inputs)
  probe = {name: tf.zeros([1] + [1] * (value.shape.rank - 1), value.dtype)
           for name, value in inputs.items()}
  probe[names.RAW_HISTORY] = tf.constant([[data.item_ids[0]]])
  user_vectors = serve(**probe)[names.USER_VECTORS]
  meta = {
      "model": model_name,
      "model_config": dataclasses.asdict(model_config) if dataclasses.is_dataclass(model_config)
                      else repr(model_config),
      "num_items": data.num_items,
      "num_vectors": int(user_vectors.shape[1]),
      "dim": int(user_vectors.shape[2]),
      "max_length": spec.max_length,
      "checkpoint": checkpoint_path,
      "data_dir": os.path.abspath(data.data_dir) if data.data_dir else "",
      "data_stats": dict(data.stats),
      "signatures": {
          names.SERVING_SIGNATURE: {
              "inputs": sorted(inputs),
              "outputs": [names.USER_VECTORS, names.HISTORY_LENGTH, names.UNKNOWN_ITEMS]},
          names.CANDIDATES_SIGNATURE: {
              "inputs": [],
              "outputs": [names.ITEM_IDS, names.EMBEDDINGS, names.ITEM_BIAS, names.ITEM_COUNTS]}},
      **(extra_meta or {}),
  }

  export_base = os.path.join(model_dir, EXPORT_SUBDIR)
  final_dir = _next_export_dir(export_base)
  # A crash leaves only a hidden temporary directory (removed by the next export), never
  # a half export under a timestamp that the index job would pick up.
  with files.replace_directory(final_dir, flag="export") as temporary_dir:
    tf.saved_model.save(root, temporary_dir, signatures={
        names.SERVING_SIGNATURE: serve,
        names.CANDIDATES_SIGNATURE: root.candidates.get_concrete_function()})
    files.write_json(os.path.join(temporary_dir, names.EXPORT_META_FILE), meta, default=str)
  logging.info("exported %s (%d items, %d x %d user vectors, inputs %s) from %s to %s",
               model_name, data.num_items, meta["num_vectors"], meta["dim"], sorted(inputs),
               checkpoint_path, final_dir)
  return final_dir
