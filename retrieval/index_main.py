r"""Builds the top-k retrieval artifact of an exported model.

    python -m retrieval.index_main --export_dir=MODEL_DIR/export --output_dir=OUT [--k=100]

Writes the next version OUT/artifact/N/ (SavedModel: raw request -> top-k raw item ids
and scores, with its manifest) and OUT/index_report.json (the same manifest: model,
checkpoint step, data set, index configuration and tuning, recall@k against brute
force, queries/second, build time, sizes). See docs/retrieval.md.
"""

from absl import app
from absl import flags

from common import cli  # before TensorFlow is imported: quiets its C++ start-up logs
from retrieval import index as index_lib
from retrieval import job

_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None, "MODEL_DIR/export (the newest export is used) or MODEL_DIR/export/<ts>.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Receives artifact/ and index_report.json.")
_K = flags.DEFINE_integer("k", 100, "Items returned per user.")
_INDEX = flags.DEFINE_enum(
    "index", index_lib.AUTO, index_lib.INDEX_KINDS,
    "auto: brute force up to --brute_force_max_items items, ScaNN above.")
_BRUTE_FORCE_MAX_ITEMS = flags.DEFINE_integer(
    "brute_force_max_items", index_lib.DEFAULT_BRUTE_FORCE_MAX_ITEMS,
    "Largest catalog that --index=auto serves by brute force.")
_NUM_LEAVES = flags.DEFINE_integer("num_leaves", None, "ScaNN tree leaves (default: ~sqrt(items)).")
_NUM_LEAVES_TO_SEARCH = flags.DEFINE_integer(
    "num_leaves_to_search", None, "ScaNN leaves searched per query (default: tuned).")
_REORDER = flags.DEFINE_integer(
    "reorder", None, "ScaNN candidates rescored exactly per query (default: tuned).")
_TARGET_RECALL = flags.DEFINE_float(
    "target_recall", index_lib.DEFAULT_TARGET_RECALL,
    "ScaNN's search effort is tuned to reach this recall@k against exact search.")
_NUM_TUNING_QUERIES = flags.DEFINE_integer(
    "num_tuning_queries", 500, "Users the ScaNN effort is tuned on (0: no tuning).")
_EXCLUDE_HISTORY = flags.DEFINE_bool(
    "exclude_history", True, "Never return the items of the history a user is queried with.")
_NUM_EVAL_QUERIES = flags.DEFINE_integer(
    "num_eval_queries", 1000, "Held-out users for the recall and QPS report (0 skips it).")
_EVAL_BATCH_SIZE = flags.DEFINE_integer("eval_batch_size", 256, "Users per call when timing.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the sample users.")


def config_from_flags() -> job.JobConfig:
  return job.JobConfig(
      export_dir=_EXPORT_DIR.value,
      output_dir=_OUTPUT_DIR.value,
      k=_K.value,
      index=index_lib.IndexConfig(
          kind=_INDEX.value,
          brute_force_max_items=_BRUTE_FORCE_MAX_ITEMS.value,
          num_leaves=_NUM_LEAVES.value,
          num_leaves_to_search=_NUM_LEAVES_TO_SEARCH.value,
          reorder=_REORDER.value,
          target_recall=_TARGET_RECALL.value,
      ),
      exclude_history=_EXCLUDE_HISTORY.value,
      num_tuning_queries=_NUM_TUNING_QUERIES.value,
      num_eval_queries=_NUM_EVAL_QUERIES.value,
      eval_batch_size=_EVAL_BATCH_SIZE.value,
      seed=_SEED.value,
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  report = job.run_index_job(config_from_flags())
  print(f"artifact: {report['artifact_path']} (version {report['version']})")
  if "eval" in report:
    ev = report["eval"]
    print(f"recall@{report['k']} vs brute force: {ev['recall_at_k']:.4f} "
          f"({report['index']['kind']}), {ev['qps']:.0f} users/s")


def run():
  """Console script `dcg-index`; a user's mistake ends it with one line `error: ...` and
  exit status 2 (`common.cli`)."""
  flags.mark_flags_as_required(["export_dir", "output_dir"])
  cli.run(main)


if __name__ == "__main__":
  run()
