"""Detection quality: per-class AP and mAP, COCO metrics, COCO results JSON.

Pure functions on numpy arrays (testable without the engine), plus the
loop that runs a detector over a validation list (`validate`).

Matching: per class, the detections of all images are sorted by confidence
(stable, so ties keep their input order) and taken in that order.  Boxes
are continuous pixel coordinates (x1, y1, x2, y2); IoU has no "+1".
- "voc" and "voc07" (the VOC devkit's `voc_eval`, AlexeyAB's `detector map`): a
  detection's match is the ground truth of its class in its image with
  which it has the highest IoU, matched already or not; past the threshold
  it is a true positive if that truth is still free, a false positive if
  an earlier detection took it (a duplicate), and ignored if the truth is
  `difficult`; below the threshold, a false positive.
- "coco" (pycocotools): a detection's match is the free ground truth with
  the highest IoU past the threshold, the `difficult` ones (pycocotools'
  ignored ones) only where no other is left: a true positive, or ignored
  when its match is difficult; a false positive where there is none.
Ground truths marked `difficult` are not counted in either.

AP definitions (`method`):
- "voc" (default): VOC2010+ all-point interpolation, the area under the
  monotone precision envelope; a match needs IoU > threshold (darknet's
  strict comparison).
- "voc07": VOC2007's 11-point interpolation (the mean of the best
  precision at recall >= 0, .1, ..., 1), VOC matching: the number
  pjreddie's `reval_voc.py` reports for VOC2007 test.
- "coco": pycocotools' 101-point interpolation with IoU >= threshold and
  at most `max_detections` (100) detections per image and class; gives
  exactly pycocotools' per-class AP at that IoU.

mAP is the mean over classes that have ground truth (classes without any
have AP = nan and are left out, as pycocotools does; darknet would count
them as 0).
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .data import (ListEntry, progress_bar, read_data_file, read_image_list, read_labels)
from .errors import DarknetIOError, DataError

__all__ = [
    "COCO_STAT_NAMES", "ClassAP", "CocoMetrics", "ImageDetections", "ImageTruth", "MapResult",
    "ValidationRun", "box_iou", "coco_ap", "coco_evaluate", "coco_image_ids", "coco_results",
    "evaluate_map", "run_detector", "validate", "voc_ap", "write_coco_results",
]

# darknet's validation settings (validate_detector / validate_detector_map).
VALID_THRESH = 0.005
VALID_HIER_THRESH = 0.5
VALID_NMS = 0.45

COCO_STAT_NAMES = (
    "AP@[.5:.95]", "AP@.5", "AP@.75", "AP small", "AP medium", "AP large",
    "AR@1", "AR@10", "AR@100", "AR small", "AR medium", "AR large",
)


# -- inputs ----------------------------------------------------------------------


@dataclass
class ImageTruth:
    """Ground truth of one image: (n, 4) x1 y1 x2 y2 pixels, (n,) classes."""

    boxes: np.ndarray
    classes: np.ndarray
    difficult: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        if self.difficult is None:
            self.difficult = np.zeros(len(self.classes), dtype=bool)
        self.difficult = np.asarray(self.difficult, dtype=bool).reshape(-1)
        if not len(self.boxes) == len(self.classes) == len(self.difficult):
            raise ValueError("boxes, classes and difficult must have the same length")

    @classmethod
    def from_labels(cls, labels: np.ndarray, width: float, height: float) -> ImageTruth:
        """From darknet labels (n, 5) `class xc yc w h` relative to the image."""
        lab = np.asarray(labels, dtype=np.float64).reshape(-1, 5)
        xc, yc, w, h = lab[:, 1] * width, lab[:, 2] * height, lab[:, 3] * width, lab[:, 4] * height
        boxes = np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)
        return cls(boxes, lab[:, 0].astype(np.int64))


class _DetectionLike(Protocol):
    class_id: int
    confidence: float
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class ImageDetections:
    """Detections of one image: (m, 4) x1 y1 x2 y2 pixels, classes, scores."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if not len(self.boxes) == len(self.classes) == len(self.scores):
            raise ValueError("boxes, classes and scores must have the same length")

    @classmethod
    def from_detections(cls, dets: Sequence[_DetectionLike]) -> ImageDetections:
        """From the engine's Detection objects (class_id, confidence, x1..y2)."""
        return cls([(d.x1, d.y1, d.x2, d.y2) for d in dets], [d.class_id for d in dets],
                   [d.confidence for d in dets])


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x1 y1 x2 y2 box with (n, 4) boxes."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


