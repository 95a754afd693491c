"""SASRec (models/sasrec.py) against a numpy transcription of the paper's equations.

The reference below is written from section III of the paper (and the choices in the
model's docstring), not from the model's code: embedding (III-B), causal
self-attention (eq. 4-5), point-wise feed-forward (eq. 6), residual + LayerNorm +
dropout around each (III-C), prediction by the shared item embedding (III-E).
"""

import numpy as np
import pytest

from common import names
from input_pipeline import schema
from input_pipeline.data_spec import DataSpec
from models import all_models  # noqa: F401  (fills the registry)
from models import registry
from models import sasrec

import tensorflow as tf  # after `models`, which selects Keras 2
import tf_keras

NUM_ITEMS = 12
PAD = schema.pad_id(NUM_ITEMS)
DIM = 4
EPSILON = 1e-6
HISTORIES = [[3, 1, 4, 1, 5], [9, 2, 6, PAD, PAD], [7, PAD, PAD, PAD, PAD]]


def _model(seed=0, **overrides):
  """A tiny SASRec with every weight random (LayerNorm gains and biases too)."""
  tf_keras.utils.set_random_seed(seed)
  config = sasrec.SASRecConfig(**{"embedding_dim": DIM, "max_length": 5, "num_blocks": 2,
                                  "num_heads": 2, "dropout": 0.3, **overrides})
  model = sasrec.SASRec(config, data=DataSpec.for_catalog(NUM_ITEMS))
  model.create_variables()
  rng = np.random.default_rng(seed)
  for variable in model.weights:
    variable.assign(rng.normal(size=variable.shape).astype(np.float32) * 0.5)
  return model


def _layer_norm(x, layer):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + EPSILON) * layer.gamma.numpy() + layer.beta.numpy()


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _reference(model, history):
  """F for one history (list of ids, padding included): `[len, d]`, paper section III."""
  history = np.asarray(history)
  real = history != PAD
  n = int(real.sum())
  items = model.item_embedding.embeddings.numpy()
  positions = model.encoder.position_embedding.embeddings.numpy()
  recency = np.maximum(n - 1 - np.arange(len(history)), 0)  # newest item = position 0
  x = (items[history] * np.sqrt(DIM) + positions[recency]) * real[:, None]
  allowed = np.tril(np.ones([len(history)] * 2, bool)) & real[None, :]  # key <= query, real
  for block in model.encoder.blocks:
    attention = block.attention
    normed = _layer_norm(x, block.attention_norm)
    heads = attention.num_heads
    q, k, v = ((normed @ dense.kernel.numpy() + dense.bias.numpy()).reshape(len(x), heads, -1)
               for dense in (attention.query, attention.key, attention.value))
    out = np.zeros_like(q)
    for h in range(heads):
      logits = q[:, h] @ k[:, h].T / np.sqrt(q.shape[2])  # eq. 4: QK^T / sqrt(d)
      weights = _softmax(np.where(allowed, logits, -1e9))  # causality (III-C)
      out[:, h] = weights @ v[:, h]
    attended = out.reshape(len(x), -1) @ attention.output_dense.kernel.numpy()
    hidden = x + attended + attention.output_dense.bias.numpy()  # x + SA(LN(x))
    ffn = np.maximum(_layer_norm(hidden, block.feed_forward_norm) @ block.hidden.kernel.numpy()
                     + block.hidden.bias.numpy(), 0.0)  # eq. 6: ReLU(S W1 + b1)
    x = (hidden + ffn @ block.output_projection.kernel.numpy()
         + block.output_projection.bias.numpy()) * real[:, None]
  return _layer_norm(x, model.encoder.output_norm)


def test_encoder_matches_the_paper_equations():
  model = _model()
  encoded = model.encode(tf.constant(HISTORIES, tf.int64)).numpy()
  for row, history in enumerate(HISTORIES):
    n = sum(i != PAD for i in history)
    np.testing.assert_allclose(encoded[row, :n], _reference(model, history)[:n], rtol=2e-4,
                               atol=2e-5)


