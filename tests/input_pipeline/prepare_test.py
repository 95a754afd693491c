"""The prepare job end to end: files, re-indexing, splits without leaks, atomic output."""

import dataclasses
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from input_pipeline import prepare
from input_pipeline import schema
from input_pipeline import synthetic
from input_pipeline import writer
from input_pipeline.prepare import PrepareConfig, prepare_dataset
from input_pipeline.readers.tabular import TableColumns
from input_pipeline.splits import SplitConfig

_SMALL = synthetic.SyntheticConfig(num_users=120, num_items=300, num_events=4_000,
                                   num_categories=10)


def _prepare(path, **kwargs):
  return prepare_dataset(PrepareConfig(output_dir=str(path), synthetic=_SMALL, num_shards=2,
                                       **kwargs))


def _read_split(data_dir, split):
  """raw user id -> {feature: numpy array} for every timeline of a split."""
  timelines = {}
  for batch in tf.data.TFRecordDataset(schema.split_files(data_dir, split)).batch(256):
    parsed = schema.parse_timelines(batch)
    # Ragged rows as numpy slices (indexing ragged tensors one row at a time is slow).
    columns = {name: (tensor.values.numpy(), tensor.row_splits.numpy())
               for name, tensor in parsed.items() if isinstance(tensor, tf.RaggedTensor)}
    target_starts = parsed[schema.TARGET_START].numpy()
    for r, user in enumerate(parsed[schema.USER_ID].numpy()):
      timeline = {name: values[splits[r]:splits[r + 1]] for name, (values, splits) in columns.items()}
      timeline[schema.TARGET_START] = target_starts[r]
      timelines[user.decode()] = timeline
  return timelines


