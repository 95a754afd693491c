"""The training loop on a tiny learnable dataset: loss goes down, resume, loss terms."""

import dataclasses
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from input_pipeline import dataset as dataset_lib
from tests.trainer import tiny_data
from trainer import config as config_lib
from trainer import loop
import tensorflow as tf


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tiny_data.write(str(tmp_path_factory.mktemp("tiny")))


def _config(data_dir, model_dir, *, train_steps, log_every=10, checkpoint_every=10, **model):
  return config_lib.TrainConfig(
      model_dir=model_dir,
      data=config_lib.DataConfig(data_dir=data_dir, max_length=10, batch_size=32),
      model=config_lib.ModelConfig(
          "sine", {"embedding_dim": 16, "num_interests": 2, "num_prototypes": 10, **model}),
      schedule=config_lib.ScheduleConfig(train_steps=train_steps, log_every=log_every),
      checkpoint=config_lib.CheckpointConfig(every_steps=checkpoint_every),
      # Users of the tiny data walk their group cyclically: targets are often items they
      # consumed before, which must stay rankable for the learning checks.
      eval=config_lib.EvalConfig(ks=(1, 10), batch_size=128, mask_history="keep_targets"),
      export=config_lib.ExportConfig(enabled=False))


def _train_scalars(model_dir):
  """{tag: {step: value}} from every event file under summaries/train."""
  scalars = {}
  for path in glob.glob(os.path.join(model_dir, "summaries", "train", "events.*")):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        steps = scalars.setdefault(value.tag, {})
        assert event.step not in steps, f"{value.tag} written twice at step {event.step}"
        steps[event.step] = float(tf.make_ndarray(value.tensor))
  return scalars


def test_loss_terms_are_scaled_to_the_global_batch():
  # Head "softmax": (1 + 2 + 3 + 4) / global batch 8 = 1.25; head "second": 4 / 8; the
  # [B] aux term likewise (2 * 4) / 8 = 1.0; the scalar term is divided by the 1
  # replica: 0.5.
  terms = loop.loss_terms(
      {"aux_losses": {"per_example": tf.fill([4], 2.0), "scalar": tf.constant(0.5)}},
      {"softmax": tf.constant([1.0, 2.0, 3.0, 4.0]), "second": tf.ones([4])},
      global_batch_size=8)
  assert {k: float(v) for k, v in terms.items()} == {"softmax": 1.25, "second": 0.5,
                                                      "per_example": 1.0, "scalar": 0.5}
  with pytest.raises(ValueError, match="clashes"):
    loop.loss_terms({"aux_losses": {"softmax": tf.constant(1.0)}}, {"softmax": tf.ones([2])}, 2)
  with pytest.raises(ValueError, match="no softmax heads"):
    loop.loss_terms({}, {}, 2)


def test_next_stop_hits_every_cadence():
  config = config_lib.TrainConfig(
      schedule=config_lib.ScheduleConfig(train_steps=620, log_every=100),
      checkpoint=config_lib.CheckpointConfig(every_steps=300),
      eval=config_lib.EvalConfig(every_steps=250))
  stops, step = [], 0
  while step < 620:
    step = loop._next_stop(step, config)
    stops.append(step)
  assert stops == [100, 200, 250, 300, 400, 500, 600, 620]


def test_optimizer_clips_by_global_norm():
  adagrad = loop.make_optimizer(config_lib.OptimizerConfig())
  assert adagrad.name == "Adagrad" and adagrad.global_clipnorm == 5.0
  assert float(adagrad.learning_rate) == pytest.approx(0.1)
  adam = loop.make_optimizer(config_lib.OptimizerConfig(name="adam", learning_rate=1e-3,
                                                        clip_norm=0.0))
  assert adam.name == "Adam" and adam.global_clipnorm is None


