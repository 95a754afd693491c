"""A tiny, learnable dataset directory for trainer tests, written with `schema` only.

Items form `num_items // group` groups of `group` consecutive ids; a user walks one
group cyclically (item g*group + (start + t) % group at step t), so the next item is
always the current one plus one within the group: a model that learns this gets the
next item right every time, while popularity gets it right about 1/num_items of the
time. Splits are leave-last-one-out as `input_pipeline.schema` describes.
"""

import collections
import os

import numpy as np

from input_pipeline import schema
import tensorflow as tf


def write(data_dir: str, *, num_items: int = 40, group: int = 8, num_users: int = 96,
          seed: int = 0, num_shards: int = 2) -> str:
  """Writes the dataset into `data_dir` (created) and returns it."""
  rng = np.random.default_rng(seed)
  timelines = []
  for user in range(num_users):
    first = int(rng.integers(num_items // group)) * group
    start = int(rng.integers(group))
    length = int(rng.integers(5, 13))
    timelines.append([first + (start + t) % group for t in range(length)])
  counts = collections.Counter(i for items in timelines for i in items[:-2])
  # Index order = descending training count, as prepare writes it.
  order = sorted(range(num_items), key=lambda i: (-counts[i], i))
  index = {item: position for position, item in enumerate(order)}
  os.makedirs(data_dir, exist_ok=True)
  schema.write_tsv(os.path.join(data_dir, schema.VOCAB_FILE), ("index", "item_id", "count"),
                   [(index[i], f"item{i}", counts[i]) for i in order])
  split_stats = {}
  for split, cut in (("train", 2), ("valid", 1), ("test", 0)):
    directory = schema.split_dir(data_dir, split)
    os.makedirs(directory, exist_ok=True)
    writers = [tf.io.TFRecordWriter(os.path.join(directory, schema.shard_name(s, num_shards)))
               for s in range(num_shards)]
    events = targets = 0
    for user, items in enumerate(timelines):
      kept = [index[i] for i in items[:len(items) - cut]]
      target_start = 0 if split == "train" else len(kept) - 1
      writers[user % num_shards].write(schema.encode_timeline(
          user_id=f"user{user}", items=kept, timestamps=list(range(len(kept))),
          target_start=target_start))
      events += len(kept)
      targets += len(kept) - target_start
    for writer in writers:
      writer.close()
    split_stats[split] = {"num_users": num_users, "num_events": events, "num_targets": targets,
                          "num_shards": num_shards}
  schema.write_stats(data_dir, {
      "dataset": "tiny", "split": schema.LEAVE_LAST_ONE_OUT, "num_items": num_items,
      "num_users": num_users, "num_events": sum(len(t) for t in timelines),
      "has_timestamps": False, "has_feedback": False, "has_impressions": False,
      "num_item_features": 0, "num_user_features": 0, "splits": split_stats})
  return data_dir
