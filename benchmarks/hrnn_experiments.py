r"""HRNN-meta's experiments (Ma et al., KDD 2020) on the data available here.

    python benchmarks/hrnn_experiments.py --experiments=table8,ablation,cold_start,time_delta
    python benchmarks/hrnn_experiments.py --experiments=sessions,retrain
    python benchmarks/hrnn_experiments.py --experiments=throughput --throughput_items=100000,1000000

The paper's figures are on MovieLens-1M/10M/20M, Reddit, Yoochoose, Outbrain and
Taobao; here MovieLens-100K (`../shared/data/movielens_100k`: timestamps, ratings,
genres, user age/gender/occupation) and the Yoochoose sample stand in, so the shapes
compare, not the digits. Every experiment trains with the trainer library
(`trainer.loop`), ranks the whole catalog with the trainer's evaluator (perplexity
included) and writes `--work_dir`/<experiment>.json; `docs/hrnn_meta.md` records the
results. Experiments (`--experiments`):

  table8      Table 8: GRU with a 43-dim hidden state, 4 epochs, the last item of
              held-out test users (20% of the users; their other items are the input):
              importance sampling (`--is_negatives` negatives from counts^0.75, log Q
              subtracted) against the dense softmax: training items/s, PPL, NDCG@25.
  ablation    Table 1: PPL (and ranking) of popularity, last item's features only, the
              sequence alone, + item features, + user features, + feedback, + time
              controls (the full HRNN-meta); held-out users, their last 20% as targets.
  cold_start  Table 7: half of the items, uniformly at random, get no training event;
              test users' events on them are the targets, ranked among those items only
              (lambda = 1: features alone). HRNN-meta (lambda ~ U[0, 1] in training),
              the same with lambda fixed at 0.5, and random choice.
  time_delta  Table 2: the full model of `ablation` (seed 0), exported, asked for the
              same histories at request delays 0 s .. 30 days through its serving
              signature: the top recommendations, how often they change, their genre
              overlap with the last item and their popularity.
  sessions    Table 6 / the session control: GRU (HRNN-meta without time inputs)
              against HRNN (with them) on the Yoochoose sample, leave-last-one-out.
  retrain     Figure 5: train on the first 70% of MovieLens-100K's time span once
              (offline) or on the last `--retrain_window_days` before each test window
              of `--retrain_step_days` (online, warm-started), with and without item
              trend correction (log q of the last `--trend_days`), and Recent Popular.
  throughput  Table 8's throughput: training items/s of the GRU with a sampled
              (`--throughput_negatives`) and the dense softmax at `--throughput_items`
              catalog sizes (BPTT 32, batch 32, 256 units, D 64, AdaGrad), in memory.
  report      Markdown tables of every result found in `--work_dir` (and the S3-Rec
              quality runs in `--quality_dir`), next to the paper's figures.

Plots are written as SVG next to the JSON (`plots.line_plot`, matplotlib: `pip install -e ".[bench]"`).
"""

import json
import math
import os
import shutil
import time
from typing import Any, Dict, List

from absl import app
from absl import flags
from absl import logging
import numpy as np

from common import files
from common import names
from input_pipeline import data_spec as data_spec_lib
from input_pipeline import dataset as dataset_lib
from input_pipeline import popularity
from input_pipeline import prepare
from input_pipeline import samples
from input_pipeline import schema
from input_pipeline import synthetic
from input_pipeline.splits import SplitConfig
from trainer import config as config_lib
from trainer import evaluation
import hrnn_report
import hrnn_retraining
import plots
import timelines
import tensorflow as tf  # pylint: disable=g-bad-import-order  (after our packages: Keras 2)

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = ("table8", "ablation", "cold_start", "time_delta", "sessions", "retrain",
               "throughput", "report")
DAY = 86_400

_EXPERIMENTS = flags.DEFINE_list("experiments", ["table8", "ablation", "cold_start", "time_delta"],
                                 f"Any of {EXPERIMENTS}.")
_SHARED_DIR = flags.DEFINE_string(
    "shared_dir", os.environ.get("DCG_SHARED_DIR", os.path.join(os.path.dirname(_REPO_ROOT), "shared")),
    "Folder holding data/movielens_100k and data/yoochoose_sample (read-only).")
_WORK_DIR = flags.DEFINE_string("work_dir", os.path.join(_REPO_ROOT, "runs", "hrnn_experiments"),
                                "Prepared data, runs, <experiment>.json and plots go here.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds; means are reported.")