def test_training_learns_and_a_rerun_resumes(data_dir, tmp_path, monkeypatch):
  """Killed after the step-20 checkpoint, the same command finishes steps 21..40."""
  config = _config(data_dir, str(tmp_path / "run"), train_steps=40)
  save = loop.TrainingRun.save

  def save_then_die_at_20(run):
    save(run)
    if run.step == 20:
      raise KeyboardInterrupt("simulated kill after the step-20 checkpoint")

  monkeypatch.setattr(loop.TrainingRun, "save", save_then_die_at_20)
  with pytest.raises(KeyboardInterrupt):
    loop.train_and_evaluate(config)
  monkeypatch.setattr(loop.TrainingRun, "save", save)
  assert tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints")).endswith("-20")
  assert not os.path.exists(os.path.join(config.model_dir, "metrics.json"))

  result = loop.train_and_evaluate(config)  # the same command again
  assert result["step"] == 40
  scalars = _train_scalars(config.model_dir)
  # Steps 10 and 20 come from the first run, 30 and 40 from the second; none twice.
  assert sorted(scalars["total"]) == [10, 20, 30, 40]
  assert {"softmax", "covariance", "learning_rate", "examples_per_second"} <= set(scalars)
  assert scalars["learning_rate"][40] == pytest.approx(0.1)
  # The full softmax over 40 items starts near log(40) = 3.7 and must clearly fall,
  # also across the restart (the optimizer state came back with the model).
  assert scalars["softmax"][10] > 2.5
  assert scalars["softmax"][40] < scalars["softmax"][20] < scalars["softmax"][10]
  assert scalars["softmax"][40] < 0.75 * scalars["softmax"][10]
  # The next item is always the current one + 1 within its group of 8: the trained
  # model ranks it first far more often than popularity would (about 1 in 40).
  assert result["metrics"]["hr@1"] > 0.4
  assert result["valid"]["metrics"]["hr@10"] > 0.6
  assert result["export_dir"] is None
  assert os.path.exists(os.path.join(config.model_dir, "metrics.json"))

  # Rerunning a finished job trains nothing more and evaluates the same model.
  again = loop.train_and_evaluate(config)
  assert again["step"] == 40 and sorted(_train_scalars(config.model_dir)["total"]) == [10, 20, 30, 40]
  np.testing.assert_allclose(again["metrics"]["hr@10"], result["metrics"]["hr@10"])

  with pytest.raises(ValueError, match="do not match the model"):
    loop.train_and_evaluate(_config(data_dir, config.model_dir, train_steps=50, embedding_dim=8))


def test_the_same_seed_gives_the_same_metrics(data_dir, tmp_path):
  # SASRec: random initialization, dropout, 20 sampled negatives per step, shuffled input.
  def run(name, seed):
    config = dataclasses.replace(
        _config(data_dir, str(tmp_path / name), train_steps=30),
        model=config_lib.ModelConfig("sasrec", {"embedding_dim": 16}),
        loss=config_lib.LossConfig(num_negatives=20),
        schedule=config_lib.ScheduleConfig(train_steps=30, log_every=10, seed=seed))
    result = loop.train_and_evaluate(config)
    return result["metrics"], result["valid"]["metrics"], result["training"]["total"]

  first = run("first", seed=7)
  assert run("second", seed=7) == first  # exactly: every metric and the last loss
  assert run("other", seed=8) != first


def test_select_best_tests_and_exports_the_best_valid_checkpoint(data_dir, tmp_path, monkeypatch):
  """Valid ndcg@10 scripted as 0.2, 0.9, 0.5 at steps 10, 20, 30: step 20 must win."""
  config = dataclasses.replace(
      _config(data_dir, str(tmp_path / "run"), train_steps=30),
      eval=config_lib.EvalConfig(ks=(1, 10), batch_size=32, every_steps=10,
                                 select_best="ndcg@10", max_users=64),
      # The only regular checkpoint comes at step 30: the best one (step 20) is written
      # before it, and must still restore and export.
      checkpoint=config_lib.CheckpointConfig(every_steps=30),
      export=config_lib.ExportConfig(enabled=True))
  scripted = {10: 0.2, 20: 0.9, 30: 0.5}
  evaluate = loop.TrainingRun.evaluate
  tables = {}

  selection_users = set()

  def scripted_valid(run, split, max_users=None):
    result = evaluate(run, split, max_users)
    tables[run.step] = run.model.item_table.numpy()
    if split != "valid":
      return result
    if max_users is not None:
      selection_users.add(result.num_users)
    return dataclasses.replace(result, metrics={**result.metrics, "ndcg@10": scripted[run.step]})

  monkeypatch.setattr(loop.TrainingRun, "evaluate", scripted_valid)
  result = loop.train_and_evaluate(config)
  best = json.load(open(os.path.join(config.model_dir, "checkpoints", "best", "best.json")))
  assert (best["metric"], best["value"], best["step"]) == ("ndcg@10", 0.9, 20)
  # Every candidate, the final step's included, was compared on the same 64 valid users
  # (two batches of 32), and the reported valid result covers all 96.
  assert selection_users == {64}
  assert result["valid"]["num_users"] == 96
  # The test split and the export see step 20's weights, not the final step's.
  assert result["step"] == 20 and result["valid"]["metrics"]["ndcg@10"] == 0.9
  assert not np.allclose(tables[20], tables[30])
  exported = tf.saved_model.load(result["export_dir"]).signatures["item_embeddings"]()
  np.testing.assert_allclose(exported["embeddings"].numpy(), tables[20][:40], rtol=1e-6)

  # Resumed for 10 more steps: the best checkpoint stays step 20's, and its folder, which
  # best.json indexes, gets no CheckpointManager state file.
  scripted[40] = 0.1
  longer = dataclasses.replace(
      config, schedule=dataclasses.replace(config.schedule, train_steps=40),
      checkpoint=config_lib.CheckpointConfig(every_steps=10))
  assert loop.train_and_evaluate(longer)["step"] == 20
  best_dir = os.path.join(config.model_dir, "checkpoints", "best")
  assert sorted(os.listdir(best_dir)) == [
      "best-20.data-00000-of-00001", "best-20.index", "best.json"]

  # Patience 1, 60 steps: the evaluation at step 30 (0.5) does not beat step 20's (0.9),
  # so training stops there instead of going on to 60, and tests step 20.
  scripted.update({50: 0.1, 60: 0.1})
  tables.clear()
  early = dataclasses.replace(
      config, model_dir=str(tmp_path / "early"),
      schedule=dataclasses.replace(config.schedule, train_steps=60),
      eval=dataclasses.replace(config.eval, patience=1))
  result = loop.train_and_evaluate(early)
  assert result["step"] == 20 and max(tables) == 30  # stopped at 30, tested the best (20)
  with pytest.raises(ValueError, match="patience stops on the select_best metric"):
    dataclasses.replace(config, eval=config_lib.EvalConfig(patience=3)).validate()
  with pytest.raises(ValueError, match="select_best 'ndcg@5'"):
    dataclasses.replace(config, eval=config_lib.EvalConfig(
        ks=(1, 10), every_steps=10, select_best="ndcg@5")).validate()
  with pytest.raises(ValueError, match="needs periodic evaluations"):
    dataclasses.replace(config, eval=config_lib.EvalConfig(select_best="ndcg@10")).validate()