def _write_csv(path, rows, header="user_id,item_id,timestamp"):
  with open(path, "w") as f:
    f.write(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
  return str(path)


def test_synthetic_dataset_files_and_round_trip(tmp_path):
  stats = _prepare(tmp_path / "data")
  data_dir = str(tmp_path / "data")
  assert stats == schema.read_stats(data_dir)
  for key in ("format_version", "dataset", "split", "num_items", "num_users", "num_events",
              "has_timestamps", "has_feedback", "has_impressions", "num_item_features",
              "num_user_features", "splits", "avg_events_per_user"):
    assert key in stats, key
  assert (stats["num_users"], stats["num_events"]) == (120, 4_000)
  for split in schema.SPLITS:
    assert len(schema.split_files(data_dir, split)) == 2
    assert stats["splits"][split]["num_shards"] == 2
  assert sorted(os.listdir(tmp_path)) == ["data"]  # no temporary directory left behind

  # Every test timeline is the user's full synthetic timeline, in raw ids.
  log = synthetic.generate(_SMALL)
  vocab = np.array(schema.read_vocab(data_dir))
  raw_items = log.item_ids.to_numpy(zero_copy_only=False)
  raw_users = log.user_ids.to_pylist()
  test = _read_split(data_dir, "test")
  assert len(test) == 120 == stats["splits"]["test"]["num_users"]
  for code, user in enumerate(raw_users):
    rows = log.users == code
    np.testing.assert_array_equal(vocab[test[user][schema.ITEMS]], raw_items[log.items[rows]])
    np.testing.assert_array_equal(test[user][schema.TIMESTAMPS], log.timestamps[rows])
    np.testing.assert_allclose(test[user][schema.FEEDBACK], log.feedback[rows])
    assert test[user][schema.TARGET_START] == rows.sum() - 1
    assert len(test[user][schema.USER_FEATURES]) == 3  # age, gender, region
    impression_rows = log.impression_users == code
    np.testing.assert_array_equal(vocab[test[user][schema.IMPRESSIONS]],
                                  raw_items[log.impression_items[impression_rows]])


def test_items_reindexed_by_training_frequency(tmp_path):
  # Leave-last-one-out on 3 users. Training prefixes (all but the last 2 events):
  #   u1: 30 10 20 10 | 40 50   -> train 30 10 20 10
  #   u2: 20 30 30    | 60 10   -> train 20 30 30
  #   u3: 20 70       (2 events: all in train)
  # Train counts: 30 x3, 20 x3, 10 x2, 70 x1; 40, 50, 60 never trained (count 0).
  # Order: count desc, ties by numeric raw id: 20 (3), 30 (3), 10 (2), 70 (1), 40, 50, 60.
  rows = ([("u1", item, t) for t, item in enumerate([30, 10, 20, 10, 40, 50])] +
          [("u2", item, t) for t, item in enumerate([20, 30, 30, 60, 10])] +
          [("u3", 20, 0), ("u3", 70, 1)])
  path = _write_csv(tmp_path / "log.csv", rows)
  prepare_dataset(PrepareConfig(output_dir=str(tmp_path / "data"), dataset="csv", input_path=path,
                                num_shards=1))
  data_dir = str(tmp_path / "data")
  with open(os.path.join(data_dir, schema.VOCAB_FILE)) as f:
    lines = [line.split() for line in f.read().splitlines()[1:]]
  assert [(raw, int(count)) for _, raw, count in lines] == [
      ("20", 3), ("30", 3), ("10", 2), ("70", 1), ("40", 0), ("50", 0), ("60", 0)]
  index = {raw: i for i, (_, raw, _) in enumerate(lines)}
  train = _read_split(data_dir, "train")
  np.testing.assert_array_equal(train["u1"][schema.ITEMS], [index[r] for r in ("30", "10", "20", "10")])
  np.testing.assert_array_equal(train["u3"][schema.ITEMS], [index["20"], index["70"]])
  test = _read_split(data_dir, "test")
  assert sorted(test) == ["u1", "u2"]
  assert test["u2"][schema.ITEMS][test["u2"][schema.TARGET_START]:].tolist() == [index["10"]]
  stats = schema.read_stats(data_dir)
  assert (stats["num_items"], stats["num_items_in_train"], stats["has_timestamps"]) == (7, 4, True)


def _assert_no_test_event_in_train(data_dir, protocol):
  train, test = _read_split(data_dir, "train"), _read_split(data_dir, "test")
  assert test, "the test split is empty"
  for user, timeline in test.items():
    start = timeline[schema.TARGET_START]
    assert 0 < start < len(timeline[schema.ITEMS])
    if protocol == schema.HELD_OUT_USERS:
      assert user not in train
      continue
    first_target_time = timeline[schema.TIMESTAMPS][start]
    if user in train:
      seen = train[user]
      n = len(seen[schema.ITEMS])
      # Train is a prefix of the user's timeline that ends before the test targets.
      assert n <= start - (1 if protocol == schema.LEAVE_LAST_ONE_OUT else 0)
      np.testing.assert_array_equal(seen[schema.ITEMS], timeline[schema.ITEMS][:n])
      assert np.all(seen[schema.TIMESTAMPS] <= first_target_time)
      assert np.all(seen[schema.IMPRESSION_TIMESTAMPS] < first_target_time)


@pytest.mark.parametrize("protocol", schema.SPLIT_PROTOCOLS)
def test_no_test_event_leaks_into_train(tmp_path, protocol):
  stats = _prepare(tmp_path / "data", split=SplitConfig(protocol=protocol, valid_fraction=0.2,
                                                        test_fraction=0.2))
  assert stats["split"] == protocol
  _assert_no_test_event_in_train(str(tmp_path / "data"), protocol)
  valid = _read_split(str(tmp_path / "data"), "valid")
  assert stats["splits"]["valid"]["num_users"] == len(valid) > 0
  if protocol == schema.TEMPORAL:
    t1, t2 = stats["split_config"]["valid_start_time"], stats["split_config"]["test_start_time"]
    for timeline in _read_split(str(tmp_path / "data"), "train").values():
      assert timeline[schema.TIMESTAMPS].max() < t1
      assert len(timeline[schema.IMPRESSION_TIMESTAMPS]) == 0 or timeline[
          schema.IMPRESSION_TIMESTAMPS].max() < t1
    for timeline in valid.values():
      targets = timeline[schema.TIMESTAMPS][timeline[schema.TARGET_START]:]
      assert targets.min() >= t1 and targets.max() < t2


def _tree(path):
  """relative path -> bytes of every file under `path`."""
  tree = {}
  for root, _, names in os.walk(path):
    for name in names:
      full = os.path.join(root, name)
      with open(full, "rb") as f:
        tree[os.path.relpath(full, path)] = f.read()
  return tree


def test_overwrite_replaces_only_a_data_set_written_by_prepare(tmp_path):
  output = tmp_path / "data"
  _prepare(output)
  with pytest.raises(ValueError, match="not empty; pass --overwrite"):
    _prepare(output)
  (output / schema.VOCAB_FILE).write_text("stale")
  _prepare(output, overwrite=True)
  assert (output / schema.VOCAB_FILE).read_text().startswith("index\titem_id\tcount\n")
  assert sorted(os.listdir(tmp_path)) == ["data"]


def test_overwrite_never_deletes_foreign_files(tmp_path):
  output = tmp_path / "data"
  output.mkdir()
  (output / "keep.txt").write_text("mine")
  with pytest.raises(ValueError, match="not a prepared data set written by this project"):
    _prepare(output, overwrite=True)
  _prepare(tmp_path / "prepared")
  (tmp_path / "prepared" / "notes.txt").write_text("mine")
  before = _tree(tmp_path / "prepared")
  with pytest.raises(ValueError, match=r"other entries \(notes.txt\)"):
    _prepare(tmp_path / "prepared", overwrite=True)
  assert _tree(tmp_path / "prepared") == before and (output / "keep.txt").read_text() == "mine"


def test_overwrite_never_deletes_the_input_folder(tmp_path):
  folder = tmp_path / "logs"
  folder.mkdir()
  log = folder / "log.csv"
  log.write_text("user,item,timestamp\nu1,a,1\nu1,b,2\nu1,c,3\n")
  (folder / "other.txt").write_text("mine")
  # Even a folder that looks like a data set of ours is refused when it holds the input.
  (folder / schema.STATS_FILE).write_text('{"format_version": 1}')
  before = _tree(folder)
  for output in (folder, tmp_path):
    with pytest.raises(ValueError, match="holds the job's input"):
      prepare_dataset(PrepareConfig(output_dir=str(output), dataset="csv", input_path=str(log),
                                    overwrite=True))
  assert _tree(folder) == before


def test_overwrite_never_deletes_the_working_directory(tmp_path, monkeypatch):
  _prepare(tmp_path / "data")
  monkeypatch.chdir(tmp_path / "data")
  before = _tree(tmp_path)
  for output in (".", "..", str(tmp_path)):
    with pytest.raises(ValueError, match="working directory"):
      _prepare(output, overwrite=True)
  assert _tree(tmp_path) == before


def test_a_killed_prepare_leaves_nothing_after_the_next_run(tmp_path):
  # A prepare killed mid-write leaves its hidden temporary directory; the next run
  # into the same output removes it once its process is gone.
  code = ("import os, sys; from common import files\n"
          "with files.replace_directory(sys.argv[1]) as t:\n"
          "  open(os.path.join(t, 'half'), 'w').close(); os._exit(9)\n")
  result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "data")],
                          cwd=os.path.dirname(os.path.dirname(prepare.__file__)))
  assert result.returncode == 9 and len(os.listdir(tmp_path)) == 1
  _prepare(tmp_path / "data")
  assert sorted(os.listdir(tmp_path)) == ["data"]


