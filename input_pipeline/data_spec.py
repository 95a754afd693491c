"""The data description every model is built from, read once from a dataset directory.

`read(data_dir)` reads stats.json, vocab.tsv and the feature tables of a prepared data
set into a `DataSpec`: the catalog size and special ids, the raw ids and training
counts of the items, the item side features (as a padded table, by field), the user
feature vocabulary, and which fields the data set holds. The trainer reads it once and
hands the same object to the model, the input pipeline, the loss, the evaluation and
the export.
"""

import dataclasses
import os
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from input_pipeline import schema


def read_feature_vocab(data_dir: str, filename: str) -> Tuple[str, ...]:
  """Feature names in index order from an `index<TAB>feature<TAB>count` file (none if absent).

  Args:
    data_dir: a prepared data set.
    filename: `schema.ITEM_FEATURE_VOCAB_FILE` or `schema.USER_FEATURE_VOCAB_FILE`.
  """
  path = os.path.join(data_dir, filename)
  if not os.path.exists(path):
    return ()
  feature_names = []
  with open(path) as f:
    f.readline()  # header
    for line_number, line in enumerate(f, start=2):
      fields = line.rstrip("\n").split("\t")
      if len(fields) != 3 or fields[0] != str(len(feature_names)):
        raise ValueError(f"{path}:{line_number}: expected 'index<TAB>feature<TAB>count' with "
                         f"index {len(feature_names)}, got {line[:100]!r}. Re-run prepare.")
      feature_names.append(fields[1])
  return tuple(feature_names)


def feature_field(name: str) -> str:
  """The field of a feature name: "genre" for "genre=Comedy" ("" without a field)."""
  field, sep, _ = name.partition("=")
  return field if sep else ""


@dataclasses.dataclass(frozen=True, eq=False)
class DataSpec:
  """What a model may know about the data set it is trained on (no file access needed).

  Attributes:
    num_items: real items; indices `[0, num_items)`, ordered by descending training count.
    item_ids: raw item id of every index `[num_items]`.
    item_counts: float32 `[num_items]` training counts.
    item_features: int64 `[num_items, width]` item-feature indices per item, padded
      with `num_item_features` (width 0 when the data set has none).
    item_feature_names: names of the item features ("genre=Comedy", ...).
    user_feature_names: names of the user features ("age=25", ...).
    stats: the data set's stats.json.
    data_dir: where it was read from ("" when built in memory).
  """
  num_items: int
  item_ids: Tuple[str, ...]
  item_counts: np.ndarray
  item_features: np.ndarray
  item_feature_names: Tuple[str, ...] = ()
  user_feature_names: Tuple[str, ...] = ()
  stats: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  data_dir: str = ""

  def __post_init__(self):
    if self.num_items < 1:
      raise ValueError(f"A data set needs at least one item, got num_items={self.num_items}.")
    if len(self.item_ids) != self.num_items or self.item_counts.shape != (self.num_items,):
      raise ValueError(f"{self.num_items} items but {len(self.item_ids)} ids and counts of shape "
                       f"{self.item_counts.shape}: is vocab.tsv from the same prepare run as "
                       f"stats.json?")

  @property
  def oov_id(self) -> int:
    return schema.oov_id(self.num_items)

  @property
  def pad_id(self) -> int:
    return schema.pad_id(self.num_items)

  @property
  def embedding_rows(self) -> int:
    return schema.embedding_rows(self.num_items)

  @property
  def num_item_features(self) -> int:
    return len(self.item_feature_names)

  @property
  def num_user_features(self) -> int:
    return len(self.user_feature_names)

  @property
  def item_feature_fields(self) -> Dict[str, Tuple[int, ...]]:
    """field -> the indices of its item features, e.g. {"genre": (0, 3, 7), "brand": (...)}."""
    fields: Dict[str, list] = {}
    for index, name in enumerate(self.item_feature_names):
      fields.setdefault(feature_field(name), []).append(index)
    return {field: tuple(indices) for field, indices in fields.items()}

  @property
  def protocol(self) -> str:
    """The split protocol (`schema.SPLIT_PROTOCOLS`)."""
    return self.stats.get("split", schema.LEAVE_LAST_ONE_OUT)

  def has(self, field: str) -> bool:
    """Whether the data set holds real `timestamps`, `feedback` or `impressions`."""
    return bool(self.stats.get(f"has_{field}", False))

  @classmethod
  def for_catalog(cls, num_items: int, **fields) -> "DataSpec":
    """An in-memory description of a plain catalog (tests, benchmarks): ids "0", "1", ..."""
    defaults = dict(item_ids=tuple(str(i) for i in range(num_items)),
                    item_counts=np.ones([num_items], np.float32),
                    item_features=np.zeros([num_items, 0], np.int64),
                    stats={"split": schema.LEAVE_LAST_ONE_OUT, "num_items": num_items})
    return cls(num_items=num_items, **{**defaults, **fields})


def _padded_item_features(rows, num_features: int) -> np.ndarray:
  width = max((len(r) for r in rows), default=0)
  table = np.full([len(rows), width], num_features, np.int64)
  for index, row in enumerate(rows):
    table[index, :len(row)] = row
  return table


def read(data_dir: str) -> DataSpec:
  """Reads the description of a prepared dataset directory.

  Raises:
    FileNotFoundError: not a prepared data set.
    ValueError: a malformed or inconsistent stats.json, vocab.tsv or feature table.
  """
  stats = schema.read_stats(data_dir)
  num_items = int(stats["num_items"])
  rows = schema.read_vocab_rows(data_dir)
  item_feature_names = read_feature_vocab(data_dir, schema.ITEM_FEATURE_VOCAB_FILE)
  return DataSpec(
      num_items=num_items,
      item_ids=tuple(raw_id for raw_id, _ in rows),
      item_counts=np.asarray([count for _, count in rows], np.float32),
      item_features=_padded_item_features(schema.read_item_features(data_dir, num_items),
                                          len(item_feature_names)),
      item_feature_names=item_feature_names,
      user_feature_names=read_feature_vocab(data_dir, schema.USER_FEATURE_VOCAB_FILE),
      stats=stats,
      data_dir=data_dir)
