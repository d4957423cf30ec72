"""Anchor boxes by k-means on a dataset's label boxes (1 - IoU distance).

As AlexeyAB's `darknet detector calc_anchors`: every label box is scaled to
the network input (w * width, h * height pixels) and compared by shape
only, boxes centred at the origin, so IoU(a, b) = min(wa, wb) * min(ha, hb)
/ (wa*ha + wb*hb - that).  k-means assigns each box to the anchor of highest
IoU and moves each anchor to the mean (w, h) of its boxes, until the
assignment stops changing.  Initialisation is seeded: `kmeans++` (D^2
sampling on 1 - IoU, default) or `random` (k distinct boxes, darknet-like).
The result is sorted by area and comes with the average IoU of every box
with its best anchor.

`set_anchors` writes them into a cfg: [yolo] anchors in pixels of the
network input, [region] anchors in grid cells (pixels / 32), `num` updated
and the `filters=` of the convolution feeding each head recomputed.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .builders import anchor_line
from .cfg import Cfg, CfgSection, format_value
from .data import progress_bar, read_data_file, read_image_list, read_labels
from .errors import ArgumentError, CfgError, DataError

__all__ = ["AnchorResult", "REGION_STRIDE", "anchor_iou", "compute_anchors", "kmeans_anchors",
           "label_sizes", "set_anchors"]

REGION_STRIDE = 32  # network input pixels per [region] grid cell (YOLOv2)


def anchor_iou(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of (n, 2) box sizes with (k, 2) anchor sizes, all centred at the
    origin: (n, k)."""
    bw, bh = boxes[:, 0:1], boxes[:, 1:2]
    aw, ah = anchors[None, :, 0], anchors[None, :, 1]
    inter = np.minimum(bw, aw) * np.minimum(bh, ah)
    return inter / (bw * bh + aw * ah - inter)


@dataclass
class AnchorResult:
    """k-means anchors in pixels of a `width` x `height` network input."""

    anchors: np.ndarray      # (k, 2) w, h in pixels, sorted by area
    avg_iou: float           # mean over boxes of the IoU with the best anchor
    width: int
    height: int
    n_boxes: int
    iterations: int
    counts: np.ndarray       # boxes per anchor

    def in_grid_cells(self, stride: int = REGION_STRIDE) -> np.ndarray:
        """The anchors in [region] units (grid cells of `stride` pixels)."""
        return self.anchors / stride

    def format(self) -> str:
        px = ",  ".join(f"{format_value(round(w, 2))},{format_value(round(h, 2))}"
                        for w, h in self.anchors)
        cells = ",  ".join(f"{format_value(round(w, 5))},{format_value(round(h, 5))}"
                           for w, h in self.in_grid_cells())
        return "\n".join([
            f"{len(self.anchors)} anchors for {self.width}x{self.height} from {self.n_boxes} boxes "
            f"({self.iterations} iterations), average IoU {self.avg_iou * 100:.2f}%",
            f"[yolo] anchors (pixels):       {px}",
            f"[region] anchors (grid cells): {cells}",
            "boxes per anchor: " + ", ".join(str(int(c)) for c in self.counts),
        ])


