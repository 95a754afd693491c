"""Line plots as standalone SVG files, for the figures in docs/ (no plotting library needed)."""

import math
from typing import Dict, Sequence

import numpy as np


def svg_plot(path: str, series: Dict[str, Sequence[tuple]], *, title: str, xlabel: str,
             ylabel: str, logx: bool = False, width: int = 560, height: int = 320) -> None:
  """A line plot of `{label: [(x, y), ...]}` as a standalone SVG file."""
  colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]
  points = [p for values in series.values() for p in values if np.isfinite(p[1])]
  fx = (lambda x: math.log10(max(x, 1e-9))) if logx else (lambda x: x)
  xs, ys = [fx(x) for x, _ in points], [y for _, y in points]
  x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
  y0, y1 = min(0.0, min(ys)), max(ys) * 1.08 if max(ys) > 0 else 1.0
  left, right, top, bottom = 60, 150, 30, 45
  sx = lambda x: left + (fx(x) - x0) / (x1 - x0) * (width - left - right)
  sy = lambda y: height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
  out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'font-family="sans-serif" font-size="11">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="{width / 2 - 60}" y="16" font-size="13">{title}</text>',
         f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" '
         f'stroke="black"/>',
         f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
         f'<text x="{(width - right) / 2}" y="{height - 8}">{xlabel}</text>',
         f'<text x="12" y="{top - 8}">{ylabel}</text>']
  for i in range(5):
    y = y0 + (y1 - y0) * i / 4
    out.append(f'<text x="{left - 52}" y="{sy(y) + 4}">{y:.4g}</text>')
    out.append(f'<line x1="{left}" y1="{sy(y)}" x2="{width - right}" y2="{sy(y)}" '
               f'stroke="#ddd"/>')
  ticks = sorted({x for x, _ in points})
  for x in ticks[::max(1, len(ticks) // 8)]:
    label = f"{x:g}" if not logx else (f"{x:.0e}" if x >= 1e4 else f"{x:g}")
    out.append(f'<text x="{sx(x) - 10}" y="{height - bottom + 14}">{label}</text>')
  for index, (label, values) in enumerate(series.items()):
    color = colors[index % len(colors)]
    values = [(x, y) for x, y in values if np.isfinite(y)]
    path_data = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
    out.append(f'<polyline points="{path_data}" fill="none" stroke="{color}" stroke-width="2"/>')
    out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>'
            for x, y in values]
    out.append(f'<text x="{width - right + 8}" y="{top + 14 * index + 10}" fill="{color}">'
               f'{label}</text>')
  out.append("</svg>")
  with open(path, "w") as f:
    f.write("\n".join(out))
