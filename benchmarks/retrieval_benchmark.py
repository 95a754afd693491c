r"""ScaNN vs brute force: recall@k, queries/second, build time, index size, peak memory.

    python benchmarks/retrieval_benchmark.py --num_items=1000000 --dim=128 --k=100 --data=clustered

For each catalog size it times the exact brute-force index (TFRS's BruteForce, as the
artifact serves it), builds ScaNN with the sizing of `retrieval.index`, measures the
starting effort (the fixed sizing of earlier versions), tunes the effort to
`--target_recall` on `--num_tuning_queries` queries (`index.tune`) and measures the
tuned index on `--num_queries` other, held-out queries. Each measurement times the
same layer call the artifact makes, in a tf.function:
  * throughput: queries/second in batches of `--batch_size`;
  * latency: median milliseconds of one query (batch 1);
  * recall@k: mean |top-k found & exact top-k| / k over the held-out queries.
`--tfrs` adds TFRS's own ScaNN layer with the tuned leaves and reordering (it has no
anisotropic quantization) for comparison. Peak memory is the process's peak resident
set size so far.

Data (`--data`): `clustered` draws items around 1,000 random centres (learned item
embeddings cluster by topic) and queries as perturbed random items (users sit near
the items they like); `gaussian` draws items and queries i.i.d. N(0, 1), the hardest
case for partitioning. Results are in docs/retrieval.md.
"""

import gc
import resource
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from retrieval import index as index_lib
import tensorflow as tf  # pylint: disable=g-bad-import-order  (after our package: Keras 2)

_NUM_ITEMS = flags.DEFINE_list("num_items", ["1000000"], "Catalog sizes.")
_DIM = flags.DEFINE_integer("dim", 128, "Embedding dimension.")
_K = flags.DEFINE_integer("k", 100, "Neighbours per query.")
_NUM_QUERIES = flags.DEFINE_integer("num_queries", 1000, "Held-out query vectors (reported).")
_NUM_TUNING_QUERIES = flags.DEFINE_integer("num_tuning_queries", 500,
                                           "Query vectors the effort is tuned on.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Queries per call for throughput.")
_DATA = flags.DEFINE_enum("data", "clustered", ["clustered", "gaussian"], "Vector distribution.")
_TARGET_RECALL = flags.DEFINE_float("target_recall", index_lib.DEFAULT_TARGET_RECALL,
                                    "Recall@k the tuner aims for.")
_NUM_LEAVES_TO_SEARCH = flags.DEFINE_integer(
    "num_leaves_to_search", None, "Fix the leaves searched (default: tuned).")
_REORDER = flags.DEFINE_integer("reorder", None, "Fix the candidates reordered (default: tuned).")
_TFRS = flags.DEFINE_bool("tfrs", False, "Also measure TFRS's ScaNN layer at the tuned effort.")
_SEED = flags.DEFINE_integer("seed", 0, "Data seed.")

_CENTRES = 1000
# Brute force scores batch x items floats at once; cap that at 128 MB.
_MAX_SCORES = 1 << 25


def make_data(num_items, dim, num_queries, kind, rng):
  """Returns items `[num_items, dim]` and queries `[num_queries, dim]` (float32)."""
  if kind == "gaussian":
    return (rng.standard_normal((num_items, dim), np.float32),
            rng.standard_normal((num_queries, dim), np.float32))
  centres = rng.standard_normal((_CENTRES, dim), np.float32)
  items = centres[rng.integers(_CENTRES, size=num_items)]
  items += 0.5 * rng.standard_normal((num_items, dim), np.float32)
  queries = items[rng.integers(num_items, size=num_queries)] + 0.5 * rng.standard_normal(
      (num_queries, dim), np.float32)
  return items, queries


def measure(layer, queries, k, batch_size):
  """Returns (indices `[n, k]`, queries/second, median ms per single query)."""
  search = tf.function(lambda q: layer(q, k=k)[1]).get_concrete_function(
      tf.TensorSpec([None, queries.shape[1]], tf.float32))
  batches = [queries[i:i + batch_size] for i in range(0, len(queries), batch_size)]
  results = [search(tf.constant(batches[0])).numpy()]  # warm-up
  start = time.perf_counter()
  results += [search(tf.constant(b)).numpy() for b in batches[1:]]
  qps = (len(queries) - len(batches[0])) / (time.perf_counter() - start)
  times = []
  for q in queries[:101]:
    start = time.perf_counter()
    search(tf.constant(q[None]))
    times.append(time.perf_counter() - start)
  return np.concatenate(results), qps, 1000 * float(np.median(times[1:]))


