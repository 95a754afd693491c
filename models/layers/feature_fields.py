"""Field-aware embeddings of multi-valued categorical features (item genres, user age...).

Item and user features come as padded lists of feature indices (`DataSpec.item_features`,
the `user_features` input), each feature belonging to a field ("genre=Comedy" to
"genre"; `DataSpec.item_feature_fields`). A field can hold several values (a movie's
genres), one (a user's age group) or none. HRNN-meta (Ma et al., KDD 2020, section 1)
stacks such features on the latent vectors "through field-aware multi-layer
perceptrons"; the field-aware part is this pooling:

    pooled(x) = [mean_{f in x, field(f) = 1} E_f, ..., mean_{f in x, field(f) = F} E_f]

one mean per field (zeros for a field without values), concatenated in field order, so
a field with many values weighs as much as a field with one, and the MLP on top sees
which field a value came from.
"""

from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf
import tf_keras


class FieldPooledEmbedding(tf_keras.layers.Layer):
  """`[..., width]` feature indices -> `[..., num_fields * dim]` per-field mean embeddings.

  Index `num_features` is padding (contributes nothing); indices are checked in
  `[0, num_features]` by the embedding lookup.

  Attributes:
    num_features: real feature indices `[0, num_features)`.
    fields: field name -> the indices of its features (every feature in exactly one).
    dim: embedding size per feature.
  """

  def __init__(self, num_features: int, fields: Mapping[str, Sequence[int]], dim: int, **kwargs):
    super().__init__(**kwargs)
    field_of = np.full([num_features + 1], -1, np.int64)
    for index, (name, members) in enumerate(sorted(fields.items())):
      for feature in members:
        if not 0 <= feature < num_features or field_of[feature] >= 0:
          raise ValueError(f"Field {name!r} lists feature {feature}, which is outside "
                           f"[0, {num_features}) or already in another field.")
        field_of[feature] = index
    if (field_of[:num_features] < 0).any():
      raise ValueError(f"Features {np.flatnonzero(field_of[:num_features] < 0)[:10].tolist()} "
                       f"belong to no field of {sorted(fields)}.")
    if dim < 1 or num_features < 1:
      raise ValueError(f"FieldPooledEmbedding needs num_features >= 1 and dim >= 1, got "
                       f"{num_features} and {dim}.")
    self.num_features = num_features
    self.num_fields = len(fields)
    self.dim = dim
    # [num_features + 1, num_fields] one-hot field membership; the padding row is zero.
    membership = np.zeros([num_features + 1, self.num_fields], np.float32)
    membership[np.arange(num_features), field_of[:num_features]] = 1.0
    self._membership = tf.constant(membership)
    self.embedding = tf_keras.layers.Embedding(num_features + 1, dim, name="feature_embedding")

  @property
  def output_dim(self) -> int:
    return self.num_fields * self.dim

  def call(self, indices):
    indices = tf.cast(indices, tf.int64)
    embedded = self.embedding(indices)  # [..., W, dim]
    member = tf.gather(self._membership, indices)  # [..., W, F], zero for padding
    sums = tf.einsum("...wf,...wd->...fd", member, embedded)
    counts = tf.reduce_sum(member, axis=-2)[..., tf.newaxis]  # [..., F, 1]
    means = sums / tf.maximum(counts, 1.0)
    shape = tf.concat([tf.shape(indices)[:-1], [self.output_dim]], axis=0)
    return tf.reshape(means, shape)
