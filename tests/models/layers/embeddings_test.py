"""Tests of models/layers/embeddings.py."""

import numpy as np
import pytest

from input_pipeline import schema
from models.layers import embeddings

import tensorflow as tf  # after `models`, which selects Keras 2


def test_item_embedding_table_and_padding_mask():
  layer = embeddings.ItemEmbedding(num_items=5, dim=3)
  layer.build(None)
  assert layer.embeddings.shape == (schema.embedding_rows(5), 3)  # 5 items + OOV + padding
  ids = tf.constant([[0, 4, 5, 6]], tf.int64)  # 5 = OOV (a real position), 6 = padding
  np.testing.assert_array_equal(layer.padding_mask(ids).numpy(), [[True, True, True, False]])
  np.testing.assert_array_equal(layer(ids).numpy()[0], layer.embeddings.numpy()[[0, 4, 5, 6]])


def test_item_embedding_rows_have_unit_scale_whatever_the_catalog():
  layer = embeddings.ItemEmbedding(num_items=20000, dim=64)
  layer.build(None)
  norms = np.linalg.norm(layer.embeddings.numpy(), axis=1)
  # Truncated normal with stddev 1/sqrt(64): squared norms average 64 * 0.774 / 64 =
  # 0.774 (truncating at 2 sigma keeps 77.4% of the variance), norms about 0.88.
  assert 0.8 < norms.mean() < 0.95


def test_recency_positions():
  layer = embeddings.RecencyPositionEmbedding(max_length=4, dim=2)
  layer.build(None)
  table = layer.embeddings.numpy()
  mask = tf.constant([[True, True, False, False], [True, True, True, True]])
  got = layer(mask).numpy()
  # Row 0 has 2 items: positions [1, 0] then padding (clamped to 0); row 1: [3, 2, 1, 0].
  np.testing.assert_array_equal(got[0], table[[1, 0, 0, 0]])
  np.testing.assert_array_equal(got[1], table[[3, 2, 1, 0]])


def test_recency_positions_reject_long_sequences():
  layer = embeddings.RecencyPositionEmbedding(max_length=3, dim=2)
  layer.build(None)
  with pytest.raises(ValueError, match="max_length 3"):
    layer(tf.ones([1, 4], tf.bool))
