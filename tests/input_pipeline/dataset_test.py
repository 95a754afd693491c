"""make_dataset on tiny dataset directories written with `schema` (expectations derived inline)."""

import os

import numpy as np
import pytest

from common import names as base
from input_pipeline import data_spec
from input_pipeline import dataset
from input_pipeline import samples
from input_pipeline import schema
import tensorflow as tf

NUM_ITEMS = 50
PAD = NUM_ITEMS + 1  # schema.pad_id


def _write(data_dir, splits, num_shards=1):
  """splits: {split: [(items, target_start), ...]}; user u goes to shard u % num_shards.

  Timestamps are 100 * (position + 1), so they are easy to tell from item ids.
  """
  for split, timelines in splits.items():
    directory = schema.split_dir(str(data_dir), split)
    os.makedirs(directory)
    writers = [tf.io.TFRecordWriter(os.path.join(directory, schema.shard_name(s, num_shards)))
               for s in range(num_shards)]
    for user, (items, start) in enumerate(timelines):
      writers[user % num_shards].write(schema.encode_timeline(
          user_id=f"u{user}", items=items, timestamps=[100 * (i + 1) for i in range(len(items))],
          target_start=start))
    for writer in writers:
      writer.close()
  schema.write_stats(str(data_dir), {
      "num_items": NUM_ITEMS, "split": schema.LEAVE_LAST_ONE_OUT,
      "splits": {split: {"num_users": len(t)} for split, t in splits.items()}})
  return str(data_dir)


def _make(config, context=None, max_length=50, training=samples.AllPrefixes()):
  """make_dataset for a model reading the history, trained on `training` samples."""
  spec = samples.SampleSpec(features=(samples.History(max_length),), training=training)
  data = data_spec.DataSpec.for_catalog(NUM_ITEMS, stats=schema.read_stats(config.data_dir))
  return dataset.make_dataset(config, spec, data, context)


def _in_order(data_dir, **overrides):
  """A one-pass, unshuffled, unbucketed config (rows come out in file order)."""
  settings = dict(data_dir=data_dir, num_epochs=1, shuffle=False, bucketing=False,
                  deterministic=True)
  settings.update(overrides)
  return dataset.InputConfig(**settings)


def _batches(ds):
  return [{key: value.numpy() for key, value in batch.items()} for batch in ds]


def _pairs(batches):
  """(history without padding, label) of every sample, as hashable tuples."""
  return [(tuple(h[:n]), tuple(l)) for b in batches
          for h, n, l in zip(b[base.HISTORY], b[base.HISTORY_LENGTH], b[base.LABELS])]


def test_batch_is_padded_with_pad_id(tmp_path):
  # Timelines [1, 2, 3] and [4, 5], max_length 4, no bucketing: every row is padded
  # to 4 columns, items with PAD = 51, timestamps with 0. Samples: [1]->2, [1, 2]->3, [4]->5.
  data_dir = _write(tmp_path, {"train": [([1, 2, 3], 0), ([4, 5], 0)]})
  [batch] = _batches(_make(_in_order(data_dir, batch_size=8), max_length=4))
  np.testing.assert_array_equal(batch[base.HISTORY], [[1, PAD, PAD, PAD],
                                                      [1, 2, PAD, PAD],
                                                      [4, PAD, PAD, PAD]])
  np.testing.assert_array_equal(batch[base.HISTORY_TIMESTAMPS], [[100, 0, 0, 0],
                                                                 [100, 200, 0, 0],
                                                                 [100, 0, 0, 0]])
  np.testing.assert_array_equal(batch[base.HISTORY_LENGTH], [1, 2, 1])
  np.testing.assert_array_equal(batch[base.LABELS], [[2], [3], [5]])
  assert batch[base.HISTORY].dtype == np.int64


def test_streams_every_sample_from_sharded_files(tmp_path):
  # 10 users over 3 shards; user u has items [u, u+1, ..., u+u%4+1] (2 to 5 items), so
  # all_prefixes gives sum(u % 4 + 1) = 3*1 + 3*2 + 2*3 + 2*4 = 23 samples, the same
  # multiset however they are shuffled, bucketed and batched.
  timelines = [(list(range(u, u + u % 4 + 2)), 0) for u in range(10)]
  data_dir = _write(tmp_path, {"train": timelines}, num_shards=3)
  expected = sorted((tuple(items[:i]), (items[i],))
                    for items, _ in timelines for i in range(1, len(items)))
  assert len(expected) == 23
  config = dataset.InputConfig(data_dir=data_dir, batch_size=4, num_epochs=1, seed=7,
                               shuffle_buffer=4, window_batches=2)
  batches = _batches(_make(config))
  assert sorted(_pairs(batches)) == expected
  assert [len(b[base.LABELS]) for b in batches].count(4) == 5  # 23 = 5 * 4 + 3
  # Two epochs give every sample twice.
  twice = _batches(_make(dataset.InputConfig(
      data_dir=data_dir, batch_size=4, num_epochs=2, seed=7)))
  assert sorted(_pairs(twice)) == sorted(expected * 2)


