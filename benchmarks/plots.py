"""Line plots for the figures in docs/ (matplotlib, a benchmark-only dependency: `.[bench]`)."""

from typing import Dict, Sequence, Tuple

import numpy as np


def pyplot():
  """matplotlib's pyplot on the file-only Agg backend (benchmarks run without a display)."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top  (only the benchmarks plot)
  except ModuleNotFoundError as e:
    raise SystemExit('the benchmarks\' figures need matplotlib: pip install -e ".[bench]"') from e
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def line_plot(path: str, series: Dict[str, Sequence[Tuple[float, float]]], *, title: str,
              xlabel: str, ylabel: str, logx: bool = False) -> None:
  """Writes `{label: [(x, y), ...]}` as one line per label to `path` (format from its suffix).

  Points with a non-finite y are left out, so a failed run does not hide the others.
  """
  plt = pyplot()
  figure, axis = plt.subplots(figsize=(6, 3.6))
  for label, points in series.items():
    points = sorted((x, y) for x, y in points if np.isfinite(y))
    axis.plot([x for x, _ in points], [y for _, y in points], marker="o", markersize=3,
              label=label)
  if logx:
    axis.set_xscale("log")
  axis.set_title(title)
  axis.set_xlabel(xlabel)
  axis.set_ylabel(ylabel)
  axis.grid(alpha=0.3)
  axis.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)
