r"""XDM's Table 2 and Table 3 on the synthetic impression log and on trivago.

    python benchmarks/xdm_experiment.py --datasets=synthetic --models=sdm,xdm --seeds=0
    python benchmarks/xdm_experiment.py --report          # tables and plot of every finished run

The paper (../shared/papers/xdm.md, section 4-5) compares on Taobao and Tmall logs:
DNN (YouTube's mean pooling), GRU4Rec, NARM, SHAN, BINN, SDM and five XDM variants
(Table 2), and three pair-only triplet structures (Table 3), by HR@50, MRR@50, R@50,
F1@50 and HR@80 over the full item corpus. Here the models are

    dnn                 YouTube-DNN style: the mean of the history's item embeddings
                        and of the user features' embeddings, two dense layers (defined
                        in this file, registered as "youtube_dnn")
    gru4rec             models/gru4rec.py (its own next-item training on every position)
    sdm                 models/sdm.py
    xdm, xdm_wo_sym, xdm_wo_fusion_sym, xdm_wo_metric, xdm_wo_conf_metric   Table 2
    xdm_unclk_lab, xdm_lab_clk, xdm_unclk_clk                               Table 3

on two data sets with impressions (`--datasets`):

    synthetic  the built-in generator (input_pipeline/synthetic.py: sessions, item
               categories, brands and tags, user profiles, 2 shown-but-unclicked items
               per click, half of them from the user's current interests), sized by the
               --synthetic_* flags, split by held-out users as SDM's protocol does
               (--test_fraction of the users are test users: their first 80% of
               events are the input, the rest the targets, so R@50 and F1@50 count
               several targets per user). Session gap: the paper's 10 minutes (the
               generator's sessions are minutes apart inside, hours apart between).
    trivago    ../shared/data/trivago_rsc19_sample (RecSys Challenge 2019, 2 days):
               clickouts are the clicks, the other hotels of each clickout's list the
               unclicked impressions; leave-last-one-out (a temporal split of the two
               days leaves 57 test users), so one target per user and R@50 = HR@50.
               Session gap 1 hour: 95% of the gaps between a user's clickouts inside a
               trivago session are under 20 minutes, the median gap between sessions
               75 minutes. No item side features.

Training: the trainer library (`trainer.loop.train_and_evaluate`) with preset
`default`, the XDM paper's section 4.3 (AdaGrad 0.1, gradients clipped at norm 5,
batch 256, 20,000 log-uniform sampled negatives with logQ correction, or the full
softmax when the catalog is smaller), next k = 5 clicks as labels (dnn, sdm, xdm),
D = `--embedding_dim`, margin m* = 5 and lambda = 10; `--epochs` passes over each
model's training samples (default 16 on synthetic, 300 on trivago), the valid split
evaluated every `--eval_every_epochs` (1 and 30) and the checkpoint with the best
valid `--select_best` tested once (selection on validation only). Every (data set,
model, seed) is one run directory `--work_dir`/<data set>/<model>/seed_<s>; a
finished run (metrics.json) is not trained again, so the experiment can be cut into
several invocations (a finished run trained with other settings, e.g. other
`--epochs`, stops the script: other settings need another `--work_dir`).

`--speed=sdm,xdm` measures instead the training speed (examples/s) and peak memory of
each model at the paper's settings (batch 256, D = 128, 20,000 sampled negatives) on
a synthetic log with impressions and a catalog of more than a million items
(docs/benchmarks.md records it).

`--report` reads every finished run and writes `--work_dir`/xdm_experiment.json, a
markdown report (means, sample standard deviations over the seeds, each seed, the
change relative to SDM), a bar plot of HR@50 (`--plot`) and per data set the valid
HR@50 over training (`--curves`), and prints the report; docs/xdm.md records it.

`--norms` loads the best checkpoint of each finished run of `--datasets`, `--models`
and `--seeds` and prints the mean lengths of the user vector z and, for XDM, of h, c,
n (eq 1, 3), over the first `--norms_batches` training batches: why XDM's eq 5 holds
back its softmax (docs/xdm.md).
"""

import dataclasses
import functools
import glob
import json
import math
import os
from typing import Any, Dict, List

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tf_keras

from common import files
from common import names
from input_pipeline import data_spec as data_spec_lib
from input_pipeline import dataset as dataset_lib
from input_pipeline import prepare
from input_pipeline import samples
from input_pipeline import schema
from input_pipeline import splits
from input_pipeline import synthetic
from models import base
from models import registry
from models import xdm
from models.layers import embeddings
from models.layers import feature_embeddings
from models.layers import pooling
from trainer import config as config_lib
import plots
import tensorflow as tf  # pylint: disable=g-bad-import-order  (after our packages: Keras 2)

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = ("synthetic", "trivago")
TABLE2 = ("dnn", "gru4rec", "sdm", "xdm_wo_conf_metric", "xdm_wo_metric", "xdm_wo_fusion_sym",
          "xdm_wo_sym", "xdm")
