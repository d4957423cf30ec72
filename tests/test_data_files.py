""".data, .names, image lists, label paths and label files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pydarknet.data import (DataConfig, Problem, check_dataset, check_labels, label_path_for,
                            read_data_file, read_image_list, read_labels, read_names,
                            write_data_file, write_names)
from pydarknet.errors import DarknetIOError, DataError
from shared import darknet_data, shared_path

REPO = Path(__file__).resolve().parent.parent
JPEG_BYTES = b"\xff\xd8\xff\xe0" + b"\x00" * 16  # enough for the magic-byte check


@pytest.mark.parametrize("name, count", [("coco.names", 80), ("voc.names", 20)])
def test_repo_names_are_darknets(name: str, count: int) -> None:
    ours = read_names(REPO / "data" / name)
    assert len(ours) == count
    assert ours == read_names(darknet_data(name))
    assert (REPO / "data" / name).read_bytes() == darknet_data(name).read_bytes()


def test_reference_data_files_read() -> None:
    coco = read_data_file(shared_path("darknet/cfg/coco.data"))
    assert coco.classes == 80 and coco.eval == "coco"
    assert coco.train == "/home/pjreddie/data/coco/trainvalno5k.txt"
    assert coco.valid == "coco_testdev"  # the commented-out valid= is ignored
    imagenet = read_data_file(shared_path("darknet/cfg/imagenet1k.data"))
    assert imagenet.extra == {"labels": "data/imagenet.labels.list", "top": "5"}


def test_data_file_round_trip_and_rules(tmp_path: Path) -> None:
    p = tmp_path / "d.data"
    p.write_text("# comment\n; other\nclasses = 3\ntrain  = lists/train.txt\n"
                 "names=x.names\nnames=ignored.names\ncoco_json = /a/b.json\n\n")
    d = read_data_file(p)
    assert (d.classes, d.train, d.names, d.valid) == (3, "lists/train.txt", "x.names", None)
    assert d.extra == {"coco_json": "/a/b.json"}
    assert d.lines == {"classes": 3, "train": 4, "names": 5, "coco_json": 7}
    out = write_data_file(tmp_path / "e.data", d)
    assert out.read_text() == ("classes=3\ntrain=lists/train.txt\nnames=x.names\n"
                               "coco_json=/a/b.json\n")
    assert read_data_file(out) == d


def test_relative_paths_cwd_first_then_data_folder(tmp_path: Path, monkeypatch) -> None:
    ds = tmp_path / "ds"
    (ds / "lists").mkdir(parents=True)
    (ds / "lists" / "train.txt").write_text("")
    (ds / "x.names").write_text("a\n")
    write_data_file(ds / "d.data", DataConfig(classes=1, train="lists/train.txt", names="x.names"))
    monkeypatch.chdir(tmp_path)
    d = read_data_file(ds / "d.data")
    assert d.path_of("train") == ds / "lists" / "train.txt"  # not in cwd: the .data's folder
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.txt").write_text("")
    assert d.path_of("train") == Path("lists/train.txt")       # in cwd: darknet's choice
    assert d.path_of("valid", required=False) is None
    with pytest.raises(DataError, match=r"d.data: no 'valid=' line"):
        d.path_of("valid")
    assert d.read_names() == ["a"]


@pytest.mark.parametrize("text, message", [
    ("train=x\n", r"no 'classes=' line"),
    ("classes=three\n", r"x.data:1: classes must be an integer"),
    ("classes=0\n", r"x.data:1: classes must be in 1..1000000, got 0"),
    ("classes=99999999999999999999999\n", r"x.data:1: classes must be in 1..1000000"),
    ("classes=2\njunk line\n", r"x.data:2: expected key=value"),
    ("classes=2\ntrain=\n", r"x.data:2: 'train=' has no value"),
])
def test_bad_data_files(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "x.data"
    p.write_text(text)
    with pytest.raises(DataError, match=message):
        read_data_file(p)


def test_names_read_write(tmp_path: Path) -> None:
    p = write_names(tmp_path / "n.names", ["cat", "traffic light"])
    assert p.read_text() == "cat\ntraffic light\n"
    (tmp_path / "m.names").write_text("a\r\nb\n\n\n")
    assert read_names(tmp_path / "m.names") == ["a", "b"]
    (tmp_path / "bad.names").write_text("a\n\nb\n")
    with pytest.raises(DataError, match=r"bad.names:2: empty class name"):
        read_names(tmp_path / "bad.names")
    with pytest.raises(DataError, match="bad name"):
        write_names(tmp_path / "x.names", ["a\nb"])
    with pytest.raises(DarknetIOError, match="names file not found"):
        read_names(tmp_path / "none.names")
    d = DataConfig(classes=3, names=str(tmp_path / "n.names"))
    with pytest.raises(DataError, match="has 2 names but classes=3"):
        d.read_names()


@pytest.mark.parametrize("image, label", [
    ("data/images/train/x.jpg", "data/labels/train/x.txt"),
    ("/d/VOC2007/JPEGImages/000001.jpg", "/d/VOC2007/labels/000001.txt"),
    ("images/images/a.png", "labels/images/a.txt"),            # only the first
    ("/myimages/b/c.JPEG", "/mylabels/b/c.txt"),                # substring, as darknet
    ("images/a.b.PNG", "labels/a.b.txt"),
    ("x/images/y.bmp", "x/labels/y.txt"),
    ("images/y.jpeg", "labels/y.txt"),
    ("images/JPEGImages/z.jpg", "labels/labels/z.txt"),
    ("/data/raw/images/a.jpg", "/data/labels/labels/a.txt"),    # darknet's `raw`, first
    ("images/drawing.jpg", "labels/dlabelsing.txt"),            # ... wherever it is
    ("images/x.jpg.png", "labels/x.txt.txt"),                   # each extension where it first is
])
def test_label_path_rule(image: str, label: str) -> None:
    assert label_path_for(image) == Path(label)
    assert label_path_for(Path(image)) == Path(label)


@pytest.mark.parametrize("image", ["images/readme.txt", "images/noext", "images/.jpg"])
def test_label_path_needs_image_extension(image: str) -> None:
    with pytest.raises(DataError, match="not an image file name"):
        label_path_for(image)


def test_label_path_where_darknet_reads_the_image_itself() -> None:
    with pytest.raises(DataError, match="read the image itself as its label file"):
        label_path_for("shots.jpg.d/images/a.jpg")  # darknet: shots.txt.d/labels/a.jpg


# darknet reads the label file of each image: fill_truth_detection(path, ...)
# exits with "Couldn't open file: <label path>" where it is not there
_DARKNET_LABEL_READER = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
fill = lib.fill_truth_detection
fill.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_int,
                 ctypes.c_int, ctypes.c_float, ctypes.c_float, ctypes.c_float, ctypes.c_float]
for image in sys.argv[2:]:
    truth = (ctypes.c_float * 5)()
    fill(image.encode(), 1, truth, 80, 0, 0.0, 0.0, 1.0, 1.0)
    print(int(truth[4]))
"""


