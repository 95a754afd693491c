"""The index job: export -> tuned ScaNN (or brute-force) artifact version + manifest.

`run_index_job(config)` is what `python -m retrieval.index_main` runs:

  1. load the newest export under `export_dir` and check its signatures;
  2. index its candidate vectors (`retrieval/index.py`), with the item bias as an extra
     column when the model has one (`artifact.Catalog.index_vectors`);
  3. for ScaNN, tune the search effort (leaves searched, candidates reordered) to
     `index.target_recall` on the user vectors of tuning users (`index.tune`);
  4. measure, on other, held-out users, recall@k of the artifact against the exact
     brute-force artifact and the queries/second of both;
  5. write the next version `OUTPUT_DIR/artifact/N/` (SavedModel, with the manifest
     `assets.extra/retrieval_meta.json`: model, checkpoint step, data set, schema
     version, index configuration, tuning, recall, queries/second, build time, sizes)
     and the same manifest as `OUTPUT_DIR/index_report.json`.

Users. Real users when possible: the export's `export_meta.json` names the data set it
was trained on; the job tunes on the first `num_tuning_queries` users of its
validation split and reports on the first `num_eval_queries` users of its test split
(`requests.test_users`: their last `max_length` items before the held-out targets and
whatever else the export's signature takes), so the reported recall is measured on
users the tuning never saw. When that data set is not readable from here, the job
makes users from the catalog itself (two different seeds): lengths uniform in [1,
max_length], items drawn with probability proportional to 1 / (index + 1) (the
catalog is ordered by descending training frequency, so this mimics Zipf
popularity), timestamps one to 24 hours apart. Either way they go through the
export's real user model, so recall is measured on the model's own user vectors,
with every interest vector of a multi-interest model. A recall@100 of 0.95 means that
on average 95 of the exact top 100 items were served.
"""

import dataclasses
import os
import resource
import time
from typing import Any, Dict, List, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from common import files
from common import names
from retrieval import artifact as artifact_lib
from retrieval import index as index_lib
from retrieval import requests
from retrieval import versions

REPORT_FILE = "index_report.json"
_DEFAULT_MAX_LENGTH = 20
# Cap on batch x vectors x items scored at once by the brute-force reference (floats).
_BRUTE_FORCE_SCORES_PER_BATCH = 1 << 25
# Manifest format; bump when a key changes meaning.
MANIFEST_VERSION = 1


@dataclasses.dataclass(frozen=True)
class JobConfig:
  """The index job's settings.

  Attributes:
    export_dir: `MODEL_DIR/export` (newest export) or one `MODEL_DIR/export/<timestamp>`.
    output_dir: receives `artifact/N/` (the next version) and `index_report.json`.
    k: items served per user.
    index: how to index and the target recall (`retrieval.index.IndexConfig`).
    exclude_history: never serve a user the items of the history it was queried with.
    num_tuning_queries: users the ScaNN effort is tuned on; 0 keeps the sizing's start.
    num_eval_queries: held-out users for the reported recall and QPS; 0 skips it.
    eval_batch_size: users per serving call when measuring throughput.
    seed: seeds the synthetic users.
  """
  export_dir: str
  output_dir: str
  k: int = 100
  index: index_lib.IndexConfig = index_lib.IndexConfig()
  exclude_history: bool = True
  num_tuning_queries: int = 500
  num_eval_queries: int = 1000
  eval_batch_size: int = 256
  seed: int = 0


def synthetic_users(item_ids: np.ndarray, num_queries: int, max_length: int,
                    seed: int) -> List[requests.UserRequest]:
  """Synthetic users over the catalog (see the module docstring)."""
  rng = np.random.default_rng(seed)
  popularity = 1.0 / np.arange(1, len(item_ids) + 1)
  lengths = rng.integers(1, max_length + 1, size=num_queries)
  items = rng.choice(len(item_ids), size=(num_queries, max_length), p=popularity / popularity.sum())
  times = 1_600_000_000 + np.cumsum(rng.integers(3600, 24 * 3600 + 1,
                                                 size=(num_queries, max_length)), axis=1)
  raw = np.asarray(item_ids).astype(str)
  return [requests.UserRequest(history=list(raw[items[u, :n]]), timestamps=list(times[u, :n]))
          for u, n in enumerate(lengths)]


def _batches(features: Dict[str, np.ndarray], batch_size: int):
  num = len(features[names.RAW_HISTORY])
  for start in range(0, num, batch_size):
    yield {name: tf.constant(value[start:start + batch_size]) for name, value in features.items()}