def peak_memory_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _row(num_items, name, leaves, searched, reorder, build_s, size_mb, recall, qps, ms, speedup):
  print(f"{num_items}\t{name}\t{leaves}\t{searched}\t{reorder}\t{build_s}\t{size_mb}\t"
        f"{recall:.4f}\t{qps:.0f}\t{ms:.2f}\t{speedup}\t{peak_memory_gb():.2f}", flush=True)


def main(argv):
  del argv
  k = _K.value
  print(f"data={_DATA.value} dim={_DIM.value} k={k} held-out queries={_NUM_QUERIES.value} "
        f"tuning queries={_NUM_TUNING_QUERIES.value} batch={_BATCH_SIZE.value} "
        f"target recall={_TARGET_RECALL.value}")
  print("items\tindex\tleaves\tsearched\treorder\tbuild_s\tindex_MB\trecall@k\tqps\t"
        "ms/query(batch 1)\tspeedup\tpeak_GB")
  for num_items in (int(n) for n in _NUM_ITEMS.value):
    rng = np.random.default_rng(_SEED.value)
    items, queries = make_data(num_items, _DIM.value, _NUM_QUERIES.value + _NUM_TUNING_QUERIES.value,
                               _DATA.value, rng)
    held_out, tuning = queries[:_NUM_QUERIES.value], queries[_NUM_QUERIES.value:]
    logging.info("Brute force over %d items.", num_items)
    exact_index = index_lib.BruteForceIndex(items, k)
    exact, bf_qps, bf_ms = measure(exact_index, held_out, k,
                                   max(1, min(_BATCH_SIZE.value, _MAX_SCORES // num_items)))
    del exact_index
    gc.collect()
    _row(num_items, "brute_force", "-", "-", "-", "-", f"{items.nbytes / 2**20:.0f}", 1.0,
         bf_qps, bf_ms, "1.0")

    config = index_lib.IndexConfig(kind=index_lib.SCANN, target_recall=_TARGET_RECALL.value)
    start = time.perf_counter()
    index = index_lib.build_index(items, k, config)
    build = f"{time.perf_counter() - start:.1f}"
    size = f"{index.size_bytes() / 2**20:.0f}"

    def report(name, layer, params):
      found, qps, ms = measure(layer, held_out, k, _BATCH_SIZE.value)
      recall = index_lib.recall_per_query(found, exact).mean()
      _row(num_items, name, params.num_leaves, params.num_leaves_to_search, params.reorder,
           build, size, recall, qps, ms, f"{qps / bf_qps:.1f}")

    report("scann_start", index, index.params)
    tuning_result = index_lib.tune(
        index, items, tuning, k, _TARGET_RECALL.value,
        leaves_to_search=_NUM_LEAVES_TO_SEARCH.value and [_NUM_LEAVES_TO_SEARCH.value],
        reorders=_REORDER.value and [_REORDER.value], batch_size=_BATCH_SIZE.value)
    print(f"# tuning: {len(tuning_result.trials)} trials, tuning recall "
          f"{tuning_result.chosen.recall:.4f} (lower bound {tuning_result.chosen.recall_lower_bound:.4f},"
          f" met target: {tuning_result.met_target})", flush=True)
    report("scann_tuned", index, index.params)
    if _TFRS.value:
      from tensorflow_recommenders.layers import factorized_top_k  # pylint: disable=g-import-not-at-top
      params = index.params
      del index
      gc.collect()
      start = time.perf_counter()
      tfrs_layer = factorized_top_k.ScaNN(
          k=k, num_leaves=params.num_leaves, num_leaves_to_search=params.num_leaves_to_search,
          dimensions_per_block=params.dimensions_per_block,
          num_reordering_candidates=params.reorder).index(tf.constant(items))
      build = f"{time.perf_counter() - start:.1f}"
      size = "?"
      report("tfrs_scann", tfrs_layer, params)


if __name__ == "__main__":
  app.run(main)
