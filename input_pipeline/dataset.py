"""Streaming tf.data input: timeline shards -> bucketed, padded model batches.

`make_dataset(config, sample_spec, data, input_context)` is the `dataset_fn` that every
strategy calls (bound to everything but the input context):

    files (this input pipeline's share, shuffled per epoch) -> interleave(TFRecordDataset)
      -> shuffle timelines in chunks -> batch into blocks
      -> parse + build the model's samples (its `samples.SampleSpec`), vectorized per block
          -> rebatch into windows of `window_batches` batches
      -> per window: shuffle samples, [bucketing] stable-sort by length bucket, cut into
         batches, shuffle the batches -> pad each batch (each feature with its declared
         padding) -> prefetch

No user function runs per sample: tf.data pays tens of microseconds per function call
on small machines, more than building a sample costs, and `unbatch -> shuffle ->
bucket_by_sequence_length` per sample ran about 8x slower here (docs/input.md).
Bucketing is the vectorized equivalent of `bucket_by_sequence_length`: within a
window, samples are ordered by length bucket (randomly within a bucket) and cut into
batches, so each batch holds similar lengths and is padded only up to its bucket
boundary. Nothing is materialized: memory is one chunk of `shuffle_buffer` serialized
timelines, one window of samples and the prefetch buffer.

Randomness. Every shuffle is a stateless permutation keyed by (`InputConfig.seed` or,
when it is None, the clock when the dataset is instantiated; the input pipeline id;
the stage; the epoch, chunk or window number). So a seed reproduces the order, and
`tf.random.set_seed` has no say: under ParameterServerStrategy every worker runs the
same traced dataset_fn as input pipeline 0, and seeds derived from the global seed
would give every worker the same order.
"""

import dataclasses
import re
from typing import List, Optional, Tuple

from absl import logging
import tensorflow as tf

from common import names
from input_pipeline import samples
from input_pipeline import schema
from input_pipeline.data_spec import DataSpec


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """What `make_dataset` reads and how it batches.

  Attributes:
    data_dir: a dataset directory written by `python -m input_pipeline.prepare`.
    split: "train", "valid" or "test".
    batch_size: global batch size; each input pipeline gets the per-replica share.
    evaluation: build evaluation samples (one per user, with the held-out targets;
      `SampleSpec.evaluation_batch`) instead of the model's training samples.
    shuffle: shuffle files, timelines, samples and batches (off for evaluation).
    shuffle_buffer: timelines are shuffled in chunks of this many.
    window_batches: samples are shuffled and bucketed within windows of this many
      batches (`window_batches * per-replica batch_size` samples).
    seed: makes the order reproducible (each input pipeline still gets its own).
      None: a new order for every dataset instance, whatever `tf.random.set_seed`
      says; use None under ParameterServerStrategy, whose workers all run the same
      dataset_fn as input pipeline 0.
    num_epochs: passes over the split; None repeats forever (what
      ParameterServerStrategy's scheduled steps want).
    bucketing: batch similar history lengths together and pad each batch to its
      bucket boundary; off pads histories to max_length (static shapes).
    bucket_boundaries: increasing pad widths below the model's max_length (which is
      always the last one); empty means `default_boundaries(max_length)`.
    drop_remainder: drop the last partial batch.
    deterministic: produce elements in a reproducible order (parallel interleave and
      maps keep their order); turn on for evaluation and tests.
    timelines_per_block: timelines parsed and turned into samples per function call.
    cycle_length: files read concurrently.
  """
  data_dir: str
  split: str = "train"
  batch_size: int = 256
  evaluation: bool = False
  shuffle: bool = True
  shuffle_buffer: int = 1024
  window_batches: int = 32
  seed: Optional[int] = None
  num_epochs: Optional[int] = None
  bucketing: bool = True
  bucket_boundaries: Tuple[int, ...] = ()
  drop_remainder: bool = False
  deterministic: bool = False
  timelines_per_block: int = 128
  cycle_length: int = 4


def eval_config(data_dir: str, split: str = "valid", **overrides) -> InputConfig:
  """An `InputConfig` for full-catalog evaluation: one pass, in order, evaluation samples."""
  settings = dict(data_dir=data_dir, split=split, evaluation=True, shuffle=False,
                  num_epochs=1, deterministic=True)
  settings.update(overrides)
  return InputConfig(**settings)


