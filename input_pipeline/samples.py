"""In-graph sample builders: parsed user timelines -> model feature dicts.

A builder takes a *block* of parsed timelines (the dict `schema.parse_timelines`
returns for `[num_timelines]` serialized examples: ragged `[num_timelines, None]`
sequences plus `[num_timelines]` scalars) and static `SampleParams`, and returns
the block's samples as a dict of `[num_samples, ...]` tensors. Working on a whole
block with vectorized ragged ops (instead of one timeline at a time) is what makes
the input fast: tf.data pays tens of microseconds per function call on the 2-core
machines, more than building a sample costs.

Output conventions (`input_pipeline.dataset` relies on them):
- Variable-length sequences are `tf.RaggedTensor`s `[num_samples, None]`, left
  aligned (oldest first). The dataset pads them per batch: keys in `ITEM_KEYS`
  with `pad_id`, all others with 0.
- Fixed-width features are dense tensors, already padded (`LABELS` `[num_samples,
  steps]` with `pad_id`).
- Every builder emits `HISTORY_LENGTH` `[num_samples]`; the dataset buckets on it.

Positions: sample `s` of timeline `row[s]` predicts position `pos[s]`; its history
is the last `max_length` items strictly before `pos[s]`, so nothing from the target
onward ever reaches the history. New builders (sessions and long-term window for
SDM, unclicked impressions before t for XDM, the reversed future for DSS, per-step
targets with time deltas for HRNN) reuse `window` / `gather_at` / `history_features`
on the same `(row, pos)` pairs and register themselves with `@register("name")`;
their static options become fields of `SampleParams`.
"""

import dataclasses
from typing import Callable, Dict, Mapping, Tuple, Union

import tensorflow as tf

from input_pipeline import schema
from models import base

# Evaluation-only keys (valid/test splits): what the ranking is checked against,
# and which items the full-catalog ranking masks out when history masking is on.
EVAL_TARGETS = "eval_targets"  # [batch, num_targets] items[target_start:], pad_id padded
EVAL_EXCLUDE = "eval_exclude"  # [batch, len] ALL of items[:target_start], pad_id padded

# Keys whose values are item indices: padded with pad_id (every other key with 0).
ITEM_KEYS = frozenset({base.HISTORY, base.LABELS, EVAL_TARGETS, EVAL_EXCLUDE})

Tensor = Union[tf.Tensor, tf.RaggedTensor]
Features = Dict[str, Tensor]


@dataclasses.dataclass(frozen=True)
class SampleParams:
  """Static parameters every builder receives.

  Attributes:
    max_length: most history items kept per sample (the most recent ones).
    pad_id: the padding item index, `schema.pad_id(num_items)`.
    num_labels: labels per sample for `next_k` (k).
  """
  max_length: int
  pad_id: int
  num_labels: int = 5


Builder = Callable[[Mapping[str, Tensor], SampleParams], Features]
_BUILDERS: Dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
  """Function decorator: registers a sample builder under `name`."""

  def decorator(builder: Builder) -> Builder:
    if name in _BUILDERS:
      raise ValueError(f"Sample builder {name!r} is already registered to "
                       f"{_BUILDERS[name].__module__}.{_BUILDERS[name].__name__}.")
    _BUILDERS[name] = builder
    return builder

  return decorator


def lookup(name: str) -> Builder:
  if name not in _BUILDERS:
    raise ValueError(f"Unknown sample builder {name!r}. Known builders: {', '.join(names())}. "
                     f"A builder is known once its module registers it with "
                     f"`@input_pipeline.samples.register(name)`.")
  return _BUILDERS[name]


def names() -> Tuple[str, ...]:
  return tuple(sorted(_BUILDERS))


# Shared machinery: every builder is (row, pos) selection + these gathers.