def test_failure_leaves_no_output(tmp_path, monkeypatch):
  def fail_while_writing_shards(*args, **kwargs):
    raise RuntimeError("disk full")
  monkeypatch.setattr(writer, "_write_shard", fail_while_writing_shards)
  with pytest.raises(RuntimeError, match="disk full"):
    _prepare(tmp_path / "data")
  assert os.listdir(tmp_path) == []


def test_empty_after_filtering_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="no events left after filtering"):
    _prepare(tmp_path / "data", min_user_events=10_000)
  assert os.listdir(tmp_path) == []


def test_flags_become_the_config():
  values = flags.FlagValues()
  prepare.define_flags(values)
  values(["prepare", "--dataset=csv", "--input=log.csv", "--output_dir=out", "--split=temporal",
          "--test_start_time=100", "--num_shards=3", "--seed=7", "--num_users=50",
          "--user_column=uid", "--timestamp_column=", "--min_item_count=5"])
  config = prepare.config_from_flags(values)
  assert config == PrepareConfig(
      output_dir="out", dataset="csv", input_path="log.csv", num_shards=3, min_item_count=5,
      split=SplitConfig(protocol=schema.TEMPORAL, test_start_time=100, seed=7),
      synthetic=dataclasses.replace(synthetic.SyntheticConfig(), num_users=50, seed=7),
      columns=TableColumns(user="uid", timestamp=""))


