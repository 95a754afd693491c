"""SDM (models/sdm.py) and its layers against numpy transcriptions of the equations.

The numpy side (`_np_*`) reads only the layers' weights and the raw ids; it never
calls the layers. Notation of ../shared/papers/sdm-notes.md:

    q_i = [E_id(i); mean field-1 values; ...]              item input
    e_u = tanh([mean profile field embeddings] W_u + b_u)  user profile
    X = LSTM(q of the session)   Keras gate order i, f, c~, o:
        z = x K + h R + b;  c = sig(z_f) c + sig(z_i) tanh(z_c~);  h = sig(z_o) tanh(c)
    X^ = MultiHead(X) with projections x W + b per head, softmax(q k / sqrt(d_k)),
         output sum_h head_h W_o + b_o
    s_t = sum_k softmax_k(<x^_k, e_u>) x^_k
    p_u = tanh([z_id; z_1; ...] W_p + b_p),  z_f = sum softmax(<g, e_u>) g over set f
    o = (1 - G) p_u + G s_t,  G = sig([e_u; s_t; p_u] W + b)
"""

import numpy as np
import pytest

from common import names
from input_pipeline import schema
from input_pipeline import sessions
from input_pipeline.data_spec import DataSpec
from models import all_models  # noqa: F401  (fills the registry)
from models import registry
from models import sdm
from models.layers import fusion
from models.layers import pooling

import tensorflow as tf  # after `models`, which selects Keras 2
import tf_keras

NUM_ITEMS = 6
PAD = schema.pad_id(NUM_ITEMS)
OOV = schema.oov_id(NUM_ITEMS)
# Item features: fields "cat" (one value each) and "tag" (0, 1 or 2 values).
FEATURE_NAMES = ("cat=a", "cat=b", "tag=x", "tag=y")
NUM_FEATURES = len(FEATURE_NAMES)
# Item 0: cat a, tags x and y; 1: b, y; 2: a, no tag; 3: b, x; 4: a, x, y; 5: b. 4 pads.
ITEM_FEATURES = np.array([[0, 2, 3], [1, 3, 4], [0, 4, 4], [1, 2, 4], [0, 2, 3], [1, 4, 4]])
USER_FEATURE_NAMES = ("age=1", "age=2", "gender=f")


def _data(item_features=True, user_features=True, timed=True):
  return DataSpec.for_catalog(
      NUM_ITEMS,
      item_features=ITEM_FEATURES if item_features else np.zeros([NUM_ITEMS, 0], np.int64),
      item_feature_names=FEATURE_NAMES if item_features else (),
      user_feature_names=USER_FEATURE_NAMES if user_features else (),
      stats={"split": schema.LEAVE_LAST_ONE_OUT, "num_items": NUM_ITEMS,
             "has_timestamps": timed})


def _randomize(layer_or_model, seed):
  rng = np.random.default_rng(seed)
  for variable in layer_or_model.weights:
    variable.assign(rng.normal(size=variable.shape).astype(np.float32) * 0.5)


def _model(seed=0, data=None, **overrides):
  tf_keras.utils.set_random_seed(seed)
  config = sdm.SDMConfig(**{"embedding_dim": 4, "num_heads": 2, "max_length": 4,
                            "max_long_term_length": 3, **overrides})
  model = sdm.SDM(config, data=data or _data())
  model.create_variables()
  _randomize(model, seed)
  return model


# Two users: u0 with a 3-item session, 2 long-term items (their tags: x twice, y once)
# and features (age=2, gender=f); u1 with a 1-item session, no long-term behavior and
# no user features.
BATCH = {
    names.HISTORY: tf.constant([[5, 1, 3], [4, PAD, PAD]], tf.int64),  # the sessions
    names.HISTORY_LENGTH: tf.constant([3, 1], tf.int64),
    sessions.LONG_TERM: tf.constant([[0, 3], [PAD, PAD]], tf.int64),
    names.USER_FEATURES: tf.constant([[1, 2], [3, 3]], tf.int64),  # 3 = padding
}


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def _np_item_input(model, item):
  ids = model.item_embedding.embeddings.numpy()
  values = model.item_fields.embeddings.numpy()
  parts = [ids[item]]
  for field in ("cat", "tag"):
    members = [f for f in ITEM_FEATURES[item] if f < NUM_FEATURES and FEATURE_NAMES[f].startswith(field)]
    parts.append(np.mean([values[f] for f in members], axis=0) if members else np.zeros(4))
  return np.concatenate(parts)


