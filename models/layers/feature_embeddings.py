"""Side-information embeddings: item features by field, and the user profile vector.

SDM (sdm-notes.md, "Embeddings with side information") represents an input item by
its id embedding concatenated with embeddings of its side features (category, brand,
shop, ... on Taobao; whatever fields the data set has), and a user by the embeddings of
the profile features (age, gender, ...). A data set's features are indices into one
vocabulary per side, grouped into fields by their name ("genre=Comedy" is field
"genre"; `input_pipeline.data_spec`). Items and users may hold several values of a
field (a film's genres) or none.
"""

from typing import Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from input_pipeline import data_spec
from input_pipeline import schema
from models.layers import feature_fields


def _field_of_feature(fields: Mapping[str, Tuple[int, ...]], num_features: int) -> np.ndarray:
  """`[num_features + 1]` int32: each feature's field number; the padding row gets len(fields)."""
  field_of = np.full([num_features + 1], len(fields), np.int32)
  for number, indices in enumerate(fields.values()):
    field_of[list(indices)] = number
  return field_of


class ItemFieldEmbedding(tf_keras.layers.Layer):
  """Per item, one vector per side-feature field: the mean embedding of its values.

      v_f(i) = mean_{x in values of field f of item i} E[x]      (zero without a value)

  The item's input vector is then `[E_id(i); v_1(i); ...; v_F(i)]` (the model owns the
  id table). `field_value_sets` returns, per field, each row's distinct values with
  their counts, for SDM's long-term sets, which pool each field's values on their own.

  The features are constants of the layer, one `[num_items + 2, width_f]` int32 table
  per field (the values of field f of each item, padded; the OOV and padding rows
  have none) with the matching mean weights (1 / count, 0 at padding), part of every
  traced function and export. `call` embeds each distinct id of the batch once (an
  unclicked sequence of 100 items repeats many), with one gather per field and no
  one-hot over fields. Lookups go through `tf.nn.embedding_lookup`, which also takes
  the sharded variable of ParameterServerStrategy.

  Attributes:
    num_fields: F, the data set's item-feature fields (0: none).
    field_names: their names, in the order of the vectors.
  """

  def __init__(self, item_features: np.ndarray, fields: Mapping[str, Tuple[int, ...]],
               num_features: int, dim: int, **kwargs):
    """Args:
      item_features: `[num_items, width]` feature indices per item, padded with
        `num_features` (`DataSpec.item_features`).
      fields: field name -> its feature indices (`DataSpec.item_feature_fields`).
      num_features: the size of the item-feature vocabulary.
      dim: the embedding size of every field.
    """
    super().__init__(**kwargs)
    item_features = np.asarray(item_features)
    if item_features.ndim != 2:
      raise ValueError(f"item_features must be [num_items, width], got shape {item_features.shape}.")
    if item_features.size and (item_features.min() < 0 or item_features.max() > num_features):
      raise ValueError(f"item_features hold indices outside [0, {num_features}] (the padding is "
                       f"{num_features}): is the table from the same data set?")
    self.dim = dim
    self.num_features = num_features
    self.field_names = tuple(fields)
    self.num_fields = len(fields)
    field_of = _field_of_feature(fields, num_features)
    rows = schema.embedding_rows(item_features.shape[0])
    self._tables, self._weights = [], []
    for number in range(self.num_fields):
      in_field = field_of[item_features] == number  # [num_items, width]
      width = max(int(in_field.sum(axis=1).max(initial=0)), 1)
      table = np.full([rows, width], num_features, np.int32)
      weights = np.zeros([rows, width], np.float32)
      for item in np.flatnonzero(in_field.any(axis=1)):
        values = item_features[item][in_field[item]]
        table[item, :len(values)] = values
        weights[item, :len(values)] = 1.0 / len(values)
      self._tables.append(tf.constant(table))
      self._weights.append(tf.constant(weights))

  def build(self, input_shape=None):
    # One row per feature plus the padding row (weight 0 wherever it is gathered).
    self.embeddings = self.add_weight(
        name="embeddings", shape=[self.num_features + 1, self.dim],
        initializer=tf_keras.initializers.TruncatedNormal(stddev=self.dim**-0.5))
    super().build(input_shape)

  def field_value_sets(self, ids):
    """Per field, the multiset of values of each row's items, as distinct values with counts.

    A row of 50 long-term items whose items hold up to W_f values of field f (LastFM's
    tags: up to 625 an item) would be a `[50 * W_f, dim]` set; its distinct values are
    at most the field's vocabulary (388 tags), and pooling them with their counts
    (`pooling.attention_pool`'s `counts`) gives the multiset's result exactly.

    Args:
      ids: `[batch, n]` int item ids (OOV and padding rows have no values).

    Returns:
      One `(vectors [batch, u, dim], counts [batch, u] float)` per field: u the most
      distinct values of a row in the batch, counts 0 at padding.
    """
    if not self.built:
      self.build()
    batch = tf.shape(ids, out_type=tf.int64)[0]
    stride = self.num_features + 1
    row = tf.range(batch)[:, tf.newaxis, tf.newaxis]  # [batch, 1, 1]
    sets = []
    for table, weights in zip(self._tables, self._weights):
      values = tf.cast(tf.gather(table, ids), tf.int64)  # [batch, n, W_f]
      # One key per (row, value) occurrence; sorted, so that the distinct keys come out
      # grouped by row, as from_value_rowids needs.
      keys = tf.sort(tf.boolean_mask(row * stride + values, tf.gather(weights, ids) > 0))
      distinct, _, counts = tf.unique_with_counts(keys, out_idx=tf.int64)
      rows = distinct // stride
      value_ids = tf.RaggedTensor.from_value_rowids(distinct % stride, rows, nrows=batch)
      counts = tf.RaggedTensor.from_value_rowids(tf.cast(counts, tf.float32), rows, nrows=batch)
      sets.append((tf.nn.embedding_lookup(self.embeddings,
                                          value_ids.to_tensor(default_value=self.num_features)),
                   counts.to_tensor()))
    return sets

  def call(self, ids):
    """`[...]` item ids -> `[..., num_fields, dim]` per-field mean embeddings."""
    if not self.built:
      self.build()
    unique, index = tf.unique(tf.reshape(ids, [-1]))
    means = [tf.einsum("uw,uwd->ud", tf.gather(weights, unique),
                       tf.nn.embedding_lookup(self.embeddings, tf.gather(table, unique)))
             for table, weights in zip(self._tables, self._weights)]
    fields = tf.gather(tf.stack(means, axis=1), index)  # [n, F, dim]
    return tf.reshape(fields, tf.concat([tf.shape(ids), [self.num_fields, self.dim]], axis=0))


