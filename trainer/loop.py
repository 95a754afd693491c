"""The custom training loop: train, checkpoint, summarize, evaluate, export.

`train_and_evaluate(config, strategy=...)` runs one training job under any strategy
that `trainer.strategy` builds:

* default / MirroredStrategy: a `tf.function` runs `log_every` steps per call, each
  step `strategy.run` on a distributed dataset;
* ParameterServerStrategy: the same step function is `schedule`d on the workers by a
  `ClusterCoordinator`, with per-worker datasets, a few steps ahead of the results;
  every `log_every` steps progress is logged, checkpoints are written and evaluations
  run. The coordinator may run a step twice after a worker failure (its contract is
  at least once), so the loop goes by the steps the optimizer applied
  (`optimizer.iterations`), not by those it scheduled.

`trainer/steps.py` holds the two step runners (the only place that knows the
coordinator).

Loss (per replica): for every softmax head the model returns,
`compute_average_loss(head_loss [B], global_batch)`, plus the model's aux terms, `[B]`
ones averaged the same way and scalar ones scaled by `scale_regularization_loss`, so
the sum over replicas is the global-batch mean under every strategy. Gradients are aggregated first and then clipped by their
global norm across all variables (the optimizer's `global_clipnorm`), shards of a
partitioned table included.

Outputs under `config.model_dir`:
    checkpoints/       tf.train.CheckpointManager (model, optimizer, step)
    summaries/train/   loss terms, learning rate, examples/second
    summaries/valid/, summaries/test/   evaluation metrics
    metrics.json       final test metrics (valid ones under "valid"), see evaluation.py
    export/<ts>/       the SavedModel (trainer/export.py)

Resuming: the step counter is the optimizer's `iterations`, saved in every
checkpoint. Running the same command again restores the latest checkpoint and
trains only the remaining steps up to `train_steps`. On this machine's devices the
checkpoint also holds the input's position (the tf.data iterator), so a resumed run
reads on exactly where the checkpoint was; per-worker iterators of parameter-server
training cannot be saved (TensorFlow does not support it): there every worker reads
the data in its own unseeded order, and a restart begins new passes.

Interrupts: Ctrl-C or SIGTERM (main.py) end training with a checkpoint of the steps
finished, within about one step: a SIGINT/SIGTERM also sets a variable that the
in-graph loop of `log_every` steps checks before each step, and under parameter
servers only the few steps already scheduled are waited for.
"""

import dataclasses
import math
import os
import time
from typing import Any, Callable, Dict, Optional, Tuple

from absl import logging
import tensorflow as tf
import tf_keras

from common import names
from input_pipeline import data_spec as data_spec_lib
from input_pipeline import dataset as dataset_lib
from input_pipeline import schema
from models import all_models  # noqa: F401  (registers every model)
from models import losses
from models import registry
from trainer import checkpoints
from trainer import config as config_lib
from trainer import evaluation
from trainer import export
from trainer import steps as steps_lib
from trainer import strategy as strategy_lib

CHECKPOINT_SUBDIR = export.CHECKPOINT_SUBDIR
SUMMARY_SUBDIR = "summaries"
METRICS_FILE = "metrics.json"
BEST_SUBDIR = "best"  # under CHECKPOINT_SUBDIR: the best valid checkpoint (select_best)
REGULARIZATION_TERM = "regularization"
TOTAL_TERM = "total"
# Not losses: counts in the step, summed over replicas.
EXAMPLES_TERM = "examples"  # samples
TARGETS_TERM = "targets"  # real labels of all heads (= training prefixes for next-item heads)
_COUNTS = (EXAMPLES_TERM, TARGETS_TERM, steps_lib.STEPS_TERM)
INPUT_KEY = "input"  # the training input's iterator in checkpoints (this machine's devices only)