TABLE3 = ("xdm_unclk_lab", "xdm_lab_clk", "xdm_unclk_clk", "xdm_wo_sym", "xdm")
MODELS = TABLE2 + TABLE3[:3]
KS = (50, 80)
COLUMNS = ("hr@50", "mrr@50", "recall@50", "f1@50", "hr@80")
# The session gap (seconds) per data set (module docstring).
SESSION_GAP = {"synthetic": 600, "trivago": 3600}
# Training length per data set, in passes over the training samples, and the valid
# evaluations between. trivago's 2 days are 16 steps an epoch, and SDM needs about 180
# epochs to learn its re-clicks (docs/xdm.md: at 60 its HR@50 is 0.009, at 180 0.14).
EPOCHS = {"synthetic": 16.0, "trivago": 300.0}
EVAL_EVERY_EPOCHS = {"synthetic": 1.0, "trivago": 30.0}
# Table 2 and 3 of the paper, Taobao (in %), for the report.
PAPER = {
    "dnn": (29.95, 6.65, 1.44, 1.14, 36.74), "gru4rec": (32.39, 7.85, 1.62, 1.26, 39.25),
    "sdm": (36.27, 8.86, 1.81, 1.42, 43.70),
    "xdm_wo_conf_metric": (36.77, 9.12, 1.82, 1.43, 44.43),
    "xdm_wo_metric": (37.07, 9.12, 1.84, 1.45, 44.80),
    "xdm_wo_fusion_sym": (37.13, 9.09, 1.89, 1.47, 44.87),
    "xdm_wo_sym": (37.37, 9.29, 1.87, 1.47, 45.28), "xdm": (37.97, 9.41, 1.92, 1.50, 45.44),
    "xdm_unclk_lab": (36.69, 8.79, 1.83, 1.43, None),
    "xdm_lab_clk": (36.91, 9.29, 1.85, 1.45, None),
    "xdm_unclk_clk": (37.34, 9.40, 1.86, 1.46, None),
}

_SHARED_DIR = flags.DEFINE_string(
    "shared_dir", os.environ.get("DCG_SHARED_DIR", os.path.join(os.path.dirname(_REPO_ROOT), "shared")),
    "Folder holding data/trivago_rsc19_sample/ (read-only); default $DCG_SHARED_DIR or ../shared.")
_WORK_DIR = flags.DEFINE_string("work_dir", os.path.join(_REPO_ROOT, "runs", "xdm_experiment"),
                                "Prepared data, runs and the report go here.")
_DATASETS = flags.DEFINE_list("datasets", list(DATASETS), f"Any of {DATASETS}.")
_MODELS = flags.DEFINE_list("models", list(MODELS), f"Any of {MODELS}.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds.")
_EPOCHS = flags.DEFINE_float("epochs", None, "Passes over each model's training samples "
                             f"(default per data set: {EPOCHS}).")
_EVAL_EVERY_EPOCHS = flags.DEFINE_float(
    "eval_every_epochs", None,
    f"Epochs between valid evaluations, the selection candidates (default {EVAL_EVERY_EPOCHS}).")
_SELECT_BEST = flags.DEFINE_string("select_best", "hr@50", "Valid metric of the tested checkpoint.")
_MASK_HISTORY = flags.DEFINE_enum(
    "mask_history", "keep_targets", ["all", "keep_targets", "none"],
    "History masking of the ranking (trainer/evaluation.py); keep_targets: the input history "
    "is masked but a target the user clicked before stays rankable (a re-click is a click).")
_EMBEDDING_DIM = flags.DEFINE_integer("embedding_dim", 64, "D (the paper: 128).")
_OPTIMIZER = flags.DEFINE_enum("optimizer", None, list(config_lib.OPTIMIZERS),
                               "Optimizer (preset default: adagrad, the paper's).")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", None, "Learning rate (preset default: 0.1).")
_MODEL_PARAM = flags.DEFINE_multi_string("model_param", [], "NAME=VALUE for sdm/xdm (all of them).")
_SYNTHETIC_USERS = flags.DEFINE_integer("synthetic_users", 6000, "Synthetic users.")
_SYNTHETIC_ITEMS = flags.DEFINE_integer("synthetic_items", 3000, "Synthetic catalog.")
_SYNTHETIC_EVENTS = flags.DEFINE_integer("synthetic_events", 120_000, "Synthetic clicks.")
_TEST_FRACTION = flags.DEFINE_float("test_fraction", 0.2, "synthetic: share of test users.")
_REPORT = flags.DEFINE_bool("report", False, "Only write the report of the finished runs.")
_SPEED = flags.DEFINE_list("speed", [], "Instead of quality runs: training speed and peak memory "
                           "of these models (sdm, xdm) at the paper's settings, each in a fresh "
                           "process, on a synthetic catalog of --speed_items items.")
