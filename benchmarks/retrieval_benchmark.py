r"""ScaNN vs brute force: queries/second and recall@k on random catalogs.

    python benchmarks/retrieval_benchmark.py --num_items=100000,1000000 --dim=64 --k=100

For each catalog size it builds the index `retrieval.index` sizes by default (or the
one the flags override), and times the same `search` the artifact runs, wrapped in
a tf.function, on `--num_queries` query vectors:
  * throughput: queries/second in batches of `--batch_size`;
  * latency: median milliseconds of one query (batch 1);
  * recall@k: mean |ScaNN top-k & exact top-k| / k.

Data (`--data`): `clustered` draws items around 1,000 random centres (learned item
embeddings cluster by topic) and queries as perturbed random items (users sit near
the items they like); `gaussian` draws items and queries i.i.d. N(0, 1), the hardest
case for partitioning. Results are in docs/retrieval.md.
"""

import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from retrieval import index as index_lib
import tensorflow as tf  # pylint: disable=g-bad-import-order  (after our package: Keras 2)

_NUM_ITEMS = flags.DEFINE_list("num_items", ["100000", "1000000"], "Catalog sizes.")
_DIM = flags.DEFINE_integer("dim", 64, "Embedding dimension.")
_K = flags.DEFINE_integer("k", 100, "Neighbours per query.")
_NUM_QUERIES = flags.DEFINE_integer("num_queries", 1000, "Query vectors.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Queries per call for throughput.")
_DATA = flags.DEFINE_enum("data", "clustered", ["clustered", "gaussian"], "Vector distribution.")
_NUM_LEAVES_TO_SEARCH = flags.DEFINE_list(
    "num_leaves_to_search", [], "Leaves searched (several values sweep it; default: sized).")
_REORDER = flags.DEFINE_integer("reorder", None, "Candidates reordered (default: sized).")
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
  items = centres[rng.integers(_CENTRES, size=num_items)] + 0.5 * rng.standard_normal(
      (num_items, dim), np.float32)
  queries = items[rng.integers(num_items, size=num_queries)] + 0.5 * rng.standard_normal(
      (num_queries, dim), np.float32)
  return items, queries


def measure(index, queries, k, batch_size):
  """Returns (indices `[n, k]`, queries/second, median ms per single query)."""
  search = tf.function(lambda q: index.search(q, k)[1]).get_concrete_function(
      tf.TensorSpec([None, queries.shape[1]], tf.float32))
  batches = [queries[i:i + batch_size] for i in range(0, len(queries), batch_size)]
  results = [search(tf.constant(batches[0])).numpy()]  # warm-up
  start = time.perf_counter()
  results += [search(tf.constant(b)).numpy() for b in batches[1:]]
  qps = (len(queries) - len(batches[0])) / (time.perf_counter() - start)
  times = []
  for q in queries[:100]:
    start = time.perf_counter()
    search(tf.constant(q[None]))
    times.append(time.perf_counter() - start)
  return np.concatenate(results), qps, 1000 * float(np.median(times[1:]))


def main(argv):
  del argv
  k = _K.value
  print(f"data={_DATA.value} dim={_DIM.value} k={k} queries={_NUM_QUERIES.value} "
        f"batch={_BATCH_SIZE.value}")
  print("items\tindex\tleaves\tsearched\treorder\tbuild_s\trecall@k\tqps\tms/query(batch 1)")
  for num_items in (int(n) for n in _NUM_ITEMS.value):
    rng = np.random.default_rng(_SEED.value)
    items, queries = make_data(num_items, _DIM.value, _NUM_QUERIES.value, _DATA.value, rng)
    exact_index = index_lib.BruteForceIndex(items, k)
    exact_batch = max(1, min(_BATCH_SIZE.value, _MAX_SCORES // num_items))
    logging.info("Brute force over %d items.", num_items)
    exact, bf_qps, bf_ms = measure(exact_index, queries, k, exact_batch)
    print(f"{num_items}\tbrute_force\t-\t-\t-\t0\t1.0000\t{bf_qps:.0f}\t{bf_ms:.2f}", flush=True)
    sweep = [int(n) for n in _NUM_LEAVES_TO_SEARCH.value] or [None]
    for to_search in sweep:
      config = index_lib.IndexConfig(kind=index_lib.SCANN, num_leaves_to_search=to_search,
                                     reorder=_REORDER.value)
      start = time.perf_counter()
      index = index_lib.build_index(items, k, config)
      build = time.perf_counter() - start
      found, qps, ms = measure(index, queries, k, _BATCH_SIZE.value)
      recall = np.mean([len(set(a) & set(e)) / k for a, e in zip(found, exact)])
      p = index.params
      print(f"{num_items}\tscann\t{p.num_leaves}\t{p.num_leaves_to_search}\t{p.reorder}\t"
            f"{build:.1f}\t{recall:.4f}\t{qps:.0f}\t{ms:.2f}", flush=True)


if __name__ == "__main__":
  app.run(main)
