"""Builders reproduce darknet's reference cfgs; the repo's cfg/ files are
their output; class-dependent values follow the class and anchor counts."""
from __future__ import annotations

from pathlib import Path

import pytest

from pydarknet import builders
from pydarknet.builders import (DEFAULT_CFGS, darknet19, default_cfg, write_default_cfgs, yolov2,
                                yolov2_tiny, yolov2_tiny_voc, yolov2_voc, yolov3_tiny)
from pydarknet.cfg import Cfg
from pydarknet.errors import ArgumentError
from shared import darknet_cfg

REPO = Path(__file__).resolve().parent.parent

REFERENCE_CALLS = {
    "yolov2.cfg": lambda: yolov2(80, width=608, height=608, batch=1, subdivisions=1),
    "yolov2-voc.cfg": lambda: yolov2_voc(20, batch=1, subdivisions=1),
    "yolov2-tiny.cfg": lambda: yolov2_tiny(80, batch=1, subdivisions=1),
    "yolov2-tiny-voc.cfg": lambda: yolov2_tiny_voc(20, batch=1, subdivisions=1),
    "darknet19.cfg": lambda: darknet19(1000, batch=1, subdivisions=1),
    "yolov3-tiny.cfg": lambda: yolov3_tiny(80, anchors="10,14, 23,27, 37,58, 81,82, 135,169, 344,319",
                                           batch=1, subdivisions=1),
}


def assert_same_sections(ours: Cfg, reference: Cfg) -> None:
    assert len(ours.sections) == len(reference.sections)
    for i, (a, b) in enumerate(zip(ours.sections, reference.sections)):
        assert a.name == b.name, f"section {i}: [{a.name}] vs [{b.name}]"
        assert a.options == b.options, f"section {i} [{a.name}] (reference line {b.line})"


@pytest.mark.parametrize("name", sorted(REFERENCE_CALLS))
def test_builder_reproduces_reference(name: str) -> None:
    assert_same_sections(REFERENCE_CALLS[name](), Cfg.read(darknet_cfg(name)))


@pytest.mark.parametrize("name", sorted(DEFAULT_CFGS))
def test_repo_cfg_is_builder_output(name: str) -> None:
    path = REPO / "cfg" / name
    assert path.read_text() == default_cfg(name).to_text(), (
        f"cfg/{name} is not the builder's output: run python -m pydarknet.builders --write cfg/")
    assert "written by pydarknet.builders" in path.read_text().splitlines()[0]


@pytest.mark.parametrize("name", sorted(DEFAULT_CFGS))
def test_repo_cfg_matches_reference(name: str) -> None:
    assert_same_sections(Cfg.read(REPO / "cfg" / name), Cfg.read(darknet_cfg(name)))


def test_write_default_cfgs(tmp_path: Path) -> None:
    paths = write_default_cfgs(tmp_path)
    assert sorted(p.name for p in paths) == sorted(DEFAULT_CFGS)
    for p in paths:
        assert p.read_text() == (REPO / "cfg" / p.name).read_text()
    assert builders.main(["--write", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "yolov2.cfg").read_text() == paths[0].read_text()


def head_filters(cfg: Cfg, head: str) -> list[int]:
    return [cfg.sections[cfg.index(s) - 1].get_int("filters") for s in cfg.find(head)]


def test_class_count_sets_filters_and_classes() -> None:
    cfg = yolov2(3)
    region = cfg.find("region")[0]
    assert region.get_int("classes") == 3 and region.get_int("num") == 5
    assert head_filters(cfg, "region") == [(3 + 4 + 1) * 5]
    assert cfg.net.get_int("batch") == 64 and cfg.net.get_int("subdivisions") == 8
    assert cfg.net.get_int("width") == 416
    cfg = yolov2_tiny(1, anchors=[(1, 2), (3, 4), (5, 6)], width=224, height=160)
    assert cfg.find("region")[0].get_list("anchors") == [1, 2, 3, 4, 5, 6]
    assert cfg.find("region")[0].get_int("num") == 3
    assert head_filters(cfg, "region") == [(1 + 5) * 3]
    assert (cfg.net.get_int("width"), cfg.net.get_int("height")) == (224, 160)
    assert head_filters(yolov2_voc(7), "region") == [60]
    assert head_filters(yolov2_tiny_voc(2, anchors=[1, 1]), "region") == [7]
    assert darknet19(10).sections[-3].get_int("filters") == 10


def test_yolov3_tiny_masks_follow_anchor_count() -> None:
    cfg = yolov3_tiny(3)
    yolos = cfg.find("yolo")
    assert [y.get_list("mask", item=int) for y in yolos] == [[3, 4, 5], [0, 1, 2]]
    assert head_filters(cfg, "yolo") == [24, 24]
    assert all(y.get_int("classes") == 3 and y.get_int("num") == 6 for y in yolos)
    cfg = yolov3_tiny(2, anchors="5,5, 10,10, 20,20, 40,40, 80,80, 160,160, 200,200, 300,300, 400,400")
    assert [y.get_list("mask", item=int) for y in cfg.find("yolo")] == [[4, 5, 6, 7, 8], [0, 1, 2, 3]]
    assert head_filters(cfg, "yolo") == [35, 28]
    assert cfg.find("yolo")[0].get_int("num") == 9


def test_training_and_testing_batch_comments() -> None:
    train = yolov2(3).to_text()
    assert "# Training\nbatch=64\nsubdivisions=8\n# Testing\n# batch=1\n# subdivisions=1\n" in train
    test = yolov2(3, batch=1, subdivisions=1).to_text()
    assert "# Testing\nbatch=1\nsubdivisions=1\n# Training\n# batch=64\n# subdivisions=8\n" in test
    assert Cfg.parse(train) == yolov2(3)


@pytest.mark.parametrize("call, message", [
    (lambda: yolov2(0), "classes must be a positive integer"),
    (lambda: yolov2(3, width=100), "width must be a positive multiple of 32"),
    (lambda: yolov2_tiny(3, batch=64, subdivisions=5), "multiple of subdivisions"),
    (lambda: yolov2(3, anchors="1,2,3"), "even, non-zero count"),
    (lambda: yolov2(3, anchors="1,x"), "expected numbers"),
    (lambda: yolov2(3, anchors=[(1, -2)]), "positive"),
    (lambda: yolov3_tiny(3, anchors="10,10"), "at least 2 anchors"),
])
def test_bad_builder_arguments(call, message: str) -> None:
    with pytest.raises(ArgumentError, match=message):
        call()