_SPEED_ITEMS = flags.DEFINE_integer("speed_items", 1_500_000, "--speed: synthetic catalog size "
                                    "(items that never occur, in clicks or impressions, drop out).")
_SPEED_EVENTS = flags.DEFINE_integer("speed_events", 4_000_000, "--speed: synthetic clicks.")
_SPEED_USERS = flags.DEFINE_integer("speed_users", 200_000, "--speed: synthetic users.")
_SPEED_STEPS = flags.DEFINE_integer("speed_steps", 200, "--speed: timed steps.")
_SPEED_WARMUP = flags.DEFINE_integer("speed_warmup", 50, "--speed: untimed steps first.")
_SPEED_INTERVAL = flags.DEFINE_integer("speed_interval", 25, "--speed: steps per tf.function call.")
_SPEED_DIM = flags.DEFINE_integer("speed_dim", 128, "--speed: D (the paper: 128).")
_SPEED_RESULT = flags.DEFINE_string("speed_result", None, "Internal: measure --speed's one model "
                                    "in this process and write the figures to this JSON file.")
_NORMS = flags.DEFINE_bool("norms", False, "Instead of training: the user vector lengths of "
                           "the finished runs (module docstring).")
_NORMS_BATCHES = flags.DEFINE_integer("norms_batches", 20, "--norms: training batches read.")
_PLOT = flags.DEFINE_string("plot", os.path.join(_REPO_ROOT, "docs", "xdm_hr50.png"),
                            "--report: where the HR@50 bar plot goes (empty: none).")
_CURVES = flags.DEFINE_string(
    "curves", os.path.join(_REPO_ROOT, "docs", "xdm_valid_{dataset}.svg"),
    "--report: valid HR@50 over training, one plot per data set ({dataset} in the path; "
    "empty: none).")


# The DNN baseline of Table 2 (Covington et al., RecSys 2016), only for this experiment.


@dataclasses.dataclass(frozen=True)
class YouTubeDNNConfig:
  """Attributes: embedding_dim, max_length (the history read), num_labels (next k clicks)."""
  embedding_dim: int = 64
  max_length: int = 50
  num_labels: int = 5


@registry.register("youtube_dnn", YouTubeDNNConfig)
class YouTubeDNN(base.RetrievalModel):
  """u = W2 relu(W1 [mean of the history's item embeddings; user profile means] + b1) + b2.

  The "average pooling" DNN of XDM's Table 2: the history is a bag of items. The
  profile part is one mean embedding per user-feature field (as SDM's profile
  without its tanh layer); the last layer is linear so that u can point anywhere.
  """

  def __init__(self, config: YouTubeDNNConfig, *, data, **kwargs):
    super().__init__(data=data, **kwargs)
    self.config = config
    dim = config.embedding_dim
    self.item_embedding = embeddings.ItemEmbedding(self.num_items, dim, name="item_embedding")
    self.profile = None
    if data.num_user_features:
      self.profile = feature_embeddings.UserProfileEmbedding(data.user_feature_names, dim,
                                                             name="profile")
    self.hidden = tf_keras.layers.Dense(2 * dim, activation="relu", name="hidden")
    self.output_layer = tf_keras.layers.Dense(dim, name="output")

  def sample_spec(self):
    sets = [samples.History(self.config.max_length)]
    if self.data.num_user_features:
      sets.append(samples.UserFeatures())
    return samples.SampleSpec(features=tuple(sets), training=samples.NextK(self.config.num_labels))

  def call(self, features, training=False):
    history = features[names.HISTORY]
    parts = [pooling.masked_mean(self.item_embedding(history),
                                 self.item_embedding.padding_mask(history))]
    if self.profile is not None:
      parts.append(self.profile(features[names.USER_FEATURES]))
    user_vector = self.output_layer(self.hidden(tf.concat(parts, axis=-1)))
    outputs = {names.USER_VECTORS: user_vector[:, tf.newaxis, :]}
    if names.LABELS in features:
      outputs[names.HEADS] = {"next_clicks": base.Head(user_vector, features[names.LABELS])}
    return outputs


# Data.


def data_dir(name: str) -> str:
  """The prepared data set `name`, prepared on first use."""
  path = os.path.join(_WORK_DIR.value, "data", name)
  if os.path.exists(os.path.join(path, schema.STATS_FILE)):
    return path
  if name == "synthetic":
    config = prepare.PrepareConfig(
        output_dir=path, num_shards=2,
        split=splits.SplitConfig(protocol=schema.HELD_OUT_USERS, valid_fraction=0.1,
                                 test_fraction=_TEST_FRACTION.value),
        synthetic=synthetic.SyntheticConfig(num_users=_SYNTHETIC_USERS.value,
                                            num_items=_SYNTHETIC_ITEMS.value,
                                            num_events=_SYNTHETIC_EVENTS.value))
  else:
    source = os.path.join(_SHARED_DIR.value, "data", "trivago_rsc19_sample")
    if not os.path.isdir(source):
      raise FileNotFoundError(f"{source!r} not found: pass --shared_dir or set DCG_SHARED_DIR.")
    config = prepare.PrepareConfig(output_dir=path, dataset="trivago", input_path=source,
                                   num_shards=1)
  logging.info("preparing %s into %s", name, path)
  prepare.prepare_dataset(config)
  return path


