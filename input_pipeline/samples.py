"""In-graph sample building: parsed user timelines -> model feature dicts.

A model declares what it reads with a `SampleSpec`: its *feature sets* (what the
model sees about a user at a cut position of the timeline: the history before it,
the request time, the items shown but not clicked, the user's features) and its
*training samples* (which cut positions of the train split make samples, and their
labels). The same feature-set code serves all three stages, so a model sees at
serving exactly what it saw in training:

    training    `SampleSpec.training_batch`: the training selector picks `(row, end)`
                cuts with their labels, then every feature set builds at those cuts;
    evaluation  `SampleSpec.evaluation_batch`: one cut per valid/test user at
                `target_start`, plus the held-out targets and the history to mask;
    serving     the export turns a raw request into a one-timeline-per-user block and
                calls `SampleSpec.features_at` with the cut at its end.

Blocks. Builders take a *block* of parsed timelines (the dict `schema.parse_timelines`
returns for `[num_timelines]` serialized examples: ragged `[num_timelines, None]`
sequences plus `[num_timelines]` scalars) and return the block's samples as a dict of
`[num_samples, ...]` tensors, vectorized with ragged ops (tf.data pays tens of
microseconds per function call on 2-core machines, more than building a sample costs).
Variable-length features come back ragged, left aligned (oldest first); `pad` makes
them dense with each feature's own padding value (`FeatureSpec.padding`).

Cuts. A sample at cut `end` of timeline `row` sees only events strictly before `end`
(and impressions strictly before its request time), so nothing from the target onward
reaches the model.
"""

import abc
import dataclasses
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import tensorflow as tf

from common import names
from input_pipeline import schema
from input_pipeline.data_spec import DataSpec

Tensor = Union[tf.Tensor, tf.RaggedTensor]
Features = Dict[str, Tensor]

# Symbolic padding values, resolved against the data set by `padding_value`: item-valued
# features pad with its pad_id (never a real item, never sampled), user features with
# num_user_features (one past the last real feature index).
ITEM_PADDING = "pad_id"
USER_FEATURE_PADDING = "num_user_features"


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """One feature of a sample.

  Attributes:
    name: the key (`common.names`).
    dtype: its dtype.
    ragged: a variable-length list per sample (padded per batch); False: a scalar or a
      fixed-width vector (`width`).
    padding: the value that pads it: a number, `ITEM_PADDING` for item indices or
      `USER_FEATURE_PADDING` for user feature indices.
    width: the fixed width of a non-ragged vector; None for a scalar.
  """
  name: str
  dtype: tf.DType
  ragged: bool = True
  padding: Union[int, float, str] = 0
  width: Optional[int] = None


def padding_value(spec: FeatureSpec, data: DataSpec):
  """The number that pads `spec` in the data set `data`."""
  symbolic = {ITEM_PADDING: data.pad_id, USER_FEATURE_PADDING: data.num_user_features}
  return symbolic.get(spec.padding, spec.padding) if isinstance(spec.padding, str) else spec.padding


# Shared machinery: every builder is a choice of (row, end) cuts plus these gathers.


