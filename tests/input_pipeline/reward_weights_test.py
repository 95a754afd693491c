"""Reward-weighted training windows (input_pipeline/reward_weights.py) on a hand-made block."""

import pytest

from common import names
from input_pipeline import reward_weights
from input_pipeline import schema

import tensorflow as tf

PAD = 99


def block(items, feedback, target_start):
  return {schema.ITEMS: tf.ragged.constant(items, tf.int64),
          schema.FEEDBACK: tf.ragged.constant(feedback, tf.float32),
          schema.TARGET_START: tf.constant(target_start, tf.int64)}


def test_weights_follow_each_label_events_feedback():
  # Timeline [a, b, c, d, e] = [1, 2, 3, 4, 5] with ratings 5, 2, 4, 1, 3, max_length 2:
  # windows [3, 4] -> [4, 5] and [1, 2] -> [2, 3]. Labels 4 (rating 1), 5 (3) weigh 0.25;
  # 2 (rating 2) 0.25; 3 (rating 4) 1.
  selector = reward_weights.RewardWeightedPositions(positive_threshold=4.0, negative_weight=0.25)
  row, end, labels = selector.select(block([[1, 2, 3, 4, 5]], [[5, 2, 4, 1, 3]], [0]),
                                     pad_id=PAD, max_length=2)
  assert row.numpy().tolist() == [0, 0] and end.numpy().tolist() == [4, 2]
  assert labels[names.LABELS].to_list() == [[4, 5], [2, 3]]
  assert labels[names.LABEL_WEIGHTS].to_list() == [[0.25, 0.25], [0.25, 1.0]]


def test_input_only_positions_keep_weight_zero():
  # target_start 2: the label at position 0 (item 2) is an input only (padding, weight 0).
  selector = reward_weights.RewardWeightedPositions(positive_threshold=3.0, negative_weight=0.5)
  _, _, labels = selector.select(block([[1, 2, 3]], [[1, 5, 1]], [2]), pad_id=PAD, max_length=5)
  assert labels[names.LABELS].to_list() == [[PAD, 3]]
  assert labels[names.LABEL_WEIGHTS].to_list() == [[0.0, 0.5]]


def test_negative_weight_must_be_a_share():
  with pytest.raises(ValueError, match="negative_weight"):
    reward_weights.RewardWeightedPositions(negative_weight=2.0)
