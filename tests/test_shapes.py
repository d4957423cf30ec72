"""The shapes dataset: deterministic, exact boxes, learnable layout, and
convertible by the COCO converter into a dataset `data check` accepts."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pydarknet.coco import convert_coco
from pydarknet.data import check_dataset
from pydarknet.datasets import SHAPE_CLASSES, generate_shapes, render_shapes
from pydarknet.errors import ArgumentError


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_same_seed_same_files(tmp_path: Path) -> None:
    a = generate_shapes(tmp_path / "a", 12, seed=3, progress=False)
    b = generate_shapes(tmp_path / "b", 12, seed=3, progress=False)
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b")
    c = generate_shapes(tmp_path / "c", 12, seed=4, progress=False)
    assert files_of(tmp_path / "c")["images/000000.png"] != files_of(tmp_path / "a")["images/000000.png"]
    # a smaller dataset is a prefix of a larger one
    d = generate_shapes(tmp_path / "d", 5, seed=3, progress=False)
    assert files_of(tmp_path / "d" / "images") == {k: v for k, v in files_of(tmp_path / "a" / "images").items()
                                                   if int(k[:6]) < 5}
    assert a.images == 12 and sum(a.boxes_per_class.values()) == len(
        json.loads(a.instances_json.read_text())["annotations"])
    assert b.format().startswith("wrote 12 images") and c.images == d.images + 7


def test_boxes_are_the_tight_box_of_the_drawn_pixels(tmp_path: Path) -> None:
    ds = generate_shapes(tmp_path / "s", 30, seed=11, progress=False)
    doc = json.loads(ds.instances_json.read_text())
    by_image: dict[int, list[dict]] = {}
    for a in doc["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for i, im in enumerate(doc["images"]):
        png = cv2.imread(str(ds.images_dir / im["file_name"]))
        again, objects = render_shapes(np.random.default_rng([11, i]), 128, 128)
        np.testing.assert_array_equal(png, again)  # PNG is lossless: these are the pixels
        anns = by_image.get(im["id"], [])
        assert [a["bbox"] for a in anns] == [list(o.bbox) for o in objects]
        for a, o in zip(anns, objects):
            ys, xs = np.nonzero((png == o.color).all(axis=2))
            x, y, w, h = a["bbox"]
            assert (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()) == (x, y, w, h)
            assert a["area"] == len(xs) == o.area
            assert a["category_id"] == o.class_id + 1 and a["iscrowd"] == 0


def test_layout_is_learnable(tmp_path: Path) -> None:
    ds = generate_shapes(tmp_path / "s", 60, seed=0, progress=False)
    doc = json.loads(ds.instances_json.read_text())
    assert [c["name"] for c in doc["categories"]] == list(SHAPE_CLASSES)
    counts: dict[int, int] = {}
    for a in doc["annotations"]:
        counts[a["image_id"]] = counts.get(a["image_id"], 0) + 1
        x, y, w, h = a["bbox"]
        assert 0 <= x and x + w <= 128 and 0 <= y and y + h <= 128
        assert 0.1 * 128 - 2 <= max(w, h) <= 0.4 * 128 + 2  # side 10%-40% of the image
    assert set(counts) == {im["id"] for im in doc["images"]}
    assert min(counts.values()) >= 1 and max(counts.values()) <= 4
    assert len(set(counts.values())) > 1
    for image_id in counts:  # boxes of an image never overlap (max_iou=0)
        boxes = [a["bbox"] for a in doc["annotations"] if a["image_id"] == image_id]
        for i, (x, y, w, h) in enumerate(boxes):
            for (u, v, s, t) in boxes[i + 1:]:
                assert min(x + w, u + s) <= max(x, u) or min(y + h, v + t) <= max(y, v)
    per_class = ds.boxes_per_class
    assert all(per_class[n] > 20 for n in SHAPE_CLASSES)


def test_options_and_jpeg(tmp_path: Path) -> None:
    ds = generate_shapes(tmp_path / "j", 4, width=96, height=64, min_objects=2, max_objects=2,
                         min_size=0.2, max_size=0.3, noise=0, image_format="jpg", seed=1,
                         progress=False)
    doc = json.loads(ds.instances_json.read_text())
    assert [im["file_name"] for im in doc["images"]] == [f"{i:06d}.jpg" for i in range(4)]
    assert all((im["width"], im["height"]) == (96, 64) for im in doc["images"])
    assert len(doc["annotations"]) == 8
    assert cv2.imread(str(ds.images_dir / "000000.jpg")).shape == (64, 96, 3)
    assert doc["info"]["generator"]["seed"] == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"count": 0}, "count must be positive"),
    ({"width": 8}, "at least 16x16"),
    ({"min_objects": 3, "max_objects": 2}, "min_objects <= max_objects"),
    ({"min_size": 0.5, "max_size": 0.4}, "min_size <= max_size"),
    ({"image_format": "gif"}, "png or jpg"),
])
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ArgumentError, match=message):
        generate_shapes(tmp_path / "x", **{"count": 2, **kwargs}, progress=False)


def test_converts_and_checks(tmp_path: Path) -> None:
    out = tmp_path / "shapes"
    ds = generate_shapes(out, 20, seed=2, progress=False)
    s = convert_coco(ds.instances_json, ds.images_dir, out, valid_fraction=0.25, progress=False)
    assert s.image_mode == "in place"
    assert (s.images_train, s.images_valid, s.images_missing) == (15, 5, 0)
    assert s.class_names == list(SHAPE_CLASSES)
    assert s.boxes_written == sum(ds.boxes_per_class.values())
    report = check_dataset(out / "coco.data", progress=False)
    assert report.ok and not report.problems, report.format()
    first = json.loads(ds.instances_json.read_text())["annotations"][0]
    x, y, w, h = first["bbox"]
    assert (out / "labels" / "000000.txt").read_text().splitlines()[0] == (
        f"{first['category_id'] - 1} {(x + w / 2) / 128:.6f} {(y + h / 2) / 128:.6f} "
        f"{w / 128:.6f} {h / 128:.6f}")
