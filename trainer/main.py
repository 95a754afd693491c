r"""Trains, evaluates and exports a registered model: the training job's entry point.

    python -m trainer.main --model=sine                    # built-in synthetic data
    python -m trainer.main --model=sine --data_dir=DIR --model_dir=DIR \
        --train_steps=20000 --batch_size=256 --num_negatives=20000
    bazel run //trainer:main -- --model=sine

Flags live only here; `config_from_flags` turns them into a `trainer.config.TrainConfig`
(starting from `--preset`, every flag left unset keeps the preset's value) and
`trainer.loop.train_and_evaluate` does the work. Without `--data_dir` the built-in
synthetic data set is prepared once into `runs/data/synthetic` and reused; without
`--model_dir` the run goes to `runs/<model>`. Under `bazel run`, `runs/` is in the
workspace and relative paths are taken from the directory bazel was called in.

With `TF_CONFIG` naming a cluster, `ps` and `worker` tasks start their server and
wait; the `chief` trains under ParameterServerStrategy (see docs/training.md); an
`evaluator` evaluates the chief's checkpoints as they come (trainer/sidecar.py).

Exit status: 0 done; 2 a user's mistake (`common.cli`); 1 a bug; 130 (Ctrl-C) or
143 (SIGTERM) after the checkpoint of an interrupted run; `EXIT_RESTART` (203) when a
parameter server failed under the chief. The training operator's `ExitCode` restart
policy restarts a pod on 128-255 and fails the job on 1-127, so an interrupted or
orphaned chief is restarted (and resumes) while a mistake is not retried.
"""

import dataclasses
import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging

from common import cli  # before TensorFlow is imported: quiets its C++ start-up logs
from trainer import config as config_lib
from trainer import evaluation
from trainer import strategy as strategy_lib

_MODEL = flags.DEFINE_string("model", None,
                             "Registered model name (e.g. sine); default: the preset's (sine).")
_PRESET = flags.DEFINE_enum("preset", "default", sorted(config_lib.PRESETS),
                            "Training settings to start from (see trainer/config.py).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "", "Prepared dataset directory; empty: the built-in synthetic data set, "
    "prepared once into runs/data/synthetic.")
_MODEL_DIR = flags.DEFINE_string("model_dir", "", "Output directory; empty: runs/<model>.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", None, "Final global step.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Global batch size.")
_MAX_LENGTH = flags.DEFINE_integer("max_length", None, "Most recent history items kept.")
_NUM_NEGATIVES = flags.DEFINE_integer(
    "num_negatives", None, "Sampled negatives per batch; the full softmax is used when the "
    "catalog is not larger.")
_SAMPLER = flags.DEFINE_enum("sampler", None, ["log_uniform", "unigram"], "Negative sampler.")
_UNIGRAM_POWER = flags.DEFINE_float("unigram_power", None, "Exponent of the unigram sampler.")
_OPTIMIZER = flags.DEFINE_enum("optimizer", None, list(config_lib.OPTIMIZERS), "Optimizer.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", None, "Learning rate.")
_CLIP_NORM = flags.DEFINE_float("clip_norm", None, "Global gradient norm clip; 0 disables.")
_LOG_EVERY = flags.DEFINE_integer("log_every", None, "Steps between progress lines.")
_CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", None, "Steps between checkpoints.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", None,
                                   "Steps between valid evaluations; 0: only at the end.")
_EVAL_MAX_USERS = flags.DEFINE_integer("eval_max_users", None,
                                       "Users in periodic (not final) evaluations; all if unset.")
_KS = flags.DEFINE_list("ks", None, "Cut-offs of the ranking metrics, e.g. 10,20,50.")
_SELECT_BEST = flags.DEFINE_string(
    "select_best", None, "Valid metric (e.g. ndcg@10) whose best checkpoint is tested and "
    "exported instead of the final step; needs --eval_every.")
_PATIENCE = flags.DEFINE_integer(
    "patience", None, "With --select_best: stop after this many evaluations without a better "
    "valid metric; 0 trains to --train_steps.")
