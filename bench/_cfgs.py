"""The training benchmarks' network: the repo's yolov2-tiny.cfg at a given
input size and batch, one forward per step, no multi-scale resizing."""
from __future__ import annotations

from pathlib import Path

from pydarknet.cfg import Cfg

REPO = Path(__file__).resolve().parent.parent


def yolov2_tiny_cfg(folder: Path, size: int, batch: int) -> Path:
    """cfg/yolov2-tiny.cfg with width=height=size, batch images per step
    (subdivisions=1) and random=0, written into `folder`."""
    cfg = Cfg.read(REPO / "cfg" / "yolov2-tiny.cfg")
    cfg.net.set("width", size).set("height", size).set("batch", batch).set("subdivisions", 1)
    for section in cfg.layers:
        if "random" in section:
            section.set("random", 0)
    return cfg.write(folder / f"yolov2-tiny-{size}-b{batch}.cfg")
