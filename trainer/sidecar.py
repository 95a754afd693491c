"""The side-car evaluator: evaluates each checkpoint the chief writes, outside the cluster.

Under parameter-server training the chief evaluates between steps (`--eval_every`),
which stops training while it runs. A TFJob can instead run an `Evaluator` replica:
a process with `TF_CONFIG` task type `evaluator` that runs the same `trainer.main`
command, reads every new checkpoint of `MODEL_DIR/checkpoints` on its own devices
and evaluates it on the valid split (`--eval_max_users` users), writing the metrics
to `MODEL_DIR/summaries/evaluator/`. It never joins the cluster (trainer/strategy.py
keeps it out of every cluster spec) and only reads the model directory: it does not
tidy checkpoints the chief may be writing.

It stops after evaluating the checkpoint of `--train_steps`, or when the chief has
written `metrics.json` since the evaluator started (it stopped early, `--patience`)
and no newer checkpoint came within `poll_s`.
"""

import os
import time
from typing import Any, Dict, List

from absl import logging
import tensorflow as tf

from input_pipeline import data_spec as data_spec_lib
from input_pipeline import dataset as dataset_lib
from models import all_models  # noqa: F401  (registers every model)
from models import registry
from trainer import config as config_lib
from trainer import evaluation
from trainer import export

SUMMARY_SUBDIR = os.path.join("summaries", "evaluator")
METRICS_FILE = "metrics.json"  # written by the chief when it is done (trainer/loop.py)


def evaluate_checkpoints(config: config_lib.TrainConfig, *, poll_s: float = 30.0,
                         split: str = "valid") -> List[Dict[str, Any]]:
  """Evaluates every new checkpoint until the chief's last one.

  Args:
    config: the training job's config (the same flags as the chief).
    poll_s: how often to look for a new checkpoint.
    split: the split to evaluate.

  Returns:
    `{"step": N, "metrics": {...}}` of each checkpoint evaluated, in order.
  """
  data = data_spec_lib.read(config.data.data_dir)
  model_config = config_lib.build_model_config(config.model, max_length=config.data.max_length)
  model = registry.lookup(config.model.name).model_class(model_config, data=data)
  model.create_variables()
  step = tf.Variable(0, dtype=tf.int64, trainable=False)
  # The chief's checkpoint holds the model and the step counter under these keys.
  checkpoint = tf.train.Checkpoint(**{export.CHECKPOINT_MODEL_KEY: model, "step": step})
  evaluate = evaluation.model_evaluator(model, protocol=data.protocol, ks=config.eval.ks,
                                        mask_history=config.eval.mask_history)
  batch = config.eval.batch_size
  max_users = config.eval.max_users
  users = data.stats.get("splits", {}).get(split, {}).get("num_users")
  if users is not None and max_users is not None:
    users = min(users, max_users)
  writer = tf.summary.create_file_writer(os.path.join(config.model_dir, SUMMARY_SUBDIR))
  checkpoint_dir = os.path.join(config.model_dir, export.CHECKPOINT_SUBDIR)

  started_ns = time.time_ns()
  latest_seen = [None]

  def chief_done() -> bool:
    """The chief wrote metrics.json since this evaluator started (an earlier run's does not
    count) and its newest checkpoint has been seen. TensorFlow's iterator also asks this
    after every checkpoint, so a chief that finished while a slow evaluation ran must not
    stop the evaluator before its last checkpoint."""
    path = os.path.join(config.model_dir, METRICS_FILE)
    finished = tf.io.gfile.exists(path) and tf.io.gfile.stat(path).mtime_nsec >= started_ns
    return finished and tf.train.latest_checkpoint(checkpoint_dir) == latest_seen[0]

  results = []
  for path in tf.train.checkpoints_iterator(checkpoint_dir, min_interval_secs=poll_s,
                                            timeout=poll_s, timeout_fn=chief_done):
    latest_seen[0] = path
    try:
      checkpoint.read(path).expect_partial()
    except (tf.errors.NotFoundError, tf.errors.DataLossError) as e:
      # Deleted by the chief's CheckpointManager (max_to_keep) since it was listed.
      logging.warning("checkpoint %s did not read back (%s); waiting for the next one", path,
                      e.message.splitlines()[0][:200])
      continue
    dataset = dataset_lib.make_dataset(dataset_lib.eval_config(config.data.data_dir, split,
                                                               batch_size=batch), model.sample_spec(), data)
    if max_users is not None:
      dataset = dataset.take(-(-max_users // batch))
    result = evaluate(dataset, users)
    current = int(step.numpy())
    with writer.as_default(step=current):
      for name, value in result.metrics.items():
        tf.summary.scalar(name, value)
    writer.flush()
    logging.info("evaluator: %s at step %d: %s", split, current,
                 ", ".join(f"{k} {v:.4f}" for k, v in sorted(result.metrics.items())))
    results.append({"step": current, "metrics": result.metrics})
    if current >= config.schedule.train_steps:
      break
  return results