_MASK_HISTORY = flags.DEFINE_enum(
    "mask_history", None, list(evaluation.MASK_HISTORY_MODES),
    "How evaluation removes the input history from the ranking: all (default; the S3-Rec "
    "protocol: a target consumed before counts as a miss), keep_targets (such a target stays "
    "rankable) or none.")
_SEED = flags.DEFINE_integer("seed", None, "Random seed (same seed, same metrics).")
_DETERMINISTIC_OPS = flags.DEFINE_bool(
    "deterministic_ops", None, "Deterministic TensorFlow ops (needed for reproducible runs on "
    "GPUs; slower).")
_EXPORT = flags.DEFINE_bool("export", None, "Export a SavedModel at the end.")
_MODEL_PARAM = flags.DEFINE_multi_string(
    "model_param", [], "Model hyper-parameter override NAME=VALUE (repeatable), e.g. "
    "--model_param=num_interests=8.")
_EMBEDDING_DIM = flags.DEFINE_integer("embedding_dim", None,
                                      "Shortcut for --model_param=embedding_dim=N.")
_CLUSTER_WAIT_S = flags.DEFINE_float(
    "cluster_wait_s", strategy_lib.DEFAULT_CLUSTER_WAIT_S, "Parameter-server training: how "
    "long the chief waits for every worker and ps to listen before it names those it could "
    "not reach.")

# 128 + EX_TEMPFAIL: "try again", retryable for the training operator (>= 128).
EXIT_RESTART = 128 + os.EX_TEMPFAIL

# Where the built-in synthetic data set and default runs go, below the base directory.
RUNS_DIR = "runs"
SYNTHETIC_SUBDIR = os.path.join("data", "synthetic")


def _base_dir() -> str:
  """The workspace under `bazel run` (not the runfiles tree), else the current directory."""
  return os.environ.get("BUILD_WORKSPACE_DIRECTORY") or os.getcwd()


def _user_path(path: str) -> str:
  """A path given on the command line, relative to where the user ran the command."""
  return os.path.join(os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd()), path)


def _model_params(entries, embedding_dim):
  params = {}
  for entry in entries:
    name, sep, value = entry.partition("=")
    if not sep or not name:
      raise ValueError(f"--model_param expects NAME=VALUE, got {entry!r}.")
    params[name.strip()] = value.strip()
  if embedding_dim is not None:
    params["embedding_dim"] = str(embedding_dim)
  return params


def config_from_flags() -> config_lib.TrainConfig:
  """The one function that reads flags: preset, then every flag that was set."""
  base = config_lib.preset(_PRESET.value)
  model_name = _MODEL.value or base.model.name
  data_dir = _user_path(_DATA_DIR.value) if _DATA_DIR.value else ""
  model_dir = (_user_path(_MODEL_DIR.value) if _MODEL_DIR.value
               else os.path.join(_base_dir(), RUNS_DIR, model_name))

  def pick(**values):
    return {name: value for name, value in values.items() if value is not None}

  overrides = {**base.model.overrides, **_model_params(_MODEL_PARAM.value, _EMBEDDING_DIM.value)}
  return config_lib.TrainConfig(
      model_dir=model_dir,
      data=dataclasses.replace(base.data, data_dir=data_dir, **pick(
          batch_size=_BATCH_SIZE.value, max_length=_MAX_LENGTH.value)),
      model=config_lib.ModelConfig(name=model_name, overrides=overrides),
      optimizer=dataclasses.replace(base.optimizer, **pick(
          name=_OPTIMIZER.value, learning_rate=_LEARNING_RATE.value, clip_norm=_CLIP_NORM.value)),
      loss=dataclasses.replace(base.loss, **pick(
          num_negatives=_NUM_NEGATIVES.value, sampler=_SAMPLER.value,
          unigram_power=_UNIGRAM_POWER.value)),
      schedule=dataclasses.replace(base.schedule, **pick(
          train_steps=_TRAIN_STEPS.value, log_every=_LOG_EVERY.value, seed=_SEED.value,
          deterministic_ops=_DETERMINISTIC_OPS.value)),
      checkpoint=dataclasses.replace(base.checkpoint, **pick(
          every_steps=_CHECKPOINT_EVERY.value)),
      eval=dataclasses.replace(base.eval, **pick(
          every_steps=_EVAL_EVERY.value, max_users=_EVAL_MAX_USERS.value,
          mask_history=_MASK_HISTORY.value, select_best=_SELECT_BEST.value,
          patience=_PATIENCE.value,
          ks=tuple(int(k) for k in _KS.value) if _KS.value else None)),
      export=dataclasses.replace(base.export, **pick(enabled=_EXPORT.value)),
  )