def unclicked_baseline(data: data_spec_lib.DataSpec, split: str = "test") -> Dict[str, float]:
  """A heuristic without training: each user's unclicked items, latest shown first.

  The ranked list is the distinct items shown before the request (the evaluation's own
  `Unclicked` feature), newest exposure first, the input history masked as
  `--mask_history` says; nothing else is ranked. The metrics follow
  `trainer/evaluation.py`'s definitions. Also returned: the share of targets that
  were shown before (`in_unclicked`) and that were clicked before (`clicked_before`:
  never a hit under `--mask_history=all`).
  """
  spec = samples.SampleSpec(features=(samples.History(10**6), samples.Unclicked(max_items=10**6)),
                            training=samples.AllPrefixes())
  sums = dict.fromkeys(COLUMNS, 0.0)
  shown = clicked = targets = users = 0
  for batch in dataset_lib.make_dataset(dataset_lib.eval_config(data.data_dir, split), spec, data):
    for row_targets, row_unclicked, row_history in zip(
        batch[names.EVAL_TARGETS].numpy(), batch[names.UNCLICKED].numpy(),
        batch[names.EVAL_EXCLUDE].numpy()):
      history = set(row_history.tolist())
      relevant = set(row_targets[row_targets < data.num_items].tolist())
      masked = {"all": history, "keep_targets": history - relevant, "none": set()}[
          _MASK_HISTORY.value]
      ranked = [i for i in dict.fromkeys(row_unclicked.tolist())
                if i < data.num_items and i not in masked]
      if not relevant:
        continue
      users += 1
      targets += len(relevant)
      shown += len(relevant & set(row_unclicked.tolist()))
      clicked += len(relevant & history)
      hits = {k: sum(1 for i in ranked[:k] if i in relevant) for k in KS}
      first = next((rank for rank, i in enumerate(ranked) if i in relevant), None)
      sums["hr@50"] += hits[50] > 0
      sums["hr@80"] += hits[80] > 0
      sums["recall@50"] += hits[50] / len(relevant)
      sums["f1@50"] += 2 * hits[50] / (len(relevant) + 50)
      sums["mrr@50"] += 1 / (first + 1) if first is not None and first < 50 else 0.0
  return {"users": users, "targets": targets, "in_unclicked": shown / max(targets, 1),
          "clicked_before": clicked / max(targets, 1),
          "metrics": {c: v / max(users, 1) for c, v in sums.items()}}


# Runs.


def model_and_overrides(model: str, dataset: str) -> tuple:
  """(registered model name, config overrides) of one experiment model."""
  dim = {"embedding_dim": _EMBEDDING_DIM.value}
  if model == "dnn":
    return "youtube_dnn", dim
  if model == "gru4rec":
    return "gru4rec", dim
  overrides = {**dim, "session_gap": SESSION_GAP[dataset]}
  for entry in _MODEL_PARAM.value:
    key, sep, value = entry.partition("=")
    if not sep:
      raise ValueError(f"--model_param expects NAME=VALUE, got {entry!r}.")
    overrides[key.strip()] = value.strip()
  if model == "sdm":
    return "sdm", overrides
  if model not in xdm.VARIANTS:
    raise ValueError(f"Unknown experiment model {model!r}; known: {MODELS}.")
  fusion, metric = xdm.VARIANTS[model]
  return "xdm", {**overrides, "fusion": fusion, "metric": metric}


@functools.lru_cache(maxsize=None)
def count_training_samples(dataset: str, model: str, max_length: int) -> int:
  """Samples in one pass over the train split, as the model's training builder cuts them
  (counted once per process, though every seed asks)."""
  data = data_spec_lib.read(data_dir(dataset))
  name, overrides = model_and_overrides(model, dataset)
  model_config = config_lib.build_model_config(
      config_lib.ModelConfig(name=name, overrides=overrides), max_length=max_length)
  spec = registry.lookup(name).model_class(model_config, data=data).sample_spec()
  one_pass = dataset_lib.make_dataset(dataset_lib.InputConfig(
      data_dir=data.data_dir, batch_size=4096, num_epochs=1, shuffle=False, bucketing=False),
      spec, data)
  return int(sum(int(batch[names.HISTORY_LENGTH].shape[0]) for batch in one_pass))


def run_dir(dataset: str, model: str, seed: int) -> str:
  return os.path.join(_WORK_DIR.value, dataset, model, f"seed_{seed}")


