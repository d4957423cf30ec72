"""Pascal VOC (XML annotations) -> darknet dataset.

    pydarknet data voc VOCdevkit/ voc-dn/ --years 2007,2012 --sets train,val

VOC_ROOT is the folder holding VOC2007/, VOC2012/ (VOCdevkit), or its
parent.  Each year has Annotations/<id>.xml, JPEGImages/<id>.jpg and
ImageSets/Main/<set>.txt.  The layout written into OUT_DIR is the COCO
converter's (see pydarknet.coco), one image folder per year:

    OUT_DIR/images/VOC2007 -> VOC_ROOT/VOC2007/JPEGImages  (symlink, or copies)
    OUT_DIR/labels/VOC2007/000005.txt
    OUT_DIR/train.txt   images of --sets (default train,val) of every year
    OUT_DIR/valid.txt   images of --valid-sets (default test) where a year has
                        that set (VOC2007 test); when none has, a seeded
                        --valid-fraction of the training images
    OUT_DIR/voc.names (darknet's voc.names order), OUT_DIR/voc.data

Box conversion is darknet's `scripts/voc_label.py`: VOC pixel coordinates are
1-based, so the centre is `((xmin + xmax) / 2 - 1) / width` and the size
`(xmax - xmin) / width` (likewise for y); the box is clipped to the image.
Objects marked `difficult` are skipped unless `keep_difficult` (as
voc_label.py does); objects of classes not in the names are dropped and
counted.
"""
from __future__ import annotations

import math
import os
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .coco import _check_out_dir, _write_files, prepare_image_root
from .data import (DataConfig, format_label_line, label_path_str, progress_bar, write_data_file,
                   write_image_list, write_names)
from .errors import DarknetIOError, DataError

__all__ = ["VOC_NAMES", "VocAnnotation", "VocConversion", "VocObject", "convert_voc",
           "parse_voc_xml", "voc_box_to_darknet"]

# darknet's data/voc.names, in its order.
VOC_NAMES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
             "train", "tvmonitor")


@dataclass(frozen=True)
class VocObject:
    name: str
    difficult: bool
    xmin: float
    ymin: float
    xmax: float
    ymax: float


@dataclass(frozen=True)
class VocAnnotation:
    path: Path
    width: int
    height: int
    objects: tuple[VocObject, ...]


def _text(parent: ET.Element, tag: str, path: Path, where: str) -> str:
    el = parent.find(tag)
    if el is None or el.text is None or not el.text.strip():
        raise DataError(f"{path}: {where}: missing <{tag}>")
    return el.text.strip()


def _num(parent: ET.Element, tag: str, path: Path, where: str) -> float:
    text = _text(parent, tag, path, where)
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}: {where}: <{tag}> is not a number: {text!r}") from None
    if not math.isfinite(value):  # float() takes "nan" and "inf"
        raise DataError(f"{path}: {where}: <{tag}> is not a finite number: {text!r}")
    return value


def parse_voc_xml(path: str | os.PathLike[str]) -> VocAnnotation:
    """One VOC annotation file (DataError with file and line, or object
    number, when malformed)."""
    p = Path(path)
    try:
        root = ET.parse(p).getroot()
    except FileNotFoundError:
        raise DarknetIOError(f"{p}: annotation file not found") from None
    except ET.ParseError as e:
        line, col = e.position
        raise DataError(f"{p}:{line}:{col}: malformed XML ({e})") from None
    except OSError as e:
        raise DarknetIOError(f"{p}: cannot read: {e.strerror or e}") from None
    size = root.find("size")
    if size is None:
        raise DataError(f"{p}: missing <size> (darknet's voc_label.py needs the image size)")
    width, height = _num(size, "width", p, "<size>"), _num(size, "height", p, "<size>")
    if not (width > 0 and height > 0):
        raise DataError(f"{p}: <size> must be positive, got {width}x{height}")
    objects = []
    for i, obj in enumerate(root.iter("object"), 1):
        where = f"<object> #{i}"
        name = _text(obj, "name", p, where)
        diff = obj.find("difficult")
        difficult = diff is not None and (diff.text or "0").strip() not in ("0", "")
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{p}: {where} ({name}): missing <bndbox>")
        vals = [_num(box, t, p, f"{where} ({name})") for t in ("xmin", "ymin", "xmax", "ymax")]
        objects.append(VocObject(name, difficult, *vals))
    return VocAnnotation(p, int(width), int(height), tuple(objects))


