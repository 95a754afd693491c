"""Writes a prepared dataset directory (layout in `schema`) from a split event log.

Steps: re-index items by descending training count, write the vocabulary and feature
tables, then each split's timelines as sharded TFRecords (encoded in batches by
`example_encoder`), then stats.json. Everything goes to a temporary sibling directory
that is renamed into place at the end (`common.files.replace_directory`), so a failure
never leaves a half-written dataset behind.
"""

import concurrent.futures
import dataclasses
import os
import queue
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from absl import logging

from common import cli
from input_pipeline import example_encoder
from input_pipeline import schema
from input_pipeline.readers.event_log import EventLog, FeatureTable, ranges
from input_pipeline.splits import SplitPlan

# Rows (events + impressions) and users encoded per batch: bounds the encoder's
# temporary memory (about 50 bytes per row) while keeping numpy's per-call overhead small.
_BATCH_ROWS = 1_000_000
_BATCH_RECORDS = 20_000
# Tags and lengths of one record: at most 9 features x (8 bytes of tags and key length,
# a 21-byte key, 4 varint lengths of at most 5 bytes), plus the record header.
_MAX_HEADER_BYTES = 9 * (8 + 21 + 4 * 5) + 6
# Shards written at the same time (the target machine has 2 cores).
_MAX_THREADS = 2


def _id_sort_keys(ids: pa.Array) -> np.ndarray:
  """Sort ranks of raw ids: numeric order when every id is an integer, else string order."""
  try:
    return pc.cast(ids, pa.int64()).to_numpy()
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
    ranks = np.empty(len(ids), np.int64)
    ranks[pc.sort_indices(ids).to_numpy()] = np.arange(len(ids))
    return ranks


def frequency_order(train_counts: np.ndarray, item_ids: pa.Array) -> np.ndarray:
  """Item codes in vocabulary order: descending training count, ties by raw id.

  Args:
    train_counts: int64 `[num_items]` training occurrences per item code.
    item_ids: raw ids `[num_items]`.

  Returns:
    int64 `[num_items]`: entry i is the code of the item that gets index i.
  """
  return np.lexsort((_id_sort_keys(item_ids), -train_counts))


def _write_tsv(path: str, header, columns) -> None:
  """Writes a TSV file from pyarrow/numpy columns without per-row Python work."""
  strings = [pc.cast(pa.array(c) if isinstance(c, np.ndarray) else c, pa.large_string())
             for c in columns]
  def scalar(text):
    return pa.scalar(text, pa.large_string())
  lines = pc.binary_join_element_wise(*strings, scalar("\t"))
  lines = pc.binary_join_element_wise(lines, scalar(""), scalar("\n"))  # line + "\n" + ""
  _, offsets, data = lines.buffers()
  offsets = np.frombuffer(offsets, np.int64)[lines.offset:lines.offset + len(lines) + 1]
  with open(path, "wb") as f:
    f.write(("\t".join(header) + "\n").encode())
    if data is not None:
      f.write(memoryview(data)[offsets[0]:offsets[-1]])


def _check_ids(ids: pa.Array, what: str) -> None:
  """Raw ids go into TSV files and TFRecords: tabs and line breaks would corrupt them."""
  bad = pc.match_substring_regex(ids, "[\t\n\r]")
  if pc.any(bad).as_py():
    raise ValueError(f"The {what} id {ids.filter(bad)[0].as_py()!r} contains a tab or line break; "
                     f"clean the input (ids must be single-line, tab-free strings).")


def _write_feature_vocab(path: str, table: Optional[FeatureTable], counts: Optional[np.ndarray]):
  names = table.names if table is not None else []
  _write_tsv(path, ("index", "feature", "count"),
             [np.arange(len(names)), pa.array(names, pa.string()),
              counts if counts is not None else np.zeros(0, np.int64)])


def _write_item_features(path: str, table: Optional[FeatureTable], num_items: int) -> None:
  if table is None:
    features = pa.array([""] * num_items, pa.string())
  else:
    lists = pa.ListArray.from_arrays(pa.array(table.offsets.astype(np.int32)),
                                     pc.cast(pa.array(table.values), pa.string()))
    features = pc.binary_join(lists, " ")
  _write_tsv(path, ("index", "features"), [np.arange(num_items), features])


