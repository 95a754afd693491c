"""The one schema of a prepared dataset: files, TFRecord features, special ids.

The writer (`prepare`), the parser (`dataset`) and the export signatures all import
this module, so a feature is named and typed in exactly one place.

A prepared dataset directory holds:

    stats.json                  format version, statistics, split protocol, feature flags
    vocab.tsv                   item index, raw item id, training count (index order)
    item_features.tsv           item index, space-separated item-feature ids (may be empty)
    item_feature_vocab.tsv      feature index, feature name, count
    user_feature_vocab.tsv      feature index, feature name, count
    train/part-SSSSS-of-NNNNN.tfrecord
    valid/part-SSSSS-of-NNNNN.tfrecord
    test/part-SSSSS-of-NNNNN.tfrecord

Each TFRecord holds one `tf.train.Example` per user timeline (see `FEATURES`).

Item ids. Items are re-indexed by descending training frequency, so index 0 is the
most frequent item: `tf.random.log_uniform_candidate_sampler` assumes exactly that.
With `num_items` real items, `oov_id(num_items) == num_items` stands for items never
seen in training and `pad_id(num_items) == num_items + 1` pads sequences. Embedding
tables have `embedding_rows(num_items) == num_items + 2` rows; samplers and the
full-catalog evaluation only ever touch rows `[0, num_items)`.

Splits. Every split stores whole timelines up to its last event; `target_start` says
where that split's prediction targets begin:
    train: targets start at 0 (every event is trainable; builders pick prefixes).
    valid/test: items[:target_start] is the model input, items[target_start:] the
        targets. For leave-last-one-out, test holds the full timeline with
        target_start = len - 1 and valid drops the last event with target_start = len - 2.
"""

import json
import os
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

from common import files

FORMAT_VERSION = 1

STATS_FILE = "stats.json"
VOCAB_FILE = "vocab.tsv"
ITEM_FEATURES_FILE = "item_features.tsv"
ITEM_FEATURE_VOCAB_FILE = "item_feature_vocab.tsv"
USER_FEATURE_VOCAB_FILE = "user_feature_vocab.tsv"
SPLITS = ("train", "valid", "test")

# Split protocols (stats.json "split"):
LEAVE_LAST_ONE_OUT = "leave_last_one_out"  # SASRec / SINE / S3-Rec
TEMPORAL = "temporal"  # global time cut-offs, SDM / XDM
HELD_OUT_USERS = "held_out_users"  # ComiRec: unseen users, first 80% input, rest targets
SPLIT_PROTOCOLS = (LEAVE_LAST_ONE_OUT, TEMPORAL, HELD_OUT_USERS)

# TFRecord feature names. Sequences are aligned: items[i] happened at timestamps[i]
# with feedback[i]; impressions[j] (shown, not clicked) at impression_timestamps[j].
USER_ID = "user_id"  # bytes: raw user id
ITEMS = "items"  # int64 list: item indices, chronological
TIMESTAMPS = "timestamps"  # int64 list: unix seconds, or positions 0..n-1 for order-only data
FEEDBACK = "feedback"  # float list: rating / watch ratio / 1.0 when the log has none
IMPRESSIONS = "impressions"  # int64 list: impressed-but-unclicked item indices
IMPRESSION_TIMESTAMPS = "impression_timestamps"  # int64 list
USER_FEATURES = "user_features"  # int64 list: indices into user_feature_vocab.tsv
TARGET_START = "target_start"  # int64 scalar: first target position (see module doc)

def _is_our_stats(path: str) -> bool:
  try:
    with open(path) as f:
      return "format_version" in json.load(f)
  except (OSError, ValueError, TypeError):
    return False


# What `prepare --overwrite` may replace: a directory with our stats.json and nothing
# but the entries a prepared data set has (common/files.py).
DATASET_OWNERSHIP = files.Ownership(
    what="prepared data set", marker=STATS_FILE,
    entries=frozenset({STATS_FILE, VOCAB_FILE, ITEM_FEATURES_FILE, ITEM_FEATURE_VOCAB_FILE,
                       USER_FEATURE_VOCAB_FILE, *SPLITS}),
    is_marker_ours=_is_our_stats)

SEQUENCE_FEATURES = (ITEMS, TIMESTAMPS, FEEDBACK)
INT_LIST_FEATURES = (ITEMS, TIMESTAMPS, IMPRESSIONS, IMPRESSION_TIMESTAMPS, USER_FEATURES)
FLOAT_LIST_FEATURES = (FEEDBACK,)


def oov_id(num_items: int) -> int:
  """Index of items unseen in training."""
  return num_items