_IS_NEGATIVES = flags.DEFINE_integer("is_negatives", 64, "table8: sampled negatives.")
_ABLATION_EPOCHS = flags.DEFINE_float("ablation_epochs", 10.0, "ablation, cold_start: epochs.")
_ABLATION_LAST_ROWS = flags.DEFINE_integer(
    "ablation_last_rows", 6, "ablation: run only the last N rows (1: the full model alone, "
    "e.g. for time_delta).")
_SESSION_EPOCHS = flags.DEFINE_float("session_epochs", 30.0, "sessions: epochs.")
_RETRAIN_EPOCHS = flags.DEFINE_float("retrain_epochs", 5.0, "retrain: epochs per training.")
_RETRAIN_WINDOW_DAYS = flags.DEFINE_float("retrain_window_days", 28.0,
                                          "retrain: online training window W.")
_RETRAIN_STEP_DAYS = flags.DEFINE_float("retrain_step_days", 7.0, "retrain: test window.")
_TREND_DAYS = flags.DEFINE_float("trend_days", 7.0, "retrain: popularity window of log q.")
_THROUGHPUT_ITEMS = flags.DEFINE_list("throughput_items", ["10000", "100000", "1000000"],
                                      "throughput: catalog sizes.")
_THROUGHPUT_NEGATIVES = flags.DEFINE_integer("throughput_negatives", 2048,
                                             "throughput: sampled negatives.")
_THROUGHPUT_SECONDS = flags.DEFINE_float("throughput_seconds", 20.0,
                                         "throughput: timed seconds per setting, at least.")

_QUALITY_DIR = flags.DEFINE_string("quality_dir", os.path.join(_REPO_ROOT, "runs", "hrnn_quality"),
                                   "report: where benchmarks/quality.py wrote hrnn_meta_*.json.")

_BASELINE_DIR = flags.DEFINE_string(
    "baseline_dir", os.path.join(_REPO_ROOT, "runs", "quality"),
    "report: quality.py results files with gru4rec runs, shown beside HRNN-meta's.")

KS = (5, 10, 20, 25, 50)


# Data.


def _shared(name: str) -> str:
  path = os.path.join(_SHARED_DIR.value, "data", name)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path!r} not found: pass --shared_dir (the folder holding data/).")
  return path


def prepared(name: str, dataset: str, source: str, split: SplitConfig) -> str:
  """A dataset directory under `--work_dir`/data, prepared on first use."""
  data_dir = os.path.join(_WORK_DIR.value, "data", name)
  if not os.path.exists(os.path.join(data_dir, schema.STATS_FILE)):
    prepare.prepare_dataset(prepare.PrepareConfig(output_dir=data_dir, dataset=dataset,
                                                  input_path=source, split=split))
  return data_dir


def held_out_users(input_fraction: float) -> SplitConfig:
  """The paper's user split: 70% train, 10% valid, 20% test users (section 4.1)."""
  return SplitConfig(protocol=schema.HELD_OUT_USERS, valid_fraction=0.1, test_fraction=0.2,
                     input_fraction=input_fraction, seed=0)


# Training through the trainer library.


def training_samples(model: str, overrides: Dict[str, Any], data: data_spec_lib.DataSpec,
                     max_length: int) -> int:
  """Samples in one pass over the train split, as the model's selector cuts them."""
  from models import registry  # pylint: disable=g-import-not-at-top

  model_config = config_lib.build_model_config(
      config_lib.ModelConfig(model, overrides), max_length=max_length)
  spec = registry.lookup(model).model_class(model_config, data=data).sample_spec()
  one_pass = dataset_lib.make_dataset(dataset_lib.InputConfig(
      data_dir=data.data_dir, batch_size=4096, num_epochs=1, shuffle=False, bucketing=False),
      spec, data)
  return int(sum(int(batch[names.HISTORY_LENGTH].shape[0]) for batch in one_pass))