def serve_all(serving_fn, features: Dict[str, np.ndarray], batch_size: int):
  """Runs `serving_fn` over all queries.

  Returns:
    (item_ids bytes `[n, k]`, scores `[n, k]`, queries/second). One call on the first
    batch before timing traces the function and warms caches.
  """
  batches = list(_batches(features, batch_size))
  serving_fn(**batches[0])
  start = time.perf_counter()
  outputs = [serving_fn(**batch) for batch in batches]
  qps = len(features[names.RAW_HISTORY]) / (time.perf_counter() - start)
  ids = np.concatenate([o[names.ITEM_IDS].numpy() for o in outputs])
  scores = np.concatenate([o[names.SCORES].numpy() for o in outputs])
  return ids, scores, qps


def latency_ms(serving_fn, features: Dict[str, np.ndarray], num_queries: int = 50) -> float:
  """Median milliseconds for one user (batch of 1), after one warm-up call."""
  singles = list(_batches({n: v[:num_queries + 1] for n, v in features.items()}, 1))
  serving_fn(**singles[0])
  times = []
  for query in singles[1:]:
    start = time.perf_counter()
    serving_fn(**query)
    times.append(time.perf_counter() - start)
  return 1000.0 * float(np.median(times))


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
  """Mean over users of |approx top-k & exact top-k| / k (b"" marks no item, never a hit)."""
  return float(index_lib.recall_per_query(approx_ids, exact_ids).mean())


class _Users:
  """The tuning and held-out users of a job, in raw ids, with where they come from."""

  def __init__(self, config: JobConfig, item_ids: np.ndarray, meta: Dict[str, Any]):
    self.max_length = int(meta.get("max_length", _DEFAULT_MAX_LENGTH))
    data_dir = meta.get("data_dir")
    self.tuning, self.tuning_source = self._read(data_dir, "valid", config.num_tuning_queries)
    self.held_out, self.held_out_source = self._read(data_dir, "test", config.num_eval_queries)
    if config.num_tuning_queries and not self.tuning:
      self.tuning = synthetic_users(item_ids, config.num_tuning_queries, self.max_length,
                                    config.seed + 1)
      self.tuning_source = "synthetic users over the catalog (retrieval/job.py)"
    if config.num_eval_queries and not self.held_out:
      self.held_out = synthetic_users(item_ids, config.num_eval_queries, self.max_length,
                                      config.seed)
      self.held_out_source = "synthetic users over the catalog (retrieval/job.py)"

  @staticmethod
  def _read(data_dir: Optional[str], split: str, count: int):
    if not data_dir or not count:
      return [], ""
    try:
      users = [u for u in requests.test_users(data_dir, count, split=split) if u.history]
    except (FileNotFoundError, ValueError) as e:
      logging.info("No %s users to query with (%s); using synthetic users.", split, e)
      return [], ""
    return users, f"{'validation' if split == 'valid' else 'test'} users of {data_dir}"

  def inputs(self, users: List[requests.UserRequest], export) -> Dict[str, np.ndarray]:
    specs = export.signatures[artifact_lib.SERVING_SIGNATURE].structured_input_signature[1]
    return requests.to_inputs(users, specs, self.max_length)


def _tuning_vectors(export, inputs: Dict[str, np.ndarray], augmented: bool,
                    batch_size: int) -> np.ndarray:
  """The index queries of the tuning users: `[users x vectors, dim (+1 with a bias)]`.

  Users without a known history item are left out (they get the popular fallback).
  """
  serve = export.signatures[artifact_lib.SERVING_SIGNATURE]
  vectors = []
  for batch in _batches(inputs, batch_size):
    out = serve(**batch)
    known = out[names.HISTORY_LENGTH].numpy() > 0
    vectors.append(out[names.USER_VECTORS].numpy()[known])
  vectors = np.concatenate(vectors)  # [users, num_vectors, dim]
  if augmented:
    vectors = np.concatenate([vectors, np.ones(vectors.shape[:2] + (1,), np.float32)], axis=2)
  return vectors.reshape(-1, vectors.shape[-1])


