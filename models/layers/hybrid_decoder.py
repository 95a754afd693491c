"""HRNN-meta's item-feature decoder (Ma et al., KDD 2020, section 2.3, eq 2) as dot products.

Eq 2 mixes the item's own decoder with a decoder computed from its features:

    phi~_j(h) = (1 - lambda) phi_j(h) + lambda phi'(h, f_j)
    phi_j(h) = w_j . h + b_j             (the item's embedding and bias)
    phi'(h, f_j) = w(f_j) . h + b(f_j)   (learned functions of the item's features)

lambda ~ U[0, 1] in training (a dropout of either view, so that neither learns to
complement the other), lambda = 1 for items without interactions ("cold-start
inference based on metadata").

The model contract scores `<user vector, item vector> + bias`, so eq 2 is written as
one dot product of a user side that carries lambda and an item side that does not:

    query(h, lambda) = [(1 - lambda) h, lambda h, 1 - lambda, lambda]       [2D + 2]
    item_j           = [w~_j, w(f_j), b~_j, b(f_j)]                          [2D + 2]
    query . item_j   = (1 - lambda)(w~_j . h + b~_j) + lambda (w(f_j) . h + b(f_j))

with `w~_j, b~_j = w_j, b_j` for items seen in training and `w(f_j), b(f_j)` for cold
ones: a cold item then scores `phi'(h, f_j)` whatever the user's lambda (its lambda is
1), and one table serves training (lambda drawn per example), evaluation, export and
the ScaNN index (lambda fixed in the served user vector). The paper does not say which
lambda scores warm items at inference; `ItemFeatureTower`'s users pick it (HRNN-meta:
the training mean, 1/2, as dropout scales by its keep rate).

`w(f)` and `b(f)`: the item's features pooled per field (`FieldPooledEmbedding`), then
`hidden_layers` ReLU layers of width `dim` and a linear layer to `dim + 1` outputs
(the paper's "field-aware multi-layer perceptrons" without their sizes).
"""

from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from models.layers import feature_fields


class ItemFeatureTower(tf_keras.layers.Layer):
  """`w(f_j)` `[rows, dim]` and `b(f_j)` `[rows]` for every row of the item table.

  Attributes:
    item_features: `[rows, width]` feature indices per item-table row, padded with
      `num_features` (the OOV and padding rows of the table hold only padding).
    num_features, fields: as in `FieldPooledEmbedding`.
    dim: output size D (the item embedding size).
    feature_dim: embedding size per feature.
    hidden_layers: ReLU layers of width `dim` before the output layer.
  """

  def __init__(self, item_features: np.ndarray, num_features: int,
               fields: Mapping[str, Sequence[int]], dim: int, feature_dim: int,
               hidden_layers: int = 1, **kwargs):
    super().__init__(**kwargs)
    item_features = np.asarray(item_features, np.int64)
    if item_features.ndim != 2 or ((item_features < 0) | (item_features > num_features)).any():
      raise ValueError(f"item_features must be [rows, width] indices in [0, {num_features}] "
                       f"(num_features pads), got shape {item_features.shape}.")
    self.dim = dim
    self._features = tf.constant(item_features)
    self.pooling = feature_fields.FieldPooledEmbedding(num_features, fields, feature_dim,
                                                       name="pooling")
    self.hidden = [tf_keras.layers.Dense(dim, activation="relu", name=f"hidden_{i}")
                   for i in range(hidden_layers)]
    self.output_layer = tf_keras.layers.Dense(dim + 1, name="output")

  def call(self, inputs=None):
    """Returns `(w [rows, dim], b [rows])`; `inputs` is unused (the table is fixed)."""
    del inputs
    x = self.pooling(self._features)
    for layer in self.hidden:
      x = layer(x)
    out = self.output_layer(x)
    return out[:, :self.dim], out[:, self.dim]


def item_side(item_vectors, item_bias, feature_vectors, feature_bias, cold):
  """Eq 2's item side `[rows, 2D + 2]`: `[w~, w(f), b~, b(f)]` (module docstring).

  Args:
    item_vectors: `[rows, D]` w_j.
    item_bias: `[rows]` b_j.
    feature_vectors: `[rows, D]` w(f_j).
    feature_bias: `[rows]` b(f_j).
    cold: `[rows]` bool, items scored from their features alone (lambda = 1).
  """
  item_vectors = tf.convert_to_tensor(item_vectors)
  cold = tf.convert_to_tensor(cold)
  own_vectors = tf.where(cold[:, tf.newaxis], feature_vectors, item_vectors)
  own_bias = tf.where(cold, feature_bias, tf.convert_to_tensor(item_bias))
  return tf.concat([own_vectors, feature_vectors, own_bias[:, tf.newaxis],
                    feature_bias[:, tf.newaxis]], axis=1)


def user_side(hidden, mix):
  """Eq 2's user side `[..., 2D + 2]`: `[(1 - lambda) h, lambda h, 1 - lambda, lambda]`.

  Args:
    hidden: `[..., D]` h.
    mix: lambda, broadcastable to `[..., 1]` (a scalar, or one per example).
  """
  mix = tf.broadcast_to(tf.cast(mix, hidden.dtype), tf.concat([tf.shape(hidden)[:-1], [1]], 0))
  return tf.concat([(1.0 - mix) * hidden, mix * hidden, 1.0 - mix, mix], axis=-1)
