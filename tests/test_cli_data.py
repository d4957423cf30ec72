"""The data-tool commands through click's CliRunner.  `map`/`valid` run with a
stand-in for pydarknet.detect (the engine is tested elsewhere)."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from pydarknet.cfg import Cfg
from pydarknet.cli import main
from shared import darknet_cfg
from test_voc import EXPECTED, make_voc


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("command", [
    ["cfg", "new"], ["data", "coco"], ["data", "voc"], ["data", "check"], ["data", "anchors"],
    ["data", "shapes"], ["map"], ["valid"]])
def test_help(command: list[str]) -> None:
    out = run(*command, "--help").output
    assert "Usage: " in out and len(out.splitlines()) > 8


def test_cfg_new(tmp_path: Path) -> None:
    out = run("cfg", "new", "yolov2-tiny", "--classes", "3", "--width", "224", "--out",
              tmp_path / "a.cfg").output
    assert "yolov2-tiny, 3 classes, 224x224, 1 detection head(s)" in out
    cfg = Cfg.read(tmp_path / "a.cfg")
    assert cfg.find("region")[0].get_int("classes") == 3
    assert cfg.sections[-2].get_int("filters") == 40
    run("cfg", "new", "yolov3-tiny", "--classes", "1", "--anchors", "10,10, 20,20", "--out",
        tmp_path / "b.cfg", "--batch", "16", "--subdivisions", "4")
    b = Cfg.read(tmp_path / "b.cfg")
    assert [y.get_list("mask", item=int) for y in b.find("yolo")] == [[1], [0]]
    assert b.net.get_int("batch") == 16
    run("cfg", "new", "yolov2-voc", "--classes", "20", "--out", tmp_path / "v.cfg")
    ref = Cfg.read(darknet_cfg("yolov2-voc.cfg"))
    assert [s.options for s in Cfg.read(tmp_path / "v.cfg").layers] == [s.options for s in ref.layers]


@pytest.mark.parametrize("args, message", [
    (["yolov2", "--classes", "3", "--width", "100"], "width must be a positive multiple of 32"),
    (["darknet19", "--classes", "3", "--anchors", "1,1"], "darknet19 is a classifier"),
    (["yolov2", "--classes", "0"], "0 is not in the range x>=1"),
    (["yolov5", "--classes", "3"], "is not one of"),
])
def test_cfg_new_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = run("cfg", "new", *args, "--out", tmp_path / "x.cfg", ok=False)
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "x.cfg").exists()


def test_shapes_coco_check_anchors(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    out = run("data", "shapes", ds, "--count", "16", "--seed", "1").output
    assert "wrote 16 images" in out and "next: pydarknet data coco" in out
    out = run("data", "coco", ds / "instances.json", ds / "images", ds, "--valid-fraction", "0.25",
              "--name", "shapes").output
    assert "listed 12 train + 4 valid" in out and "circle" in out
    out = run("data", "check", ds / "shapes.data").output
    assert out.strip().endswith("OK") and "train: 12 images, valid: 4 images" in out
    run("cfg", "new", "yolov2-tiny", "--classes", "3", "--width", "128", "--out", tmp_path / "t.cfg")
    out = run("data", "anchors", ds / "shapes.data", "--num", "3", "--cfg", tmp_path / "t.cfg").output
    assert "3 anchors for 128x128" in out and f"updated {tmp_path / 't.cfg'}" in out
    region = Cfg.read(tmp_path / "t.cfg").find("region")[0]
    assert region.get_int("num") == 3 and len(region.get_list("anchors")) == 6
    out = run("data", "anchors", ds / "shapes.data", "--num", "2", "--width", "64", "--height", "64").output
    assert "2 anchors for 64x64" in out
    result = run("data", "anchors", ds / "shapes.data", "--num", "2", ok=False)
    assert result.exit_code == 2 and "give --width and --height" in result.output


def test_check_reports_problems_and_fails(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    run("data", "shapes", ds, "--count", "4")
    run("data", "coco", ds / "instances.json", ds / "images", ds, "--valid-fraction", "0")
    (ds / "labels" / "000001.txt").write_text("7 0.5 0.5 0.5 0.5\n0 0.5 0.5 0.5\n")
    (ds / "labels" / "000002.txt").unlink()
    result = run("data", "check", ds / "coco.data", ok=False)
    assert result.exit_code == 1
    assert f"{ds / 'labels' / '000001.txt'}:1: error: class 7 out of range 0..2" in result.output
    assert f"{ds / 'labels' / '000001.txt'}:2: error: expected 5 fields" in result.output
    assert f"{ds / 'labels' / '000002.txt'}: error: label file missing" in result.output
    assert "3 errors" in result.output
    data = ds / "coco.data"
    data.write_text(data.read_text().replace("classes=3", "classes=4"))
    result = run("data", "check", data, ok=False)
    line = data.read_text().splitlines().index(next(x for x in data.read_text().splitlines()
                                                     if x.startswith("names="))) + 1
    # the place once, then what is wrong
    assert f"{data}:{line}: error: {ds / 'coco.names'} has 3 names but classes=4" in result.output, result.output


def test_voc_command(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    out = run("data", "voc", root, tmp_path / "out", "--years", "2007,2012").output
    assert "listed 4 train + 1 valid images" in out and "other classes: unicorn (1)" in out
    assert (tmp_path / "out" / "labels" / "VOC2007" / "000001.txt").read_text() == \
        EXPECTED["VOC2007/000001.jpg"]
    out = run("data", "voc", root, tmp_path / "out2", "--years", "2007", "--sets", "train",
              "--keep-difficult").output
    assert "listed 2 train" in out and "0 difficult" in out


def test_coco_command_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [1,]}')
    result = run("data", "coco", bad, tmp_path, tmp_path / "out", ok=False)
    assert result.exit_code == 1
    assert f"error: {bad}:1:15: malformed JSON" in result.output
    bad.write_text(json.dumps({"images": [], "annotations": [{"id": 3}], "categories": [{"id": 1, "name": "a"}]}))
    result = run("data", "coco", bad, tmp_path, tmp_path / "out", ok=False)
    assert "annotations[0] (id 3): missing 'image_id'" in result.output
    result = run("data", "check", tmp_path / "none.data", ok=False)
    assert result.exit_code == 2 and "does not exist" in result.output


# -- map / valid with a stand-in detector ----------------------------------------


class FakeDetector:
    """Returns queued detections, one list per detect() call."""

    queue: list[list[SimpleNamespace]] = []
    made: list[FakeDetector] = []

    def __init__(self, cfg: str, weights: str, names: str | None = None, *, threads: int = 0) -> None:
        self.args = (cfg, weights, names, threads)
        self.calls: list[dict] = []
        self.closed = False
        FakeDetector.made.append(self)

    def detect(self, frame, thresh=0.5, hier_thresh=0.5, nms=0.45, letterbox=True, nms_kind="sort"):
        self.calls.append({"shape": frame.shape, "thresh": thresh, "nms": nms, "letterbox": letterbox})
        return FakeDetector.queue.pop(0)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def shapes_dataset(tmp_path: Path, monkeypatch) -> Path:
    ds = tmp_path / "ds"
    run("data", "shapes", ds, "--count", "10", "--seed", "5")
    run("data", "coco", ds / "instances.json", ds / "images", ds, "--valid-fraction", "0.5")
    (tmp_path / "m.cfg").write_text("[net]\n")
    (tmp_path / "m.weights").write_bytes(b"\0" * 20)
    module = types.ModuleType("pydarknet.detect")
    module.Detector = FakeDetector  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pydarknet.detect", module)
    FakeDetector.queue, FakeDetector.made = [], []
    return ds


def truth_detections(ds: Path) -> list[list[SimpleNamespace]]:
    """Perfect detections (from the JSON) for the valid list, in its order."""
    doc = json.loads((ds / "instances.json").read_text())
    ids = {im["file_name"]: im["id"] for im in doc["images"]}
    out = []
    for line in (ds / "valid.txt").read_text().split():
        anns = [a for a in doc["annotations"] if a["image_id"] == ids[Path(line).name]]
        out.append([SimpleNamespace(class_id=a["category_id"] - 1, confidence=0.9, name="",
                                    x1=a["bbox"][0], y1=a["bbox"][1], x2=a["bbox"][0] + a["bbox"][2],
                                    y2=a["bbox"][1] + a["bbox"][3]) for a in anns])
    return out


def test_map_perfect_detector(shapes_dataset: Path, tmp_path: Path) -> None:
    ds = shapes_dataset
    FakeDetector.queue = truth_detections(ds)
    out = run("map", "--data", ds / "coco.data", tmp_path / "m.cfg", tmp_path / "m.weights",
              "--json").output
    doc = json.loads(out)
    assert doc["images"] == 5 and doc["map"] == 1.0 and doc["fp"] == 0 and doc["fn"] == 0
    assert [c["name"] for c in doc["classes"]] == ["circle", "square", "triangle"]
    assert doc["coco"]["AP@[.5:.95]"] == pytest.approx(1.0) and doc["coco"]["AP@.5"] == pytest.approx(1.0)
    det = FakeDetector.made[0]
    assert det.args == (str(tmp_path / "m.cfg"), str(tmp_path / "m.weights"),
                        str(ds.resolve() / "coco.names"), 0)
    assert det.closed and len(det.calls) == 5
    assert det.calls[0] == {"shape": (128, 128, 3), "thresh": 0.005, "nms": 0.45, "letterbox": True}


def test_map_table_and_misses(shapes_dataset: Path, tmp_path: Path) -> None:
    ds = shapes_dataset
    perfect = truth_detections(ds)
    FakeDetector.queue = [[] for _ in perfect]  # finds nothing
    out = run("map", "--data", ds / "coco.data", tmp_path / "m.cfg", tmp_path / "m.weights",
              "--iou", "0.75").output
    assert "5 images" in out and "mAP@0.75 (all-point) = 0.00%" in out
    assert "COCO (pycocotools, bbox):" in out
    FakeDetector.queue = truth_detections(ds)
    out = run("map", "--data", ds / "coco.data", tmp_path / "m.cfg", tmp_path / "m.weights",
              "--limit", "2").output
    assert "2 images" in out and "100.00%" in out
    # half the images found: recall .5 at precision 1 on every class with truth
    FakeDetector.queue = [list(d) if i % 2 else [] for i, d in enumerate(truth_detections(ds))]
    out = run("map", "--data", ds / "coco.data", tmp_path / "m.cfg", tmp_path / "m.weights",
              "--limit", "2", "--voc07", "--json").output
    doc = json.loads(out)
    assert doc["method"] == "voc07"
    # precision 1 up to recall tp / truths: the 11 points at or below it count 1 each
    for c in doc["classes"]:
        if c["truths"]:
            points = sum(t / 10 <= c["tp"] / c["truths"] + 1e-12 for t in range(11))
            assert c["ap"] == round(points / 11, 6), c
    assert any(0 < c["tp"] < c["truths"] for c in doc["classes"])


def test_valid_writes_coco_results(shapes_dataset: Path, tmp_path: Path) -> None:
    ds = shapes_dataset
    perfect = truth_detections(ds)
    FakeDetector.queue = [list(d) for d in perfect]
    out = run("valid", "--data", ds / "coco.data", tmp_path / "m.cfg", tmp_path / "m.weights",
              "--out", tmp_path / "r.json").output
    n = sum(len(d) for d in perfect)
    assert f"wrote {n} detections on 5 images" in out
    results = json.loads((tmp_path / "r.json").read_text())
    doc = json.loads((ds / "instances.json").read_text())
    ids = {im["file_name"]: im["id"] for im in doc["images"]}
    first_image = Path((ds / "valid.txt").read_text().split()[0]).name
    first = perfect[0][0]
    assert results[0] == {"image_id": ids[first_image], "category_id": first.class_id + 1,
                          "bbox": [first.x1, first.y1, first.x2 - first.x1, first.y2 - first.y1],
                          "score": 0.9}
    truth = {(a["image_id"], a["category_id"], tuple(a["bbox"])) for a in doc["annotations"]}
    assert {(r["image_id"], r["category_id"], tuple(r["bbox"])) for r in results} <= truth


def test_map_errors(shapes_dataset: Path, tmp_path: Path) -> None:
    ds = shapes_dataset
    (ds / "labels" / Path((ds / "valid.txt").read_text().split()[0]).with_suffix(".txt").name).write_text("9 1 1 1 1\n")
    result = run("map", "--data", ds / "coco.data", tmp_path / "m.cfg", tmp_path / "m.weights", ok=False)
    assert result.exit_code == 1 and "class 9 out of range" in result.output
    (tmp_path / "novalid.data").write_text(f"classes=3\nnames={ds / 'coco.names'}\n")
    result = run("map", "--data", tmp_path / "novalid.data", tmp_path / "m.cfg", tmp_path / "m.weights",
                 ok=False)
    assert result.exit_code == 1 and "no 'valid=' line" in result.output