class UserProfileEmbedding(tf_keras.layers.Layer):
  """e_u: the user's profile vector, or one learned vector for data without profiles.

      e_u = tanh(W_u [m_1(u); ...; m_G(u)] + b_u),   m_g(u) = mean of u's field-g embeddings

  The per-field means are `feature_fields.FieldPooledEmbedding` (HRNN-meta pools its
  user features the same way). With no user-feature fields e_u is a single trainable
  vector shared by all users (SDM's "a constant vector"; a user-id embedding would not
  exist for users that serving has never seen). A user without any value of a field
  gets m_g = 0.

  Attributes:
    num_fields: G, user-feature fields (0: the learned vector).
  """

  def __init__(self, user_feature_names: Sequence[str], dim: int, **kwargs):
    super().__init__(**kwargs)
    self.dim = dim
    self.num_features = len(user_feature_names)
    fields = {}
    for index, name in enumerate(user_feature_names):
      fields.setdefault(data_spec.feature_field(name), []).append(index)
    self.num_fields = len(fields)
    if self.num_fields:
      self.pooled = feature_fields.FieldPooledEmbedding(self.num_features, fields, dim,
                                                        name="pooled")
    self.projection = tf_keras.layers.Dense(dim, activation="tanh", name="projection")

  @property
  def embeddings(self):
    """The user-feature table `[num_features + 1, dim]` (the last row pads)."""
    return self.pooled.embedding.embeddings

  def build(self, input_shape=None):
    if not self.num_fields:
      self.constant = self.add_weight(
          name="constant", shape=[self.dim],
          initializer=tf_keras.initializers.TruncatedNormal(stddev=self.dim**-0.5))
    super().build(input_shape)

  def call(self, user_features, batch_size=None):
    """e_u `[batch, dim]`.

    Args:
      user_features: `[batch, n]` user-feature indices padded with `num_features`, or
        None when the data set has no user features.
      batch_size: the batch size, needed when `user_features` is None.
    """
    if not self.num_fields:
      if batch_size is None:
        batch_size = tf.shape(user_features)[0]
      return tf.broadcast_to(self.constant, tf.stack([batch_size, self.dim]))
    if user_features is None:
      raise ValueError("This data set has user features: pass the batch's USER_FEATURES "
                       "(samples.UserFeatures()) to UserProfileEmbedding.")
    return self.projection(self.pooled(user_features))
