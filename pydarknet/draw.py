"""Drawing detections on frames, in darknet's colours."""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from .detect import Detection

# darknet's colour ramp (image.c's `colors`), indexed by class offset
_RAMP = ((1, 0, 1), (0, 0, 1), (0, 1, 1), (0, 1, 0), (1, 1, 0), (1, 0, 0))


def _ramp(channel: int, x: int, maximum: int) -> float:
    ratio = (x / maximum) * 5
    i, j = math.floor(ratio), math.ceil(ratio)
    ratio -= i
    return (1 - ratio) * _RAMP[i][channel] + ratio * _RAMP[j][channel]


def class_color(class_id: int, classes: int) -> tuple[int, int, int]:
    """darknet's colour for a class, as a BGR tuple for OpenCV."""
    offset = class_id * 123457 % max(classes, 1)
    red = _ramp(2, offset, classes)
    green = _ramp(1, offset, classes)
    blue = _ramp(0, offset, classes)
    return (int(blue * 255), int(green * 255), int(red * 255))


def draw_detections(frame: np.ndarray, detections: Sequence[Detection], classes: int) -> np.ndarray:
    """A copy of the BGR frame with boxes and labels drawn."""
    out = frame.copy()
    height = out.shape[0]
    thickness = max(1, int(height * .006))
    for d in detections:
        color = class_color(d.class_id, classes)
        x1, y1 = max(0, int(d.x1)), max(0, int(d.y1))
        x2, y2 = min(out.shape[1] - 1, int(d.x2)), min(height - 1, int(d.y2))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        label = f"{d.name} {d.confidence:.2f}"
        scale = max(.4, height / 1000)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = max(0, y1 - th - base)
        cv2.rectangle(out, (x1, top), (x1 + tw, top + th + base), color, -1)
        cv2.putText(out, label, (x1, top + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return out