def _np_profile(model, user_features):
  table = model.user_profile.embeddings.numpy()
  kernel, bias = (w.numpy() for w in model.user_profile.projection.weights)
  means = []
  for field in ("age", "gender"):
    members = [f for f in user_features if f < 3 and USER_FEATURE_NAMES[f].startswith(field)]
    means.append(np.mean([table[f] for f in members], axis=0) if members else np.zeros(4))
  return np.tanh(np.concatenate(means) @ kernel + bias)


def _np_lstm(model, inputs):
  kernel, recurrent, bias = (w.numpy() for w in model.short_term.lstm.weights)
  units = recurrent.shape[0]
  h, c, outputs = np.zeros(units), np.zeros(units), []
  for x in inputs:
    z = x @ kernel + h @ recurrent + bias
    i, f, g, o = (z[k * units:(k + 1) * units] for k in range(4))
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(c)
    outputs.append(h)
  return np.stack(outputs)


def _np_self_attention(layer, x):
  """Multi-head self-attention over the real rows x `[n, d]`, every row attending to all."""
  q_kernel, q_bias, k_kernel, k_bias, v_kernel, v_bias, o_kernel, o_bias = (
      w.numpy() for w in layer.weights)
  head_dim = q_bias.shape[0] // layer.num_heads
  q, k, v = x @ q_kernel + q_bias, x @ k_kernel + k_bias, x @ v_kernel + v_bias
  heads = []
  for h in range(layer.num_heads):
    columns = slice(h * head_dim, (h + 1) * head_dim)
    weights = np.stack([_softmax(q[t, columns] @ k[:, columns].T / np.sqrt(head_dim))
                        for t in range(len(x))])
    heads.append(weights @ v[:, columns])
  return np.concatenate(heads, axis=1) @ o_kernel + o_bias


def _np_pool(keys, query):
  if not len(keys):
    return np.zeros_like(query)
  keys = np.asarray(keys)
  return _softmax(keys @ query) @ keys


def _np_user_vector(model, session, long_term, user_features):
  """SDM's o for one user, from raw ids (padding already removed)."""
  profile = _np_profile(model, user_features)
  attended = _np_self_attention(model.short_term.self_attention,
                                _np_lstm(model, [_np_item_input(model, i) for i in session]))
  short = _np_pool(attended, profile)
  ids = model.item_embedding.embeddings.numpy()
  values = model.item_fields.embeddings.numpy()
  pooled = [_np_pool([ids[i] for i in long_term], profile)]
  for field in ("cat", "tag"):
    pooled.append(_np_pool([values[f] for i in long_term for f in ITEM_FEATURES[i]
                            if f < NUM_FEATURES and FEATURE_NAMES[f].startswith(field)], profile))
  kernel, bias = (w.numpy() for w in model.long_term.projection.weights)
  long = np.tanh(np.concatenate(pooled) @ kernel + bias)
  gate_kernel, gate_bias = (w.numpy() for w in model.fusion.weights)
  gate = _sigmoid(np.concatenate([profile, short, long]) @ gate_kernel + gate_bias)
  return (1 - gate) * long + gate * short, short, long