def pad_id(num_items: int) -> int:
  """Index that pads item sequences; never a real item, never sampled."""
  return num_items + 1


def embedding_rows(num_items: int) -> int:
  """Rows of an item embedding table: real items, then OOV, then padding."""
  return num_items + 2


def split_dir(data_dir: str, split: str) -> str:
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
  return os.path.join(data_dir, split)


def shard_name(index: int, num_shards: int) -> str:
  return f"part-{index:05d}-of-{num_shards:05d}.tfrecord"


def split_files(data_dir: str, split: str) -> list:
  """Sorted TFRecord shard paths of one split; a clear error when there are none."""
  directory = split_dir(data_dir, split)
  files = sorted(
      os.path.join(directory, f) for f in (os.listdir(directory) if os.path.isdir(directory) else [])
      if f.endswith(".tfrecord"))
  if not files:
    raise FileNotFoundError(
        f"No TFRecord shards in {directory!r}. Is {data_dir!r} a dataset directory written by "
        f"`python -m input_pipeline.prepare --output_dir=...`?")
  return files


def check_shards(data_dir: str, stats: Mapping[str, Any]) -> None:
  """Raises FileNotFoundError unless every shard that stats.json lists is present.

  A deleted shard would otherwise go unnoticed (a split read from the shards that are
  left); the trainer checks at start, before any work.
  """
  missing = []
  for split, split_stats in sorted(stats.get("splits", {}).items()):
    num_shards = split_stats.get("num_shards")
    if not num_shards or split not in SPLITS:
      continue
    for shard in range(num_shards):
      path = os.path.join(split_dir(data_dir, split), shard_name(shard, num_shards))
      if not os.path.exists(path):
        missing.append(os.path.relpath(path, data_dir))
  if missing:
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    raise FileNotFoundError(
        f"The data set {data_dir!r} lacks {len(missing)} of the shards its {STATS_FILE} lists "
        f"({shown}). Restore them, or re-run prepare to rewrite the data set.")


def encode_timeline(
    *,
    user_id: str,
    items: Sequence[int],
    timestamps: Sequence[int],
    feedback: Optional[Sequence[float]] = None,
    impressions: Sequence[int] = (),
    impression_timestamps: Sequence[int] = (),
    user_features: Sequence[int] = (),
    target_start: int = 0,
) -> bytes:
  """Serializes one user timeline as a `tf.train.Example` (the reference encoder).

  Args:
    user_id: raw user id.
    items: item indices in chronological order, `[n]`.
    timestamps: `[n]`, non-decreasing.
    feedback: `[n]` floats; all ones when omitted.
    impressions: impressed-but-unclicked item indices `[m]`.
    impression_timestamps: `[m]`.
    user_features: user feature indices `[f]`.
    target_start: first target position (see the module docstring).

  Returns:
    The serialized example.
  """
  # Imported here so that readers and the stats code stay importable without TF.
  import tensorflow as tf

  n = len(items)
  if n == 0:
    raise ValueError(f"User {user_id!r} has an empty timeline; prepare drops such users.")
  if len(timestamps) != n:
    raise ValueError(f"User {user_id!r}: {n} items but {len(timestamps)} timestamps.")
  feedback = [1.0] * n if feedback is None else list(feedback)
  if len(feedback) != n:
    raise ValueError(f"User {user_id!r}: {n} items but {len(feedback)} feedback values.")
  if len(impressions) != len(impression_timestamps):
    raise ValueError(f"User {user_id!r}: {len(impressions)} impressions but "
                     f"{len(impression_timestamps)} impression timestamps.")
  if not 0 <= target_start <= n:
    raise ValueError(f"User {user_id!r}: target_start {target_start} outside [0, {n}].")

  def ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

  feature = {
      USER_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(user_id).encode()])),
      ITEMS: ints(items),
      TIMESTAMPS: ints(timestamps),
      FEEDBACK: tf.train.Feature(float_list=tf.train.FloatList(value=feedback)),
      IMPRESSIONS: ints(impressions),
      IMPRESSION_TIMESTAMPS: ints(impression_timestamps),
      USER_FEATURES: ints(user_features),
      TARGET_START: ints([target_start]),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def feature_spec() -> Dict[str, Any]:
  """`tf.io.parse_example` spec: lists come back as `tf.RaggedTensor`s `[batch, None]`."""
  import tensorflow as tf

  spec = {USER_ID: tf.io.FixedLenFeature([], tf.string), TARGET_START: tf.io.FixedLenFeature([], tf.int64)}
  for name in INT_LIST_FEATURES:
    spec[name] = tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64)
  for name in FLOAT_LIST_FEATURES:
    spec[name] = tf.io.RaggedFeature(tf.float32, row_splits_dtype=tf.int64)
  return spec