def positions(lengths: tf.Tensor, first: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """One sample per position `first[u] <= i < lengths[u]` of every timeline `u`.

  Args:
    lengths: `[num_timelines]` int64 timeline lengths.
    first: `[num_timelines]` int64 first position to emit (clipped to `lengths`).

  Returns:
    `(row, pos)`, both `[num_samples]` int64: the timeline and position of each
    sample, timeline by timeline, positions ascending.
  """
  first = tf.minimum(first, lengths)
  row = tf.repeat(tf.range(tf.size(lengths, out_type=tf.int64)), lengths - first)
  return row, tf.ragged.range(first, lengths).flat_values


def window(sequence: tf.RaggedTensor, row: tf.Tensor, begin: tf.Tensor,
           end: tf.Tensor) -> tf.RaggedTensor:
  """`sequence[row[s]][begin[s]:end[s]]` for every sample `s`: ragged `[num_samples, None]`.

  Works for any per-timeline sequence (items, timestamps, feedback, impressions),
  so aligned side sequences are cut with the same `(row, begin, end)`.
  """
  offset = tf.gather(sequence.row_splits, row)
  return tf.gather(sequence.values, tf.ragged.range(offset + begin, offset + end))


def gather_at(sequence: tf.RaggedTensor, row: tf.Tensor, pos: tf.Tensor) -> tf.Tensor:
  """`sequence[row[s]][pos[s]]` for every sample `s`: `[num_samples]`."""
  return tf.gather(sequence.values, tf.gather(sequence.row_splits, row) + pos)


def history_features(timelines: Mapping[str, Tensor], row: tf.Tensor, end: tf.Tensor,
                     max_length: int) -> Features:
  """The last `max_length` events before position `end[s]` of timeline `row[s]`.

  Returns:
    HISTORY and HISTORY_TIMESTAMPS ragged `[num_samples, None]` (oldest first),
    HISTORY_LENGTH `[num_samples]` int64.
  """
  begin = tf.maximum(end - max_length, 0)
  return {
      base.HISTORY: window(timelines[schema.ITEMS], row, begin, end),
      base.HISTORY_TIMESTAMPS: window(timelines[schema.TIMESTAMPS], row, begin, end),
      base.HISTORY_LENGTH: end - begin,
  }


def _prefix_positions(timelines: Mapping[str, Tensor]) -> Tuple[tf.Tensor, tf.Tensor]:
  """Every target position with a non-empty history: `max(target_start, 1) <= i < n`."""
  lengths = timelines[schema.ITEMS].row_lengths()
  return positions(lengths, tf.maximum(timelines[schema.TARGET_START], 1))


@register("all_prefixes")
def all_prefixes(timelines: Mapping[str, Tensor], params: SampleParams) -> Features:
  """Every prefix -> its next item (RecBole/SINE/SASRec training).

  Timeline `[a, b, c]` (train, target_start 0) gives `[a] -> b` and `[a, b] -> c`.

  Returns:
    history features and LABELS `[num_samples, 1]`.
  """
  row, pos = _prefix_positions(timelines)
  features = history_features(timelines, row, pos, params.max_length)
  features[base.LABELS] = gather_at(timelines[schema.ITEMS], row, pos)[:, tf.newaxis]
  return features


@register("next_k")
def next_k(timelines: Mapping[str, Tensor], params: SampleParams) -> Features:
  """Every prefix -> its next `num_labels` items.

  Timeline `[a, b, c]` with k = 2 gives `[a] -> [b, c]` and `[a, b] -> [c, pad]`.

  Returns:
    history features and LABELS `[num_samples, num_labels]`, padded with pad_id.
  """
  row, pos = _prefix_positions(timelines)
  items = timelines[schema.ITEMS]
  end = tf.minimum(pos + params.num_labels, tf.gather(items.row_lengths(), row))
  features = history_features(timelines, row, pos, params.max_length)
  features[base.LABELS] = window(items, row, pos, end).to_tensor(
      default_value=tf.constant(params.pad_id, tf.int64), shape=[None, params.num_labels])
  return features


@register("last_item")
def last_item(timelines: Mapping[str, Tensor], params: SampleParams) -> Features:
  """One sample per timeline: its last item, predicted from the items before it.

  Timelines with fewer than two events (or whose last event precedes
  target_start) give no sample.

  Returns:
    history features and LABELS `[num_samples, 1]`.
  """
  lengths = timelines[schema.ITEMS].row_lengths()
  first = tf.maximum(lengths - 1, tf.maximum(timelines[schema.TARGET_START], 1))
  row, pos = positions(lengths, first)
  features = history_features(timelines, row, pos, params.max_length)
  features[base.LABELS] = gather_at(timelines[schema.ITEMS], row, pos)[:, tf.newaxis]
  return features


@register("evaluation")
def evaluation(timelines: Mapping[str, Tensor], params: SampleParams) -> Features:
  """One sample per valid/test timeline: input `items[:target_start]`, targets the rest.

  Timelines without input history (target_start 0) or without targets
  (target_start == length) cannot be scored and give no sample.

  Returns:
    history features (the last max_length items of items[:target_start]),
    EVAL_TARGETS ragged `[num_samples, None]` = items[target_start:], and
    EVAL_EXCLUDE ragged `[num_samples, None]` = all of items[:target_start].
  """
  items = timelines[schema.ITEMS]
  lengths = items.row_lengths()
  target_start = timelines[schema.TARGET_START]
  row = tf.where((target_start > 0) & (target_start < lengths))[:, 0]
  end = tf.gather(target_start, row)
  features = history_features(timelines, row, end, params.max_length)
  features[EVAL_TARGETS] = window(items, row, end, tf.gather(lengths, row))
  features[EVAL_EXCLUDE] = window(items, row, tf.zeros_like(end), end)
  return features
