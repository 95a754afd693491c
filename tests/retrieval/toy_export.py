"""A tiny SavedModel with exactly the export contract (docs/architecture.md section 5).

Stands in for `trainer/export.py` in the retrieval tests. Its user model has two
interest vectors, so that the artifact's per-interest merge is exercised:
    user_vectors[:, 0] = mean of the history's item embeddings (unknown ids count as 0)
    user_vectors[:, 1] = embedding of the last history item
Timestamps are accepted and ignored. Items may carry a bias (added to every score) and
training counts (the popular fallback orders by them).
"""

import json
import os

import retrieval  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf


class ToyExport(tf.Module):

  def __init__(self, item_ids, embeddings, bias, counts):
    super().__init__()
    num_items, dim = embeddings.shape
    self.item_ids = tf.Variable(item_ids, trainable=False)
    self.bias = tf.Variable(np.asarray(bias, np.float32))
    self.counts = tf.Variable(np.asarray(counts, np.float32))
    # Row num_items is the all-zero vector of unknown ids and padding.
    self.table = tf.Variable(np.concatenate([embeddings, np.zeros([1, dim])]).astype(np.float32))
    self.lookup = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(item_ids, tf.range(num_items, dtype=tf.int64)),
        default_value=num_items)

  @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history"),
                                tf.TensorSpec([None, None], tf.int64, name="history_timestamps")])
  def serve(self, history, history_timestamps):
    del history_timestamps
    indices = self.lookup.lookup(history)
    vectors = tf.gather(self.table, indices)  # [batch, len, dim]
    length = tf.reduce_sum(tf.cast(history != "", tf.int32), axis=1)  # [batch]
    mean = tf.reduce_sum(vectors, axis=1) / tf.cast(tf.maximum(length, 1), tf.float32)[:, None]
    last = tf.gather(vectors, tf.maximum(length - 1, 0), batch_dims=1)
    known = tf.reduce_sum(tf.cast(indices < self.table.shape[0] - 1, tf.int64), axis=1)
    return {"user_vectors": tf.stack([mean, last], axis=1),  # [batch, 2, dim]
            "history_length": known,
            "unknown_items": tf.cast(length, tf.int64) - known}

  @tf.function(input_signature=[])
  def items(self):
    return {"item_ids": self.item_ids.read_value(), "embeddings": self.table[:-1],
            "item_bias": self.bias.read_value(), "item_counts": self.counts.read_value()}


def write_toy_export(export_root: str, item_ids, embeddings, timestamp: int = 1_700_000_000,
                     max_length: int = 5, data_dir: str = "", bias=None, counts=None) -> str:
  """Writes EXPORT_ROOT/<timestamp>/ like the trainer does; returns that path.

  `data_dir` (the data set trained on) goes into export_meta.json when given; `bias`
  defaults to zeros, `counts` to descending counts (item 0 the most popular).
  """
  num_items = len(item_ids)
  bias = np.zeros(num_items) if bias is None else bias
  counts = np.arange(num_items, 0, -1) if counts is None else counts
  module = ToyExport(np.asarray(item_ids), np.asarray(embeddings, np.float32), bias, counts)
  path = os.path.join(export_root, str(timestamp))
  tf.saved_model.save(module, path, signatures={"serving_default": module.serve,
                                                "item_embeddings": module.items})
  os.makedirs(os.path.join(path, "assets.extra"))
  with open(os.path.join(path, "assets.extra", "export_meta.json"), "w") as f:
    json.dump({"model": "toy", "num_items": len(item_ids), "dim": int(embeddings.shape[1]),
               "max_length": max_length, **({"data_dir": data_dir} if data_dir else {})}, f)
  return path


def toy_user_vectors(histories, item_ids, embeddings) -> np.ndarray:
  """The numpy twin of `ToyExport.serve` for unpadded, known histories: `[batch, 2, dim]`."""
  row = {item: i for i, item in enumerate(item_ids)}
  return np.stack([np.stack([embeddings[[row[i] for i in h]].mean(axis=0), embeddings[row[h[-1]]]])
                   for h in histories])
