"""GRU4Rec (models/gru4rec.py) against a numpy transcription of the GRU equations.

Hidasi et al. (2016) section 3.1, eq. 2-5 (with the bias layout of Keras' GRU, whose
reset gate applies after the recurrent matmul, `reset_after=True`):
    z_t = sigmoid(x_t W_z + h_{t-1} U_z + b_z)
    r_t = sigmoid(x_t W_r + h_{t-1} U_r + b_r)
    h~_t = tanh(x_t W_h + r_t * (h_{t-1} U_h + b_h^rec) + b_h^in)
    h_t = z_t * h_{t-1} + (1 - z_t) * h~_t        (Keras' convention for z)
then o_t = h_t W + b, scored against the item embeddings.
"""

import numpy as np
import pytest

from common import names
from input_pipeline import schema
from input_pipeline.data_spec import DataSpec
from models import all_models  # noqa: F401  (fills the registry)
from models import gru4rec
from models import registry

import tensorflow as tf  # after `models`, which selects Keras 2
import tf_keras

NUM_ITEMS = 9
PAD = schema.pad_id(NUM_ITEMS)
HISTORIES = [[3, 1, 4, 1], [8, 2, PAD, PAD]]


def _model(seed=0, **overrides):
  tf_keras.utils.set_random_seed(seed)
  config = gru4rec.GRU4RecConfig(**{"embedding_dim": 4, "hidden_dim": 3, "max_length": 4,
                                    "dropout": 0.3, **overrides})
  model = gru4rec.GRU4Rec(config, data=DataSpec.for_catalog(NUM_ITEMS))
  model.create_variables()
  rng = np.random.default_rng(seed)
  for variable in model.weights:
    variable.assign(rng.normal(size=variable.shape).astype(np.float32) * 0.5)
  return model


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _reference(model, history):
  """o_t for every real item of one history: `[n, d]`."""
  [gru] = model.encoder.recurrent_layers
  kernel, recurrent, bias = (w.numpy() for w in gru.cell.weights)  # [d, 3u], [u, 3u], [2, 3u]
  units = recurrent.shape[0]
  items = model.item_embedding.embeddings.numpy()
  h = np.zeros(units)
  outputs = []
  for item in history:
    if item == PAD:
      break
    x = items[item] @ kernel + bias[0]  # input parts of z, r, h~
    hu = h @ recurrent + bias[1]  # recurrent parts
    z = _sigmoid(x[:units] + hu[:units])
    r = _sigmoid(x[units:2 * units] + hu[units:2 * units])
    candidate = np.tanh(x[2 * units:] + r * hu[2 * units:])
    h = z * h + (1 - z) * candidate
    outputs.append(h @ model.encoder.projection.kernel.numpy() + model.encoder.projection.bias.numpy())
  return np.stack(outputs)


def _features(labels=None):
  features = {names.HISTORY: tf.constant(HISTORIES, tf.int64),
              names.HISTORY_LENGTH: tf.constant([4, 2], tf.int64)}
  if labels is not None:
    features[names.LABELS] = tf.constant(labels, tf.int64)
  return features


def test_every_position_matches_the_gru_equations():
  model = _model()
  labels = [[1, 4, 1, 5], [2, 7, PAD, PAD]]
  head = model(_features(labels), training=False)[names.HEADS]["next_item"]
  for row, history in enumerate(HISTORIES):
    reference = _reference(model, history)
    np.testing.assert_allclose(head.query.numpy()[row, :len(reference)], reference, rtol=1e-4,
                               atol=1e-6)
  np.testing.assert_array_equal(head.labels.numpy(), labels)


def test_user_vector_is_the_output_after_the_newest_item():
  model = _model()
  vectors = model(_features(), training=False)[names.USER_VECTORS].numpy()
  assert vectors.shape == (2, 1, 4)
  for row, history in enumerate(HISTORIES):
    np.testing.assert_allclose(vectors[row, 0], _reference(model, history)[-1], rtol=1e-4,
                               atol=1e-6)


def test_dropout_only_in_training():
  model = _model()
  features = _features([[1, 4, 1, 5], [2, 7, PAD, PAD]])
  first, second = (model(features, training=True)[names.HEADS]["next_item"].query.numpy()
                   for _ in range(2))
  assert not np.allclose(first, second)


def test_stacked_layers_and_registration():
  model = _model(num_layers=2)
  assert len(model.encoder.recurrent_layers) == 2
  assert model(_features(), training=False)[names.USER_VECTORS].shape == (2, 1, 4)
  assert registry.lookup("gru4rec").model_class is gru4rec.GRU4Rec
  with pytest.raises(ValueError, match="hidden_dim"):
    gru4rec.GRU4RecConfig(hidden_dim=0)
