"""Builders of darknet's reference networks for any class count.

Each builder returns a `Cfg` that has, when called with the reference's
class count, anchors, size and batch, the same sections and option values
(in the same order) as the cfg of the same name in darknet's `cfg/`:

    ==================  ===========================================================
    yolov2.cfg          yolov2(80, width=608, height=608, batch=1, subdivisions=1)
    yolov2-voc.cfg      yolov2_voc(20, batch=1, subdivisions=1)
    yolov2-tiny.cfg     yolov2_tiny(80, batch=1, subdivisions=1)
    yolov2-tiny-voc.cfg yolov2_tiny_voc(20, batch=1, subdivisions=1)
    darknet19.cfg       darknet19(1000, batch=1, subdivisions=1)
    yolov3-tiny.cfg     yolov3_tiny(80, batch=1, subdivisions=1)
    ==================  ===========================================================

What depends on the class count is set from it: `classes=` of every
[region]/[yolo], `filters=(classes + coords + 1) * num` of the convolution
before a [region], `filters=(classes + 5) * len(mask)` before each [yolo],
and the classifier's last `filters=classes` (darknet19).  Anchors: [region]
anchors are in grid cells (pixels / 32), [yolo] anchors in pixels of the
network input; giving another number of anchors changes `num` (and, for
yolov3-tiny, the masks: the coarse 13x13 head gets the larger half).

The files in the repository's `cfg/` folder are written by
`write_default_cfgs` (`python -m pydarknet.builders --write cfg/`).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Union

from .cfg import Cfg, CfgSection, format_value
from .errors import ArgumentError

__all__ = [
    "BUILDERS", "COCO_REGION_ANCHORS", "VOC_REGION_ANCHORS", "VOC_TINY_REGION_ANCHORS",
    "YOLOV3_TINY_ANCHORS", "darknet19", "parse_anchors", "write_default_cfgs", "yolov2",
    "yolov2_tiny", "yolov2_tiny_voc", "yolov2_voc", "yolov3_tiny",
]

Anchors = Union[Sequence[float], Sequence[Sequence[float]]]

# The reference anchors (w, h), as written in darknet's cfgs.
COCO_REGION_ANCHORS = ((0.57273, 0.677385), (1.87446, 2.06253), (3.33843, 5.47434),
                       (7.88282, 3.52778), (9.77052, 9.16828))
VOC_REGION_ANCHORS = ((1.3221, 1.73145), (3.19275, 4.00944), (5.05587, 8.09892),
                      (9.47112, 4.84053), (11.2364, 10.0071))
VOC_TINY_REGION_ANCHORS = ((1.08, 1.19), (3.42, 4.41), (6.63, 11.38), (9.42, 5.11),
                           (16.62, 10.52))
YOLOV3_TINY_ANCHORS = ((10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319))

REGION_COORDS = 4


# -- helpers ---------------------------------------------------------------------


def parse_anchors(anchors: Anchors | str) -> list[tuple[float, float]]:
    """Anchors as (w, h) pairs from pairs, a flat list or `"10,14, 23,27"`."""
    if isinstance(anchors, str):
        parts = [p for p in anchors.replace(" ", ",").split(",") if p.strip()]
        try:
            flat = [float(p) for p in parts]
        except ValueError:
            raise ArgumentError(f"anchors {anchors!r}: expected numbers separated by commas") from None
    else:
        flat = []
        for a in anchors:
            if isinstance(a, (int, float)):
                flat.append(float(a))
            else:
                flat.extend(float(v) for v in a)
    if not flat or len(flat) % 2:
        raise ArgumentError("anchors need an even, non-zero count of numbers (w,h pairs); "
                            f"got {len(flat)}")
    if any(not v > 0 for v in flat):
        raise ArgumentError("anchors must be positive")
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def anchor_line(pairs: Sequence[tuple[float, float]]) -> tuple[str, str]:
    """The `anchors=` value and a readable line for it (`anchors = 10,14,  23,27`)."""
    value = format_value([v for p in pairs for v in p])
    text = "anchors = " + ",  ".join(f"{format_value(w)},{format_value(h)}" for w, h in pairs)
    return value, text


def _short(v: float) -> str:
    """darknet's habit of writing .1 for 0.1 (the reference cfgs' spelling)."""
    text = format_value(v)
    if text.startswith("0."):
        return text[1:]
    if text.startswith("-0."):
        return "-" + text[2:]
    return text


def _check_common(classes: int, width: int, height: int, batch: int, subdivisions: int,
                  multiple: int = 32) -> None:
    if not isinstance(classes, int) or classes < 1:
        raise ArgumentError(f"classes must be a positive integer, got {classes!r}")
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or v < multiple or v % multiple:
            raise ArgumentError(f"{name} must be a positive multiple of {multiple}, got {v!r}")
    if batch < 1 or subdivisions < 1 or batch % subdivisions:
        raise ArgumentError(f"batch ({batch}) must be a positive multiple of subdivisions "
                            f"({subdivisions})")


def _net(cfg: Cfg, batch: int, subdivisions: int, train: tuple[int, int],
         size: Sequence[tuple[str, int]]) -> CfgSection:
    net = cfg.add_section("net")
    if (batch, subdivisions) == (1, 1):
        net.comment("# Testing").add("batch", 1).add("subdivisions", 1)
        net.comment("# Training").comment(f"# batch={train[0]}")
        net.comment(f"# subdivisions={train[1]}")
    else:
        net.comment("# Training").add("batch", batch).add("subdivisions", subdivisions)
        net.comment("# Testing").comment("# batch=1").comment("# subdivisions=1")
    for k, v in size:
        net.add(k, v)
    return net


def _detector_net(cfg: Cfg, batch: int, subdivisions: int, train: tuple[int, int],
                  width: int, height: int, height_first: bool, burn_in: int | None,
                  max_batches: int, steps: Sequence[int], scales: Sequence[float],
                  learning_rate: float) -> CfgSection:
    size = [("width", width), ("height", height)]
    if height_first:
        size.reverse()
    net = _net(cfg, batch, subdivisions, train, size)
    net.add("channels", 3).add("momentum", "0.9").add("decay", "0.0005").add("angle", 0)
    net.add("saturation", "1.5", "saturation = 1.5").add("exposure", "1.5", "exposure = 1.5")
    net.add("hue", ".1").comment("")
    net.add("learning_rate", learning_rate)
    if burn_in is not None:
        net.add("burn_in", burn_in)
    net.add("max_batches", max_batches, f"max_batches = {max_batches}")
    net.add("policy", "steps").add("steps", list(steps))
    net.add("scales", ",".join(_short(s) for s in scales))
    return net


def _conv(cfg: Cfg, filters: int, size: int, *, bn: bool = True, activation: str = "leaky",
          filters_after_pad: bool = False) -> CfgSection:
    s = cfg.add_section("convolutional")
    if bn:
        s.add("batch_normalize", 1)
    if not filters_after_pad:
        s.add("filters", filters)
    s.add("size", size).add("stride", 1).add("pad", 1)
    if filters_after_pad:
        s.add("filters", filters)
    s.add("activation", activation)
    return s


def _maxpool(cfg: Cfg, stride: int = 2) -> None:
    cfg.add_section("maxpool").add("size", 2).add("stride", stride)


def _darknet19_backbone(cfg: Cfg) -> None:
    """The 18 convolutions and 5 max-pools shared by darknet19 and yolov2."""
    _conv(cfg, 32, 3)
    _maxpool(cfg)
    _conv(cfg, 64, 3)
    _maxpool(cfg)
    for wide in (128, 256):
        _conv(cfg, wide, 3)
        _conv(cfg, wide // 2, 1)
        _conv(cfg, wide, 3)
        _maxpool(cfg)
    for wide in (512, 1024):
        _conv(cfg, wide, 3)
        _conv(cfg, wide // 2, 1)
        _conv(cfg, wide, 3)
        _conv(cfg, wide // 2, 1)
        _conv(cfg, wide, 3)
        if wide == 512:
            _maxpool(cfg)


def _region(cfg: Cfg, classes: int, anchors: Sequence[tuple[float, float]], *, jitter: str,
            rescore: int) -> None:
    value, text = anchor_line(anchors)
    r = cfg.add_section("region").add("anchors", value, text)
    r.add("bias_match", 1).add("classes", classes).add("coords", REGION_COORDS)
    r.add("num", len(anchors)).add("softmax", 1).add("jitter", jitter).add("rescore", rescore)
    r.comment("")
    r.add("object_scale", 5).add("noobject_scale", 1).add("class_scale", 1).add("coord_scale", 1)
    r.comment("")
    r.add("absolute", 1).add("thresh", ".6", "thresh = .6").add("random", 1)


def _header(cfg: Cfg, call: str) -> None:
    cfg.header_comments[:0] = [f"# {call}", "# written by pydarknet.builders (pydarknet cfg new)"]


def _region_anchors(anchors: Anchors | str | None, default: Sequence[tuple[float, float]]
                    ) -> list[tuple[float, float]]:
    if anchors is None:
        return [(float(w), float(h)) for w, h in default]
    return parse_anchors(anchors)


# -- YOLOv2 ----------------------------------------------------------------------


def _yolov2_like(classes: int, anchors: list[tuple[float, float]], width: int, height: int,
                 batch: int, subdivisions: int, *, height_first: bool, max_batches: int,
                 steps: Sequence[int], scales: Sequence[float], learning_rate: float,
                 burn_in: int | None) -> Cfg:
    _check_common(classes, width, height, batch, subdivisions)
    cfg = Cfg()
    _detector_net(cfg, batch, subdivisions, (64, 8), width, height, height_first, burn_in,
                  max_batches, steps, scales, learning_rate)
    _darknet19_backbone(cfg)
    cfg.sections[-1].comment("").comment("").comment("#######")
    _conv(cfg, 1024, 3, filters_after_pad=True)
    _conv(cfg, 1024, 3, filters_after_pad=True)
    cfg.add_section("route").add("layers", -9)
    _conv(cfg, 64, 1, filters_after_pad=True)
    cfg.add_section("reorg").add("stride", 2)
    cfg.add_section("route").add("layers", "-1,-4")
    _conv(cfg, 1024, 3, filters_after_pad=True)
    _conv(cfg, (classes + REGION_COORDS + 1) * len(anchors), 1, bn=False, activation="linear",
          filters_after_pad=True).comment("").comment("")
    _region(cfg, classes, anchors, jitter=".3", rescore=1)
    return cfg


def yolov2(classes: int, anchors: Anchors | str | None = None, width: int = 416,
           height: int = 416, batch: int = 64, subdivisions: int = 8, *,
           max_batches: int = 500200, steps: Sequence[int] = (400000, 450000),
           scales: Sequence[float] = (0.1, 0.1), learning_rate: float = 0.001,
           burn_in: int | None = 1000) -> Cfg:
    """YOLOv2 (darknet's yolov2.cfg: darknet19 backbone, passthrough via
    [reorg], [region] head).  `anchors` in grid cells; default: COCO's."""
    a = _region_anchors(anchors, COCO_REGION_ANCHORS)
    cfg = _yolov2_like(classes, a, width, height, batch, subdivisions, height_first=False,
                       max_batches=max_batches, steps=steps, scales=scales,
                       learning_rate=learning_rate, burn_in=burn_in)
    _header(cfg, f"yolov2: {classes} classes, {width}x{height}, {len(a)} anchors")
    return cfg


