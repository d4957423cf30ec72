"""COCO instances JSON -> darknet: exact label files, counts, layout, errors.

(No test name here contains "images": pytest puts the test name in
tmp_path, and an OUT_DIR whose path contains "images" is refused, since
darknet would then derive label paths outside it.)"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from pydarknet.coco import convert_coco, load_coco
from pydarknet.data import check_dataset, read_data_file, read_image_list, read_names
from pydarknet.errors import DarknetIOError, DataError

SMALL_JSON = Path(__file__).resolve().parent / "data" / "coco_small.json"

A_LABELS = ("0 0.312500 0.208333 0.312500 0.208333\n"   # plain box
            "2 0.968750 0.916667 0.062500 0.166667\n"   # clipped at the right/bottom
            "1 0.031250 0.031250 0.062500 0.062500\n")  # clipped at the left/top, no iscrowd key
A_CROWD = "1 0.039062 0.052083 0.078125 0.104167\n"
B_LABELS = "2 0.255000 0.202500 0.300000 0.202500\n"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """The image folder of coco_small.json (missing.jpg left out)."""
    folder = tmp_path / "src"
    (folder / "sub").mkdir(parents=True)
    for name, (w, h) in {"a.jpg": (640, 480), "sub/b.jpg": (100, 200), "c.jpg": (320, 240)}.items():
        cv2.imwrite(str(folder / name), np.full((h, w, 3), 90, np.uint8))
    return folder


def labels_of(out: Path, list_name: str = "train.txt") -> dict[str, str]:
    entries = read_image_list(out / list_name)
    return {e.image.relative_to(out / "images").as_posix(): e.label.read_text() for e in entries}


def test_conversion_exact_labels_and_summary(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    s = convert_coco(SMALL_JSON, src, out, valid_fraction=0, progress=False)
    assert labels_of(out) == {"src/a.jpg": A_LABELS, "src/sub/b.jpg": B_LABELS, "src/c.jpg": ""}
    assert (out / "labels" / "src" / "sub" / "b.txt").read_text() == B_LABELS
    assert (out / "images" / "src").is_symlink()
    assert (out / "images" / "src").resolve() == src.resolve()
    assert (out / "train.txt").read_text() == "".join(
        f"{out.resolve()}/images/src/{n}\n" for n in ("a.jpg", "sub/b.jpg", "c.jpg"))
    assert (out / "valid.txt").read_text() == ""
    assert read_names(out / "coco.names") == ["person", "car", "zebra"]  # sorted category ids
    assert s.category_ids == [1, 3, 90]
    assert (s.images_in_json, s.images_train, s.images_valid) == (4, 3, 0)
    assert (s.images_empty, s.images_missing, s.annotations) == (1, 1, 11)
    assert s.missing_examples == [str(src / "missing.jpg")]
    assert s.dropped == {"crowd": 1, "zero_area": 2, "outside_image": 1, "unknown_image": 1,
                         "unknown_category": 1}
    assert (s.boxes_written, s.boxes_on_missing_images, s.clipped) == (4, 1, 2)
    assert s.boxes_per_class == [1, 1, 2]
    assert s.unknown_image_ids == [99] and s.unknown_category_ids == [7]
    assert s.image_mode == "symlink"
    text = s.format()
    assert "1 crowd, 2 zero-area, 1 outside the image, 1 on unknown images" in text
    assert "unknown image ids: 99" in text and "    2   90 zebra" in text

    d = read_data_file(out / "coco.data")
    assert (d.classes, d.eval) == (3, "coco")
    assert d.extra == {"coco_json": str(SMALL_JSON.resolve())}
    assert Path(d.train) == out.resolve() / "train.txt"
    assert (out / "backup").is_dir()
    report = check_dataset(out / "coco.data", progress=False)
    assert report.ok, report.format()
    assert report.boxes_per_class == [1, 1, 2]


def test_keep_crowd_and_drop_empty(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    s = convert_coco(SMALL_JSON, src, out, keep_crowd=True, drop_empty=True, valid_fraction=0,
                     progress=False)
    lines = A_LABELS.splitlines(keepends=True)
    assert labels_of(out) == {"src/a.jpg": lines[0] + A_CROWD + "".join(lines[1:]),
                              "src/sub/b.jpg": B_LABELS}
    assert not (out / "labels" / "src" / "c.txt").exists()
    assert s.images_dropped_empty == 1 and s.images_empty == 0
    assert s.dropped["crowd"] == 0 and s.boxes_per_class == [1, 2, 2]


def test_seeded_split(src: Path, tmp_path: Path) -> None:
    a = convert_coco(SMALL_JSON, src, tmp_path / "a", valid_fraction=0.34, seed=5, progress=False)
    b = convert_coco(SMALL_JSON, src, tmp_path / "b", valid_fraction=0.34, seed=5, progress=False)
    assert (a.images_train, a.images_valid) == (2, 1)
    names = lambda out, lst: [p.split("/images/")[1] for p in (out / lst).read_text().split()]  # noqa: E731
    assert names(tmp_path / "a", "valid.txt") == names(tmp_path / "b", "valid.txt")
    assert sorted(names(tmp_path / "a", "train.txt") + names(tmp_path / "a", "valid.txt")) == [
        "src/a.jpg", "src/c.jpg", "src/sub/b.jpg"]
    seen = {tuple(names(tmp_path / "a", "valid.txt"))}
    for seed in range(6):
        out = tmp_path / f"s{seed}"
        convert_coco(SMALL_JSON, src, out, valid_fraction=0.34, seed=seed, progress=False)
        seen.add(tuple(names(out, "valid.txt")))
    assert len(seen) > 1  # the seed matters


def test_in_place_and_copied(src: Path, tmp_path: Path) -> None:
    # images already under OUT_DIR/images: listed where they are, no link
    out = tmp_path / "ds"
    (out / "images").mkdir(parents=True)
    os.rename(src, out / "images" / "train")
    s = convert_coco(SMALL_JSON, out / "images" / "train", out, valid_fraction=0, progress=False)
    assert s.image_mode == "in place"
    assert not (out / "images" / "train").is_symlink()
    assert (out / "labels" / "train" / "a.txt").read_text() == A_LABELS
    # copies
    out2 = tmp_path / "copied"
    s = convert_coco(SMALL_JSON, out / "images" / "train", out2, copy_images=True,
                     valid_fraction=0, progress=False)
    assert s.image_mode == "copy"
    link = out2 / "images" / "train"
    assert link.is_dir() and not link.is_symlink()
    assert sorted(p.relative_to(link).as_posix() for p in link.rglob("*.jpg")) == [
        "a.jpg", "c.jpg", "sub/b.jpg"]
    assert check_dataset(out2 / "coco.data", progress=False).ok


def test_separate_validation_json(src: Path, tmp_path: Path) -> None:
    doc = json.loads(SMALL_JSON.read_text())
    doc["images"] = [{"id": 50, "file_name": "v.jpg", "width": 10, "height": 10}]
    doc["annotations"] = [{"id": 1, "image_id": 50, "category_id": 3, "bbox": [0, 0, 5, 10]}]
    (tmp_path / "val.json").write_text(json.dumps(doc))
    vdir = tmp_path / "vsrc"
    vdir.mkdir()
    cv2.imwrite(str(vdir / "v.jpg"), np.zeros((10, 10, 3), np.uint8))
    out = tmp_path / "out"
    s = convert_coco(SMALL_JSON, src, out, valid_json=tmp_path / "val.json",
                     valid_images_dir=vdir, progress=False)
    assert (s.images_train, s.images_valid) == (3, 1)
    assert labels_of(out, "valid.txt") == {"vsrc/v.jpg": "1 0.250000 0.500000 0.500000 1.000000\n"}
    assert read_data_file(out / "coco.data").extra["coco_json"] == str((tmp_path / "val.json").resolve())
    doc["categories"] = doc["categories"][:2]
    (tmp_path / "val2.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="categories differ"):
        convert_coco(SMALL_JSON, src, out, valid_json=tmp_path / "val2.json", progress=False)


def test_annotations_only_run(tmp_path: Path) -> None:
    s = convert_coco(SMALL_JSON, tmp_path / "nowhere", tmp_path / "out", check_images=False,
                     valid_fraction=0, progress=False)
    assert s.images_train == 4 and s.images_missing == 0
    assert (tmp_path / "out" / "labels" / "nowhere" / "missing.txt").read_text() == \
        "0 0.018750 0.025000 0.031250 0.041667\n"


def test_load_coco_arrays() -> None:
    ds = load_coco(SMALL_JSON)
    assert ds.image_ids.tolist() == [1, 7, 3, 4]
    assert ds.category_ids.tolist() == [1, 3, 90] and ds.category_names == ["person", "car", "zebra"]
    assert ds.ann_crowd.tolist() == [False, True] + [False] * 9
    np.testing.assert_array_equal(ds.ann_boxes[6], [10.5, 20.25, 30, 40.5])
    assert ds.image_index()["sub/b.jpg"] == 7


def write_json(tmp_path: Path, doc: object) -> Path:
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return p


def small_doc() -> dict:
    return json.loads(SMALL_JSON.read_text())


def test_malformed_json(tmp_path: Path) -> None:
    p = write_json(tmp_path, '{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=r"bad.json:2:\d+: malformed JSON"):
        load_coco(p)
    with pytest.raises(DarknetIOError, match="annotation file not found"):
        load_coco(tmp_path / "none.json")


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("annotations"), "missing top-level 'annotations'"),
    (lambda d: d.update(images={}), "'images' must be a list"),
    (lambda d: d["annotations"][3].pop("bbox"), r"annotations\[3\] \(id 104\): 'bbox' must be"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\] \(id 101\): 'bbox'"),
    (lambda d: d["annotations"][2].pop("image_id"), r"annotations\[2\] \(id 103\): missing 'image_id'"),
    (lambda d: d["annotations"][1].update(category_id="x"), r"annotations\[1\].*'category_id' must be an integer"),
    (lambda d: d["annotations"][1].update(iscrowd=2), r"'iscrowd' must be 0 or 1"),
    (lambda d: d["images"][1].pop("width"), r"images\[1\] \(id 7\): missing 'width'"),
    (lambda d: d["images"][0].update(height=0), r"images\[0\] \(id 1\): 'height' must be positive"),
    (lambda d: d["images"][2].update(file_name=""), r"images\[2\] \(id 3\): missing or empty 'file_name'"),
    (lambda d: d["images"][2].update(id=1), "image id 1 appears more than once"),
    (lambda d: d["images"][2].update(file_name="a.jpg"), "file_name 'a.jpg' appears more than once"),
    (lambda d: d["categories"][0].pop("name"), r"categories\[0\] \(id 90\): missing or bad 'name'"),
    (lambda d: d["categories"].append("x"), r"categories\[3\]: expected an object"),
    (lambda d: d.update(categories=[]), "no categories"),
    # what numpy would quietly convert: truncated ids, numbers in strings, nested boxes
    (lambda d: d["annotations"][0].update(image_id=1.9), r"annotations\[0\].*'image_id' must be an integer, got 1.9"),
    (lambda d: d["annotations"][1].update(category_id=2.7), r"annotations\[1\].*'category_id' must be an integer"),
    (lambda d: d["annotations"][1].update(iscrowd=0.5), r"annotations\[1\].*'iscrowd' must be 0 or 1"),
    (lambda d: d["annotations"][2].update(bbox=[[10, 20], [100, 50]]), r"annotations\[2\].*'bbox' must be"),
    (lambda d: d["annotations"][2].update(bbox=[10, "20", 5, 5]), r"annotations\[2\].*'bbox' must be"),
    (lambda d: d["images"][1].update(width="768"), r"images\[1\].*'width' must be a number"),
    (lambda d: d["images"][0].update(id=True), r"images\[0\].*'id' must be an integer"),
    (lambda d: d["images"][0].update(id=2**70), r"images\[0\].*'id' is out of range"),
    (lambda d: d["images"][0].update(width=float("inf")), r"images\[0\].*'width' must be positive and finite"),
    (lambda d: d["categories"][1].update(name=d["categories"][0]["name"]), "is used by ids"),
])
def test_bad_fields(tmp_path: Path, edit, message: str) -> None:
    doc = small_doc()
    edit(doc)
    with pytest.raises(DataError, match=message):
        load_coco(write_json(tmp_path, doc))


def test_refused_layouts(src: Path, tmp_path: Path) -> None:
    for folder in ("my_images", "raw"):  # darknet would look for the labels elsewhere
        with pytest.raises(DataError, match="contains 'images', 'JPEGImages' or 'raw'"):
            convert_coco(SMALL_JSON, src, tmp_path / folder / "out", progress=False)
    doc = small_doc()
    doc["images"][0]["file_name"] = "../escape.jpg"
    with pytest.raises(DataError, match="must be a relative path inside the image folder"):
        convert_coco(write_json(tmp_path, doc), src, tmp_path / "out", progress=False)
    doc = small_doc()
    doc["images"][2]["file_name"] = "a.png"
    with pytest.raises(DataError, match="share the label file .*/labels/src/a.txt"):
        convert_coco(write_json(tmp_path, doc), src, tmp_path / "out", check_images=False,
                     progress=False)
    (tmp_path / "out2" / "images" / "src").mkdir(parents=True)
    with pytest.raises(DataError, match="exists and is not a link"):
        convert_coco(SMALL_JSON, src, tmp_path / "out2", progress=False)
    with pytest.raises(DarknetIOError, match="image folder not found"):
        convert_coco(SMALL_JSON, tmp_path / "nowhere", tmp_path / "out3", progress=False)
    with pytest.raises(DataError, match="valid_fraction"):
        convert_coco(SMALL_JSON, src, tmp_path / "out4", valid_fraction=1.0, progress=False)