def run_config(dataset: str, model: str, seed: int) -> config_lib.TrainConfig:
  """The trainer configuration of one (data set, model, seed)."""
  data = data_spec_lib.read(data_dir(dataset))
  name, overrides = model_and_overrides(model, dataset)
  base_config = config_lib.default()
  config = dataclasses.replace(
      base_config, model_dir=run_dir(dataset, model, seed),
      data=dataclasses.replace(base_config.data, data_dir=data.data_dir),
      model=config_lib.ModelConfig(name=name, overrides=overrides),
      optimizer=dataclasses.replace(base_config.optimizer, **{
          k: v for k, v in (("name", _OPTIMIZER.value), ("learning_rate", _LEARNING_RATE.value))
          if v is not None}))
  steps_per_epoch = (count_training_samples(dataset, model, config.data.max_length)
                     / config.data.batch_size)
  epochs = EPOCHS[dataset] if _EPOCHS.value is None else _EPOCHS.value
  eval_every_epochs = (EVAL_EVERY_EPOCHS[dataset] if _EVAL_EVERY_EPOCHS.value is None
                       else _EVAL_EVERY_EPOCHS.value)
  eval_every = max(1, round(eval_every_epochs * steps_per_epoch))
  return dataclasses.replace(
      config,
      schedule=dataclasses.replace(base_config.schedule, seed=seed, log_every=min(eval_every, 100),
                                   train_steps=max(1, math.ceil(epochs * steps_per_epoch))),
      checkpoint=dataclasses.replace(base_config.checkpoint, every_steps=eval_every),
      eval=dataclasses.replace(base_config.eval, ks=KS, every_steps=eval_every,
                               select_best=_SELECT_BEST.value, mask_history=_MASK_HISTORY.value),
      export=dataclasses.replace(base_config.export, enabled=False))


def train_run(config: config_lib.TrainConfig) -> Dict[str, Any]:
  """Trains and tests one run; returns its metrics.json content."""
  from trainer import loop  # pylint: disable=g-import-not-at-top  (heavy: only when training)

  logging.info("training %s on %s: %d steps", config.model.name, config.model_dir,
               config.schedule.train_steps)
  return loop.train_and_evaluate(config)


