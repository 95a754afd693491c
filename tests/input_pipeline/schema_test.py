"""input_pipeline.schema: reading vocab.tsv."""

import pytest

from input_pipeline import schema


def _vocab(tmp_path, header, rows):
  schema.write_tsv(str(tmp_path / schema.VOCAB_FILE), header, rows)
  return str(tmp_path)


def test_vocab_ids_and_counts_in_index_order(tmp_path):
  data_dir = _vocab(tmp_path, ["index", "item_id", "count"], [(0, "b", 7), (1, "a", 3), (2, "c", 0)])
  assert schema.read_vocab(data_dir) == ["b", "a", "c"]
  assert schema.read_vocab_counts(data_dir) == [7, 3, 0]


def test_vocab_rejects_a_wrong_header_or_index_order(tmp_path):
  with pytest.raises(ValueError, match="expected the header"):
    schema.read_vocab(_vocab(tmp_path, ["id", "item", "n"], [(0, "b", 7)]))
  # Row 2 (line 3) claims index 2 where index 1 belongs.
  with pytest.raises(ValueError, match=r"vocab.tsv:3: expected .index<TAB>item_id<TAB>count. with index 1, got .2"):
    schema.read_vocab_counts(_vocab(tmp_path, ["index", "item_id", "count"], [(0, "b", 7), (2, "a", 3)]))
