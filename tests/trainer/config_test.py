"""The config tree: presets, validation and model-parameter overrides."""

import dataclasses
import re

import pytest

from models import sine
from models import all_models  # noqa: F401  (registers every model)
from models import registry
from trainer import config as config_lib


def test_model_overrides_are_parsed_as_the_field_types():
  model = config_lib.ModelConfig("sine", {"embedding_dim": "64", "temperature": "0.25",
                                          "num_interests": 2})
  config = config_lib.build_model_config(model, max_length=30)
  assert config == sine.SINEConfig(embedding_dim=64, temperature=0.25, num_interests=2,
                                   max_length=30)


def test_model_max_length_follows_the_data():
  config = config_lib.build_model_config(config_lib.ModelConfig("sine"), max_length=7)
  assert config.max_length == 7
  with pytest.raises(ValueError, match="contradicts the data's max_length=7"):
    config_lib.build_model_config(config_lib.ModelConfig("sine", {"max_length": "9"}),
                                  max_length=7)


def test_unknown_model_and_parameter_errors_list_the_known_ones():
  with pytest.raises(ValueError, match=r"Unknown model 'nope'.*Known models: " + re.escape(", ".join(registry.names()))):
    config_lib.build_model_config(config_lib.ModelConfig("nope"), max_length=20)
  with pytest.raises(ValueError, match=r"no parameter\(s\) \['dim'\].*'embedding_dim'"):
    config_lib.build_model_config(config_lib.ModelConfig("sine", {"dim": "8"}), max_length=20)
  with pytest.raises(ValueError, match="embedding_dim='eight'"):
    config_lib.build_model_config(config_lib.ModelConfig("sine", {"embedding_dim": "eight"}),
                                  max_length=20)


def test_presets_hold_the_papers_settings():
  default = config_lib.preset("default")
  assert (default.optimizer.name, default.optimizer.learning_rate, default.optimizer.clip_norm,
          default.data.batch_size, default.loss.num_negatives) == ("adagrad", 0.1, 5.0, 256, 20_000)
  paper = config_lib.preset("sine_paper")
  assert (paper.optimizer.name, paper.optimizer.learning_rate, paper.data.batch_size,
          paper.data.max_length, paper.model.overrides["embedding_dim"]) == ("adam", 1e-3, 128, 20, 128)
  for name in config_lib.PRESETS:
    filled = dataclasses.replace(config_lib.preset(name), model_dir="m",
                                 data=dataclasses.replace(config_lib.preset(name).data, data_dir="d"))
    assert filled.validate() is filled
  with pytest.raises(ValueError, match="known presets: .*sine_paper"):
    config_lib.preset("sine")


def test_validate_reports_every_problem():
  config = config_lib.TrainConfig(
      optimizer=config_lib.OptimizerConfig(name="sgd"),
      data=config_lib.DataConfig(batch_size=0))
  with pytest.raises(ValueError) as error:
    config.validate()
  message = str(error.value)
  for problem in ("optimizer 'sgd'", "batch_size 0", "data_dir is empty", "model_dir is empty"):
    assert problem in message