def test_a_damaged_shard_is_named(data_dir, tmp_path):
  damaged_dir = str(tmp_path / "damaged")
  shutil.copytree(data_dir, damaged_dir)
  assert dataset_lib.corrupt_shards(damaged_dir) == []
  shard = sorted(glob.glob(os.path.join(damaged_dir, "train", "*.tfrecord")))[0]
  # A TFRecord is an 8-byte length, its 4-byte CRC, the payload (from byte 12 for the
  # first record) and the payload's CRC: damage the first payload, TF reports offset 12.
  with open(shard, "r+b") as f:
    f.seek(20)
    f.write(b"\xff" * 8)
  with pytest.raises(ValueError, match=re.escape(shard) + r" \(corrupted record at 12\)"):
    loop.train_and_evaluate(_config(damaged_dir, str(tmp_path / "run"), train_steps=5))


_MIRRORED_SCRIPT = """
import json, sys
from tests.trainer import loop_test
from trainer import loop
from trainer import steps
import tensorflow as tf

# Two logical CPUs stand in for two GPUs; must be set before TF initializes.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
config = loop_test._config(sys.argv[1], sys.argv[2], train_steps=10)
run = loop.TrainingRun(config, strategy)
sums = steps.LocalSteps(run)(5)
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "step": run.step, **sums}))
"""


def test_mirrored_strategy_scales_the_loss_to_the_global_batch(data_dir, tmp_path):
  # A fresh process: logical devices cannot be split once TF has started here.
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  output = subprocess.run(
      [sys.executable, "-c", _MIRRORED_SCRIPT, data_dir, str(tmp_path / "run")], cwd=repo,
      capture_output=True, text=True, timeout=300, check=True,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}).stdout
  result = json.loads(output.strip().splitlines()[-1])
  assert result["replicas"] == 2 and result["step"] == 5 and result["steps"] == 5
  # Each replica gets 16 of the global 32 examples; the sums over replicas add up.
  assert result["examples"] == 5 * 32
  # Summed over the 2 replicas, the scaled softmax is the global-batch mean: near
  # log(40) = 3.7 plus about half the logit variance at the start (twice or half
  # that if the scaling were wrong).
  assert 2.8 < result["softmax"] / 5 < 5.5


def test_a_resumed_run_reads_on_where_its_checkpoint_was(data_dir, tmp_path, monkeypatch):
  """Interrupted after the step-20 checkpoint and resumed, a run ends exactly as an
  uninterrupted one: the checkpoint holds the input's position. (SINE over 40 items
  trains with the full softmax and no dropout: the input order is the only thing a
  resume could change. Reseeding the input instead changes every metric.)"""
  whole = loop.train_and_evaluate(_config(data_dir, str(tmp_path / "whole"), train_steps=40))
  config = _config(data_dir, str(tmp_path / "resumed"), train_steps=40)
  save = loop.TrainingRun.save

  def save_then_die_at_20(run):
    save(run)
    if run.step == 20:
      raise KeyboardInterrupt("simulated kill after the step-20 checkpoint")

  monkeypatch.setattr(loop.TrainingRun, "save", save_then_die_at_20)
  with pytest.raises(KeyboardInterrupt):
    loop.train_and_evaluate(config)
  monkeypatch.setattr(loop.TrainingRun, "save", save)
  resumed = loop.train_and_evaluate(config)
  assert resumed["steps"] == {"first": 20, "run": 20, "applied": 20}
  assert resumed["training"]["total"] == whole["training"]["total"]
  assert resumed["metrics"] == whole["metrics"]
