"""HRNN-meta: temporal-contextual recommendation in real time (Ma et al., KDD 2020).

A GRU over the user's timeline, trained like a language model to predict the next
item at every step (eq 1; `samples.AllPositions`: windows of `max_length` steps, the
truncated BPTT length, every target of a timeline weighted once), with contextual
inputs concatenated to each step's item (section 2.2, Figures 1-3) and a decoder that
can score items from their features (section 2.3, eq 2):

    x_t = [Dropout(M_{a_t}), Dropout(w(f_{a_t})),        item id and item features
           E_time[bucket(g_t)], session(g_t),           time controls (section 2.2)
           (v_t - mean) / std,                          feedback of the event a_t
           pooled user features]                        static user features
    h_t = GRU(h_{t-1}, x_t),   o_t = W h_t + b          (`GRUEncoder`, GRU4Rec's core)
    p(a_{t+1} | x_{1:t}) = softmax_j(phi~_j(o_t) [+ log q_j])     eq 1, 2 [, 5]

* Time controls (`layers.time_controls`): g_t is the gap from a_t to the moment of
  the prediction made after it: the next event's time inside the history, the request
  time after the newest event. So the same history recommends differently after a
  minute and after a day (Table 2). Bucket embedding of log-scaled g_t plus a session
  bit (g_t > `session_gap`): the paper's replacement of HGRU's session layer.
* Feedback encoding: the rating (or watch ratio) of event a_t, standardized with
  `feedback_mean` / `feedback_std`, as input to the prediction that follows it.
* User features: per-field means of the user's feature embeddings
  (`layers.feature_fields`), the same at every step. The data sets here have static
  features only (the paper's "dynamic user features", e.g. the request's device, have
  no field in the data; the request time enters through the time controls).
* Eq 2 (`layers.hybrid_decoder`): score (1 - lambda)(w_j . o + b_j) + lambda (w(f_j) . o
  + b(f_j)), lambda ~ U[0, 1] per training sample, `inference_mix` for items seen in
  training and 1 for items without training events (scored from their features alone,
  cold start). The item side `[w~_j, w(f_j), b~_j, b(f_j)]` is what `candidates()`
  returns, so evaluation, export and the ScaNN index all use it; the served user vector
  is `[(1 - lambda) o, lambda o, 1 - lambda, lambda]` (2D + 2 wide).
  Without item features the decoder is `w_j . o + b_j`, with `b_j` as the candidates'
  bias.
* Importance-sampled softmax (section 3.1) is the trainer's head:
  `--sampler=unigram --unigram_power=0.75` draws negatives from the item frequencies to
  the 0.75th power and subtracts log Q; the full softmax below `--num_negatives` items.
* Reward weighting (section 3.3): `reward_threshold` set, each target's loss weight is
  1 when its feedback reaches the threshold and `negative_reward` otherwise
  (`input_pipeline.reward_weights`).
* Item trend decomposition (section 3.2, eq 5): with `trend_correction`, the
  candidates' bias is `log q_j`, the item's smoothed share of the training events, a
  non-trainable variable, in training as at inference, so the learned scores are the
  residual affinity log(r / q). `set_trend(counts)` replaces it by a recent window's
  counts (`input_pipeline.popularity`) before evaluating or exporting; the retraining
  experiment (`benchmarks/hrnn_retraining.py`) does that for every window.

Choices where the paper is silent:
- Item id embeddings are shared by the input and the decoder (w_j = M_j), and w(f) is
  shared likewise, as GRU4Rec here does; the paper feeds one-hot items.
- The GRU output is projected back to the embedding size D (GRU4Rec's `GRUEncoder`), so
  the decoder's vectors are D wide whatever the number of units.
- Dropout (default 0.3, GRU4Rec's) applies to the item parts of the input, not to the
  controls, the feedback or the user features.
- Time buckets: 32 log2 buckets, session gap one hour (the paper's Reddit setting).
- lambda for items seen in training at inference: 1/2, the training mean.
- A component whose data the data set lacks (timestamps, feedback, item or user
  features) is left out, whatever its switch says: order-only data sets give no time
  controls, rather than a constant input.
- Windows start from a zero state (the samples are independent), rather than carrying
  the state over from the previous window of the same user.
"""

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras

