"""COCO instances JSON -> darknet dataset (labels, lists, .names, .data).

    pydarknet data coco annotations/instances_train2017.json train2017/ coco-dn/

Layout written into OUT_DIR (darknet finds a label file from the image path
by replacing the first `images` with `labels`, so images and labels must sit
under parallel `images/` and `labels/` folders):

    OUT_DIR/images/train2017 -> IMAGES_DIR     (a symlink; --copy-images copies
                                                the listed images instead)
    OUT_DIR/labels/train2017/000000000009.txt  (one per listed image)
    OUT_DIR/train.txt, OUT_DIR/valid.txt       (absolute image paths under
                                                OUT_DIR/images/...)
    OUT_DIR/coco.names, OUT_DIR/coco.data, OUT_DIR/backup/

When IMAGES_DIR already lies under OUT_DIR/images/, the images are listed in
place and no link is made.  The input folders are never written to.  Each
label path is computed with darknet's rule (`data.label_path_for`) from the
listed path, and the conversion refuses an OUT_DIR whose own path contains
`images`, `JPEGImages` or `raw` (darknet would then look for labels elsewhere).

Conversion rules: COCO category ids are mapped to 0..N-1 in sorted id order
(80 classes for COCO 2017); `bbox` [x, y, w, h] (top-left, pixels) is
clipped to the image and written as `class xc yc w h` relative to the image
size, 6 decimals; `iscrowd` boxes are skipped (`keep_crowd` keeps them);
boxes with w or h <= 0 are dropped as zero-area, boxes with nothing left
after clipping as outside the image; annotations naming an unknown image or
category are dropped and reported; images without boxes get an empty label
file (`drop_empty` leaves them out); images whose file is missing are left
out and reported (`check_images=False` skips the check, for benchmarks and
for annotation-only runs).  The validation list is a seeded random
`valid_fraction` of the images, or the images of a second JSON (`valid_json`).
The .data file gets `eval=coco` and `coco_json=` (the JSON holding the
validation images) so that `pydarknet map` also reports COCO mAP.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data import (DataConfig, label_path_for, label_path_str, progress_bar, write_data_file,
                   write_image_list, write_names)
from .errors import DarknetIOError, DataError

__all__ = ["CocoConversion", "CocoDataset", "convert_coco", "load_coco", "prepare_image_root"]

_EXAMPLES = 10  # how many ids / files a summary lists per kind


# -- reading ---------------------------------------------------------------------


@dataclass
class CocoDataset:
    """The parts of a COCO instances JSON the converter uses, as arrays."""

    path: Path
    image_ids: np.ndarray           # (I,) int64, in JSON order
    file_names: list[str]
    widths: np.ndarray              # (I,) float64
    heights: np.ndarray
    category_ids: np.ndarray        # (C,) int64, sorted: class i is category_ids[i]
    category_names: list[str]
    ann_image_ids: np.ndarray       # (A,) int64
    ann_category_ids: np.ndarray    # (A,) int64
    ann_boxes: np.ndarray           # (A, 4) float64, x y w h
    ann_crowd: np.ndarray           # (A,) bool

    def image_index(self) -> dict[str, int]:
        """file_name -> image id."""
        return dict(zip(self.file_names, self.image_ids.tolist()))


def _fail(path: Path, where: str, message: str) -> DataError:
    return DataError(f"{path}: {where}: {message}")


def _locate(items: list[Any], section: str, path: Path, check: Any) -> None:
    """Slow pass that finds the first bad element for the error message."""
    for i, item in enumerate(items):
        ident = f" (id {item.get('id')!r})" if isinstance(item, dict) and "id" in item else ""
        where = f"{section}[{i}]{ident}"
        if not isinstance(item, dict):
            raise _fail(path, where, f"expected an object, found {type(item).__name__}")
        check(item, where)


def _number(item: dict[str, Any], key: str, where: str, path: Path, *, integer: bool = False,
            positive: bool = False) -> None:
    if key not in item:
        raise _fail(path, where, f"missing '{key}'")
    v = item[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not float(v).is_integer()):
        raise _fail(path, where, f"'{key}' must be {'an integer' if integer else 'a number'}, got {v!r}")
    if integer and not -2**63 <= v < 2**63:
        raise _fail(path, where, f"'{key}' is out of range: {v!r}")
    if positive and not (v > 0 and math.isfinite(v)):
        raise _fail(path, where, f"'{key}' must be positive and finite, got {v!r}")


def _whole_numbers(values: list[Any]) -> np.ndarray:
    """int64 array of JSON ints (or integral floats) within int64; ValueError
    for anything else (strings, bools, 1.5), which numpy would convert."""
    if not set(map(type, values)) <= {int, float}:
        raise ValueError("not numbers")
    array = np.array(values)
    if array.dtype == np.float64:
        if not np.all(np.isfinite(array) & (array == np.floor(array)) & (np.abs(array) < 2.0**63)):
            raise ValueError("not whole numbers")
        return array.astype(np.int64)
    if array.dtype != np.int64:  # (an empty list is float64, handled above)
        raise ValueError("out of range")  # past int64: an object array
    return array


def _real_numbers(values: list[Any]) -> np.ndarray:
    """float64 array of JSON numbers; ValueError for strings and bools."""
    if not set(map(type, values)) <= {int, float}:
        raise ValueError("not numbers")
    return np.array(values, dtype=np.float64)


def load_coco(path: str | os.PathLike[str]) -> CocoDataset:
    """Read and check a COCO instances JSON (DataError naming the file and
    the element, e.g. `annotations[12] (id 345): missing 'bbox'`)."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise DarknetIOError(f"{p}: annotation file not found") from None
    except OSError as e:
        raise DarknetIOError(f"{p}: cannot read: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}") from None
    except UnicodeDecodeError:
        raise DataError(f"{p}: not UTF-8 JSON") from None
    if not isinstance(doc, dict):
        raise DataError(f"{p}: expected a JSON object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if key not in doc:
            raise DataError(f"{p}: missing top-level '{key}' (is this an instances JSON?)")
        if not isinstance(doc[key], list):
            raise DataError(f"{p}: '{key}' must be a list")
    images, anns, cats = doc["images"], doc["annotations"], doc["categories"]

    # images
    try:
        image_ids = _whole_numbers([im["id"] for im in images])
        widths = _real_numbers([im["width"] for im in images])
        heights = _real_numbers([im["height"] for im in images])
        file_names = [im["file_name"] for im in images]
        ok = (all(isinstance(f, str) and f for f in file_names)
              and bool(np.all((widths > 0) & np.isfinite(widths)))
              and bool(np.all((heights > 0) & np.isfinite(heights))))
    except (KeyError, TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        def check_image(im: dict[str, Any], where: str) -> None:
            _number(im, "id", where, p, integer=True)
            _number(im, "width", where, p, positive=True)
            _number(im, "height", where, p, positive=True)
            if not isinstance(im.get("file_name"), str) or not im["file_name"]:
                raise _fail(p, where, "missing or empty 'file_name'")
        _locate(images, "images", p, check_image)
        raise DataError(f"{p}: bad 'images' entries")  # pragma: no cover (located above)
    uniq, counts = np.unique(image_ids, return_counts=True)
    if len(uniq) != len(image_ids):
        raise DataError(f"{p}: image id {int(uniq[counts > 1][0])} appears more than once")
    dup = _first_duplicate(file_names)
    if dup is not None:
        raise DataError(f"{p}: file_name {dup!r} appears more than once")

    # categories
    def check_cat(c: dict[str, Any], where: str) -> None:
        _number(c, "id", where, p, integer=True)
        name = c.get("name")
        if not isinstance(name, str) or not name.strip() or "\n" in name:
            raise _fail(p, where, "missing or bad 'name'")
    _locate(cats, "categories", p, check_cat)
    if not cats:
        raise DataError(f"{p}: no categories")
    cat_pairs = sorted((int(c["id"]), c["name"].strip()) for c in cats)
    cat_ids = np.array([c for c, _ in cat_pairs], dtype=np.int64)
    if len(np.unique(cat_ids)) != len(cat_ids):
        raise DataError(f"{p}: a category id appears more than once")
    dup_name = _first_duplicate([name for _, name in cat_pairs])
    if dup_name is not None:
        ids = [c for c, name in cat_pairs if name == dup_name]
        raise DataError(f"{p}: category name {dup_name!r} is used by ids {ids} (the .names file "
                        "needs one name per class)")

    # annotations
    n = len(anns)
    try:
        ann_img = _whole_numbers([a["image_id"] for a in anns])
        ann_cat = _whole_numbers([a["category_id"] for a in anns])
        bboxes = [a["bbox"] for a in anns]
        if not set(map(type, bboxes)) <= {list} or not all(len(b) == 4 for b in bboxes):
            raise ValueError("bbox not a list of 4")
        boxes = _real_numbers(list(itertools.chain.from_iterable(bboxes))).reshape(n, 4)
        crowd_values = [a.get("iscrowd", 0) for a in anns]
        if not set(map(type, crowd_values)) <= {int, bool, float} or not set(crowd_values) <= {0, 1}:
            raise ValueError("iscrowd not 0 or 1")
        crowd = np.array(crowd_values, dtype=bool)
        ok = True
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
        ok = False
    if not ok:
        def check_ann(a: dict[str, Any], where: str) -> None:
            _number(a, "image_id", where, p, integer=True)
            _number(a, "category_id", where, p, integer=True)
            box = a.get("bbox")
            if not isinstance(box, list) or len(box) != 4 or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
                raise _fail(p, where, f"'bbox' must be [x, y, width, height], got {box!r}")
            if "iscrowd" in a and a["iscrowd"] not in (0, 1, True, False):
                raise _fail(p, where, f"'iscrowd' must be 0 or 1, got {a['iscrowd']!r}")
        _locate(anns, "annotations", p, check_ann)
        raise DataError(f"{p}: bad 'annotations' entries")  # pragma: no cover
    return CocoDataset(p, image_ids, file_names, widths, heights, cat_ids,
                       [name for _, name in cat_pairs], ann_img, ann_cat, boxes, crowd)


def _first_duplicate(items: Sequence[str]) -> str | None:
    if len(set(items)) == len(items):
        return None
    seen: set[str] = set()
    for x in items:
        if x in seen:
            return x
        seen.add(x)
    return None  # pragma: no cover


# -- labels ----------------------------------------------------------------------


@dataclass
class _Labels:
    """Per-annotation outcome of the conversion of one JSON."""

    text: list[str]                 # label file text per image (JSON order)
    n_boxes: np.ndarray             # boxes written per image
    box_image: np.ndarray           # image index of each written box
    box_class: np.ndarray           # class of each written box
    dropped: dict[str, int]
    clipped: int
    unknown_image_ids: list[int]
    unknown_category_ids: list[int]


def _lookup(sorted_ids: np.ndarray, order: np.ndarray, values: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Index of each value in the id array (via its argsort), and a found mask."""
    if len(sorted_ids) == 0:
        return np.zeros(len(values), np.int64), np.zeros(len(values), bool)
    pos = np.minimum(np.searchsorted(sorted_ids, values), len(sorted_ids) - 1)
    return order[pos], sorted_ids[pos] == values


def _make_labels(ds: CocoDataset, classes: np.ndarray, keep_crowd: bool) -> _Labels:
    n_img = len(ds.image_ids)
    img_order = np.argsort(ds.image_ids, kind="stable")
    img_idx, img_found = _lookup(ds.image_ids[img_order], img_order, ds.ann_image_ids)
    cat_idx, cat_found = _lookup(classes, np.arange(len(classes)), ds.ann_category_ids)

    x, y, w, h = ds.ann_boxes.T
    finite = np.isfinite(ds.ann_boxes).all(axis=1)
    unknown_image = ~img_found
    unknown_cat = img_found & ~cat_found
    valid = img_found & cat_found
    crowd = valid & ds.ann_crowd & (not keep_crowd)
    valid &= ~crowd
    zero = valid & (~finite | (w <= 0) | (h <= 0))
    valid &= ~zero
    W = ds.widths[img_idx]
    H = ds.heights[img_idx]
    with np.errstate(invalid="ignore"):
        x1 = np.clip(x, 0, W)
        y1 = np.clip(y, 0, H)
        x2 = np.clip(x + w, 0, W)
        y2 = np.clip(y + h, 0, H)
    outside = valid & ((x2 <= x1) | (y2 <= y1))
    valid &= ~outside
    clipped = valid & ((x1 != x) | (y1 != y) | (x2 != x + w) | (y2 != y + h))

    keep = np.flatnonzero(valid)
    keep = keep[np.argsort(img_idx[keep], kind="stable")]  # by image, JSON order within
    k_img = img_idx[keep]
    k_cls = cat_idx[keep]
    Wk, Hk = W[keep], H[keep]
    xc = ((x1[keep] + x2[keep]) / 2 / Wk).tolist()
    yc = ((y1[keep] + y2[keep]) / 2 / Hk).tolist()
    wn = ((x2[keep] - x1[keep]) / Wk).tolist()
    hn = ((y2[keep] - y1[keep]) / Hk).tolist()
    lines = [f"{c} {a:.6f} {b:.6f} {d:.6f} {e:.6f}\n"
             for c, a, b, d, e in zip(k_cls.tolist(), xc, yc, wn, hn)]
    n_boxes = np.bincount(k_img, minlength=n_img)
    bounds = np.concatenate([[0], np.cumsum(n_boxes)]).tolist()
    text = ["".join(lines[bounds[i]:bounds[i + 1]]) if n_boxes[i] else "" for i in range(n_img)]
    dropped = {
        "crowd": int(crowd.sum()),
        "zero_area": int(zero.sum()),
        "outside_image": int(outside.sum()),
        "unknown_image": int(unknown_image.sum()),
        "unknown_category": int(unknown_cat.sum()),
    }
    return _Labels(
        text=text, n_boxes=n_boxes, box_image=k_img, box_class=k_cls,
        dropped=dropped, clipped=int(clipped.sum()),
        unknown_image_ids=sorted(set(ds.ann_image_ids[unknown_image].tolist()))[:_EXAMPLES],
        unknown_category_ids=sorted(set(ds.ann_category_ids[unknown_cat].tolist()))[:_EXAMPLES],
    )


# -- output layout ---------------------------------------------------------------


def _check_rel_name(file_name: str, json_path: Path) -> str:
    rel = file_name.replace("\\", "/")
    parts = rel.split("/")
    if rel.startswith("/") or ".." in parts or any(p == "" for p in parts):
        raise DataError(f"{json_path}: file_name {file_name!r} must be a relative path inside "
                        "the image folder")
    return rel


def prepare_image_root(images_dir: Path, out_dir: Path, sub: str, copy: bool) -> tuple[Path, str]:
    """Where the listed images live under OUT_DIR/images, and how
    ("in place", "symlink" or "copy")."""
    out_images = out_dir / "images"
    src = images_dir.resolve()
    if not copy:
        try:
            rel = src.relative_to(out_images.resolve())
            return out_images / rel, "in place"
        except ValueError:
            pass
    link = out_images / sub
    try:
        out_images.mkdir(parents=True, exist_ok=True)
        if copy:
            if link.is_symlink():
                link.unlink()
            link.mkdir(exist_ok=True)
            return link, "copy"
        if link.is_symlink():
            if link.resolve() == src:
                return link, "symlink"
            link.unlink()
        elif link.exists():
            raise DataError(f"{link} exists and is not a link to {src}: remove it, or use "
                            "another OUT_DIR")
        link.symlink_to(src, target_is_directory=True)
    except OSError as e:
        raise DarknetIOError(f"{link}: cannot create the image link ({e.strerror or e}); "
                             "use --copy-images") from None
    return link, "symlink"


def _check_out_dir(out_dir: Path) -> None:
    probe = out_dir / "images" / "x.jpg"
    expected = out_dir / "labels" / "x.txt"
    if label_path_for(probe) != expected:
        raise DataError(f"OUT_DIR {out_dir} contains 'images', 'JPEGImages' or 'raw' in its path: darknet "
                        f"would look for the labels of {probe} at {label_path_for(probe)}. "
                        "Choose an OUT_DIR without them.")


def _write_files(paths: Sequence[str], texts: Sequence[str], progress: bool, desc: str) -> None:
    """Write many small files (plain os calls: most of the time is the file
    system creating 100k files; threads do not help on one directory)."""
    try:
        for parent in sorted({os.path.dirname(p) for p in paths}):
            os.makedirs(parent, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
        for path, text in progress_bar(zip(paths, texts), total=len(paths), desc=desc,
                                       enabled=progress, unit="file"):
            fd = os.open(path, flags, 0o644)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
    except OSError as e:
        raise DarknetIOError(f"cannot write label files: {e}") from None


# -- conversion ------------------------------------------------------------------


@dataclass
class CocoConversion:
    """What `convert_coco` did (printed by `pydarknet data coco`)."""

    out_dir: Path
    data_file: Path
    names_file: Path
    train_list: Path
    valid_list: Path
    class_names: list[str]
    category_ids: list[int]
    images_in_json: int = 0
    images_train: int = 0
    images_valid: int = 0
    images_empty: int = 0            # listed, with an empty label file
    images_dropped_empty: int = 0    # left out by drop_empty
    images_missing: int = 0          # file not found: left out
    missing_examples: list[str] = field(default_factory=list)
    annotations: int = 0
    boxes_written: int = 0
    boxes_per_class: list[int] = field(default_factory=list)
    boxes_on_missing_images: int = 0
    clipped: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    unknown_image_ids: list[int] = field(default_factory=list)
    unknown_category_ids: list[int] = field(default_factory=list)
    image_mode: str = ""
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    def format(self) -> str:
        d = self.dropped
        out = [
            f"images: {self.images_in_json} in the JSON; listed {self.images_train} train + "
            f"{self.images_valid} valid ({self.images_empty} without objects: empty label files)",
            f"boxes:  {self.annotations} annotations -> {self.boxes_written} written "
            f"({self.clipped} clipped to the image)",
            f"dropped boxes: {d.get('crowd', 0)} crowd, {d.get('zero_area', 0)} zero-area, "
            f"{d.get('outside_image', 0)} outside the image, {d.get('unknown_image', 0)} on unknown "
            f"images, {d.get('unknown_category', 0)} of unknown categories, "
            f"{self.boxes_on_missing_images} on missing image files",
        ]
        if self.images_dropped_empty:
            out.append(f"dropped images: {self.images_dropped_empty} without objects (--drop-empty)")
        if self.images_missing:
            out.append(f"missing image files: {self.images_missing}, e.g. "
                       + ", ".join(self.missing_examples[:3]))
        if self.unknown_image_ids:
            out.append("unknown image ids: " + ", ".join(map(str, self.unknown_image_ids)))
        if self.unknown_category_ids:
            out.append("unknown category ids: " + ", ".join(map(str, self.unknown_category_ids)))
        width = max((len(n) for n in self.class_names), default=4)
        out.append("boxes per class (class, COCO id, name, boxes):")
        out.extend(f"  {i:3d} {cid:4d} {n:<{width}} {c:8d}" for i, (cid, n, c) in
                   enumerate(zip(self.category_ids, self.class_names, self.boxes_per_class)))
        out.append(f"wrote {self.data_file} (images: {self.image_mode}) in {self.seconds:.1f} s")
        return "\n".join(out)


@dataclass
class _Split:
    ds: CocoDataset
    images_dir: Path
    sub: str
    labels: _Labels
    listed: np.ndarray  # bool per image
    missing: np.ndarray


def convert_coco(instances_json: str | os.PathLike[str], images_dir: str | os.PathLike[str],
                 out_dir: str | os.PathLike[str], *, keep_crowd: bool = False,
                 drop_empty: bool = False, valid_fraction: float = 0.1,
                 valid_json: str | os.PathLike[str] | None = None,
                 valid_images_dir: str | os.PathLike[str] | None = None, seed: int = 0,
                 copy_images: bool = False, check_images: bool = True, name: str = "coco",
                 progress: bool = True, status: Callable[[str], None] | None = None
                 ) -> CocoConversion:
    """Convert a COCO instances JSON (and its image folder) into a darknet
    dataset in `out_dir`.  See the module docstring for the layout and the
    rules; returns the summary.  `status` is called with a line before each
    long step without a progress bar (reading a 450 MB JSON takes a while)."""
    t0 = time.perf_counter()
    say = status or (lambda _line: None)
    if not 0 <= valid_fraction < 1:
        raise DataError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    images_path = Path(images_dir)
    if check_images and not images_path.is_dir():
        raise DarknetIOError(f"{images_path}: image folder not found")
    out = Path(out_dir).resolve()
    _check_out_dir(out)

    timings: dict[str, float] = {}
    say(f"reading {instances_json}")
    train_ds = load_coco(instances_json)
    classes = train_ds.category_ids
    splits = [(train_ds, images_path)]
    if valid_json is not None:
        say(f"reading {valid_json}")
        valid_ds = load_coco(valid_json)
        if (not np.array_equal(valid_ds.category_ids, classes)
                or valid_ds.category_names != train_ds.category_names):
            raise DataError(f"{valid_json}: its categories differ from those of {instances_json}")
        vdir = Path(valid_images_dir) if valid_images_dir is not None else images_path
        if check_images and not vdir.is_dir():
            raise DarknetIOError(f"{vdir}: image folder not found")
        splits.append((valid_ds, vdir))

    timings["load json"] = time.perf_counter() - t0
    parts: list[_Split] = []
    subs: list[str] = []
    for ds, idir in splits:
        say(f"converting {len(ds.ann_image_ids)} annotations of {len(ds.image_ids)} images")
        labels = _make_labels(ds, classes, keep_crowd)
        rel_names = [_check_rel_name(f, ds.path) for f in ds.file_names]
        if check_images:
            root = str(idir)
            exists = [os.path.isfile(os.path.join(root, f)) for f in
                      progress_bar(rel_names, total=len(rel_names), desc="find images",
                                   enabled=progress, unit="img")]
            missing = ~np.array(exists, dtype=bool).reshape(-1)
        else:
            missing = np.zeros(len(rel_names), dtype=bool)
        listed = ~missing
        if drop_empty:
            listed &= labels.n_boxes > 0
        sub = idir.resolve().name or "images0"
        if sub in subs and idir.resolve() != splits[0][1].resolve():
            sub = f"{sub}_valid"
        subs.append(sub)
        parts.append(_Split(ds, idir, sub, labels, listed, missing))

    summary = CocoConversion(
        out_dir=out, data_file=out / f"{name}.data", names_file=out / f"{name}.names",
        train_list=out / "train.txt", valid_list=out / "valid.txt",
        class_names=train_ds.category_names, category_ids=classes.tolist(),
        boxes_per_class=[0] * len(classes))

    # Split: a seeded fraction of the first JSON's listed images, or the second JSON.
    if valid_json is None:
        idx = np.flatnonzero(parts[0].listed)
        n_valid = int(round(valid_fraction * len(idx)))
        if valid_fraction > 0 and len(idx) >= 2:
            n_valid = min(max(n_valid, 1), len(idx) - 1)
        chosen = np.random.default_rng(seed).permutation(len(idx))[:n_valid]
        is_valid = np.zeros(len(parts[0].listed), dtype=bool)
        is_valid[idx[chosen]] = True
        selections = [(parts[0], parts[0].listed & ~is_valid, parts[0].listed & is_valid)]
    else:
        selections = [(parts[0], parts[0].listed, None), (parts[1], None, parts[1].listed)]

    train_paths: list[str] = []
    valid_paths: list[str] = []
    label_paths: list[str] = []
    label_texts: list[str] = []
    labels_root = str(out / "labels") + "/"
    for part, train_mask, _ in selections:
        root, mode = prepare_image_root(part.images_dir, out, part.sub, copy_images)
        summary.image_mode = mode if not summary.image_mode else summary.image_mode
        ds, lab = part.ds, part.labels
        summary.images_in_json += len(ds.image_ids)
        summary.annotations += len(ds.ann_image_ids)
        summary.clipped += lab.clipped
        for k, v in lab.dropped.items():
            summary.dropped[k] = summary.dropped.get(k, 0) + v
        summary.unknown_image_ids += lab.unknown_image_ids
        summary.unknown_category_ids = sorted(set(summary.unknown_category_ids)
                                              | set(lab.unknown_category_ids))
        summary.images_missing += int(part.missing.sum())
        summary.missing_examples += [str(part.images_dir / ds.file_names[i])
                                     for i in np.flatnonzero(part.missing)[:_EXAMPLES]]
        summary.boxes_on_missing_images += int(lab.n_boxes[part.missing].sum())
        if drop_empty:
            summary.images_dropped_empty += int((~part.missing & (lab.n_boxes == 0)).sum())
        listed = part.listed
        root_s = str(root)
        for i in np.flatnonzero(listed).tolist():
            image_path = root_s + "/" + ds.file_names[i].replace("\\", "/")
            label_path = label_path_str(image_path)
            if not label_path.startswith(labels_root):
                raise DataError(f"{ds.path}: darknet's label path for {image_path} would be "
                                f"{label_path}, outside {labels_root}")
            label_paths.append(label_path)
            label_texts.append(lab.text[i])
            if train_mask is not None and train_mask[i]:
                train_paths.append(image_path)
            else:
                valid_paths.append(image_path)
        summary.images_empty += int((listed & (lab.n_boxes == 0)).sum())
        summary.boxes_written += int(lab.n_boxes[listed].sum())
        counts = np.bincount(lab.box_class[listed[lab.box_image]], minlength=len(classes))
        summary.boxes_per_class = (np.array(summary.boxes_per_class) + counts).tolist()
        if mode == "copy":
            _copy_images(part, root, listed, progress)

    if len(set(label_paths)) != len(label_paths):
        dup = _first_duplicate(label_paths)
        raise DataError(f"two images share the label file {dup} (same name, different "
                        "extension?): darknet could not tell their labels apart")
    timings["labels and paths"] = time.perf_counter() - t0 - sum(timings.values())
    _write_files(label_paths, label_texts, progress, "write labels")
    timings["write label files"] = time.perf_counter() - t0 - sum(timings.values())
    summary.images_train, summary.images_valid = len(train_paths), len(valid_paths)
    write_image_list(summary.train_list, train_paths)
    write_image_list(summary.valid_list, valid_paths)
    write_names(summary.names_file, train_ds.category_names)
    (out / "backup").mkdir(parents=True, exist_ok=True)
    eval_json = Path(valid_json if valid_json is not None else instances_json).resolve()
    write_data_file(summary.data_file, DataConfig(
        classes=len(classes), train=str(summary.train_list), valid=str(summary.valid_list),
        names=str(summary.names_file), backup=str(out / "backup"), eval="coco",
        extra={"coco_json": str(eval_json)}))
    summary.seconds = time.perf_counter() - t0
    timings["lists, names, data"] = summary.seconds - sum(timings.values())
    summary.timings = timings
    return summary


def _copy_images(part: _Split, root: Path, listed: np.ndarray, progress: bool) -> None:
    idx = np.flatnonzero(listed).tolist()
    for i in progress_bar(idx, total=len(idx), desc="copy images", enabled=progress, unit="img"):
        rel = part.ds.file_names[i]
        dest = root / rel
        src = part.images_dir / rel
        try:
            if dest.exists() and dest.stat().st_size == src.stat().st_size:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        except OSError as e:
            raise DarknetIOError(f"cannot copy {src} to {dest}: {e.strerror or e}") from None
