"""Item popularity in a time window: the exposure estimate q(item | t) of item trend correction.

HRNN-meta (Ma et al., KDD 2020, section 3.2, eq 5) decomposes the next-item probability
into a time-invariant user affinity and the item's exposure rate at the request time,

    p(a_{k+1} | h_k, t_{k+1})  proportional to  p(a_{k+1} | h_k) q(a_{k+1} | t_{k+1}),

and estimates q "from its global popularity in the last time period": the item's
share of the events in `[t - window, t)`. A score then adds `log q(j | t)`.

    q(j | t) = (c_j + alpha) / (sum_i c_i + alpha * num_items),
    c_j = #{events of item j with t - window <= time < t}

The additive smoothing `alpha` (the paper is silent) keeps items without events in the
window rankable: they get the smallest q instead of log 0.
"""

import numpy as np


def window_counts(items: np.ndarray, timestamps: np.ndarray, start: float, end: float,
                  num_items: int) -> np.ndarray:
  """Events per item with `start <= time < end`.

  Args:
    items: `[events]` item indices; ids outside `[0, num_items)` (OOV, padding) are skipped.
    timestamps: `[events]` their times.
    start, end: the window.
    num_items: catalog size.

  Returns:
    float32 `[num_items]` counts.
  """
  items = np.asarray(items, np.int64)
  timestamps = np.asarray(timestamps)
  if items.shape != timestamps.shape:
    raise ValueError(f"items {items.shape} and timestamps {timestamps.shape} must align.")
  if end < start:
    raise ValueError(f"The window [{start}, {end}) ends before it starts.")
  keep = (timestamps >= start) & (timestamps < end) & (items >= 0) & (items < num_items)
  return np.bincount(items[keep], minlength=num_items).astype(np.float32)


def log_popularity(counts: np.ndarray, smoothing: float = 1.0) -> np.ndarray:
  """`log q(j)` from window counts (module docstring); float32 `[num_items]`."""
  counts = np.asarray(counts, np.float64)
  if counts.ndim != 1 or (counts < 0).any():
    raise ValueError(f"counts must be a vector of non-negative numbers, got shape {counts.shape}.")
  if smoothing < 0 or (smoothing == 0 and (counts == 0).any()):
    raise ValueError(f"smoothing must be > 0 when some item has no event (log 0), or >= 0; got "
                     f"{smoothing}.")
  return np.log((counts + smoothing) / (counts.sum() + smoothing * counts.size)).astype(np.float32)
