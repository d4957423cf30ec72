"""VOC XML -> darknet: exact label files (darknet's voc_label.py arithmetic),
sets, difficult, unknown classes, clipping, errors."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pydarknet.data import check_dataset, read_data_file, read_image_list, read_names
from pydarknet.errors import DataError
from pydarknet.voc import VOC_NAMES, VocObject, convert_voc, parse_voc_xml, voc_box_to_darknet

# (year, id, set, (width, height), objects: (name, difficult or None, xmin, ymin, xmax, ymax))
IMAGES = [
    ("2007", "000001", "train", (500, 375), [("dog", 0, 48, 240, 195, 371),
                                              ("person", 1, 8, 12, 352, 498),
                                              ("unicorn", 0, 1, 1, 10, 10)]),
    ("2007", "000004", "train", (200, 100), []),
    ("2007", "000002", "val", (335, 500), [("train", 0, 139, 200, 207, 301),
                                            ("bird", 0, 400, 10, 420, 30)]),
    ("2007", "000003", "test", (500, 375), [("sofa", None, 123, 155, 215, 195)]),
    ("2012", "2008_000001", "train", (100, 100), [("cat", 0, 1, 1, 101, 51)]),
]
EXPECTED = {
    "VOC2007/000001.jpg": "11 0.241000 0.812000 0.294000 0.349333\n",
    "VOC2007/000004.jpg": "",
    "VOC2007/000002.jpg": "18 0.513433 0.499000 0.202985 0.202000\n",
    "VOC2012/2008_000001.jpg": "7 0.500000 0.250000 1.000000 0.500000\n",
}
EXPECTED_VALID = {"VOC2007/000003.jpg": "17 0.336000 0.464000 0.184000 0.106667\n"}
DIFFICULT_PERSON = "14 0.358000 0.514667 0.688000 0.970667\n"


def xml_text(image_id: str, size: tuple[int, int], objects: list) -> str:
    objs = []
    for name, difficult, x1, y1, x2, y2 in objects:
        diff = "" if difficult is None else f"\n\t\t<difficult>{difficult}</difficult>"
        objs.append(f"""\t<object>