def voc_box_to_darknet(obj: VocObject, width: float, height: float
                       ) -> tuple[float, float, float, float] | None:
    """darknet's voc_label.py conversion (1-based VOC pixels), clipped to
    the image; None when nothing is left."""
    x1 = min(max(obj.xmin - 1, 0.0), width)
    x2 = min(max(obj.xmax - 1, 0.0), width)
    y1 = min(max(obj.ymin - 1, 0.0), height)
    y2 = min(max(obj.ymax - 1, 0.0), height)
    if x2 <= x1 or y2 <= y1:
        return None
    return ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)


@dataclass
class VocConversion:
    """What `convert_voc` did."""

    out_dir: Path
    data_file: Path
    names_file: Path
    train_list: Path
    valid_list: Path
    class_names: list[str]
    years: list[str] = field(default_factory=list)
    images_train: int = 0
    images_valid: int = 0
    images_empty: int = 0
    images_missing: int = 0
    missing_examples: list[str] = field(default_factory=list)
    objects: int = 0
    boxes_written: int = 0
    boxes_per_class: list[int] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    unknown_classes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    image_mode: str = ""
    seconds: float = 0.0

    def format(self) -> str:
        d = self.dropped
        out = [
            f"years: {', '.join(self.years)}; listed {self.images_train} train + "
            f"{self.images_valid} valid images ({self.images_empty} without objects)",
            f"boxes: {self.objects} objects -> {self.boxes_written} written; dropped "
            f"{d.get('difficult', 0)} difficult, {d.get('unknown_class', 0)} of other classes, "
            f"{d.get('outside_image', 0)} empty after clipping",
        ]
        if self.unknown_classes:
            out.append("other classes: " + ", ".join(f"{k} ({v})" for k, v in
                                                     sorted(self.unknown_classes.items())))
        if self.images_missing:
            out.append(f"missing image files: {self.images_missing}, e.g. "
                       + ", ".join(self.missing_examples[:3]))
        out.extend(self.notes)
        width = max((len(n) for n in self.class_names), default=4)
        out.append("boxes per class:")
        out.extend(f"  {i:3d} {n:<{width}} {c:8d}"
                   for i, (n, c) in enumerate(zip(self.class_names, self.boxes_per_class)))
        out.append(f"wrote {self.data_file} (images: {self.image_mode}) in {self.seconds:.1f} s")
        return "\n".join(out)


def _find_years(root: Path, years: Sequence[str] | None) -> list[tuple[str, Path]]:
    base = root / "VOCdevkit" if (root / "VOCdevkit").is_dir() else root
    if years is None:
        found = sorted(p.name[3:] for p in base.glob("VOC*") if (p / "Annotations").is_dir())
        if not found:
            raise DataError(f"{root}: no VOC<year>/Annotations folder (expected VOCdevkit layout)")
        years = found
    out = []
    for y in years:
        folder = base / f"VOC{y}"
        if not (folder / "Annotations").is_dir():
            raise DataError(f"{folder}: not found (no Annotations/ folder)")
        out.append((str(y), folder))
    return out


def _read_set(path: Path) -> list[str]:
    try:
        lines = path.read_text().split("\n")
    except OSError as e:
        raise DarknetIOError(f"{path}: cannot read: {e.strerror or e}") from None
    return [line.split()[0] for line in lines if line.strip()]


