"""`pydarknet map` and `valid` with the real engine: yolov3-tiny on darknet's
sample images, with ground truth made from darknet's own detections (so the
expected mAP is known: 100% at IoU .5)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from pydarknet import Detector
from pydarknet.cli import main
from shared import shared_path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    cfg, weights = shared_path("models/yolov3-tiny.cfg"), shared_path("models/yolov3-tiny.weights")
    root = tmp_path_factory.mktemp("set")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    listed = []
    with Detector(cfg, weights, threads=2) as detector:
        for name in ("dog.jpg", "person.jpg", "horses.jpg"):
            frame = cv2.imread(str(shared_path(f"darknet/data/{name}")))
            png = root / "images" / (Path(name).stem + ".png")
            cv2.imwrite(str(png), frame)  # lossless: the engine reads the same pixels
            h, w = frame.shape[:2]
            lines = [f"{d.class_id} {d.x / w:.6f} {d.y / h:.6f} {d.w / w:.6f} {d.h / h:.6f}"
                     for d in detector.detect(frame, thresh=.3)]
            assert lines
            (root / "labels" / (png.stem + ".txt")).write_text("\n".join(lines) + "\n")
            listed.append(str(png))
    (root / "valid.txt").write_text("\n".join(listed) + "\n")
    names = shared_path("darknet/data/coco.names")
    data = root / "set.data"
    data.write_text(f"classes=80\ntrain={root / 'valid.txt'}\nvalid={root / 'valid.txt'}\n"
                    f"names={names}\n")
    return cfg, weights, data


def test_map_of_own_detections_is_perfect(dataset) -> None:
    cfg, weights, data = dataset
    result = CliRunner().invoke(main, ["map", "--data", str(data), str(cfg), str(weights),
                                       "--json", "--no-progress", "--threads", "2"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["images"] == 3
    assert doc["map"] == pytest.approx(1.0)


def test_valid_writes_coco_results(dataset, tmp_path: Path) -> None:
    cfg, weights, data = dataset
    out = tmp_path / "results.json"
    result = CliRunner().invoke(main, ["valid", "--data", str(data), str(cfg), str(weights),
                                       "--out", str(out), "--no-progress", "--threads", "2"])
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())
    assert results and {"image_id", "category_id", "bbox", "score"} <= set(results[0])
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] > 0 for r in results)
