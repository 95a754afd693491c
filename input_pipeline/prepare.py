r"""The prepare job: raw interaction logs -> a dataset directory (layout in `schema`).

    python -m input_pipeline.prepare --output_dir=runs/data/synthetic
    python -m input_pipeline.prepare --dataset=movielens --input=path/to/ml-1m --output_dir=DIR
    python -m input_pipeline.prepare --dataset=amazon_beauty --input=../shared/data/amazon_beauty \
        --output_dir=DIR
    python -m input_pipeline.prepare --dataset=csv --input=log.csv --user_column=uid \
        --item_column=sid --timestamp_column=ts --split=temporal --output_dir=DIR

Steps: read (or generate) the log into columns, filter rare items / short users, sort
each user's events by time, plan the split (`splits`), re-index items by training
frequency and write shards, vocabulary, feature tables and stats.json (`writer`). Flags
live only here (`define_flags`); `prepare_dataset(PrepareConfig(...))` is the library
entry the trainer uses to create the default synthetic data set. Every flag is
documented in docs/data.md.
"""

import dataclasses
import time
from typing import Any, Dict, Optional

from absl import app
from absl import flags
from absl import logging

from common import cli  # before TensorFlow is imported: quiets its C++ start-up logs
from common import files
from input_pipeline import download
from input_pipeline import schema
from input_pipeline import splits
from input_pipeline import synthetic
from input_pipeline import writer
from input_pipeline.readers import DATASETS, read_log
from input_pipeline.readers.event_log import filter_log, sort_into_timelines
from input_pipeline.readers.tabular import TableColumns
from input_pipeline.splits import SplitConfig
from input_pipeline.synthetic import SyntheticConfig

SYNTHETIC = "synthetic"


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
  """Everything the prepare job needs.

  Attributes:
    output_dir: the dataset directory to create.
    dataset: "synthetic" (no input) or a reader name of `readers.DATASETS`.
    input_path: the raw file or folder (with `download`: where to download to).
    download: fetch the public data set first (`download.SOURCES`).
    overwrite: replace a data set written earlier at `output_dir` (never a folder with
      other files, the input's folder, the working or home directory: see
      `common.files.ensure_replaceable`).
    num_shards: TFRecord files per split.
    min_user_events: drop users with fewer events (after the item filter).
    min_item_count: drop items with fewer interactions (0 keeps all).
    split: the split protocol and its parameters.
    synthetic: size and shape of the synthetic log.
    columns: column names for dataset "csv" / "parquet".
  """
  output_dir: str
  dataset: str = SYNTHETIC
  input_path: Optional[str] = None
  download: bool = False
  overwrite: bool = False
  num_shards: int = 4
  min_user_events: int = 1
  min_item_count: int = 0
  split: SplitConfig = SplitConfig()
  synthetic: SyntheticConfig = SyntheticConfig()
  columns: TableColumns = TableColumns()


def _read(config: PrepareConfig):
  if config.dataset == SYNTHETIC:
    return synthetic.generate(config.synthetic)
  if config.dataset not in DATASETS:
    raise ValueError(f"Unknown --dataset={config.dataset!r}; known: "
                     f"{', '.join([SYNTHETIC] + sorted(DATASETS))}.")
  path = config.input_path
  if config.download:
    path = download.download(config.dataset, path)
  elif not path:
    raise ValueError(f"--dataset={config.dataset} needs --input=FILE_OR_DIR"
                     + (" (or --download)." if config.dataset in download.SOURCES else "."))
  return read_log(config.dataset, path, columns=config.columns)


