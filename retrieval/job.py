"""The index job: export -> ScaNN (or brute-force) artifact + recall/QPS report.

`run_index_job(config)` is what `python -m retrieval.index_main` runs:

  1. load the newest export under `export_dir` and check its signatures;
  2. index its candidate vectors (`retrieval/index.py`), with the item bias as an extra
     column when the model has one (`artifact.Catalog.index_vectors`);
  3. measure, on sample queries, recall@k of the artifact against the exact
     brute-force artifact and the queries/second of both;
  4. write `OUTPUT_DIR/artifact/` (SavedModel) and `OUTPUT_DIR/index_report.json`.

Sample queries. Real users when possible: the export's `export_meta.json` names the
data set it was trained on, and the job takes the requests of its first
`num_eval_queries` test users (`requests.test_users`: their last `max_length` items
before the test targets and whatever else the export's signature takes). When that
data set is not readable from here, the job makes users from the catalog itself: lengths uniform in [1, max_length], items drawn
with probability proportional to 1 / (index + 1) (the catalog is ordered by
descending training frequency, so this mimics Zipf popularity), timestamps one to 24
hours apart. Either way they go through the export's real user model, so recall is
measured on the model's own user vectors, with every interest vector of a
multi-interest model. A recall@100 of 0.95 means that on average 95 of the exact top
100 items were served.
"""

import dataclasses
import os
import time
from typing import Any, Dict, List

from absl import logging
import numpy as np
import tensorflow as tf

from common import files
from common import names
from retrieval import artifact as artifact_lib
from retrieval import index as index_lib
from retrieval import requests

ARTIFACT_SUBDIR = "artifact"
REPORT_FILE = "index_report.json"
_DEFAULT_MAX_LENGTH = 20
# Cap on batch x vectors x items scored at once by the brute-force reference (floats).
_BRUTE_FORCE_SCORES_PER_BATCH = 1 << 25


@dataclasses.dataclass(frozen=True)
class JobConfig:
  """The index job's settings.

  Attributes:
    export_dir: `MODEL_DIR/export` (newest export) or one `MODEL_DIR/export/<timestamp>`.
    output_dir: receives `artifact/` and `index_report.json`.
    k: items served per user.
    index: how to index (`retrieval.index.IndexConfig`).
    exclude_history: never serve a user the items of the history it was queried with.
    num_eval_queries: sample users for recall and QPS; 0 skips the measurement.
    eval_batch_size: users per serving call when measuring throughput.
    seed: seeds the sample queries.
  """
  export_dir: str
  output_dir: str
  k: int = 100
  index: index_lib.IndexConfig = index_lib.IndexConfig()
  exclude_history: bool = True
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
  names = np.asarray(item_ids).astype(str)
  return [requests.UserRequest(history=list(names[items[u, :n]]), timestamps=list(times[u, :n]))
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
  k = exact_ids.shape[1]
  return float(np.mean([len((set(a) & set(e)) - {b""}) / k
                        for a, e in zip(approx_ids, exact_ids)]))


def _queries(config: JobConfig, export, item_ids: np.ndarray, meta: Dict[str, Any]):
  """Returns (inputs, description): test users of the export's data set, or synthetic."""
  max_length = int(meta.get("max_length", _DEFAULT_MAX_LENGTH))
  data_dir = meta.get("data_dir")
  users, description = [], ""
  if data_dir:
    try:
      users = [u for u in requests.test_users(data_dir, config.num_eval_queries) if u.history]
      description = f"test users of {data_dir}"
    except (FileNotFoundError, ValueError) as e:
      logging.info("No test users to query with (%s); using synthetic users.", e)
  if not users:
    users = synthetic_users(item_ids, config.num_eval_queries, max_length, config.seed)
    description = "synthetic users over the catalog (retrieval/job.py)"
  specs = export.signatures[artifact_lib.SERVING_SIGNATURE].structured_input_signature[1]
  return requests.to_inputs(users, specs, max_length), description


def _evaluate(config: JobConfig, export, artifact, items: artifact_lib.Catalog,
              meta) -> Dict[str, Any]:
  queries, description = _queries(config, export, items.item_ids.numpy(), meta)
  num_queries = len(queries[names.RAW_HISTORY])
  first_user = {name: tf.constant(value[:1]) for name, value in queries.items()}
  num_vectors = int(artifact.user_vectors(**first_user).shape[1])
  num_items = int(items.embeddings.shape[0])
  logging.info("Serving %d users (%s; %d vector(s) each) through the artifact.",
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
  if artifact.index.kind == index_lib.BRUTE_FORCE:
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


def run_index_job(config: JobConfig) -> Dict[str, Any]:
  """Builds, measures and writes the retrieval artifact; returns the report."""
  export_path = artifact_lib.resolve_export_dir(config.export_dir)
  artifact_path = os.path.abspath(os.path.join(config.output_dir, ARTIFACT_SUBDIR))
  # Before the slow part: OUTPUT_DIR/artifact is replaced only if it is ours.
  files.ensure_replaceable(artifact_path, artifact_lib.ARTIFACT_OWNERSHIP, overwrite=True,
                           inputs=[export_path], flag="--output_dir's artifact/")
  logging.info("Loading export %s", export_path)
  export = artifact_lib.load_export(export_path)
  meta = artifact_lib.read_export_meta(export_path)
  items = artifact_lib.catalog(export)
  vectors = items.index_vectors()
  num_items, dim = (int(d) for d in items.embeddings.shape)
  logging.info("Indexing %d items x %d dims%s (index=%s, k=%d).", num_items, dim,
               " plus the item bias" if items.has_bias else "", config.index.kind, config.k)
  start = time.perf_counter()
  index = index_lib.build_index(vectors, config.k, config.index)
  build_seconds = time.perf_counter() - start
  logging.info("Built a %s index in %.1f s: %s", index.kind, build_seconds, index.config())
  artifact = artifact_lib.RetrievalArtifact(export, index, items, config.k,
                                            exclude_history=config.exclude_history)

  report = {
      "export_path": os.path.abspath(export_path),
      "artifact_path": artifact_path,
      "num_items": num_items,
      "dim": dim,
      "item_bias": items.has_bias,
      "k": config.k,
      "exclude_history": config.exclude_history,
      "index": index.config(),
      "build_seconds": build_seconds,
  }
  if config.num_eval_queries > 0:
    report["eval"] = ev = _evaluate(config, export, artifact, items, meta)
    logging.info("recall@%d vs brute force: %.4f; %.0f users/s (batch %d); %.2f ms per user "
                 "(batch 1).", config.k, ev["recall_at_k"], ev["qps"], config.eval_batch_size,
                 ev["latency_ms_batch1"])

  logging.info("Writing %s", report["artifact_path"])
  artifact_lib.save_artifact(artifact, report["artifact_path"],
                             meta={"export_path": report["export_path"], "export_meta": meta})
  report_path = os.path.join(config.output_dir, REPORT_FILE)
  files.write_json(report_path, report)
  logging.info("Wrote %s", report_path)
  return report
