"""End-to-end tests of the index job on the toy export (tests/retrieval/toy_export.py)."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from input_pipeline import schema
from retrieval import artifact as artifact_lib
from retrieval import index as index_lib
from retrieval import job
from retrieval import requests
from retrieval import serve
from tests.retrieval import toy_export
import tensorflow as tf  # pylint: disable=g-bad-import-order
from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-bad-import-order

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _catalog(num_items, dim, seed):
  rng = np.random.default_rng(seed)
  item_ids = np.array([f"item{i}" for i in range(num_items)])
  return item_ids, rng.standard_normal((num_items, dim)).astype(np.float32)


def _exact_top_k(histories, item_ids, embeddings, k, exclude_history=True, bias=None):
  """Numpy brute force: an item's score is its max over the user's two vectors, plus bias."""
  vectors = toy_export.toy_user_vectors(histories, list(item_ids), embeddings)  # [B, 2, D]
  scores = np.max(vectors @ embeddings.T, axis=1) + (0 if bias is None else bias)  # [B, N]
  if exclude_history:
    for row, history in enumerate(histories):
      scores[row, np.isin(item_ids, history)] = -np.inf
  top = np.argsort(-scores, axis=1)[:, :k]
  return item_ids[top], np.take_along_axis(scores, top, axis=1)


def _serve(artifact_path, histories, fallback=None, unknown=None):
  out = tf.saved_model.load(artifact_path).signatures["serving_default"](
      history=tf.constant(histories), history_timestamps=tf.zeros([len(histories), 3], tf.int64))
  if fallback is not None:
    assert out["popular_fallback"].numpy().tolist() == fallback
  if unknown is not None:
    assert out["unknown_items"].numpy().tolist() == unknown
  return out["item_ids"].numpy().astype(str), out["scores"].numpy()


@pytest.mark.parametrize("exclude_history", [True, False])
def test_brute_force_artifact_equals_numpy(tmp_path, exclude_history):
  item_ids, embeddings = _catalog(40, 4, seed=0)
  toy_export.write_toy_export(str(tmp_path / "export"), item_ids, embeddings)
  report = job.run_index_job(job.JobConfig(
      export_dir=str(tmp_path / "export"), output_dir=str(tmp_path / "out"), k=5,
      exclude_history=exclude_history, num_eval_queries=20, eval_batch_size=8))
  assert report["index"] == {"kind": "brute_force"}  # 40 items: auto picks brute force
  assert report["eval"]["recall_at_k"] == 1.0 and report["eval"]["num_vectors"] == 2
  with open(tmp_path / "out" / "index_report.json") as f:
    assert json.load(f)["num_items"] == 40

  histories = [["item3", "item17", "item8"], ["item0", "item39", ""]]
  ids, scores = _serve(report["artifact_path"], histories, fallback=[False, False])
  want_ids, want_scores = _exact_top_k([["item3", "item17", "item8"], ["item0", "item39"]],
                                       item_ids, embeddings, 5, exclude_history)
  np.testing.assert_array_equal(ids, want_ids)
  # The toy's mean vector scores the history items themselves highly: some of them
  # are in the unmasked list (so the masked test really removes something).
  assert exclude_history or {"item3", "item17", "item8", "item0", "item39"} & set(ids.flat)
  np.testing.assert_allclose(scores, want_scores, rtol=1e-5)


def test_each_run_adds_a_version_and_never_touches_foreign_files(tmp_path):
  item_ids, embeddings = _catalog(20, 3, seed=2)
  toy_export.write_toy_export(str(tmp_path / "export"), item_ids, embeddings)
  config = job.JobConfig(export_dir=str(tmp_path / "export"), output_dir=str(tmp_path / "out"),
                         k=3, num_eval_queries=0)
  first = job.run_index_job(config)
  second = job.run_index_job(config)
  base = tmp_path / "out" / "artifact"
  assert (first["version"], second["version"]) == (1, 2)
  assert (first["artifact_path"], second["artifact_path"]) == (str(base / "1"), str(base / "2"))
  assert sorted(os.listdir(tmp_path / "out")) == ["artifact", "index_report.json"]
  assert sorted(os.listdir(base)) == ["1", "2"]  # version 1 kept, for rollback
  with open(base / "2" / "assets.extra" / "retrieval_meta.json") as f:
    manifest = json.load(f)
  with open(tmp_path / "out" / "index_report.json") as f:
    assert json.load(f) == {**manifest, "artifact_path": second["artifact_path"]}
  # The manifest says what the artifact is without loading it.
  assert manifest["model"] == "toy" and manifest["inputs"] == ["history", "history_timestamps"]
  assert manifest["index"] == {"kind": "brute_force"} and manifest["tuning"] is None
  assert manifest["artifact_bytes"] > manifest["index_bytes"] == 20 * (3 + 1) * 4
  assert manifest["peak_memory_bytes"] > 0 and manifest["build_seconds"] >= 0

  foreign = tmp_path / "mine" / "artifact"
  foreign.mkdir(parents=True)
  (foreign / "model.bin").write_bytes(b"not ours")
  with pytest.raises(ValueError, match=r"not artifact versions written by this project \(model.bin\)"):
    job.run_index_job(dataclasses.replace(config, output_dir=str(tmp_path / "mine")))
  assert os.listdir(foreign) == ["model.bin"] and (foreign / "model.bin").read_bytes() == b"not ours"
  # An artifact of the earlier, unversioned layout is kept; the message says how to move it.
  (foreign / "model.bin").unlink()
  (foreign / "saved_model.pb").write_bytes(b"old")
  with pytest.raises(ValueError, match=r"unversioned artifact .* mv .*/artifact.old .*/artifact/1"):
    job.run_index_job(dataclasses.replace(config, output_dir=str(tmp_path / "mine")))
  assert os.listdir(foreign) == ["saved_model.pb"]


@pytest.mark.parametrize("kind", ["brute_force", "scann"])
def test_item_bias_is_served_through_augmented_vectors(tmp_path, kind):
  # A bias of +-3 reorders the lists: the artifact must rank by <u, e> + b exactly as the
  # model scores (ScaNN searching every leaf and reordering every item is exact).
  item_ids, embeddings = _catalog(60, 4, seed=6)
  bias = np.random.default_rng(7).uniform(-3, 3, size=60).astype(np.float32)
  toy_export.write_toy_export(str(tmp_path / "export"), item_ids, embeddings, bias=bias)
  report = job.run_index_job(job.JobConfig(
      export_dir=str(tmp_path / "export"), output_dir=str(tmp_path / "out"), k=5,
      index=index_lib.IndexConfig(kind=kind, num_leaves=3, num_leaves_to_search=3, reorder=60),
      num_eval_queries=30))
  assert report["item_bias"] and report["dim"] == 4
  assert report["eval"]["recall_at_k"] == 1.0
  histories = [["item3", "item17", "item8"], ["item0", "item39", ""]]
  ids, scores = _serve(report["artifact_path"], histories)
  want_ids, want_scores = _exact_top_k([["item3", "item17", "item8"], ["item0", "item39"]],
                                       item_ids, embeddings, 5, bias=bias)
  np.testing.assert_array_equal(ids, want_ids)
  np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-5)
  unbiased, _ = _exact_top_k([["item3", "item17", "item8"]], item_ids, embeddings, 5)
  assert unbiased[0].tolist() != want_ids[0].tolist()  # the bias matters in this case


def test_no_known_history_gets_the_popular_items(tmp_path):
  # Counts make item7, item2, item5 the most popular. An empty history and one of
  # unknown ids both get them, with their counts as scores.
  item_ids, embeddings = _catalog(10, 3, seed=8)
  counts = np.array([1, 2, 9, 0, 3, 8, 0, 10, 1, 1])
  toy_export.write_toy_export(str(tmp_path / "export"), item_ids, embeddings, counts=counts)
  report = job.run_index_job(job.JobConfig(
      export_dir=str(tmp_path / "export"), output_dir=str(tmp_path / "out"), k=3,
      num_eval_queries=0))
  # Unknown ids are ignored and counted: "nope" once, "gone" and "nope" beside item1.
  ids, scores = _serve(report["artifact_path"], [["", "", ""], ["nope", "", ""],
                                                 ["item1", "gone", "nope"]],
                       fallback=[True, True, False], unknown=[0, 1, 2])
  assert ids[:2].tolist() == [["item7", "item2", "item5"]] * 2
  assert scores[:2].tolist() == [[10, 9, 8]] * 2


def test_identical_interests_are_deduplicated(tmp_path):
  # With one history item both toy vectors equal that item's embedding, so both
  # interests retrieve the same list; the artifact must return it once, not twice
  # (and without the history item 4 itself).
  item_ids, embeddings = _catalog(30, 3, seed=1)
  toy_export.write_toy_export(str(tmp_path / "export"), item_ids, embeddings)
  report = job.run_index_job(job.JobConfig(
      export_dir=str(tmp_path / "export"), output_dir=str(tmp_path / "out"), k=6,
      num_eval_queries=0))
  ids, _ = _serve(report["artifact_path"], [["item4", "", ""]])
  assert len(set(ids[0])) == 6
  ranking = [i for i in np.argsort(-(embeddings @ embeddings[4])) if i != 4]
  np.testing.assert_array_equal(ids[0], item_ids[ranking[:6]])


def test_scann_artifact_in_a_fresh_process(tmp_path):
  # 300 items, 5 leaves, all searched, all reordered: ScaNN must then be exact.
  item_ids, embeddings = _catalog(300, 8, seed=2)
  toy_export.write_toy_export(str(tmp_path / "export"), item_ids, embeddings)
  report = job.run_index_job(job.JobConfig(
      export_dir=str(tmp_path / "export"), output_dir=str(tmp_path / "out"), k=10,
      index=index_lib.IndexConfig(kind="scann", num_leaves=5, num_leaves_to_search=5,
                                  reorder=300),
      num_eval_queries=50, eval_batch_size=16))
  assert report["index"]["kind"] == "scann"
  assert report["eval"]["recall_at_k"] == 1.0
  assert report["eval"]["qps"] > 0 and report["eval"]["brute_force_qps"] > 0

  # The loading process knows nothing of the job: it must register ScaNN's ops itself.
  result = subprocess.run(
      [sys.executable, "-m", "retrieval.serve", f"--artifact_dir={tmp_path / 'out'}",
       "--history=item5,item250,item17", "--top=4"],
      cwd=_REPO_ROOT, capture_output=True, text=True, timeout=120,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
  want_ids, want_scores = _exact_top_k([["item5", "item250", "item17"]], item_ids, embeddings, 4)
  assert [line[1] for line in lines] == list(want_ids[0])
  np.testing.assert_allclose([float(line[2]) for line in lines], want_scores[0], rtol=1e-4)


def _op_types(artifact_path):
  """Every op type in an artifact's graphs and functions."""
  saved = saved_model_pb2.SavedModel()
  with open(os.path.join(artifact_path, "saved_model.pb"), "rb") as f:
    saved.ParseFromString(f.read())
  return {node.op for graph in saved.meta_graphs
          for nodes in [graph.graph_def.node] + [f.node_def for f in graph.graph_def.library.function]
          for node in nodes}