def yolov2_voc(classes: int = 20, anchors: Anchors | str | None = None, width: int = 416,
               height: int = 416, batch: int = 64, subdivisions: int = 8, *,
               max_batches: int = 80200, steps: Sequence[int] = (40000, 60000),
               scales: Sequence[float] = (0.1, 0.1), learning_rate: float = 0.001,
               burn_in: int | None = 1000) -> Cfg:
    """YOLOv2 with VOC's anchors and schedule (darknet's yolov2-voc.cfg)."""
    a = _region_anchors(anchors, VOC_REGION_ANCHORS)
    cfg = _yolov2_like(classes, a, width, height, batch, subdivisions, height_first=True,
                       max_batches=max_batches, steps=steps, scales=scales,
                       learning_rate=learning_rate, burn_in=burn_in)
    _header(cfg, f"yolov2-voc: {classes} classes, {width}x{height}, {len(a)} anchors")
    return cfg


def _tiny_backbone(cfg: Cfg) -> None:
    """yolov2-tiny / yolov3-tiny: six 3x3 convs with max-pools, the last
    max-pool with stride 1 (keeps 13x13), then a 1024-filter conv."""
    for i, filters in enumerate((16, 32, 64, 128, 256, 512)):
        _conv(cfg, filters, 3)
        _maxpool(cfg, stride=1 if i == 5 else 2)
    _conv(cfg, 1024, 3)


