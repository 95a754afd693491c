"""Tests of SINE (models/sine.py): every equation against numpy or numbers checked by hand."""

import dataclasses

import numpy as np
import pytest

from common import names as base
from input_pipeline import schema
from input_pipeline.data_spec import DataSpec
from models import all_models  # noqa: F401  (fills the registry)
from models import registry
from models import sine

import tensorflow as tf  # after `models`, which selects Keras 2
import tf_keras

NUM_ITEMS = 10
PAD = schema.pad_id(NUM_ITEMS)
EPSILON = 1e-6  # sine._LAYER_NORM_EPSILON


def _model(seed=0, **overrides):
  """A tiny SINE whose every weight (LayerNorm gains and biases too) is random."""
  tf_keras.utils.set_random_seed(seed)
  config = sine.SINEConfig(**{"embedding_dim": 4, "max_length": 5, "num_interests": 2,
                              "num_prototypes": 3, **overrides})
  model = sine.SINE(config, data=DataSpec.for_catalog(NUM_ITEMS))
  model.create_variables()
  rng = np.random.default_rng(seed)
  for variable in model.weights:
    variable.assign(rng.normal(size=variable.shape).astype(np.float32))
  return model


def _weights(model):
  names = {
      "items": model.item_embedding.embeddings, "positions": model.position_embedding.embeddings,
      "w1": model.concept_attention.hidden_kernel, "w2": model.concept_attention.score_kernel,
      "prototypes": model.prototypes, "w3": model.assignment_projection.kernel,
      "ln1": model.item_norm, "ln2": model.prototype_norm,
      "wk1": model.interest_attention.hidden_kernel, "wk2": model.interest_attention.score_kernel,
      "ln3": model.interest_norm, "w3_apt": model.intention_attention.hidden_kernel,
      "w4": model.intention_attention.score_kernel, "ln4": model.intention_norm,
  }
  return {k: ((v.gamma.numpy(), v.beta.numpy()) if isinstance(v, tf_keras.layers.Layer)
              else v.numpy()) for k, v in names.items()}


def _softmax(x, axis=-1):
  e = np.exp(x - x.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def _layer_norm(x, gamma_beta):
  gamma, beta = gamma_beta
  normalized = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + EPSILON)
  return normalized * gamma + beta


def _attention(x, w_hidden, w_score):
  """Eq 1/4/6 for one sequence of real items: [heads, n] weights, one head at a time."""
  heads, hidden = w_score.shape
  return np.stack([_softmax(np.tanh(x @ w_hidden[:, h * hidden:(h + 1) * hidden]) @ w_score[h])
                   for h in range(heads)])


def _numpy_sine(w, history, k, tau):
  """Eq 1-8 for one history of real items (no padding), straight from the paper."""
  n = len(history)
  x = w["items"][history]  # X^u [n, D]
  a = _attention(x, w["w1"], w["w2"])[0]  # eq 1
  z = a @ x
  s = w["prototypes"] @ z  # eq 2
  idx = np.argsort(-s)[:k]
  c_u = w["prototypes"][idx] * (1 / (1 + np.exp(-s[idx])))[:, None]
  p_k_t = _softmax(_layer_norm(x @ w["w3"], w["ln1"]) @ _layer_norm(c_u, w["ln2"]).T)  # eq 3 [n, K]
  positions = w["positions"][n - 1 - np.arange(n)]  # the newest item is position 0
  p_t_k = _attention(x + positions, w["wk1"], w["wk2"])  # eq 4 [K, n]
  phi = _layer_norm((p_k_t.T * p_t_k) @ x, w["ln3"])  # eq 5 [K, D]
  x_hat = p_k_t @ c_u  # eq 6
  c_apt = _layer_norm(_attention(x_hat, w["w3_apt"], w["w4"])[0] @ x_hat, w["ln4"])
  e = _softmax(phi @ c_apt / tau)  # eq 7
  return {"concept_attention": a, "user_concept": z, "prototype_scores": s,
          "active_prototypes": idx, "active_concepts": c_u, "assignment": p_k_t,
          "interest_attention": p_t_k, "interests": phi, "intention_sequence": x_hat,
          "next_intention": c_apt, "interest_weights": e, "user_vector": e @ phi}  # eq 8


HISTORIES = [[3, 1, 4, 1, 5], [2, 7, PAD, PAD, PAD], [9, PAD, PAD, PAD, PAD]]


@pytest.mark.parametrize("key", [
    "concept_attention", "user_concept", "prototype_scores", "active_prototypes",
    "active_concepts", "assignment", "interest_attention", "interests", "intention_sequence",
    "next_intention", "interest_weights", "user_vector"])
def test_each_equation_matches_numpy(key):
  model = _model()
  encoded = model.encode(tf.constant(HISTORIES, tf.int64))
  weights = _weights(model)
  for row, history in enumerate(HISTORIES):
    real = [i for i in history if i != PAD]
    n = len(real)
    expected = _numpy_sine(weights, real, k=2, tau=0.1)[key]
    got = encoded[key].numpy()[row]
    if key in ("concept_attention", "interest_attention"):
      assert not got[..., n:].any()  # padding gets exactly zero attention
      got = got[..., :n]
    elif key in ("assignment", "intention_sequence"):
      got = got[:n]  # rows at padded positions are never used
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-5, err_msg=f"row {row}")