# -- AP --------------------------------------------------------------------------


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP (VOC2010+ and darknet's default)."""
    mrec = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    mpre = np.concatenate([[0.0], np.asarray(precision, dtype=np.float64), [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007's 11-point interpolated AP."""
    rc = np.asarray(recall, dtype=np.float64)
    pr = np.asarray(precision, dtype=np.float64)
    points = [float(pr[rc >= t].max()) if (rc >= t).any() else 0.0 for t in np.arange(0.0, 1.1, 0.1)]
    return float(np.sum(points) / 11.0)


def coco_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """pycocotools' 101-point interpolated AP (the same arithmetic)."""
    rc = np.asarray(recall, dtype=np.float64)
    pr = np.maximum.accumulate(np.asarray(precision, dtype=np.float64)[::-1])[::-1]
    thresholds = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
    inds = np.searchsorted(rc, thresholds, side="left")
    q = np.zeros(len(thresholds))
    reached = inds < len(pr)  # recall levels never reached count as precision 0
    q[reached] = pr[inds[reached]]
    return float(np.mean(q))


@dataclass
class ClassAP:
    class_id: int
    name: str
    ap: float                 # nan when the class has no ground truth
    n_truth: int
    n_detections: int
    tp: int                   # at the report threshold (darknet prints them at 0.25)
    fp: int
    recall: np.ndarray = field(repr=False)      # cumulative, by descending confidence
    precision: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)


@dataclass
class MapResult:
    iou_threshold: float
    method: str
    classes: list[ClassAP]
    report_thresh: float = 0.25

    @property
    def map(self) -> float:
        aps = [c.ap for c in self.classes if c.n_truth > 0]
        return float(np.mean(aps)) if aps else float("nan")

    def totals(self) -> dict[str, float]:
        """TP/FP/FN, precision, recall, F1 at `report_thresh` over all classes."""
        tp = sum(c.tp for c in self.classes)
        fp = sum(c.fp for c in self.classes)
        fn = sum(c.n_truth for c in self.classes) - tp
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        return {"tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": r, "f1": f1}

    def to_dict(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return None if math.isnan(v) else round(float(v), 6)
        return {
            "iou_threshold": self.iou_threshold, "method": self.method, "map": num(self.map),
            "report_thresh": self.report_thresh, **self.totals(),
            "classes": [{"class_id": c.class_id, "name": c.name, "ap": num(c.ap),
                         "truths": c.n_truth, "detections": c.n_detections, "tp": c.tp, "fp": c.fp}
                        for c in self.classes],
        }

    def format(self) -> str:
        width = max([len(c.name) for c in self.classes] + [4])
        out = [f"{'id':>3} {'name':<{width}} {'AP':>7} {'truths':>7} {'TP':>6} {'FP':>6}"]
        absent = 0
        for c in self.classes:
            if c.n_truth == 0:
                absent += 1
                continue
            out.append(f"{c.class_id:3d} {c.name:<{width}} {c.ap * 100:6.2f}% {c.n_truth:7d} "
                       f"{c.tp:6d} {c.fp:6d}")
        if absent:
            out.append(f"({absent} classes without ground truth: not listed, not in the mAP)")
        t = self.totals()
        out.append(f"for conf_thresh = {self.report_thresh:.2f}: precision = {t['precision']:.2f}, "
                   f"recall = {t['recall']:.2f}, F1-score = {t['f1']:.2f} (TP = {t['tp']}, "
                   f"FP = {t['fp']}, FN = {t['fn']})")
        label = {"voc": "all-point", "voc07": "11-point", "coco": "101-point"}[self.method]
        if math.isnan(self.map):
            out.append(f"mAP@{self.iou_threshold:g} ({label}): no ground truth to measure it on")
        else:
            out.append(f"mAP@{self.iou_threshold:g} ({label}) = {self.map * 100:.2f}%")
        return "\n".join(out)


def evaluate_map(detections: Sequence[ImageDetections], truths: Sequence[ImageTruth],
                 num_classes: int, iou_threshold: float = 0.5, *,
                 names: Sequence[str] | None = None, method: str = "voc",
                 max_detections: int | None = None, report_thresh: float = 0.25) -> MapResult:
    """Per-class AP and mAP; `detections[i]` and `truths[i]` belong to the
    same image.  See the module docstring for matching and `method`."""
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} detection lists for {len(truths)} images")
    if method not in ("voc", "voc07", "coco"):
        raise ValueError(f"method must be 'voc', 'voc07' or 'coco', got {method!r}")
    for kind, items in (("truths", truths), ("detections", detections)):
        for i, item in enumerate(items):
            outside = (item.classes < 0) | (item.classes >= num_classes)
            if outside.any():
                raise ValueError(f"{kind} of image {i}: class {int(item.classes[outside][0])} is "
                                 f"outside 0..{num_classes - 1}")
    if max_detections is None and method == "coco":
        max_detections = 100
    voc_matching = method != "coco"  # "voc", "voc07"
    results = []
    for c in range(num_classes):
        # Ground truth of class c per image.
        gt_boxes = [t.boxes[t.classes == c] for t in truths]
        gt_diff = [t.difficult[t.classes == c] for t in truths]  # type: ignore[index]
        n_truth = int(sum((~d).sum() for d in gt_diff))
        # Detections of class c, all images, by descending score (stable).
        img_of, boxes, scores = [], [], []
        for i, d in enumerate(detections):
            sel = np.flatnonzero(d.classes == c)
            if max_detections is not None and len(sel) > max_detections:
                sel = sel[np.argsort(-d.scores[sel], kind="mergesort")[:max_detections]]
            img_of.append(np.full(len(sel), i))
            boxes.append(d.boxes[sel])
            scores.append(d.scores[sel])
        img_arr = np.concatenate(img_of) if img_of else np.zeros(0, np.int64)
        box_arr = np.concatenate(boxes) if boxes else np.zeros((0, 4))
        score_arr = np.concatenate(scores) if scores else np.zeros(0)
        order = np.argsort(-score_arr, kind="mergesort")
        matched = [np.zeros(len(b), dtype=bool) for b in gt_boxes]
        tp = np.zeros(len(order))
        fp = np.zeros(len(order))
        for rank, j in enumerate(order):
            img = img_arr[j]
            g = gt_boxes[img]
            if len(g) == 0:
                fp[rank] = 1
                continue
            iou = box_iou(box_arr[j], g)
            if voc_matching:  # the best truth, taken or not
                best = int(np.argmax(iou))  # the first of equal IoUs, as the devkit
                if iou[best] <= iou_threshold:
                    fp[rank] = 1
                elif gt_diff[img][best]:
                    continue  # its match is difficult: ignored
                elif matched[img][best]:
                    fp[rank] = 1  # a duplicate
                else:
                    matched[img][best] = True
                    tp[rank] = 1
                continue
            ok = iou >= iou_threshold
            free = ok & ~matched[img] & ~gt_diff[img]
            if free.any():
                cand = np.where(free, iou, -1.0)
                best = len(cand) - 1 - int(np.argmax(cand[::-1]))  # pycocotools: the last of equal IoUs
                matched[img][best] = True
                tp[rank] = 1
            elif (ok & gt_diff[img]).any():
                continue  # matches only a difficult truth: ignored
            else:
                fp[rank] = 1
        keep = (tp + fp) > 0
        tp_c, fp_c = np.cumsum(tp[keep]), np.cumsum(fp[keep])
        sorted_scores = score_arr[order][keep]
        if n_truth:
            recall = tp_c / n_truth
            if method == "coco":
                precision = tp_c / (tp_c + fp_c + np.spacing(1))
                ap = coco_ap(recall, precision)
            else:
                precision = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).eps)
                ap = voc_ap(recall, precision) if method == "voc" else voc07_ap(recall, precision)
        else:
            recall = np.zeros(len(tp_c))
            precision = tp_c / np.maximum(tp_c + fp_c, 1)
            ap = float("nan")
        above = sorted_scores >= report_thresh
        results.append(ClassAP(
            class_id=c, name=names[c] if names is not None and c < len(names) else str(c),
            ap=ap, n_truth=n_truth, n_detections=int(len(order)),
            tp=int(tp[keep][above].sum()), fp=int(fp[keep][above].sum()),
            recall=recall, precision=precision, scores=sorted_scores))
    return MapResult(iou_threshold, method, results, report_thresh)


# -- COCO ------------------------------------------------------------------------


def coco_results(detections: Sequence[ImageDetections], image_ids: Sequence[int | str],
                 category_ids: Sequence[int], *, decimals: int | None = 3) -> list[dict[str, Any]]:
    """COCO results: `[{image_id, category_id, bbox: [x, y, w, h] (top-left,
    pixels), score}]`; class i is reported as `category_ids[i]` (the
    original COCO id)."""
    if len(detections) != len(image_ids):
        raise ValueError(f"{len(detections)} detection lists for {len(image_ids)} image ids")
    out: list[dict[str, Any]] = []
    for det, image_id in zip(detections, image_ids):
        rows = zip(det.boxes.tolist(), det.classes.tolist(), det.scores.tolist())
        for (x1, y1, x2, y2), c, s in rows:
            if not 0 <= c < len(category_ids):
                raise ValueError(f"class {c} has no category id ({len(category_ids)} given)")
            box = [x1, y1, x2 - x1, y2 - y1]
            if decimals is not None:
                box = [round(v, decimals) for v in box]
            out.append({"image_id": image_id, "category_id": int(category_ids[c]), "bbox": box,
                        "score": float(s)})
    return out


def write_coco_results(path: str | os.PathLike[str], results: list[dict[str, Any]]) -> Path:
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "w") as f:
            json.dump(results, f)
    except OSError as e:
        raise DarknetIOError(f"{p}: cannot write: {e.strerror or e}") from None
    return p