def _yolov2_tiny_like(classes: int, anchors: list[tuple[float, float]], width: int, height: int,
                      batch: int, subdivisions: int, *, head_filters: int, rescore: int,
                      max_batches: int, steps: Sequence[int], scales: Sequence[float],
                      learning_rate: float, burn_in: int | None) -> Cfg:
    _check_common(classes, width, height, batch, subdivisions)
    cfg = Cfg()
    _detector_net(cfg, batch, subdivisions, (64, 2), width, height, False, burn_in,
                  max_batches, steps, scales, learning_rate)
    _tiny_backbone(cfg)
    cfg.sections[-1].comment("").comment("###########")
    _conv(cfg, head_filters, 3, filters_after_pad=True)
    _conv(cfg, (classes + REGION_COORDS + 1) * len(anchors), 1, bn=False, activation="linear",
          filters_after_pad=True)
    _region(cfg, classes, anchors, jitter=".2", rescore=rescore)
    return cfg


def yolov2_tiny(classes: int, anchors: Anchors | str | None = None, width: int = 416,
                height: int = 416, batch: int = 64, subdivisions: int = 2, *,
                max_batches: int = 500200, steps: Sequence[int] = (400000, 450000),
                scales: Sequence[float] = (0.1, 0.1), learning_rate: float = 0.001,
                burn_in: int | None = 1000) -> Cfg:
    """Tiny YOLOv2 (darknet's yolov2-tiny.cfg).  `anchors` in grid cells."""
    a = _region_anchors(anchors, COCO_REGION_ANCHORS)
    cfg = _yolov2_tiny_like(classes, a, width, height, batch, subdivisions, head_filters=512,
                            rescore=0, max_batches=max_batches, steps=steps, scales=scales,
                            learning_rate=learning_rate, burn_in=burn_in)
    _header(cfg, f"yolov2-tiny: {classes} classes, {width}x{height}, {len(a)} anchors")
    return cfg