def finished(dataset: str, model: str, seed: int):
  path = os.path.join(run_dir(dataset, model, seed), "metrics.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


# What a finished run must share with the configuration asked for, to be reused.
_REUSE_KEYS = (("model",), ("optimizer",), ("loss",), ("schedule", "train_steps"),
               ("eval", "every_steps"), ("eval", "select_best"), ("eval", "mask_history"))


def check_reusable(done: Dict[str, Any], config: config_lib.TrainConfig) -> None:
  """Raises if a finished run was trained with other settings than `config`."""
  asked = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples as lists, like the file
  for key in _REUSE_KEYS:
    got, want = done["config"], asked
    for part in key:
      got, want = got.get(part), want.get(part)
    if got != want:
      raise ValueError(
          f"{config.model_dir} finished with {'.'.join(key)} = {got}, not {want}: pass another "
          "--work_dir (or remove the run) to train with these settings.")


# Speed.


def speed_data_dir() -> str:
  """The large synthetic log with impressions, prepared once per size."""
  path = os.path.join(_WORK_DIR.value, "data",
                      f"speed_{_SPEED_ITEMS.value}_items_{_SPEED_EVENTS.value}_events")
  if not os.path.exists(os.path.join(path, schema.STATS_FILE)):
    logging.info("preparing the %d-item synthetic log into %s", _SPEED_ITEMS.value, path)
    prepare.prepare_dataset(prepare.PrepareConfig(
        output_dir=path, num_shards=8, synthetic=synthetic.SyntheticConfig(
            num_users=_SPEED_USERS.value, num_items=_SPEED_ITEMS.value,
            num_events=_SPEED_EVENTS.value)))
  return path


def _status_mb(field: str) -> float:
  """A memory field of /proc/self/status (VmRSS, VmHWM) in MB."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) / 1024
  raise ValueError(f"/proc/self/status has no {field} line.")


def measure_speed(model: str, path: str) -> Dict[str, Any]:
  """Times `--speed_steps` training steps of the trainer's own step function.

  The pieces `train_and_evaluate` runs between two progress lines (`loop.TrainingRun`,
  `steps.LocalSteps`: model, optimizer, loss head, the real input pipeline, several
  steps per `tf.function` call), preset `default` (AdaGrad 0.1, clip 5, batch 256,
  20,000 log-uniform negatives), D = `--speed_dim`, the paper's XDM (confidence fusion,
  symmetric triplet).
  """
  import tempfile  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from trainer import loop  # pylint: disable=g-import-not-at-top
  from trainer import steps as steps_lib  # pylint: disable=g-import-not-at-top

  base_config = config_lib.default()
  interval = _SPEED_INTERVAL.value
  load_before = os.getloadavg()[0]
  with tempfile.TemporaryDirectory() as model_dir:
    config = dataclasses.replace(
        base_config, model_dir=model_dir,
        data=dataclasses.replace(base_config.data, data_dir=path),
        model=config_lib.ModelConfig(name=model, overrides={"embedding_dim": _SPEED_DIM.value}),
        export=dataclasses.replace(base_config.export, enabled=False))
    run = loop.TrainingRun(config, tf.distribute.get_strategy())
    steps = steps_lib.LocalSteps(run, seed=0)
    started = time.perf_counter()
    for _ in range(max(1, _SPEED_WARMUP.value // interval)):
      steps(interval)
    warmup_seconds = time.perf_counter() - started
    wall = cpu = examples = 0.0
    last = {}
    for _ in range(max(1, _SPEED_STEPS.value // interval)):
      wall_start, cpu_start = time.perf_counter(), time.process_time()
      last = steps(interval)
      wall += time.perf_counter() - wall_start
      cpu += time.process_time() - cpu_start
      examples += last[loop.EXAMPLES_TERM]
    timed = max(1, _SPEED_STEPS.value // interval) * interval
  stats = schema.read_stats(path)
  return {
      "model": model, "num_items": int(stats["num_items"]), "embedding_dim": _SPEED_DIM.value,
      "batch_size": config.data.batch_size, "num_negatives": config.loss.num_negatives,
      "optimizer": config.optimizer.name, "warmup_seconds": warmup_seconds, "timed_steps": timed,
      "examples_per_second": examples / wall, "ms_per_step": 1000 * wall / timed,
      "examples_per_cpu_second": examples / cpu, "peak_rss_mb": _status_mb("VmHWM"),
      "loss_last": last.get(loop.TOTAL_TERM, float("nan")) / interval,
      "load_before": load_before, "load_after": os.getloadavg()[0], "cpus": os.cpu_count(),
      "gpus": len(tf.config.list_physical_devices("GPU")), "tensorflow": tf.__version__}


def speed() -> None:
  """Each model of --speed in a fresh process (its own peak RSS), then one table."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top

  speed_data_dir()  # prepared here, outside every child's peak RSS
  results = []
  with tempfile.TemporaryDirectory() as temp:
    for model in _SPEED.value:
      result_json = os.path.join(temp, f"{model}.json")
      command = [sys.executable, os.path.abspath(__file__), f"--speed={model}",
                 f"--speed_result={result_json}", f"--work_dir={_WORK_DIR.value}"] + [
                     f"--{name}={flags.FLAGS[name].value}" for name in (
                         "speed_items", "speed_events", "speed_users", "speed_steps",
                         "speed_warmup", "speed_interval", "speed_dim")]
      subprocess.run(command, check=True)
      with open(result_json) as f:
        results.append(json.load(f))
  lines = ["| model | items | D | batch | negatives | examples/s | ms/step | examples/CPU-s | "
           "peak RSS MB | load | devices |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    lines.append(f"| {r['model']} | {r['num_items']:,} | {r['embedding_dim']} | {r['batch_size']} | "
                 f"{r['num_negatives']:,} | {r['examples_per_second']:,.0f} | {r['ms_per_step']:.0f} | "
                 f"{r['examples_per_cpu_second']:,.0f} | {r['peak_rss_mb']:,.0f} | "
                 f"{r['load_before']:.1f}-{r['load_after']:.1f} | {r['cpus']} CPUs, {r['gpus']} GPUs |")
  print("\n".join(lines))
  print(json.dumps(results, indent=2))
  files.write_json(os.path.join(_WORK_DIR.value, "speed.json"), results)


# Vector lengths.


def vector_norms(dataset: str, model: str, seed: int) -> Dict[str, float]:
  """Mean |z| and, for XDM, |h|, |c|, |n| (users with unclicked items) of a finished run."""
  from trainer import checkpoints, export, loop  # pylint: disable=g-import-not-at-top

  config = finished(dataset, model, seed)["config"]
  data = data_spec_lib.read(data_dir(dataset))
  model_config = config_lib.build_model_config(config_lib.ModelConfig(**config["model"]),
                                               max_length=config["data"]["max_length"])
  network = export.build_model(config["model"]["name"], model_config, data)
  best_dir = os.path.join(run_dir(dataset, model, seed), loop.CHECKPOINT_SUBDIR, loop.BEST_SUBDIR)
  export.restore_model(network, checkpoints.read_best(best_dir)["checkpoint"])
  lengths: Dict[str, List[np.ndarray]] = {}
  batches = dataset_lib.make_dataset(dataset_lib.InputConfig(
      data_dir=data.data_dir, batch_size=config["data"]["batch_size"], num_epochs=1,
      shuffle=False, deterministic=True), network.sample_spec(), data)
  for batch in batches.take(_NORMS_BATCHES.value):
    outputs = network(batch, training=False)
    vectors = {"z": outputs[names.USER_VECTORS][:, 0, :]}
    if xdm.CLICKED in outputs:
      has_unclicked = batch[names.UNCLICKED_LENGTH] > 0
      vectors.update(h=outputs[xdm.CLICKED], c=network.encode_items(batch[names.LABELS])[0],
                     n=tf.boolean_mask(outputs[xdm.UNCLICKED], has_unclicked))
    for key, value in vectors.items():
      lengths.setdefault(key, []).append(tf.norm(value, axis=-1).numpy())
  return {key: float(np.concatenate(values).mean()) for key, values in lengths.items()}