def test_seed_makes_order_reproducible(tmp_path):
  timelines = [(list(range(u, u + 6)), 0) for u in range(20)]
  data_dir = _write(tmp_path, {"train": timelines}, num_shards=2)
  config = dataset.InputConfig(data_dir=data_dir, batch_size=8, num_epochs=1, seed=3,
                               deterministic=True)
  first = _pairs(_batches(_make(config)))
  assert first == _pairs(_batches(_make(config)))
  # ... and shuffling changed the file order (sorted would mean no shuffle at all).
  assert first != _pairs(_batches(_make(_in_order(data_dir, batch_size=8))))


def test_unseeded_instances_differ_despite_a_global_seed(tmp_path):
  # ParameterServerStrategy's workers all run the same traced dataset_fn (here: one
  # tf.function run twice); with tf.random.set_seed in effect, shuffle seeds drawn
  # from it would give every run the same order.
  timelines = [(list(range(10 * u, 10 * u + 6)), 0) for u in range(20)]
  data_dir = _write(tmp_path, {"train": timelines}, num_shards=2)
  config = dataset.InputConfig(data_dir=data_dir, batch_size=8, deterministic=True)
  tf.random.set_seed(0)
  try:

    @tf.function
    def first_batch_labels():
      return _make(config).take(1).get_single_element()[base.LABELS]

    first, second = first_batch_labels().numpy(), first_batch_labels().numpy()
  finally:
    tf.random.set_seed(None)
  # 8 of 100 samples: two independent orders agree with probability ~1e-16.
  assert first.tolist() != second.tolist()


def test_bucketing_groups_similar_lengths(tmp_path):
  # last_item gives one sample per user with history length len(items) - 1. Lengths
  # 1-2 (bucket of width 2), 3-4 (width 4) and 5-8 (width 8), 8 users each; batch 4
  # and a window holding all 24 samples, so every batch is one bucket, padded only
  # to that bucket's width.
  lengths = [1, 2] * 4 + [3, 4] * 4 + [5, 6, 7, 8] * 2
  timelines = [(list(range(n + 1)), 0) for n in lengths]
  data_dir = _write(tmp_path, {"train": timelines}, num_shards=2)
  config = dataset.InputConfig(data_dir=data_dir, batch_size=4, num_epochs=1,
                               bucket_boundaries=(2, 4), window_batches=8, seed=1)
  batches = _batches(_make(config, max_length=8, training=samples.LastItem()))
  bucket_width = lambda n: 2 if n <= 2 else 4 if n <= 4 else 8
  for batch in batches:
    widths = {bucket_width(n) for n in batch[base.HISTORY_LENGTH]}
    assert widths == {batch[base.HISTORY].shape[1]}
  assert sorted(b[base.HISTORY].shape[1] for b in batches) == [2, 2, 4, 4, 8, 8]


def test_without_bucketing_histories_have_max_length_columns(tmp_path):
  data_dir = _write(tmp_path, {"train": [([1, 2], 0), ([3, 4, 5], 0)]})
  config = dataset.InputConfig(data_dir=data_dir, bucketing=False, num_epochs=1)
  for batch in _batches(_make(config, max_length=6)):
    assert batch[base.HISTORY].shape[1] == 6


def test_next_k_labels_keep_their_width(tmp_path):
  # k = 3: [7] -> [8, 9, PAD], [7, 8] -> [9, PAD, PAD].
  data_dir = _write(tmp_path, {"train": [([7, 8, 9], 0)]})
  [batch] = _batches(_make(_in_order(data_dir), max_length=4, training=samples.NextK(3)))
  np.testing.assert_array_equal(batch[base.LABELS], [[8, 9, PAD], [9, PAD, PAD]])


def test_evaluation_split(tmp_path):
  # valid: u0 input [1, 2, 3] target 4; u1 input [5] targets [6, 7]. max_length 2, so
  # u0's history is [2, 3] while eval_exclude keeps all of [1, 2, 3]. Boundaries for
  # max_length 2 are (1, 2): history and targets (longest 2) pad to 2 columns, the
  # exclusions (longest 3, past the last boundary) to the next multiple of 2, i.e. 4.
  # Bucketing puts u1 (history length 1, bucket 1) before u0 (length 2, bucket 2).
  data_dir = _write(tmp_path, {"valid": [([1, 2, 3, 4], 3), ([5, 6, 7], 1)]})
  [batch] = _batches(_make(dataset.eval_config(data_dir, "valid"), max_length=2))
  np.testing.assert_array_equal(batch[base.HISTORY], [[5, PAD], [2, 3]])
  np.testing.assert_array_equal(batch[base.HISTORY_LENGTH], [1, 2])
  np.testing.assert_array_equal(batch[base.EVAL_TARGETS], [[6, 7], [4, PAD]])
  np.testing.assert_array_equal(batch[base.EVAL_EXCLUDE], [[5, PAD, PAD, PAD], [1, 2, 3, PAD]])