def default_data_dir() -> str:
  """The built-in synthetic data set, prepared on first use (default size) and reused."""
  from input_pipeline import prepare  # pylint: disable=g-import-not-at-top
  from input_pipeline import schema  # pylint: disable=g-import-not-at-top

  data_dir = os.path.join(_base_dir(), RUNS_DIR, SYNTHETIC_SUBDIR)
  if os.path.exists(os.path.join(data_dir, schema.STATS_FILE)):
    logging.info("using the synthetic data set prepared earlier in %s", data_dir)
  else:
    logging.info("preparing the built-in synthetic data set into %s", data_dir)
    prepare.prepare_dataset(prepare.PrepareConfig(output_dir=data_dir))
  return data_dir


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  resolver = strategy_lib.cluster_resolver_from_environment()
  role = strategy_lib.task_role(resolver)
  if role in strategy_lib.SERVER_ROLES:
    logging.info("TF_CONFIG: %s task %d, serving until the job ends", role, resolver.task_id)
    server = strategy_lib.start_server(resolver)
    # join() blocks in C++, where Python signal handlers never run: a server that kept
    # the trainer's SIGTERM handler would ignore SIGTERM. It has nothing to save.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    server.join()
    return

  config = config_from_flags()
  if not config.data.data_dir:
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, data_dir=default_data_dir()))
  # Fail on an unknown model or parameter before starting anything heavy.
  config_lib.build_model_config(config.model, max_length=config.data.max_length)
  if role == strategy_lib.EVALUATOR:
    from trainer import sidecar  # pylint: disable=g-import-not-at-top

    results = sidecar.evaluate_checkpoints(config)
    print(f"Evaluated {len(results)} checkpoint(s) of {config.model_dir}"
          + (f", the last at step {results[-1]['step']}" if results else ""))
    return
  from trainer import loop  # pylint: disable=g-import-not-at-top

  try:
    result = loop.train_and_evaluate(config, strategy_lib.build_strategy(
        resolver, cluster_wait_s=_CLUSTER_WAIT_S.value))
  except strategy_lib.ParameterServerFailure as e:
    logging.error("%s Exiting with status %d (restart me).", e, EXIT_RESTART)
    sys.exit(EXIT_RESTART)
  except KeyboardInterrupt as e:  # the checkpoint is written (trainer/loop.py)
    interrupt = signal.SIGTERM if str(e) == "SIGTERM" else signal.SIGINT
    logging.warning("stopped by %s; the same command resumes from the checkpoint", interrupt.name)
    sys.exit(128 + interrupt)
  print(f"\nFinal evaluation of {config.model.name} at step {result['step']} on the test split "
        f"({result['protocol']}, {result['num_users']} users, history mask "
        f"{result['mask_history']}):")
  for k in result["ks"]:
    print(f"  @{k:<4d}" + "  ".join(f"{metric} {result['metrics'][f'{metric}@{k}']:.4f}"
                                    for metric in ("hr", "ndcg", "mrr", "recall")))
  print(f"Metrics: {os.path.join(config.model_dir, loop.METRICS_FILE)}")
  if result["export_dir"]:
    print(f"Export:  {result['export_dir']}")


def run():
  """Console-script entry point (`dcg-train`); a user's mistake ends it with one line
  `error: ...` and exit status 2 (`common.cli`). SIGTERM (Kubernetes, `kill`) ends
  training like Ctrl-C: a checkpoint, then exit."""
  cli.interrupt_on_sigterm()
  cli.run(main)


if __name__ == "__main__":
  run()
