"""k-means anchors (1 - IoU) and writing anchors into cfgs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pydarknet.anchors import (anchor_iou, compute_anchors, kmeans_anchors, set_anchors,
                               update_cfg_file)
from pydarknet.builders import yolov2, yolov3_tiny
from pydarknet.cfg import Cfg
from pydarknet.data import DataConfig, write_data_file, write_names
from pydarknet.errors import ArgumentError, CfgError, DataError

CENTRES = np.array([[20.0, 30.0], [60.0, 40.0], [150.0, 160.0]])  # sorted by area


def three_clusters(n: int = 300, spread: float = 0.03, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, 3, n)
    return CENTRES[pick] * rng.uniform(1 - spread, 1 + spread, (n, 2))


def test_anchor_iou_known_values() -> None:
    boxes = np.array([[10.0, 10.0], [20.0, 5.0]])
    anchors = np.array([[10.0, 10.0], [5.0, 20.0], [40.0, 40.0]])
    expected = np.array([[1.0, 50 / 150, 100 / 1600],
                         [50 / 150, 25 / 175, 100 / 1600]])
    np.testing.assert_allclose(anchor_iou(boxes, anchors), expected, rtol=1e-12)


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_recovers_three_tight_clusters(init: str) -> None:
    sizes = three_clusters()
    r = kmeans_anchors(sizes, 3, seed=0, init=init, width=416, height=416)
    # each anchor is the mean of its cluster: within the 3% spread of the centre
    np.testing.assert_allclose(r.anchors, CENTRES, rtol=0.01)
    assert r.avg_iou > 0.95
    assert r.counts.sum() == 300 and (r.counts > 60).all()
    assert r.n_boxes == 300 and r.iterations >= 1
    # the average IoU is the mean best IoU with the returned anchors
    assert r.avg_iou == pytest.approx(anchor_iou(sizes, r.anchors).max(axis=1).mean(), abs=1e-12)
    np.testing.assert_allclose(r.in_grid_cells(), CENTRES / 32, rtol=0.01)
    assert "average IoU" in r.format()


def test_seeded_and_sorted() -> None:
    rng = np.random.default_rng(3)
    sizes = rng.uniform(5, 200, (500, 2))
    a = kmeans_anchors(sizes, 6, seed=7)
    b = kmeans_anchors(sizes, 6, seed=7)
    np.testing.assert_array_equal(a.anchors, b.anchors)
    areas = a.anchors.prod(axis=1)
    assert (np.diff(areas) >= 0).all()
    # more anchors fit better
    assert kmeans_anchors(sizes, 9, seed=0).avg_iou > kmeans_anchors(sizes, 3, seed=0).avg_iou


def test_kmeans_errors() -> None:
    with pytest.raises(DataError, match="cannot give 3 anchors"):
        kmeans_anchors(np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0]]), 3)
    with pytest.raises(ArgumentError, match="must be positive"):
        kmeans_anchors(three_clusters(), 0)
    with pytest.raises(ArgumentError, match="init must be"):
        kmeans_anchors(three_clusters(), 2, init="nope")


def dataset_with_boxes(root: Path, rel_sizes: np.ndarray) -> Path:
    """One image per box; labels with the given relative (w, h)."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    lines = []
    for i, (w, h) in enumerate(rel_sizes):
        (root / "images" / f"{i}.jpg").write_bytes(b"\xff\xd8\xff")
        (root / "labels" / f"{i}.txt").write_text(f"0 0.5 0.5 {w:.6f} {h:.6f}\n")
        lines.append(f"{root}/images/{i}.jpg\n")
    (root / "train.txt").write_text("".join(lines))
    write_names(root / "x.names", ["thing"])
    return write_data_file(root / "x.data", DataConfig(classes=1, train=str(root / "train.txt"),
                                                       names=str(root / "x.names")))


def test_compute_anchors_scales_to_network(tmp_path: Path) -> None:
    rel = np.array([[0.25, 0.5]] * 5 + [[0.05, 0.1]] * 5)
    data = dataset_with_boxes(tmp_path / "ds", rel)
    r = compute_anchors(data, 2, 416, 320, progress=False)
    np.testing.assert_allclose(r.anchors, [[20.8, 32.0], [104.0, 160.0]], rtol=1e-5)
    assert r.avg_iou == pytest.approx(1.0)
    assert (r.width, r.height, r.n_boxes) == (416, 320, 10)


def test_set_anchors_region() -> None:
    cfg = yolov2(3)
    anchors = np.array([[32.0, 64.0], [96.0, 96.0], [320.0, 160.0]])
    set_anchors(cfg, anchors)
    region = cfg.find("region")[0]
    assert region.get_list("anchors") == [1, 2, 3, 3, 10, 5]  # grid cells = pixels / 32
    assert region.get_int("num") == 3
    assert cfg.sections[cfg.index(region) - 1].get_int("filters") == (3 + 4 + 1) * 3
    assert "anchors = 1,2,  3,3,  10,5\n" in cfg.to_text()


def test_set_anchors_yolo_keeps_or_redistributes_masks() -> None:
    cfg = yolov3_tiny(2)
    six = np.array([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319.5]])
    set_anchors(cfg, six)
    yolos = cfg.find("yolo")
    assert [y.get_list("mask", item=int) for y in yolos] == [[3, 4, 5], [0, 1, 2]]
    assert yolos[0].get("anchors") == "10,14,23,27,37,58,81,82,135,169,344,319.5"
    nine = np.arange(1, 19, dtype=float).reshape(9, 2) * 10
    set_anchors(cfg, nine)
    assert [y.get_list("mask", item=int) for y in yolos] == [[4, 5, 6, 7, 8], [0, 1, 2, 3]]
    assert [y.get_int("num") for y in yolos] == [9, 9]
    assert [cfg.sections[cfg.index(y) - 1].get_int("filters") for y in yolos] == [35, 28]


def test_set_anchors_errors_and_file_update(tmp_path: Path) -> None:
    with pytest.raises(CfgError, match=r"no \[region\] or \[yolo\]"):
        set_anchors(Cfg.parse("[net]\nwidth=32\n[convolutional]\nfilters=3\n"), [[1, 1]])
    with pytest.raises(CfgError, match=r"not preceded by a \[convolutional\]"):
        set_anchors(Cfg.parse("[net]\n[maxpool]\n[region]\nclasses=2\n"), [[1, 1]])
    with pytest.raises(ArgumentError, match="positive"):
        set_anchors(yolov2(3), [[1, -1]])
    with pytest.raises(ArgumentError, match="cannot be shared"):
        set_anchors(yolov3_tiny(3), [[5, 5]])
    path = yolov2(3).write(tmp_path / "a.cfg")
    update_cfg_file(path, np.array([[64.0, 64.0]]), tmp_path / "b.cfg")
    assert Cfg.read(path) == yolov2(3)  # untouched
    b = Cfg.read(tmp_path / "b.cfg")
    assert b.find("region")[0].get("anchors") == "2,2"
    assert b.find("region")[0].get_int("num") == 1