def test_eq1_attention_by_hand():
  model = _model()
  # W1 = identity and W2 = e_0 make the logit of item t equal to tanh(X_t[0]).
  model.concept_attention.hidden_kernel.assign(np.eye(4, dtype=np.float32))
  model.concept_attention.score_kernel.assign([[1.0, 0, 0, 0]])
  table = np.zeros((NUM_ITEMS + 2, 4), np.float32)
  table[1, 0], table[2, 0] = 0.0, 20.0  # tanh: 0 and 1
  table[PAD, 0] = 20.0  # padding would win if it were not masked
  model.item_embedding.embeddings.assign(table)
  encoded = model.encode(tf.constant([[1, 2, PAD]], tf.int64))
  # softmax([0, 1]) = [1, e] / (1 + e) = [0.2689, 0.7311]; z = 0.7311 * X_2.
  np.testing.assert_allclose(encoded["concept_attention"].numpy()[0], [0.268941, 0.731059, 0],
                             atol=1e-6)
  np.testing.assert_allclose(encoded["user_concept"].numpy()[0], [20 * 0.731059, 0, 0, 0],
                             rtol=1e-5)


def test_eq2_top_k_selection_and_sigmoid_gating_by_hand():
  model = _model(num_prototypes=3, num_interests=2)
  # A one-item history gives a = [1] and z = X_1 = e_0 whatever the attention weights.
  table = np.zeros((NUM_ITEMS + 2, 4), np.float32)
  table[1] = [1, 0, 0, 0]
  model.item_embedding.embeddings.assign(table)
  model.prototypes.assign([[0.5, 1, 0, 0], [2, 0, 3, 0], [-1, 0, 0, 1]])
  encoded = model.encode(tf.constant([[1]], tf.int64))
  # s = C z = [0.5, 2, -1]: the top two are prototype 1 (s = 2), then prototype 0 (0.5),
  # each gated by sigmoid(s): sigmoid(2) = 0.880797, sigmoid(0.5) = 0.622459.
  np.testing.assert_allclose(encoded["prototype_scores"].numpy()[0], [0.5, 2, -1], rtol=1e-6)
  np.testing.assert_array_equal(encoded["active_prototypes"].numpy()[0], [1, 0])
  np.testing.assert_allclose(
      encoded["active_concepts"].numpy()[0],
      [[2 * 0.880797, 0, 3 * 0.880797, 0], [0.5 * 0.622459, 0.622459, 0, 0]], rtol=1e-5)


def test_eq3_assignment_by_hand():
  model = _model()
  # Identity W3 and unit LayerNorms: the logits are D times the correlation of X_t with
  # each C^u_k. X_1 = [1, -1, 1, -1] is perfectly correlated with C^u_0 (a multiple of
  # it) and anti-correlated with C^u_1, so logits = [4, -4] and P = softmax = [1, e^-8] / Z.
  model.assignment_projection.kernel.assign(np.eye(4, dtype=np.float32))
  for norm in (model.item_norm, model.prototype_norm):
    norm.gamma.assign(np.ones(4, np.float32))
    norm.beta.assign(np.zeros(4, np.float32))
  table = np.zeros((NUM_ITEMS + 2, 4), np.float32)
  table[1] = [1, -1, 1, -1]
  model.item_embedding.embeddings.assign(table)
  model.prototypes.assign([[2, -2, 2, -2], [-3, 3, -3, 3], [0, 0, 0, 0]])
  encoded = model.encode(tf.constant([[1]], tf.int64))
  # s = C X_1 = [16, -24, 0]: top two are prototypes 0 and 2. Prototype 2 is all zeros,
  # so LN2 maps it to zeros (its variance is 0): logit 0. Logits [4, 0].
  np.testing.assert_array_equal(encoded["active_prototypes"].numpy()[0], [0, 2])
  expected = np.array([np.exp(4), 1]) / (np.exp(4) + 1)
  np.testing.assert_allclose(encoded["assignment"].numpy()[0, 0], expected, rtol=1e-4)


def test_eq4_positions_count_from_the_newest_item():
  model = _model(max_length=5)
  positions = model.position_embedding(tf.constant([[True, True, True, False, False]]))
  table = model.position_embedding.embeddings.numpy()
  # Three real items: oldest -> position 2, newest -> position 0; padding clamps to 0.
  np.testing.assert_allclose(positions.numpy()[0], table[[2, 1, 0, 0, 0]])


def test_eq4_too_long_history_is_rejected():
  model = _model(max_length=5)
  with pytest.raises(ValueError, match="max_length 5"):
    model({base.HISTORY: tf.zeros([1, 6], tf.int64)})