# Loads an artifact the way stock TF Serving would: TensorFlow alone, none of our code,
# no ScaNN, no TFRS; prints the top items of one user and the modules that got loaded.
_PLAIN_LOADER = """
import sys
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = serve(history=tf.constant([["item3", "item17", "item8"]]),
            history_timestamps=tf.constant([[1, 2, 3]], tf.int64))
print(",".join(i.decode() for i in out["item_ids"].numpy()[0]))
print(sorted(m for m in sys.modules if m.split(".")[0] in
             ("scann", "tensorflow_recommenders", "tf_keras", "retrieval", "common")))
"""


def test_brute_force_variant_loads_in_plain_tensorflow_without_scann(tmp_path):
  # The variant for stock TF Serving (docs/retrieval.md): only standard ops. A ScaNN
  # artifact of the same export is the control: its graph has ScaNN's custom ops.
  item_ids, embeddings = _catalog(60, 4, seed=9)
  toy_export.write_toy_export(str(tmp_path / "export"), item_ids, embeddings)
  reports = {kind: job.run_index_job(job.JobConfig(
      export_dir=str(tmp_path / "export"), output_dir=str(tmp_path / kind), k=5,
      index=index_lib.IndexConfig(kind=kind), num_tuning_queries=20, num_eval_queries=0))
             for kind in ("brute_force", "scann")}
  assert not [op for op in _op_types(reports["brute_force"]["artifact_path"]) if ">" in op]
  assert {op for op in _op_types(reports["scann"]["artifact_path"]) if ">" in op} >= {
      "Scann>ScannSearchBatched"}

  result = subprocess.run([sys.executable, "-c", _PLAIN_LOADER,
                           reports["brute_force"]["artifact_path"]],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=120,
                          env={"PATH": os.environ["PATH"], "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert result.returncode == 0, result.stderr[-3000:]
  top, modules = result.stdout.strip().splitlines()
  want_ids, _ = _exact_top_k([["item3", "item17", "item8"]], item_ids, embeddings, 5)
  assert top.split(",") == list(want_ids[0])
  assert modules == "[]"


def test_job_tunes_scann_and_reports_recall_on_held_out_users(tmp_path):
  # 3,000 clustered items: 55 leaves of 54.5 items. The tuning starts where scoring
  # 100 k = 2,000 items takes ceil(2000 / 54.5) = 37 leaves, with max(4 k, 100) = 100
  # candidates reordered, and raises the effort until recall reaches 0.98.
  rng = np.random.default_rng(3)
  centres = rng.standard_normal((30, 8))
  embeddings = (centres[rng.integers(30, size=3000)] + 0.3 * rng.standard_normal((3000, 8)))
  item_ids = np.array([f"i{i}" for i in range(3000)])
  toy_export.write_toy_export(str(tmp_path / "export"), item_ids, embeddings.astype(np.float32))
  report = job.run_index_job(job.JobConfig(
      export_dir=str(tmp_path / "export"), output_dir=str(tmp_path / "out"), k=20,
      index=index_lib.IndexConfig(kind="scann", target_recall=0.98), num_tuning_queries=200,
      num_eval_queries=100))
  index, tuning = report["index"], report["tuning"]
  assert index["num_leaves"] == 55
  first = tuning["trials"][0]
  assert (first["num_leaves_to_search"], first["reorder"]) == (37, 100)
  chosen = tuning["chosen"]
  assert (index["num_leaves_to_search"], index["reorder"]) == (chosen["num_leaves_to_search"],
                                                               chosen["reorder"])
  assert tuning["met_target"] and chosen["recall_lower_bound"] >= 0.98 and chosen["qps"] > 0
  # Two toy vectors per user; tuning and reported users are drawn with different seeds.
  assert tuning["num_queries"] == 400 and tuning["queries"].startswith("synthetic users")
  assert report["eval"]["recall_at_k"] >= 0.95 and report["eval"]["num_queries"] == 100
  searcher = serve.load_artifact(str(tmp_path / "out"))
  (top,) = searcher.query_histories([["i1", "i2"]])
  assert len(top) == 20 and len({item for item, _ in top}) == 20
  assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)


def test_export_dir_resolution_and_errors(tmp_path):
  item_ids, embeddings = _catalog(10, 2, seed=4)
  root = str(tmp_path / "export")
  toy_export.write_toy_export(root, item_ids, embeddings, timestamp=100)
  newest = toy_export.write_toy_export(root, item_ids, embeddings, timestamp=1000)
  os.makedirs(os.path.join(root, "tmp-2000"))  # an unfinished export is ignored
  assert artifact_lib.resolve_export_dir(root) == newest  # 1000 > 100 numerically
  assert artifact_lib.resolve_export_dir(newest) == newest
  with pytest.raises(FileNotFoundError, match="does not exist"):
    artifact_lib.resolve_export_dir(str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match="No SavedModel in"):
    artifact_lib.resolve_export_dir(str(tmp_path))


def test_export_with_wrong_signature_is_explained(tmp_path):

  class NoItems(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history")])
    def serve(self, history):
      return {"user_vectors": tf.zeros([tf.shape(history)[0], 1, 2])}

  module = NoItems()
  tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.serve})
  with pytest.raises(ValueError, match=r"lacks signature\(s\) \['item_embeddings'\]"):
    artifact_lib.load_export(str(tmp_path / "1"))

  tf.saved_model.save(module, str(tmp_path / "2"),
                      signatures={"serving_default": module.serve, "item_embeddings": module.serve})
  with pytest.raises(ValueError, match=r"lacks the outputs \['history_length', 'unknown_items'\]"):
    artifact_lib.load_export(str(tmp_path / "2"))


