"""The training entry point: flags -> config, default paths, end to end, errors."""

import json
import os
import re

from absl import flags
from absl.testing import flagsaver
import pytest

from input_pipeline import prepare
from models import all_models  # noqa: F401  (registers every model)
from models import registry
from tests.trainer import tiny_data
from trainer import main

FLAGS = flags.FLAGS

# Tiny SINE settings shared by the end-to-end runs.
TINY = dict(max_length=10, batch_size=16, embedding_dim=16,
            model_param=["num_interests=2", "num_prototypes=10"])


@pytest.fixture(autouse=True)
def parsed_flags(monkeypatch):
  if not FLAGS.is_parsed():
    FLAGS.mark_as_parsed()
  monkeypatch.delenv("TF_CONFIG", raising=False)
  monkeypatch.delenv("BUILD_WORKSPACE_DIRECTORY", raising=False)
  monkeypatch.delenv("BUILD_WORKING_DIRECTORY", raising=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tiny_data.write(str(tmp_path_factory.mktemp("tiny")))


def test_flags_override_the_preset_and_unset_ones_keep_it(monkeypatch, tmp_path):
  monkeypatch.setenv("BUILD_WORKSPACE_DIRECTORY", str(tmp_path / "workspace"))
  monkeypatch.setenv("BUILD_WORKING_DIRECTORY", str(tmp_path / "here"))
  with flagsaver.flagsaver(preset="sine_paper", data_dir="data", batch_size=64, ks=["5", "10"],
                           model_param=["num_interests=2"], embedding_dim=32, mask_history="keep_targets"):
    config = main.config_from_flags()
  assert config.data.batch_size == 64  # flag
  assert config.data.max_length == 20 and config.optimizer.name == "adam"  # preset
  assert config.model.overrides == {"embedding_dim": "32", "num_interests": "2"}
  assert config.eval.ks == (5, 10) and config.eval.mask_history == "keep_targets"
  # bazel run: relative flags from where bazel was called, defaults in the workspace.
  assert config.data.data_dir == str(tmp_path / "here" / "data")
  assert config.model_dir == str(tmp_path / "workspace" / "runs" / "sine")


def test_model_defaults_to_the_presets(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  with flagsaver.flagsaver(preset="dss_paper"):
    config = main.config_from_flags()
  assert config.model.name == "dss" and config.model_dir == str(tmp_path / "runs" / "dss")
  assert config.data.data_dir == ""  # prepared by main() on first use


def test_malformed_model_param():
  with flagsaver.flagsaver(model_param=["num_interests"]):
    with pytest.raises(ValueError, match="NAME=VALUE"):
      main.config_from_flags()


def test_default_data_dir_is_prepared_once(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  calls = []

  def fake_prepare(config):
    calls.append(config.output_dir)
    tiny_data.write(config.output_dir)

  monkeypatch.setattr(prepare, "prepare_dataset", fake_prepare)
  expected = str(tmp_path / "runs" / "data" / "synthetic")
  assert main.default_data_dir() == expected
  assert main.default_data_dir() == expected
  assert calls == [expected]


def test_unknown_model_lists_the_known_ones(data_dir, tmp_path):
  with flagsaver.flagsaver(model="nope", data_dir=data_dir, model_dir=str(tmp_path)):
    with pytest.raises(ValueError, match=r"Unknown model 'nope'.*Known models: " + re.escape(", ".join(registry.names()))):
      main.main(["trainer"])
  assert not os.listdir(tmp_path)  # failed before writing anything


def test_main_trains_evaluates_and_exports(data_dir, tmp_path, capsys):
  model_dir = str(tmp_path / "run")
  with flagsaver.flagsaver(model="sine", data_dir=data_dir, model_dir=model_dir, train_steps=6,
                           log_every=3, ks=["1", "10"], **TINY):
    main.main(["trainer"])
  with open(os.path.join(model_dir, "metrics.json")) as f:
    metrics = json.load(f)
  assert metrics["model"] == "sine" and metrics["step"] == 6 and metrics["split"] == "test"
  assert metrics["protocol"] == "leave_last_one_out" and metrics["mask_history"] == "all"
  assert set(metrics["metrics"]) >= {"hr@1", "ndcg@10", "mrr@10", "recall@10", "f1@10"}
  assert metrics["num_users"] == 96 and "hr@10" in metrics["valid"]["metrics"]
  export_dir = metrics["export_dir"]
  assert os.path.dirname(export_dir) == os.path.join(model_dir, "export")
  assert os.path.exists(os.path.join(export_dir, "saved_model.pb"))
  assert os.path.exists(os.path.join(model_dir, "checkpoints", "ckpt-6.index"))
  assert os.listdir(os.path.join(model_dir, "summaries", "train"))
  printed = capsys.readouterr().out
  assert f"Export:  {export_dir}" in printed and "@10" in printed and "hr " in printed