@pytest.mark.parametrize("tau", [0.1, 1.0, 10.0])
def test_eq7_temperature(tau):
  model = _model(temperature=tau)
  encoded = model.encode(tf.constant(HISTORIES[:1], tf.int64))
  phi, c_apt = encoded["interests"].numpy()[0], encoded["next_intention"].numpy()[0]
  e = encoded["interest_weights"].numpy()[0]
  np.testing.assert_allclose(e, _softmax(phi @ c_apt / tau), rtol=1e-5)
  np.testing.assert_allclose(encoded["user_vector"].numpy()[0], e @ phi, rtol=1e-5, atol=1e-6)


def test_small_temperature_selects_one_interest():
  encoded = _model(temperature=1e-4).encode(tf.constant(HISTORIES[:1], tf.int64))
  e = encoded["interest_weights"].numpy()[0]
  assert e.max() == pytest.approx(1.0, abs=1e-6)  # tau -> 0+: a one-hot e^u
  np.testing.assert_allclose(encoded["user_vector"].numpy()[0],
                             encoded["interests"].numpy()[0, e.argmax()], rtol=1e-5)


def test_eq10_11_covariance_aux_loss_by_hand():
  model = _model(embedding_dim=4, num_prototypes=3, covariance_weight=0.5)
  # As in losses_test: M = [[1, 1, 0], [1, 1, 0], [0, 0, 1]], L_c = (5 - 3) / 2 = 1,
  # and the aux loss is lambda * L_c = 0.5.
  model.prototypes.assign([[1, 1, -1, -1], [1, 1, -1, -1], [1, -1, 1, -1]])
  outputs = model({base.HISTORY: tf.constant(HISTORIES, tf.int64)})
  assert outputs[base.AUX_LOSSES]["covariance"].numpy() == pytest.approx(0.5, abs=1e-6)


def _vector(outputs):
  return outputs[base.USER_VECTORS][:, 0]


def test_outputs_follow_the_model_contract():
  model = _model(embedding_dim=4, num_interests=2)
  outputs = model({base.HISTORY: tf.constant(HISTORIES, tf.int64)})
  assert outputs[base.USER_VECTORS].shape == (3, 1, 4)
  assert outputs[sine.INTERESTS].shape == (3, 2, 4)
  assert set(outputs[base.AUX_LOSSES]) == {"covariance"} and base.HEADS not in outputs
  assert model.item_table.shape == (schema.embedding_rows(NUM_ITEMS), 4)
  # With labels: one head scoring v^u (eq 9) against them.
  labels = tf.constant([[1], [2], [3]], tf.int64)
  training = model({base.HISTORY: tf.constant(HISTORIES, tf.int64), base.LABELS: labels},
                   training=True)
  head = training[base.HEADS]["softmax"]
  np.testing.assert_array_equal(head.query.numpy(), _vector(outputs).numpy())
  assert head.labels is labels and head.weights is None


def test_padding_invariance():
  model = _model()
  short = model({base.HISTORY: tf.constant([[3, 1, 4]], tf.int64)})
  padded = model({base.HISTORY: tf.constant([[3, 1, 4, PAD, PAD]], tf.int64)})
  np.testing.assert_allclose(_vector(padded).numpy(), _vector(short).numpy(), rtol=1e-5)
  # Changing the padding row's embedding changes nothing either.
  model.item_embedding.embeddings[PAD].assign(np.full(4, 100.0, np.float32))
  again = model({base.HISTORY: tf.constant([[3, 1, 4, PAD, PAD]], tf.int64)})
  np.testing.assert_allclose(_vector(again).numpy(), _vector(short).numpy(), rtol=1e-5)


def test_padding_row_gets_no_gradient_and_the_rest_do():
  model = _model()
  with tf.GradientTape() as tape:
    outputs = model({base.HISTORY: tf.constant(HISTORIES, tf.int64)})
    loss = tf.reduce_sum(_vector(outputs) ** 2) + outputs[base.AUX_LOSSES]["covariance"]
  grads = tape.gradient(loss, model.trainable_variables)
  for variable, grad in zip(model.trainable_variables, grads):
    assert grad is not None, variable.name
    grad = tf.convert_to_tensor(grad).numpy()
    assert np.all(np.isfinite(grad)) and grad.any(), variable.name
  table_grad = tf.convert_to_tensor(grads[[v.name for v in model.trainable_variables].index(
      model.item_embedding.embeddings.name)]).numpy()
  assert not table_grad[PAD].any()


def test_registered():
  entry = registry.lookup("sine")
  assert entry.model_class is sine.SINE and entry.config_class is sine.SINEConfig


def test_config_defaults_and_presets():
  config = sine.SINEConfig()
  # The paper: D = 128, n = 20, lambda = 0.5, tau = 0.1, Amazon's K = 4 and L = 500.
  assert dataclasses.astuple(config) == (128, 20, 4, 500, 0.1, 0.5)
  taobao = sine.paper_config("taobao")
  assert (taobao.num_interests, taobao.num_prototypes) == (8, 1000)
  assert sine.paper_config("movielens", embedding_dim=64).embedding_dim == 64
  with pytest.raises(ValueError, match="Table 3"):
    sine.paper_config("beauty")
  with pytest.raises(ValueError, match="must not exceed L"):
    sine.SINEConfig(num_interests=5, num_prototypes=4)
  with pytest.raises(ValueError, match="temperature"):
    sine.SINEConfig(temperature=0)