def convert_voc(voc_root: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                years: Sequence[str] | None = None, sets: Sequence[str] = ("train", "val"),
                valid_sets: Sequence[str] = ("test",), keep_difficult: bool = False,
                names: Sequence[str] = VOC_NAMES, valid_fraction: float = 0.1, seed: int = 0,
                copy_images: bool = False, check_images: bool = True, name: str = "voc",
                progress: bool = True) -> VocConversion:
    """Convert VOC XML annotations into a darknet dataset in `out_dir`
    (see the module docstring); returns the summary."""
    t0 = time.perf_counter()
    root = Path(voc_root)
    out = Path(out_dir).resolve()
    _check_out_dir(out)
    class_index = {n: i for i, n in enumerate(names)}
    year_dirs = _find_years(root, years)
    summary = VocConversion(out, out / f"{name}.data", out / f"{name}.names", out / "train.txt",
                            out / "valid.txt", list(names), years=[y for y, _ in year_dirs],
                            boxes_per_class=[0] * len(names))
    dropped: Counter[str] = Counter()
    unknown: Counter[str] = Counter()

    # Which ids go where.
    chosen: list[tuple[str, Path, str, bool]] = []  # (year, folder, id, is_valid)
    seen: set[tuple[str, str]] = set()
    valid_in_train = 0  # ids of the valid sets already taken for training
    for want_valid, set_names in ((False, sets), (True, valid_sets)):
        for year, folder in year_dirs:
            for s in set_names:
                set_file = folder / "ImageSets" / "Main" / f"{s}.txt"
                if not set_file.is_file():
                    if not want_valid:
                        raise DataError(f"{set_file}: not found (VOC{year} has no '{s}' set)")
                    continue
                for image_id in _read_set(set_file):
                    if (year, image_id) in seen:
                        valid_in_train += want_valid
                        continue
                    seen.add((year, image_id))
                    chosen.append((year, folder, image_id, want_valid))
    if not any(v for *_, v in chosen):
        found = (f"every image of the {'/'.join(valid_sets)} set ({valid_in_train}) is in the "
                 f"training sets ({'/'.join(sets)})" if valid_in_train else
                 f"no {'/'.join(valid_sets)} set found")
        train_idx = [i for i, c in enumerate(chosen)]
        n_valid = int(round(valid_fraction * len(train_idx)))
        if valid_fraction > 0 and len(train_idx) >= 2:
            n_valid = min(max(n_valid, 1), len(train_idx) - 1)
        pick = set(np.random.default_rng(seed).permutation(len(train_idx))[:n_valid].tolist())
        chosen = [(y, f, i, k in pick) for k, (y, f, i, _) in enumerate(chosen)]
        summary.notes.append(f"{found}: {n_valid} of the training images (seeded "
                             f"{valid_fraction:.0%}) form the validation list")

    roots: dict[str, str] = {}
    for year, folder in year_dirs:
        img_root, mode = prepare_image_root(folder / "JPEGImages", out, f"VOC{year}", copy_images)
        roots[year] = str(img_root)
        summary.image_mode = mode

    train_paths: list[str] = []
    valid_paths: list[str] = []
    label_paths: list[str] = []
    label_texts: list[str] = []
    labels_root = str(out / "labels") + "/"
    for year, folder, image_id, is_valid in progress_bar(chosen, total=len(chosen), desc="read XML",
                                                         enabled=progress, unit="img"):
        src_image = folder / "JPEGImages" / f"{image_id}.jpg"
        if check_images and not src_image.is_file():
            summary.images_missing += 1
            if len(summary.missing_examples) < 10:
                summary.missing_examples.append(str(src_image))
            continue
        ann = parse_voc_xml(folder / "Annotations" / f"{image_id}.xml")
        lines = []
        for obj in ann.objects:
            summary.objects += 1
            if obj.name not in class_index:
                dropped["unknown_class"] += 1
                unknown[obj.name] += 1
                continue
            if obj.difficult and not keep_difficult:
                dropped["difficult"] += 1
                continue
            box = voc_box_to_darknet(obj, ann.width, ann.height)
            if box is None:
                dropped["outside_image"] += 1
                continue
            cls = class_index[obj.name]
            summary.boxes_per_class[cls] += 1
            lines.append(format_label_line(cls, *box) + "\n")
        image_path = f"{roots[year]}/{image_id}.jpg"
        label_path = label_path_str(image_path)
        if not label_path.startswith(labels_root):
            raise DataError(f"darknet's label path for {image_path} would be {label_path}, "
                            f"outside {labels_root}")
        label_paths.append(label_path)
        label_texts.append("".join(lines))
        summary.boxes_written += len(lines)
        summary.images_empty += not lines
        (valid_paths if is_valid else train_paths).append(image_path)
        if copy_images:
            _copy(src_image, Path(image_path))

    _write_files(label_paths, label_texts, progress, "write labels")
    summary.images_train, summary.images_valid = len(train_paths), len(valid_paths)
    summary.dropped = dict(dropped)
    summary.unknown_classes = dict(unknown)
    write_image_list(summary.train_list, train_paths)
    write_image_list(summary.valid_list, valid_paths)
    write_names(summary.names_file, names)
    (out / "backup").mkdir(parents=True, exist_ok=True)
    write_data_file(summary.data_file, DataConfig(
        classes=len(names), train=str(summary.train_list), valid=str(summary.valid_list),
        names=str(summary.names_file), backup=str(out / "backup"), eval="voc"))
    summary.seconds = time.perf_counter() - t0
    return summary


def _copy(src: Path, dest: Path) -> None:
    import shutil

    try:
        if dest.exists() and dest.stat().st_size == src.stat().st_size:
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    except OSError as e:
        raise DarknetIOError(f"cannot copy {src} to {dest}: {e.strerror or e}") from None