@dataclass
class CocoMetrics:
    stats: list[float]   # pycocotools' 12 numbers, see COCO_STAT_NAMES
    text: str            # pycocotools' printed summary

    @property
    def map(self) -> float:
        return self.stats[0]

    @property
    def map50(self) -> float:
        return self.stats[1]

    @property
    def map75(self) -> float:
        return self.stats[2]

    def to_dict(self) -> dict[str, float]:
        return {n: round(float(v), 6) for n, v in zip(COCO_STAT_NAMES, self.stats)}


def _load_json(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return json.load(f)
    except OSError as e:
        raise DarknetIOError(f"{p}: cannot read: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}") from None


def coco_evaluate(ground_truth: str | os.PathLike[str] | dict[str, Any],
                  results: list[dict[str, Any]],
                  image_ids: Sequence[int] | None = None) -> CocoMetrics:
    """COCO bbox metrics by pycocotools (its output captured in `text`).
    `image_ids` restricts the evaluation (e.g. to the validation split)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    doc = ground_truth if isinstance(ground_truth, dict) else _load_json(ground_truth)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        gt = COCO()
        gt.dataset = doc
        gt.createIndex()
        if not results:
            return CocoMetrics([0.0] * 12, "no detections")
        dt = gt.loadRes(list(results))
        ev = COCOeval(gt, dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [max(float(v), 0.0) if v != -1 else float("nan") for v in ev.stats]
    text = "\n".join(line for line in buf.getvalue().splitlines()
                     if line.startswith(" Average"))
    return CocoMetrics(stats, text)


def coco_image_ids(doc: dict[str, Any], image_paths: Sequence[str]) -> list[int]:
    """The COCO image id of each listed image, by matching the end of its
    path with the JSON's `file_name`, the longest match winning (the
    converter lists OUT_DIR/images/<folder>/<file_name>)."""
    by_name = {str(im["file_name"]).replace("\\", "/"): im["id"] for im in doc.get("images", [])}
    depth = max((n.count("/") + 1 for n in by_name), default=1)
    out = []
    for p in image_paths:
        parts = str(p).replace("\\", "/").split("/")
        for k in range(min(depth, len(parts)), 0, -1):  # the longest matching tail
            key = "/".join(parts[-k:])
            if key in by_name:
                out.append(by_name[key])
                break
        else:
            raise DataError(f"{p}: no image with this file_name in the COCO JSON")
    return out


# -- running a detector over a list ----------------------------------------------


class _DetectorLike(Protocol):
    def detect(self, frame: np.ndarray, thresh: float = ..., hier_thresh: float = ...,
               nms: float = ..., letterbox: bool = ..., nms_kind: str = ...) -> Sequence[Any]: ...


def run_detector(detector: _DetectorLike, image_paths: Sequence[Path], *,
                 thresh: float = VALID_THRESH, hier_thresh: float = VALID_HIER_THRESH,
                 nms: float = VALID_NMS, progress: bool = True
                 ) -> tuple[list[ImageDetections], list[tuple[int, int]]]:
    """Detections (clipped to the image) and (width, height) of every
    image, with darknet's validation settings by default (thresh .005, nms
    .45, letterbox)."""
    import cv2

    dets: list[ImageDetections] = []
    sizes: list[tuple[int, int]] = []
    for path in progress_bar(image_paths, total=len(image_paths), desc="detect", enabled=progress,
                             unit="img"):
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise DataError(f"{path}: cannot read image")
        h, w = frame.shape[:2]
        sizes.append((w, h))
        found = detector.detect(frame, thresh=thresh, hier_thresh=hier_thresh, nms=nms,
                                letterbox=True)
        d = ImageDetections.from_detections(found)
        # boxes clipped to the image, as darknet's validate_detector writes them
        d.boxes = np.clip(d.boxes, 0, [w, h, w, h])
        dets.append(d)
    return dets, sizes


@dataclass
class ValidationRun:
    """Everything `pydarknet map` / `valid` compute."""

    entries: list[ListEntry]
    names: list[str]
    detections: list[ImageDetections]
    sizes: list[tuple[int, int]]
    truths: list[ImageTruth]
    image_ids: list[int | str]
    category_ids: list[int]
    coco_json: Path | None

    def map(self, iou_threshold: float = 0.5, method: str = "voc") -> MapResult:
        return evaluate_map(self.detections, self.truths, len(self.names), iou_threshold,
                            names=self.names, method=method)

    def results(self) -> list[dict[str, Any]]:
        return coco_results(self.detections, self.image_ids, self.category_ids)

    def coco(self) -> CocoMetrics | None:
        if self.coco_json is None:
            return None
        return coco_evaluate(self.coco_json, self.results(), [int(i) for i in self.image_ids])


def _fallback_image_id(entry: ListEntry) -> int | str:
    stem = Path(entry.text).stem
    digits = stem.rsplit("_", 1)[-1]
    return int(digits) if digits.isdigit() else stem


def validate(data_file: str | os.PathLike[str], make_detector: Callable[[Path], Any], *,
             limit: int | None = None, progress: bool = True, thresh: float = VALID_THRESH,
             nms: float = VALID_NMS, need_truth: bool = True) -> ValidationRun:
    """Run a detector over the `valid=` list of a .data file.

    `make_detector(names_file)` returns an object with `detect(frame, ...)`
    (pydarknet.detect.Detector; closed afterwards if it has `close`).  Image
    ids and category ids come from `coco_json=` when the .data has one
    (written by `pydarknet data coco`); otherwise the image id is the number
    at the end of the file name (darknet's rule for COCO file names) or the
    file name's stem, and the category id is the class index.
    """
    config = read_data_file(data_file)
    names = config.read_names()
    valid_path = config.path_of("valid")
    assert valid_path is not None
    entries = read_image_list(valid_path)
    if limit is not None:
        entries = entries[:limit]
    if not entries:
        raise DataError(f"{valid_path}: the validation list is empty")
    coco_json = config.path_of("coco_json", required=False)
    category_ids = list(range(len(names)))
    image_ids: list[int | str]
    if coco_json is not None:
        doc = _load_json(coco_json)
        cats = sorted(int(c["id"]) for c in doc.get("categories", []))
        if len(cats) != len(names):
            raise DataError(f"{coco_json}: {len(cats)} categories, but {len(names)} class names")
        category_ids = cats
        image_ids = list(coco_image_ids(doc, [e.text for e in entries]))
    else:
        image_ids = [_fallback_image_id(e) for e in entries]

    truths_labels = []
    if need_truth:
        for e in entries:
            if e.label is None:
                raise DataError(f"{valid_path}:{e.line}: {e.text} has no image extension")
            truths_labels.append(read_labels(e.label, config.classes))
    names_path = config.path_of("names")
    assert names_path is not None
    detector = make_detector(names_path)
    try:
        dets, sizes = run_detector(detector, [e.image for e in entries], thresh=thresh, nms=nms,
                                   progress=progress)
    finally:
        close = getattr(detector, "close", None)
        if close is not None:
            close()
    truths = [ImageTruth.from_labels(lab, w, h) for lab, (w, h) in zip(truths_labels, sizes)]
    return ValidationRun(entries, names, dets, sizes, truths, image_ids, category_ids, coco_json)