def test_user_vector_is_the_newest_position_and_scores_use_the_item_table():
  model = _model()
  outputs = model({names.HISTORY: tf.constant(HISTORIES, tf.int64),
                   names.HISTORY_LENGTH: tf.constant([5, 3, 1], tf.int64)})
  vectors = outputs[names.USER_VECTORS].numpy()
  assert vectors.shape == (3, 1, DIM) and names.HEADS not in outputs
  for row, (history, n) in enumerate(zip(HISTORIES, (5, 3, 1))):
    np.testing.assert_allclose(vectors[row, 0], _reference(model, history)[n - 1], rtol=2e-4,
                               atol=2e-5)
  # The candidate side is the input item table itself (III-E), no bias.
  candidates = model.candidates()
  assert candidates.vectors is model.item_embedding.embeddings and candidates.bias is None


def test_causality_future_items_never_change_a_prefix():
  # Two histories that share the prefix [3, 1, 4] and differ after it. Positions count
  # from the newest item, so with the position embeddings zeroed the outputs at
  # positions 0..2 may depend on the later items only through attention, which the
  # causal mask forbids.
  model = _model()
  model.encoder.position_embedding.embeddings.assign(tf.zeros([5, DIM]))
  a = model.encode(tf.constant([[3, 1, 4, 1, 5]], tf.int64)).numpy()
  b = model.encode(tf.constant([[3, 1, 4, 8, 8]], tf.int64)).numpy()
  np.testing.assert_allclose(a[0, :3], b[0, :3], rtol=1e-5)
  assert not np.allclose(a[0, 3:], b[0, 3:])


def test_training_head_predicts_the_next_item_at_every_position():
  model = _model()
  labels = tf.constant([[1, 4, 1, 5, 6], [2, 6, 7, PAD, PAD], [8, PAD, PAD, PAD, PAD]], tf.int64)
  weights = tf.cast(labels != PAD, tf.float32)
  features = {names.HISTORY: tf.constant(HISTORIES, tf.int64),
              names.HISTORY_LENGTH: tf.constant([5, 3, 1], tf.int64),
              names.LABELS: labels, names.LABEL_WEIGHTS: weights}
  head = model(features, training=False)[names.HEADS]["next_item"]
  np.testing.assert_array_equal(head.labels.numpy(), labels.numpy())
  np.testing.assert_allclose(head.query.numpy(),
                             model.encode(features[names.HISTORY]).numpy(), rtol=1e-6)
  # Dropout is on in training: two training calls differ, inference calls do not.
  first = model(features, training=True)[names.HEADS]["next_item"].query.numpy()
  second = model(features, training=True)[names.HEADS]["next_item"].query.numpy()
  assert not np.allclose(first, second)


def test_padding_invariance_and_no_gradient_to_the_padding_row():
  model = _model()
  short = model.encode(tf.constant([[3, 1, 4]], tf.int64)).numpy()
  padded = model.encode(tf.constant([[3, 1, 4, PAD, PAD]], tf.int64)).numpy()
  np.testing.assert_allclose(padded[0, :3], short[0], rtol=1e-5, atol=1e-6)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(model.encode(tf.constant(HISTORIES, tf.int64), training=True) ** 2)
  gradient = tf.convert_to_tensor(tape.gradient(loss, model.item_embedding.embeddings)).numpy()
  assert not gradient[PAD].any() and gradient[[3, 1, 4, 5, 9, 2, 6, 7]].any()


def test_config_checks_and_registration():
  assert registry.lookup("sasrec").model_class is sasrec.SASRec
  config = sasrec.SASRecConfig()
  assert (config.num_blocks, config.num_heads, config.dropout) == (2, 1, 0.5)  # the paper's
  with pytest.raises(ValueError, match="multiple of num_heads"):
    sasrec.SASRecConfig(embedding_dim=6, num_heads=4)
  with pytest.raises(ValueError, match="dropout"):
    sasrec.SASRecConfig(dropout=1.0)
