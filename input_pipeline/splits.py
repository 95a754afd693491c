"""Split protocols: which prefix of each user's timeline each split stores, and its targets.

Every split stores, per user, a prefix `events[:end]` of the user's time-sorted timeline
and `target_start` (see `schema`): valid/test targets are `events[target_start:end]`.
Impressions (shown, not clicked) follow the same time rule: a split keeps a user's
impressions strictly before the first event it leaves out (leave-last-one-out), before
its cut-off time (temporal), or all of them (held-out users).

Protocols (`schema.SPLIT_PROTOCOLS`):
  leave_last_one_out (SASRec, S3-Rec, SINE): train = events[:-2]; valid = events[:-1]
    with target_start = n - 2; test = all events with target_start = n - 1, so the test
    input includes the validation item. Users with fewer than 3 events keep all their
    events in train and are not evaluated, as in SASRec's `data_partition`. (S3-Rec
    evaluates every user of its files, which all have at least 5 events, so on the
    S3-Rec files both rules give the same splits.)
  temporal (SDM, XDM): two global cut-off times t1 <= t2. train = events before t1;
    valid = events before t2, targets from the first event at or after t1; test = all
    events, targets from the first event at or after t2. A user enters valid/test only
    with at least one input and one target event. Without explicit cut-offs, t1 and t2
    are the event-time quantiles that leave `valid_fraction` / `test_fraction` of the
    events after them.
  held_out_users (ComiRec): users are shuffled (seeded) and `valid_fraction` /
    `test_fraction` of them become validation / test users; train holds the other
    users' whole timelines. An evaluation user's input is the first
    floor(input_fraction * n) events (at least 1, at most n - 1), the rest are targets.
    Evaluation users with fewer than 2 events cannot be split and go to train.

No split's training data contains a test target: leave-last-one-out trains on events
before the validation item, temporal on events before t1 <= t2, held-out users never
train on evaluation users.
"""

import dataclasses
from typing import Any, Dict, Optional

import numpy as np

from input_pipeline import schema

_NEVER = np.iinfo(np.int64).max


