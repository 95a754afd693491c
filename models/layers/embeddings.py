"""Item and position embeddings for padded item sequences.

Item ids follow `input_pipeline.schema`: real items are `[0, num_items)`, then the OOV
row `num_items` and the padding row `num_items + 1`. Sequences are left-aligned: the
real items come first (oldest to newest) and `pad_id` fills the rest.
"""

import tensorflow as tf
import tf_keras

from input_pipeline import schema


class ItemEmbedding(tf_keras.layers.Layer):
  """The item table: one variable `[embedding_rows(num_items), dim]`.

  One variable (not one per id range) so that ParameterServerStrategy's variable
  partitioner can shard it; lookups use `tf.nn.embedding_lookup`, which accepts the
  resulting `ShardedVariable`. The same table scores items in the loss when a model
  shares input and output embeddings.

  The default initializer draws rows with standard deviation `1 / sqrt(dim)`, so an
  item vector has norm about 1 whatever the catalog size (Glorot would shrink rows as
  the catalog grows, since it counts the number of rows as a fan).
  """

  def __init__(self, num_items: int, dim: int, initializer=None, **kwargs):
    super().__init__(**kwargs)
    if num_items < 1 or dim < 1:
      raise ValueError(
          f"ItemEmbedding needs num_items >= 1 and dim >= 1, got {num_items} and {dim}.")
    self.num_items = num_items
    self.dim = dim
    self.pad_id = schema.pad_id(num_items)
    self.initializer = tf_keras.initializers.get(
        initializer or tf_keras.initializers.TruncatedNormal(stddev=dim**-0.5))

  def build(self, input_shape=None):
    self.embeddings = self.add_weight(
        name="embeddings",
        shape=[schema.embedding_rows(self.num_items), self.dim],
        initializer=self.initializer)
    super().build(input_shape)

  def call(self, ids):
    """`[...]` int item ids -> `[..., dim]` embeddings (padding rows included)."""
    return tf.nn.embedding_lookup(self.embeddings, ids)

  def padding_mask(self, ids):
    """`[...]` bool, True at real (non-padding) positions."""
    return tf.not_equal(ids, tf.cast(self.pad_id, ids.dtype))

  def get_config(self):
    return {**super().get_config(), "num_items": self.num_items, "dim": self.dim,
            "initializer": tf_keras.initializers.serialize(self.initializer)}


class RecencyPositionEmbedding(tf_keras.layers.Layer):
  """Trainable position embeddings indexed by recency: the newest item is position 0.

  For a left-aligned sequence of `length` real items, item `t` gets position
  `length - 1 - t`, so the most recent item always has the same embedding whatever
  the sequence length or the amount of padding. (SASRec gets the same effect by
  right-aligning its sequences and indexing positions from the left.) Padding
  positions get position 0; models mask them anyway.
  """

  def __init__(self, max_length: int, dim: int, initializer="glorot_uniform", **kwargs):
    super().__init__(**kwargs)
    if max_length < 1:
      raise ValueError(f"max_length must be >= 1, got {max_length}.")
    self.max_length = max_length
    self.dim = dim
    self.initializer = tf_keras.initializers.get(initializer)

  def build(self, input_shape=None):
    self.embeddings = self.add_weight(
        name="embeddings", shape=[self.max_length, self.dim], initializer=self.initializer)
    super().build(input_shape)

  def call(self, mask):
    """Position embeddings for a padded batch.

    Args:
      mask: `[batch, seq_len]` bool, True at real items (left-aligned).

    Returns:
      `[batch, seq_len, dim]` position embeddings.

    Raises:
      ValueError: when the static `seq_len` exceeds `max_length`.
    """
    seq_len = mask.shape[-1]
    if seq_len is not None and seq_len > self.max_length:
      raise ValueError(
          f"Sequences of length {seq_len} exceed this model's max_length {self.max_length}; "
          f"truncate histories to the newest {self.max_length} items (the sample builder's "
          f"max_length) or build the model with a larger max_length.")
    lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=-1, keepdims=True)  # [batch, 1]
    positions = lengths - 1 - tf.range(tf.shape(mask)[-1])[tf.newaxis, :]  # [batch, seq_len]
    # Padding positions come out negative; clamp them to a valid row (they are masked).
    positions = tf.maximum(positions, 0)
    return tf.gather(tf.convert_to_tensor(self.embeddings), positions)

  def get_config(self):
    return {**super().get_config(), "max_length": self.max_length, "dim": self.dim,
            "initializer": tf_keras.initializers.serialize(self.initializer)}