def make_optimizer(config: config_lib.OptimizerConfig) -> tf_keras.optimizers.Optimizer:
  """AdaGrad or Adam with gradients clipped by their global norm (after aggregation)."""
  clip = config.clip_norm or None
  if config.name == config_lib.ADAGRAD:
    return tf_keras.optimizers.Adagrad(config.learning_rate, global_clipnorm=clip)
  if config.name == config_lib.ADAM:
    return tf_keras.optimizers.Adam(config.learning_rate, global_clipnorm=clip)
  raise ValueError(f"Unknown optimizer {config.name!r}; expected one of {config_lib.OPTIMIZERS}.")


def make_loss(config: config_lib.LossConfig, data: data_spec_lib.DataSpec) -> losses.RetrievalLoss:
  """The softmax head; the unigram sampler uses the training counts of `data`."""
  softmax = losses.SoftmaxConfig(num_negatives=config.num_negatives, sampler=config.sampler,
                                 unigram_power=config.unigram_power)
  counts = data.item_counts if config.sampler == losses.UNIGRAM else None
  return losses.RetrievalLoss(softmax, num_items=data.num_items, item_counts=counts)


def loss_terms(outputs: Dict[str, Any], head_losses: Dict[str, tf.Tensor], global_batch_size: int,
               regularization_losses=()) -> Dict[str, tf.Tensor]:
  """One replica's loss terms, scaled so that their sum over replicas is the global mean.

  Args:
    outputs: the model's output dict (its `AUX_LOSSES` are read).
    head_losses: `{head name: [batch]}` softmax losses of this replica's examples.
    global_batch_size: examples of one step over all replicas.
    regularization_losses: scalar Keras layer losses (`model.losses`).

  Returns:
    `{<head name>: ..., <aux name>: ..., ["regularization": ...]}` scalars.
  """
  if not head_losses:
    raise ValueError(f"The model returned no softmax heads under {names.HEADS!r} for a training "
                     f"batch; a RetrievalModel returns at least one when LABELS are given.")
  terms = {name: tf.nn.compute_average_loss(value, global_batch_size=global_batch_size)
           for name, value in sorted(head_losses.items())}
  for name, value in sorted(outputs.get(names.AUX_LOSSES, {}).items()):
    if name in terms or name in (REGULARIZATION_TERM, TOTAL_TERM, *_COUNTS):
      raise ValueError(f"Model loss term name {name!r} clashes with another loss term.")
    value = tf.convert_to_tensor(value)
    if value.shape.rank == 0:
      terms[name] = tf.nn.scale_regularization_loss(value)
    else:
      terms[name] = tf.nn.compute_average_loss(value, global_batch_size=global_batch_size)
  if regularization_losses:
    terms[REGULARIZATION_TERM] = tf.nn.scale_regularization_loss(tf.add_n(regularization_losses))
  return terms