from common import names
from input_pipeline import data_spec as data_spec_lib
from input_pipeline import popularity
from input_pipeline import reward_weights
from input_pipeline import samples
from models import base
from models import registry
from models.layers import embeddings
from models.layers import feature_fields
from models.layers import hybrid_decoder
from models.layers import sequence_encoders
from models.layers import time_controls


@dataclasses.dataclass(frozen=True)
class HRNNMetaConfig:
  """HRNN-meta hyper-parameters (the paper's where it gives them).

  Attributes:
    embedding_dim: D, item embeddings, w(f) and the projected GRU output (64).
    max_length: truncated BPTT length: the window of steps a sample reads (32, the
      paper's "32 length BPTT"; the trainer sets it from --max_length).
    hidden_dim: GRU units (256, the paper's standard setting; Table 8 used 43).
    num_layers: stacked GRU layers (1).
    dropout: dropout on the item id and item feature inputs (0.3).
    use_item_ids: the item id embedding is an input (off: Table 1's feature-only row).
    use_time: time-gap bucket embedding and session bit as inputs.
    num_time_buckets, time_log_base: the gap bucketizer (32 buckets of base 2).
    session_gap: a gap above this (data time unit, seconds) is a session break (3600).
    time_embedding_dim: size of the bucket embedding (8).
    use_feedback: the standardized feedback of each event as an input.
    feedback_mean, feedback_std: standardization of the feedback (0, 1: raw values;
      MovieLens-100K ratings: 3.53, 1.13).
    use_user_features: pooled user features as an input.
    user_feature_dim: embedding size per user feature (16).
    use_item_features: item features as inputs and the eq 2 decoder.
    item_feature_dim: embedding size per item feature (32).
    item_feature_hidden_layers: ReLU layers of the w(f), b(f) tower (1).
    inference_mix: lambda of eq 2 at inference for items seen in training (0.5).
    training_mix: None draws lambda ~ U[0, 1] per training sample (the paper); a
      number fixes it (0.5: the "vanilla" co-training the paper found useless for cold
      start, kept for that comparison).
    reward_threshold: None weighs every target 1; otherwise targets whose feedback is
      below it weigh `negative_reward` (section 3.3).
    negative_reward: see `reward_threshold` (0.5).
    trend_correction: add log q_j, the item's smoothed popularity, to every score
      (section 3.2, eq 5).
    trend_smoothing: additive smoothing of the popularity counts (1).
  """
  embedding_dim: int = 64
  max_length: int = 32
  hidden_dim: int = 256
  num_layers: int = 1
  dropout: float = 0.3
  use_item_ids: bool = True
  use_time: bool = True
  num_time_buckets: int = 32
  time_log_base: float = 2.0
  session_gap: float = 3600.0
  time_embedding_dim: int = 8
  use_feedback: bool = True
  feedback_mean: float = 0.0
  feedback_std: float = 1.0
  use_user_features: bool = True
  user_feature_dim: int = 16
  use_item_features: bool = True
  item_feature_dim: int = 32
  item_feature_hidden_layers: int = 1
  inference_mix: float = 0.5
  training_mix: Optional[float] = None
  reward_threshold: Optional[float] = None
  negative_reward: float = 0.5
  trend_correction: bool = False
  trend_smoothing: float = 1.0

  def __post_init__(self):
    for name in ("embedding_dim", "max_length", "hidden_dim", "num_layers",
                 "time_embedding_dim", "user_feature_dim", "item_feature_dim"):
      if getattr(self, name) < 1:
        raise ValueError(f"HRNNMetaConfig.{name} must be >= 1, got {getattr(self, name)}.")
    checks = [
        (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
        (self.num_time_buckets >= 2, f"num_time_buckets must be >= 2, got {self.num_time_buckets}"),
        (self.time_log_base > 1, f"time_log_base must be > 1, got {self.time_log_base}"),
        (self.session_gap >= 0, f"session_gap must be >= 0, got {self.session_gap}"),
        (self.feedback_std > 0, f"feedback_std must be > 0, got {self.feedback_std}"),
        (self.item_feature_hidden_layers >= 0,
         f"item_feature_hidden_layers must be >= 0, got {self.item_feature_hidden_layers}"),
        (0 <= self.inference_mix <= 1, f"inference_mix must be in [0, 1], got {self.inference_mix}"),
        (self.training_mix is None or 0 <= self.training_mix <= 1,
         f"training_mix must be None or in [0, 1], got {self.training_mix}"),
        (0 <= self.negative_reward <= 1,
         f"negative_reward must be in [0, 1], got {self.negative_reward}"),
        (self.trend_smoothing > 0, f"trend_smoothing must be > 0, got {self.trend_smoothing}"),
    ]
    problems = [message for ok, message in checks if not ok]
    if problems:
      raise ValueError("HRNNMetaConfig: " + "; ".join(problems) + ".")


def _padded_rows(table: np.ndarray, rows: int, value) -> np.ndarray:
  """`table` `[n, ...]` extended to `rows` rows filled with `value` (the OOV, padding rows)."""
  extra = np.full((rows - table.shape[0],) + table.shape[1:], value, table.dtype)
  return np.concatenate([table, extra], axis=0)


@registry.register("hrnn_meta", HRNNMetaConfig)
class HRNNMeta(base.RetrievalModel):
  """GRU with time controls, feedback, user and item features; eq 2 decoder.

  Attributes (which components the data set allows; see the module docstring):
    uses_time, uses_feedback, uses_user_features, uses_item_features: bool.
  """

  def __init__(self, config: HRNNMetaConfig, *, data: data_spec_lib.DataSpec, **kwargs):
    super().__init__(data=data, **kwargs)
    self.config = config
    self.uses_time = config.use_time and data.has("timestamps")
    self.uses_feedback = config.use_feedback and data.has("feedback")
    self.uses_user_features = config.use_user_features and data.num_user_features > 0
    self.uses_item_features = config.use_item_features and data.num_item_features > 0
    if config.reward_threshold is not None and not data.has("feedback"):
      raise ValueError("HRNNMetaConfig.reward_threshold weighs targets by their feedback, but "
                       "this data set has none (stats.json has_feedback is false).")
    if not (config.use_item_ids or self.uses_item_features):
      raise ValueError("HRNN-meta needs an item input: use_item_ids, or use_item_features on a "
                       "data set with item features.")
    dim = config.embedding_dim
    rows = data.embedding_rows
    self.item_embedding = embeddings.ItemEmbedding(self.num_items, dim, name="item_embedding")
    self.item_embedding.build(None)  # the decoder's w_j, even when ids are not an input
    self.item_bias = self.add_weight(name="item_bias", shape=[rows], initializer="zeros")  # b_j
    self.input_dropout = tf_keras.layers.Dropout(config.dropout)
    if self.uses_time:
      self.time_controls = time_controls.TimeGapControls(
          config.num_time_buckets, config.time_log_base, config.session_gap,
          config.time_embedding_dim, name="time_controls")
    if self.uses_user_features:
      fields = {}
      for index, name in enumerate(data.user_feature_names):
        fields.setdefault(data_spec_lib.feature_field(name), []).append(index)
      self.user_features = feature_fields.FieldPooledEmbedding(
          data.num_user_features, fields, config.user_feature_dim, name="user_features")
    if self.uses_item_features:
      self.item_features = hybrid_decoder.ItemFeatureTower(
          _padded_rows(data.item_features, rows, data.num_item_features),
          data.num_item_features, data.item_feature_fields, dim, config.item_feature_dim,
          config.item_feature_hidden_layers, name="item_features")
      # Items without training events are scored from their features (lambda = 1).
      self._cold = tf.constant(_padded_rows(data.item_counts <= 0, rows, False))
    self.encoder = sequence_encoders.GRUEncoder(dim, config.hidden_dim, config.num_layers,
                                                dropout=0.0, name="encoder")
    if config.trend_correction:
      self.item_trend = self.add_weight(
          name="item_trend", shape=[rows], trainable=False,
          initializer=tf_keras.initializers.Constant(self._log_q(data.item_counts)))

  def _log_q(self, counts) -> np.ndarray:
    """`log q` `[rows]` of item counts `[num_items]`; the OOV and padding rows get the minimum."""
    counts = np.asarray(counts, np.float32)
    if counts.shape != (self.num_items,):
      raise ValueError(f"Expected counts for {self.num_items} items, got shape {counts.shape}.")
    log_q = popularity.log_popularity(counts, self.config.trend_smoothing)
    return _padded_rows(log_q, self.data.embedding_rows, log_q.min())

  def set_trend(self, counts) -> None:
    """Replaces `log q` by the popularity of `counts` `[num_items]` (e.g. a recent window)."""
    if not self.config.trend_correction:
      raise ValueError("set_trend needs a model built with trend_correction=True.")
    self.item_trend.assign(self._log_q(counts))

  def sample_spec(self) -> samples.SampleSpec:
    config = self.config
    features = [samples.History(config.max_length)]
    if self.uses_time:
      features.append(samples.RequestTime())
    if self.uses_feedback:
      features.append(samples.HistoryFeedback(config.max_length))
    if self.uses_user_features:
      features.append(samples.UserFeatures())
    training = (samples.AllPositions() if config.reward_threshold is None else
                reward_weights.RewardWeightedPositions(config.reward_threshold,
                                                       config.negative_reward))
    return samples.SampleSpec(features=tuple(features), training=training)

  def _feature_side(self):
    """`(w(f) [rows, D], b(f) [rows])` of every item-table row."""
    return self.item_features(None)

  def candidates(self) -> base.Candidates:
    """Eq 2's item side with features (bias: log q or None), else `w_j` with bias `b_j` [+ log q]."""
    trend = self.item_trend if self.config.trend_correction else None
    if not self.uses_item_features:
      # (convert_to_tensor: either variable may be a ShardedVariable under parameter servers.)
      bias = (self.item_bias if trend is None else
              tf.convert_to_tensor(self.item_bias) + tf.convert_to_tensor(trend))
      return base.Candidates(self.item_embedding.embeddings, bias)
    feature_vectors, feature_bias = self._feature_side()
    vectors = hybrid_decoder.item_side(self.item_embedding.embeddings, self.item_bias,
                                       feature_vectors, feature_bias, self._cold)
    return base.Candidates(vectors, None if trend is None else tf.convert_to_tensor(trend))

  def step_inputs(self, features, training=False):
    """`x_t` `[batch, len, width]` of every history step (module docstring)."""
    config = self.config
    history = features[names.HISTORY]
    parts = []
    if config.use_item_ids:
      parts.append(self.input_dropout(self.item_embedding(history), training=training))
    if self.uses_item_features:
      feature_vectors, _ = self._feature_side()
      parts.append(self.input_dropout(tf.gather(feature_vectors, history), training=training))
    if self.uses_time:
      parts.append(self.time_controls(features[names.HISTORY_TIMESTAMPS],
                                      features[names.HISTORY_LENGTH], features[names.REQUEST_TIME]))
    if self.uses_feedback:
      feedback = (tf.cast(features[names.HISTORY_FEEDBACK], tf.float32) - config.feedback_mean)
      parts.append((feedback / config.feedback_std)[..., tf.newaxis])
    if self.uses_user_features:
      pooled = self.user_features(features[names.USER_FEATURES])  # [batch, F * d]
      parts.append(tf.broadcast_to(pooled[:, tf.newaxis, :], tf.concat(
          [tf.shape(history), tf.shape(pooled)[1:]], axis=0)))
    return tf.concat(parts, axis=-1)

  def call(self, features, training=False):
    """Model contract of `models.base` (`base.per_position_outputs`): USER_VECTORS is the
    query at the newest step; in training the head "next_item" scores every step."""
    history = features[names.HISTORY]
    outputs = self.encoder(self.step_inputs(features, training),
                           self.item_embedding.padding_mask(history), training=training)
    if self.uses_item_features:
      if training and self.config.training_mix is None:  # U[0, 1] per sample, all its steps
        mix = tf.random.uniform([tf.shape(history)[0], 1, 1])
      elif training:
        mix = tf.constant(self.config.training_mix)
      else:
        mix = tf.constant(self.config.inference_mix)
      outputs = hybrid_decoder.user_side(outputs, mix)
    return base.per_position_outputs(outputs, features)