def yolov2_tiny_voc(classes: int = 20, anchors: Anchors | str | None = None, width: int = 416,
                    height: int = 416, batch: int = 64, subdivisions: int = 2, *,
                    max_batches: int = 40200, steps: Sequence[int] = (-1, 100, 20000, 30000),
                    scales: Sequence[float] = (0.1, 10, 0.1, 0.1), learning_rate: float = 0.001,
                    burn_in: int | None = None) -> Cfg:
    """Tiny YOLOv2 with VOC's anchors and schedule (darknet's
    yolov2-tiny-voc.cfg: 1024-filter head conv, rescore=1, no burn_in)."""
    a = _region_anchors(anchors, VOC_TINY_REGION_ANCHORS)
    cfg = _yolov2_tiny_like(classes, a, width, height, batch, subdivisions, head_filters=1024,
                            rescore=1, max_batches=max_batches, steps=steps, scales=scales,
                            learning_rate=learning_rate, burn_in=burn_in)
    _header(cfg, f"yolov2-tiny-voc: {classes} classes, {width}x{height}, {len(a)} anchors")
    return cfg


# -- YOLOv3-tiny -----------------------------------------------------------------


def _yolo(cfg: Cfg, classes: int, anchors: Sequence[tuple[float, float]],
          mask: Sequence[int]) -> None:
    value, text = anchor_line(anchors)
    y = cfg.add_section("yolo")
    y.add("mask", list(mask), "mask = " + ",".join(str(m) for m in mask))
    y.add("anchors", value, text).add("classes", classes).add("num", len(anchors))
    y.add("jitter", ".3").add("ignore_thresh", ".7", "ignore_thresh = .7")
    y.add("truth_thresh", 1, "truth_thresh = 1").add("random", 1)


def yolov3_tiny(classes: int, anchors: Anchors | str | None = None, width: int = 416,
                height: int = 416, batch: int = 64, subdivisions: int = 2, *,
                max_batches: int = 500200, steps: Sequence[int] = (400000, 450000),
                scales: Sequence[float] = (0.1, 0.1), learning_rate: float = 0.001,
                burn_in: int | None = 1000) -> Cfg:
    """Tiny YOLOv3 (darknet's yolov3-tiny.cfg): two [yolo] heads, 13x13 and
    26x26 at 416.  `anchors` in pixels, sorted by area is expected; the
    first (coarse) head gets the larger half (mask 3,4,5 of 6)."""
    a = _region_anchors(anchors, YOLOV3_TINY_ANCHORS)  # (pixels here)
    if len(a) < 2:
        raise ArgumentError("yolov3-tiny needs at least 2 anchors (one per [yolo] head)")
    _check_common(classes, width, height, batch, subdivisions)
    half = len(a) // 2
    coarse, fine = list(range(half, len(a))), list(range(half))
    cfg = Cfg()
    _detector_net(cfg, batch, subdivisions, (64, 2), width, height, False, burn_in,
                  max_batches, steps, scales, learning_rate)
    _tiny_backbone(cfg)
    cfg.sections[-1].comment("").comment("###########")
    _conv(cfg, 256, 1)
    _conv(cfg, 512, 3)
    _conv(cfg, (classes + 5) * len(coarse), 1, bn=False, activation="linear", filters_after_pad=True)
    cfg.sections[-1].comment("").comment("").comment("")
    _yolo(cfg, classes, a, coarse)
    cfg.add_section("route").add("layers", -4, "layers = -4")
    _conv(cfg, 128, 1)
    cfg.add_section("upsample").add("stride", 2)
    cfg.add_section("route").add("layers", "-1,8", "layers = -1, 8")
    _conv(cfg, 256, 3)
    _conv(cfg, (classes + 5) * len(fine), 1, bn=False, activation="linear", filters_after_pad=True)
    _yolo(cfg, classes, a, fine)
    _header(cfg, f"yolov3-tiny: {classes} classes, {width}x{height}, {len(a)} anchors")
    return cfg