class TrainingRun:
  """The state of one training job: model, optimizer, checkpoints, input, step function.

  Attributes:
    data: the data set's description, read once and shared by the model, the input,
      the loss, the evaluation and the export.
    sample_spec: what the model reads (`model.sample_spec()`).
  """

  def __init__(self, config: config_lib.TrainConfig, strategy: tf.distribute.Strategy):
    self.config = config
    self.strategy = strategy
    self.data = data_spec_lib.read(config.data.data_dir)
    schema.check_shards(config.data.data_dir, self.data.stats)
    self.model_config = config_lib.build_model_config(config.model, max_length=config.data.max_length)
    self.loss = make_loss(config.loss, self.data)
    model_class = registry.lookup(config.model.name).model_class
    with strategy.scope():
      self.model = model_class(self.model_config, data=self.data)
      self.optimizer = make_optimizer(config.optimizer)
      self.model.create_variables()
      self.optimizer.build(self.model.trainable_variables)
    self.sample_spec = self.model.sample_spec()
    self._evaluate = evaluation.model_evaluator(
        self.model, protocol=self.data.protocol, ks=config.eval.ks,
        mask_history=config.eval.mask_history)
    trackables = {export.CHECKPOINT_MODEL_KEY: self.model, "optimizer": self.optimizer,
                  "step": self.optimizer.iterations}
    self.checkpoint = tf.train.Checkpoint(**trackables)
    # The best checkpoint has its own object, written and read without the save counter
    # that the manager's saves add to `self.checkpoint`, so a read matches exactly.
    self._best_checkpoint = tf.train.Checkpoint(**trackables)
    checkpoint_dir = os.path.join(config.model_dir, CHECKPOINT_SUBDIR)
    checkpoints.prepare_directory(checkpoint_dir)  # before the manager reads the state
    checkpoints.remove_interrupted_writes(self._best_dir())
    self.manager = tf.train.CheckpointManager(self.checkpoint, checkpoint_dir,
                                              max_to_keep=config.checkpoint.max_to_keep)
    self._restore()

  @property
  def step(self) -> int:
    return int(self.optimizer.iterations.numpy())

  def _restore(self):
    try:
      restored = checkpoints.restore_newest(self.checkpoint, self.manager.directory)
    except (AssertionError, ValueError) as e:
      raise ValueError(
          f"The checkpoints in {self.manager.directory!r} do not match the model "
          f"{self.config.model.name!r} as configured now (another model or other "
          f"hyper-parameters were trained in {self.config.model_dir!r}). Use a new "
          f"--model_dir, or the original settings. {e}") from e
    # Whether the checkpoint holds the input's position (LocalSteps attaches the iterator).
    self.restored_input = restored is not None and any(
        name.startswith(INPUT_KEY + "/") for name, _ in tf.train.list_variables(restored))
    if restored is None:
      logging.info("no checkpoint in %s: training from scratch", self.manager.directory)
    else:
      logging.info("resumed from %s at step %d", restored, self.step)

  def save(self):
    path = self.manager.save(checkpoint_number=self.step)
    logging.info("saved checkpoint %s", path)

  # Best-validation checkpoint (`EvalConfig.select_best`).

  def _best_dir(self) -> str:
    return os.path.join(self.config.model_dir, CHECKPOINT_SUBDIR, BEST_SUBDIR)

  def best(self) -> Optional[Dict[str, Any]]:
    """`{"metric", "value", "step", "checkpoint"}` of the best valid evaluation so far."""
    return checkpoints.read_best(self._best_dir())

  def consider_best(self, metrics: Dict[str, float]) -> None:
    """Keeps a checkpoint of this step when its valid `select_best` metric is the best."""
    metric = self.config.eval.select_best
    best = self.best()
    if best is not None and metrics[metric] <= best["value"]:
      return
    checkpoints.save_best(self._best_checkpoint, self._best_dir(),
                          {"metric": metric, "value": float(metrics[metric]), "step": self.step},
                          self.step)
    logging.info("best valid %s so far: %.4f at step %d", metric, metrics[metric], self.step)

  def restore_best(self) -> str:
    """Loads the best checkpoint's model, optimizer and step; returns its path."""
    path = self.best()["checkpoint"]
    self._best_checkpoint.read(path).assert_existing_objects_matched()
    logging.info("restored the best valid checkpoint %s (step %d)", path, self.step)
    return path

  # Input.

  def train_dataset_fn(self, seed: Optional[int]) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    data = self.config.data
    input_config = dataset_lib.InputConfig(
        data_dir=data.data_dir, split="train", batch_size=data.batch_size,
        shuffle_buffer=data.shuffle_buffer, seed=seed, num_epochs=None, drop_remainder=True,
        deterministic=True)
    return lambda input_context: dataset_lib.make_dataset(input_config, self.sample_spec,
                                                          self.data, input_context)

  def eval_dataset(self, split: str, max_users: Optional[int] = None) -> tf.data.Dataset:
    batch = self.config.eval.batch_size
    dataset = dataset_lib.make_dataset(
        dataset_lib.eval_config(self.config.data.data_dir, split, batch_size=batch),
        self.sample_spec, self.data)
    return dataset if max_users is None else dataset.take(math.ceil(max_users / batch))

  # The step.

  def replica_step(self, features):
    """One replica's forward and backward pass; returns its scaled loss terms."""
    with tf.GradientTape() as tape:
      outputs = self.model(features, training=True)
      candidates = self.model.candidates()
      heads = outputs.get(names.HEADS, {})
      head_losses = {name: self.loss(candidates, head) for name, head in heads.items()}
      terms = loss_terms(outputs, head_losses, self.config.data.batch_size, self.model.losses)
      total = tf.add_n(list(terms.values()))
    variables = self.model.trainable_variables
    gradients = tape.gradient(total, variables)
    self.optimizer.apply_gradients(zip(gradients, variables))
    terms[TOTAL_TERM] = total
    terms[EXAMPLES_TERM] = tf.cast(tf.shape(features[names.HISTORY_LENGTH])[0], tf.float32)
    terms[TARGETS_TERM] = tf.add_n([
        tf.reduce_sum(tf.cast((head.labels >= 0) & (head.labels < self.data.num_items),
                              tf.float32)) for head in heads.values()])
    return terms

  def distributed_step(self, iterator):
    per_replica = self.strategy.run(self.replica_step, args=(next(iterator),))
    return {name: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for name, value in per_replica.items()}

  def evaluate(self, split: str, max_users: Optional[int] = None) -> evaluation.EvalResult:
    """Full-catalog evaluation of the model as it is now (the first `max_users` users)."""
    users = self.data.stats.get("splits", {}).get(split, {}).get("num_users")
    if users is not None and max_users is not None:
      users = min(users, max_users)
    return self._evaluate(self.eval_dataset(split, max_users), users)


