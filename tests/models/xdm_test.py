"""XDM (models/xdm.py): eq 3-9 against hand and numpy computations, masking, end to end.

Equation numbers refer to ../shared/papers/xdm.md. With e_hc = ||h - c||^2,
e_hn = ||h - n||^2, e_cn = ||c - n||^2:
    eq 3  n = tanh(mean(q_i) W + b)            (c the same over the labels)
    eq 4  [e_hc - e_hn + m]_+
    eq 5  [2 e_hc - e_hn - e_cn + m*]_+
    eq 6  z = h - n
    eq 7-8  z = h - sigmoid([h; n] W + b) * n
    eq 9  L = L_ce + lambda L_tri
SDM's h itself is checked against numpy in sdm_test.py; here it is taken from the model.
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from common import names
from input_pipeline import prepare
from input_pipeline import schema
from input_pipeline import sessions
from input_pipeline import synthetic
from input_pipeline.data_spec import DataSpec
from models import all_models  # noqa: F401  (fills the registry)
from models import registry
from models import xdm
from models.layers import fusion
from models.layers import metric_learning
from retrieval import job
from retrieval import requests
from trainer import config as config_lib
from trainer import loop

import tensorflow as tf  # after `models`, which selects Keras 2
import tf_keras

NUM_ITEMS = 6
PAD = schema.pad_id(NUM_ITEMS)
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# h = (0, 0), c = (1, 0), n = (3, 0): e_hc = 1, e_hn = 9, e_cn = 4.
H, C, N = (tf.constant([[0.0, 0.0]]), tf.constant([[1.0, 0.0]]), tf.constant([[3.0, 0.0]]))


def _loss(structure, margin, has_unclicked=None):
  return metric_learning.triplet_loss(H, N, C, margin=margin, structure=structure,
                                      has_unclicked=has_unclicked).numpy().tolist()


def test_asymmetric_triplet_eq4_by_hand():
  # [1 - 9 + m]_+: zero up to m = 8, then m - 8.
  assert _loss("asymmetric", 5.0) == [0.0]
  assert _loss("asymmetric", 10.0) == [2.0]


def test_symmetric_triplet_eq5_by_hand():
  # [2 * 1 - 9 - 4 + m*]_+: zero up to m* = 11, then m* - 11.
  assert _loss("symmetric", 5.0) == [0.0]
  assert _loss("symmetric", 11.0) == [0.0]
  assert _loss("symmetric", 15.0) == [4.0]


def test_symmetric_triplet_is_zero_only_in_a_ball_around_2c_minus_n():
  # Eq 5's argument = ||h - (2c - n)||^2 - 3 ||c - n||^2 + m*: h is held within
  # sqrt(3 e_cn - m*) of 2c - n (what `learned_scale` works around), while eq 4 is
  # satisfied by any long h along c - n.
  rng = np.random.default_rng(0)
  h, c, n = rng.normal(size=(3, 8, 5)).astype(np.float32)

  def loss(clicked, structure="symmetric"):
    return metric_learning.triplet_loss(tf.constant(clicked), tf.constant(n), tf.constant(c),
                                        margin=5.0, structure=structure).numpy()

  center, e_cn = 2 * c - n, np.sum((c - n) ** 2, axis=1)
  expected = np.maximum(0.0, np.sum((h - center) ** 2, axis=1) - 3 * e_cn + 5.0)
  np.testing.assert_allclose(loss(h), expected, rtol=1e-5, atol=1e-5)
  radius = np.sqrt(3 * e_cn - 5.0)  # these draws have 3 e_cn > m*
  direction = (c - n) / np.linalg.norm(c - n, axis=1, keepdims=True)
  assert np.all(loss(center + 1.01 * radius[:, None] * direction) > 0)
  longer = 100.0 * direction
  assert np.all(loss(longer) > 0) and np.all(loss(longer, "asymmetric") == 0)


def test_pair_structures_of_table3_by_hand():
  assert _loss("lab_clk", 5.0) == [1.0]  # e_hc
  assert _loss("unclk_lab", 5.0) == [1.0]  # [5 - e_cn]_+ = [5 - 4]_+
  assert _loss("unclk_clk", 5.0) == [0.0]  # [5 - e_hn]_+ = [5 - 9]_+
  assert _loss("unclk_clk", 12.0) == [3.0]


def test_satisfied_triplets_cost_nothing_and_get_no_gradient():
  h, n, c = (tf.Variable(v) for v in (H, N, C))
  for structure in ("asymmetric", "symmetric", "unclk_clk"):
    with tf.GradientTape() as tape:
      loss = metric_learning.triplet_loss(h, n, c, margin=5.0, structure=structure)
    assert loss.numpy().tolist() == [0.0]
    for gradient in tape.gradient(loss, [h, n, c]):
      assert gradient is None or not np.any(gradient.numpy())


def test_violated_triplet_gradient_matches_the_derivative():
  # Eq 5 with m* = 15 is active: L = 2 e_hc - e_hn - e_cn + 15.
  # dL/dh = 4 (h - c) - 2 (h - n) = 4 (-1, 0) - 2 (-3, 0) = (2, 0).
  h = tf.Variable(H)
  with tf.GradientTape() as tape:
    loss = metric_learning.triplet_loss(h, N, C, margin=15.0, structure="symmetric")
  np.testing.assert_allclose(tape.gradient(loss, h).numpy(), [[2.0, 0.0]])


def test_users_without_unclicked_items_get_no_triplet_term():
  assert _loss("symmetric", 15.0, has_unclicked=tf.constant([False])) == [0.0]
  assert _loss("unclk_lab", 5.0, has_unclicked=tf.constant([False])) == [0.0]
  assert _loss("lab_clk", 5.0, has_unclicked=tf.constant([False])) == [1.0]  # does not use n


def test_bad_structures_and_margins_are_rejected():
  with pytest.raises(ValueError, match="Unknown triplet structure"):
    _loss("quadruplet", 5.0)
  with pytest.raises(ValueError, match="margin"):
    _loss("symmetric", 0.0)


def test_item_set_encoder_eq3_and_the_empty_set():
  layer = metric_learning.ItemSetEncoder(2)
  # User 0's set averages to (2, 1, 0.5); user 1 has no item (its mean is 0).
  mean = tf.constant([[2.0, 1.0, 0.5], [0.0, 0.0, 0.0]])
  has_items = tf.constant([True, False])
  layer(mean, has_items)
  rng = np.random.default_rng(1)
  for w in layer.weights:
    w.assign(rng.normal(size=w.shape).astype(np.float32))
  vectors, has = layer(mean, has_items)
  kernel, bias = (w.numpy() for w in layer.weights)
  np.testing.assert_allclose(vectors.numpy()[0], np.tanh(np.array([2.0, 1.0, 0.5]) @ kernel + bias),
                             rtol=1e-6)
  # No item: n = 0 exactly (not tanh(b)).
  assert np.tanh(bias).any() and vectors.numpy()[1].tolist() == [0.0, 0.0]
  assert has.numpy().tolist() == [True, False]


def test_confidence_fusion_eq7_8_and_difference_eq6():
  h, n = tf.constant([[1.0, 2.0]]), tf.constant([[4.0, -2.0]])
  np.testing.assert_allclose(fusion.difference_fusion(h, n).numpy(), [[-3.0, 4.0]])
  layer = fusion.ConfidenceFusion(2)
  layer(h, n)
  rng = np.random.default_rng(2)
  for w in layer.weights:
    w.assign(rng.normal(size=w.shape).astype(np.float32))
  kernel, bias = (w.numpy() for w in layer.weights)
  gate = 1 / (1 + np.exp(-(np.concatenate([[1.0, 2.0], [4.0, -2.0]]) @ kernel + bias)))
  encoded = layer.encode(h, n)
  np.testing.assert_allclose(encoded["confidence"].numpy()[0], gate, rtol=1e-6)
  np.testing.assert_allclose(encoded["fused"].numpy()[0], [1.0, 2.0] - gate * [4.0, -2.0],
                             rtol=1e-6)
  # A zero kernel and bias give G = 1/2: z = h - n / 2.
  for w in layer.weights:
    w.assign(tf.zeros_like(w))
  np.testing.assert_allclose(layer(h, n).numpy(), [[-1.0, 3.0]])


def _data():
  return DataSpec.for_catalog(NUM_ITEMS, stats={
      "split": schema.LEAVE_LAST_ONE_OUT, "num_items": NUM_ITEMS, "has_timestamps": True,
      "has_impressions": True})


def _model(variant="xdm", seed=0, **overrides):
  tf_keras.utils.set_random_seed(seed)
  model = xdm.XDM(xdm.variant_config(variant, **{"embedding_dim": 4, "num_heads": 2,
                                                  "max_length": 4, **overrides}), data=_data())
  model.create_variables()
  rng = np.random.default_rng(seed)
  for variable in model.weights:
    variable.assign(rng.normal(size=variable.shape).astype(np.float32) * 0.5)
  return model


# u0 was shown 3 and 4 (and 3 again); u1 was shown nothing. Labels: u0 [2, 5], u1 [0].
BATCH = {
    names.HISTORY: tf.constant([[0, 1], [4, PAD]], tf.int64),  # the sessions
    names.HISTORY_LENGTH: tf.constant([2, 1], tf.int64),
    sessions.LONG_TERM: tf.constant([[5], [PAD]], tf.int64),
    names.UNCLICKED: tf.constant([[3, 4, 3], [PAD, PAD, PAD]], tf.int64),
    names.UNCLICKED_LENGTH: tf.constant([3, 0], tf.int64),
    names.LABELS: tf.constant([[2, 5], [0, PAD]], tf.int64),
}


def _np_set(model, items):
  """Eq 3 in numpy: tanh(mean of the items' input vectors W + b); 0 for no item."""
  if not items:
    return np.zeros(4)
  table = model.item_embedding.embeddings.numpy()  # no side features: q_i = E_id(i)
  kernel, bias = (w.numpy() for w in model.item_set_encoder.weights)
  return np.tanh(np.mean([table[i] for i in items], axis=0) @ kernel + bias)


def test_xdm_outputs_and_triplet_term_match_numpy():
  model = _model()
  out = model(BATCH, training=True)
  h = model.encode(BATCH)["user_vector"].numpy()
  np.testing.assert_allclose(out[xdm.CLICKED].numpy(), h, rtol=1e-6)
  kernel, bias = (w.numpy() for w in model.confidence.weights)
  lam, margin = 10.0, 5.0
  for user, (shown, labels) in enumerate([([3, 4, 3], [2, 5]), ([], [0])]):
    n, c = _np_set(model, shown), _np_set(model, labels)
    np.testing.assert_allclose(out[xdm.UNCLICKED].numpy()[user], n, rtol=1e-5, atol=1e-6)
    gate = 1 / (1 + np.exp(-(np.concatenate([h[user], n]) @ kernel + bias)))
    z = h[user] - gate * n
    np.testing.assert_allclose(out[names.USER_VECTORS].numpy()[user, 0], z, rtol=1e-5, atol=1e-6)
    e_hc, e_hn, e_cn = (np.sum((a - b) ** 2) for a, b in ((h[user], c), (h[user], n), (c, n)))
    triplet = max(0.0, 2 * e_hc - e_hn - e_cn + margin) if shown else 0.0
    np.testing.assert_allclose(out[names.AUX_LOSSES]["triplet"].numpy()[user], lam * triplet,
                               rtol=1e-4, atol=1e-5)
  head = out[names.HEADS]["next_clicks"]
  np.testing.assert_allclose(head.query.numpy(), out[names.USER_VECTORS].numpy()[:, 0])
  # User 1 has no unclicked items: z = h exactly.
  np.testing.assert_allclose(out[names.USER_VECTORS].numpy()[1, 0], h[1])


def test_learned_scale_multiplies_z_and_leaves_the_triplet_alone():
  model = _model(learned_scale=True)
  scale = float(np.exp(model.log_scale.numpy()))
  assert scale != 1.0  # _model randomizes every weight
  scaled = model(BATCH, training=True)
  model.log_scale.assign(0.0)
  plain = model(BATCH, training=True)
  np.testing.assert_allclose(scaled[names.USER_VECTORS].numpy(),
                             scale * plain[names.USER_VECTORS].numpy(), rtol=1e-5)
  np.testing.assert_allclose(scaled[names.HEADS]["next_clicks"].query.numpy(),
                             scaled[names.USER_VECTORS].numpy()[:, 0])
  np.testing.assert_allclose(scaled[names.AUX_LOSSES]["triplet"].numpy(),
                             plain[names.AUX_LOSSES]["triplet"].numpy())
  assert _model().log_scale is None


def test_empty_unclicked_batches_train_without_nan():
  model = _model()
  empty = {**BATCH, names.UNCLICKED: tf.fill([2, 1], tf.constant(PAD, tf.int64)),
           names.UNCLICKED_LENGTH: tf.constant([0, 0], tf.int64)}
  with tf.GradientTape() as tape:
    out = model(empty, training=True)
    loss = tf.reduce_sum(out[names.USER_VECTORS]) + tf.reduce_sum(out[names.AUX_LOSSES]["triplet"])
  assert out[names.AUX_LOSSES]["triplet"].numpy().tolist() == [0.0, 0.0]
  np.testing.assert_allclose(out[names.USER_VECTORS].numpy()[:, 0], out[xdm.CLICKED].numpy())
  for gradient in tape.gradient(loss, model.trainable_variables):
    if gradient is not None:
      assert np.all(np.isfinite(tf.convert_to_tensor(gradient).numpy()))


def test_every_table_variant_wires_its_fusion_and_metric():
  for variant, (fusion_name, metric) in xdm.VARIANTS.items():
    model = _model(variant)
    out = model(BATCH, training=True)
    z, h, n = (out[names.USER_VECTORS].numpy()[:, 0], out[xdm.CLICKED].numpy(),
               out[xdm.UNCLICKED].numpy())
    if fusion_name == "none":
      np.testing.assert_allclose(z, h)
    elif fusion_name == "difference":
      np.testing.assert_allclose(z, h - n, rtol=1e-6)
    else:
      assert xdm.CONFIDENCE_GATE in out
    assert (names.AUX_LOSSES in out) == (metric != "none"), variant
  assert xdm.variant_config("xdm_wo_sym").metric == "asymmetric"
  with pytest.raises(ValueError, match="Unknown XDM variant"):
    xdm.variant_config("xdm_plus")


def test_feature_sets_add_the_filtered_unclicked_sequence():
  model = _model(max_unclicked=7, unclicked_window=259_200, exposed_more_than=1)
  unclicked = model.sample_spec().features[-1]
  assert (unclicked.max_items, unclicked.window, unclicked.exposed_more_than) == (7, 259_200, 1)
  assert "impressions" in model.sample_spec().reads


def test_bad_configs_and_data_without_impressions_are_rejected():
  assert registry.lookup("xdm").model_class is xdm.XDM
  with pytest.raises(ValueError, match="fusion"):
    xdm.XDMConfig(fusion="sum")
  with pytest.raises(ValueError, match="metric"):
    xdm.XDMConfig(metric="cosine")
  with pytest.raises(ValueError, match="margin"):
    xdm.XDMConfig(margin=0.0)
  with pytest.raises(ValueError, match="max_items"):
    xdm.XDMConfig(max_unclicked=0)
  with pytest.raises(ValueError, match="no impressions"):
    xdm.XDM(xdm.XDMConfig(embedding_dim=4, num_heads=2), data=DataSpec.for_catalog(NUM_ITEMS))


# End to end: train -> export -> index job -> a fresh process queries the artifact.

_QUERY = """
import json, sys
from retrieval import requests, serve
searcher = serve.load_artifact(sys.argv[1])
users = [requests.UserRequest(**u) for u in json.loads(sys.argv[2])]
print(json.dumps({"inputs": searcher.inputs,
                  "results": [[i for i, _ in r] for r in searcher.query(users)]}))
"""


@pytest.fixture(scope="module", params=["sdm", "xdm"])
def trained(request, tmp_path_factory):
  root = tmp_path_factory.mktemp(request.param)
  data_dir = str(root / "data")
  prepare.prepare_dataset(prepare.PrepareConfig(
      output_dir=data_dir, num_shards=1, synthetic=synthetic.SyntheticConfig(
          num_users=120, num_items=150, num_events=3000, num_categories=6)))
  config = config_lib.TrainConfig(
      model_dir=str(root / "run"),
      data=config_lib.DataConfig(data_dir=data_dir, max_length=10, batch_size=32),
      model=config_lib.ModelConfig(request.param, {"embedding_dim": 8, "num_heads": 2}),
      optimizer=config_lib.OptimizerConfig(name="adagrad", learning_rate=0.1),
      loss=config_lib.LossConfig(num_negatives=40),  # sampled: 150 items > 40
      schedule=config_lib.ScheduleConfig(train_steps=20, log_every=10),
      eval=config_lib.EvalConfig(ks=(10, 50), batch_size=64))
  result = loop.train_and_evaluate(config)
  job.run_index_job(job.JobConfig(export_dir=result["export_dir"],
                                  output_dir=str(root / "retrieval"), k=10, num_eval_queries=20))
  return request.param, root, data_dir, result


def test_trained_export_and_artifact_answer_in_a_fresh_process(trained):
  model, root, data_dir, result = trained
  terms = result["training"]
  if model == "xdm":
    assert terms["total"] == pytest.approx(terms["next_clicks"] + terms["triplet"], rel=1e-4)
  assert 0.0 <= result["metrics"]["hr@50"] <= 1.0
  with open(os.path.join(result["export_dir"], names.EXPORT_META_FILE)) as f:
    inputs = json.load(f)["signatures"]["serving_default"]["inputs"]
  expected = ["history", "history_timestamps", "user_features", "request_time"]
  if model == "xdm":
    expected = ["history", "history_timestamps", "impressions", "impression_timestamps",
                "user_features", "request_time"]
  assert sorted(inputs) == sorted(expected)
  user = requests.test_users(data_dir, 1)[0]
  assert user.history and user.impressions
  bare = dataclasses.replace(user, impressions=(), impression_timestamps=())
  users = [dataclasses.asdict(u) for u in (user, bare)]
  answer = subprocess.run([sys.executable, "-c", _QUERY, str(root / "retrieval"), json.dumps(users)],
                          capture_output=True, text=True, cwd=_REPO_ROOT, check=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  served = json.loads(answer.stdout.strip().splitlines()[-1])
  assert sorted(served["inputs"]) == sorted(expected)
  # The fresh process's lists are the brute-force ranking of the export's user vectors.
  exported = tf.saved_model.load(result["export_dir"])
  items = exported.signatures["item_embeddings"]()
  ids = items["item_ids"].numpy().astype(str)
  vectors = []
  for request, listed in zip((user, bare), served["results"]):
    inputs = requests.to_inputs([request], exported.signatures["serving_default"]
                                .structured_input_signature[1])
    vector = exported.signatures["serving_default"](
        **{k: tf.constant(v) for k, v in inputs.items()})["user_vectors"].numpy()[0, 0]
    scores = items["embeddings"].numpy() @ vector
    history = set(request.history)
    assert listed == [ids[i] for i in np.argsort(-scores, kind="stable")
                      if ids[i] not in history][:10]
    vectors.append(vector)
  # XDM's unclicked items move the user vector (z = h - G n); SDM ignores them.
  assert np.allclose(vectors[0], vectors[1]) == (model == "sdm")
