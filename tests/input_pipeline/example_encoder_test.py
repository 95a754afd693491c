"""The vectorized Example encoder writes exactly what the reference encoder writes."""

import numpy as np
import tensorflow as tf

from input_pipeline import example_encoder
from input_pipeline import schema


def _concat(lists, dtype):
  return np.array([v for values in lists for v in values], dtype)


def _encode_batch(timelines):
  ids = [t["user_id"].encode() for t in timelines]
  lengths = np.array([len(t["items"]) for t in timelines])
  shown = np.array([len(t["impressions"]) for t in timelines])
  return example_encoder.encode_examples({
      schema.USER_ID: example_encoder.bytes_column(np.frombuffer(b"".join(ids), np.uint8),
                                                   [len(i) for i in ids]),
      schema.ITEMS: example_encoder.int64_column(_concat([t["items"] for t in timelines], np.int64),
                                                 lengths),
      schema.TIMESTAMPS: example_encoder.int64_column(
          _concat([t["timestamps"] for t in timelines], np.int64), lengths),
      schema.FEEDBACK: example_encoder.float_column(
          _concat([t["feedback"] for t in timelines], np.float32), lengths),
      schema.IMPRESSIONS: example_encoder.int64_column(
          _concat([t["impressions"] for t in timelines], np.int64), shown),
      schema.IMPRESSION_TIMESTAMPS: example_encoder.int64_column(
          _concat([t["impression_timestamps"] for t in timelines], np.int64), shown),
      schema.USER_FEATURES: example_encoder.int64_column(
          _concat([t["user_features"] for t in timelines], np.int64),
          [len(t["user_features"]) for t in timelines]),
      schema.TARGET_START: example_encoder.int64_column(
          np.array([t["target_start"] for t in timelines]), np.ones(len(timelines), np.int64)),
  })


def _timelines():
  rng = np.random.default_rng(0)
  timelines = [
      # Varint edge cases: 0, 127/128 (1 -> 2 bytes), 2**63 - 1 (9 bytes), negative (10 bytes).
      dict(user_id="edge", items=[0, 127, 128, 2**63 - 1, -1], timestamps=[-5, 0, 1, 2**35, 3],
           feedback=[0.5, 1.0, -2.0, 1e-7, 3.25], impressions=[], impression_timestamps=[],
           user_features=[], target_start=4),
      dict(user_id="", items=[3], timestamps=[9], feedback=[1.0], impressions=[4, 5],
           impression_timestamps=[9, 9], user_features=[0, 2], target_start=0),
  ]
  for u in range(20):
    n, m = int(rng.integers(1, 300)), int(rng.integers(0, 4))
    timelines.append(dict(
        user_id=f"user-{u}-ü", items=rng.integers(0, 10**6, n).tolist(),
        timestamps=np.sort(rng.integers(1.5e9, 1.7e9, n)).tolist(),
        feedback=rng.random(n).astype(np.float32).tolist(),
        impressions=rng.integers(0, 10**6, m).tolist(),
        impression_timestamps=rng.integers(1.5e9, 1.7e9, m).tolist(),
        user_features=rng.integers(0, 50, int(rng.integers(0, 4))).tolist(),
        target_start=int(rng.integers(0, n + 1))))
  return timelines


def test_bytes_equal_deterministic_reference_serialization():
  timelines = _timelines()
  buffer, offsets = _encode_batch(timelines)
  assert len(offsets) == len(timelines) + 1
  for r, timeline in enumerate(timelines):
    reference = tf.train.Example.FromString(schema.encode_timeline(**timeline))
    assert buffer[offsets[r]:offsets[r + 1]].tobytes() == reference.SerializeToString(
        deterministic=True), timeline["user_id"]


def test_parse_round_trip():
  timelines = _timelines()
  buffer, offsets = _encode_batch(timelines)
  records = [buffer[offsets[r]:offsets[r + 1]].tobytes() for r in range(len(timelines))]
  parsed = schema.parse_timelines(tf.constant(records))
  for r, timeline in enumerate(timelines):
    assert parsed[schema.USER_ID][r].numpy().decode() == timeline["user_id"]
    assert parsed[schema.TARGET_START][r].numpy() == timeline["target_start"]
    for name in (schema.ITEMS, schema.TIMESTAMPS, schema.IMPRESSIONS,
                 schema.IMPRESSION_TIMESTAMPS, schema.USER_FEATURES):
      np.testing.assert_array_equal(parsed[name][r].numpy(), timeline[name], err_msg=name)
    np.testing.assert_array_equal(parsed[schema.FEEDBACK][r].numpy(),
                                  np.float32(timeline["feedback"]))


def test_varint_sizes_by_hand():
  # 7 payload bits per byte: 127 fits one byte, 128 needs two, 2**14 three; -1 is 10 bytes.
  data, sizes = example_encoder._varints(np.array([0, 127, 128, 2**14, -1]))
  np.testing.assert_array_equal(sizes, [1, 1, 2, 3, 10])
  assert data[:4].tolist() == [0x00, 0x7F, 0x80, 0x01]


def test_prefix_byte_ranges_equal_encoding_the_prefix():
  # Values [1, 300, 5, 70000] take 1, 2, 1, 3 bytes. Record 0 = first 3 values of row 0,
  # record 1 = the last value: byte ranges [0, 4) and [4, 7) of the one encoding.
  values = np.array([1, 300, 5, 70000])
  encoded = example_encoder.EncodedValues.encode(example_encoder.INT64, values)
  starts, counts = np.array([0, 3]), np.array([3, 1])
  column = encoded.column(encoded.byte_offsets(starts), encoded.byte_offsets(starts + counts), counts)
  np.testing.assert_array_equal(column.starts, [0, 4])
  np.testing.assert_array_equal(column.byte_lengths, [4, 3])
  direct = example_encoder.int64_column(np.array([1, 300, 5, 70000]), counts)
  for r in range(2):
    a = column.buffer[column.starts[r]:column.starts[r] + column.byte_lengths[r]]
    b = direct.buffer[direct.starts[r]:direct.starts[r] + direct.byte_lengths[r]]
    np.testing.assert_array_equal(a, b)
