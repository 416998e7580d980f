"""Small line charts drawn with OpenCV (no plotting dependency)."""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["line_chart", "COLOURS"]

#: Distinguishable line colours (RGB).
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127))


def line_chart(
    series: dict[str, tuple[list[float], list[float]]],
    title: str = "",
    xlabel: str = "",
    log_y: bool = True,
    width: int = 720,
    height: int = 420,
    markers: bool = False,
) -> np.ndarray:
    """Draw named (x, y) series on shared axes.

    Args:
        series: name -> (xs, ys); non-finite (and, with ``log_y``, non-positive) values are skipped.
        title, xlabel: texts.
        log_y: logarithmic y axis.

    Returns:
        (height, width, 3) uint8 RGB image.
    """
    image = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 80, 20, 40, 50

    def usable(y: float) -> bool:
        return math.isfinite(y) and (y > 0 or not log_y)

    clean = {name: [(x, y) for x, y in zip(xs, ys) if usable(y)] for name, (xs, ys) in series.items()}
    points = [p for pts in clean.values() for p in pts]
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, title, (left, 25), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    if not points:
        return image
    fy = math.log10 if log_y else (lambda v: v)
    low, high = min(fy(y) for _, y in points), max(fy(y) for _, y in points)
    if high - low < 1e-6:
        low, high = low - 0.5, high + 0.5
    first, last = min(x for x, _ in points), max(x for x, _ in points)
    if last - first < 1e-9:
        last = first + 1

    def to_pixel(x: float, y: float) -> tuple[int, int]:
        px = left + (x - first) / (last - first) * (width - left - right)
        py = top + (high - fy(y)) / (high - low) * (height - top - bottom)
        return int(round(px)), int(round(py))

    for k in range(5):
        level = low + (high - low) * k / 4
        value = 10**level if log_y else level
        y = to_pixel(first, value)[1]
        cv2.line(image, (left, y), (width - right, y), (225, 225, 225), 1)
        cv2.putText(image, f"{value:.3g}", (6, y + 4), font, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    for k in range(6):
        x_value = first + (last - first) * k / 5
        x = to_pixel(x_value, 10**low if log_y else low)[0]
        cv2.line(image, (x, height - bottom), (x, height - bottom + 5), (60, 60, 60), 1)
        cv2.putText(image, f"{x_value:.3g}", (x - 8, height - bottom + 20), font, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.rectangle(image, (left, top), (width - right, height - bottom), (60, 60, 60), 1)
    cv2.putText(image, xlabel, (width // 2 - 20, height - 10), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (name, pts) in enumerate(clean.items()):
        colour = COLOURS[i % len(COLOURS)]
        pixels = np.array([to_pixel(x, y) for x, y in pts], np.int32)
        if len(pixels):
            cv2.polylines(image, [pixels], False, colour, 2, cv2.LINE_AA)
            if markers:
                for p in pixels:
                    cv2.circle(image, tuple(int(v) for v in p), 3, colour, -1, cv2.LINE_AA)
        legend_y = top + 18 + 18 * i
        cv2.line(image, (width - right - 150, legend_y - 4), (width - right - 125, legend_y - 4), colour, 2)
        cv2.putText(image, name, (width - right - 118, legend_y), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return image
