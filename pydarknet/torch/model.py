"""`DarknetModel`: a darknet cfg as a PyTorch module.

    >>> from pydarknet.torch import DarknetModel
    >>> model = DarknetModel("yolov3-tiny.cfg").eval()
    >>> model.load_darknet_weights("yolov3-tiny.weights")
    >>> heads = model(images)                 # what the engine's predict returns
    >>> boxes = model(images, decode=True)    # (B, N, 5 + C)

Built from the cfg model (pydarknet.cfg) alone: no engine is needed.  The
layers follow the engine's semantics (pydarknet/torch/layers.py names the
darknet quirks reproduced), and the options are read with the engine's
defaults; options the engine refuses are refused here with the same
file:line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import torch
from torch import Tensor, nn

from ..cfg import Cfg, CfgSection
from ..errors import CfgError, UnsupportedError
from .layers import (
    ACTIVATIONS,
    AvgPool,
    Connected,
    Convolutional,
    Cost,
    Crop,
    Dropout,
    MaxPool,
    Region,
    RegionParams,
    Reorg,
    Route,
    Shortcut,
    Softmax,
    Upsample,
    Yolo,
    YoloParams,
    c_div,
)

if TYPE_CHECKING:
    from .loss import RegionLoss

__all__ = ["DarknetModel", "LayerShape"]

CfgLike = Union[str, "os.PathLike[str]", Cfg]
Shape = tuple[int, int, int]  # (C, H, W)
Built = tuple[nn.Module, Shape]

# Section names (and darknet's aliases) -> canonical layer type.
LAYER_TYPES = {
    "convolutional": "convolutional", "conv": "convolutional",
    "connected": "connected", "conn": "connected",
    "maxpool": "maxpool", "max": "maxpool",
    "avgpool": "avgpool", "avg": "avgpool",
    "route": "route", "reorg": "reorg", "shortcut": "shortcut", "upsample": "upsample",
    "region": "region", "yolo": "yolo",
    "softmax": "softmax", "soft": "softmax",
    "dropout": "dropout", "cost": "cost", "crop": "crop",
}

# Sections darknet knows that the engine (and so this module) does not implement.
UNSUPPORTED = {
    "local": "locally connected layer", "detection": "YOLOv1 detection layer",
    "rnn": "recurrent layer", "gru": "GRU layer", "lstm": "LSTM layer",
    "crnn": "convolutional recurrent layer", "deconvolutional": "deconvolutional layer",
    "deconv": "deconvolutional layer", "batchnorm": "stand-alone batch-norm layer",
    "activation": "stand-alone activation layer", "logistic": "logistic loss layer",
    "l2norm": "L2-normalisation layer", "normalization": "local response normalisation layer",
    "lrn": "local response normalisation layer", "iseg": "instance segmentation layer",
    "xor": "xor layer",
}


@dataclass(frozen=True)
class LayerShape:
    """One layer as built: its type, cfg section, and (C, H, W) in and out."""

    index: int
    type: str
    section: CfgSection
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]


def _read_cfg(cfg: CfgLike) -> Cfg:
    if isinstance(cfg, Cfg):
        return cfg
    if isinstance(cfg, str) and "\n" in cfg and "[" in cfg:
        return Cfg.parse(cfg)  # cfg text
    return Cfg.read(cfg)


def _require(section: CfgSection, key: str, allowed: int, what: str) -> None:
    if section.get_int(key, allowed) != allowed:
        raise UnsupportedError(f"{section.where(key)}: [{section.name}] {key}="
                               f"{section.get(key)}: {what}")


def _refuse_text(section: CfgSection, key: str, what: str) -> None:
    if section.get(key) is not None:
        raise UnsupportedError(f"{section.where(key)}: [{section.name}] {key}={section.get(key)}: "
                               f"{what}")


def _layer_index(section: CfgSection, key: str, value: int, here: int) -> int:
    index = here + value if value < 0 else value
    if index < 0 or index >= here:
        raise CfgError(f"{section.where(key)}: [{section.name}] {key}={value} refers to layer "
                       f"{index}, but this is layer {here}: expected an earlier layer")
    return index


def _activation(section: CfgSection, default: str) -> str:
    name = section.get_str("activation", default)
    if name not in ACTIVATIONS:
        raise CfgError(f"{section.where('activation')}: [{section.name}] unknown activation "
                       f"'{name}' (darknet's are {', '.join(ACTIVATIONS)})")
    return name


class DarknetModel(nn.Module):
    """A darknet network built from a cfg (a path, a `Cfg`, or cfg text).

    Args:
        cfg: the network description.
        width, height: override [net]'s input size (0 = the cfg's).

    Attributes:
        cfg: the `Cfg` it was built from (its text goes into .pt files).
        layers: one module per cfg layer section, in order (`layers[i]` is
            darknet's layer i).
        shapes: `LayerShape` of each layer at the cfg's input size.
        output_index: the layer whose output `forward` returns (the last
            layer that is not a [cost], as in the engine).
        weights_version: (major, minor, revision) of the .weights header,
            kept for writing the file back; (0, 2, 0) for a new model.
        seen: images seen in training (from the .weights header).

    `forward(x)` returns what the engine's `predict` returns: the output
    layer's activations, (B, C, H, W); for a network with several [yolo]
    layers, a list of every [yolo] layer's output instead.  Region and yolo
    outputs are the activations darknet leaves (see `Region`, `Yolo`).
    `forward(x, decode=True)` returns decoded boxes (see `decode`).

    The model is in training mode after construction, as every nn.Module:
    call `.eval()` for inference (batch norm with the rolling statistics,
    no dropout, centre crops).
    """

    def __init__(self, cfg: CfgLike, *, width: int = 0, height: int = 0) -> None:
        super().__init__()
        self.cfg = _read_cfg(cfg)
        net = self.cfg.net
        sections = self.cfg.layers
        for section in sections:  # name the first unsupported layer before anything else fails
            if section.name in UNSUPPORTED:
                raise UnsupportedError(
                    f"{section.where()}: [{section.name}]: unsupported layer (darknet's "
                    f"{UNSUPPORTED[section.name]} is not implemented by pydarknet)")
        _require(net, "time_steps", 1, "recurrent networks are not implemented")
        self.width = width or net.get_int("width", 0)
        self.height = height or net.get_int("height", 0)
        self.channels = net.get_int("channels", 0)
        if self.width < 1 or self.height < 1 or self.channels < 1:
            raise CfgError(f"{net.where()}: [{net.name}] needs positive width=, height= and "
                           "channels=")
        if not sections:
            raise CfgError(f"{net.where()}: the network has no layers after [{net.name}]")
        self.weights_version: tuple[int, int, int] = (0, 2, 0)
        self.seen = 0
        self.layers = nn.ModuleList()
        self.shapes: list[LayerShape] = []
        self.types: list[str] = []
        self.section_options: list[dict[str, int]] = []  # dontload/dontloadscales/dontsave
        shape = (self.channels, self.height, self.width)
        for index, section in enumerate(sections):
            module, out_shape, kind = self._build(index, section, shape)
            if out_shape[0] * out_shape[1] * out_shape[2] <= 0:
                raise CfgError(f"{section.where()}: [{section.name}] produces an empty output "
                               f"({out_shape[2]}x{out_shape[1]}x{out_shape[0]})")
            self.layers.append(module)
            self.types.append(kind)
            self.shapes.append(LayerShape(index, kind, section, shape, out_shape))
            shape = out_shape
        self.output_index = len(self.layers) - 1
        while self.output_index > 0 and self.types[self.output_index] == "cost":
            self.output_index -= 1
        for index, kind in enumerate(self.types[: self.output_index]):
            if kind == "cost":
                section = self.shapes[index].section
                raise UnsupportedError(f"{section.where()}: [cost] followed by other layers: "
                                       "only trailing [cost] layers are supported (the engine "
                                       "gives the next layer no activations from it)")
        self.yolo_indexes = [i for i, k in enumerate(self.types) if k == "yolo"]
        self.detection_indexes = [i for i, k in enumerate(self.types) if k in ("region", "yolo")]
        needed: set[int] = set()
        for module in self.layers:
            if isinstance(module, Route):
                needed.update(module.sources)
            elif isinstance(module, Shortcut):
                needed.add(module.source)
        self._keep = needed | set(self.detection_indexes) | {self.output_index}

    # ---- building -----------------------------------------------------------------------

    def _build(self, index: int, s: CfgSection, shape: tuple[int, int, int]
               ) -> tuple[nn.Module, tuple[int, int, int], str]:
        kind = LAYER_TYPES.get(s.name)
        if kind is None:
            if s.name in ("net", "network"):
                raise CfgError(f"{s.where()}: a second [{s.name}] section (layer {index})")
            raise CfgError(f"{s.where()}: [{s.name}]: unknown section (expected a darknet layer: "
                           "convolutional, maxpool, avgpool, route, reorg, shortcut, upsample, "
                           "region, yolo, softmax, connected, dropout, cost, crop)")
        _require(s, "numload", 0, "numload is not implemented")
        self.section_options.append({k: s.get_int(k, 0)
                                     for k in ("dontload", "dontloadscales", "dontsave")})
        c, h, w = shape
        builder = getattr(self, f"_build_{kind}")
        module, out = builder(index, s, c, h, w)
        return module, out, kind

    def _build_convolutional(self, index: int, s: CfgSection, c: int, h: int, w: int) -> Built:
        filters = s.get_int("filters", 1)
        size = s.get_int("size", 1)
        stride = s.get_int("stride", 1)
        pad_flag = s.get_int("pad", 0)
        padding = s.get_int("padding", 0)
        groups = s.get_int("groups", 1)
        bn = bool(s.get_int("batch_normalize", 0))
        activation = _activation(s, "logistic")
        _require(s, "binary", 0, "XNOR/binary networks are not implemented")
        _require(s, "xnor", 0, "XNOR/binary networks are not implemented")
        flipped = bool(s.get_int("flipped", 0))
        if filters < 1 or size < 1 or stride < 1 or padding < 0:
            raise CfgError(f"{s.where()}: [{s.name}] filters={filters} size={size} "
                           f"stride={stride} padding={padding}: expected filters, size, "
                           "stride >= 1 and padding >= 0")
        if groups < 1 or c % groups or filters % groups:
            raise CfgError(f"{s.where()}: [{s.name}] groups={groups} must divide both the input "
                           f"channels ({c}) and filters ({filters})")
        if pad_flag:
            padding = size // 2  # darknet: pad=1 means size/2 and overrides padding=
        out_h = c_div(h + 2 * padding - size, stride) + 1
        out_w = c_div(w + 2 * padding - size, stride) + 1
        if out_h < 1 or out_w < 1:
            raise CfgError(f"{s.where()}: [{s.name}] a {size}x{size} kernel with stride {stride} "
                           f"and padding {padding} does not fit a {w}x{h} input")
        module = Convolutional(c, filters, size, stride, padding, groups, bn, activation, flipped)
        return module, (filters, out_h, out_w)

    def _build_connected(self, index: int, s: CfgSection, c: int, h: int, w: int) -> Built:
        outputs = s.get_int("output", 1)
        bn = bool(s.get_int("batch_normalize", 0))
        activation = _activation(s, "logistic")
        if outputs < 1:
            raise CfgError(f"{s.where()}: [{s.name}] output={outputs}, expected >= 1")
        return Connected(c * h * w, outputs, bn, activation), (outputs, 1, 1)

    def _build_maxpool(self, index: int, s: CfgSection, c: int, h: int, w: int) -> Built:
        stride = s.get_int("stride", 1)
        size = s.get_int("size", stride)
        padding = s.get_int("padding", size - 1)
        if stride < 1 or size < 1 or padding < 0:
            raise CfgError(f"{s.where()}: [{s.name}] size={size} stride={stride} "
                           f"padding={padding}: expected size, stride >= 1, padding >= 0")
        module = MaxPool(size, stride, padding)
        out_h, out_w = module.out_size(h), module.out_size(w)
        if out_h < 1 or out_w < 1:
            raise CfgError(f"{s.where()}: [{s.name}] a {size}x{size} window does not fit a "
                           f"{w}x{h} input")
        return module, (c, out_h, out_w)

    def _build_avgpool(self, index: int, s: CfgSection, c: int, h: int, w: int) -> Built:
        return AvgPool(), (c, 1, 1)

    def _build_route(self, index: int, s: CfgSection, c: int, h: int, w: int) -> Built:
        values = s.get_list("layers", [], item=int)
        if not values:
            raise CfgError(f"{s.where()}: [{s.name}] needs layers= (one or more layer indexes)")
        sources = [_layer_index(s, "layers", v, index) for v in values]
        first = self.shapes[sources[0]].output_shape
        channels = 0
        for i in sources:
            oc, oh, ow = self.shapes[i].output_shape
            if (oh, ow) != first[1:]:
                raise CfgError(f"{s.where()}: [{s.name}] layers {sources[0]} ({first[2]}x"
                               f"{first[1]}x{first[0]}) and {i} ({ow}x{oh}x{oc}) differ in width "
                               "or height and cannot be concatenated")
            channels += oc
        return Route(sources), (channels, first[1], first[2])

    def _build_reorg(self, index: int, s: CfgSection, c: int, h: int, w: int) -> Built:
        stride = s.get_int("stride", 1)
        reverse = bool(s.get_int("reverse", 0))
        _require(s, "flatten", 0, "reorg flatten is not implemented")
        _require(s, "extra", 0, "reorg extra is not implemented")
        if stride < 1:
            raise CfgError(f"{s.where()}: [{s.name}] stride={stride}, expected >= 1")
        if c % (stride * stride) or (not reverse and (w % stride or h % stride)):
            raise CfgError(f"{s.where()}: [{s.name}] stride {stride} does not divide the input "
                           f"{w}x{h}x{c}")
        if reverse:
            return Reorg(stride, True), (c // (stride * stride), h * stride, w * stride)
        return Reorg(stride, False), (c * stride * stride, h // stride, w // stride)

    def _build_shortcut(self, index: int, s: CfgSection, c: int, h: int, w: int) -> Built:
        source = _layer_index(s, "from", s.get_int("from", 0), index)
        activation = _activation(s, "linear")
        alpha = s.get_float("alpha", 1.0)
        beta = s.get_float("beta", 1.0)
        _, h1, w1 = self.shapes[source].output_shape
        stride, sample = w1 // w, w // w1
        ok = stride == h1 // h and sample == h // h1
        if ok and stride > 1:
            ok = w1 % w == 0 and h1 % h == 0
        if ok and sample > 1:
            ok = w % w1 == 0 and h % h1 == 0
        if not ok:
            raise CfgError(f"{s.where()}: [{s.name}] from={s.get('from')} (layer {source}, "
                           f"{w1}x{h1}) cannot be added to the {w}x{h} input: sizes must be equal "
                           "or integer multiples in both directions")
        return Shortcut(source, alpha, beta, activation), (c, h, w)

    def _build_upsample(self, index: int, s: CfgSection, c: int, h: int, w: int) -> Built:
        stride = s.get_int("stride", 2)
        scale = s.get_float("scale", 1.0)
        if stride == 0:
            raise CfgError(f"{s.where()}: [{s.name}] stride=0, expected a non-zero integer")
        module = Upsample(stride, scale)
        k = abs(stride)
        out = (c, h // k, w // k) if stride < 0 else (c, h * k, w * k)
        if out[1] < 1 or out[2] < 1:
            raise CfgError(f"{s.where()}: [{s.name}] stride {stride} does not fit a {w}x{h} input")
        return module, out

    def _build_region(self, index: int, s: CfgSection, c: int, h: int, w: int) -> Built:
        p = RegionParams.from_section(s)
        if p.coords != 4:
            raise UnsupportedError(f"{s.where('coords')}: [region] coords={p.coords}: only "
                                   "coords=4 is implemented")
        if p.classes < 1 or p.num < 1:
            raise CfgError(f"{s.where()}: [region] classes={p.classes} num={p.num}, expected "
                           "both >= 1")
        _refuse_text(s, "tree", "hierarchical softmax (YOLO9000) is not implemented")
        _refuse_text(s, "map", "class maps are not implemented")
        if len(p.anchors) != 2 * p.num:
            raise CfgError(f"{s.where('anchors')}: [region] anchors= has {len(p.anchors)} values, "
                           f"expected 2 * num = {2 * p.num} (width,height pairs in grid cells)")
        if c != p.num * p.entries:
            raise CfgError(f"{s.where()}: [region] expects the layer before it to output "
                           f"{p.num * p.entries} channels ((classes {p.classes} + coords 4 + 1) "
                           f"* num {p.num}), but layer {index - 1} outputs {w}x{h}x{c}")
        return Region(p), (c, h, w)

    def _build_yolo(self, index: int, s: CfgSection, c: int, h: int, w: int) -> Built:
        p = YoloParams.from_section(s)
        if p.classes < 1 or p.num < 1:
            raise CfgError(f"{s.where()}: [yolo] classes={p.classes} num={p.num}, expected both "
                           ">= 1")
        for m in p.mask:
            if m < 0 or m >= p.num:
                raise CfgError(f"{s.where('mask')}: [yolo] mask value {m} is outside the "
                               f"{p.num} anchors (num={p.num})")
        _refuse_text(s, "map", "class maps are not implemented")
        if p.max_boxes < 1:
            raise CfgError(f"{s.where('max')}: [yolo] max={p.max_boxes}, expected >= 1")
        if len(p.anchors) != 2 * p.num:
            raise CfgError(f"{s.where('anchors')}: [yolo] anchors= has {len(p.anchors)} values, "
                           f"expected 2 * num = {2 * p.num} (width,height pairs in pixels)")
        if c != len(p.mask) * p.entries:
            raise CfgError(f"{s.where()}: [yolo] expects the layer before it to output "
                           f"{len(p.mask) * p.entries} channels ((classes {p.classes} + 5) * "
                           f"{len(p.mask)} masked anchors), but layer {index - 1} outputs "
                           f"{w}x{h}x{c}")
        return Yolo(p), (c, h, w)

    def _build_softmax(self, index: int, s: CfgSection, c: int, h: int, w: int) -> Built:
        groups = s.get_int("groups", 1)
        temperature = s.get_float("temperature", 1.0)
        _refuse_text(s, "tree", "hierarchical softmax is not implemented")
        _require(s, "spatial", 0, "spatial softmax is not implemented")
        if groups < 1 or (c * h * w) % groups:
            raise CfgError(f"{s.where()}: [{s.name}] groups={groups} must divide the "
                           f"{c * h * w} inputs")
        if temperature == 0:
            raise CfgError(f"{s.where('temperature')}: [{s.name}] temperature=0, expected "
                           "non-zero")
        return Softmax(groups, temperature), (c, h, w)

    def _build_dropout(self, index: int, s: CfgSection, c: int, h: int, w: int) -> Built:
        p = s.get_float("probability", 0.5)
        if p < 0 or p >= 1:
            raise CfgError(f"{s.where()}: [dropout] probability={p:g}, expected 0 <= p < 1")
        return Dropout(p), (c, h, w)

    def _build_cost(self, index: int, s: CfgSection, c: int, h: int, w: int) -> Built:
        kind = s.get_str("type", "sse")
        if kind != "sse":
            raise UnsupportedError(f"{s.where('type')}: [cost] type={kind}: only the sse cost is "
                                   "implemented")
        if s.get_float("ratio", 0.0) != 0:
            raise UnsupportedError(f"{s.where('ratio')}: [cost] ratio={s.get('ratio')}: "
                                   "hard-example ratios are not implemented")
        return Cost(), (c, h, w)

    def _build_crop(self, index: int, s: CfgSection, c: int, h: int, w: int) -> Built:
        crop_h = s.get_int("crop_height", 1)
        crop_w = s.get_int("crop_width", 1)
        if crop_w < 1 or crop_h < 1 or crop_w > w or crop_h > h:
            raise CfgError(f"{s.where()}: [crop] crop {crop_w}x{crop_h} does not fit in the "
                           f"{w}x{h} input")
        module = Crop(crop_h, crop_w, bool(s.get_int("noadjust", 0)), bool(s.get_int("flip", 0)))
        return module, (c, crop_h, crop_w)

    # ---- forward ------------------------------------------------------------------------

    def _run(self, x: Tensor, stop: int | None = None, keep_all: bool = False
             ) -> tuple[Tensor, list[Tensor | None]]:
        """Run layers [0, stop) (all by default); returns the last output
        and the cache of the outputs later layers or the caller need."""
        cache: list[Tensor | None] = []
        end = len(self.layers) if stop is None else stop
        for i in range(end):
            x = self.layers[i](x, cache)
            cache.append(x if keep_all or i in self._keep else None)
        return x, cache

    def layer_outputs(self, x: Tensor) -> list[Tensor]:
        """Every layer's output (as the engine's `layer_output(i)`), for
        comparing layer by layer.  Trailing [cost] layers pass their input
        through."""
        _, cache = self._run(x, keep_all=True)
        return cache  # type: ignore[return-value]

    def forward(self, x: Tensor, decode: bool = False) -> Tensor | list[Tensor]:
        """The engine's `predict` on NCHW float input (see the class doc), or
        with decode=True the boxes of every region/yolo layer (`decode`)."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected input of shape (batch, {self.channels}, height, width), "
                             f"got {tuple(x.shape)}")
        _, cache = self._run(x, self.output_index + 1)
        if decode:
            return self.decode(cache, x.shape[3], x.shape[2])
        if len(self.yolo_indexes) > 1:
            return [cache[i] for i in self.yolo_indexes]  # type: ignore[misc]
        return cache[self.output_index]  # type: ignore[return-value]

    def decode(self, cache: list[Tensor | None], net_w: int, net_h: int) -> Tensor:
        """Decoded boxes of every [region]/[yolo] layer, concatenated in layer
        order: (B, N, 5 + classes), one row per anchor and cell (anchor,
        row, column: darknet's candidate order), with

          x, y   box centre relative to the network input (0..1),
          w, h   box size relative to the network input,
          obj    objectness (1 for a [region] with background=1, as darknet),
          classes  class probabilities given an object (softmax or
                 logistic outputs); darknet's detection score for class k is
                 obj * classes[k].

        No threshold, NMS or letterbox correction is applied."""
        if not self.detection_indexes:
            raise ValueError("decode=True needs a [region] or [yolo] layer; this network has none")
        classes = {self.layers[i].params.classes for i in self.detection_indexes}
        if len(classes) > 1:
            raise ValueError(f"decode=True: the detection layers have different class counts "
                             f"({sorted(classes)}): one box tensor cannot hold them; decode "
                             "each layer's output with its module's decode()")
        parts = []
        for i in self.detection_indexes:
            layer = self.layers[i]
            parts.append(layer.decode(cache[i], net_w, net_h))  # type: ignore[operator]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    # ---- loss ---------------------------------------------------------------------------

    @property
    def region_index(self) -> int:
        """Index of the (last) [region] layer; ValueError if there is none."""
        for i in reversed(range(len(self.types))):
            if self.types[i] == "region":
                return i
        raise ValueError("this network has no [region] layer")

    def region_loss(self, x: Tensor, truth: Tensor, seen: int | None = None) -> "RegionLoss":
        """The engine's training loss of the [region] layer on images `x`
        and darknet truth rows (see `pydarknet.torch.region_loss`).
        `seen`: images seen counting this batch (darknet adds the batch
        before the forward); default self.seen + batch."""
        from .loss import region_loss

        index = self.region_index
        raw, _ = self._run(x, index)
        if seen is None:
            seen = self.seen + x.shape[0]
        return region_loss(raw, truth, self.layers[index].params, seen)

    # ---- files --------------------------------------------------------------------------

    def load_darknet_weights(self, path: str | os.PathLike[str], *, partial: bool = False,
                             cutoff: int = 0) -> int:
        """Load a darknet .weights file (see pydarknet.torch.weights)."""
        from .weights import load_darknet_weights

        return load_darknet_weights(self, path, partial=partial, cutoff=cutoff)

    def save_darknet_weights(self, path: str | os.PathLike[str]) -> Path:
        """Write darknet .weights with this model's header version and seen."""
        from .weights import save_darknet_weights

        return save_darknet_weights(self, path)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a .pt file: state dict, cfg text, header version and seen."""
        from .weights import save_pt

        return save_pt(self, path)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
                  ) -> "DarknetModel":
        """A model from a .pt file written by `save` or `pydarknet convert`."""
        from .weights import load_pt

        return load_pt(path, map_location=map_location)

    @classmethod
    def from_darknet(cls, cfg: CfgLike, weights: str | os.PathLike[str] | None = None
                     ) -> "DarknetModel":
        """A model from a cfg and (optionally) its .weights, in eval mode."""
        model = cls(cfg)
        if weights is not None:
            model.load_darknet_weights(weights)
        return model.eval()

    def extra_repr(self) -> str:
        return (f"input={self.channels}x{self.height}x{self.width}, "
                f"weights_version={self.weights_version}, seen={self.seen}")