@dataclasses.dataclass(frozen=True)
class SplitConfig:
  """How to split the log into train / valid / test.

  Attributes:
    protocol: one of `schema.SPLIT_PROTOCOLS`.
    valid_start_time: temporal: t1 in the log's time unit; None derives it from
      `valid_fraction`.
    test_start_time: temporal: t2; None derives it from `test_fraction`.
    valid_fraction: temporal: share of events at or after t1 and before t2;
      held-out users: share of users used for validation.
    test_fraction: temporal: share of events at or after t2; held-out users: share of
      users used for testing.
    input_fraction: held-out users: share of an evaluation user's events used as input.
    seed: held-out users: seed of the user assignment.
  """
  protocol: str = schema.LEAVE_LAST_ONE_OUT
  valid_start_time: Optional[int] = None
  test_start_time: Optional[int] = None
  valid_fraction: float = 0.1
  test_fraction: float = 0.1
  input_fraction: float = 0.8
  seed: int = 0

  def validate(self) -> None:
    if self.protocol not in schema.SPLIT_PROTOCOLS:
      raise ValueError(f"Unknown split {self.protocol!r}; expected one of {schema.SPLIT_PROTOCOLS}.")
    for name in ("valid_fraction", "test_fraction"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
    if self.valid_fraction + self.test_fraction >= 1.0:
      raise ValueError(f"valid_fraction + test_fraction must be below 1 so that something is "
                       f"left for training, got {self.valid_fraction} + {self.test_fraction}.")
    if not 0.0 < self.input_fraction < 1.0:
      raise ValueError(f"input_fraction must be in (0, 1), got {self.input_fraction}.")
    if (self.valid_start_time is not None and self.test_start_time is not None and
        self.valid_start_time > self.test_start_time):
      raise ValueError(f"valid_start_time {self.valid_start_time} is after test_start_time "
                       f"{self.test_start_time}; the validation period must come first.")


@dataclasses.dataclass
class SplitPlan:
  """Per split and user: the stored prefix and its targets.

  Attributes:
    ends: split -> int64 `[num_users]` events stored (0: the user is not in the split).
    target_starts: split -> int64 `[num_users]`.
    impression_ends: split -> int64 `[num_users]` impressions stored (a prefix of the
      user's time-sorted impressions).
    info: protocol details for stats.json (cut-offs, fractions, seed).
  """
  ends: Dict[str, np.ndarray]
  target_starts: Dict[str, np.ndarray]
  impression_ends: Dict[str, np.ndarray]
  info: Dict[str, Any]


def _counts_before(offsets: np.ndarray, timestamps: np.ndarray, limits: np.ndarray) -> np.ndarray:
  """Per user u, how many of its (time-sorted) rows have timestamp < limits[u]."""
  before = timestamps < np.repeat(limits, np.diff(offsets))
  cumulative = np.zeros(len(before) + 1, np.int64)
  np.cumsum(before.astype(np.int64), out=cumulative[1:])  # bool cumsum is ~8x slower
  return cumulative[offsets[1:]] - cumulative[offsets[:-1]]


def _cut_times(offsets: np.ndarray, timestamps: np.ndarray, ends: np.ndarray) -> np.ndarray:
  """Timestamp of each user's first event left out of a prefix of `ends` events."""
  lengths = np.diff(offsets)
  cut = np.full(len(lengths), _NEVER, np.int64)
  partial = ends < lengths
  cut[partial] = timestamps[offsets[:-1][partial] + ends[partial]]
  return cut


def _quantile_time(timestamps: np.ndarray, fraction_after: float) -> int:
  """The time t such that about `fraction_after` of the events are at or after t."""
  k = min(len(timestamps) - 1, max(0, int(round((1.0 - fraction_after) * len(timestamps)))))
  return int(np.partition(timestamps, k)[k])


def make_split(config: SplitConfig, *, offsets: np.ndarray, timestamps: np.ndarray,
               impression_offsets: np.ndarray, impression_timestamps: np.ndarray,
               has_timestamps: bool) -> SplitPlan:
  """Plans the three splits of a log sorted into timelines.

  Args:
    config: the protocol and its parameters.
    offsets: int64 `[num_users + 1]`, user u's events are rows offsets[u]:offsets[u + 1].
    timestamps: int64 `[num_events]`, sorted within each user.
    impression_offsets: int64 `[num_users + 1]`.
    impression_timestamps: int64 `[num_impressions]`, sorted within each user.
    has_timestamps: False for order-only logs (the temporal protocol needs times).

  Returns:
    The `SplitPlan`.
  """
  config.validate()
  lengths = np.diff(offsets)
  num_users = len(lengths)
  zeros = np.zeros(num_users, np.int64)
  info: Dict[str, Any] = {"protocol": config.protocol}
  if config.protocol == schema.LEAVE_LAST_ONE_OUT:
    evaluated = lengths >= 3
    ends = {"train": np.where(evaluated, lengths - 2, lengths),
            "valid": np.where(evaluated, lengths - 1, 0),
            "test": np.where(evaluated, lengths, 0)}
    target_starts = {"train": zeros, "valid": np.where(evaluated, lengths - 2, 0),
                     "test": np.where(evaluated, lengths - 1, 0)}
    impression_limits = {split: _cut_times(offsets, timestamps, end) for split, end in ends.items()}
    info["users_too_short_for_evaluation"] = int(num_users - evaluated.sum())
  elif config.protocol == schema.TEMPORAL:
    if not has_timestamps:
      raise ValueError("The temporal split needs real timestamps, but this data set only has the "
                       "order of events; use --split=leave_last_one_out or held_out_users.")
    t2 = (config.test_start_time if config.test_start_time is not None else
          _quantile_time(timestamps, config.test_fraction))
    t1 = (config.valid_start_time if config.valid_start_time is not None else
          min(t2, _quantile_time(timestamps, config.valid_fraction + config.test_fraction)))
    before_t1 = _counts_before(offsets, timestamps, np.full(num_users, t1, np.int64))
    before_t2 = _counts_before(offsets, timestamps, np.full(num_users, t2, np.int64))
    in_valid = (before_t1 >= 1) & (before_t2 > before_t1)
    in_test = (before_t2 >= 1) & (lengths > before_t2)
    ends = {"train": before_t1, "valid": np.where(in_valid, before_t2, 0),
            "test": np.where(in_test, lengths, 0)}
    target_starts = {"train": zeros, "valid": np.where(in_valid, before_t1, 0),
                     "test": np.where(in_test, before_t2, 0)}
    impression_limits = {"train": np.full(num_users, t1, np.int64),
                         "valid": np.full(num_users, t2, np.int64),
                         "test": np.full(num_users, _NEVER, np.int64)}
    info.update(valid_start_time=int(t1), test_start_time=int(t2))
  else:
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(num_users)
    num_test = int(round(config.test_fraction * num_users))
    num_valid = int(round(config.valid_fraction * num_users))
    role = np.zeros(num_users, np.int64)  # 0 train, 1 valid, 2 test
    role[order[:num_test]] = 2
    role[order[num_test:num_test + num_valid]] = 1
    role[lengths < 2] = 0
    inputs = np.clip(np.floor(config.input_fraction * lengths).astype(np.int64), 1,
                     np.maximum(lengths - 1, 1))
    ends = {"train": np.where(role == 0, lengths, 0), "valid": np.where(role == 1, lengths, 0),
            "test": np.where(role == 2, lengths, 0)}
    target_starts = {"train": zeros, "valid": np.where(role == 1, inputs, 0),
                     "test": np.where(role == 2, inputs, 0)}
    impression_limits = {split: np.full(num_users, _NEVER, np.int64) for split in ends}
    info.update(input_fraction=config.input_fraction, seed=config.seed)
  if config.protocol != schema.LEAVE_LAST_ONE_OUT:
    info.update(valid_fraction=config.valid_fraction, test_fraction=config.test_fraction)

  impression_ends = {}
  for split, end in ends.items():
    kept = _counts_before(impression_offsets, impression_timestamps, impression_limits[split])
    impression_ends[split] = np.where(end > 0, kept, 0)
  return SplitPlan(ends, target_starts, impression_ends, info)
