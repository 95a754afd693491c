r"""Prepare benchmark: peak memory and throughput of the prepare job on a synthetic log.

    .venv/bin/python benchmarks/prepare_benchmark.py                  # 10 million events
    .venv/bin/python benchmarks/prepare_benchmark.py --num_events=1000000 --num_users=20000

Generates the synthetic log (default shape: 200,000 users, 100,000 items, 2 impressions
per click), splits it leave-last-one-out and writes all three splits. Prints the wall
and CPU time and events per second over the whole job (generation included,
TensorFlow's import excluded: it is done first and reported apart), the same without
the synthetic generation (timed separately beforehand; it stands in for reading a file),
the bytes written, the peak resident memory of the process (`resource.getrusage`,
including TensorFlow's own ~0.5 GB) and the load average: on a shared machine the wall
time mostly measures the other processes, and events per CPU-second is closer to what
an idle machine does. Targets (issue 2): under 4 GB peak RSS and over 1 million events/s
on a 2-core machine. Measured figures are recorded in docs/data.md.
"""

import os
import resource
import shutil
import tempfile
import time

from absl import app
from absl import flags

import input_pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from input_pipeline import prepare
from input_pipeline import synthetic

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_events", 10_000_000, "Clicks in the synthetic log.")
flags.DEFINE_integer("num_users", 200_000, "Users.")
flags.DEFINE_integer("num_items", 100_000, "Items.")
flags.DEFINE_integer("num_shards", 8, "Shards per split.")
flags.DEFINE_string("output_dir", None, "Where to write (default: a temporary directory, removed).")


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _directory_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def main(argv):
  del argv
  load_before = os.getloadavg()[0]
  started = time.time()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top,unused-import
  import_seconds = time.time() - started
  scratch = tempfile.mkdtemp(prefix="prepare_benchmark.")
  output = FLAGS.output_dir or os.path.join(scratch, "data")
  config = prepare.PrepareConfig(
      output_dir=output, overwrite=True, num_shards=FLAGS.num_shards,
      synthetic=synthetic.SyntheticConfig(num_users=FLAGS.num_users, num_items=FLAGS.num_items,
                                          num_events=FLAGS.num_events))
  # Generation alone, to tell the synthetic stand-in for reading apart from prepare's work.
  started, cpu_started = time.time(), _cpu_seconds()
  synthetic.generate(config.synthetic)  # the log is dropped at once
  generate_seconds, generate_cpu = time.time() - started, _cpu_seconds() - cpu_started
  try:
    started, cpu_started = time.time(), _cpu_seconds()
    stats = prepare.prepare_dataset(config)
    seconds, cpu_seconds = time.time() - started, _cpu_seconds() - cpu_started
    written = _directory_bytes(output)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  events = stats["num_events"]
  print(f"events:               {events:,} (+ {stats['num_impressions']:,} impressions), "
        f"{stats['num_users']:,} users, {stats['num_items']:,} items")
  print(f"tensorflow import:    {import_seconds:.1f} s (not counted below)")
  print(f"prepare (generate + split + write): {seconds:.1f} s wall, {cpu_seconds:.1f} s CPU "
        f"(load average before: {load_before:.1f}, after: {os.getloadavg()[0]:.1f})")
  print(f"throughput:           {events / seconds:,.0f} events/s wall, "
        f"{events / cpu_seconds:,.0f} events per CPU-second")
  print(f"of which generation:  {generate_seconds:.1f} s wall, {generate_cpu:.1f} s CPU (measured "
        f"separately); without it {events / (seconds - generate_seconds):,.0f} events/s wall, "
        f"{events / (cpu_seconds - generate_cpu):,.0f} events per CPU-second")
  print(f"written:              {written / 1e6:,.0f} MB in {3 * FLAGS.num_shards} shards")
  print(f"peak RSS:             {_peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
  app.run(main)