def _evaluate(config: JobConfig, export, artifact, items: artifact_lib.Catalog,
              queries: Dict[str, np.ndarray], description: str) -> Dict[str, Any]:
  num_queries = len(queries[names.RAW_HISTORY])
  first_user = {name: tf.constant(value[:1]) for name, value in queries.items()}
  num_vectors = int(artifact.user_vectors(**first_user).shape[1])
  num_items = int(items.embeddings.shape[0])
  logging.info("Serving %d held-out users (%s; %d vector(s) each) through the artifact.",
               num_queries, description, num_vectors)
  ids, _, qps = serve_all(artifact.serving_fn(), queries, config.eval_batch_size)
  result = {
      "queries": description,
      "num_queries": num_queries,
      "num_vectors": num_vectors,
      "batch_size": config.eval_batch_size,
      "qps": qps,
      "latency_ms_batch1": latency_ms(artifact.serving_fn(), queries),
  }
  if artifact.index.is_exact():
    result.update(recall_at_k=1.0, exact=True)
    return result
  logging.info("Measuring the exact brute-force reference on the same users.")
  exact = artifact_lib.RetrievalArtifact(
      export, index_lib.BruteForceIndex(items.index_vectors(), config.k), items, config.k,
      exclude_history=config.exclude_history)
  exact_batch = max(1, min(config.eval_batch_size,
                           _BRUTE_FORCE_SCORES_PER_BATCH // (num_vectors * num_items)))
  exact_ids, _, exact_qps = serve_all(exact.serving_fn(), queries, exact_batch)
  result.update(
      recall_at_k=recall_at_k(ids, exact_ids), exact=False,
      brute_force_qps=exact_qps, brute_force_batch_size=exact_batch,
      brute_force_latency_ms_batch1=latency_ms(exact.serving_fn(), queries),
      speedup=qps / exact_qps)
  return result


def _provenance(export_path: str, meta: Dict[str, Any]) -> Dict[str, Any]:
  """What the artifact was built from: model, checkpoint step, data set, schema version."""
  stats = meta.get("data_stats") or {}
  return {
      "model": meta.get("model"),
      "checkpoint": meta.get("checkpoint"),
      "checkpoint_step": meta.get("step"),
      "data_dir": meta.get("data_dir"),
      "dataset": stats.get("dataset"),
      "schema_version": stats.get("format_version"),
      "export_path": os.path.abspath(export_path),
      "export_meta": meta,
  }


def run_index_job(config: JobConfig) -> Dict[str, Any]:
  """Builds, tunes, measures and writes the next artifact version; returns its manifest
  (plus `artifact_path`)."""
  export_path = artifact_lib.resolve_export_dir(config.export_dir)
  base = os.path.abspath(os.path.join(config.output_dir, versions.ARTIFACT_SUBDIR))
  versions.check_base(base)  # before the slow part
  logging.info("Loading export %s", export_path)
  export = artifact_lib.load_export(export_path)
  meta = artifact_lib.read_export_meta(export_path)
  items = artifact_lib.catalog(export)
  vectors = items.index_vectors()
  num_items, dim = (int(d) for d in items.embeddings.shape)
  users = _Users(config, items.item_ids.numpy(), meta)
  logging.info("Indexing %d items x %d dims%s (index=%s, k=%d).", num_items, dim,
               " plus the item bias" if items.has_bias else "", config.index.kind, config.k)
  start = time.perf_counter()
  index = index_lib.build_index(vectors, config.k, config.index)
  build_seconds = time.perf_counter() - start
  logging.info("Built a %s index in %.1f s: %s", index.kind, build_seconds, index.config())
  tuning = None
  if index.kind == index_lib.SCANN and users.tuning:
    queries = _tuning_vectors(export, users.inputs(users.tuning, export), items.has_bias,
                              config.eval_batch_size)
    logging.info("Tuning the search effort on %d vectors of %s.", len(queries), users.tuning_source)
    tuning = index_lib.tune(
        index, vectors, queries, config.k, config.index.target_recall,
        leaves_to_search=config.index.num_leaves_to_search and [config.index.num_leaves_to_search],
        reorders=config.index.reorder and [config.index.reorder],
        batch_size=config.eval_batch_size)
    logging.info("Chose %d of %d leaves, %d reordered: recall@%d %.4f on the tuning users.",
                 index.params.num_leaves_to_search, index.params.num_leaves, index.params.reorder,
                 config.k, tuning.chosen.recall)
  artifact = artifact_lib.RetrievalArtifact(export, index, items, config.k,
                                            exclude_history=config.exclude_history)

  manifest = {
      "manifest_version": MANIFEST_VERSION,
      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
      **_provenance(export_path, meta),
      "inputs": sorted(artifact.serving_fn().structured_input_signature[1]),
      "num_items": num_items,
      "dim": dim,
      "item_bias": items.has_bias,
      "k": config.k,
      "exclude_history": config.exclude_history,
      "index": index.config(),
      "index_bytes": index.size_bytes(),
      "build_seconds": build_seconds,
      "tuning": tuning and {"queries": users.tuning_source, **tuning.to_json()},
  }
  if users.held_out:
    manifest["eval"] = ev = _evaluate(config, export, artifact, items,
                                      users.inputs(users.held_out, export), users.held_out_source)
    logging.info("recall@%d vs brute force: %.4f; %.0f users/s (batch %d); %.2f ms per user "
                 "(batch 1).", config.k, ev["recall_at_k"], ev["qps"], config.eval_batch_size,
                 ev["latency_ms_batch1"])
  # ru_maxrss is in KiB on Linux.
  manifest["peak_memory_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

  logging.info("Writing the next version under %s", base)
  path, manifest = artifact_lib.save_artifact(artifact, base, manifest)
  report = {**manifest, "artifact_path": path}
  report_path = os.path.join(config.output_dir, REPORT_FILE)
  files.write_json(report_path, report)
  logging.info("Wrote %s (version %d) and %s", path, manifest["version"], report_path)
  return report