def _string_bytes(ids: pa.Array) -> Tuple[np.ndarray, np.ndarray]:
  """(uint8 data, int64 offsets [n + 1]) of a string array, without per-string Python work."""
  ids = pc.cast(ids, pa.large_string())
  _, offsets_buffer, data_buffer = ids.buffers()
  offsets = np.frombuffer(offsets_buffer, np.int64)[ids.offset:ids.offset + len(ids) + 1]
  data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
  return data, offsets


@dataclasses.dataclass
class _EncodedLog:
  """The log's columns encoded once, in one `example_encoder.Arena`, for all splits.

  A split stores a prefix of each user's rows, whose encoding is a prefix of the user's
  bytes: each split only needs, per user and feature, the value count and byte length.

  Attributes:
    arena: the encoded columns back to back (plus the encoder's scratch space).
    kinds: feature name -> INT64 or FLOAT.
    byte_starts: feature name -> int64 `[num_users]` arena position of each user's first row.
    splits: split -> feature name -> `(counts, byte_lengths)`, int64 `[num_users]` each.
    user_ids: int64 `[num_users + 1]` arena positions of the raw user ids (UTF-8).
  """
  arena: example_encoder.Arena
  kinds: Dict[str, str]
  byte_starts: Dict[str, np.ndarray]
  splits: Dict[str, Dict[str, Tuple[np.ndarray, np.ndarray]]]
  user_ids: np.ndarray

  @classmethod
  def build(cls, log: EventLog, offsets: np.ndarray, impression_offsets: np.ndarray,
            user_features: Optional[FeatureTable], plan: SplitPlan,
            num_slots: int) -> "_EncodedLog":
    int64, float32 = example_encoder.INT64, example_encoder.FLOAT
    feedback = log.feedback if log.feedback is not None else np.ones(log.num_events, np.float32)
    if user_features is None:
      user_features = FeatureTable([], np.zeros(log.num_users + 1, np.int64), np.zeros(0, np.int64))
    feature_counts = np.diff(user_features.offsets)
    # feature -> (kind, values, row offsets per user, rows per user in each split)
    columns = {
        schema.ITEMS: (int64, log.items, offsets, plan.ends),
        schema.TIMESTAMPS: (int64, log.timestamps, offsets, plan.ends),
        schema.FEEDBACK: (float32, feedback, offsets, plan.ends),
        schema.IMPRESSIONS: (int64, log.impression_items, impression_offsets, plan.impression_ends),
        schema.IMPRESSION_TIMESTAMPS: (int64, log.impression_timestamps, impression_offsets,
                                       plan.impression_ends),
        schema.USER_FEATURES: (int64, user_features.values, user_features.offsets,
                               {s: feature_counts * (plan.ends[s] > 0) for s in schema.SPLITS}),
    }
    parts, starts, splits = [], {}, {s: {} for s in schema.SPLITS}
    for name, (kind, values, rows, counts) in columns.items():
      encoded = example_encoder.EncodedValues.encode(kind, values)
      parts.append(encoded.buffer)
      positions = np.concatenate([rows[:-1]] + [rows[:-1] + counts[s] for s in schema.SPLITS])
      byte_offsets = encoded.byte_offsets(positions).reshape(1 + len(schema.SPLITS), -1)
      starts[name] = byte_offsets[0]
      for i, split in enumerate(schema.SPLITS):
        splits[split][name] = (counts[split], byte_offsets[i + 1] - byte_offsets[0])
    id_bytes, id_offsets = _string_bytes(log.user_ids)
    arena = example_encoder.Arena(parts + [id_bytes], num_slots=num_slots,
                                  slot_bytes=_BATCH_RECORDS * _MAX_HEADER_BYTES)
    del parts
    byte_starts = {name: start + base for (name, start), base in zip(starts.items(), arena.bases)}
    return cls(arena, {name: column[0] for name, column in columns.items()}, byte_starts, splits,
               id_offsets + arena.bases[len(columns)])


