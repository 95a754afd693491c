"""Bad input and bad usage: one line `error: ...`, exit status 2, no traceback, no file changed.

Every row of `USER_ERRORS` runs a real entry point, `python ARGV...` from the repository
root, in this test's environment without TF_CPP_MIN_LOG_LEVEL (so that the default set
by `common.cli` is what keeps TensorFlow's C++ start-up lines out). In ARGV, `{inputs}`
is a folder of bad inputs (`_write_inputs`), `{data}` the row's own copy of a data set
prepared earlier, which prepare would replace (`--overwrite`) if it did not fail, and
`{export}` the row's own copy of a trained model's export; a row's `damage` breaks its
copies first. Each row checks: exit status 2; stderr ends with exactly one `error:`
line holding the row's fragment; no traceback and no TensorFlow C++ log line; stderr
under `_MAX_STDERR_BYTES`; and every file of `{inputs}`, `{data}` and `{export}`
byte-for-byte as before the command (after the damage).

The subprocesses (each imports TensorFlow, a few seconds) all run once, two at a time,
in the module fixture `_results`; the tests read their row's result. To cover another
case, add a row.
"""

import concurrent.futures
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
from typing import Callable, Dict, Optional, Tuple

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from input_pipeline import synthetic
from input_pipeline.prepare import PrepareConfig, prepare_dataset
from trainer import config as config_lib

pytestmark = pytest.mark.large  # a subprocess per row

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MAX_STDERR_BYTES = 2_000
_TIMEOUT_S = 120
# TensorFlow's C++ log lines: "2026-11-29 12:19:34.565686: E external/...".
_TF_CPP_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] ", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Case:
  """One command that must fail with a user error.

  Attributes:
    name: the test id.
    argv: the interpreter's arguments; `{inputs}`, `{data}`, `{export}` and `{run}` (a
      fresh model directory) are filled in.
    message: a fragment of the `error:` line.
    damage: `damage(data, export)` breaks the row's copies before the command runs.
  """
  name: str
  argv: Tuple[str, ...]
  message: str
  damage: Optional[Callable[[str, str], None]] = None


def _prepare(*args: str) -> Tuple[str, ...]:
  return ("-m", "input_pipeline.prepare", "--output_dir={data}", "--overwrite", *args)


def _cluster(*args: str) -> Tuple[str, ...]:
  return ("-m", "cluster.local_cluster", *args)


def _train(*args: str) -> Tuple[str, ...]:
  return ("-m", "trainer.main", "--data_dir={data}", "--model_dir={run}", "--train_steps=2",
          *args)


def _index(*args: str) -> Tuple[str, ...]:
  return ("-m", "retrieval.index_main", "--export_dir={export}", "--output_dir={run}", *args)


def _write(relative: str, content: str) -> Callable[[str, str], None]:
  """A damage: overwrite `relative` (under the data set) with `content`."""
  def damage(data, export):
    del export
    with open(os.path.join(data, relative), "w") as f:
      f.write(content)
  return damage


def _truncate_variables(data, export):
  del data
  [path] = [os.path.join(export, "variables", n) for n in os.listdir(os.path.join(export, "variables"))
            if n.startswith("variables.data")]
  with open(path, "r+b") as f:
    f.truncate(100)


def _delete(*parts: str) -> Callable[[str, str], None]:
  """A damage: delete a file of the data set (`parts[0] == "data"`) or the export."""
  def damage(data, export):
    os.remove(os.path.join({"data": data, "export": export}[parts[0]], *parts[1:]))
  return damage


_CSV_COLUMNS = "['user_id', 'item_id', 'timestamp']"
_NOT_UTF8 = "got byte 0x89 at column 1, which is not UTF-8"