def train(run_dir: str, data_dir: str, overrides: Dict[str, Any], *, epochs: float, seed: int,
          batch_size: int = 64, max_length: int = 32, learning_rate: float = 1e-3,
          num_negatives: int = 1_000_000, sampler: str = "unigram", export: bool = False,
          ks=KS) -> Dict[str, Any]:
  """Trains `hrnn_meta` with `overrides` for `epochs`; returns metrics.json's content."""
  from trainer import loop  # pylint: disable=g-import-not-at-top

  data = data_spec_lib.read(data_dir)
  samples_per_epoch = training_samples("hrnn_meta", overrides, data, max_length)
  steps = max(1, math.ceil(epochs * samples_per_epoch / batch_size))
  if os.path.exists(run_dir):
    shutil.rmtree(run_dir)  # a fresh run: these are measurements, not resumable jobs
  config = config_lib.TrainConfig(
      model_dir=run_dir,
      data=config_lib.DataConfig(data_dir=data_dir, max_length=max_length, batch_size=batch_size),
      model=config_lib.ModelConfig("hrnn_meta", overrides=dict(overrides)),
      optimizer=config_lib.OptimizerConfig(name="adam", learning_rate=learning_rate),
      loss=config_lib.LossConfig(num_negatives=num_negatives, sampler=sampler),
      schedule=config_lib.ScheduleConfig(train_steps=steps, log_every=min(steps, 200), seed=seed),
      checkpoint=config_lib.CheckpointConfig(every_steps=steps),
      eval=config_lib.EvalConfig(ks=ks, batch_size=512),
      export=config_lib.ExportConfig(enabled=export))
  logging.info("training hrnn_meta %s on %s for %d steps (%.1f epochs of %d samples)", overrides,
               data_dir, steps, epochs, samples_per_epoch)
  result = loop.train_and_evaluate(config)
  result["train_steps"] = steps
  return result


def restore(run_dir: str, overrides: Dict[str, Any], data: data_spec_lib.DataSpec,
            max_length: int = 32):
  """The hrnn_meta model of `run_dir`'s latest checkpoint."""
  from models import registry  # pylint: disable=g-import-not-at-top

  model_config = config_lib.build_model_config(config_lib.ModelConfig("hrnn_meta", overrides),
                                               max_length=max_length)
  model = registry.lookup("hrnn_meta").model_class(model_config, data=data)
  model.create_variables()
  tf.train.Checkpoint(model=model).restore(
      tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))).expect_partial()
  return model


def mean_over(runs: List[Dict[str, float]]) -> Dict[str, float]:
  return {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}


def std_over(runs: List[Dict[str, float]]) -> Dict[str, float]:
  return {key: float(np.std([run[key] for run in runs])) for key in runs[0]}


def seeds() -> List[int]:
  return [int(s) for s in _SEEDS.value]


def write(name: str, record: Dict[str, Any]) -> None:
  path = os.path.join(_WORK_DIR.value, f"{name}.json")
  files.write_json(path, record, sort_keys=False)  # rows stay in the order of the tables
  print(f"{name}: written to {path}")


def popularity_metrics(data: data_spec_lib.DataSpec, ks=KS) -> Dict[str, float]:
  """PopRec with the unigram model's perplexity: scores log q (a softmax of log q is q)."""
  log_q = popularity.log_popularity(data.item_counts, smoothing=1.0)
  spec = samples.SampleSpec(features=(samples.History(32),), training=samples.AllPrefixes())
  test = dataset_lib.make_dataset(dataset_lib.eval_config(data.data_dir, "test", batch_size=512),
                                  spec, data)
  user_fn, _ = evaluation.popularity_scorer(data.item_counts)
  return evaluation.evaluate(user_vectors_fn=user_fn, item_embeddings=log_q[:, None], dataset=test,
                             num_items=data.num_items, protocol=data.protocol, ks=ks).metrics


# Table 8.


def table8() -> None:
  data_dir = prepared("ml100k_last_item", "movielens", _shared("movielens_100k"),
                      held_out_users(input_fraction=0.999))  # the last item is the target
  mean, std = timelines.feedback_moments(data_dir)
  overrides = {"embedding_dim": 43, "hidden_dim": 43, "feedback_mean": mean, "feedback_std": std}
  record = {"setting": "ML-100K, held-out test users (20%), last item; GRU 43 units, D 43, "
                       "BPTT 32, batch 32, Adam 3e-3, 4 epochs", "runs": {}}
  for name, negatives in (("IS", _IS_NEGATIVES.value), ("dense", 1_000_000)):
    runs = []
    for seed in seeds():
      result = train(os.path.join(_WORK_DIR.value, "table8", name, f"seed_{seed}"), data_dir,
                     overrides, epochs=4, seed=seed, batch_size=32, learning_rate=3e-3,
                     num_negatives=negatives)
      runs.append({**result["metrics"],
                   "items_per_second": result["training"]["targets_per_second"]})
    record["runs"][name] = runs
    record[name] = mean_over(runs)
    record[name + "_std"] = std_over(runs)
  write("table8", record)
  for name in ("IS", "dense"):
    m = record[name]
    print(f"{name}: {m['items_per_second']:.0f} items/s, PPL {m['perplexity']:.1f}, NDCG@25 "
          f"{m['ndcg@25']:.4f}, HR@25 {m['hr@25']:.4f}, MRR@25 {m['mrr@25']:.4f}")


