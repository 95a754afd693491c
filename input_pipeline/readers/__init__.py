"""Readers: raw interaction files -> one columnar `EventLog` (see `event_log`).

`read_log(dataset, path, ...)` picks the reader by data set name (`DATASETS`). The
built-in synthetic generator lives in `input_pipeline.synthetic`, not here: it needs no
input file.
"""

import functools
from typing import Callable, Dict

from input_pipeline.readers import movielens
from input_pipeline.readers import s3rec
from input_pipeline.readers import sasrec
from input_pipeline.readers import tabular
from input_pipeline.readers import trivago
from input_pipeline.readers.event_log import EventLog
from input_pipeline.readers.tabular import TableColumns


def _ignoring_columns(read: Callable[..., EventLog], **kwargs) -> Callable[[str, TableColumns], EventLog]:
  """A reader of a fixed format: the table column names do not apply."""
  return lambda path, columns: read(path, **kwargs)


# Data set name -> reader taking (path, table columns). `path` is a file or a folder.
DATASETS: Dict[str, Callable[[str, TableColumns], EventLog]] = {
    "movielens": _ignoring_columns(movielens.read),
    "movielens_100k": _ignoring_columns(movielens.read),
    "movielens_1m": _ignoring_columns(movielens.read),
    "s3rec": _ignoring_columns(s3rec.read),
    **{name: _ignoring_columns(s3rec.read, file_name=file_name)
       for name, file_name in s3rec.FILES.items()},
    "sasrec": _ignoring_columns(sasrec.read),
    "trivago": _ignoring_columns(trivago.read),
    "yoochoose": _ignoring_columns(tabular.read, columns=tabular.YOOCHOOSE, file_format="csv"),
    "csv": functools.partial(tabular.read, file_format="csv"),
    "parquet": functools.partial(tabular.read, file_format="parquet"),
}


def read_log(dataset: str, path: str, *, columns: TableColumns = TableColumns()) -> EventLog:
  """Reads `path` with the reader of `dataset`; `columns` only matter for csv/parquet."""
  if dataset not in DATASETS:
    raise ValueError(f"Unknown dataset {dataset!r}; known: synthetic, {', '.join(sorted(DATASETS))}.")
  log = DATASETS[dataset](path, columns)
  log.validate()
  return log