def _write_batch(tf_writer, encoded: _EncodedLog, split: str, target_starts: np.ndarray,
                 batch: np.ndarray, slot: int) -> None:
  """Encodes and writes the `split` timelines of the users `batch` (codes)."""
  columns = {name: example_encoder.Column(encoded.kinds[name], None,
                                          encoded.byte_starts[name][batch], byte_lengths[batch],
                                          counts[batch])
             for name, (counts, byte_lengths) in encoded.splits[split].items()}
  ids = encoded.user_ids
  columns[schema.USER_ID] = example_encoder.Column(
      example_encoder.BYTES, None, ids[batch], ids[batch + 1] - ids[batch],
      np.ones(len(batch), np.int64))
  columns[schema.TARGET_START] = example_encoder.int64_column(target_starts[batch],
                                                              np.ones(len(batch), np.int64))
  buffer, record_offsets = example_encoder.encode_examples(columns, encoded.arena, slot)
  data = buffer.tobytes()
  for begin, end in zip(record_offsets[:-1].tolist(), record_offsets[1:].tolist()):
    tf_writer.write(data[begin:end])


def _write_shard(path: str, encoded: _EncodedLog, split: str, plan: SplitPlan,
                 users: np.ndarray, slots: "queue.Queue[int]",
                 advance: Callable[[int], None]) -> None:
  """Writes the `split` timelines of `users` to one TFRecord file, batch by batch, passing
  the rows (events and impressions) of each batch to `advance`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only for TFRecord writing)

  rows = np.cumsum(plan.ends[split][users] + plan.impression_ends[split][users])
  slot = slots.get()
  try:
    with tf.io.TFRecordWriter(path) as tf_writer:
      first = 0
      while first < len(users):
        # About _BATCH_ROWS rows and at most _BATCH_RECORDS users (at least one).
        done = rows[first - 1] if first else 0
        stop = int(np.searchsorted(rows, done + _BATCH_ROWS, side="right"))
        stop = min(max(stop, first + 1), first + _BATCH_RECORDS)
        _write_batch(tf_writer, encoded, split, plan.target_starts[split], users[first:stop], slot)
        advance(int(rows[stop - 1] - done))
        first = stop
  finally:
    slots.put(slot)
  logging.info("Wrote %s/%s: %d users, %d events.", split, os.path.basename(path), len(users),
               int(plan.ends[split][users].sum()))


def _shard_users(plan: SplitPlan, split: str, num_shards: int) -> List[np.ndarray]:
  """The users of each shard: contiguous ranges with about equal rows per shard."""
  users = np.flatnonzero(plan.ends[split] > 0)
  rows = np.cumsum(plan.ends[split][users] + plan.impression_ends[split][users])
  total = int(rows[-1]) if len(users) else 0
  bounds = np.searchsorted(rows, total * np.arange(1, num_shards) / num_shards, side="right")
  return np.split(users, bounds)


def _split_stats(plan: SplitPlan, split: str, num_shards: int) -> Dict[str, Any]:
  users = np.flatnonzero(plan.ends[split] > 0)
  lengths = plan.ends[split][users]
  return {"num_users": len(users), "num_events": int(lengths.sum()),
          "num_targets": int((lengths - plan.target_starts[split][users]).sum()),
          "num_impressions": int(plan.impression_ends[split][users].sum()),
          "num_shards": num_shards,
          "avg_length": float(lengths.mean()) if len(users) else 0.0,
          "max_length": int(lengths.max()) if len(users) else 0}


def _write_splits(directory: str, encoded: _EncodedLog, plan: SplitPlan, num_shards: int,
                  num_threads: int) -> None:
  """Writes every split's shards, `num_threads` shards at a time (numpy releases the GIL
  in the heavy steps), with progress over the rows written."""
  slots = queue.Queue()
  for slot in range(num_threads):
    slots.put(slot)
  total = sum(int(plan.ends[s].sum() + plan.impression_ends[s].sum()) for s in schema.SPLITS)
  with cli.progress("Writing shards", total, "rows") as advance, \
       concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    jobs = []
    for split in schema.SPLITS:
      os.makedirs(os.path.join(directory, split))
      for shard, users in enumerate(_shard_users(plan, split, num_shards)):
        path = os.path.join(directory, split, schema.shard_name(shard, num_shards))
        jobs.append(pool.submit(_write_shard, path, encoded, split, plan, users, slots, advance))
    try:
      for job in jobs:
        job.result()  # re-raises a failed shard's error
    except BaseException:
      for job in jobs:
        job.cancel()  # do not write the remaining shards of a failed dataset
      raise


def write_dataset(directory: str, log: EventLog, *, offsets: np.ndarray,
                  impression_offsets: np.ndarray, plan: SplitPlan, num_shards: int,
                  stats: Dict[str, Any]) -> Dict[str, Any]:
  """Writes the dataset files into the (empty) `directory`.

  Re-indexes `log.items` / `log.impression_items` (codes become vocabulary indices), so
  the log must not be used for anything else afterwards.

  Args:
    directory: where to write (normally the temporary directory of `replace_directory`).
    log: the filtered log, sorted into timelines (`sort_into_timelines`).
    offsets: `[num_users + 1]` event offsets per user.
    impression_offsets: `[num_users + 1]` impression offsets per user.
    plan: the split plan.
    num_shards: TFRecord shards per split.
    stats: extra entries for stats.json (dataset, source, filters, ...).

  Returns:
    The statistics written to stats.json.
  """
  if num_shards < 1:
    raise ValueError(f"num_shards must be at least 1, got {num_shards}.")
  if not plan.ends["train"].any():
    raise ValueError(f"{log.source}: the train split is empty under {plan.info}; check the split "
                     f"flags (cut-off times, fractions) against the data.")
  _check_ids(log.item_ids, "item")
  _check_ids(log.user_ids, "user")
  started = time.time()
  train_rows = ranges(offsets[:-1], plan.ends["train"])
  train_counts = np.bincount(log.items[train_rows], minlength=log.num_items)
  del train_rows
  order = frequency_order(train_counts, log.item_ids)
  index_of_code = np.empty(log.num_items, np.int64)
  index_of_code[order] = np.arange(log.num_items)
  log.items = index_of_code[log.items]
  log.impression_items = index_of_code[log.impression_items]
  _write_tsv(os.path.join(directory, schema.VOCAB_FILE), ("index", "item_id", "count"),
             [np.arange(log.num_items), log.item_ids.take(pa.array(order)), train_counts[order]])

  item_features = feature_counts = None
  if log.item_features is not None:
    item_features, feature_counts = log.item_features.take(order).by_count()
  _write_item_features(os.path.join(directory, schema.ITEM_FEATURES_FILE), item_features,
                       log.num_items)
  _write_feature_vocab(os.path.join(directory, schema.ITEM_FEATURE_VOCAB_FILE), item_features,
                       feature_counts)
  user_features = user_counts = None
  if log.user_features is not None:
    user_features, user_counts = log.user_features.by_count()
  _write_feature_vocab(os.path.join(directory, schema.USER_FEATURE_VOCAB_FILE), user_features,
                       user_counts)

  num_threads = min(_MAX_THREADS, os.cpu_count() or 1)
  encoded = _EncodedLog.build(log, offsets, impression_offsets, user_features, plan, num_threads)
  _write_splits(directory, encoded, plan, num_shards, num_threads)
  del encoded
  split_stats = {split: _split_stats(plan, split, num_shards) for split in schema.SPLITS}
  lengths = np.diff(offsets)
  stats = dict(
      stats,
      split=plan.info["protocol"],
      split_config=plan.info,
      num_items=log.num_items,
      num_items_in_train=int((train_counts > 0).sum()),
      num_users=log.num_users,
      num_events=log.num_events,
      num_impressions=log.num_impressions,
      avg_events_per_user=float(lengths.mean()),
      max_events_per_user=int(lengths.max()),
      has_timestamps=log.has_timestamps,
      has_feedback=log.feedback is not None,
      has_impressions=log.num_impressions > 0,
      num_item_features=len(item_features.names) if item_features is not None else 0,
      num_user_features=len(user_features.names) if user_features is not None else 0,
      splits=split_stats)
  if log.has_timestamps:
    stats["time_range"] = [int(log.timestamps.min()), int(log.timestamps.max())]
  schema.write_stats(directory, stats)
  logging.info("Wrote %s in %.1f s: %d users, %d items, %d events.", directory,
               time.time() - started, log.num_users, log.num_items, log.num_events)
  return schema.read_stats(directory)