# Table 1.

ABLATION_ROWS = (
    # name, overrides on top of the shared settings, max_length
    ("item features of the last item", {"use_item_ids": False, "use_time": False,
                                        "use_user_features": False, "use_feedback": False}, 1),
    ("sequence", {"use_item_features": False, "use_time": False, "use_user_features": False,
                  "use_feedback": False}, 32),
    ("+ item features", {"use_time": False, "use_user_features": False, "use_feedback": False}, 32),
    ("+ user features", {"use_time": False, "use_feedback": False}, 32),
    ("+ feedback", {"use_time": False}, 32),
    ("+ time controls (HRNN-meta)", {}, 32),
)


def ml100k_held_out() -> str:
  return prepared("ml100k_held_out", "movielens", _shared("movielens_100k"),
                  held_out_users(input_fraction=0.8))


def ablation() -> None:
  data_dir = ml100k_held_out()
  data = data_spec_lib.read(data_dir)
  mean, std = timelines.feedback_moments(data_dir)
  shared = {"embedding_dim": 64, "hidden_dim": 128, "feedback_mean": mean, "feedback_std": std}
  record = {"setting": f"ML-100K, held-out users (70/10/20%), the last 20% of a test user's "
                       f"events as targets; D 64, 128 units, batch 64, Adam 1e-3, "
                       f"{_ABLATION_EPOCHS.value:g} epochs, full softmax",
            "rows": {"popularity": popularity_metrics(data)}}
  for name, overrides, max_length in ABLATION_ROWS[-_ABLATION_LAST_ROWS.value:]:
    runs = []
    for seed in seeds():
      slug = name.replace(" ", "_").replace("+", "plus").replace("(", "").replace(")", "")
      result = train(os.path.join(_WORK_DIR.value, "ablation", slug, f"seed_{seed}"), data_dir,
                     {**shared, **overrides}, epochs=_ABLATION_EPOCHS.value, seed=seed,
                     max_length=max_length, export=(not overrides and seed == seeds()[0]))
      runs.append(result["metrics"])
      if result.get("export_dir"):
        record["export_dir"] = result["export_dir"]
    record["rows"][name] = mean_over(runs)
    record["rows"][name + " (std)"] = std_over(runs)
  write("ablation", record)
  for name, metrics in record["rows"].items():
    if not name.endswith("(std)"):
      print(f"{name:32s} PPL {metrics['perplexity']:8.1f}  NDCG@25 {metrics['ndcg@25']:.4f}  "
            f"Recall@25 {metrics['recall@25']:.4f}")


# Table 7.