def _init_kmeanspp(boxes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [boxes[rng.integers(len(boxes))]]
    best = 1 - anchor_iou(boxes, np.array(centres))[:, 0]
    for _ in range(1, k):
        weights = best ** 2
        total = weights.sum()
        idx = rng.choice(len(boxes), p=weights / total) if total > 0 else rng.integers(len(boxes))
        centres.append(boxes[idx])
        best = np.minimum(best, 1 - anchor_iou(boxes, boxes[idx:idx + 1])[:, 0])
    return np.array(centres, dtype=np.float64)


def kmeans_anchors(sizes: np.ndarray, k: int, *, seed: int = 0, init: str = "kmeans++",
                   max_iter: int = 1000, width: int = 0, height: int = 0) -> AnchorResult:
    """k-means with 1 - IoU on (n, 2) box sizes (pixels); see the module
    docstring.  `width`/`height` are only recorded in the result."""
    boxes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    boxes = boxes[(boxes > 0).all(axis=1) & np.isfinite(boxes).all(axis=1)]
    if k < 1:
        raise ArgumentError(f"the number of anchors must be positive, got {k}")
    if len(np.unique(boxes, axis=0)) < k:
        raise DataError(f"{len(boxes)} boxes ({len(np.unique(boxes, axis=0))} distinct sizes) "
                        f"cannot give {k} anchors")
    rng = np.random.default_rng(seed)
    if init == "kmeans++":
        centres = _init_kmeanspp(boxes, k, rng)
    elif init == "random":
        distinct = np.unique(boxes, axis=0)
        centres = distinct[rng.choice(len(distinct), k, replace=False)].copy()
    else:
        raise ArgumentError(f"init must be 'kmeans++' or 'random', got {init!r}")
    assign = np.full(len(boxes), -1)
    iterations = 0
    for iterations in range(1, max_iter + 1):
        iou = anchor_iou(boxes, centres)
        new = iou.argmax(axis=1)
        if np.array_equal(new, assign):
            break
        assign = new
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros((k, 2))
        np.add.at(sums, assign, boxes)
        for j in range(k):
            if counts[j]:
                centres[j] = sums[j] / counts[j]
            else:  # empty cluster: take the box worst served by the others
                centres[j] = boxes[iou.max(axis=1).argmin()]
    order = np.argsort(centres[:, 0] * centres[:, 1], kind="stable")
    centres = centres[order]
    iou = anchor_iou(boxes, centres)
    counts = np.bincount(iou.argmax(axis=1), minlength=k)
    return AnchorResult(centres, float(iou.max(axis=1).mean()), width, height, len(boxes),
                        iterations, counts)


def label_sizes(data_file: str | os.PathLike[str], *, list_key: str = "train",
                progress: bool = True) -> np.ndarray:
    """(n, 2) relative w, h of every label box of a dataset's train list."""
    config = read_data_file(data_file)
    list_path = config.path_of(list_key)
    assert list_path is not None
    entries = read_image_list(list_path)
    chunks = []
    for e in progress_bar(entries, total=len(entries), desc="read labels", enabled=progress,
                          unit="img"):
        if e.label is None:
            raise DataError(f"{list_path}:{e.line}: {e.text} has no image extension")
        chunks.append(read_labels(e.label, config.classes)[:, 3:5])
    if not chunks:
        raise DataError(f"{list_path}: the list is empty")
    return np.concatenate(chunks).astype(np.float64)


def compute_anchors(data_file: str | os.PathLike[str], num: int, width: int, height: int, *,
                    seed: int = 0, init: str = "kmeans++", progress: bool = True) -> AnchorResult:
    """k-means anchors for a dataset (its train list) at a network size."""
    if width <= 0 or height <= 0:
        raise ArgumentError(f"network size must be positive, got {width}x{height}")
    rel = label_sizes(data_file, progress=progress)
    if len(rel) == 0:
        raise DataError(f"{data_file}: no label boxes in the train list")
    return kmeans_anchors(rel * np.array([width, height]), num, seed=seed, init=init,
                          width=width, height=height)


def _feeding_conv(cfg: Cfg, head: CfgSection) -> CfgSection:
    i = cfg.index(head)
    prev = cfg.sections[i - 1] if i > 0 else None
    if prev is None or prev.name not in ("convolutional", "conv"):
        raise CfgError(f"{head.where()}: [{head.name}] is not preceded by a [convolutional] "
                       "whose filters could be set")
    return prev


def set_anchors(cfg: Cfg, anchors: np.ndarray | Sequence[Sequence[float]], *,
                stride: int = REGION_STRIDE) -> Cfg:
    """Write anchors (pixels, (k, 2), sorted by area) into every [region]
    and [yolo] of `cfg`, in place; returns `cfg`.

    [region]: anchors / stride, `num=k`, feeding conv `filters=(classes +
    coords + 1) * k`.  [yolo]: anchors in pixels, `num=k`; the masks are kept
    when k equals the old `num`, else the sorted anchors are split into one
    contiguous group per [yolo], the largest group going to the head that had
    the largest anchors; feeding conv `filters=(classes + 5) * len(mask)`.
    """
    a = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    k = len(a)
    if k == 0 or not (a > 0).all():
        raise ArgumentError("anchors must be a non-empty list of positive (w, h)")
    regions, yolos = cfg.find("region"), cfg.find("yolo")
    if not regions and not yolos:
        raise CfgError(f"{cfg.source or '<cfg>'}: no [region] or [yolo] section to put anchors in")
    for r in regions:
        cells = [(round(w, 6), round(h, 6)) for w, h in (a / stride).tolist()]
        r.set("anchors", *anchor_line(cells))
        r.set("num", k)
        classes = r.get_int("classes", 20)
        coords = r.get_int("coords", 4)
        _feeding_conv(cfg, r).set("filters", (classes + coords + 1) * k)
    if yolos:
        old_num = {y.get_int("num", 1) for y in yolos}
        masks = [y.get_list("mask", [], item=int) for y in yolos]
        if old_num != {k} or any(not m or max(m) >= k for m in masks):
            # Group sizes as even as possible; the head with the largest old
            # anchors (highest mask index) gets the largest anchors.
            ranks = sorted(range(len(yolos)), key=lambda i: max(masks[i], default=-1))
            n = len(yolos)  # the remainder goes to the coarse heads, as yolov3_tiny() does
            sizes = [k // n + (1 if i >= n - k % n else 0) for i in range(n)]
            if min(sizes) == 0:
                raise ArgumentError(f"{k} anchors cannot be shared by {len(yolos)} [yolo] heads")
            start = 0
            for head, size in zip(ranks, sizes):
                masks[head] = list(range(start, start + size))
                start += size
        pixels = [(round(w, 2), round(h, 2)) for w, h in a.tolist()]
        for y, mask in zip(yolos, masks):
            y.set("mask", mask)
            y.set("anchors", *anchor_line(pixels))
            y.set("num", k)
            classes = y.get_int("classes", 20)
            _feeding_conv(cfg, y).set("filters", (classes + 5) * len(mask))
    return cfg


def update_cfg_file(cfg_path: str | os.PathLike[str], anchors: np.ndarray,
                    out_path: str | os.PathLike[str] | None = None) -> Path:
    """Read a cfg, set its anchors, write it back (or to `out_path`)."""
    cfg = Cfg.read(cfg_path)
    set_anchors(cfg, anchors)
    return cfg.write(out_path if out_path is not None else cfg_path)