def parse_timelines(serialized):
  """Parses a `[batch]` string tensor of serialized timelines into a feature dict."""
  import tensorflow as tf

  return tf.io.parse_example(serialized, feature_spec())


def write_stats(data_dir: str, stats: Mapping[str, Any]) -> None:
  with open(os.path.join(data_dir, STATS_FILE), "w") as f:
    json.dump({"format_version": FORMAT_VERSION, **stats}, f, indent=2, sort_keys=True)


# Entries every reader of stats.json relies on.
REQUIRED_STATS = ("format_version", "split", "num_items")


def read_stats(data_dir: str) -> Dict[str, Any]:
  """Reads stats.json and checks the format version.

  Keys every dataset has: format_version, dataset, split, num_items, num_users,
  num_events, has_timestamps, has_feedback, has_impressions, num_item_features,
  num_user_features, splits (per split: num_users, num_events, num_targets, num_shards).
  """
  path = os.path.join(data_dir, STATS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path!r} not found: {data_dir!r} is not a prepared dataset directory. Create one with "
        f"`python -m input_pipeline.prepare --dataset=synthetic --output_dir={data_dir}`.")
  with open(path) as f:
    try:
      stats = json.load(f)
    except ValueError as e:
      raise ValueError(f"{path} is not valid JSON ({e}); the file is damaged. Re-run prepare "
                       f"to rewrite the data set.") from None
  if not isinstance(stats, dict):
    raise ValueError(f"{path} holds a JSON {type(stats).__name__}, expected an object. Re-run "
                     f"prepare to rewrite the data set.")
  version = stats.get("format_version")
  if version != FORMAT_VERSION:
    raise ValueError(f"{path!r} has format version {version!r}, this code reads version "
                     f"{FORMAT_VERSION}. Re-run prepare to rewrite the dataset.")
  missing = [key for key in REQUIRED_STATS if key not in stats]
  if missing:
    raise ValueError(f"{path} lacks the entries {missing}; the file is damaged or was not "
                     f"written by prepare. Re-run prepare to rewrite the data set.")
  if not isinstance(stats["num_items"], int) or stats["num_items"] < 1:
    raise ValueError(f"{path}: num_items must be a positive integer, got "
                     f"{stats['num_items']!r}. Re-run prepare to rewrite the data set.")
  return stats


def read_vocab_rows(data_dir: str) -> list:
  """`(raw_id, count)` per item index, with the header and the index order checked."""
  path = os.path.join(data_dir, VOCAB_FILE)
  rows = []
  with open(path) as f:
    header = f.readline()
    if header.rstrip("\n").split("\t") != ["index", "item_id", "count"]:
      raise ValueError(f"{path!r}: expected the header 'index<TAB>item_id<TAB>count', got {header!r}.")
    for line_number, line in enumerate(f, start=2):
      fields = line.rstrip("\n").split("\t")
      if len(fields) != 3 or fields[0] != str(len(rows)) or not fields[2].isdigit():
        raise ValueError(f"{path}:{line_number}: expected 'index<TAB>item_id<TAB>count' with index "
                         f"{len(rows)}, got {line[:100]!r}. Re-run prepare to rewrite the data set.")
      rows.append((fields[1], int(fields[2])))
  return rows


def read_vocab(data_dir: str) -> list:
  """Raw item ids in index order (row i of vocab.tsv is item index i)."""
  return [raw_id for raw_id, _ in read_vocab_rows(data_dir)]


def read_vocab_counts(data_dir: str) -> list:
  """Training counts in index order (row i of vocab.tsv is item index i)."""
  return [count for _, count in read_vocab_rows(data_dir)]


def read_item_features(data_dir: str, num_items: int) -> list:
  """Per item index, its list of item-feature ids (empty lists when there are none)."""
  path = os.path.join(data_dir, ITEM_FEATURES_FILE)
  features = [[] for _ in range(num_items)]
  if not os.path.exists(path):
    return features
  with open(path) as f:
    f.readline()  # header: index<TAB>features
    for line in f:
      index, values = line.rstrip("\n").split("\t")
      features[int(index)] = [int(v) for v in values.split()] if values else []
  return features


def write_tsv(path: str, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
  with open(path, "w") as f:
    f.write("\t".join(header) + "\n")
    for row in rows:
      f.write("\t".join(str(v) for v in row) + "\n")