def format_norms() -> str:
  lines = ["| data set | model | seed | ‖z‖ | ‖h‖ | ‖c‖ | ‖n‖ |", "|---|---|---|---|---|---|---|"]
  for dataset in _DATASETS.value:
    for model in _MODELS.value:
      for seed in (int(s) for s in _SEEDS.value):
        if finished(dataset, model, seed) is None:
          continue
        norms = vector_norms(dataset, model, seed)
        lines.append(f"| {dataset} | {model} | {seed} | " + " | ".join(
            f"{norms[key]:.2f}" if key in norms else "" for key in "zhcn") + " |")
  return "\n".join(lines)


# Report.


def _mean_std(values: List[float]) -> tuple:
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def collect() -> Dict[str, Any]:
  results: Dict[str, Any] = {}
  for dataset in DATASETS:
    for model in MODELS:
      runs = []
      for seed_dir in sorted(os.listdir(os.path.join(_WORK_DIR.value, dataset, model))
                             if os.path.isdir(os.path.join(_WORK_DIR.value, dataset, model)) else []):
        result = finished(dataset, model, int(seed_dir.split("_")[-1]))
        if result is not None:
          runs.append({"seed": int(seed_dir.split("_")[-1]), "step": result["step"],
                       "metrics": {c: result["metrics"][c] for c in COLUMNS},
                       "valid": {c: result["valid"]["metrics"][c] for c in COLUMNS},
                       "training": result["training"]})
      if runs:
        results.setdefault(dataset, {})[model] = {
            "runs": runs,
            "mean": {c: _mean_std([r["metrics"][c] for r in runs])[0] for c in COLUMNS},
            "std": {c: _mean_std([r["metrics"][c] for r in runs])[1] for c in COLUMNS}}
  return results


def format_table(dataset: str, by_model: Dict[str, Any], models) -> str:
  """Markdown: mean +- std (in %) over the seeds, and the change relative to SDM."""
  header = "| model | seeds | " + " | ".join(c.upper() for c in COLUMNS) + " |"
  lines = [header, "|---|---|" + "---|" * len(COLUMNS)]
  base_mean = by_model.get("sdm", {}).get("mean")
  for model in models:
    if model not in by_model:
      continue
    entry, cells = by_model[model], []
    for column in COLUMNS:
      cell = f"{100 * entry['mean'][column]:.2f} ± {100 * entry['std'][column]:.2f}"
      if base_mean and model != "sdm" and base_mean[column] > 0:
        cell += f" ({100 * (entry['mean'][column] / base_mean[column] - 1):+.1f}%)"
      cells.append(cell)
    lines.append(f"| {model} | {len(entry['runs'])} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def format_seeds(dataset: str, by_model: Dict[str, Any]) -> str:
  lines = ["| model | seed | best step | valid HR@50 | test HR@50 | MRR@50 | R@50 | F1@50 | HR@80 |",
           "|---|---|---|---|---|---|---|---|---|"]
  for model, entry in by_model.items():
    for run in entry["runs"]:
      m = run["metrics"]
      lines.append(f"| {model} | {run['seed']} | {run['step']} | {100 * run['valid']['hr@50']:.2f} | "
                   + " | ".join(f"{100 * m[c]:.2f}" for c in COLUMNS) + " |")
  return "\n".join(lines)


def valid_curve(dataset: str, model: str, seed: int) -> Dict[int, float]:
  """{step: valid HR@50} of each evaluation of a run, read from its TensorBoard summaries."""
  points: Dict[int, float] = {}
  pattern = os.path.join(run_dir(dataset, model, seed), "summaries", "valid", "*")
  for path in sorted(glob.glob(pattern)):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.tag == COLUMNS[0]:
          # The first value per step: the loop evaluates the restored best checkpoint again
          # at the end, under its own step.
          points.setdefault(event.step, float(tf.make_ndarray(value.tensor)))
  return points


def plot_curves(results: Dict[str, Any], path_template: str) -> List[str]:
  """Per data set, the seeds' mean valid HR@50 of every model against the training step."""
  paths = []
  for dataset, by_model in results.items():
    series = {}
    for model, entry in by_model.items():
      curves = [valid_curve(dataset, model, run["seed"]) for run in entry["runs"]]
      steps = sorted(set.intersection(*(set(curve) for curve in curves)))
      series[f"{model} ({len(curves)} seed{'s' if len(curves) > 1 else ''})"] = [
          (step, 100 * float(np.mean([curve[step] for curve in curves]))) for step in steps]
    path = path_template.format(dataset=dataset)
    plots.line_plot(path, series, title=f"{dataset}: valid HR@50 during training",
                    xlabel="training step (batch 256)", ylabel="valid HR@50 (%), mean over seeds")
    paths.append(path)
  return paths


def plot(results: Dict[str, Any], path: str) -> None:
  """Bar plot of HR@50 (mean, with one standard deviation) per model and data set."""
  pyplot = plots.pyplot()
  datasets = [d for d in DATASETS if d in results]
  figure, axes = pyplot.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.2), squeeze=False)
  for axis, dataset in zip(axes[0], datasets):
    models = [m for m in MODELS if m in results[dataset]]
    means = [100 * results[dataset][m]["mean"]["hr@50"] for m in models]
    stds = [100 * results[dataset][m]["std"]["hr@50"] for m in models]
    colors = ["#999999" if m in ("dnn", "gru4rec") else "#4477aa" if m == "sdm" else
              "#cc6677" if m in TABLE2 else "#ddaa33" for m in models]
    axis.bar(range(len(models)), means, yerr=stds, color=colors, capsize=3)
    axis.set_xticks(range(len(models)))
    axis.set_xticklabels(models, rotation=60, ha="right", fontsize=8)
    axis.set_ylabel("test HR@50 (%), mean ± std over seeds")
    low = min(m - s for m, s in zip(means, stds))
    axis.set_ylim(max(0.0, low - 0.15 * (max(means) - low + 1e-9)), None)
    axis.set_title(dataset)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  pyplot.close(figure)


