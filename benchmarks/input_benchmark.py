r"""Input-pipeline throughput alone (no model): examples/second of `make_dataset`.

    python benchmarks/input_benchmark.py --data_dir=DIR           # a prepared dataset
    python benchmarks/input_benchmark.py --dataset=amazon_beauty \
        --input=../shared/data/amazon_beauty                      # prepares into a temp dir
    python benchmarks/input_benchmark.py                          # the default synthetic data

The dataset is built once (one epoch; building traces the map functions, about a
second) and each pass reads all of it through a new iterator, as the trainer's
iterator would. Reported per pass: examples (samples) per wall
second, examples per CPU second of the whole process (steadier than wall time on a
shared machine), batches, and the history fill (real items / padded history cells:
what bucketing saves). The first pass includes start-up. Results are
in docs/input.md.
"""

import os
import statistics
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

from common import names
from input_pipeline import data_spec
from input_pipeline import dataset
from input_pipeline import prepare
from input_pipeline import samples
from input_pipeline import schema
import tensorflow as tf  # pylint: disable=g-bad-import-order  (after our package: Keras 2)

_DATA_DIR = flags.DEFINE_string("data_dir", None, "A prepared dataset directory; without it, "
                                "--dataset/--input are prepared into a temporary directory.")
_DATASET = flags.DEFINE_string("dataset", prepare.SYNTHETIC,
                               "prepare --dataset, without --data_dir.")
_INPUT = flags.DEFINE_string("input", None, "prepare --input, without --data_dir.")
_SPLIT = flags.DEFINE_enum("split", "train", schema.SPLITS, "Split to read.")
# The training selectors of input_pipeline/samples.py, for a model reading the history.
TRAINING = {"all_prefixes": samples.AllPrefixes(), "next_k": samples.NextK(5),
            "last_item": samples.LastItem(), "all_positions": samples.AllPositions()}
_TRAINING = flags.DEFINE_enum("training", "all_prefixes", sorted(TRAINING),
                              "Training samples (train split; other splits give evaluation "
                              "samples).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Global batch size.")
_MAX_LENGTH = flags.DEFINE_integer("max_length", 50, "History length.")
_BUCKETING = flags.DEFINE_boolean("bucketing", True, "Bucket by history length.")
_SHUFFLE = flags.DEFINE_boolean("shuffle", None, "Shuffle (default: on for train).")
_PASSES = flags.DEFINE_integer("passes", 4, "Epochs read, each from a fresh dataset.")
_DETERMINISTIC = flags.DEFINE_boolean("deterministic", True, "Keep the element order of "
                                      "parallel maps and interleaves, as the trainer does "
                                      "(--nodeterministic: what reproducibility costs).")


def measure(ds: tf.data.Dataset):
  """Reads one epoch; returns (examples, batches, wall s, CPU s, history fill)."""
  wall, cpu = time.perf_counter(), time.process_time()
  examples = batches = real = cells = 0
  for batch in ds:
    lengths = batch[names.HISTORY_LENGTH].numpy()
    examples += len(lengths)
    batches += 1
    real += int(lengths.sum())
    cells += int(tf.size(batch[names.HISTORY]))
  return (examples, batches, time.perf_counter() - wall, time.process_time() - cpu,
          real / max(cells, 1))


def benchmark(data_dir: str) -> None:
  train = _SPLIT.value == "train"
  samples_name = _TRAINING.value if train else "evaluation"
  shuffle = train if _SHUFFLE.value is None else _SHUFFLE.value
  spec = samples.SampleSpec(features=(samples.History(_MAX_LENGTH.value),),
                            training=TRAINING[_TRAINING.value])
  config = dataset.InputConfig(
      data_dir=data_dir, split=_SPLIT.value, batch_size=_BATCH_SIZE.value, evaluation=not train,
      shuffle=shuffle, num_epochs=1, bucketing=_BUCKETING.value,
      deterministic=_DETERMINISTIC.value)
  print(f"{data_dir} split={config.split} samples={samples_name} batch={config.batch_size} "
        f"max_length={_MAX_LENGTH.value} bucketing={config.bucketing} shuffle={shuffle} "
        f"deterministic={config.deterministic} cpus={os.cpu_count()}")
  ds = dataset.make_dataset(config, spec, data_spec.read(data_dir))
  rates, cpu_rates = [], []
  for index in range(_PASSES.value):
    examples, batches, wall, cpu, fill = measure(ds)
    print(f"pass {index}: {examples} examples in {batches} batches, {wall:.2f} s wall "
          f"({examples / wall:,.0f} examples/s), {cpu:.2f} s CPU ({examples / cpu:,.0f} "
          f"examples/CPU-s), history fill {fill:.2f}", flush=True)
    if index > 0 or _PASSES.value == 1:
      rates.append(examples / wall)
      cpu_rates.append(examples / cpu)
  counted = "after the first pass" if _PASSES.value > 1 else "of the only pass"
  print(f"median {counted}: {statistics.median(rates):,.0f} examples/s, "
        f"{statistics.median(cpu_rates):,.0f} examples/CPU-s")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _DATA_DIR.value:
    benchmark(_DATA_DIR.value)
    return
  with tempfile.TemporaryDirectory() as temp:
    data_dir = os.path.join(temp, "data")
    logging.info("Preparing --dataset=%s into %s", _DATASET.value, data_dir)
    prepare.prepare_dataset(prepare.PrepareConfig(
        output_dir=data_dir, dataset=_DATASET.value, input_path=_INPUT.value))
    benchmark(data_dir)


if __name__ == "__main__":
  app.run(main)