USER_ERRORS = [
    # Binary input to each kind of text reader: header, pyarrow + re-scan, line loop, '::'.
    Case("binary_as_csv", _prepare("--dataset=csv", "--input={inputs}/image.csv"),
         f"image.csv:1: expected UTF-8 text (a CSV file with a header line), {_NOT_UTF8}"),
    Case("binary_as_sasrec", _prepare("--dataset=sasrec", "--input={inputs}/image.txt"),
         f"image.txt:1: expected UTF-8 text ('user item'), {_NOT_UTF8}"),
    Case("binary_as_s3rec", _prepare("--dataset=amazon_beauty", "--input={inputs}/image.txt"),
         f"image.txt:1: expected UTF-8 text ('user item item ...' lines), {_NOT_UTF8}"),
    Case("binary_as_movielens", _prepare("--dataset=movielens", "--input={inputs}/image.txt"),
         f"image.txt:1: expected UTF-8 text ('UserID::MovieID::Rating::Timestamp'), {_NOT_UTF8}"),
    Case("text_named_gz", _prepare("--dataset=csv", "--input={inputs}/plain.csv.gz"),
         "plain.csv.gz: expected gzip-compressed text"),
    Case("garbage_as_parquet", _prepare("--dataset=parquet", "--input={inputs}/image.parquet"),
         "image.parquet: expected a Parquet file, got one that pyarrow cannot read (Parquet magic "
         "bytes not found"),
    Case("parquet_list_column", _prepare("--dataset=parquet", "--input={inputs}/lists.parquet"),
         "lists.parquet: column 'item_id' (--item_column) holds list<element: string> values; "
         "expected one plain value"),
    Case("parquet_null_user", _prepare("--dataset=parquet", "--input={inputs}/null_user.parquet"),
         "null_user.parquet: row 2: column 'user_id' should be a non-empty id, got an empty value"),
    Case("csv_empty_item", _prepare("--dataset=csv", "--input={inputs}/empty_item.csv"),
         "empty_item.csv: line 3: column 'item_id' should be a non-empty id, got an empty value"),
    Case("parquet_bool_time", _prepare("--dataset=parquet", "--input={inputs}/bool_time.parquet"),
         "bool_time.parquet: column 'timestamp' (--timestamp_column) holds true/false values"),
    Case("csv_bool_time", _prepare("--dataset=csv", "--input={inputs}/bool_time.csv"),
         "bool_time.csv: column 'timestamp' (--timestamp_column) holds true/false values"),
    Case("csv_unclosed_quote", _prepare("--dataset=csv", "--input={inputs}/quote.csv"),
         f"quote.csv:3: expected a row with the columns {_CSV_COLUMNS}; got a '\"' that opens a "
         f"quoted value not closed on this line"),
    Case("csv_bad_timestamp", _prepare("--dataset=csv", "--input={inputs}/noon.csv"),
         "noon.csv: line 3: column 'timestamp' should be unix seconds (a number) or a date-time, "
         "got 'noon'"),
    Case("missing_input", _prepare("--dataset=csv", "--input={inputs}/nothing.csv"),
         "nothing.csv' does not exist"),
    Case("unknown_dataset", _prepare("--dataset=netflix"), "Unknown --dataset='netflix'"),
    Case("existing_output", ("-m", "input_pipeline.prepare", "--output_dir={data}"),
         "exists and is not empty; pass --overwrite"),
    Case("prepare_bad_flag", _prepare("--num_shards=four"),
         "flag --num_shards=four: invalid literal for int()"),
    Case("prepare_extra_argument", _prepare("synthetic"), "Unexpected arguments: ['synthetic']"),
    Case("cluster_without_ps", _cluster("--num_ps=0"),
         "A parameter-server cluster needs at least one ps and one worker; got num_ps=0"),
    # The trainer: a damaged data set is named before any work, a bad setting up front.
    Case("train_truncated_stats", _train(), "stats.json is not valid JSON",
         _write("stats.json", '{"format_version": 1, "num_it')),
    Case("train_stats_missing_keys", _train(), "stats.json lacks the entries ['split', "
         "'num_items']", _write("stats.json", '{"format_version": 1}')),
    Case("train_deleted_train_shard", _train(), "lacks 1 of the shards its stats.json lists "
         "(train/part-00000-of-00001.tfrecord)", _delete("data", "train", "part-00000-of-00001.tfrecord")),
    Case("train_deleted_test_shard", _train(), "(test/part-00000-of-00001.tfrecord)",
         _delete("data", "test", "part-00000-of-00001.tfrecord")),
    Case("train_unknown_model", _train("--model=nope"), "Unknown model 'nope'"),
    Case("train_zero_steps", _train("--train_steps=0"), "train_steps 0: must be >= 1"),
    Case("train_bad_vocab", _train(), "vocab.tsv:2: expected 'index<TAB>item_id<TAB>count'",
         _write("vocab.tsv", "index\titem_id\tcount\nnot a row\n")),
    # The index job and serve: damaged exports and artifacts.
    Case("index_truncated_variables", _index(), "cannot be loaded: its files are damaged or "
         "incomplete (Read less bytes than requested)", _truncate_variables),
    Case("index_missing_variables", _index(), "cannot be loaded: its files are damaged",
         _delete("export", "variables", "variables.index")),
    Case("index_missing_export", ("-m", "retrieval.index_main", "--export_dir={inputs}/none",
                                  "--output_dir={run}"), "none' does not exist"),
    Case("serve_missing_artifact", ("-m", "retrieval.serve", "--artifact_dir={inputs}/none",
                                    "--history=a"), "No retrieval artifact at"),
]

