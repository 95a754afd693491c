"""retrieval.serve: picking a prepared data set's test user for a demo query."""

import pytest
import tensorflow as tf

from input_pipeline import schema
from retrieval import serve


def _write_data_set(data_dir):
  (data_dir / "test").mkdir(parents=True)
  schema.write_tsv(str(data_dir / schema.VOCAB_FILE), ["index", "item_id", "count"],
                   [(0, "apple", 9), (1, "bread", 5), (2, "cheese", 1)])
  with tf.io.TFRecordWriter(str(data_dir / "test" / schema.shard_name(0, 1))) as writer:
    writer.write(schema.encode_timeline(user_id="u1", items=[2, 0, 1], timestamps=[5, 6, 7],
                                        target_start=2))
    writer.write(schema.encode_timeline(user_id="u2", items=[1, 1, 0, 2], timestamps=[1, 2, 3, 4],
                                        target_start=3))


def _summary(user):
  return (user.user_id, list(user.history), list(user.timestamps), list(user.targets),
          user.request_time)


def test_test_user_splits_input_and_held_out_items_in_raw_ids(tmp_path):
  _write_data_set(tmp_path)
  # u2: items [1, 1, 0, 2] = bread, bread, apple, cheese; target_start 3 holds out cheese,
  # asked for at its time 4.
  assert _summary(serve.test_user(str(tmp_path), 1)) == (
      "u2", ["bread", "bread", "apple"], [1, 2, 3], ["cheese"], 4)
  assert _summary(serve.test_user(str(tmp_path))) == ("u1", ["cheese", "apple"], [5, 6],
                                                      ["bread"], 7)


def test_test_user_out_of_range(tmp_path):
  _write_data_set(tmp_path)
  with pytest.raises(ValueError, match="no user number 2"):
    serve.test_user(str(tmp_path), 2)
  with pytest.raises(ValueError, match=">= 0"):
    serve.test_user(str(tmp_path), -1)
