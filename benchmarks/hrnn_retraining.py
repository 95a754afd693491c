"""HRNN-meta's Figure 5: retraining over time windows with item trend correction (section 4.5).

The paper trains offline once on the first 70% of Outbrain's two weeks, and online on
the most recent 10 hours before each 1-hour test frame, feeding the item popularity of
the last period into the model (eq 5's log q), against Recent Popular. Here the log is
MovieLens-100K's seven months, so hours become days: offline on the first 70% of the
time span, online on the last `window_days` before each `step_days` test window
(warm-started from the previous window's model), trend `log q` of the last
`trend_days`, and Recent Popular over the same `trend_days`.

One global vocabulary (the prepared data set's) serves every window, so the offline
and online models score the same items; timelines are cut per window in memory
(`samples.SampleSpec.training_batch` / `evaluation_batch` on blocks built here) and
trained with the model, the trainer's softmax head and Adam in a small loop. Test
users of a window: those with an event before it (the input, every earlier event) and
one in it (the targets: all their events in the window), ranked over the whole catalog
with their history masked.
"""

import math
import os

from absl import logging
import numpy as np

from common import files
from common import names
from input_pipeline import data_spec as data_spec_lib
from input_pipeline import popularity
from input_pipeline import samples
from input_pipeline import schema
from models import hrnn_meta
from models import losses
from trainer import evaluation
import plots
import timelines
import tensorflow as tf  # pylint: disable=g-bad-import-order  (after our packages: Keras 2)
import tf_keras

DAY = 86_400


def _mean(runs):
  return {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}


