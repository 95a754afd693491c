"""The trainer's configuration tree and its named presets.

`trainer/main.py` turns flags into a `TrainConfig` in one function; libraries and
tests build one directly (`dataclasses.replace` shrinks a preset for a test).

Presets hold the training settings each paper used where they differ from the
default, which follows the XDM paper (AdaGrad, learning rate 0.1, gradients clipped
to global norm 5, batch 256, 20,000 log-uniform sampled negatives):

    default       the XDM paper's trainer settings, max length 50.
    sine_paper    SINE paper, section 4.1: Adam 1e-3, batch 128, D = 128, length 20,
                  10 negatives ("5 and 10 for MovieLens and other datasets").
    dss_paper     DSS paper, section 4.1: Adam 1e-3, batch 128, length 50.
    s3rec         the benchmark protocol of ../shared/BENCHMARKS.md (S3-Rec and
                  RecBole): Adam 1e-3, batch 256, length 50, D = 64, full softmax.
"""

import dataclasses
import typing
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

ADAGRAD = "adagrad"
ADAM = "adam"
OPTIMIZERS = (ADAGRAD, ADAM)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which dataset, and how training batches are cut from it.

  Attributes:
    data_dir: a dataset directory written by `input_pipeline.prepare`.
    max_length: the model sees at most the last `max_length` items of a history.
    batch_size: global batch size (all replicas of one step together).
    shuffle_buffer: timelines shuffled together, in chunks, while streaming the train
      split (`input_pipeline.dataset.InputConfig.shuffle_buffer`); samples are mixed
      further across `window_batches` batches there.
  """
  data_dir: str = ""
  max_length: int = 50
  batch_size: int = 256
  shuffle_buffer: int = 16_384


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Which registered model, and changes to its own config dataclass.

  Attributes:
    name: a name registered in `models.registry` (`sine`, ...).
    overrides: field name -> value for the model's config dataclass; string values
      are parsed as the field's type (so flags can pass `embedding_dim=64`).
  """
  name: str = "sine"
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimizer and gradient clipping.

  Attributes:
    name: `adagrad` (XDM paper) or `adam` (SINE, DSS papers).
    learning_rate: constant learning rate.
    clip_norm: gradients are scaled down together when their global norm exceeds
      this (XDM paper: 5); 0 disables clipping.
  """
  name: str = ADAGRAD
  learning_rate: float = 0.1
  clip_norm: float = 5.0


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """The softmax head over the item catalog.

  Attributes:
    num_negatives: sampled negatives per batch; when the catalog has no more items
      than this, the head computes the full softmax instead.
    sampler: `log_uniform` (Zipf over frequency-ranked ids) or `unigram` (item
      training counts raised to `unigram_power`, as HRNN-meta samples); see
      `models/losses.py`, which also checks the value.
    unigram_power: exponent of the unigram sampler.
  """
  num_negatives: int = 20_000
  sampler: str = "log_uniform"
  unigram_power: float = 0.75


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
  """How long to train and how often to report.

  Attributes:
    train_steps: the final global step; a restarted run continues up to it.
    log_every: steps between progress lines and TensorBoard training summaries
      (also the number of steps run per `tf.function` call or coordinator join).
    seed: seeds Python's, NumPy's and TensorFlow's generators (initialization,
      dropout, negative sampling) and the input's shuffles: the same command with the
      same seed gives the same metrics in a single-process run (docs/reliability.md).
    deterministic_ops: make every TensorFlow op deterministic
      (`tf.config.experimental.enable_op_determinism`); needed on GPUs, whose scatter
      and segment kernels accumulate in a varying order. CPU runs are reproducible
      without it.
  """
  train_steps: int = 1000
  log_every: int = 100
  seed: int = 0
  deterministic_ops: bool = False


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """Checkpoints under MODEL_DIR/checkpoints.

  Attributes:
    every_steps: steps between checkpoints (one is always written at the end).
    max_to_keep: older checkpoints are deleted beyond this many.
  """
  every_steps: int = 1000
  max_to_keep: int = 3


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Full-catalog evaluation (see `trainer/evaluation.py`).

  Attributes:
    every_steps: steps between evaluations on the valid split during training;
      0 evaluates only at the end (valid and test).
    ks: cut-offs of the ranking metrics.
    mask_history: how the user's input items leave the ranking: "all" (the S3-Rec
      and RecBole protocol: the history is masked, and a target consumed before counts
      as a miss), "keep_targets" (a target consumed before stays rankable) or "none".
    batch_size: users scored together.
    max_users: periodic (not final) evaluations use at most this many valid users;
      None uses all. `select_best` compares every candidate on these same users.
    select_best: a valid-split metric such as "ndcg@10": the checkpoint of the best
      valid evaluation (periodic ones and the final one) is kept in
      checkpoints/best/ and is what the test split evaluates and export exports, as
      RecBole reports "the best-validation epoch"; empty: the final step.
    patience: with `select_best`, stop training once this many periodic evaluations in
      a row have not improved on the best (RecBole's `stopping_step`); 0 trains to
      `train_steps`.
  """
  every_steps: int = 0
  ks: Tuple[int, ...] = (10, 20, 50, 80, 100)
  mask_history: str = "all"
  batch_size: int = 512
  max_users: Optional[int] = None
  select_best: str = ""
  patience: int = 0

  def metric_names(self) -> Tuple[str, ...]:
    """Every metric an evaluation reports, e.g. ("hr@10", "ndcg@10", ...)."""
    from trainer import evaluation  # pylint: disable=g-import-not-at-top

    return tuple(f"{metric}@{k}" for k in self.ks for metric in evaluation.METRICS)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """SavedModel export under MODEL_DIR/export/<timestamp>/.

  Attributes:
    enabled: export at the end of training.
  """
  enabled: bool = True


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything `trainer.loop.train_and_evaluate` needs.

  Attributes:
    model_dir: where checkpoints/, summaries/, metrics.json and export/ go.
    data: dataset and batching.
    model: model name and config overrides.
    optimizer: optimizer and clipping.
    loss: softmax head.
    schedule: steps, logging, seed.
    checkpoint: checkpoint cadence.
    eval: evaluation protocol and cadence.
    export: SavedModel export.
  """
  model_dir: str = ""
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  loss: LossConfig = LossConfig()
  schedule: ScheduleConfig = ScheduleConfig()
  checkpoint: CheckpointConfig = CheckpointConfig()
  eval: EvalConfig = EvalConfig()
  export: ExportConfig = ExportConfig()

  def validate(self) -> "TrainConfig":
    """Checks values that would otherwise fail deep inside TF; returns self."""
    from trainer import evaluation  # pylint: disable=g-import-not-at-top

    masks = evaluation.MASK_HISTORY_MODES
    checks = [
        (self.optimizer.name in OPTIMIZERS, f"optimizer {self.optimizer.name!r}: expected one of {OPTIMIZERS}"),
        (self.optimizer.learning_rate > 0, f"learning_rate {self.optimizer.learning_rate}: must be > 0"),
        (self.optimizer.clip_norm >= 0, f"clip_norm {self.optimizer.clip_norm}: must be >= 0 (0 = off)"),
        (self.data.batch_size > 0, f"batch_size {self.data.batch_size}: must be > 0"),
        (self.data.max_length > 0, f"max_length {self.data.max_length}: must be > 0"),
        (self.loss.num_negatives > 0, f"num_negatives {self.loss.num_negatives}: must be > 0"),
        (self.schedule.train_steps >= 1,
         f"train_steps {self.schedule.train_steps}: must be >= 1 (an untrained model is "
         f"not exported)"),
        (self.schedule.log_every > 0, f"log_every {self.schedule.log_every}: must be > 0"),
        (self.checkpoint.every_steps > 0, f"checkpoint every_steps {self.checkpoint.every_steps}: must be > 0"),
        (self.eval.every_steps >= 0, f"eval every_steps {self.eval.every_steps}: must be >= 0 (0 = at the end)"),
        (bool(self.eval.ks) and all(k > 0 for k in self.eval.ks), f"ks {self.eval.ks}: need positive cut-offs"),
        (self.eval.mask_history in masks,
         f"mask_history {self.eval.mask_history!r}: expected one of {masks}"),
        (not self.eval.select_best or self.eval.select_best in self.eval.metric_names(),
         f"select_best {self.eval.select_best!r}: expected one of {self.eval.metric_names()}"),
        (not self.eval.select_best or self.eval.every_steps > 0,
         "select_best needs periodic evaluations: set eval every_steps > 0"),
        (self.eval.patience >= 0, f"patience {self.eval.patience}: must be >= 0 (0 = off)"),
        (not self.eval.patience or self.eval.select_best,
         "patience stops on the select_best metric: set select_best too"),
        (bool(self.data.data_dir), "data_dir is empty: pass a dataset directory written by input_pipeline.prepare"),
        (bool(self.model_dir), "model_dir is empty: pass where checkpoints and exports should go"),
    ]
    problems = [message for ok, message in checks if not ok]
    if problems:
      raise ValueError("Invalid training configuration: " + "; ".join(problems) + ".")
    return self


def _replace(config: TrainConfig, **sections: Mapping[str, Any]) -> TrainConfig:
  """`TrainConfig` with some fields of some sections replaced: `data={"batch_size": 128}`."""
  return dataclasses.replace(
      config, **{name: dataclasses.replace(getattr(config, name), **fields) for name, fields in sections.items()})


def default() -> TrainConfig:
  return TrainConfig()


def sine_paper() -> TrainConfig:
  return _replace(
      TrainConfig(),
      data={"batch_size": 128, "max_length": 20},
      model={"name": "sine", "overrides": {"embedding_dim": 128}},
      optimizer={"name": ADAM, "learning_rate": 1e-3},
      loss={"num_negatives": 10})


def dss_paper() -> TrainConfig:
  return _replace(
      TrainConfig(),
      data={"batch_size": 128, "max_length": 50},
      model={"name": "dss"},
      optimizer={"name": ADAM, "learning_rate": 1e-3})


def s3rec() -> TrainConfig:
  # num_negatives above any of the benchmark catalogs (12,101 items at most) makes the
  # head compute the full softmax, as RecBole's CE loss does.
  return _replace(
      TrainConfig(),
      data={"batch_size": 256, "max_length": 50},
      model={"overrides": {"embedding_dim": 64}},
      optimizer={"name": ADAM, "learning_rate": 1e-3},
      loss={"num_negatives": 1_000_000})


PRESETS: Dict[str, Callable[[], TrainConfig]] = {
    "default": default,
    "sine_paper": sine_paper,
    "dss_paper": dss_paper,
    "s3rec": s3rec,
}


def preset(name: str) -> TrainConfig:
  if name not in PRESETS:
    raise ValueError(f"Unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}.")
  return PRESETS[name]()


def _parse_field(config_class: type, field: dataclasses.Field, value: Any) -> Any:
  """Parses a string override as the field's annotated type; other values pass through."""
  if not isinstance(value, str):
    return value
  kind = typing.get_type_hints(config_class)[field.name]
  if typing.get_origin(kind) is typing.Union:  # Optional[X]
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if value.lower() == "none":
      return None
    kind = args[0]
  try:
    if kind is bool:
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"expected true or false, got {value!r}")
      return value.lower() in ("true", "1")
    if kind in (int, float, str):
      return kind(value)
    if typing.get_origin(kind) in (tuple, list):
      (item_kind, *_) = typing.get_args(kind) or (str,)
      return tuple(item_kind(v) for v in value.split(",") if v)
  except ValueError as e:
    raise ValueError(f"Model parameter {field.name}={value!r}: cannot parse as {kind}: {e}") from e
  raise ValueError(f"Model parameter {field.name} has type {kind}, which cannot be set from a string.")