# An internal error (a bug, injected) and a user error under --verbosity=1: tracebacks.
_WITH_A_BUG = ("import runpy; from input_pipeline import synthetic\n"
               "def generate(config): raise RuntimeError('injected bug')\n"
               "synthetic.generate = generate\n"
               "runpy.run_module('input_pipeline.prepare', run_name='__main__', alter_sys=True)")
_INTERNAL_ERROR = Case("internal_error", ("-c", _WITH_A_BUG, "--output_dir={data}", "--overwrite"),
                       "RuntimeError: injected bug")
_VERBOSE_USER_ERROR = Case(
    "verbose_user_error", _prepare("--dataset=csv", "--input={inputs}/noon.csv", "--verbosity=1"),
    "noon.csv: line 3: column 'timestamp' should be unix seconds")

# A PNG image's first bytes: 0x89 is not UTF-8.
_IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 16


def _write_inputs(folder: str) -> None:
  def text(name, content):
    with open(os.path.join(folder, name), "w") as f:
      f.write(content)

  for name in ("image.csv", "image.txt", "image.parquet"):
    with open(os.path.join(folder, name), "wb") as f:
      f.write(_IMAGE)
  header = "user_id,item_id,timestamp\n"
  text("plain.csv.gz", header + "u,1,5\n")
  text("empty_item.csv", header + "u,1,5\nu,,6\n")
  text("bool_time.csv", header + "u,1,true\nu,2,false\n")
  text("noon.csv", header + "u,1,5\nu,2,noon\n")
  # The case: a stray quote on line 3 opens a value that swallows 60,000 lines.
  text("quote.csv", header + 'u,1,5\nu,"2,6\n' + "".join(f"u,{i},{i}\n" for i in range(60_000)))
  tables = {
      "lists.parquet": {"user_id": ["a", "b"], "item_id": [["x"], ["y", "z"]], "timestamp": [1, 2]},
      "null_user.parquet": {"user_id": ["a", None], "item_id": ["x", "y"], "timestamp": [1, 2]},
      "bool_time.parquet": {"user_id": ["a", "b"], "item_id": ["x", "y"],
                            "timestamp": [True, False]},
  }
  for name, columns in tables.items():
    pq.write_table(pa.table(columns), os.path.join(folder, name))


