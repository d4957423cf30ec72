"""A seeded toy detection dataset: coloured circles, squares and triangles.

    generate_shapes("shapes/", count=500, seed=0)
    # -> shapes/images/000000.png ... and shapes/instances.json (COCO format)
    # then: pydarknet data coco shapes/instances.json shapes/images shapes/

Made to be learnt in minutes on a CPU by a small YOLOv2-style network: each
image has `min_objects`..`max_objects` (1-4) shapes, each filled with one
solid saturated colour (colours differ within an image and are not tied to
the class, so the network has to learn the shape), of side 10%-40% of the
image's smaller side, on a noisy grey background.  By default the boxes of an
image do not overlap at all (`max_iou=0`), so nothing is hidden.

Boxes are exact: each shape is drawn without anti-aliasing, and its COCO
`bbox` [x, y, w, h] is the tight box of the pixels it covers (pixel i spans
[i, i+1), so a shape covering columns 10..29 has x=10, w=20); `area` is its
pixel count.  With `max_iou > 0` a shape may hide part of an earlier one,
whose box still covers all the pixels drawn for it.

Deterministic: image i is drawn from `numpy.random.default_rng([seed, i])`,
so the same seed gives the same pixels and JSON, and a dataset of n images
is the first n images of a larger one.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import progress_bar
from ..errors import ArgumentError, DarknetIOError

__all__ = ["SHAPE_CLASSES", "ShapeObject", "ShapesDataset", "generate_shapes", "render_shapes"]

SHAPE_CLASSES = ("circle", "square", "triangle")
_MAX_TRIES = 100
_QUARTER_TURNS = tuple(np.array(m) for m in (((1, 0), (0, 1)), ((0, -1), (1, 0)),
                                             ((-1, 0), (0, -1)), ((0, 1), (-1, 0))))


@dataclass(frozen=True)
class ShapeObject:
    class_id: int                       # index into SHAPE_CLASSES
    bbox: tuple[int, int, int, int]     # x, y, w, h: tight box of its pixels
    color: tuple[int, int, int]         # BGR
    area: int                           # pixels drawn


@dataclass
class ShapesDataset:
    """What `generate_shapes` wrote."""

    out_dir: Path
    images_dir: Path
    instances_json: Path
    images: int
    boxes_per_class: dict[str, int] = field(default_factory=dict)

    def format(self) -> str:
        per = ", ".join(f"{n}: {c}" for n, c in self.boxes_per_class.items())
        return (f"wrote {self.images} images into {self.images_dir} and {self.instances_json} "
                f"({sum(self.boxes_per_class.values())} boxes; {per})")


def _colour(rng: np.random.Generator, background: float, taken: list[tuple[int, int, int]]
            ) -> tuple[int, int, int]:
    import cv2

    for _ in range(_MAX_TRIES):
        hsv = np.array([[[rng.integers(0, 180), rng.integers(190, 256), rng.integers(170, 256)]]],
                       dtype=np.uint8)
        bgr = tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])
        far_from_bg = max(abs(c - background) for c in bgr) >= 70
        distinct = all(max(abs(a - b) for a, b in zip(bgr, t)) >= 40 for t in taken)
        if far_from_bg and distinct:
            return bgr  # type: ignore[return-value]
    return bgr  # type: ignore[return-value]  (practically unreachable)


def _shape_mask(kind: int, cx: float, cy: float, side: int, turn: int, width: int,
                height: int) -> np.ndarray:
    import cv2

    mask = np.zeros((height, width), dtype=np.uint8)
    half = side / 2
    if kind == 0:  # circle
        cv2.circle(mask, (int(round(cx)), int(round(cy))), max(int(round(half)), 1), 255, -1,
                   lineType=cv2.LINE_8)
    elif kind == 1:  # axis-aligned square
        x0, y0 = int(round(cx - half)), int(round(cy - half))
        mask[y0:y0 + side, x0:x0 + side] = 255
    else:  # isosceles triangle, apex up/right/down/left
        pts = np.array([(0, -half), (-half, half), (half, half)])
        pts = pts @ _QUARTER_TURNS[turn].T + (cx, cy)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255, lineType=cv2.LINE_8)
    return mask


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def render_shapes(rng: np.random.Generator, width: int = 128, height: int = 128, *,
                  min_objects: int = 1, max_objects: int = 4, min_size: float = 0.1,
                  max_size: float = 0.4, noise: float = 12.0, max_iou: float = 0.0
                  ) -> tuple[np.ndarray, list[ShapeObject]]:
    """One BGR uint8 image and its objects (see the module docstring)."""
    background = float(rng.uniform(60, 190))
    tint = rng.uniform(-12, 12, 3)
    img = background + tint + rng.normal(0, noise, (height, width, 3)) if noise > 0 else \
        np.full((height, width, 3), background) + tint
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    wanted = int(rng.integers(min_objects, max_objects + 1))
    short = min(width, height)
    objects: list[ShapeObject] = []
    for _ in range(wanted):
        for _ in range(_MAX_TRIES):
            kind = int(rng.integers(0, len(SHAPE_CLASSES)))
            side = max(int(round(rng.uniform(min_size, max_size) * short)), 4)
            half = side / 2
            cx = float(rng.uniform(half + 1, width - half - 1))
            cy = float(rng.uniform(half + 1, height - half - 1))
            turn = int(rng.integers(0, 4))
            mask = _shape_mask(kind, cx, cy, side, turn, width, height)
            ys, xs = np.nonzero(mask)
            if len(xs) == 0:
                continue
            x0, y0 = int(xs.min()), int(ys.min())
            box = (x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0)
            if any(_iou(box, o.bbox) > max_iou for o in objects):
                continue
            colour = _colour(rng, background, [o.color for o in objects])
            img[mask > 0] = colour
            objects.append(ShapeObject(kind, box, colour, int(len(xs))))
            break
    return img, objects


def generate_shapes(out_dir: str | os.PathLike[str], count: int = 500, *, width: int = 128,
                    height: int = 128, min_objects: int = 1, max_objects: int = 4,
                    min_size: float = 0.1, max_size: float = 0.4, noise: float = 12.0,
                    max_iou: float = 0.0, seed: int = 0, image_format: str = "png",
                    json_name: str = "instances.json", first_id: int = 1,
                    progress: bool = True) -> ShapesDataset:
    """Write `count` images into OUT_DIR/images/ and their COCO instances
    JSON into OUT_DIR/<json_name>.  Image ids are first_id.. (image i is
    drawn from seed [seed, i], whatever first_id is)."""
    import cv2

    if count < 1:
        raise ArgumentError(f"count must be positive, got {count}")
    if width < 16 or height < 16:
        raise ArgumentError(f"images must be at least 16x16, got {width}x{height}")
    if not 1 <= min_objects <= max_objects:
        raise ArgumentError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    if not 0 < min_size <= max_size < 1:
        raise ArgumentError(f"need 0 < min_size <= max_size < 1, got {min_size}, {max_size}")
    fmt = image_format.lower().lstrip(".")
    if fmt not in ("png", "jpg", "jpeg"):
        raise ArgumentError(f"image_format must be png or jpg, got {image_format!r}")
    ext = ".png" if fmt == "png" else ".jpg"
    params = [cv2.IMWRITE_PNG_COMPRESSION, 6] if ext == ".png" else [cv2.IMWRITE_JPEG_QUALITY, 95]

    out = Path(out_dir)
    images_dir = out / "images"
    try:
        images_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DarknetIOError(f"{images_dir}: cannot create: {e.strerror or e}") from None
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    counts = dict.fromkeys(SHAPE_CLASSES, 0)
    for i in progress_bar(range(count), total=count, desc="shapes", enabled=progress, unit="img"):
        rng = np.random.default_rng([seed, i])
        img, objects = render_shapes(rng, width, height, min_objects=min_objects,
                                     max_objects=max_objects, min_size=min_size,
                                     max_size=max_size, noise=noise, max_iou=max_iou)
        image_id = first_id + i
        name = f"{i:06d}{ext}"
        if not cv2.imwrite(str(images_dir / name), img, params):
            raise DarknetIOError(f"{images_dir / name}: cannot write image")
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for o in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": o.class_id + 1, "bbox": list(o.bbox),
                                "area": o.area, "iscrowd": 0})
            counts[SHAPE_CLASSES[o.class_id]] += 1
    doc = {
        "info": {"description": "pydarknet shapes dataset", "version": "1",
                 "generator": {"seed": seed, "count": count, "width": width, "height": height,
                               "min_objects": min_objects, "max_objects": max_objects,
                               "min_size": min_size, "max_size": max_size, "noise": noise,
                               "max_iou": max_iou, "format": ext[1:]}},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": n, "supercategory": "shape"}
                       for k, n in enumerate(SHAPE_CLASSES)],
    }
    json_path = out / json_name
    try:
        json_path.write_text(json.dumps(doc, indent=1) + "\n")
    except OSError as e:
        raise DarknetIOError(f"{json_path}: cannot write: {e.strerror or e}") from None
    return ShapesDataset(out, images_dir, json_path, count, counts)