def test_queries_come_from_the_export_data_sets_test_users(tmp_path):
  item_ids, embeddings = _catalog(40, 2, seed=5)  # ScaNN's hashing needs >= 16 items
  data_dir = tmp_path / "data"
  os.makedirs(data_dir / "test")
  schema.write_tsv(str(data_dir / schema.VOCAB_FILE), ["index", "item_id", "count"],
                   [(i, raw, 40 - i) for i, raw in enumerate(item_ids)])
  with tf.io.TFRecordWriter(str(data_dir / "test" / schema.shard_name(0, 1))) as writer:
    # User a: input items 0..4 (target item 5 at time 60); the last max_length = 3 are kept.
    writer.write(schema.encode_timeline(user_id="a", items=[0, 1, 2, 3, 4, 5],
                                        timestamps=[10, 20, 30, 40, 50, 60], target_start=5))
    # User b: input [2].
    writer.write(schema.encode_timeline(user_id="b", items=[2, 1], timestamps=[7, 8],
                                        target_start=1))
    # User c has no input before its target: not a query.
    writer.write(schema.encode_timeline(user_id="c", items=[3], timestamps=[1], target_start=0))
  users = requests.test_users(str(data_dir), 10)
  assert [(u.user_id, u.request_time, list(u.targets)) for u in users] == [
      ("a", 60, ["item5"]), ("b", 8, ["item1"]), ("c", 1, ["item3"])]
  specs = {"history": None, "history_timestamps": None, "request_time": None}
  queries = requests.to_inputs([u for u in users if u.history], specs, max_length=3)
  np.testing.assert_array_equal(queries["history"],
                                [[b"item2", b"item3", b"item4"], [b"item2", b"", b""]])
  np.testing.assert_array_equal(queries["history_timestamps"], [[30, 40, 50], [7, 0, 0]])
  np.testing.assert_array_equal(queries["request_time"], [60, 8])
  with pytest.raises(ValueError, match="cannot fill"):
    requests.to_inputs(users, {"weather": None})

  # The validation split: users the ScaNN effort is tuned on, never the reported ones.
  os.makedirs(data_dir / "valid")
  with tf.io.TFRecordWriter(str(data_dir / "valid" / schema.shard_name(0, 1))) as writer:
    for user, items in (("d", [0, 1, 2]), ("e", [5, 4]), ("f", [3, 1])):
      writer.write(schema.encode_timeline(user_id=user, items=items,
                                          timestamps=list(range(len(items))),
                                          target_start=len(items) - 1))

  toy_export.write_toy_export(str(tmp_path / "export"), item_ids, embeddings, max_length=3,
                              data_dir=str(data_dir))
  report = job.run_index_job(job.JobConfig(
      export_dir=str(tmp_path / "export"), output_dir=str(tmp_path / "out"), k=2,
      index=index_lib.IndexConfig(kind="scann")))
  assert report["eval"]["queries"] == f"test users of {data_dir}"
  assert report["eval"]["num_queries"] == 2
  assert report["tuning"]["queries"] == f"validation users of {data_dir}"
  assert report["tuning"]["num_queries"] == 3 * 2  # two toy vectors per user


