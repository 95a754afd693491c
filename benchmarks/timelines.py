"""A prepared split's timelines as numpy, for experiments that cut them themselves."""

from typing import Any, Dict

import numpy as np

from input_pipeline import schema
import tensorflow as tf  # pylint: disable=g-bad-import-order  (after our packages: Keras 2)


def read_timelines(data_dir: str, split: str) -> Dict[str, Any]:
  """Every timeline of a split as numpy: lists of arrays per user, plus target_start."""
  records = tf.data.TFRecordDataset(schema.split_files(data_dir, split))
  out = {key: [] for key in (schema.ITEMS, schema.TIMESTAMPS, schema.FEEDBACK,
                             schema.USER_FEATURES, schema.TARGET_START)}
  for block in records.batch(1024).map(schema.parse_timelines):
    for key in out:
      value = block[key]
      out[key].extend(value.numpy() if key == schema.TARGET_START else
                      [np.asarray(row) for row in value.to_list()])
  return out


def feedback_moments(data_dir: str) -> tuple:
  """Mean and standard deviation of the feedback values of the train split."""
  feedback = np.concatenate(read_timelines(data_dir, "train")[schema.FEEDBACK])
  return float(feedback.mean()), float(feedback.std())
