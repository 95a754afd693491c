"""The side-car evaluator scores each checkpoint as the chief writes it, and only reads."""

import dataclasses
import os
import threading

import pytest

from tests.trainer import tiny_data
from trainer import config as config_lib
from trainer import evaluation
from trainer import loop
from trainer import sidecar


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tiny_data.write(str(tmp_path_factory.mktemp("tiny")))


def _chief_config(data_dir, model_dir) -> config_lib.TrainConfig:
  """30 steps of a tiny SINE, a checkpoint every 10."""
  return config_lib.TrainConfig(
      model_dir=str(model_dir),
      data=config_lib.DataConfig(data_dir=data_dir, max_length=10, batch_size=32),
      model=config_lib.ModelConfig("sine", {"embedding_dim": 16, "num_interests": 2,
                                            "num_prototypes": 10}),
      schedule=config_lib.ScheduleConfig(train_steps=30, log_every=10),
      checkpoint=config_lib.CheckpointConfig(every_steps=10),
      eval=config_lib.EvalConfig(ks=(1, 10), batch_size=128),
      export=config_lib.ExportConfig(enabled=False))


def _train_first_10_steps(config: config_lib.TrainConfig) -> None:
  loop.train_and_evaluate(dataclasses.replace(
      config, schedule=dataclasses.replace(config.schedule, train_steps=10)))


def test_the_evaluator_follows_the_chiefs_checkpoints_to_the_last(data_dir, tmp_path):
  config = _chief_config(data_dir, tmp_path / "run")
  _train_first_10_steps(config)
  results = []
  evaluator = threading.Thread(target=lambda: results.extend(
      sidecar.evaluate_checkpoints(config, poll_s=0.2)))
  evaluator.start()
  final = loop.train_and_evaluate(config)  # the chief goes on from step 10 to 30
  evaluator.join(timeout=120)
  assert not evaluator.is_alive()
  steps = [r["step"] for r in results]
  # It saw step 10 at once and ends with the chief's last checkpoint; in between it
  # evaluates what was newest when it looked (20, when it was quick enough).
  assert steps[0] == 10 and steps[-1] == 30 and steps == sorted(set(steps)), steps
  # Step 30 scored on the valid split as the chief's own final valid evaluation.
  assert results[-1]["metrics"] == pytest.approx(final["valid"]["metrics"], rel=1e-6)
  assert os.listdir(tmp_path / "run" / "summaries" / "evaluator")


def test_a_chief_finishing_during_an_evaluation_still_gets_its_last_checkpoint_scored(
    data_dir, tmp_path, monkeypatch):
  """The chief writes steps 20 and 30 and its metrics.json while the evaluator scores
  step 10 (a slow evaluator on a loaded machine): the evaluator must not take the
  finished chief for 'nothing more to evaluate'."""
  config = _chief_config(data_dir, tmp_path / "run")
  _train_first_10_steps(config)
  model_evaluator = evaluation.model_evaluator

  def evaluator_outpaced_by_the_chief(*args, **kwargs):
    evaluate = model_evaluator(*args, **kwargs)

    def evaluate_after_the_chief_finished(dataset, users):
      if not os.path.exists(tmp_path / "run" / "checkpoints" / "ckpt-30.index"):
        loop.train_and_evaluate(config)
      return evaluate(dataset, users)
    return evaluate_after_the_chief_finished

  monkeypatch.setattr(evaluation, "model_evaluator", evaluator_outpaced_by_the_chief)
  steps = [r["step"] for r in sidecar.evaluate_checkpoints(config, poll_s=0.2)]
  assert steps == [10, 30], steps
