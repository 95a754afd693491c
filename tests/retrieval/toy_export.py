"""A tiny SavedModel with exactly the export contract (docs/architecture.md section 5).

Stands in for `trainer/export.py` in the retrieval tests. Its user model has two
interest vectors, so that the artifact's per-interest merge is exercised:
    user_vectors[:, 0] = mean of the history's item embeddings (unknown ids count as 0)
    user_vectors[:, 1] = embedding of the last history item
Timestamps are accepted and ignored.
"""

import json
import os

import retrieval  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf


class ToyExport(tf.Module):

  def __init__(self, item_ids, embeddings):
    super().__init__()
    num_items, dim = embeddings.shape
    self.item_ids = tf.Variable(item_ids, trainable=False)
    # Row num_items is the all-zero vector of unknown ids and padding.
    self.table = tf.Variable(np.concatenate([embeddings, np.zeros([1, dim])]).astype(np.float32))
    self.lookup = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(item_ids, tf.range(num_items, dtype=tf.int64)),
        default_value=num_items)

  @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history"),
                                tf.TensorSpec([None, None], tf.int64, name="history_timestamps")])
  def serve(self, history, history_timestamps):
    del history_timestamps
    vectors = tf.gather(self.table, self.lookup.lookup(history))  # [batch, len, dim]
    length = tf.reduce_sum(tf.cast(history != "", tf.int32), axis=1)  # [batch]
    mean = tf.reduce_sum(vectors, axis=1) / tf.cast(tf.maximum(length, 1), tf.float32)[:, None]
    last = tf.gather(vectors, tf.maximum(length - 1, 0), batch_dims=1)
    return {"user_vectors": tf.stack([mean, last], axis=1)}  # [batch, 2, dim]

  @tf.function(input_signature=[])
  def items(self):
    return {"item_ids": self.item_ids.read_value(), "embeddings": self.table[:-1]}


def write_toy_export(export_root: str, item_ids, embeddings, timestamp: int = 1_700_000_000,
                     max_length: int = 5, data_dir: str = "") -> str:
  """Writes EXPORT_ROOT/<timestamp>/ like the trainer does; returns that path.

  `data_dir` (the data set trained on) goes into export_meta.json when given.
  """
  module = ToyExport(np.asarray(item_ids), np.asarray(embeddings, np.float32))
  path = os.path.join(export_root, str(timestamp))
  tf.saved_model.save(module, path, signatures={"serving_default": module.serve,
                                                "item_embeddings": module.items})
  os.makedirs(os.path.join(path, "assets.extra"))
  with open(os.path.join(path, "assets.extra", "export_meta.json"), "w") as f:
    json.dump({"model": "toy", "num_items": len(item_ids), "dim": int(embeddings.shape[1]),
               "max_length": max_length, **({"data_dir": data_dir} if data_dir else {})}, f)
  return path


def toy_user_vectors(histories, item_ids, embeddings) -> np.ndarray:
  """The numpy twin of `ToyExport.serve` for unpadded histories: `[batch, 2, dim]`."""
  row = {item: i for i, item in enumerate(item_ids)}
  return np.stack([np.stack([embeddings[[row[i] for i in h]].mean(axis=0), embeddings[row[h[-1]]]])
                   for h in histories])