\t\t<name>{name}</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>0</truncated>{diff}
\t\t<bndbox>
\t\t\t<xmin>{x1}</xmin>
\t\t\t<ymin>{y1}</ymin>
\t\t\t<xmax>{x2}</xmax>
\t\t\t<ymax>{y2}</ymax>
\t\t</bndbox>
\t</object>
""")
    return (f"<annotation>\n\t<folder>VOC</folder>\n\t<filename>{image_id}.jpg</filename>\n"
            f"\t<size>\n\t\t<width>{size[0]}</width>\n\t\t<height>{size[1]}</height>\n"
            f"\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n{''.join(objs)}</annotation>\n")


def make_voc(root: Path) -> Path:
    """A VOCdevkit with the IMAGES above, plus a 2012 val image whose JPEG is missing."""
    devkit = root / "VOCdevkit"
    sets: dict[tuple[str, str], list[str]] = {("2012", "val"): ["2008_000002"]}
    for year, image_id, set_name, size, objects in IMAGES:
        base = devkit / f"VOC{year}"
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        (base / "Annotations" / f"{image_id}.xml").write_text(xml_text(image_id, size, objects))
        cv2.imwrite(str(base / "JPEGImages" / f"{image_id}.jpg"), np.zeros((size[1], size[0], 3), np.uint8))
        sets.setdefault((year, set_name), []).append(image_id)
    for (year, set_name), ids in sets.items():
        (devkit / f"VOC{year}" / "ImageSets" / "Main" / f"{set_name}.txt").write_text(
            "".join(f"{i}\n" for i in ids))
    return root


def labels_of(out: Path, list_name: str) -> dict[str, str]:
    return {e.image.relative_to(out / "images").as_posix(): e.label.read_text()
            for e in read_image_list(out / list_name)}


def test_voc_conversion_exact(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    out = tmp_path / "out"
    s = convert_voc(root, out, progress=False)
    assert labels_of(out, "train.txt") == EXPECTED
    assert list(labels_of(out, "train.txt")) == list(EXPECTED)  # list order: year, set, file order
    assert labels_of(out, "valid.txt") == EXPECTED_VALID
    assert (out / "images" / "VOC2007").resolve() == (root / "VOCdevkit" / "VOC2007" / "JPEGImages").resolve()
    assert (out / "labels" / "VOC2012" / "2008_000001.txt").is_file()
    assert s.years == ["2007", "2012"]
    assert (s.images_train, s.images_valid, s.images_empty, s.images_missing) == (4, 1, 1, 1)
    assert s.objects == 7 and s.boxes_written == 4
    assert s.dropped == {"unknown_class": 1, "difficult": 1, "outside_image": 1}
    assert s.unknown_classes == {"unicorn": 1}
    assert s.boxes_per_class[VOC_NAMES.index("dog")] == 1 and sum(s.boxes_per_class) == 4
    assert "other classes: unicorn (1)" in s.format()
    assert read_names(out / "voc.names") == list(VOC_NAMES)
    d = read_data_file(out / "voc.data")
    assert (d.classes, d.eval) == (20, "voc")
    assert check_dataset(out / "voc.data", progress=False).ok


def test_keep_difficult_years_sets(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    out = tmp_path / "out"
    s = convert_voc(root / "VOCdevkit", out, years=["2007"], sets=["train"], keep_difficult=True,
                    progress=False)
    assert labels_of(out, "train.txt") == {
        "VOC2007/000001.jpg": EXPECTED["VOC2007/000001.jpg"] + DIFFICULT_PERSON,
        "VOC2007/000004.jpg": ""}
    assert labels_of(out, "valid.txt") == EXPECTED_VALID
    assert s.dropped.get("difficult", 0) == 0 and s.years == ["2007"]


def test_no_validation_set_falls_back_to_a_split(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    out = tmp_path / "out"
    s = convert_voc(root, out, years=["2007"], valid_sets=["nope"], valid_fraction=0.34,
                    progress=False)
    assert (s.images_train, s.images_valid) == (2, 1)
    both = {**labels_of(out, "train.txt"), **labels_of(out, "valid.txt")}
    assert both == {k: v for k, v in EXPECTED.items() if k.startswith("VOC2007")}
    assert any("no nope set found: 1 of the training images" in n for n in s.notes)
    # a validation set that is all in the training sets is said so, not "not found"
    s = convert_voc(root, tmp_path / "out2", years=["2007"], sets=["train", "val"],
                    valid_sets=["val"], valid_fraction=0.34, progress=False)
    assert (s.images_train, s.images_valid) == (2, 1)
    assert any("every image of the val set (" in n and "is in the training sets (train/val): 1 of"
               in n for n in s.notes), s.notes


def test_custom_names(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    s = convert_voc(root, tmp_path / "out", names=["cat", "dog"], progress=False)
    assert labels_of(tmp_path / "out", "train.txt")["VOC2012/2008_000001.jpg"] == \
        "0 0.500000 0.250000 1.000000 0.500000\n"
    assert labels_of(tmp_path / "out", "train.txt")["VOC2007/000001.jpg"] == \
        "1 0.241000 0.812000 0.294000 0.349333\n"
    assert s.unknown_classes == {"unicorn": 1, "person": 1, "train": 1, "bird": 1, "sofa": 1}


def test_box_arithmetic_is_voc_labels() -> None:
    assert voc_box_to_darknet(VocObject("dog", False, 48, 240, 195, 371), 500, 375) == pytest.approx(
        (120.5 / 500, 304.5 / 375, 147 / 500, 131 / 375))
    assert voc_box_to_darknet(VocObject("x", False, 600, 1, 700, 10), 500, 375) is None


def test_bad_xml(tmp_path: Path) -> None:
    p = tmp_path / "a.xml"
    p.write_text("<annotation>\n<size><width>3</width>\n</annotation>\n")
    with pytest.raises(DataError, match=r"a.xml:3:\d+: malformed XML"):
        parse_voc_xml(p)
    p.write_text("<annotation><object><name>dog</name></object></annotation>")
    with pytest.raises(DataError, match=r"a.xml: missing <size>"):
        parse_voc_xml(p)
    p.write_text(xml_text("a", (10, 10), [("dog", 0, "x", 1, 2, 3)]))
    with pytest.raises(DataError, match=r"a.xml: <object> #1 \(dog\): <xmin> is not a number: 'x'"):
        parse_voc_xml(p)
    for bad in ("nan", "inf"):  # float() takes them: no "nan" in a label file
        p.write_text(xml_text("a", (10, 10), [("dog", 0, bad, 1, 2, 3)]))
        with pytest.raises(DataError, match=rf"#1 \(dog\): <xmin> is not a finite number: '{bad}'"):
            parse_voc_xml(p)
    p.write_text(xml_text("a", ("inf", 10), []))
    with pytest.raises(DataError, match="<width> is not a finite number"):
        parse_voc_xml(p)
    p.write_text(xml_text("a", (0, 10), []))
    with pytest.raises(DataError, match="<size> must be positive"):
        parse_voc_xml(p)
    p.write_text("<annotation><size><width>3</width><height>3</height></size>"
                 "<object><name>dog</name></object></annotation>")
    with pytest.raises(DataError, match=r"<object> #1 \(dog\): missing <bndbox>"):
        parse_voc_xml(p)


def test_bad_layout(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    with pytest.raises(DataError, match="VOC2010: not found"):
        convert_voc(root, tmp_path / "out", years=["2010"], progress=False)
    with pytest.raises(DataError, match=r"trainval.txt: not found \(VOC2007 has no 'trainval' set\)"):
        convert_voc(root, tmp_path / "out", sets=["trainval"], progress=False)
    with pytest.raises(DataError, match="no VOC<year>/Annotations"):
        convert_voc(tmp_path, tmp_path / "out", progress=False)
