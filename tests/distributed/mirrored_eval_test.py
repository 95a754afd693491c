"""Metrics after MirroredStrategy training equal those of its checkpoint in one process.

Two logical CPUs stand in for two GPUs (a fresh process: logical devices cannot be
split once TensorFlow has started). The run trains under MirroredStrategy, evaluates
the test split as the trainer does at the end, and writes its checkpoint; the same
checkpoint restored under the default strategy, on one device, must give the same
metrics (the evaluation reads one copy of the mirrored variables, which all replicas
keep equal).
"""

import json
import os
import subprocess
import sys

import pytest

from tests.trainer import tiny_data

pytestmark = pytest.mark.large

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SCRIPT = """
import json, sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from trainer import config as config_lib
from trainer import loop

config = config_lib.TrainConfig(
    model_dir=sys.argv[2],
    data=config_lib.DataConfig(data_dir=sys.argv[1], max_length=10, batch_size=32),
    model=config_lib.ModelConfig("sine", {"embedding_dim": 16, "num_interests": 2,
                                          "num_prototypes": 10}),
    schedule=config_lib.ScheduleConfig(train_steps=20, log_every=10),
    checkpoint=config_lib.CheckpointConfig(every_steps=10),
    eval=config_lib.EvalConfig(ks=(1, 10), batch_size=128),
    export=config_lib.ExportConfig(enabled=False))
mirrored = loop.train_and_evaluate(config, tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
one_device = loop.TrainingRun(config, tf.distribute.get_strategy())
print(json.dumps({"mirrored": mirrored["metrics"], "step": one_device.step,
                  "one_device": one_device.evaluate("test").metrics}))
"""


def test_mirrored_metrics_equal_the_checkpoint_evaluated_on_one_device(tmp_path):
  data_dir = tiny_data.write(str(tmp_path / "data"))
  output = subprocess.run(
      [sys.executable, "-c", _SCRIPT, data_dir, str(tmp_path / "run")], cwd=_REPO_ROOT,
      capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert output.returncode == 0, output.stderr[-3000:]
  result = json.loads(output.stdout.strip().splitlines()[-1])
  assert result["step"] == 20
  assert result["mirrored"].keys() == result["one_device"].keys()
  for name, value in result["mirrored"].items():
    assert value == pytest.approx(result["one_device"][name], rel=1e-6, abs=1e-9), name
