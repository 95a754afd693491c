"""Field-aware pooling (models/layers/feature_fields.py) against a numpy reference."""

import numpy as np
import pytest

from models.layers import feature_fields

import tensorflow as tf  # after `models`, which selects Keras 2


def test_mean_per_field_concatenated_in_field_order():
  # Features 0, 1, 2 are genres, 3, 4 ages (fields sorted by name: "age", "genre").
  layer = feature_fields.FieldPooledEmbedding(5, {"genre": (0, 1, 2), "age": (3, 4)}, dim=2)
  indices = tf.constant([[0, 2, 4], [1, 5, 5], [5, 5, 5]], tf.int64)  # 5 pads
  pooled = layer(indices).numpy()
  table = layer.embedding.embeddings.numpy()
  expected = np.stack([
      np.concatenate([table[4], (table[0] + table[2]) / 2]),  # age 4; genres 0, 2
      np.concatenate([np.zeros(2), table[1]]),  # no age; genre 1
      np.zeros(4),  # nothing
  ])
  np.testing.assert_allclose(pooled, expected, rtol=1e-6)
  assert layer.output_dim == 4


def test_extra_leading_dimensions_and_random_inputs_match_numpy():
  rng = np.random.default_rng(0)
  fields = {"a": (0, 3), "b": (1, 2, 4, 5)}
  layer = feature_fields.FieldPooledEmbedding(6, fields, dim=3)
  indices = rng.integers(0, 7, size=[2, 4, 5])
  pooled = layer(tf.constant(indices)).numpy()
  table = layer.embedding.embeddings.numpy()
  for idx in np.ndindex(2, 4):
    parts = []
    for members in (fields["a"], fields["b"]):
      chosen = [f for f in indices[idx] if f in members]
      parts.append(np.mean(table[chosen], axis=0) if chosen else np.zeros(3))
    np.testing.assert_allclose(pooled[idx], np.concatenate(parts), rtol=1e-5, atol=1e-7)


def test_fields_must_cover_every_feature_once():
  with pytest.raises(ValueError, match="belong to no field"):
    feature_fields.FieldPooledEmbedding(3, {"a": (0, 1)}, dim=2)
  with pytest.raises(ValueError, match="already in another field"):
    feature_fields.FieldPooledEmbedding(2, {"a": (0, 1), "b": (1,)}, dim=2)