def test_command_line(tmp_path):
  output = tmp_path / "data"
  result = subprocess.run(
      [sys.executable, "-m", "input_pipeline.prepare", f"--output_dir={output}", "--num_users=30",
       "--num_items=50", "--num_events=300", "--num_shards=1"],
      capture_output=True, text=True, timeout=120,
      cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0, result.stderr
  assert ": 30 users, " in result.stdout and " items, 300 events" in result.stdout
  assert schema.read_stats(str(output))["splits"]["test"]["num_targets"] == 30


def test_real_data_slice_amazon_beauty(tmp_path, shared_data):
  """The first 300 users of the S3-Rec Beauty file, with the leave-last-one-out split."""
  source = os.path.join(shared_data, "amazon_beauty")
  with open(os.path.join(source, "Beauty.txt")) as f:
    lines = [next(f) for _ in range(300)]
  (tmp_path / "in").mkdir()
  (tmp_path / "in" / "Beauty.txt").write_text("".join(lines))
  shutil.copy(os.path.join(source, "Beauty_item2attributes.json"), tmp_path / "in")
  stats = prepare_dataset(PrepareConfig(output_dir=str(tmp_path / "data"), dataset="amazon_beauty",
                                        input_path=str(tmp_path / "in"), num_shards=2))
  sequences = {line.split()[0]: line.split()[1:] for line in lines}
  assert stats["num_users"] == 300
  assert stats["num_events"] == sum(len(s) for s in sequences.values())
  assert not stats["has_timestamps"] and stats["num_item_features"] > 0
  vocab = schema.read_vocab(str(tmp_path / "data"))
  test = _read_split(str(tmp_path / "data"), "test")
  valid = _read_split(str(tmp_path / "data"), "valid")
  for user, items in sequences.items():  # S3-Rec: last item = test, second-to-last = valid
    assert [vocab[i] for i in test[user][schema.ITEMS]] == items
    assert vocab[test[user][schema.ITEMS][-1]] == items[-1]
    assert valid[user][schema.TARGET_START] == len(items) - 2
    assert vocab[valid[user][schema.ITEMS][-1]] == items[-2]
  _assert_no_test_event_in_train(str(tmp_path / "data"), schema.LEAVE_LAST_ONE_OUT)


class _RecordedProgress:
  """Stands in for `common.cli.progress`: records (description, total, unit, counts advanced)."""

  def __init__(self):
    self.reports = []

  def __call__(self, description, total, unit):
    self.reports.append((description, total, unit, []))
    return self

  def __enter__(self):
    return self.reports[-1][3].append  # atomic: the shard writers advance from two threads

  def __exit__(self, *exc_info):
    return None


def test_writing_shards_reports_progress_over_every_row(tmp_path, monkeypatch):
  progress = _RecordedProgress()
  monkeypatch.setattr(writer.cli, "progress", progress)  # common.cli, as the writer uses it
  stats = _prepare(tmp_path / "data")
  rows = sum(s["num_events"] + s["num_impressions"] for s in stats["splits"].values())
  ((description, total, unit, counts),) = progress.reports
  assert (description, total, unit, sum(counts)) == ("Writing shards", rows, "rows", rows)
  assert len(counts) == 3 * 2  # one batch per shard: 3 splits x 2 shards of a small data set
