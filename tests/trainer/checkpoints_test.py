"""trainer/checkpoints.py: the best-validation checkpoint's record."""

import os
import shutil

import tensorflow as tf

from trainer import checkpoints


def test_best_checkpoint_is_found_after_the_run_directory_moves(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # the trainer saves under a relative model_dir
  variable = tf.Variable(3.0)
  checkpoint = tf.train.Checkpoint(v=variable)
  saved = checkpoints.save_best(checkpoint, os.path.join("run", "best"),
                                {"metric": "hr@10", "value": 0.5, "step": 7}, 7)
  assert saved == os.path.join("run", "best", "best-7")
  shutil.move("run", "moved")
  record = checkpoints.read_best(os.path.join("moved", "best"))
  assert record["checkpoint"] == os.path.join("moved", "best", "best-7")
  assert (record["metric"], record["value"], record["step"]) == ("hr@10", 0.5, 7)
  variable.assign(0.0)
  checkpoint.read(record["checkpoint"]).assert_existing_objects_matched()
  assert variable.numpy() == 3.0
  assert checkpoints.read_best(str(tmp_path / "nowhere")) is None
