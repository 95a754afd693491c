"""Every reader on small files in the real formats, including malformed input."""

import contextlib
import gzip
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from input_pipeline.readers import read_log
from input_pipeline.readers import tabular
from input_pipeline.readers.tabular import TableColumns


def _write(directory, name, text, encoding="utf-8"):
  path = os.path.join(directory, name)
  opener = gzip.open if name.endswith(".gz") else open
  with opener(path, "wt", encoding=encoding) as f:
    f.write(text)
  return path


def _features(table, row):
  return [table.names[v] for v in table.values[table.offsets[row]:table.offsets[row + 1]]]


def _by_user(log):
  """raw user id -> list of (raw item id, timestamp) in log order."""
  users, items = log.user_ids.to_pylist(), log.item_ids.to_pylist()
  out = {}
  for u, i, t in zip(log.users, log.items, log.timestamps):
    out.setdefault(users[u], []).append((items[i], int(t)))
  return out


# ---------------------------------------------------------------- MovieLens


def test_movielens_1m(tmp_path):
  _write(tmp_path, "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
  _write(tmp_path, "movies.dat", "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
         "661::Caf\u00e9 (1996)::Animation|Children's|Musical\n", encoding="latin-1")
  _write(tmp_path, "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
  log = read_log("movielens", str(tmp_path))
  assert _by_user(log) == {"1": [("1193", 978300760), ("661", 978302109)],
                           "2": [("1193", 978298413)]}
  np.testing.assert_array_equal(log.feedback, [5.0, 3.0, 4.0])
  assert log.has_timestamps
  items = log.item_ids.to_pylist()
  assert _features(log.item_features, items.index("661")) == [
      "genre=Animation", "genre=Children's", "genre=Musical"]
  assert _features(log.user_features, 0) == ["gender=F", "age=1", "occupation=10"]


def test_movielens_100k_with_age_groups(tmp_path):
  _write(tmp_path, "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t1\t881250950\n")
  flags_242, flags_302 = ["0"] * 19, ["0"] * 19
  flags_242[5] = "1"  # Comedy
  flags_302[16], flags_302[13] = "1", "1"  # Thriller, Mystery
  _write(tmp_path, "u.item", f"242|Kolya (1996)|24-Jan-1997||http://x|{'|'.join(flags_242)}\n"
         f"302|L.A. Confidential (1997)|01-Jan-1997||http://y|{'|'.join(flags_302)}\n",
         encoding="latin-1")
  _write(tmp_path, "u.user", "196|49|M|writer|55105\n186|17|F|student|00000\n")
  log = read_log("movielens", str(tmp_path))
  assert _by_user(log)["196"] == [("242", 881250949), ("302", 881250950)]
  assert _features(log.item_features, log.item_ids.to_pylist().index("302")) == [
      "genre=Mystery", "genre=Thriller"]
  # ML-1M age groups: 49 -> 45 (45-49), 17 -> 1 (under 18).
  assert _features(log.user_features, 0) == ["gender=M", "age=45", "occupation=writer"]
  assert _features(log.user_features, 1) == ["gender=F", "age=1", "occupation=student"]


@pytest.mark.parametrize("text, message", [
    ("1::2::5::978300760\n1::3::5\n", r"ratings.dat:2: expected 'UserID::MovieID::Rating::Timestamp' "
                                      r"\(4 fields\), got 3 fields"),
    ("1::2::5::978300760\n1::3::5::yesterday\n", r"ratings.dat:2: .*field 4 should be an integer, "
                                                 r"got 'yesterday'"),
])
def test_movielens_bad_ratings(tmp_path, text, message):
  _write(tmp_path, "ratings.dat", text)
  with pytest.raises(ValueError, match=message):
    read_log("movielens", str(tmp_path))


def test_movielens_missing_ratings(tmp_path):
  _write(tmp_path, "movies.dat", "1::Toy Story (1995)::Animation\n")
  with pytest.raises(FileNotFoundError, match=r"none of \['ratings.dat', 'u.data'\]"):
    read_log("movielens", str(tmp_path))


def test_movielens_bad_user_file_line(tmp_path):
  _write(tmp_path, "ratings.dat", "1::2::5::978300760\n")
  _write(tmp_path, "users.dat", "1::F::1::10::48067\n2::M\n")
  with pytest.raises(ValueError, match=r"users.dat:2: expected 'UserID::Gender::Age"):
    read_log("movielens", str(tmp_path))


# ---------------------------------------------------------------- SASRec / S3-Rec


def test_sasrec_pairs_become_order_only_timelines(tmp_path):
  path = _write(tmp_path, "ml.txt", "1 10\n1 11\n2 10\n1 12\n")
  log = read_log("sasrec", path)
  assert not log.has_timestamps
  assert _by_user(log) == {"1": [("10", 0), ("11", 1), ("12", 2)], "2": [("10", 0)]}


def test_sasrec_malformed_line(tmp_path):
  path = _write(tmp_path, "ml.txt", "1 10\n1\n")
  with pytest.raises(ValueError, match=r"ml.txt:2: expected 'user item' \(2 fields\)"):
    read_log("sasrec", path)


def test_s3rec_sequences_and_attributes(tmp_path):
  _write(tmp_path, "Beauty.txt", "1 5 6 7\n2 6 8\n")
  _write(tmp_path, "Beauty_item2attributes.json", json.dumps({"5": [1, 2], "6": [2], "8": []}))
  log = read_log("amazon_beauty", str(tmp_path))
  assert not log.has_timestamps
  assert _by_user(log) == {"1": [("5", 0), ("6", 1), ("7", 2)], "2": [("6", 0), ("8", 1)]}
  items = log.item_ids.to_pylist()
  assert _features(log.item_features, items.index("5")) == ["attribute=1", "attribute=2"]
  assert _features(log.item_features, items.index("7")) == []  # not in the JSON


@pytest.mark.parametrize("text, message", [
    ("1 5 6\n2\n", r"Beauty.txt:2: expected 'user item item ...'"),
    ("1 5 6\n1 7\n", r"Beauty.txt:2: user '1' already has a line \(1\)"),
    ("", r"no sequences"),
])
def test_s3rec_bad_lines(tmp_path, text, message):
  _write(tmp_path, "Beauty.txt", text)
  with pytest.raises(ValueError, match=message):
    read_log("amazon_beauty", str(tmp_path))


def test_s3rec_bad_attributes(tmp_path):
  _write(tmp_path, "Beauty.txt", "1 5 6\n")
  _write(tmp_path, "Beauty_item2attributes.json", '{"5": 3}')
  with pytest.raises(ValueError, match=r"item '5' maps to 3; expected a list"):
    read_log("amazon_beauty", str(tmp_path))


# ---------------------------------------------------------------- trivago

_TRIVAGO_HEADER = ("user_id,session_id,timestamp,step,action_type,reference,platform,city,device,"
                   "current_filters,impressions,prices\n")


def test_trivago_clickouts_and_impressions(tmp_path):
  path = _write(tmp_path, "log.csv.gz", _TRIVAGO_HEADER +
                'U1,s1,100,1,interaction item image,7,FR,"Paris, France",mobile,,,\n'
                'U1,s1,110,2,clickout item,7,FR,"Paris, France",mobile,,5|7|9,10|20|30\n'
                'U2,s2,120,1,clickout item,9,DE,Berlin,desktop,,9|4,1|2\n')
  log = read_log("trivago", path)
  assert _by_user(log) == {"U1": [("7", 110)], "U2": [("9", 120)]}
  users, items = log.user_ids.to_pylist(), log.item_ids.to_pylist()
  impressions = sorted(zip([users[u] for u in log.impression_users],
                           [items[i] for i in log.impression_items],
                           log.impression_timestamps.tolist()))
  # Shown minus clicked: U1 saw 5 and 9 besides 7; U2 saw 4 besides 9.
  assert impressions == [("U1", "5", 110), ("U1", "9", 110), ("U2", "4", 120)]
  assert _features(log.user_features, users.index("U2")) == ["platform=DE", "device=desktop"]


def test_trivago_bad_timestamp_and_missing_column(tmp_path):
  path = _write(tmp_path, "log.csv", _TRIVAGO_HEADER +
                "U1,s1,100,1,clickout item,7,FR,Paris,mobile,,7,1\n"
                "U1,s1,soon,2,clickout item,7,FR,Paris,mobile,,7,1\n")
  with pytest.raises(ValueError, match=r"log.csv:3: .*field 3 should be an integer, got 'soon'"):
    read_log("trivago", path)
  path = _write(tmp_path, "log.csv", "user_id,timestamp,reference\nU1,1,7\n")
  with pytest.raises(ValueError, match=r"no column 'action_type' \(required by the trivago format\)"):
    read_log("trivago", path)


# ---------------------------------------------------------------- CSV / Parquet / yoochoose


def test_csv_with_all_optional_columns(tmp_path):
  path = _write(tmp_path, "log.csv", "uid,iid,ts,stars,cats,click\n"
                "a,x,10.7,4,c1|c2,1\n"
                "a,y,12,2,c2,0\n"
                "b,x,11,5,c3,1\n")
  columns = TableColumns(user="uid", item="iid", timestamp="ts", rating="stars", category="cats",
                         label="click")
  log = read_log("csv", path, columns=columns)
  assert _by_user(log) == {"a": [("x", 10)], "b": [("x", 11)]}  # 10.7 s -> 10
  np.testing.assert_array_equal(log.feedback, [4.0, 5.0])
  assert [log.item_ids.to_pylist()[i] for i in log.impression_items] == ["y"]
  np.testing.assert_array_equal(log.impression_timestamps, [12])
  # An item's first row gives its categories.
  assert _features(log.item_features, 0) == ["category=c1", "category=c2"]


def test_csv_order_only(tmp_path):
  path = _write(tmp_path, "log.csv", "user_id,item_id\nu,1\nv,2\nu,3\n")
  log = read_log("csv", path, columns=TableColumns(timestamp=""))
  assert not log.has_timestamps
  assert _by_user(log) == {"u": [("1", 0), ("3", 1)], "v": [("2", 0)]}


@pytest.mark.parametrize("text, columns, message", [
    ("user_id,item\nu,1\n", TableColumns(), r"no column 'item_id' \(required by --item_column\)"),
    ("user_id,item_id,timestamp\nu,1,5\nu,2,noon\n", TableColumns(),
     r"log.csv: line 3: column 'timestamp' should be unix seconds .*got 'noon'"),
    ("user_id,item_id,timestamp\nu,1,5\nu,2,\n", TableColumns(),
     r"log.csv: line 3: column 'timestamp' should be unix seconds .*got an empty value"),
    ("user_id,item_id,timestamp\n", TableColumns(), r"the table has no rows"),
])
def test_csv_bad_input(tmp_path, text, columns, message):
  path = _write(tmp_path, "log.csv", text)
  with pytest.raises(ValueError, match=message):
    read_log("csv", path, columns=columns)


def test_parquet_with_datetime_column(tmp_path):
  path = os.path.join(tmp_path, "log.parquet")
  pq.write_table(pa.table({
      "user_id": pa.array([1, 1, 2]), "item_id": pa.array(["p", "q", "p"]),
      "timestamp": pa.array([1_000_000_000_000, 1_000_000_005_000, 999_000_000_000],
                            pa.timestamp("ms"))}), path)
  log = read_log("parquet", path)
  assert _by_user(log) == {"1": [("p", 1_000_000_000), ("q", 1_000_000_005)],
                           "2": [("p", 999_000_000)]}


def test_yoochoose_float_seconds(tmp_path):
  path = _write(tmp_path, "yoochoose_valid.txt",
                "uid,timestamp,sid\n11,1411990498.509,2147\n11,1411992101.292,2145\n")
  log = read_log("yoochoose", path)
  assert _by_user(log) == {"11": [("2147", 1411990498), ("2145", 1411992101)]}


# ---------------------------------------------------------------- bad input

# A PNG image's first bytes: 0x89 is not UTF-8 (a binary file given as text).
_BINARY = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
_COLUMNS = "user_id,item_id,timestamp\n"


def _write_bytes(directory, name, data):
  path = os.path.join(directory, name)
  with open(path, "wb") as f:
    f.write(data)
  return path


def _parquet(directory, name, **columns):
  path = os.path.join(directory, name)
  pq.write_table(pa.table(columns), path)
  return path


@pytest.mark.parametrize("dataset, name, expected", [
    ("csv", "log.csv", "a CSV file with a header line"),
    ("sasrec", "ml.txt", "'user item'"),
    ("amazon_beauty", "Beauty.txt", "'user item item ...' lines"),
    ("movielens", "ratings.dat", "'UserID::MovieID::Rating::Timestamp'"),
])
def test_binary_file_as_text_names_the_file_line_and_column(tmp_path, dataset, name, expected):
  path = _write_bytes(tmp_path, name, _BINARY)
  with pytest.raises(ValueError) as error:
    read_log(dataset, path)
  assert str(error.value).startswith(
      f"{path}:1: expected UTF-8 text ({expected}), got byte 0x89 at column 1, which is not UTF-8")
  assert len(str(error.value)) < 400


def test_binary_line_after_text_lines(tmp_path):
  path = _write_bytes(tmp_path, "ml.txt", b"1 10\n1 11\n2 \xff\xfe\n")
  with pytest.raises(ValueError, match=r"ml.txt:3: expected UTF-8 text .*got byte 0xff at column 3"):
    read_log("sasrec", path)


def test_gz_name_without_gzip_data(tmp_path):
  path = _write(tmp_path, "log.csv", _COLUMNS + "u,1,5\n")
  os.rename(path, path + ".gz")
  with pytest.raises(ValueError, match=r"log.csv.gz: expected gzip-compressed text .*Not a gzipped "
                                       r"file.*Pass the uncompressed file"):
    read_log("csv", path + ".gz")


@pytest.mark.parametrize("rows, line", [
    # A stray quote swallows the rest of the file: 60,000 lines, over csv's field limit.
    ('u,1,5\nu,"2,6\n' + "".join(f"u,{i},{i}\n" for i in range(60_000)), 3),
    ('u,1,5\nu,"2,6\n' + "".join(f"u,{i},{i}\n" for i in range(50)), 3),  # to the end
    ("".join(f"u,{i},{i}\n" for i in range(50)) + 'u,"2,6\n', 52),  # on the last line
])
def test_unclosed_quote_is_reported_where_it_opens_in_a_short_message(tmp_path, rows, line):
  path = _write(tmp_path, "log.csv", _COLUMNS + rows)
  with pytest.raises(ValueError) as error:
    read_log("csv", path)
  assert str(error.value) == (
      f"{path}:{line}: expected a row with the columns ['user_id', 'item_id', 'timestamp']; got a "
      f"'\"' that opens a quoted value not closed on this line. Close the quote, or remove the "
      f"stray '\"'.")


def test_a_long_malformed_line_is_quoted_as_an_excerpt(tmp_path):
  path = _write(tmp_path, "ml.txt", "1 10\n" + "x" * 100_000 + "\n")
  # The excerpt's length is that of the quoted list: ['xx...x'] has 100,000 + 4 characters.
  with pytest.raises(ValueError, match=r"ml.txt:2: expected 'user item' \(2 fields\), got 1 fields: "
                                       r"\['xxx.*\.\.\. \(100,004 characters\)\.$") as error:
    read_log("sasrec", path)
  assert len(str(error.value)) < 250


def test_garbage_as_parquet(tmp_path):
  path = _write_bytes(tmp_path, "log.parquet", _BINARY)
  with pytest.raises(ValueError, match=r"log.parquet: expected a Parquet file, got one that pyarrow "
                                       r"cannot read \(Parquet magic bytes not found.*--dataset=csv"):
    read_log("parquet", path)


def test_list_column_in_parquet(tmp_path):
  path = _parquet(tmp_path, "log.parquet", user_id=["a", "b"], item_id=[["x"], ["y", "z"]],
                  timestamp=[1, 2])
  with pytest.raises(ValueError, match=r"log.parquet: column 'item_id' \(--item_column\) holds "
                                       r"list<element: string> values; expected one plain value"):
    read_log("parquet", path)


@pytest.mark.parametrize("users, items, message", [
    (["a", None, "c"], ["x", "y", "z"], r"row 2: column 'user_id' should be a non-empty id, got an "
                                        r"empty value. Remove the rows without an id"),
    (["a", "b", "c"], ["x", "y", ""], r"row 3: column 'item_id' should be a non-empty id"),
    ([1, 2, 3], [7.0, float("nan"), 9.0], r"column 'item_id' holds double values; expected ids as "
                                          r"strings or integers"),
])
def test_missing_empty_or_float_ids_in_parquet(tmp_path, users, items, message):
  path = _parquet(tmp_path, "log.parquet", user_id=users, item_id=items, timestamp=[1, 2, 3])
  with pytest.raises(ValueError, match=message):
    read_log("parquet", path)


def test_empty_ids_in_csv_name_their_line(tmp_path):
  path = _write(tmp_path, "log.csv", _COLUMNS + "u,1,5\nu,,6\n")
  with pytest.raises(ValueError, match=r"log.csv: line 3: column 'item_id' should be a non-empty id"):
    read_log("csv", path)
  path = _write(tmp_path, "log.csv", _COLUMNS + "u,1,5\n,2,6\n")
  with pytest.raises(ValueError, match=r"log.csv: line 3: column 'user_id' should be a non-empty id"):
    read_log("csv", path)


def test_empty_ids_of_other_readers_are_rejected_too(tmp_path):
  path = _write(tmp_path, "ml.txt", "1 10\n 11\n")  # a leading space: user ''
  with pytest.raises(ValueError, match=r"ml.txt: an empty user id; expected every event to name its "
                                       r"user"):
    read_log("sasrec", path)


def test_boolean_timestamps_are_rejected_with_the_column_name(tmp_path):
  message = r"column 'timestamp' \(--timestamp_column\) holds true/false values; expected unix seconds"
  path = _write(tmp_path, "log.csv", _COLUMNS + "u,1,true\nu,2,false\n")
  with pytest.raises(ValueError, match=message):
    read_log("csv", path)
  path = _parquet(tmp_path, "log.parquet", user_id=["u", "u"], item_id=["1", "2"],
                  timestamp=[True, False])
  with pytest.raises(ValueError, match=message):
    read_log("parquet", path)


def test_infinite_timestamp(tmp_path):
  path = _write(tmp_path, "log.csv", _COLUMNS + "u,1,5\nu,2,inf\n")
  with pytest.raises(ValueError, match=r"line 3: column 'timestamp' should be unix seconds .*got inf"):
    read_log("csv", path)


def test_reading_reports_progress_over_the_whole_file(tmp_path, monkeypatch):
  reports = []

  @contextlib.contextmanager
  def recording(description, total, unit):
    done = []
    yield done.append
    reports.append((description, total, unit, sum(done)))

  monkeypatch.setattr(tabular.cli, "progress", recording)  # common.cli, as the readers use it
  path = _write(tmp_path, "log.csv", _COLUMNS + "u,1,5\nu,2,6\n")
  read_log("csv", path)
  size = os.path.getsize(path)
  assert ("Reading log.csv", size, "B", size) in reports
  path = _parquet(tmp_path, "log.parquet", user_id=["u", "v"], item_id=["1", "2"], timestamp=[5, 6])
  read_log("parquet", path)
  assert reports[-1] == ("Reading log.parquet", 2, "rows", 2)


def test_unknown_dataset():
  with pytest.raises(ValueError, match="Unknown dataset 'netflix'; known: synthetic, amazon_beauty"):
    read_log("netflix", "/nonexistent")


@pytest.mark.parametrize("dataset, folder, users, items, events, impressions", [
    # Counts from each folder's PROVENANCE.md.
    ("movielens", "movielens_100k", 943, 1682, 100_000, 0),
    ("amazon_beauty", "amazon_beauty", 22_363, 12_101, 198_502, 0),
    ("lastfm_hetrec_s3rec", "lastfm_hetrec_s3rec", 1_090, 3_646, 52_551, 0),
    ("yoochoose", "yoochoose_sample", 279, 1_686, 7_954, 0),
    # 13,597 clickouts; 106,866 distinct impressed or clicked items.
    ("trivago", "trivago_rsc19_sample", None, 106_866, 13_597, None),
])
def test_real_files_match_their_provenance(shared_data, dataset, folder, users, items, events,
                                           impressions):
  log = read_log(dataset, os.path.join(shared_data, folder))
  assert log.num_items == items and log.num_events == events
  if users is not None:
    assert log.num_users == users
  if impressions is not None:
    assert log.num_impressions == impressions
  else:  # about 23 shown items per clickout, the clicked one excluded
    assert 20 * events < log.num_impressions < 23 * events