def test_attention_pool_matches_the_softmax_and_gives_zero_for_empty_sets():
  # keys (1, 0), (0, 1), (1, 1); query (2, 0): logits 2, 0, 2 -> weights e^2, 1, e^2 / sum.
  keys = tf.constant([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
  query = tf.constant([[2.0, 0.0]])
  e2 = np.exp(2.0)
  weights = np.array([e2, 1.0, e2]) / (2 * e2 + 1)
  pooled, got = pooling.attention_pool(keys, query, tf.constant([[True, True, True]]))
  np.testing.assert_allclose(got.numpy()[0], weights, rtol=1e-6)
  np.testing.assert_allclose(pooled.numpy()[0], weights @ keys.numpy()[0], rtol=1e-6)
  # Two sets over the same keys: {0, 2} (equal logits: mean of (1,0), (1,1)) and {}.
  pooled, got = pooling.attention_pool(keys, query, tf.constant([[[True, False, True],
                                                                  [False, False, False]]]))
  np.testing.assert_allclose(pooled.numpy()[0], [[1.0, 0.5], [0.0, 0.0]], rtol=1e-6)
  assert got.numpy()[0, 1].tolist() == [0.0, 0.0, 0.0]
  # counts: key k stands for c_k equal elements; the same as the set with the repeats.
  counts = tf.constant([[2.0, 1.0, 3.0]])
  pooled, got = pooling.attention_pool(keys, query, tf.constant([[True, True, True]]), counts)
  repeated = tf.constant([[[1.0, 0.0]] * 2 + [[0.0, 1.0]] + [[1.0, 1.0]] * 3])
  expected, _ = pooling.attention_pool(repeated, query, tf.ones([1, 6], tf.bool))
  np.testing.assert_allclose(pooled.numpy(), expected.numpy(), rtol=1e-6)
  np.testing.assert_allclose(got.numpy()[0], np.array([2 * e2, 1.0, 3 * e2]) / (5 * e2 + 1),
                             rtol=1e-6)
  # masked_mean: mean of the real rows, zero for none.
  mean = pooling.masked_mean(keys, tf.constant([[True, False, True]]))
  np.testing.assert_allclose(mean.numpy(), [[1.0, 0.5]])
  assert pooling.masked_mean(keys, tf.zeros([1, 3], tf.bool)).numpy().tolist() == [[0.0, 0.0]]


def test_item_inputs_concatenate_id_and_field_means():
  model = _model()
  ids = tf.constant([[0, 2, 1, OOV, PAD]], tf.int64)
  got = model.item_inputs(ids).numpy()[0]
  assert got.shape == (5, 12)  # id + 2 fields, 4 each
  for position, item in enumerate([0, 2, 1]):
    np.testing.assert_allclose(got[position], _np_item_input(model, item), rtol=1e-5, atol=1e-6)
  # Item 2 has no tag: its tag part is zero. OOV and padding have no features at all.
  assert np.all(got[1, 8:] == 0)
  ids_table = model.item_embedding.embeddings.numpy()
  for position, row in ((3, OOV), (4, PAD)):
    np.testing.assert_allclose(got[position], np.concatenate([ids_table[row], np.zeros(8)]))


def test_field_value_sets_count_each_rows_distinct_values():
  model = _model()
  table = model.item_fields.embeddings.numpy()
  # Row 0: items 0, 4, 2 -> cat {a: 3}, tag {x: 2, y: 2}; row 1: items 5, OOV -> cat {b: 1},
  # no tag; row 2: padding only -> nothing.
  ids = tf.constant([[0, 4, 2], [5, OOV, PAD], [PAD, PAD, PAD]], tf.int64)
  expected = {"cat": [{0: 3}, {1: 1}, {}], "tag": [{2: 2, 3: 2}, {}, {}]}
  for field, (vectors, counts) in zip(("cat", "tag"), model.item_fields.field_value_sets(ids)):
    for row in range(3):
      real = counts.numpy()[row] > 0
      got = {int(np.flatnonzero((table == vector).all(axis=1))[0]): int(count)
             for vector, count in zip(vectors.numpy()[row][real], counts.numpy()[row][real])}
      assert got == expected[field][row], (field, row)


def test_mean_item_inputs_average_each_rows_items():
  model = _model()
  # Row 0: items 3, 0, 3 (3 counted twice); row 1: nothing; row 2: item 5.
  ids = tf.constant([[3, 0, 3], [PAD, PAD, PAD], [5, PAD, PAD]], tf.int64)
  mean, has_items = model.mean_item_inputs(ids)
  np.testing.assert_allclose(mean.numpy()[0], np.mean([_np_item_input(model, i) for i in (3, 0, 3)],
                                                       axis=0), rtol=1e-5, atol=1e-6)
  assert mean.numpy()[1].tolist() == [0.0] * 12
  np.testing.assert_allclose(mean.numpy()[2], _np_item_input(model, 5), rtol=1e-5, atol=1e-6)
  assert has_items.numpy().tolist() == [True, False, True]


def test_user_profile_by_field_and_the_learned_vector_without_profiles():
  model = _model()
  got = model.user_profile(BATCH[names.USER_FEATURES]).numpy()
  np.testing.assert_allclose(got[0], _np_profile(model, [1, 2]), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[1], _np_profile(model, []), rtol=1e-5, atol=1e-6)
  bare = _model(data=_data(user_features=False))
  vectors = bare.user_profile(None, batch_size=2).numpy()
  np.testing.assert_allclose(vectors, np.stack([bare.user_profile.constant.numpy()] * 2))


def test_short_term_encoder_matches_lstm_self_attention_and_user_attention():
  model = _model()
  profile = model.user_profile(BATCH[names.USER_FEATURES])
  session = BATCH[names.HISTORY]
  encoded = model.short_term.encode(model.item_inputs(session),
                                    model.item_embedding.padding_mask(session), profile)
  for user, items in enumerate([[5, 1, 3], [4]]):
    lstm = _np_lstm(model, [_np_item_input(model, i) for i in items])
    np.testing.assert_allclose(encoded["lstm"].numpy()[user, :len(items)], lstm, rtol=1e-4,
                               atol=1e-5)
    attended = _np_self_attention(model.short_term.self_attention, lstm)
    np.testing.assert_allclose(encoded["attended"].numpy()[user, :len(items)], attended,
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(encoded["interest"].numpy()[user],
                               _np_pool(attended, profile.numpy()[user]), rtol=1e-4, atol=1e-5)
  assert encoded["user_attention"].numpy()[1].tolist()[1:] == [0.0, 0.0]


def test_gated_fusion_by_hand():
  # Zero kernel, bias 0: G = sigmoid(0) = 1/2 everywhere, o = (p + s) / 2.
  layer = fusion.GatedFusion(2)
  e, s, p = tf.constant([[1.0, 2.0]]), tf.constant([[4.0, 0.0]]), tf.constant([[0.0, -2.0]])
  layer(e, s, p)
  for w in layer.weights:
    w.assign(tf.zeros_like(w))
  np.testing.assert_allclose(layer(e, s, p).numpy(), [[2.0, -1.0]])
  # Bias +inf-like on dimension 0, -inf-like on 1: o = (s_0, p_1).
  layer.weights[1].assign([50.0, -50.0])
  np.testing.assert_allclose(layer(e, s, p).numpy(), [[4.0, -2.0]], atol=1e-6)


def test_sdm_user_vector_matches_numpy_end_to_end():
  model = _model()
  out = model(BATCH)
  for user, (session, long_term, features) in enumerate([([5, 1, 3], [0, 3], [1, 2]),
                                                         ([4], [], [])]):
    expected, short, long = _np_user_vector(model, session, long_term, features)
    np.testing.assert_allclose(out[names.USER_VECTORS].numpy()[user, 0], expected, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(out[sdm.SHORT_TERM].numpy()[user], short, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[sdm.LONG_TERM].numpy()[user], long, rtol=1e-4, atol=1e-5)
  assert names.HEADS not in out


def test_padding_does_not_change_the_user_vector():
  model = _model()
  padded = dict(BATCH)
  for key in (names.HISTORY, sessions.LONG_TERM):
    padded[key] = tf.concat([BATCH[key], tf.fill([2, 3], tf.constant(PAD, tf.int64))], axis=1)
  np.testing.assert_allclose(model(padded)[names.USER_VECTORS].numpy(),
                             model(BATCH)[names.USER_VECTORS].numpy(), rtol=1e-5, atol=1e-6)


def test_training_head_scores_the_next_clicks_and_gradients_are_finite():
  model = _model()
  batch = {**BATCH, names.LABELS: tf.constant([[2, 4, PAD], [0, PAD, PAD]], tf.int64)}
  with tf.GradientTape() as tape:
    out = model(batch, training=True)
    head = out[names.HEADS]["next_clicks"]
    loss = tf.reduce_sum(head.query)
  np.testing.assert_allclose(head.query.numpy(), out[names.USER_VECTORS].numpy()[:, 0])
  assert head.labels is batch[names.LABELS]
  gradients = tape.gradient(loss, model.trainable_variables)
  assert all(np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in gradients
             if g is not None)


def test_sample_spec_follows_the_data():
  timed = _model()
  sets = {type(s).__name__: s for s in timed.sample_spec().features}
  assert sets["ShortTermSession"].rule == sessions.SessionRule(gap=600, max_length=4)
  assert timed.sample_spec().max_length == 4  # batches are bucketed by session length
  assert sets["LongTermBehaviors"].window == 7 * 86_400
  assert "UserFeatures" in sets
  assert timed.sample_spec().training.k == 5
  # No timestamps: fixed chunks, no window; no user features: no UserFeatures set.
  untimed = _model(data=_data(user_features=False, timed=False), untimed_session_length=3)
  sets = {type(s).__name__: s for s in untimed.sample_spec().features}
  assert sets["ShortTermSession"].rule == sessions.SessionRule(gap=None, max_length=3)
  assert sets["LongTermBehaviors"].window is None
  assert "UserFeatures" not in sets
  # Without item features (or side_features off) items are their id embedding.
  plain = _model(data=_data(item_features=False))
  assert plain.item_fields is None and plain.item_inputs(tf.constant([1])).shape == (1, 4)
  assert _model(side_features=False).item_fields is None


def test_registered_and_bad_configs_are_rejected():
  assert registry.lookup("sdm").model_class is sdm.SDM
  with pytest.raises(ValueError, match="multiple of num_heads"):
    sdm.SDMConfig(embedding_dim=6, num_heads=4)
  with pytest.raises(ValueError, match="session_gap"):
    sdm.SDMConfig(session_gap=-1)
  with pytest.raises(ValueError, match="num_labels"):
    sdm.SDMConfig(num_labels=0)
  with pytest.raises(ValueError, match="dropout"):
    sdm.SDMConfig(dropout=1.0)