def _digests(folder: str) -> Dict[str, str]:
  """Relative path -> SHA-256 of every file under `folder`."""
  digests = {}
  for directory, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(directory, name)
      with open(path, "rb") as f:
        digests[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
  return digests


@dataclasses.dataclass
class _Result:
  process: subprocess.CompletedProcess
  unchanged: bool


def _trained_export(data_dir: str, model_dir: str) -> str:
  """A SINE trained for 2 steps on `data_dir`; returns its export directory."""
  from trainer import loop  # pylint: disable=g-import-not-at-top  (TensorFlow: only here)

  config = config_lib.TrainConfig(
      model_dir=model_dir, data=config_lib.DataConfig(data_dir=data_dir, max_length=5),
      model=config_lib.ModelConfig("sine", {"embedding_dim": 4, "num_interests": 1,
                                            "num_prototypes": 2}),
      schedule=config_lib.ScheduleConfig(train_steps=2, log_every=1),
      eval=config_lib.EvalConfig(ks=(1,)))
  return loop.train_and_evaluate(config)["export_dir"]


@pytest.fixture(scope="module")
def _results(tmp_path_factory) -> Dict[str, _Result]:
  root = tmp_path_factory.mktemp("bad_input")
  inputs, prepared = str(root / "inputs"), str(root / "prepared")
  os.makedirs(inputs)
  _write_inputs(inputs)
  tiny = synthetic.SyntheticConfig(num_users=30, num_items=50, num_events=300, num_categories=5)
  prepare_dataset(PrepareConfig(output_dir=prepared, num_shards=1, synthetic=tiny))
  exported = _trained_export(prepared, str(root / "trained"))
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}

  def run(case: Case) -> _Result:
    data, export = str(root / case.name / "data"), str(root / case.name / "export")
    shutil.copytree(prepared, data)
    shutil.copytree(exported, export)
    if case.damage:
      case.damage(data, export)
    before = _digests(inputs), _digests(data), _digests(export)
    argv = [arg.format(inputs=inputs, data=data, export=export, run=str(root / case.name / "run"))
            for arg in case.argv]
    process = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env,
                             cwd=_REPO_ROOT, timeout=_TIMEOUT_S)
    return _Result(process, (_digests(inputs), _digests(data), _digests(export)) == before)

  cases = USER_ERRORS + [_INTERNAL_ERROR, _VERBOSE_USER_ERROR]
  with concurrent.futures.ThreadPoolExecutor(2) as pool:  # the target machine has 2 cores
    return dict(zip([c.name for c in cases], pool.map(run, cases)))


def _check_common(result: _Result) -> str:
  stderr = result.process.stderr
  assert not _TF_CPP_LOG.search(stderr), stderr
  assert result.unchanged, "an input or the earlier data set changed"
  return stderr


@pytest.mark.parametrize("case", USER_ERRORS, ids=[c.name for c in USER_ERRORS])
def test_user_error_is_one_line_and_changes_nothing(_results, case):
  result = _results[case.name]
  stderr = _check_common(result)
  assert result.process.returncode == 2, stderr
  assert "Traceback" not in stderr, stderr
  assert len(stderr.encode()) < _MAX_STDERR_BYTES, stderr
  error_lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
  assert len(error_lines) == 1 and stderr.endswith(error_lines[0] + "\n"), stderr
  assert case.message in error_lines[0], stderr


def test_internal_error_keeps_its_traceback(_results):
  result = _results[_INTERNAL_ERROR.name]
  stderr = _check_common(result)
  assert result.process.returncode == 1, stderr
  assert "Traceback (most recent call last)" in stderr and "error: " not in stderr
  assert stderr.rstrip().endswith(_INTERNAL_ERROR.message), stderr


def test_verbosity_1_shows_the_traceback_of_a_user_error(_results):
  result = _results[_VERBOSE_USER_ERROR.name]
  stderr = _check_common(result)
  assert result.process.returncode == 2, stderr
  assert "Traceback (most recent call last)" in stderr, stderr
  last = stderr.splitlines()[-1]
  assert last.startswith("error: ") and _VERBOSE_USER_ERROR.message in last, stderr
