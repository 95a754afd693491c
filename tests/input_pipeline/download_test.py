"""Downloads through file:// URLs and a fake fetcher (no network here)."""

import hashlib
import os
import zipfile

import pytest

from input_pipeline import download
from input_pipeline.download import RemoteFile
from input_pipeline.prepare import PrepareConfig, prepare_dataset

_U_DATA = "1\t10\t5\t100\n1\t11\t3\t200\n1\t12\t4\t300\n2\t10\t1\t150\n"


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_movielens(tmp_path, monkeypatch):
  """A tiny ml-100k.zip served from a file:// URL, registered as movielens_100k."""
  archive = tmp_path / "server" / "ml-100k.zip"
  archive.parent.mkdir()
  with zipfile.ZipFile(archive, "w") as zf:
    zf.writestr("ml-100k/u.data", _U_DATA)
  data = archive.read_bytes()
  remote = RemoteFile(url=archive.as_uri(), name="ml-100k.zip", size=len(data),
                      md5=hashlib.md5(data).hexdigest(),
                      extract=(("ml-100k/u.data", _sha256(_U_DATA.encode())),))
  monkeypatch.setitem(download.SOURCES, "movielens_100k", (remote,))
  return remote


def test_download_extracts_and_then_reuses(tmp_path, fake_movielens):
  target = str(tmp_path / "cache")
  assert download.download("movielens_100k", target) == target
  assert (tmp_path / "cache" / "u.data").read_text() == _U_DATA
  fetched = []
  download.download("movielens_100k", target, fetch=lambda url, path: fetched.append(url))
  assert fetched == []  # the archive is there with the right checksum
  assert not [n for n in os.listdir(target) if n.endswith(".part")]


def test_checksum_mismatch_keeps_nothing(tmp_path, fake_movielens):
  def corrupt(url, path):
    with open(path, "wb") as f:
      f.write(b"x" * fake_movielens.size)  # right size, wrong content
  with pytest.raises(ValueError, match=r"has md5 .*expected "):
    download.download("movielens_100k", str(tmp_path / "cache"), fetch=corrupt)
  assert os.listdir(tmp_path / "cache") == []


def test_wrong_size_is_rejected(tmp_path, fake_movielens):
  with pytest.raises(ValueError, match=r"size 3 bytes, expected"):
    download.download("movielens_100k", str(tmp_path / "cache"),
                      fetch=lambda url, path: open(path, "wb").write(b"abc"))


def test_prepare_with_download(tmp_path, fake_movielens):
  stats = prepare_dataset(PrepareConfig(output_dir=str(tmp_path / "data"), dataset="movielens_100k",
                                        input_path=str(tmp_path / "cache"), download=True,
                                        num_shards=1))
  assert (stats["num_users"], stats["num_events"], stats["has_feedback"]) == (2, 4, True)


def test_unknown_dataset_names_the_known_ones():
  with pytest.raises(ValueError, match=r"knows the data sets \['amazon_beauty'"):
    download.download("trivago", "/tmp/unused")


def test_every_source_is_checked():
  for dataset, remotes in download.SOURCES.items():
    for remote in remotes:
      assert remote.md5 or remote.sha256, (dataset, remote.name)
      assert remote.url.startswith("https://"), remote.url