def _pipeline_samples(data_dir, num_pipelines, pipeline_id):
  context = tf.distribute.InputContext(num_input_pipelines=num_pipelines,
                                       input_pipeline_id=pipeline_id,
                                       num_replicas_in_sync=num_pipelines)
  batches = _batches(_make(_in_order(data_dir, batch_size=4), context))
  # Global batch 4 over 2 replicas: 2 per replica.
  assert all(len(b[base.LABELS]) <= 2 for b in batches)
  return _pairs(batches)


@pytest.mark.parametrize("num_shards", [4, 1])
def test_input_pipelines_read_disjoint_shares(tmp_path, num_shards):
  # 8 users with distinct items; pipeline 0 and 1 together see every sample exactly
  # once: by files with 4 shards, by records when there are fewer files than pipelines.
  timelines = [([10 * u, 10 * u + 1, 10 * u + 2], 0) for u in range(8)]
  data_dir = _write(tmp_path, {"train": timelines}, num_shards=num_shards)
  first = _pipeline_samples(data_dir, 2, 0)
  second = _pipeline_samples(data_dir, 2, 1)
  assert not set(first) & set(second)
  assert len(first) == len(second) == 8
  assert sorted(first + second) == sorted(_pairs(_batches(_make(
      _in_order(data_dir, batch_size=4)))))


def test_builds_inside_a_tf_function(tmp_path):
  # ClusterCoordinator.create_per_worker_dataset traces the dataset_fn in a tf.function.
  data_dir = _write(tmp_path, {"train": [([1, 2, 3], 0), ([4, 5], 0)]})

  @tf.function
  def count_labels():
    ds = _make(dataset.InputConfig(data_dir=data_dir, batch_size=2, num_epochs=1))
    return ds.reduce(tf.constant(0, tf.int64),
                     lambda total, batch: total + tf.reduce_sum(batch[base.LABELS]))

  assert count_labels().numpy() == 2 + 3 + 5


def test_all_positions_batches_pad_labels_like_the_history(tmp_path):
  # [1, 2, 3] -> labels [2, 3]; [4, 5] -> [5]; labels pad with PAD, weights with 0.
  data_dir = _write(tmp_path, {"train": [([1, 2, 3], 0), ([4, 5], 0)]})
  [batch] = _batches(_make(_in_order(data_dir), max_length=4, training=samples.AllPositions()))
  np.testing.assert_array_equal(batch[base.HISTORY], [[1, 2, PAD, PAD], [4, PAD, PAD, PAD]])
  np.testing.assert_array_equal(batch[base.LABELS], [[2, 3, PAD, PAD], [5, PAD, PAD, PAD]])
  np.testing.assert_array_equal(batch[base.LABEL_WEIGHTS], [[1, 1, 0, 0], [1, 0, 0, 0]])


def test_empty_split(tmp_path):
  data_dir = _write(tmp_path, {"train": [], "valid": [([1, 2], 1)]})
  with pytest.raises(ValueError, match="Split 'train' .* is empty"):
    _make(dataset.InputConfig(data_dir=data_dir))
  with pytest.raises(FileNotFoundError, match="No TFRecord shards"):
    _make(dataset.InputConfig(data_dir=data_dir, split="test"))


def test_bad_config_values(tmp_path):
  data_dir = _write(tmp_path, {"train": [([1, 2], 0)]})
  with pytest.raises(ValueError, match="batch_size must be positive"):
    _make(dataset.InputConfig(data_dir=data_dir, batch_size=0))
  with pytest.raises(ValueError, match="bucket_boundaries"):
    _make(dataset.InputConfig(data_dir=data_dir, bucket_boundaries=(20, 10)))
  with pytest.raises(ValueError, match="must stay below"):
    _make(dataset.InputConfig(data_dir=data_dir, bucket_boundaries=(10, 60)))
  with pytest.raises(ValueError, match="Unknown split"):
    _make(dataset.InputConfig(data_dir=data_dir, split="dev"))


def test_default_boundaries():
  # ceil(50 / 8), ceil(50 / 4), ceil(50 / 2), 50.
  assert dataset.default_boundaries(50) == (7, 13, 25, 50)
  assert dataset.default_boundaries(2) == (1, 2)
