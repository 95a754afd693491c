"""Training samples whose per-label loss weights come from the label event's feedback.

HRNN-meta (Ma et al., KDD 2020, section 3.3, "non-uniform rewards"; section 2.2,
"trained with larger (smaller) weights on losses associated with positive (negative)
feedback") weighs the cross entropy of each target by a non-negative reward. The
reward here is a step of the target event's own feedback value (a rating, a watch
ratio):

    weight(label) = 1                 if feedback >= positive_threshold
                  = negative_weight   otherwise

on top of `samples.AllPositions` (every target of a timeline a label exactly once, in
windows of `max_length` inputs; padding and input-only positions keep weight 0). The
paper gives no reward function; a threshold on the feedback is the simplest form of
"larger weights for positive feedback" and is what ratings suggest (MovieLens: >= 4).
"""

import dataclasses

import tensorflow as tf

from common import names
from input_pipeline import samples
from input_pipeline import schema


@dataclasses.dataclass(frozen=True)
class RewardWeightedPositions(samples.AllPositions):
  """`AllPositions` with LABEL_WEIGHTS scaled by the reward of each label's feedback.

  Attributes:
    positive_threshold: feedback at or above this is a positive event (weight 1).
    negative_weight: weight of the other events, in [0, 1].
  """
  positive_threshold: float = 4.0
  negative_weight: float = 0.5

  def __post_init__(self):
    if not 0.0 <= self.negative_weight <= 1.0:
      raise ValueError(f"negative_weight must be in [0, 1], got {self.negative_weight}.")

  def select(self, timelines, *, pad_id, max_length):
    row, end, labels = super().select(timelines, pad_id=pad_id, max_length=max_length)
    # The labels of the window ending at `end` are the events begin+1 .. end
    # (AllPositions: begin = max(end - max_length, 0)).
    begin = tf.maximum(end - max_length, 0)
    feedback = samples.window(timelines[schema.FEEDBACK], row, begin + 1, end + 1)
    reward = tf.where(feedback.flat_values >= self.positive_threshold, 1.0,
                      tf.cast(self.negative_weight, tf.float32))
    weights = labels[names.LABEL_WEIGHTS]
    return row, end, {**labels,
                      names.LABEL_WEIGHTS: weights.with_flat_values(weights.flat_values * reward)}