def report() -> str:
  results = collect()
  shares = {}
  for dataset in DATASETS:
    path = os.path.join(_WORK_DIR.value, "data", dataset)
    if os.path.exists(os.path.join(path, schema.STATS_FILE)):
      shares[dataset] = unclicked_baseline(data_spec_lib.read(path))
  files.write_json(os.path.join(_WORK_DIR.value, "xdm_experiment.json"),
                   {"results": results, "targets": shares})
  parts = []
  for dataset, by_model in results.items():
    parts.append(f"### {dataset}\n\nTable 2 (test, %, mean ± sample std over seeds; change vs SDM):\n\n"
                 + format_table(dataset, by_model, TABLE2)
                 + "\n\nTable 3:\n\n" + format_table(dataset, by_model, TABLE3)
                 + "\n\nEvery seed:\n\n" + format_seeds(dataset, by_model))
    if dataset in shares:
      share = shares[dataset]
      parts.append(
          f"{dataset} test: {share['users']} users, {share['targets']} targets; "
          f"{100 * share['in_unclicked']:.1f}% of the targets were shown to the user before "
          f"the request and not clicked, {100 * share['clicked_before']:.1f}% clicked before "
          f"(history mask: {_MASK_HISTORY.value}). The heuristic 'the unclicked items, latest first' "
          f"(no training): " + ", ".join(f"{c.upper()} {100 * share['metrics'][c]:.2f}"
                                         for c in COLUMNS) + ".")
  if _PLOT.value and results:
    plot(results, _PLOT.value)
    parts.append(f"plot: {_PLOT.value}")
  if _CURVES.value and results:
    parts.append("valid curves: " + ", ".join(plot_curves(results, _CURVES.value)))
  return "\n\n".join(parts)


def main(argv):
  del argv
  if _SPEED_RESULT.value:
    (model,) = _SPEED.value
    with open(_SPEED_RESULT.value, "w") as f:
      json.dump(measure_speed(model, speed_data_dir()), f)
    return
  if _SPEED.value:
    speed()
    return
  if _REPORT.value:
    print(report())
    return
  if _NORMS.value:
    print(format_norms())
    return
  unknown = sorted(set(_DATASETS.value) - set(DATASETS)) + sorted(set(_MODELS.value) - set(MODELS))
  if unknown:
    raise ValueError(f"Unknown data sets or models {unknown}; data sets {DATASETS}, models {MODELS}.")
  for dataset in _DATASETS.value:
    for model in _MODELS.value:
      for seed in (int(s) for s in _SEEDS.value):
        config = run_config(dataset, model, seed)
        done = finished(dataset, model, seed)
        if done is not None:
          check_reusable(done, config)
          logging.info("%s %s seed %d: finished before, skipped", dataset, model, seed)
          continue
        result = train_run(config)
        logging.info("%s %s seed %d: %s", dataset, model, seed,
                     {c: round(result["metrics"][c], 4) for c in COLUMNS})


if __name__ == "__main__":
  app.run(main)
