"""Downloads the public data sets that prepare can read (`--download`).

Sources: MovieLens 100K / 1M zip archives from GroupLens (checked against GroupLens'
published MD5 sums, and the extracted files against the SHA-256 sums recorded in the
project's data provenance notes), and the S3-Rec sequence and attribute files from the
S3-Rec repository at a fixed commit (SHA-256 and size checked). A file that is already
present with the right checksum is not fetched again. Downloads land in a temporary file
that is renamed only after its checks pass.
"""

import dataclasses
import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from typing import Callable, Dict, Optional, Tuple

from absl import logging

_GROUPLENS = "https://files.grouplens.org/datasets/movielens"
_S3REC = ("https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/"
          "2a81540ae18615d88ef88227b0c066e5b74781e5/data")


@dataclasses.dataclass(frozen=True)
class RemoteFile:
  """One file to fetch.

  Attributes:
    url: where to fetch it (https:// or file://).
    name: file name in the download directory.
    size: expected size in bytes, or None.
    md5: expected MD5 hex digest, or None.
    sha256: expected SHA-256 hex digest, or None.
    extract: for zip archives, member path -> expected SHA-256 (or None) of the members
      to extract, written without their folder prefix.
  """
  url: str
  name: str
  size: Optional[int] = None
  md5: Optional[str] = None
  sha256: Optional[str] = None
  extract: Tuple[Tuple[str, Optional[str]], ...] = ()


SOURCES: Dict[str, Tuple[RemoteFile, ...]] = {
    "movielens_100k": (RemoteFile(
        url=f"{_GROUPLENS}/ml-100k.zip", name="ml-100k.zip", size=4_924_029,
        md5="0e33842e24a9c977be4e0107933c0723",
        extract=(("ml-100k/u.data", "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"),
                 ("ml-100k/u.item", "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701"),
                 ("ml-100k/u.user", "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c"),
                 ("ml-100k/u.genre", "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb"))),),
    "movielens_1m": (RemoteFile(
        url=f"{_GROUPLENS}/ml-1m.zip", name="ml-1m.zip", md5="c4d9eecfca2ab87c1945afe126590906",
        extract=(("ml-1m/ratings.dat", None),
                 ("ml-1m/movies.dat", "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9"),
                 ("ml-1m/users.dat", "1dc3a95300cb19f7c10e027daf29b8cdf1d908dab65b5edfb45950aa389a10a3"))),),
    "amazon_beauty": (
        RemoteFile(f"{_S3REC}/Beauty.txt", "Beauty.txt", 1_090_094,
                   sha256="226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8"),
        RemoteFile(f"{_S3REC}/Beauty_item2attributes.json", "Beauty_item2attributes.json", 305_674,
                   sha256="129e40f67486f6877eff0f5318cfa8530ee8ac23d8b0d1de04e1bb7a2ba0b2d4")),
    "amazon_toys": (
        RemoteFile(f"{_S3REC}/Toys_and_Games.txt", "Toys_and_Games.txt", 922_166,
                   sha256="176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f"),
        RemoteFile(f"{_S3REC}/Toys_and_Games_item2attributes.json",
                   "Toys_and_Games_item2attributes.json", 327_536,
                   sha256="d371acd25101eedac04afc727626464b7acec770c4eda708705d51eb76eb1ad0")),
    "lastfm_hetrec_s3rec": (
        RemoteFile(f"{_S3REC}/LastFM.txt", "LastFM.txt", 239_312,
                   sha256="9ded486adb5b0fe9dc761950afa0a9a05e93ff018992e0c52bf11afec529f802"),
        RemoteFile(f"{_S3REC}/LastFM_item2attributes.json", "LastFM_item2attributes.json", 524_368,
                   sha256="a4ccd678dc9ff6d43fe5073f491db5c9b02eb98dfa4f8c0382913a784be217ef")),
}

# The largest file we expect (ml-1m.zip is about 6 MB); more means a wrong URL.
_MAX_BYTES = 64 << 20


def default_directory(dataset: str) -> str:
  cache = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
  return os.path.join(cache, "deep_candidate_generation", dataset)


def fetch_url(url: str, destination: str) -> None:
  """Copies `url` to the file `destination` (at most _MAX_BYTES)."""
  with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
    copied = 0
    while True:
      chunk = response.read(1 << 20)
      if not chunk:
        break
      copied += len(chunk)
      if copied > _MAX_BYTES:
        raise ValueError(f"{url} is larger than {_MAX_BYTES} bytes; not a file this job expects.")
      out.write(chunk)


def _digest(path: str, algorithm: str) -> str:
  digest = hashlib.new(algorithm)
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _problems(path: str, remote: RemoteFile) -> Optional[str]:
  """Why `path` is not the expected file, or None when it is."""
  size = os.path.getsize(path)
  if remote.size is not None and size != remote.size:
    return f"size {size} bytes, expected {remote.size}"
  for algorithm, expected in (("md5", remote.md5), ("sha256", remote.sha256)):
    if expected and _digest(path, algorithm) != expected:
      return f"{algorithm} {_digest(path, algorithm)}, expected {expected}"
  return None


def _extract(archive: str, remote: RemoteFile, directory: str) -> None:
  with zipfile.ZipFile(archive) as zf:
    for member, sha256 in remote.extract:
      target = os.path.join(directory, os.path.basename(member))
      with zf.open(member) as source, open(target + ".part", "wb") as out:
        shutil.copyfileobj(source, out)
      if sha256 and _digest(target + ".part", "sha256") != sha256:
        os.remove(target + ".part")
        raise ValueError(f"{member} in {remote.url} does not have the expected SHA-256 {sha256}; "
                         f"the archive changed upstream. Download it by hand and pass --input.")
      os.replace(target + ".part", target)


def download(dataset: str, directory: Optional[str] = None, *,
             fetch: Callable[[str, str], None] = fetch_url) -> str:
  """Makes sure `dataset`'s files are in `directory` and returns that directory.

  Args:
    dataset: a key of `SOURCES`.
    directory: where to put the files; default `~/.cache/deep_candidate_generation/<dataset>`.
    fetch: copies a URL to a local path (tests pass a fake).

  Returns:
    The directory, ready for the data set's reader.

  Raises:
    ValueError: unknown data set, or a download that fails its size/checksum check.
  """
  if dataset not in SOURCES:
    raise ValueError(f"--download knows the data sets {sorted(SOURCES)}, not {dataset!r}; fetch "
                     f"{dataset!r} yourself and pass its folder with --input.")
  directory = directory or default_directory(dataset)
  os.makedirs(directory, exist_ok=True)
  for remote in SOURCES[dataset]:
    path = os.path.join(directory, remote.name)
    if os.path.exists(path) and _problems(path, remote) is None:
      logging.info("%s already downloaded.", path)
    else:
      logging.info("Downloading %s to %s.", remote.url, path)
      handle, partial = tempfile.mkstemp(prefix=remote.name + ".", suffix=".part", dir=directory)
      os.close(handle)
      try:
        fetch(remote.url, partial)
        problem = _problems(partial, remote)
        if problem:
          raise ValueError(f"Downloaded {remote.url} has {problem}; the file changed upstream or "
                           f"the download was cut. Retry, or fetch it by hand and pass --input.")
        os.replace(partial, path)
      finally:
        if os.path.exists(partial):
          os.remove(partial)
    if remote.extract:
      _extract(path, remote, directory)
  return directory