def cold_start_data() -> tuple:
  """ML-100K with half the items (uniformly at random) never in training.

  The log keeps every event; the held-out items' events are moved after a cut-off
  time t1 (in their order): those of a random half of the users into [t1, t2), the
  others' after t2. The temporal split at t1 and t2 then trains on the other items'
  events only, validates on the first half of the users and tests on the second: every
  held-out item event of a test user is a target, the user's other events the input.
  The held-out items stay in the vocabulary with a training count of 0 and their genres.
  """
  source = _shared("movielens_100k")
  folder = os.path.join(_WORK_DIR.value, "raw", "ml100k_cold")
  os.makedirs(folder, exist_ok=True)
  for name in ("u.item", "u.user", "u.genre", "u.occupation"):
    shutil.copy(os.path.join(source, name), folder)
  events = np.loadtxt(os.path.join(source, "u.data"), dtype=np.int64)
  items = np.unique(events[:, 1])
  cold = np.random.default_rng(0).permutation(items)[:len(items) // 2]
  is_cold = np.isin(events[:, 1], cold)
  cutoff = int(events[:, 3].max()) + DAY
  span = int(events[:, 3].max() - events[:, 3].min()) + 1
  users = np.unique(events[:, 0])
  test_user = np.isin(events[:, 0], np.random.default_rng(1).permutation(users)[:len(users) // 2])
  moved = events.copy()
  moved[is_cold, 3] = (cutoff + span * test_user[is_cold] + moved[is_cold, 3] -
                       int(events[:, 3].min()))
  np.savetxt(os.path.join(folder, "u.data"), moved, fmt="%d", delimiter="\t")
  data_dir = prepared("ml100k_cold", "movielens", folder, SplitConfig(
      protocol=schema.TEMPORAL, valid_start_time=cutoff, test_start_time=cutoff + span))
  return data_dir, {str(i) for i in cold}


def cold_start() -> None:
  data_dir, cold_ids = cold_start_data()
  data = data_spec_lib.read(data_dir)
  cold = np.array([raw in cold_ids for raw in data.item_ids])
  assert (data.item_counts[cold] == 0).all(), "a held-out item has training events"
  warm = np.flatnonzero(~cold)
  mean, std = timelines.feedback_moments(data_dir)
  # The held-out items' events were moved in time: no time controls here.
  shared = {"embedding_dim": 64, "hidden_dim": 128, "feedback_mean": mean, "feedback_std": std,
            "use_time": False}
  ks = (5, 25, int(cold.sum()))

  def only_cold(dataset):
    # The warm items join the masked history: the ranking is over the held-out items.
    warm_ids = tf.constant(warm, tf.int64)

    def add(features):
      exclude = tf.tile(warm_ids[tf.newaxis], [tf.shape(features[names.EVAL_EXCLUDE])[0], 1])
      return {**features, names.EVAL_EXCLUDE: exclude}
    return dataset.map(add)

  def metrics_of(result_metrics):
    return {"mrr": result_metrics[f"mrr@{ks[2]}"], "precision@5": result_metrics["precision@5"],
            "precision@25": result_metrics["precision@25"], "ndcg@5": result_metrics["ndcg@5"],
            "ndcg@25": result_metrics["ndcg@25"], "recall@25": result_metrics["recall@25"]}

  record = {"setting": f"ML-100K, {int(cold.sum())} of {data.num_items} items held out (no "
                       f"training event); targets: every test-split event on them, ranked "
                       f"among them; {_ABLATION_EPOCHS.value:g} epochs", "rows": {}}
  variants = (("HRNN-meta (lambda ~ U[0, 1])", {}), ("lambda fixed at 0.5", {"training_mix": 0.5}))
  for name, overrides in variants:
    runs = []
    for seed in seeds():
      run_dir = os.path.join(_WORK_DIR.value, "cold_start", str(len(runs) + 10 * len(
          record["rows"])), f"seed_{seed}")
      train(run_dir, data_dir, {**shared, **overrides}, epochs=_ABLATION_EPOCHS.value, seed=seed)
      model = restore(run_dir, {**shared, **overrides}, data)
      test = dataset_lib.make_dataset(dataset_lib.eval_config(data_dir, "test", batch_size=512),
                                      model.sample_spec(), data)
      evaluate = evaluation.model_evaluator(model, protocol=data.protocol, ks=ks,
                                            mask_history="keep_targets")
      runs.append(metrics_of(evaluate(only_cold(test)).metrics))
    record["rows"][name] = mean_over(runs)
  # Random choice: an independent random order per user (random 256-dim user and item
  # vectors), same ranking and masking.
  runs = []
  for seed in seeds():
    tf.random.set_seed(seed)
    items = np.random.default_rng(seed).normal(size=[data.num_items, 256]).astype(np.float32)
    spec = samples.SampleSpec(features=(samples.History(32),), training=samples.AllPrefixes())
    test = dataset_lib.make_dataset(dataset_lib.eval_config(data_dir, "test", batch_size=512),
                                    spec, data)

    def user_fn(features):
      return tf.random.normal([tf.shape(features[names.HISTORY])[0], 1, 256])

    runs.append(metrics_of(evaluation.evaluate(
        user_vectors_fn=user_fn, item_embeddings=items, dataset=only_cold(test),
        num_items=data.num_items, protocol=data.protocol, ks=ks,
        mask_history="keep_targets").metrics))
  record["rows"]["random choice"] = mean_over(runs)
  write("cold_start", record)
  for name, metrics in record["rows"].items():
    print(f"{name:32s} " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


# Table 2.


def time_delta() -> None:
  with open(os.path.join(_WORK_DIR.value, "ablation.json")) as f:
    export_root = json.load(f)["export_dir"]
  data_dir = ml100k_held_out()
  data = data_spec_lib.read(data_dir)
  titles = {}
  with open(os.path.join(_shared("movielens_100k"), "u.item"), encoding="latin-1") as f:
    for line in f:
      fields = line.split("|")
      titles[fields[0]] = fields[1]
  genres = [set(data.item_feature_names[f][len("genre="):] for f in row
                if f < data.num_item_features) for row in data.item_features]
  share = data.item_counts / data.item_counts.sum()
  exported = tf.saved_model.load(export_root)
  serve = exported.signatures["serving_default"]
  items = exported.signatures["item_embeddings"]()
  table, bias = items["embeddings"].numpy(), items["item_bias"].numpy()
  test = timelines.read_timelines(data_dir, "test")
  user_vocab = data.user_feature_names
  deltas = (0, 60, 3600, DAY, 30 * DAY)
  tops = {d: [] for d in deltas}
  examples = []
  for u in range(len(test[schema.ITEMS])):
    start = int(test[schema.TARGET_START][u])
    history = test[schema.ITEMS][u][:start][-32:]
    if len(history) < 5:
      continue
    times = test[schema.TIMESTAMPS][u][:start][-32:]
    request = dict(history=tf.constant([[data.item_ids[i] for i in history]]),
                   history_timestamps=tf.constant([times], tf.int64),
                   history_feedback=tf.constant([test[schema.FEEDBACK][u][:start][-32:]],
                                                tf.float32),
                   user_features=tf.constant([[user_vocab[f] for f in test[schema.USER_FEATURES][u]]]))
    seen = set(test[schema.ITEMS][u][:start].tolist())
    for delta in deltas:
      vector = serve(**request, request_time=tf.constant([int(times[-1]) + delta], tf.int64))[
          "user_vectors"].numpy()[0, 0]
      scores = table @ vector + bias
      scores[list(seen)] = -np.inf
      tops[delta].append(np.argsort(-scores)[:10])
    # Examples: the first users whose top-1 moves with the delay (the paper's Table 2
    # shows such a user).
    if len(examples) < 3 and len({int(tops[d][-1][0]) for d in deltas}) > 1:
      examples.append({"user": u, "last_items": [
          f"{titles[data.item_ids[i]]} ({'|'.join(sorted(genres[i]))})" for i in history[-5:]],
          "top1": {str(d): (lambda i: {"title": titles[data.item_ids[i]], "genres": sorted(
              genres[i]), "popularity": float(share[i])})(int(tops[d][-1][0])) for d in deltas}})
  last_genres = []
  for u in range(len(test[schema.ITEMS])):
    start = int(test[schema.TARGET_START][u])
    if start >= 5:
      last_genres.append(genres[test[schema.ITEMS][u][start - 1]])
  summary = {}
  for delta in deltas:
    top = np.stack(tops[delta])
    summary[str(delta)] = {
        "top1_changed_vs_0s": float(np.mean(top[:, 0] != np.stack(tops[0])[:, 0])),
        "top10_overlap_vs_0s": float(np.mean([len(set(a) & set(b)) / 10 for a, b in
                                              zip(top, tops[0])])),
        "genre_overlap_with_last_item": float(np.mean([
            np.mean([bool(genres[i] & g) for i in row]) for row, g in zip(top, last_genres)])),
        "mean_popularity_share": float(np.mean(share[top])),
    }
  record = {"export_dir": export_root, "deltas": list(deltas), "summary": summary,
            "examples_rule": "the first test users whose top-1 changes with the delay",
            "examples": examples, "users": len(tops[0])}
  write("time_delta", record)
  plots.line_plot(os.path.join(_WORK_DIR.value, "time_delta.svg"), {
      "top-10 overlap with 0 s": [(max(d, 1), summary[str(d)]["top10_overlap_vs_0s"]) for d in deltas],
      "genre overlap w/ last": [(max(d, 1), summary[str(d)]["genre_overlap_with_last_item"])
                                for d in deltas],
      "top-1 changed": [(max(d, 1), summary[str(d)]["top1_changed_vs_0s"]) for d in deltas]},
      title="Same histories, different request delays (ML-100K)",
      xlabel="delay after the last event, s (0 drawn at 1)", ylabel="share", logx=True)
  plots.line_plot(os.path.join(_WORK_DIR.value, "time_delta_popularity.svg"), {
      "mean popularity share of top-10": [(max(d, 1), summary[str(d)]["mean_popularity_share"])
                                          for d in deltas]},
      title="Popularity of the recommendations by delay", xlabel="delay, s", ylabel="share",
      logx=True)
  for delta in deltas:
    print(delta, summary[str(delta)])
  for example in examples:
    print(json.dumps(example, indent=1))


# Table 6 / session control.


def sessions() -> None:
  data_dir = prepared("yoochoose", "yoochoose", os.path.join(_shared("yoochoose_sample"),
                                                              "yoochoose_valid.txt"), SplitConfig())
  data = data_spec_lib.read(data_dir)
  log = timelines.read_timelines(data_dir, "test")
  gaps = np.concatenate([np.diff(t) for t in log[schema.TIMESTAMPS]])
  record = {"setting": "Yoochoose sample (sessions as users), leave-last-one-out, D 64, 100 "
                       f"units, batch 32, {_SESSION_EPOCHS.value:g} epochs, full softmax",
            "gap_quantiles_s": {str(q): float(np.quantile(gaps, q)) for q in (0.1, 0.5, 0.9, 0.99)},
            "gaps_over_30min": int((gaps > 1800).sum()), "gaps": int(gaps.size), "rows": {}}
  record["rows"]["popular items"] = popularity_metrics(data, ks=(20,))
  for name, overrides in (("GRU", {"use_time": False}), ("HRNN (time controls)", {})):
    runs = []
    for seed in seeds():
      result = train(os.path.join(_WORK_DIR.value, "sessions", name.split()[0], f"seed_{seed}"),
                     data_dir, {"embedding_dim": 64, "hidden_dim": 100, **overrides},
                     epochs=_SESSION_EPOCHS.value, seed=seed, batch_size=32, ks=(20,))
      runs.append(result["metrics"])
    record["rows"][name] = mean_over(runs)
  record["synthetic"] = session_starts()
  write("sessions", record)
  for name, m in record["rows"].items():
    print(f"{name:24s} MRR@20 {m['mrr@20']:.4f} HR@20 {m['hr@20']:.4f} NDCG@20 {m['ndcg@20']:.4f} "
          f"PPL {m['perplexity']:.1f}")
  for name, by_subset in record["synthetic"]["rows"].items():
    for subset, m in by_subset.items():
      print(f"synthetic {name:22s} {subset:15s} HR@20 {m['hr@20']:.4f} NDCG@20 "
            f"{m['ndcg@20']:.4f} PPL {m['perplexity']:.1f}")


def session_starts() -> Dict[str, Any]:
  """The session control where it matters: targets that open a session, and the others.

  The synthetic log's users have sessions (seconds to minutes apart within, about a day
  and a half between), each on one of the user's interests, a new interest now and
  then: the first click of a session is where the session bit and the gap should help.
  Leave-last-one-out; the test users are split by whether their target comes more than
  `session_gap` (one hour) after their last input event.
  """
  from models import hrnn_meta  # pylint: disable=g-import-not-at-top

  data_dir = os.path.join(_WORK_DIR.value, "data", "synthetic_sessions")
  if not os.path.exists(os.path.join(data_dir, schema.STATS_FILE)):
    prepare.prepare_dataset(prepare.PrepareConfig(
        output_dir=data_dir, synthetic=synthetic.SyntheticConfig(
            num_users=1500, num_items=1000, num_events=45_000, num_categories=20)))
  data = data_spec_lib.read(data_dir)
  shared = {"embedding_dim": 64, "hidden_dim": 100}
  pad = data.pad_id

  def subset(dataset, starts: bool):
    def keep(features):
      gap = features[names.REQUEST_TIME] - tf.gather(
          features[names.HISTORY_TIMESTAMPS], features[names.HISTORY_LENGTH] - 1, batch_dims=1)
      chosen = (gap > 3600) == starts
      targets = features[names.EVAL_TARGETS]
      return {**features, names.EVAL_TARGETS: tf.where(chosen[:, tf.newaxis], targets,
                                                       tf.constant(pad, targets.dtype))}
    return dataset.map(keep)

  record = {"setting": "synthetic log (1,500 users, 1,000 items, 45,000 clicks in sessions), "
                       f"leave-last-one-out, D 64, 100 units, batch 32, "
                       f"{_SESSION_EPOCHS.value / 3:g} epochs", "rows": {}}
  for name, overrides in (("GRU", {"use_time": False}), ("HRNN (time controls)", {})):
    runs = {"session start": [], "within session": []}
    for seed in seeds():
      run_dir = os.path.join(_WORK_DIR.value, "session_starts", name.split()[0], f"seed_{seed}")
      train(run_dir, data_dir, {**shared, **overrides}, epochs=_SESSION_EPOCHS.value / 3,
            seed=seed, batch_size=32, ks=(20,))
      model = restore(run_dir, {**shared, **overrides}, data)
      with_times = hrnn_meta.HRNNMeta(hrnn_meta.HRNNMetaConfig(**shared), data=data).sample_spec()
      test = dataset_lib.make_dataset(dataset_lib.eval_config(data_dir, "test", batch_size=512),
                                      with_times, data)  # the GRU ignores the extra inputs
      evaluate = evaluation.model_evaluator(model, protocol=data.protocol, ks=(20,))
      for key, starts in (("session start", True), ("within session", False)):
        result = evaluate(subset(test, starts))
        runs[key].append({**result.metrics, "users": result.num_users})
    record["rows"][name] = {key: mean_over(value) for key, value in runs.items()}
  return record


# Throughput.


def throughput() -> None:
  from models import hrnn_meta  # pylint: disable=g-import-not-at-top
  from models import losses  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top

  length = 32
  record = {"setting": f"GRU 256 units, D 64, BPTT {length}, batch 32 windows "
                       f"(1024 targets a step; dense at 1M items: 8), AdaGrad 0.1; sampled: "
                       f"{_THROUGHPUT_NEGATIVES.value} negatives from counts^0.75 (Zipf "
                       f"counts); dense: the full softmax; one CPU process",
            "rows": []}
  for num_items in (int(n) for n in _THROUGHPUT_ITEMS.value):
    counts = np.maximum(np.round(1e7 / np.arange(1, num_items + 1)), 1).astype(np.float32)
    data = data_spec_lib.DataSpec.for_catalog(num_items, item_counts=counts)
    rng = np.random.default_rng(0)
    share = counts / counts.sum()
    for name, negatives in (("sampled", _THROUGHPUT_NEGATIVES.value), ("dense", 10**9)):
      # The dense softmax's [rows, items] logits are kept under 1 GB (3 such tensors
      # live at once): fewer windows per step at 1M items; items/s is per target.
      batch = 32 if name == "sampled" else int(max(1, min(32, 2.6e8 // (length * num_items))))
      tf_keras.utils.set_random_seed(0)
      model = hrnn_meta.HRNNMeta(hrnn_meta.HRNNMetaConfig(max_length=length), data=data)
      model.create_variables()
      optimizer = tf_keras.optimizers.Adagrad(0.1)
      loss_fn = losses.RetrievalLoss(losses.SoftmaxConfig(num_negatives=negatives,
                                                          sampler=losses.UNIGRAM),
                                     num_items=num_items, item_counts=counts)
      items = rng.choice(num_items, size=[batch, length + 1], p=share)
      features = {names.HISTORY: tf.constant(items[:, :-1], tf.int64),
                  names.HISTORY_LENGTH: tf.fill([batch], tf.constant(length, tf.int64)),
                  names.LABELS: tf.constant(items[:, 1:], tf.int64),
                  names.LABEL_WEIGHTS: tf.ones([batch, length])}

      @tf.function
      def step():
        with tf.GradientTape() as tape:
          head = model(features, training=True)[names.HEADS]["next_item"]
          loss = tf.reduce_sum(loss_fn(model.candidates(), head)) / batch
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

      step()
      step()  # traced and warm
      count, started = 0, time.time()
      while time.time() - started < _THROUGHPUT_SECONDS.value or count < 3:
        step().numpy()
        count += 1
      seconds = time.time() - started
      row = {"items": num_items, "softmax": name, "steps": count, "batch": batch,
             "ms_per_step": 1000 * seconds / count,
             "items_per_second": count * batch * length / seconds}
      record["rows"].append(row)
      print(row)
      del model, optimizer
  write("throughput", record)
  plots.line_plot(os.path.join(_WORK_DIR.value, "throughput.svg"),
                  {name: [(r["items"], r["items_per_second"]) for r in record["rows"]
                          if r["softmax"] == name] for name in ("sampled", "dense")},
                  title="Training throughput by catalog size (2-core CPU)", xlabel="items",
                  ylabel="items/s", logx=True)


def retrain() -> None:
  data_dir = prepared("ml100k_temporal", "movielens", _shared("movielens_100k"),
                      SplitConfig(protocol=schema.TEMPORAL))
  hrnn_retraining.retrain(data_dir, _WORK_DIR.value, seed=seeds()[0], epochs=_RETRAIN_EPOCHS.value,
                          window_days=_RETRAIN_WINDOW_DAYS.value,
                          step_days=_RETRAIN_STEP_DAYS.value, trend_days=_TREND_DAYS.value)


def report() -> None:
  hrnn_report.report(_WORK_DIR.value, _QUALITY_DIR.value, _BASELINE_DIR.value)


def main(argv):
  del argv
  unknown = sorted(set(_EXPERIMENTS.value) - set(EXPERIMENTS))
  if unknown:
    raise ValueError(f"--experiments: unknown {unknown}; choose from {EXPERIMENTS}.")
  os.makedirs(_WORK_DIR.value, exist_ok=True)
  for name in _EXPERIMENTS.value:
    globals()[name]()


if __name__ == "__main__":
  app.run(main)