def corrupt_shards(data_dir: str) -> List[str]:
  """Every shard of every split that TFRecord reading rejects, with TF's reason.

  Reads each file once, in the graph (no Python loop per record); meant for the
  failure path, to name the file behind a `tf.errors.DataLossError`.
  """
  damaged = []
  for split in schema.SPLITS:
    for path in schema.split_files(data_dir, split):
      try:
        tf.data.TFRecordDataset(path).reduce(tf.constant(0, tf.int64), lambda count, _: count + 1)
      except tf.errors.DataLossError as e:
        reason = re.search(r"(corrupted|truncated) record at \d+", e.message)
        damaged.append(f"{path} ({reason.group(0) if reason else 'unreadable'})")
  return damaged


def default_boundaries(max_length: int) -> Tuple[int, ...]:
  """Bucket pad widths: 1/8, 1/4, 1/2 of max_length rounded up, then max_length.

  For max_length 50: (7, 13, 25, 50).
  """
  return tuple(sorted({-(-max_length // d) for d in (8, 4, 2, 1)}))


def bucket_boundaries(config: InputConfig, max_length: int) -> Tuple[int, ...]:
  """The pad widths a batch rounds its longest history up to; the last is max_length."""
  if not config.bucketing:
    return (max_length,)
  if not config.bucket_boundaries:
    return default_boundaries(max_length)
  if config.bucket_boundaries[-1] >= max_length:
    raise ValueError(f"InputConfig.bucket_boundaries {config.bucket_boundaries} must stay below "
                     f"the model's max_length {max_length}, which is always the last boundary.")
  return tuple(config.bucket_boundaries) + (max_length,)


def make_dataset(config: InputConfig, sample_spec: samples.SampleSpec, data: DataSpec,
                 input_context: Optional[tf.distribute.InputContext] = None) -> tf.data.Dataset:
  """Streams one split as batches of a model's features.

  Args:
    config: what to read and how to batch it.
    sample_spec: the model's `sample_spec()`: which features to build, their padding,
      and how training samples are cut.
    data: the data set's description (`input_pipeline.data_spec.read(config.data_dir)`).
    input_context: given by `strategy.distribute_datasets_from_function` (also inside
      `ClusterCoordinator.create_per_worker_dataset`): this pipeline reads only its
      share of the files and batches `input_context.get_per_replica_batch_size`.

  Returns:
    A dataset of feature dicts: the model's declared features and, in training, its
    labels (`sample_spec.specs(training=True)`), or the evaluation targets
    EVAL_TARGETS and EVAL_EXCLUDE (`evaluation=True`), every ragged feature padded to a
    dense `[batch, width]` with its declared padding value. The history's `width` is a
    bucket boundary (the model's max_length without bucketing).

  Raises:
    FileNotFoundError: data_dir is not a prepared dataset or the split has no shards.
    ValueError: bad config values, or an empty split.
  """
  _check(config, data)
  pad_id = data.pad_id
  kinds = {"evaluation": True} if config.evaluation else {"training": True}
  paddings = sample_spec.paddings(data, **kinds)
  declared = sample_spec.specs(**kinds)
  boundaries = bucket_boundaries(config, sample_spec.max_length)
  batch_size = config.batch_size
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(config.batch_size)
  key = _shuffle_key(config, input_context) if config.shuffle else None

  def build(serialized):
    timelines = schema.parse_timelines(serialized)
    features = (sample_spec.evaluation_batch(timelines) if config.evaluation
                else sample_spec.training_batch(timelines, pad_id))
    samples.check_specs(features, declared)  # at trace time: the declaration is the truth
    return features

  # The map functions use Python control flow on static values only: skipping
  # AutoGraph's conversion halves the time to build the dataset.
  no_autograph = tf.autograph.experimental.do_not_convert
  dataset = _timeline_records(config, input_context, key)
  if key is not None:
    dataset = dataset.batch(config.shuffle_buffer).enumerate().map(
        no_autograph(lambda index, chunk: _shuffle_chunk(chunk, key, index))).unbatch()
  dataset = dataset.batch(config.timelines_per_block).map(
      no_autograph(build), num_parallel_calls=tf.data.AUTOTUNE)
  if config.shuffle or config.bucketing:
    dataset = dataset.rebatch(batch_size * config.window_batches).enumerate().map(no_autograph(
        lambda index, features: split_window(features, batch_size, boundaries,
                                             config.bucketing, config.drop_remainder,
                                             key, index))).unbatch()
  else:
    dataset = dataset.rebatch(batch_size, drop_remainder=config.drop_remainder)
  dataset = dataset.map(no_autograph(lambda features: pad_batch(features, paddings, boundaries)),
                        num_parallel_calls=tf.data.AUTOTUNE)
  options = tf.data.Options()
  options.deterministic = config.deterministic
  return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def _check(config: InputConfig, data: DataSpec) -> None:
  """Turns bad configs into errors that say what to change."""
  if config.split not in schema.SPLITS:
    raise ValueError(f"Unknown split {config.split!r}; expected one of {schema.SPLITS}.")
  for name in ("batch_size", "shuffle_buffer", "window_batches", "timelines_per_block",
               "cycle_length"):
    if getattr(config, name) < 1:
      raise ValueError(f"InputConfig.{name} must be positive, got {getattr(config, name)}.")
  if config.num_epochs is not None and config.num_epochs < 1:
    raise ValueError(f"InputConfig.num_epochs must be positive or None (forever), got "
                     f"{config.num_epochs}.")
  bounds = config.bucket_boundaries
  if bounds and (bounds[0] < 1 or any(a >= b for a, b in zip(bounds, bounds[1:]))):
    raise ValueError(f"InputConfig.bucket_boundaries must be strictly increasing positive "
                     f"widths below the model's max_length, got {bounds}; max_length is "
                     f"always the last boundary.")
  split_stats = data.stats.get("splits", {}).get(config.split, {})
  if split_stats.get("num_users", 1) == 0:
    raise ValueError(f"Split {config.split!r} of {config.data_dir!r} is empty (stats.json: "
                     f"{split_stats}); re-run prepare with less filtering or another split.")


# Stages of the shuffle, folded into the key so that they draw different permutations.
_FILES, _TIMELINES, _WINDOWS, _BATCHES = range(4)


def _shuffle_key(config: InputConfig,
                 input_context: Optional[tf.distribute.InputContext]) -> tf.Tensor:
  """`[2]` int64 key of this input pipeline's shuffles (see the module docstring)."""
  if config.seed is None:
    # Evaluated when the dataset is instantiated: on each worker under PS.
    entropy = tf.bitcast(tf.timestamp(), tf.int64)
  else:
    entropy = tf.constant(config.seed, tf.int64)
  pipeline_id = input_context.input_pipeline_id if input_context else 0
  return tf.stack([entropy, tf.constant(pipeline_id, tf.int64)])


def _permutation(n: tf.Tensor, key: tf.Tensor, stage: int, index: tf.Tensor) -> tf.Tensor:
  """A permutation of `range(n)` (int64) determined by the key, stage and index."""
  key = tf.random.experimental.stateless_fold_in(key, stage)
  key = tf.random.experimental.stateless_fold_in(key, index)
  return tf.random.experimental.stateless_shuffle(tf.range(n), seed=key)


def _shuffle_chunk(chunk: tf.Tensor, key: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
  """Chunk `index` of serialized timelines `[n]`, permuted."""
  return tf.gather(chunk, _permutation(tf.size(chunk, tf.int64), key, _TIMELINES, index))


def _timeline_records(config: InputConfig, input_context: Optional[tf.distribute.InputContext],
                      key: Optional[tf.Tensor]) -> tf.data.Dataset:
  """Serialized timelines of this input pipeline's share of the split, epoch after epoch."""
  files = schema.split_files(config.data_dir, config.split)
  num_pipelines = input_context.num_input_pipelines if input_context else 1
  pipeline_id = input_context.input_pipeline_id if input_context else 0
  record_sharding = num_pipelines > len(files)
  if num_pipelines > 1 and not record_sharding:
    files = files[pipeline_id::num_pipelines]
  elif record_sharding:
    logging.warning(
        "%d input pipelines but only %d shards in %s: every pipeline reads every file and "
        "keeps 1 record in %d. Re-run prepare with at least %d shards to read less.",
        num_pipelines, len(files), config.split, num_pipelines, num_pipelines)
  epochs = tf.data.Dataset.counter().take(config.num_epochs or -1)
  if key is None:
    dataset = epochs.flat_map(lambda _: tf.data.Dataset.from_tensor_slices(files))
  else:
    names = tf.constant(files)
    dataset = epochs.flat_map(tf.autograph.experimental.do_not_convert(
        lambda epoch: tf.data.Dataset.from_tensor_slices(tf.gather(
            names, _permutation(len(files), key, _FILES, epoch)))))
  dataset = dataset.interleave(
      tf.data.TFRecordDataset, cycle_length=min(config.cycle_length, len(files)),
      num_parallel_calls=tf.data.AUTOTUNE)
  if record_sharding:
    dataset = dataset.shard(num_pipelines, pipeline_id)
  return dataset


def _bucket_index(lengths: tf.Tensor, boundaries: Tuple[int, ...]) -> tf.Tensor:
  """Index of the first boundary >= length (len(boundaries) past the last one), any shape."""
  below = lengths[..., tf.newaxis] > tf.constant(boundaries, lengths.dtype)
  return tf.reduce_sum(tf.cast(below, tf.int32), axis=-1)


def split_window(features: samples.Features, batch_size: int, boundaries: Tuple[int, ...],
                 bucketing: bool, drop_remainder: bool, key: Optional[tf.Tensor],
                 index: tf.Tensor) -> samples.Features:
  """Cuts window `index` of samples `[n, ...]` into batches: ragged `[num_batches, (batch), ...]`.

  With a shuffle `key` the samples are permuted first; with `bucketing` they are
  then stable-sorted by the length bucket of HISTORY_LENGTH, so each batch holds
  similar lengths in random order, and the batches are permuted so that lengths do
  not cycle short to long. Every batch has `batch_size` samples except one partial
  batch of the final window of a finite dataset (dropped with `drop_remainder`).
  """
  n = tf.size(features[names.HISTORY_LENGTH], out_type=tf.int64)
  order = tf.range(n) if key is None else _permutation(n, key, _WINDOWS, index)
  if bucketing:
    buckets = _bucket_index(tf.gather(features[names.HISTORY_LENGTH], order), boundaries)
    order = tf.gather(order, tf.argsort(buckets, stable=True))
  full, rest = n // batch_size, n % batch_size
  sizes = tf.fill([full], tf.constant(batch_size, tf.int64))
  if drop_remainder:
    order = order[:full * batch_size]
  else:
    sizes = tf.concat([sizes, tf.fill([tf.minimum(rest, 1)], rest)], axis=0)
  batches = {name: tf.RaggedTensor.from_row_lengths(tf.gather(value, order), sizes,
                                                    validate=False)
             for name, value in features.items()}
  if key is not None and bucketing:
    batch_order = _permutation(tf.size(sizes, out_type=tf.int64), key, _BATCHES, index)
    batches = {name: tf.gather(value, batch_order) for name, value in batches.items()}
  return batches


def pad_batch(features: samples.Features, paddings, boundaries: Tuple[int, ...]) -> samples.Features:
  """Pads each ragged feature `[batch, None]` to a dense `[batch, width]` (`samples.pad`).

  `width` is the smallest boundary holding the batch's longest row; rows longer than
  the last boundary (eval_exclude can be) round up to a multiple of it, so there are
  few distinct shapes to trace. Each feature pads with its declared value.
  """
  bounds = tf.constant(boundaries, tf.int64)
  last = tf.constant(boundaries[-1], tf.int64)

  def width_of(value):
    longest = tf.reduce_max(value.row_lengths())
    return tf.where(longest <= last,
                    tf.gather(bounds, tf.minimum(_bucket_index(longest, boundaries),
                                                 len(boundaries) - 1)),
                    (longest + last - 1) // last * last)

  return samples.pad(features, paddings, width_of)