def training_samples_per_epoch(config: config_lib.TrainConfig) -> int:
  """Samples in one pass over the train split, as the model's training samples cut them.

  Every training prefix for `sine` (`AllPrefixes`), about one window per user for
  `sasrec`-like models (`AllPositions`); `train_steps` for E epochs is
  `E * samples / batch_size`.
  """
  data = data_spec_lib.read(config.data.data_dir)
  model_config = config_lib.build_model_config(config.model, max_length=config.data.max_length)
  spec = registry.lookup(config.model.name).model_class(model_config, data=data).sample_spec()
  one_pass = dataset_lib.make_dataset(dataset_lib.InputConfig(
      data_dir=data.data_dir, batch_size=4096, num_epochs=1, shuffle=False, bucketing=False),
      spec, data)
  return int(sum(int(batch[names.HISTORY_LENGTH].shape[0]) for batch in one_pass))


def _next_stop(step: int, config: config_lib.TrainConfig) -> int:
  """The next step at which to log, checkpoint, evaluate or finish."""
  cadences = [config.schedule.log_every, config.checkpoint.every_steps]
  if config.eval.every_steps:
    cadences.append(config.eval.every_steps)
  return min([config.schedule.train_steps] + [(step // c + 1) * c for c in cadences])


def _write_scalars(writer, step: int, values: Dict[str, float], prefix: str = "") -> None:
  with writer.as_default(step=step):
    for name, value in values.items():
      tf.summary.scalar(prefix + name, value)
  writer.flush()


def _crossed(previous: int, step: int, every: int) -> bool:
  """Whether a multiple of `every` lies in (previous, step] (steps may jump past one)."""
  return step // every > previous // every


def _add_records(a: Dict[str, float], b: Dict[str, float]) -> Dict[str, float]:
  return {name: a[name] + b[name] for name in a}


def _train(run: TrainingRun, steps, writers) -> Tuple[Dict[str, float], int]:
  """Trains from the restored step to `train_steps`.

  Returns:
    The last progress record, and the number of step results that came back.
  """
  config = run.config
  step = run.step
  learning_rate = float(run.optimizer.learning_rate.numpy())
  record: Dict[str, float] = {}
  steps_run = 0
  while step < config.schedule.train_steps:
    stop = _next_stop(step, config)
    previous = step
    started = time.time()
    sums = steps(stop - step)
    while run.step < stop:
      # Never seen: ClusterCoordinator retries a step whose worker failed. Should a
      # step's update still be lost, say so and run it again rather than stop short.
      before = run.step
      logging.warning("the optimizer applied %d of the %d steps run since step %d: running "
                      "the %d missing", before - previous, int(sums[steps_lib.STEPS_TERM]),
                      previous, stop - before)
      sums = _add_records(sums, steps(stop - before))
      if run.step == before:
        raise RuntimeError(f"Steps ran but the optimizer stays at step {before}: its updates "
                           "are lost (a failing parameter server?).")
    seconds = time.time() - started
    step = run.step
    if step > stop:
      logging.warning("the optimizer is at step %d after %d steps from step %d: %d ran twice (a "
                      "worker failed after applying a step and the coordinator ran it again)",
                      step, stop - previous, previous, step - stop)
    num_steps = sums[steps_lib.STEPS_TERM]
    steps_run += int(num_steps)
    record = {name: value / num_steps for name, value in sums.items() if name not in _COUNTS}
    losses_line = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != TOTAL_TERM)
    record["examples_per_second"] = sums[EXAMPLES_TERM] / seconds
    record["targets_per_second"] = sums[TARGETS_TERM] / seconds
    record["learning_rate"] = learning_rate
    _write_scalars(writers["train"], step, record, prefix="")
    logging.info("step %d/%d: loss %.4f (%s), %.0f examples/s, %.0f targets/s, lr %g", step,
                 config.schedule.train_steps, record[TOTAL_TERM], losses_line,
                 record["examples_per_second"], record["targets_per_second"], learning_rate)
    if (_crossed(previous, step, config.checkpoint.every_steps)
        or step >= config.schedule.train_steps):
      run.save()
    if config.eval.every_steps and _crossed(previous, step, config.eval.every_steps) and (
        step < config.schedule.train_steps):
      result = run.evaluate("valid", config.eval.max_users)
      _write_scalars(writers["valid"], step, result.metrics)
      if config.eval.select_best:
        run.consider_best(result.metrics)
        stale = (step - run.best()["step"]) // config.eval.every_steps
        if config.eval.patience and stale >= config.eval.patience:
          logging.info("no better valid %s in %d evaluations (best: step %d): stopping early "
                       "at step %d", config.eval.select_best, stale, run.best()["step"], step)
          break
  return record, steps_run


def train_and_evaluate(config: config_lib.TrainConfig,
                       strategy: Optional[tf.distribute.Strategy] = None) -> Dict[str, Any]:
  """Trains `config.model` to `train_steps`, evaluates on valid and test, exports.

  Args:
    config: the job (see `trainer.config`).
    strategy: from `trainer.strategy.build_strategy()`; built from the environment
      when None.

  Returns:
    The content of MODEL_DIR/metrics.json: test metrics (`"metrics"`), the valid
    split's under `"valid"`, the step, and `"export_dir"` (None when export is off).
  """
  config.validate()
  strategy = strategy or strategy_lib.build_strategy()
  try:
    return _train_and_evaluate(config, strategy)
  except tf.errors.DataLossError as e:
    # TF names the byte offset of a damaged record but not its file.
    damaged = dataset_lib.corrupt_shards(config.data.data_dir)
    raise ValueError(
        f"The data set {config.data.data_dir!r} has damaged TFRecord shards: "
        f"{', '.join(damaged) if damaged else 'none found on a re-read: ' + e.message}. Re-run "
        f"input_pipeline.prepare to rewrite it; the checkpoints in {config.model_dir!r} stay "
        f"valid.") from e
  except (tf.errors.UnavailableError, tf.errors.AbortedError) as e:
    # Worker failures are the coordinator's to handle; these reach the chief when a
    # parameter server (and the variables it held) is gone.
    if not strategy_lib.is_parameter_server(strategy):
      raise
    raise strategy_lib.ParameterServerFailure(
        f"A parameter server failed: {e.message.splitlines()[0][:300]}. Its variables are "
        f"lost; restart this chief (and the failed ps): it resumes from the last checkpoint in "
        f"{config.model_dir!r}. cluster.local_cluster and the TFJob's restart policy do this.") from e


def _train_and_evaluate(config: config_lib.TrainConfig,
                        strategy: tf.distribute.Strategy) -> Dict[str, Any]:
  tf.io.gfile.makedirs(config.model_dir)
  # Python, NumPy and TensorFlow generators; the input is seeded separately (its seed
  # plus the step), and its elements come in a fixed order.
  tf_keras.utils.set_random_seed(config.schedule.seed)
  if config.schedule.deterministic_ops:
    tf.config.experimental.enable_op_determinism()
  logging.info("training %s under %s with %d replica(s) per step; model_dir %s", config.model.name,
               type(strategy).__name__, strategy.num_replicas_in_sync, config.model_dir)
  run = TrainingRun(config, strategy)
  writers = {name: tf.summary.create_file_writer(os.path.join(config.model_dir, SUMMARY_SUBDIR, name))
             for name in ("train", "valid", "test")}
  first_step, steps_run, applied = run.step, 0, 0
  if run.step >= config.schedule.train_steps:
    logging.info("already at step %d of %d: evaluating and exporting only", run.step,
                 config.schedule.train_steps)
    record = {}
  else:
    steps = (steps_lib.CoordinatedSteps(run) if strategy_lib.is_parameter_server(strategy)
             else steps_lib.LocalSteps(run))
    try:
      record, steps_run = _train(run, steps, writers)
    except KeyboardInterrupt:
      # Ctrl-C or SIGTERM (main.py turns it into KeyboardInterrupt): the steps runner
      # has let the running steps finish; keep them, the same command resumes here.
      logging.warning("interrupted at step %d: saving a checkpoint before exiting", run.step)
      run.save()
      raise
    applied = run.step - first_step
    logging.info("steps from %d: %d run, %d applied by the optimizer", first_step, steps_run,
                 applied)

  checkpoint_path = None  # export's default: the latest checkpoint
  valid = None
  if config.eval.select_best:
    # The final step competes on the same valid users as the periodic evaluations.
    valid = run.evaluate("valid", config.eval.max_users)
    run.consider_best(valid.metrics)
    if run.best()["step"] != run.step:
      checkpoint_path = run.restore_best()
      valid = None
  if valid is None or config.eval.max_users is not None:
    valid = run.evaluate("valid")
  results = {"valid": valid}
  step = run.step
  _write_scalars(writers["valid"], step, results["valid"].metrics)
  results["test"] = run.evaluate("test")
  _write_scalars(writers["test"], step, results["test"].metrics)
  export_dir = None
  if config.export.enabled:
    export_dir = export.export_saved_model(
        model_name=config.model.name, model_config=run.model_config, data=run.data,
        model_dir=config.model_dir, checkpoint_path=checkpoint_path, extra_meta={"step": step})
  extra = {
      "model": config.model.name,
      "split": "test",
      "step": step,
      "valid": results["valid"].to_json(),
      "export_dir": export_dir,
      "data_dir": os.path.abspath(config.data.data_dir),
      "training": record,
      # This process's steps: results that came back and updates the optimizer
      # counted (more than run when the coordinator ran a step twice).
      "steps": {"first": first_step, "run": steps_run, "applied": applied},
      "config": dataclasses.asdict(config),
  }
  evaluation.write_metrics(results["test"], os.path.join(config.model_dir, METRICS_FILE), extra)
  return {**results["test"].to_json(), **extra}