def prepare_dataset(config: PrepareConfig) -> Dict[str, Any]:
  """Creates the dataset directory `config.output_dir`.

  Args:
    config: what to read and how to split and write it.

  Returns:
    The statistics written to stats.json (see `schema.read_stats`).

  Raises:
    ValueError: bad configuration or input (the message names the file and line);
      `config.output_dir` is then left as it was.
  """
  if config.num_shards < 1:
    raise ValueError(f"num_shards must be at least 1, got {config.num_shards}.")
  config.split.validate()
  # The output must never be (or hold) what is read, the download folder included.
  inputs = [config.input_path or (download.default_directory(config.dataset)
                                  if config.download else None)]
  files.ensure_replaceable(config.output_dir, schema.DATASET_OWNERSHIP,
                           overwrite=config.overwrite, inputs=inputs)
  started = time.time()
  log = _read(config)
  read_seconds = time.time() - started
  log = filter_log(log, min_item_count=config.min_item_count,
                   min_user_events=config.min_user_events)
  offsets, impression_offsets = sort_into_timelines(log)
  plan = splits.make_split(config.split, offsets=offsets, timestamps=log.timestamps,
                           impression_offsets=impression_offsets,
                           impression_timestamps=log.impression_timestamps,
                           has_timestamps=log.has_timestamps)
  num_events = log.num_events
  with files.replace_directory(config.output_dir, schema.DATASET_OWNERSHIP,
                              overwrite=config.overwrite, inputs=inputs) as directory:
    stats = writer.write_dataset(
        directory, log, offsets=offsets, impression_offsets=impression_offsets, plan=plan,
        num_shards=config.num_shards,
        stats={"dataset": config.dataset, "source": log.source,
               "filters": {"min_user_events": config.min_user_events,
                           "min_item_count": config.min_item_count}})
  seconds = time.time() - started
  logging.info("Prepared %s: %d events in %.1f s (reading %.1f s), %.0f events/s.",
               config.output_dir, num_events, seconds, read_seconds, num_events / max(seconds, 1e-9))
  return stats


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the prepare flags (called by `run`, so importing this module defines none)."""
  f = flag_values
  flags.DEFINE_string("dataset", SYNTHETIC, f"What to read: {SYNTHETIC} (generated, no input) or "
                      f"one of {sorted(DATASETS)}.", flag_values=f)
  flags.DEFINE_string("input", None, "Raw file or folder to read (with --download: where to "
                      "download to; default ~/.cache/deep_candidate_generation/DATASET).",
                      flag_values=f)
  flags.DEFINE_string("output_dir", None, "Dataset directory to create.", flag_values=f)
  flags.DEFINE_boolean("overwrite", False, "Replace a data set that prepare wrote earlier at "
                       "--output_dir (never a folder holding other files or the input).",
                       flag_values=f)
  flags.DEFINE_boolean("download", False, f"Download the public data set first "
                       f"({sorted(download.SOURCES)}).", flag_values=f)
  flags.DEFINE_enum("split", schema.LEAVE_LAST_ONE_OUT, schema.SPLIT_PROTOCOLS,
                    "Split protocol (see input_pipeline/splits.py).", flag_values=f)
  flags.DEFINE_integer("valid_start_time", None, "temporal: start of the validation period "
                       "(unix seconds); default from --valid_fraction.", flag_values=f)
  flags.DEFINE_integer("test_start_time", None, "temporal: start of the test period (unix "
                       "seconds); default from --test_fraction.", flag_values=f)
  flags.DEFINE_float("valid_fraction", 0.1, "temporal: share of events in the validation period; "
                     "held_out_users: share of users used for validation.", flag_values=f)
  flags.DEFINE_float("test_fraction", 0.1, "temporal: share of events in the test period; "
                     "held_out_users: share of users used for testing.", flag_values=f)
  flags.DEFINE_float("input_fraction", 0.8, "held_out_users: share of an evaluation user's "
                     "events used as input (the rest are targets).", flag_values=f)
  flags.DEFINE_integer("seed", 0, "Seed of the synthetic log and of the held-out user choice.",
                       flag_values=f)
  flags.DEFINE_integer("num_shards", 4, "TFRecord shards per split.", flag_values=f)
  flags.DEFINE_integer("min_user_events", 1, "Drop users with fewer events.", flag_values=f)
  flags.DEFINE_integer("min_item_count", 0, "Drop items with fewer interactions.", flag_values=f)
  defaults = SyntheticConfig()
  flags.DEFINE_integer("num_users", defaults.num_users, "synthetic: users.", flag_values=f)
  flags.DEFINE_integer("num_items", defaults.num_items, "synthetic: items.", flag_values=f)
  flags.DEFINE_integer("num_events", defaults.num_events, "synthetic: clicks.", flag_values=f)
  flags.DEFINE_integer("num_categories", defaults.num_categories, "synthetic: item categories.",
                       flag_values=f)
  flags.DEFINE_integer("impressions_per_event", defaults.impressions_per_event,
                       "synthetic: shown-but-unclicked items per click.", flag_values=f)
  columns = TableColumns()
  for name, help_text in (("user", "user id"), ("item", "item id"),
                          ("timestamp", "unix seconds or date-time ('' = order only)"),
                          ("rating", "feedback value (optional)"),
                          ("category", "item categories (optional)"),
                          ("label", "click label, 0 = shown but not clicked (optional)")):
    flags.DEFINE_string(f"{name}_column", getattr(columns, name),
                        f"csv/parquet: column of the {help_text}.", flag_values=f)
  flags.DEFINE_string("category_separator", columns.category_separator,
                      "csv/parquet: separator of several categories in one cell.", flag_values=f)
  flags.DEFINE_string("csv_delimiter", columns.delimiter, "csv: field delimiter.", flag_values=f)
  flags.mark_flag_as_required("output_dir", flag_values=f)


def config_from_flags(f: flags.FlagValues = flags.FLAGS) -> PrepareConfig:
  """The one place that turns flags into a `PrepareConfig`."""
  return PrepareConfig(
      output_dir=f.output_dir, dataset=f.dataset, input_path=f.input, download=f.download,
      overwrite=f.overwrite, num_shards=f.num_shards, min_user_events=f.min_user_events,
      min_item_count=f.min_item_count,
      split=SplitConfig(protocol=f.split, valid_start_time=f.valid_start_time,
                        test_start_time=f.test_start_time, valid_fraction=f.valid_fraction,
                        test_fraction=f.test_fraction, input_fraction=f.input_fraction,
                        seed=f.seed),
      synthetic=SyntheticConfig(num_users=f.num_users, num_items=f.num_items,
                                num_events=f.num_events, seed=f.seed,
                                num_categories=f.num_categories,
                                impressions_per_event=f.impressions_per_event),
      columns=TableColumns(user=f.user_column, item=f.item_column, timestamp=f.timestamp_column,
                           rating=f.rating_column, category=f.category_column,
                           label=f.label_column, category_separator=f.category_separator,
                           delimiter=f.csv_delimiter))


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  stats = prepare_dataset(config_from_flags())
  splits_summary = ", ".join(f"{s}: {v['num_users']} users / {v['num_targets']} targets"
                             for s, v in stats["splits"].items())
  print(f"Wrote {flags.FLAGS.output_dir}: {stats['num_users']} users, {stats['num_items']} items, "
        f"{stats['num_events']} events ({splits_summary}).")


def run() -> None:
  """Console script `dcg-prepare`; a mistake in the input or flags ends it with one line
  `error: ...` and exit status 2 (`common.cli`)."""
  define_flags()
  cli.run(main)


if __name__ == "__main__":
  run()