# -- darknet19 classifier --------------------------------------------------------


def darknet19(classes: int = 1000, width: int = 256, height: int = 256, batch: int = 128,
              subdivisions: int = 2, *, max_batches: int = 800000, learning_rate: float = 0.1,
              burn_in: int | None = 1000) -> Cfg:
    """The darknet19 ImageNet classifier (darknet's darknet19.cfg): the
    YOLOv2 backbone, a 1x1 conv with `classes` filters, avgpool, softmax."""
    _check_common(classes, width, height, batch, subdivisions)
    cfg = Cfg()
    net = _net(cfg, batch, subdivisions, (128, 2), [("height", height), ("width", width)])
    net.add("min_crop", 128).add("max_crop", 448).add("channels", 3)
    net.add("momentum", "0.9").add("decay", "0.0005").comment("")
    if burn_in is not None:
        net.add("burn_in", burn_in)
    net.add("learning_rate", learning_rate).add("policy", "poly").add("power", 4)
    net.add("max_batches", max_batches).comment("")
    net.add("angle", 7).add("hue", ".1").add("saturation", ".75").add("exposure", ".75")
    net.add("aspect", ".75")
    _darknet19_backbone(cfg)
    s = cfg.add_section("convolutional")
    s.add("filters", classes).add("size", 1).add("stride", 1).add("pad", 1).add("activation", "linear")
    cfg.add_section("avgpool")
    cfg.add_section("softmax").add("groups", 1)
    _header(cfg, f"darknet19 classifier: {classes} classes, {width}x{height}")
    return cfg


# -- the repository's cfg/ files -------------------------------------------------

BUILDERS: dict[str, Callable[..., Cfg]] = {
    "yolov2": yolov2,
    "yolov2-voc": yolov2_voc,
    "yolov2-tiny": yolov2_tiny,
    "yolov2-tiny-voc": yolov2_tiny_voc,
    "darknet19": darknet19,
    "yolov3-tiny": yolov3_tiny,
}

# The calls that reproduce darknet's reference cfgs (testing batch 1/1, as
# darknet ships them).
DEFAULT_CFGS: dict[str, tuple[str, dict[str, object]]] = {
    "yolov2.cfg": ("yolov2", {"classes": 80, "width": 608, "height": 608}),
    "yolov2-voc.cfg": ("yolov2-voc", {"classes": 20}),
    "yolov2-tiny.cfg": ("yolov2-tiny", {"classes": 80}),
    "yolov2-tiny-voc.cfg": ("yolov2-tiny-voc", {"classes": 20}),
    "darknet19.cfg": ("darknet19", {"classes": 1000}),
    "yolov3-tiny.cfg": ("yolov3-tiny", {"classes": 80}),
}


def default_cfg(filename: str) -> Cfg:
    """The builder output for one of the repository's cfg/ files."""
    name, kwargs = DEFAULT_CFGS[filename]
    call = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    cfg = BUILDERS[name](**kwargs, batch=1, subdivisions=1)
    cfg.header_comments = [
        f"# {filename}: written by pydarknet.builders ({name}({call}, batch=1, subdivisions=1)).",
        "# Same sections and values as darknet's cfg of the same name; regenerate with",
        "#   python -m pydarknet.builders --write cfg/",
        "# Do not edit: tests/test_builders.py checks that this file is the builder's output.",
        "",
    ]
    return cfg


def write_default_cfgs(folder: str | Path) -> list[Path]:
    """Write the six reference cfgs into `folder`; returns their paths."""
    out = Path(folder)
    return [default_cfg(name).write(out / name) for name in DEFAULT_CFGS]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pydarknet.builders",
                                     description="Write the repository's cfg/ files.")
    parser.add_argument("--write", metavar="FOLDER", required=True, help="output folder (cfg/)")
    args = parser.parse_args(argv)
    for path in write_default_cfgs(args.write):
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