def positions(lengths: tf.Tensor, first: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """One cut per position `first[u] <= i < lengths[u]` of every timeline `u`.

  Returns:
    `(row, pos)`, both `[num_samples]` int64, timeline by timeline, positions ascending.
  """
  first = tf.minimum(first, lengths)
  row = tf.repeat(tf.range(tf.size(lengths, out_type=tf.int64)), lengths - first)
  return row, tf.ragged.range(first, lengths).flat_values


def window(sequence: tf.RaggedTensor, row: tf.Tensor, begin: tf.Tensor,
           end: tf.Tensor) -> tf.RaggedTensor:
  """`sequence[row[s]][begin[s]:end[s]]` for every sample `s`: ragged `[num_samples, None]`.

  Works for any per-timeline sequence (items, timestamps, feedback, impressions), so
  aligned side sequences are cut with the same `(row, begin, end)`.
  """
  offset = tf.gather(sequence.row_splits, row)
  return tf.gather(sequence.values, tf.ragged.range(offset + begin, offset + end))


def gather_at(sequence: tf.RaggedTensor, row: tf.Tensor, pos: tf.Tensor) -> tf.Tensor:
  """`sequence[row[s]][pos[s]]` for every sample `s`: `[num_samples]`."""
  return tf.gather(sequence.values, tf.gather(sequence.row_splits, row) + pos)


# Feature sets: what a model reads about a user at a cut.


class FeatureSet(abc.ABC):
  """A group of features built together at a cut `(row, end)` of a timeline block.

  Subclasses are frozen dataclasses (their fields are the parameters) that set
  `specs` (the features they emit), `reads` (the timeline fields they use, which
  become the export's raw serving inputs) and `uses_request_time` (the serving
  request must then carry its time).
  """
  specs: Tuple[FeatureSpec, ...] = ()
  reads: Tuple[str, ...] = ()
  uses_request_time: bool = False

  @abc.abstractmethod
  def build(self, timelines: Mapping[str, Tensor], row: tf.Tensor, end: tf.Tensor,
            request_time: tf.Tensor) -> Features:
    """The features of the cuts.

    Args:
      timelines: a parsed block (`schema.parse_timelines`).
      row: `[num_samples]` int64 timeline of each sample.
      end: `[num_samples]` int64 cut: the sample sees events `[0, end)`.
      request_time: `[num_samples]` int64 when the prediction is asked for (the first
        target's timestamp in training and evaluation; the request's at serving).
    """


@dataclasses.dataclass(frozen=True)
class History(FeatureSet):
  """The last `max_length` events before the cut: item, timestamp and length.

  Emits HISTORY and HISTORY_TIMESTAMPS ragged (oldest first) and HISTORY_LENGTH.
  """
  max_length: int
  specs = (FeatureSpec(names.HISTORY, tf.int64, padding=ITEM_PADDING),
           FeatureSpec(names.HISTORY_TIMESTAMPS, tf.int64),
           FeatureSpec(names.HISTORY_LENGTH, tf.int64, ragged=False))
  reads = (schema.ITEMS, schema.TIMESTAMPS)

  def __post_init__(self):
    if self.max_length < 1:
      raise ValueError(f"History.max_length must be >= 1, got {self.max_length}.")

  def build(self, timelines, row, end, request_time):
    del request_time
    begin = tf.maximum(end - self.max_length, 0)
    return {
        names.HISTORY: window(timelines[schema.ITEMS], row, begin, end),
        names.HISTORY_TIMESTAMPS: window(timelines[schema.TIMESTAMPS], row, begin, end),
        names.HISTORY_LENGTH: end - begin,
    }


@dataclasses.dataclass(frozen=True)
class HistoryFeedback(FeatureSet):
  """The feedback values (ratings, watch ratios) aligned with `History(max_length)`."""
  max_length: int
  specs = (FeatureSpec(names.HISTORY_FEEDBACK, tf.float32),)
  reads = (schema.FEEDBACK,)

  def build(self, timelines, row, end, request_time):
    del request_time
    begin = tf.maximum(end - self.max_length, 0)
    return {names.HISTORY_FEEDBACK: window(timelines[schema.FEEDBACK], row, begin, end)}


@dataclasses.dataclass(frozen=True)
class RequestTime(FeatureSet):
  """REQUEST_TIME: when the recommendation is asked for (unix seconds or position)."""
  specs = (FeatureSpec(names.REQUEST_TIME, tf.int64, ragged=False),)
  uses_request_time = True

  def build(self, timelines, row, end, request_time):
    del timelines, row, end
    return {names.REQUEST_TIME: request_time}


@dataclasses.dataclass(frozen=True)
class UserFeatures(FeatureSet):
  """USER_FEATURES: the user's feature indices (user_feature_vocab.tsv); may be empty.

  Padded with `num_user_features`, one past the last real index (a model's feature
  table has one extra row for it).
  """
  specs = (FeatureSpec(names.USER_FEATURES, tf.int64, padding=USER_FEATURE_PADDING),)
  reads = (schema.USER_FEATURES,)

  def build(self, timelines, row, end, request_time):
    del end, request_time
    return {names.USER_FEATURES: tf.gather(timelines[schema.USER_FEATURES], row)}


@dataclasses.dataclass(frozen=True)
class Unclicked(FeatureSet):
  """Items shown to the user before the request but not clicked, latest first.

  UNCLICKED holds at most `max_items` impressions with a timestamp strictly before the
  request time (XDM's unclicked sequence, section 4.1), UNCLICKED_LENGTH their count.
  XDM's filtering rules (section 4.1) are options: `window` keeps only impressions of
  the last `window` time units before the request (rule 1: three days), and
  `exposed_more_than=k` keeps only items shown more than k times in it (rule 2: k = 1),
  each item once, ordered by its latest exposure.

  Attributes:
    max_items: the most items kept (the paper: 100).
    window: impressions at or after `request_time - window` only; None: all before it.
    exposed_more_than: None keeps every impression as logged (an item shown twice
      appears twice); k keeps the distinct items shown more than k times.
  """
  max_items: int = 100
  window: Optional[int] = None
  exposed_more_than: Optional[int] = None
  specs = (FeatureSpec(names.UNCLICKED, tf.int64, padding=ITEM_PADDING),
           FeatureSpec(names.UNCLICKED_LENGTH, tf.int64, ragged=False))
  reads = (schema.IMPRESSIONS, schema.IMPRESSION_TIMESTAMPS)
  uses_request_time = True

  def __post_init__(self):
    if self.max_items < 1:
      raise ValueError(f"Unclicked.max_items must be >= 1, got {self.max_items}.")
    if self.window is not None and self.window < 0:
      raise ValueError(f"Unclicked.window must be >= 0 (or None), got {self.window}.")
    if self.exposed_more_than is not None and self.exposed_more_than < 0:
      raise ValueError(f"Unclicked.exposed_more_than must be >= 0 (or None), got "
                       f"{self.exposed_more_than}.")

  def build(self, timelines, row, end, request_time):
    del end
    impressions = timelines[schema.IMPRESSIONS]
    times = tf.gather(timelines[schema.IMPRESSION_TIMESTAMPS], row)  # [samples, None]
    # Impression times are sorted per user: those before the request form a prefix,
    # those inside the window a suffix of it.
    before = tf.reduce_sum(tf.cast(times < request_time[:, tf.newaxis], tf.int64), axis=1)
    first = tf.zeros_like(before)
    if self.window is not None:
      first = tf.reduce_sum(tf.cast(times < (request_time - self.window)[:, tf.newaxis],
                                    tf.int64), axis=1)
    offset = tf.gather(impressions.row_splits, row)
    if self.exposed_more_than is None:
      begin = tf.maximum(before - self.max_items, first)
      latest_first = tf.ragged.range(offset + before - 1, offset + begin - 1, -1)
      return {names.UNCLICKED: tf.gather(impressions.values, latest_first),
              names.UNCLICKED_LENGTH: before - begin}
    shown = tf.gather(impressions.values, tf.ragged.range(offset + before - 1,
                                                          offset + first - 1, -1))
    # One key per (sample, item): unique keys come in order of first occurrence, so
    # grouped by sample and, within a sample, by latest exposure.
    sample = shown.value_rowids()
    keys, _, counts = tf.unique_with_counts(sample * (1 << 32) + shown.flat_values,
                                            out_idx=tf.int64)
    kept = tf.boolean_mask(keys, counts > self.exposed_more_than)
    unclicked = tf.RaggedTensor.from_value_rowids(
        kept % (1 << 32), kept // (1 << 32), nrows=tf.size(row, out_type=tf.int64))
    unclicked = unclicked[:, :self.max_items]
    return {names.UNCLICKED: unclicked, names.UNCLICKED_LENGTH: unclicked.row_lengths()}


# Training samples: which cuts of the train split, and their labels.


class TrainingSamples(abc.ABC):
  """Chooses the training cuts of a block and their labels (LABELS, LABEL_WEIGHTS, ...)."""
  label_specs: Tuple[FeatureSpec, ...] = ()

  @abc.abstractmethod
  def select(self, timelines: Mapping[str, Tensor], *, pad_id: int,
             max_length: int) -> Tuple[tf.Tensor, tf.Tensor, Features]:
    """Returns `(row, end, labels)`: the cuts (`end` < the timeline's length, so the
    event at `end` exists: its timestamp is the request time) and label features.

    Args:
      timelines: a parsed block.
      pad_id: pads item-valued labels.
      max_length: the model's history length (`History.max_length`).
    """


def _prefix_positions(timelines):
  """Every target position with a non-empty history: `max(target_start, 1) <= i < n`."""
  lengths = timelines[schema.ITEMS].row_lengths()
  return positions(lengths, tf.maximum(timelines[schema.TARGET_START], 1))


_ONE_LABEL = (FeatureSpec(names.LABELS, tf.int64, ragged=False, padding=ITEM_PADDING, width=1),)


@dataclasses.dataclass(frozen=True)
class AllPrefixes(TrainingSamples):
  """Every prefix -> its next item (one sample per target, as RecBole and SINE train).

  Timeline `[a, b, c]` gives `[a] -> b` and `[a, b] -> c`.
  """
  label_specs = _ONE_LABEL

  def select(self, timelines, *, pad_id, max_length):
    row, pos = _prefix_positions(timelines)
    return row, pos, {names.LABELS: gather_at(timelines[schema.ITEMS], row, pos)[:, tf.newaxis]}


@dataclasses.dataclass(frozen=True)
class NextK(TrainingSamples):
  """Every prefix -> its next `k` items (SDM and XDM's labels), padded past the end.

  Timeline `[a, b, c]` with k = 2 gives `[a] -> [b, c]` and `[a, b] -> [c, pad]`.
  """
  k: int = 5

  @property
  def label_specs(self):
    return (FeatureSpec(names.LABELS, tf.int64, ragged=False, padding=ITEM_PADDING,
                        width=self.k),)

  def select(self, timelines, *, pad_id, max_length):
    row, pos = _prefix_positions(timelines)
    items = timelines[schema.ITEMS]
    end = tf.minimum(pos + self.k, tf.gather(items.row_lengths(), row))
    labels = window(items, row, pos, end).to_tensor(
        default_value=tf.constant(pad_id, tf.int64), shape=[None, self.k])
    return row, pos, {names.LABELS: labels}


@dataclasses.dataclass(frozen=True)
class LastItem(TrainingSamples):
  """One sample per timeline: its last item from the items before it."""
  label_specs = _ONE_LABEL

  def select(self, timelines, *, pad_id, max_length):
    lengths = timelines[schema.ITEMS].row_lengths()
    first = tf.maximum(lengths - 1, tf.maximum(timelines[schema.TARGET_START], 1))
    row, pos = positions(lengths, first)
    return row, pos, {names.LABELS: gather_at(timelines[schema.ITEMS], row, pos)[:, tf.newaxis]}


@dataclasses.dataclass(frozen=True)
class AllPositions(TrainingSamples):
  """Windows of `max_length` inputs with the next item at every position (SASRec, GRU4Rec).

  A timeline's targets (positions `max(target_start, 1) .. n-1`) are cut into chunks
  of `max_length` consecutive targets, newest chunk first; a chunk's sample is the
  `max_length` items before its last target (the history at `end` = that target)
  and LABELS holds, aligned with it, the item that follows each history item. So one
  forward pass predicts every target of the chunk from its prefix, and every target
  of the timeline is a label exactly once (each training prefix counts once in the
  loss). Timeline `[a, b, c, d, e]` with max_length 2 gives `[c, d] -> [d, e]` and
  `[a, b] -> [b, c]`; with max_length 50 one sample `[a, b, c, d] -> [b, c, d, e]`.

  LABEL_WEIGHTS is 1 at every real label: the per-example loss is the sum over the
  sample's targets, so every prefix weighs the same whatever its sample's length.
  """
  label_specs = (FeatureSpec(names.LABELS, tf.int64, padding=ITEM_PADDING),
                 FeatureSpec(names.LABEL_WEIGHTS, tf.float32))

  def select(self, timelines, *, pad_id, max_length):
    row, _, last_target, labels = self._windows(timelines, pad_id, max_length)
    return row, last_target, labels

  def _windows(self, timelines, pad_id, max_length):
    """`(row, begin, last_target, labels)` of every window (see the class docstring)."""
    items = timelines[schema.ITEMS]
    lengths = items.row_lengths()
    first = tf.minimum(tf.maximum(timelines[schema.TARGET_START], 1), lengths)
    chunks = (lengths - first + max_length - 1) // max_length  # [timelines]
    row = tf.repeat(tf.range(tf.size(lengths, out_type=tf.int64)), chunks)
    newest_first = tf.ragged.range(chunks).flat_values
    last_target = tf.gather(lengths, row) - 1 - newest_first * max_length
    begin = tf.maximum(last_target - max_length, 0)
    labels = window(items, row, begin + 1, last_target + 1)
    # In the oldest chunk of a timeline with target_start > 1, the positions before
    # target_start are inputs only: their labels are padding.
    is_target = (tf.ragged.range(begin + 1, last_target + 1).flat_values >=
                 tf.repeat(tf.gather(first, row), labels.row_lengths()))
    return row, begin, last_target, {
        names.LABELS: labels.with_flat_values(
            tf.where(is_target, labels.flat_values, tf.constant(pad_id, tf.int64))),
        names.LABEL_WEIGHTS: labels.with_flat_values(tf.cast(is_target, tf.float32)),
    }


@dataclasses.dataclass(frozen=True)
class AllPositionsWithFuture(AllPositions):
  """`AllPositions` plus each window's future, newest first (DSS's seq2seq labels).

  FUTURE holds `items[begin + 1 : stop]` reversed, `stop = min(n, last_target +
  future_length)`: a causal encoder run over it gives, at the position of the item
  that follows window position p (index `FUTURE_LENGTH - 1 - p`), the representation of
  that position's whole future `x_{stop-1} ... x_{t+1}` (DSS eq 3's reversed future
  sequence) in one pass. Timeline `[a, b, c, d, e]` with max_length 3 and
  future_length 2 gives the window `[b, c, d] -> [c, d, e]` with FUTURE `[e, d, c]` (the
  future of position 0, after `b`, is `[e, d, c]`; of position 2, after `d`, `[e]`),
  and `[a] -> [b]` with FUTURE `[c, b]`.
  """
  future_length: int = 50
  label_specs = AllPositions.label_specs + (
      FeatureSpec(names.FUTURE, tf.int64, padding=ITEM_PADDING),
      FeatureSpec(names.FUTURE_LENGTH, tf.int64, ragged=False))

  def select(self, timelines, *, pad_id, max_length):
    row, begin, last_target, labels = self._windows(timelines, pad_id, max_length)
    stop = tf.minimum(tf.gather(timelines[schema.ITEMS].row_lengths(), row),
                      last_target + self.future_length)
    future = tf.reverse(window(timelines[schema.ITEMS], row, begin + 1, stop), axis=[1])
    return row, last_target, {**labels, names.FUTURE: future,
                              names.FUTURE_LENGTH: stop - begin - 1}


# What evaluation adds to a model's features.
EVALUATION_SPECS = (FeatureSpec(names.EVAL_TARGETS, tf.int64, padding=ITEM_PADDING),
                    FeatureSpec(names.EVAL_EXCLUDE, tf.int64, padding=ITEM_PADDING))


@dataclasses.dataclass(frozen=True)
class SampleSpec:
  """Everything a model reads: its feature sets and its training samples.

  Attributes:
    features: the feature sets; one must be `History` (batches are bucketed by its
      length).
    training: how training samples are cut from the train split.
  """
  features: Tuple[FeatureSet, ...]
  training: TrainingSamples

  def __post_init__(self):
    histories = [f for f in self.features if isinstance(f, History)]
    if len(histories) != 1:
      raise ValueError(f"A SampleSpec needs exactly one History feature set, got "
                       f"{len(histories)} in {self.features}.")
    seen = {}
    for spec in self.specs(training=True, evaluation=True):
      if spec.name in seen:
        raise ValueError(f"Feature {spec.name!r} is emitted twice in {self}.")
      seen[spec.name] = spec

  @property
  def max_length(self) -> int:
    """The longest history: the width batches are padded to at most."""
    return next(f for f in self.features if isinstance(f, History)).max_length

  @property
  def reads(self) -> Tuple[str, ...]:
    """The timeline fields the feature sets use (in `schema` order)."""
    used = {field for feature_set in self.features for field in feature_set.reads}
    return tuple(f for f in (schema.ITEMS, schema.TIMESTAMPS, schema.FEEDBACK,
                             schema.IMPRESSIONS, schema.IMPRESSION_TIMESTAMPS,
                             schema.USER_FEATURES) if f in used)

  @property
  def uses_request_time(self) -> bool:
    return any(feature_set.uses_request_time for feature_set in self.features)

  def specs(self, *, training: bool = False, evaluation: bool = False) -> Tuple[FeatureSpec, ...]:
    """The model features, plus labels (`training`) or evaluation targets (`evaluation`)."""
    specs = tuple(spec for feature_set in self.features for spec in feature_set.specs)
    if training:
      specs += tuple(self.training.label_specs)
    if evaluation:
      specs += EVALUATION_SPECS
    return specs

  def paddings(self, data: DataSpec, **kinds) -> Dict[str, object]:
    """Feature name -> its padding value in `data` (`kinds` as in `specs`)."""
    return {spec.name: padding_value(spec, data) for spec in self.specs(**kinds)}

  def features_at(self, timelines: Mapping[str, Tensor], row: tf.Tensor, end: tf.Tensor,
                  request_time: tf.Tensor) -> Features:
    """Every feature set's features at the cuts `(row, end)` (see `FeatureSet.build`)."""
    features = {}
    for feature_set in self.features:
      features.update(feature_set.build(timelines, row, end, request_time))
    return features

  def training_batch(self, timelines: Mapping[str, Tensor], pad_id: int) -> Features:
    """The training samples of a block: features at the selected cuts, plus labels."""
    row, end, labels = self.training.select(timelines, pad_id=pad_id,
                                            max_length=self.max_length)
    request_time = gather_at(timelines[schema.TIMESTAMPS], row, end)
    return {**self.features_at(timelines, row, end, request_time), **labels}

  def evaluation_batch(self, timelines: Mapping[str, Tensor]) -> Features:
    """One sample per valid/test timeline: the cut at `target_start`, plus its targets.

    Timelines without input (target_start 0) or without targets (target_start ==
    length) cannot be scored and give no sample. EVAL_TARGETS holds
    `items[target_start:]`, EVAL_EXCLUDE all of `items[:target_start]` (not only the
    last max_length), so history masking removes all of it.
    """
    items = timelines[schema.ITEMS]
    lengths = items.row_lengths()
    target_start = timelines[schema.TARGET_START]
    row = tf.where((target_start > 0) & (target_start < lengths))[:, 0]
    end = tf.gather(target_start, row)
    request_time = gather_at(timelines[schema.TIMESTAMPS], row, end)
    features = self.features_at(timelines, row, end, request_time)
    features[names.EVAL_TARGETS] = window(items, row, end, tf.gather(lengths, row))
    features[names.EVAL_EXCLUDE] = window(items, row, tf.zeros_like(end), end)
    return features

  def dummy_batch(self, data: DataSpec) -> Features:
    """A padded training batch of one sample (item 0 twice), to create variables.

    Built by the real training selector and feature sets from a one-timeline block, so
    it has exactly the keys, dtypes and ranks of real batches.
    """
    block = {
        schema.ITEMS: tf.ragged.constant([[0, 0]], tf.int64),
        schema.TIMESTAMPS: tf.ragged.constant([[0, 1]], tf.int64),
        schema.FEEDBACK: tf.ragged.constant([[1.0, 1.0]], tf.float32),
        schema.IMPRESSIONS: tf.ragged.constant([[0]], tf.int64),
        schema.IMPRESSION_TIMESTAMPS: tf.ragged.constant([[0]], tf.int64),
        schema.USER_FEATURES: tf.ragged.constant([[]], tf.int64),
        schema.TARGET_START: tf.constant([0], tf.int64),
    }
    return pad(self.training_batch(block, data.pad_id), self.paddings(data, training=True))


def pad(features: Features, paddings: Mapping[str, object],
        width_of=None) -> Features:
  """Makes every ragged `[batch, None]` feature dense with its own padding value.

  Args:
    features: a batch; dense features pass through.
    paddings: feature name -> padding value (`SampleSpec.paddings`); a ragged feature
      without one is an error (no silent padding with item 0 or 0).
    width_of: maps a ragged feature to its padded width (a scalar int64 tensor);
      default: its longest row.
  """
  padded = {}
  for key, value in features.items():
    if isinstance(value, tf.RaggedTensor):
      if key not in paddings:
        raise ValueError(f"Feature {key!r} has no declared padding value; declare it in a "
                         f"FeatureSpec of the model's SampleSpec (known: {sorted(paddings)}).")
      shape = None if width_of is None else tf.stack([tf.constant(-1, tf.int64), width_of(value)])
      value = value.to_tensor(default_value=tf.cast(paddings[key], value.dtype), shape=shape)
    padded[key] = value
  return padded


def check_specs(features: Features, specs: Sequence[FeatureSpec]) -> None:
  """Raises when a built batch and the declared specs disagree (keys, dtypes, raggedness)."""
  declared = {spec.name: spec for spec in specs}
  if set(features) != set(declared):
    raise ValueError(f"Built features {sorted(features)} differ from the declared "
                     f"{sorted(declared)}.")
  for name, value in features.items():
    spec = declared[name]
    if value.dtype != spec.dtype or isinstance(value, tf.RaggedTensor) != spec.ragged:
      raise ValueError(f"Feature {name!r} is {'ragged ' if isinstance(value, tf.RaggedTensor) else ''}"
                       f"{value.dtype.name} but declared {spec}.")