def test_recall_at_k_and_synthetic_users():
  # User 1 shares a and c with the exact list: 2/3; user 2 shares nothing real ("" is no
  # item): 0. Mean 1/3.
  approx = np.array([[b"a", b"b", b"c"], [b"x", b"", b""]])
  exact = np.array([[b"a", b"c", b"d"], [b"y", b"z", b""]])
  assert job.recall_at_k(approx, exact) == pytest.approx(1 / 3)

  users = job.synthetic_users(np.array(["i0", "i1", "i2"]), num_queries=50, max_length=4, seed=0)
  queries = requests.to_inputs(users, {"history": None, "history_timestamps": None})
  history, stamps = queries["history"], queries["history_timestamps"]
  assert history.shape == stamps.shape and history.shape[0] == 50 and history.shape[1] <= 4
  lengths = (history != b"").sum(axis=1)
  assert lengths.min() >= 1 and lengths.max() <= 4
  for row, length in zip(range(50), lengths):
    assert (history[row, length:] == b"").all() and (stamps[row, length:] == 0).all()
    assert (np.diff(stamps[row, :length]) >= 3600).all()  # gaps of 1 to 24 hours
  # Popularity 1/(index+1): item 0 is drawn about twice as often as item 1.
  counts = [(history == item).sum() for item in (b"i0", b"i1")]
  assert 1.5 < counts[0] / counts[1] < 2.7, counts