def build_model_config(model: ModelConfig, *, max_length: int) -> Any:
  """The registered model's config dataclass with `model.overrides` applied.

  Args:
    model: model name and overrides.
    max_length: the training history length (`DataConfig.max_length`); a model whose
      config has a `max_length` field gets this value, so that the data and the
      model (its position embeddings) always agree.

  Raises:
    ValueError: unknown model name (lists the known ones), unknown/unparsable field,
      or a `max_length` override that contradicts the data's.
  """
  # Imported here: the registry is filled by importing every model file.
  from models import all_models  # pylint: disable=unused-import
  from models import registry

  config_class = registry.lookup(model.name).config_class
  fields = {f.name: f for f in dataclasses.fields(config_class)}
  unknown = sorted(set(model.overrides) - set(fields))
  if unknown:
    raise ValueError(f"Model {model.name!r} has no parameter(s) {unknown}; its parameters are "
                     f"{sorted(fields)}.")
  values = {key: _parse_field(config_class, fields[key], value) for key, value in model.overrides.items()}
  if "max_length" in fields:
    if values.setdefault("max_length", max_length) != max_length:
      raise ValueError(f"Model parameter max_length={values['max_length']} contradicts the data's "
                       f"max_length={max_length}; set only --max_length.")
  return config_class(**values)