def retrain(data_dir: str, work_dir: str, *, seed: int, epochs: float, window_days: float,
            step_days: float, trend_days: float) -> None:
  """Runs the windows (module docstring); writes work_dir/retrain.json and retrain.svg."""
  data = data_spec_lib.read(data_dir)
  log = timelines.read_timelines(data_dir, "test")  # temporal: the test split holds every event
  all_items = np.concatenate(log[schema.ITEMS])
  all_times = np.concatenate(log[schema.TIMESTAMPS])
  start_time, end_time = float(all_times.min()), float(all_times.max()) + 1
  offline_end = start_time + 0.7 * (end_time - start_time)
  step, window, trend_window = step_days * DAY, window_days * DAY, trend_days * DAY
  mean, std = timelines.feedback_moments(data_dir)
  overrides = dict(embedding_dim=64, hidden_dim=128, max_length=32, feedback_mean=mean,
                   feedback_std=std)

  def block(begin, end, target_time=None):
    """Timelines cut to events in [begin, end); with target_time, target_start there."""
    rows = {key: [] for key in (schema.ITEMS, schema.TIMESTAMPS, schema.FEEDBACK,
                                schema.USER_FEATURES)}
    starts = []
    for u in range(len(log[schema.ITEMS])):
      times = log[schema.TIMESTAMPS][u]
      keep = (times >= begin) & (times < end)
      if keep.sum() < 2:
        continue
      first = 0 if target_time is None else int((times[keep] < target_time).sum())
      for key in (schema.ITEMS, schema.TIMESTAMPS, schema.FEEDBACK):
        rows[key].append(log[key][u][keep])
      rows[schema.USER_FEATURES].append(log[schema.USER_FEATURES][u])
      starts.append(first)
    dtypes = {schema.FEEDBACK: tf.float32}
    out = {key: tf.ragged.constant([list(r) for r in value], dtypes.get(key, tf.int64),
                                   ragged_rank=1) for key, value in rows.items()}
    out[schema.TARGET_START] = tf.constant(starts, tf.int64)
    out[schema.IMPRESSIONS] = tf.ragged.constant([[]] * len(starts), tf.int64, ragged_rank=1)
    out[schema.IMPRESSION_TIMESTAMPS] = out[schema.IMPRESSIONS]
    return out

  def build(trend, seed):
    tf_keras.utils.set_random_seed(seed)
    config = hrnn_meta.HRNNMetaConfig(**overrides, trend_correction=trend)
    model = hrnn_meta.HRNNMeta(config, data=data)
    model.create_variables()
    return model, tf_keras.optimizers.Adam(1e-3)

  loss_fn = losses.RetrievalLoss(losses.SoftmaxConfig(num_negatives=1_000_000),
                                 num_items=data.num_items)

  def fit(model, optimizer, begin, end, seed):
    spec = model.sample_spec()
    features = samples.pad(spec.training_batch(block(begin, end), data.pad_id),
                           spec.paddings(data, training=True))
    count = int(features[names.HISTORY].shape[0])
    batches = tf.data.Dataset.from_tensor_slices(features).shuffle(count, seed=seed).batch(64)

    @tf.function
    def step(batch):
      with tf.GradientTape() as tape:
        outputs = model(batch, training=True)
        head = outputs[names.HEADS]["next_item"]
        loss = tf.reduce_sum(loss_fn(model.candidates(), head)) / 64.0
      variables = model.trainable_variables
      optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    for _ in range(int(math.ceil(epochs))):
      for batch in batches:
        step(batch)
    return count

  def evaluate(model, features, trend_counts=None):
    if trend_counts is not None:
      model.set_trend(trend_counts)
    dataset = tf.data.Dataset.from_tensor_slices(features).batch(256)
    candidates = model.candidates()
    return evaluation.evaluate(user_vectors_fn=model.user_vectors, item_embeddings=candidates.vectors,
                               item_bias=candidates.bias, dataset=dataset, num_items=data.num_items,
                               protocol=schema.TEMPORAL, ks=(10, 20)).metrics

  def recent_popular(counts, features):
    user_fn, table = evaluation.popularity_scorer(counts)
    return evaluation.evaluate(user_vectors_fn=user_fn, item_embeddings=table,
                               dataset=tf.data.Dataset.from_tensor_slices(features).batch(256),
                               num_items=data.num_items, protocol=schema.TEMPORAL,
                               ks=(10, 20)).metrics

  curves = {name: [] for name in ("offline", "offline + trend", "online", "online + trend",
                                  "recent popular")}
  offline, offline_optimizer = build(False, seed)
  fit(offline, offline_optimizer, start_time, offline_end, seed)
  offline_trend, offline_trend_optimizer = build(True, seed)
  offline_trend.set_trend(popularity.window_counts(all_items, all_times, start_time, offline_end,
                                                   data.num_items))
  fit(offline_trend, offline_trend_optimizer, start_time, offline_end, seed)
  online, online_optimizer = build(False, seed)
  online_trend, online_trend_optimizer = build(True, seed)
  begin = offline_end
  index = 0
  while begin + step <= end_time:
    end = begin + step
    trend_counts = popularity.window_counts(all_items, all_times, begin - trend_window, begin,
                                            data.num_items)
    train_counts = popularity.window_counts(all_items, all_times, begin - window, begin,
                                            data.num_items)
    online_trend.set_trend(train_counts)  # train against the training window's popularity
    fit(online, online_optimizer, begin - window, begin, seed)
    fit(online_trend, online_trend_optimizer, begin - window, begin, seed)
    spec = online.sample_spec()
    features = samples.pad(spec.evaluation_batch(block(0, end, target_time=begin)),
                           spec.paddings(data, evaluation=True))
    results = {"offline": evaluate(offline, features),
               "offline + trend": evaluate(offline_trend, features, trend_counts),
               "online": evaluate(online, features),
               "online + trend": evaluate(online_trend, features, trend_counts),
               "recent popular": recent_popular(trend_counts, features)}
    for name, metrics in results.items():
      curves[name].append({"window": index, "start": begin, **metrics})
    logging.info("retrain window %d: %s", index,
                 {k: round(v["recall@20"], 4) for k, v in results.items()})
    begin, index = end, index + 1
  record = {"setting": f"ML-100K, offline: first 70% of the time span; online: the last "
                       f"{window_days:g} days before each {step_days:g}-day test window "
                       f"(warm-started, {epochs:g} epochs); trend: log q of the last "
                       f"{trend_days:g} days", "curves": curves,
            "mean": {name: _mean([{k: v for k, v in w.items() if k not in ("window", "start")}
                                      for w in windows]) for name, windows in curves.items()}}
  files.write_json(os.path.join(work_dir, "retrain.json"), record)
  plots.line_plot(os.path.join(work_dir, "retrain.svg"),
                  {name: [(w["window"], w["recall@20"]) for w in windows]
                   for name, windows in curves.items()},
                  title="Retraining with item trend correction (ML-100K)",
                  xlabel=f"test window ({step_days:g} days each)", ylabel="Recall@20")
  for name, metrics in record["mean"].items():
    print(f"{name:16s} Recall@20 {metrics['recall@20']:.4f} NDCG@20 {metrics['ndcg@20']:.4f}")