def test_label_paths_are_the_ones_darknet_reads(tmp_path: Path) -> None:
    """pjreddie's darknet (Debian's libdarknet.so) reads each image's labels
    from where label_path_for says: a label file there with the image's
    number as its class, and darknet's own loader reads them back."""
    from oracle import DARKNET_DIR

    library = DARKNET_DIR / "libdarknet.so"
    if not library.exists():
        pytest.skip(f"needs pjreddie darknet (apt-get install darknet): {library} not found")
    images = ["data/images/train/x.jpg", "d/VOC2007/JPEGImages/000001.jpg", "images/images/a.png",
              "myimages/b/c.JPEG", "images/JPEGImages/z.jpg", "raw/images/a.jpg",
              "images/drawing.jpg", "images/x.jpg.png", "images/a.JPG"]
    paths = [str(tmp_path / image) for image in images]
    for number, path in enumerate(paths):
        label = label_path_for(path)
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(f"{number} 0.5 0.5 0.25 0.25\n")
    run = subprocess.run([sys.executable, "-c", _DARKNET_LABEL_READER, str(library), *paths],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr  # "Couldn't open file: <where it looked>"
    assert [int(n) for n in run.stdout.split()] == list(range(len(images)))


def test_read_labels_exact(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_text("0 0.5 0.5 1 1\n\n2 0.0 1.0 0.25 0.125\r\n")
    labels = read_labels(p, 3)
    np.testing.assert_array_equal(labels, np.array([[0, 0.5, 0.5, 1, 1], [2, 0, 1, 0.25, 0.125]],
                                                   dtype=np.float32))
    assert labels.dtype == np.float32
    (tmp_path / "empty.txt").write_text("")
    assert read_labels(tmp_path / "empty.txt", 3).shape == (0, 5)
    assert read_labels(tmp_path / "none.txt", 3, missing_ok=True).shape == (0, 5)
    with pytest.raises(DataError, match="none.txt: label file not found"):
        read_labels(tmp_path / "none.txt", 3)


def test_check_labels_reports_every_bad_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.txt"
    p.write_text("0 0.5 0.5 0.2 0.2\n"      # fine
                 "3 0.5 0.5 0.2 0.2\n"      # class out of range
                 "-1 0.5 0.5 0.2 0.2\n"     # negative class
                 "1 1.5 0.5 0.2 0.2\n"      # x > 1
                 "1 0.5 0.5 0 0.2\n"        # w = 0
                 "1 0.5 0.5 0.2 1.01\n"     # h > 1
                 "1 0.5 0.5 0.2\n"          # 4 fields
                 "1.0 0.5 0.5 0.2 0.2\n"    # class not an integer
                 "1 0.5 abc 0.2 0.2\n"      # unparsable
                 "1 nan 0.5 0.2 0.2\n"      # non-finite
                 "2 0 1 1 1\n"              # fine (edges)
                 "1 -0.1 0.5 2 0.2\n"       # two bad values
                 "1 0.5 0.5 1e-50 0.2\n"   # w is 0 as a float32
                 "\u0663 0.5 0.5 0.2 0.2\n"  # a digit to Python's int, not to C's atoi
                 "1 0.5_0 0.5 0.2 0.2\n")    # the same for float's underscores
    problems = check_labels(p, 3)
    assert [(q.line, q.message) for q in problems] == [
        (2, "class 3 out of range 0..2"),
        (3, "class -1 out of range 0..2"),
        (4, "x=1.5 outside [0, 1]"),
        (5, "w=0 outside (0, 1]"),
        (6, "h=1.01 outside (0, 1]"),
        (7, "expected 5 fields (class x y w h), found 4: '1 0.5 0.5 0.2'"),
        (8, "class '1.0' is not an integer"),
        (9, "unparsable numbers: '1 0.5 abc 0.2 0.2'"),
        (10, "non-finite coordinate: '1 nan 0.5 0.2 0.2'"),
        (12, "x=-0.1 outside [0, 1], w=2 outside (0, 1]"),
        (13, "w or h too small (0 as a float)"),
        (14, "not plain ASCII numbers (as C reads them): '\u0663 0.5 0.5 0.2 0.2'"),
        (15, "not plain ASCII numbers (as C reads them): '1 0.5_0 0.5 0.2 0.2'"),
    ]
    assert all(q.file == p and q.level == "error" for q in problems)
    assert str(problems[0]) == f"{p}:2: error: class 3 out of range 0..2"
    with pytest.raises(DataError, match=rf"{p}:2: class 3 out of range 0..2 \(and 12 more\)"):
        read_labels(p, 3)
    missing = check_labels(tmp_path / "gone.txt", 3)
    assert len(missing) == 1 and missing[0].line == 0 and "missing" in missing[0].message
    (tmp_path / "bin.txt").write_bytes(b"0 0.5\xff\n")
    assert "not UTF-8" in check_labels(tmp_path / "bin.txt", 3)[0].message


def test_image_list_resolution(tmp_path: Path, monkeypatch) -> None:
    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    (ds / "images" / "a.jpg").write_bytes(JPEG_BYTES)
    lst = ds / "train.txt"
    lst.write_text(f"images/a.jpg\n\n{ds}/images/b.png\n  images/c.txt  \n")
    monkeypatch.chdir(tmp_path)
    entries = read_image_list(lst)
    assert [(e.line, e.text) for e in entries] == [(1, "images/a.jpg"), (3, f"{ds}/images/b.png"),
                                                   (4, "images/c.txt")]
    assert entries[0].image == ds / "images" / "a.jpg"      # found beside the list
    assert entries[0].label == ds / "labels" / "a.txt"
    assert entries[1].label == ds / "labels" / "b.txt"
    assert entries[2].label is None
    with pytest.raises(DataError, match=r"train.txt:2: empty line"):
        read_image_list(lst, skip_blank=False)
    # a name longer than the OS can look up is listed (and reported missing later), not an OSError
    lst.write_text("images/" + "x" * 5000 + ".jpg\n")
    assert read_image_list(lst)[0].text.endswith("x.jpg")


def make_dataset(root: Path, labels: dict[str, str | None], classes: int = 2) -> Path:
    """images/<name>.jpg (JPEG magic bytes) with labels/<name>.txt."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    for name, text in labels.items():
        (root / "images" / f"{name}.jpg").write_bytes(JPEG_BYTES)
        if text is not None:
            (root / "labels" / f"{name}.txt").write_text(text)
    write_names(root / "x.names", [f"c{i}" for i in range(classes)])
    (root / "train.txt").write_text("".join(f"{root}/images/{n}.jpg\n" for n in labels))
    return write_data_file(root / "x.data", DataConfig(classes=classes, train=str(root / "train.txt"),
                                                       names=str(root / "x.names")))


def test_check_dataset_ok(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ok", {"a": "0 0.5 0.5 0.5 0.5\n1 0.1 0.1 0.1 0.1\n", "b": ""})
    report = check_dataset(data, progress=False)
    assert report.ok
    assert report.images == {"train": 2}
    assert report.boxes_per_class == [1, 1] and report.empty_images == 1
    assert [p.message for p in report.problems] == ["no 'valid=' list"]  # a warning
    assert report.problems[0].level == "warning"
    assert "usable" in report.format()


def test_check_dataset_finds_every_problem(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    data = make_dataset(root, {"a": "0 0.5 0.5 0.5 0.5\n5 0.5 0.5 0.5 0.5\n", "b": None, "c": ""})
    (root / "images" / "c.jpg").write_text("<html>not an image</html>")
    with open(root / "train.txt", "a") as f:
        f.write(f"\n{root}/images/gone.jpg\n{root}/images/noext\n")
    report = check_dataset(data, progress=False)
    assert not report.ok
    found = {(p.file.name, p.line, p.message.split(":")[0].split(" (")[0]) for p in report.errors}
    assert found == {
        ("a.txt", 2, "class 5 out of range 0..1"),
        ("b.txt", 0, "label file missing for " + f"{root}/images/b.jpg"),
        ("train.txt", 3, "not a JPEG/PNG/BMP/TIFF/PPM/WebP file"),
        ("train.txt", 4, "empty line"),
        ("train.txt", 5, "image not found"),
        ("train.txt", 6, "image not found"),
    }
    assert "6 errors" in report.format()


def test_check_dataset_bad_data_file(tmp_path: Path) -> None:
    (tmp_path / "x.data").write_text("classes=2\ntrain\n")
    report = check_dataset(tmp_path / "x.data", progress=False)
    assert report.problems == [Problem(tmp_path / "x.data", 2, "expected key=value, found 'train'")]
    report = check_dataset(tmp_path / "none.data", progress=False)
    assert not report.ok and "not found" in report.problems[0].message


def test_random_label_text_never_crashes(tmp_path: Path) -> None:
    """Seeded fuzz: parse_labels reports problems, it never raises."""
    from pydarknet.data import parse_labels

    rng = np.random.default_rng(1)
    alphabet = list("0123456789.-+e naif\t\n") + ["0.5 ", "1 ", "inf", "\u00e9"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet, int(rng.integers(0, 60))))
        rows, problems = parse_labels(text, tmp_path / "x.txt", 3)
        assert rows.shape[1] == 5 and rows.dtype == np.float32
        assert all(p.line >= 1 for p in problems)
        if len(rows):
            assert (rows[:, 0] >= 0).all() and (rows[:, 0] < 3).all()
            assert (rows[:, 3:] > 0).all() and (rows[:, 1:] <= 1).all()
