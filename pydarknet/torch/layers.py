"""darknet's layers as PyTorch modules, with the engine's semantics.

Every module takes `(x, cache)`: `x` is the previous layer's output, `cache`
the list of earlier layers' outputs (route and shortcut read it; entries no
later layer needs are None).  Shapes are NCHW; B = batch, A = anchors,
E = entries per anchor (4 box + 1 objectness + C classes).

The quirks reproduced on purpose are named where they happen; each is
checked against the engine (darknet_src/src/layers/*.c) in
tests/test_torch_model.py.  Everything here is plain tensor arithmetic
(reshape, permute, pad, slice, cat), so it exports to ONNX unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS", "AvgPool", "Convolutional", "Connected", "Cost", "Crop", "DarknetBatchNorm",
    "Dropout", "MaxPool", "Region", "RegionParams", "Reorg", "Route", "Shortcut", "Softmax",
    "Upsample", "Yolo", "YoloParams", "activate",
]

FLT_MAX = 3.4028234663852886e38  # C's FLT_MAX: darknet's "no value yet" in max pooling

ACTIVATIONS = ("logistic", "relu", "relie", "linear", "ramp", "tanh", "plse", "leaky", "elu",
               "loggy", "stair", "hardtan", "lhtan", "selu")


# ---- activations (darknet_src/src/activations.c) ----------------------------------


def _exp_minus_one(x: Tensor) -> Tensor:
    """exp(x) - 1 on the negative side only: torch.where evaluates both
    branches, and exp of a large positive x would give inf * 0 = NaN
    gradients in the branch that is not taken."""
    return torch.expm1(torch.clamp(x, max=0.0))


def activate(x: Tensor, name: str) -> Tensor:
    """darknet's activation `name` applied to x (same constants, float32)."""
    if name == "linear":
        return x
    if name == "leaky":
        return F.leaky_relu(x, 0.1)
    if name == "logistic":
        return torch.sigmoid(x)
    if name == "relu":
        return F.relu(x)
    if name == "relie":
        return torch.where(x > 0, x, 0.01 * x)
    if name == "ramp":
        return torch.where(x > 0, x, torch.zeros_like(x)) + 0.1 * x
    if name == "tanh":
        return torch.tanh(x)
    if name == "plse":
        return torch.where(x < -4, 0.01 * (x + 4),
                           torch.where(x > 4, 0.01 * (x - 4) + 1, 0.125 * x + 0.5))
    if name == "elu":
        return torch.where(x >= 0, x, _exp_minus_one(x))
    if name == "loggy":
        return 2 * torch.sigmoid(x) - 1
    if name == "stair":
        # darknet: n = floor(x); even n -> floor(x/2); odd -> (x - n) + floor(x/2)
        n = torch.floor(x)
        half = torch.floor(x / 2)
        return torch.where(torch.remainder(n, 2) == 0, half, (x - n) + half)
    if name == "hardtan":
        return torch.clamp(x, -1.0, 1.0)
    if name == "lhtan":
        return torch.where(x < 0, 0.001 * x, torch.where(x > 1, 0.001 * (x - 1) + 1, x))
    if name == "selu":
        return torch.where(x >= 0, 1.0507 * x, (1.0507 * 1.6732) * _exp_minus_one(x))
    raise ValueError(f"unknown activation {name!r}")


# ---- batch norm ------------------------------------------------------------------------


class DarknetBatchNorm(nn.Module):
    """darknet's batch normalisation over dimension 1 (conv and connected).

    Inference (eval mode) uses darknet's CPU formula

        (x - rolling_mean) / (sqrt(rolling_variance) + 1e-6) * scale + bias

    with the epsilon OUTSIDE the square root.  `nn.BatchNorm2d` computes
    (x - mean) / sqrt(var + eps): no single eps makes the two agree (it
    would have to be 2e-6*sqrt(var) + 1e-12, a different value per
    channel), and for channels with a tiny variance the difference is
    large, so the formula is written out here instead of reusing
    BatchNorm2d.

    Training mode is darknet's training pass: the forward normalises with
    the batch mean and the unbiased (1/(N-1)) batch variance over (batch,
    H, W), with the same sqrt(var) + 1e-6 denominator, and updates the
    rolling statistics as .99 * old + .01 * new; the backward is darknet's
    hand-written one (batchnorm.c), which is not the exact derivative of
    that forward: it uses 1/sqrt(var + 1e-5) and 1/N where the forward used
    sqrt(var) + 1e-6 and 1/(N-1) (a relative difference of order 1/N +
    1e-5/var).  So gradients through a network in training mode are the
    engine's.

    Parameters and buffers keep PyTorch's names: weight (darknet's scales),
    bias (darknet's biases: BN's beta), running_mean, running_var.
    """

    EPSILON = 1e-6

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        # darknet's initial values: scales 1, biases and rolling stats 0
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.zeros(channels))

    def _view(self, t: Tensor, x: Tensor) -> Tensor:
        return t.reshape((1, -1) + (1,) * (x.dim() - 2))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            dims = [0] + list(range(2, x.dim()))
            with torch.no_grad():
                mean = x.mean(dim=dims)
                var = x.var(dim=dims, unbiased=True)
                self.running_mean.mul_(0.99).add_(0.01 * mean)
                self.running_var.mul_(0.99).add_(0.01 * var)
            return _DarknetBatchNormTraining.apply(x, self.weight, self.bias, mean, var)
        mean, var = self.running_mean, self.running_var
        denom = torch.sqrt(var) + self.EPSILON
        x = (x - self._view(mean, x)) / self._view(denom, x)
        return x * self._view(self.weight, x) + self._view(self.bias, x)

    def extra_repr(self) -> str:
        return f"{self.channels}, darknet formula (sqrt(var) + 1e-6)"


class _DarknetBatchNormTraining(torch.autograd.Function):
    """darknet's training batch norm: forward with the batch statistics,
    backward as darknet's backward_batchnorm_layer (see DarknetBatchNorm)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, bias: Tensor, mean: Tensor,  # noqa: ANN001
                var: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        centred = x - mean.reshape(shape)
        x_norm = centred / (torch.sqrt(var) + DarknetBatchNorm.EPSILON).reshape(shape)
        ctx.save_for_backward(centred, x_norm, scale, var)
        return x_norm * scale.reshape(shape) + bias.reshape(shape)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: ANN001, ANN205
        centred, x_norm, scale, var = ctx.saved_tensors
        shape = (1, -1) + (1,) * (grad.dim() - 2)
        dims = [0] + list(range(2, grad.dim()))
        count = grad.numel() // grad.shape[1]
        grad_bias = grad.sum(dim=dims)
        grad_scale = (grad * x_norm).sum(dim=dims)
        g = grad * scale.reshape(shape)
        inv_std = 1.0 / torch.sqrt(var + 0.00001)
        mean_grad = -g.sum(dim=dims) * inv_std
        var_grad = (g * centred).sum(dim=dims) * (-0.5) * torch.pow(var + 0.00001, -1.5)
        grad_x = (g * inv_std.reshape(shape) + var_grad.reshape(shape) * 2 * centred / count
                  + mean_grad.reshape(shape) / count)
        return grad_x, grad_scale, grad_bias, None, None


# ---- layers with parameters ------------------------------------------------------------


class Convolutional(nn.Module):
    """[convolutional]: act(BN(conv(x))) or act(conv(x) + bias); groups."""

    def __init__(self, in_channels: int, filters: int, size: int, stride: int, padding: int,
                 groups: int, batch_normalize: bool, activation: str, flipped: bool = False
                 ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, filters, size, stride, padding, groups=groups,
                              bias=not batch_normalize)
        self.bn = DarknetBatchNorm(filters) if batch_normalize else None
        self.activation = activation
        self.flipped = flipped  # weights stored transposed in .weights (darknet's flipped=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """darknet's initial values: weights ~ N(0, 2/fan_in), biases 0."""
        fan_in = self.conv.weight[0].numel()
        with torch.no_grad():
            self.conv.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
            if self.conv.bias is not None:
                self.conv.bias.zero_()

    def forward(self, x: Tensor, cache: list[Tensor | None]) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return activate(x, self.activation)

    def extra_repr(self) -> str:
        return f"activation={self.activation}"


class Connected(nn.Module):
    """[connected]: act(BN(W x) or W x + b) on the flattened input; output
    shaped (B, outputs, 1, 1) as in the engine."""

    def __init__(self, inputs: int, outputs: int, batch_normalize: bool, activation: str) -> None:
        super().__init__()
        self.linear = nn.Linear(inputs, outputs, bias=not batch_normalize)
        self.bn = DarknetBatchNorm(outputs) if batch_normalize else None
        self.activation = activation
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """darknet's initial values: weights ~ U(-1, 1) * sqrt(2/inputs), biases 0."""
        scale = (2.0 / self.linear.in_features) ** 0.5
        with torch.no_grad():
            self.linear.weight.uniform_(-1.0, 1.0).mul_(scale)
            if self.linear.bias is not None:
                self.linear.bias.zero_()

    def forward(self, x: Tensor, cache: list[Tensor | None]) -> Tensor:
        x = self.linear(x.reshape(x.shape[0], -1))
        if self.bn is not None:
            x = self.bn(x)
        x = activate(x, self.activation)
        return x.reshape(x.shape[0], -1, 1, 1)

    def extra_repr(self) -> str:
        return f"activation={self.activation}"


# ---- pooling and rearranging -----------------------------------------------------------------


def c_div(a: int, b: int) -> int:
    """C's integer division (truncates towards zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


class MaxPool(nn.Module):
    """[maxpool] with darknet's window: `padding` (default size - 1) cells in
    all, the window of output o starting at -padding/2 + o*stride, cells
    outside the input ignored (padded with -FLT_MAX, darknet's starting
    value, not 0), out = (in + padding - size)/stride + 1.  yolov3-tiny's
    size=2 stride=1 keeps 13x13 with the window [i, i+1]."""

    def __init__(self, size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.size, self.stride, self.padding = size, stride, padding

    def out_size(self, n: int) -> int:
        return c_div(n + self.padding - self.size, self.stride) + 1

    def forward(self, x: Tensor, cache: list[Tensor | None]) -> Tensor:
        h, w = x.shape[2], x.shape[3]
        out_h, out_w = self.out_size(h), self.out_size(w)
        before = self.padding // 2  # C: -padding/2 truncates towards zero
        after_h = max(0, (out_h - 1) * self.stride + self.size - before - h)
        after_w = max(0, (out_w - 1) * self.stride + self.size - before - w)
        if before or after_h or after_w:
            x = F.pad(x, (before, after_w, before, after_h), value=-FLT_MAX)
        y = F.max_pool2d(x, self.size, self.stride)
        if y.shape[2] != out_h or y.shape[3] != out_w:
            y = y[:, :, :out_h, :out_w]
        return y

    def extra_repr(self) -> str:
        return f"size={self.size}, stride={self.stride}, padding={self.padding}"


class AvgPool(nn.Module):
    """[avgpool]: global average of each channel -> (B, C, 1, 1)."""

    def forward(self, x: Tensor, cache: list[Tensor | None]) -> Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class Route(nn.Module):
    """[route]: the outputs of earlier layers concatenated along channels."""

    def __init__(self, sources: list[int]) -> None:
        super().__init__()
        self.sources = sources

    def forward(self, x: Tensor, cache: list[Tensor | None]) -> Tensor:
        parts = [cache[i] for i in self.sources]
        if len(parts) == 1:
            return parts[0]  # type: ignore[return-value]
        return torch.cat(parts, dim=1)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return f"layers={self.sources}"


class Reorg(nn.Module):
    """[reorg]: darknet's passthrough rearrangement, NOT a space-to-depth.

    darknet calls its reorg routine in the backward direction with the
    INPUT's dimensions (C, H, W), stride s: the output memory, read as a
    (C, H, W) tensor Y, holds

        Y[k, j, i] = X[k % (C/s^2), j*s + (k / (C/s^2)) / s, i*s + (k / (C/s^2)) % s]

    where X is the input memory read as a (C/s^2, H*s, W*s) tensor.  The next
    layer then reads that memory as (C*s^2, H/s, W/s).  Written below with
    reshape and permute only.  reverse=1 runs the routine the other way."""

    def __init__(self, stride: int, reverse: bool) -> None:
        super().__init__()
        self.stride, self.reverse = stride, reverse

    def forward(self, x: Tensor, cache: list[Tensor | None]) -> Tensor:
        s = self.stride
        b, c, h, w = x.shape
        part = c // (s * s)
        if not self.reverse:
            # X[b, c2, j, dy, i, dx] -> Y[b, (dy*s + dx)*part + c2, j, i]
            y = x.reshape(b, part, h, s, w, s).permute(0, 3, 5, 1, 2, 4)
            return y.reshape(b, c * s * s, h // s, w // s)
        # reverse: output[b, c2, j*s + dy, i*s + dx] = x[b, (dy*s + dx)*part + c2, j, i]
        y = x.reshape(b, s, s, part, h, w).permute(0, 3, 4, 1, 5, 2)
        return y.reshape(b, part, h * s, w * s)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, reverse={int(self.reverse)}"


class Shortcut(nn.Module):
    """[shortcut]: act(alpha * x + beta * from) where the shapes agree;
    otherwise darknet's shortcut_cpu: over min(C), min(H), min(W), the
    output cell (j*sample, i*sample) becomes alpha*x + beta*from[j*stride,
    i*stride] (stride = W_from/W, sample = W/W_from, at least 1) and every
    other cell keeps x unscaled.  The output has the shape of x."""

    def __init__(self, source: int, alpha: float, beta: float, activation: str) -> None:
        super().__init__()
        self.source, self.alpha, self.beta, self.activation = source, alpha, beta, activation

    def forward(self, x: Tensor, cache: list[Tensor | None]) -> Tensor:
        add = cache[self.source]
        assert add is not None
        _, c2, h2, w2 = x.shape
        _, c1, h1, w1 = add.shape
        if (c1, h1, w1) == (c2, h2, w2):
            if self.alpha == 1 and self.beta == 1:
                y = x + add
            else:
                y = self.alpha * x + self.beta * add
            return activate(y, self.activation)
        stride, sample = max(w1 // w2, 1), max(w2 // w1, 1)
        minc, minh, minw = min(c1, c2), min(h1, h2), min(w1, w2)
        a = add[:, :minc, ::stride, ::stride][:, :, :minh, :minw]
        mask = torch.ones((1, minc, minh, minw), dtype=torch.bool, device=x.device)
        a, mask = self._spread(a, sample), self._spread(mask, sample)
        pad = (0, w2 - minw * sample, 0, h2 - minh * sample, 0, c2 - minc)
        a, mask = F.pad(a, pad), F.pad(mask, pad)
        y = torch.where(mask, self.alpha * x + self.beta * a, x)
        return activate(y, self.activation)

    @staticmethod
    def _spread(t: Tensor, sample: int) -> Tensor:
        """Put each value at (j*sample, i*sample) of a grid `sample` times larger."""
        if sample == 1:
            return t
        b, c, h, w = t.shape
        t = F.pad(t.reshape(b, c, h, 1, w, 1), (0, sample - 1, 0, 0, 0, sample - 1))
        return t.reshape(b, c, h * sample, w * sample)

    def extra_repr(self) -> str:
        return (f"from={self.source}, alpha={self.alpha}, beta={self.beta}, "
                f"activation={self.activation}")


class Upsample(nn.Module):
    """[upsample]: nearest-neighbour by `stride`, times `scale`.  A negative
    stride (reverse) sums stride x stride blocks instead, reading the input
    memory with the OUTPUT's dimensions as darknet does (the same as a block
    sum when the stride divides the input)."""

    def __init__(self, stride: int, scale: float) -> None:
        super().__init__()
        self.reverse = stride < 0
        self.stride = abs(stride)
        self.scale = scale

    def forward(self, x: Tensor, cache: list[Tensor | None]) -> Tensor:
        s = self.stride
        b, c, h, w = x.shape
        if not self.reverse:
            y = x.reshape(b, c, h, 1, w, 1).expand(b, c, h, s, w, s).reshape(b, c, h * s, w * s)
            return y * self.scale if self.scale != 1 else y
        oh, ow = h // s, w // s
        if oh * s != h or ow * s != w:
            x = x.reshape(-1)[: b * c * oh * s * ow * s]
        blocks = x.reshape(b, c, oh, s, ow, s)
        if self.scale != 1:
            blocks = blocks * self.scale
        return blocks.sum(dim=(3, 5))

    def extra_repr(self) -> str:
        return f"stride={-self.stride if self.reverse else self.stride}, scale={self.scale}"


# ---- detection and output layers ---------------------------------------------------------------


@dataclass
class RegionParams:
    """The options of a [region] layer (darknet's defaults).  Anchors are
    (w, h) pairs in grid cells."""

    classes: int = 20
    num: int = 1
    coords: int = 4
    anchors: list[float] = field(default_factory=list)
    softmax: bool = False
    background: bool = False
    thresh: float = 0.5
    rescore: bool = False
    bias_match: bool = False
    coord_scale: float = 1.0
    object_scale: float = 1.0
    noobject_scale: float = 1.0
    class_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.anchors:
            self.anchors = [0.5] * (2 * self.num)  # darknet's default

    @property
    def entries(self) -> int:
        return self.coords + 1 + self.classes

    @classmethod
    def from_section(cls, section) -> "RegionParams":  # noqa: ANN001 (a CfgSection)
        num = section.get_int("num", 1)
        return cls(
            classes=section.get_int("classes", 20), num=num, coords=section.get_int("coords", 4),
            anchors=section.get_list("anchors", [0.5] * (2 * num)),
            softmax=bool(section.get_int("softmax", 0)),
            background=bool(section.get_int("background", 0)),
            thresh=section.get_float("thresh", 0.5), rescore=bool(section.get_int("rescore", 0)),
            bias_match=bool(section.get_int("bias_match", 0)),
            coord_scale=section.get_float("coord_scale", 1.0),
            object_scale=section.get_float("object_scale", 1.0),
            noobject_scale=section.get_float("noobject_scale", 1.0),
            class_scale=section.get_float("class_scale", 1.0))


@dataclass
class YoloParams:
    """The options of a [yolo] layer.  Anchors are (w, h) pairs in pixels of
    the network input; `mask` selects this layer's."""

    classes: int = 20
    num: int = 1
    mask: list[int] = field(default_factory=list)
    anchors: list[float] = field(default_factory=list)
    ignore_thresh: float = 0.5
    truth_thresh: float = 1.0
    max_boxes: int = 90

    def __post_init__(self) -> None:
        if not self.mask:
            self.mask = list(range(self.num))
        if not self.anchors:
            self.anchors = [0.5] * (2 * self.num)

    @property
    def entries(self) -> int:
        return 5 + self.classes

    @classmethod
    def from_section(cls, section) -> "YoloParams":  # noqa: ANN001 (a CfgSection)
        num = section.get_int("num", 1)
        return cls(classes=section.get_int("classes", 20), num=num,
                   mask=section.get_list("mask", list(range(num)), item=int),
                   anchors=section.get_list("anchors", [0.5] * (2 * num)),
                   ignore_thresh=section.get_float("ignore_thresh", 0.5),
                   truth_thresh=section.get_float("truth_thresh", 1.0),
                   max_boxes=section.get_int("max", 90))


def _grid(h: int, w: int, like: Tensor) -> tuple[Tensor, Tensor]:
    cols = torch.arange(w, dtype=like.dtype, device=like.device).reshape(1, 1, 1, w)
    rows = torch.arange(h, dtype=like.dtype, device=like.device).reshape(1, 1, h, 1)
    return cols, rows


class Region(nn.Module):
    """[region] (YOLOv2): logistic x, y and objectness, softmax over the
    classes (softmax=1; logistic otherwise), w and h raw, as the engine
    leaves its output.  Channel a*(5+C) + e holds entry e of anchor a."""

    def __init__(self, params: RegionParams) -> None:
        super().__init__()
        self.params = params
        self.register_buffer("anchors", torch.tensor(params.anchors, dtype=torch.float32)
                             .reshape(-1, 2), persistent=False)

    def forward(self, x: Tensor, cache: list[Tensor | None]) -> Tensor:
        p = self.params
        b, _, h, w = x.shape
        v = x.reshape(b, p.num, p.entries, h, w)
        parts = [torch.sigmoid(v[:, :, 0:2]), v[:, :, 2:4]]
        if p.background:
            # the background entry (in place of objectness) is raw, or part of the softmax
            if p.softmax:
                parts.append(torch.softmax(v[:, :, 4:], dim=2))
            else:
                parts += [v[:, :, 4:5], torch.sigmoid(v[:, :, 5:])]
        else:
            parts.append(torch.sigmoid(v[:, :, 4:5]))
            parts.append(torch.softmax(v[:, :, 5:], dim=2) if p.softmax
                         else torch.sigmoid(v[:, :, 5:]))
        return torch.cat(parts, dim=2).reshape(b, -1, h, w)

    def decode(self, out: Tensor, net_w: int, net_h: int) -> Tensor:
        """Boxes from this layer's output: (B, A*H*W, 5 + C), rows ordered
        anchor, row, column (darknet's index a*H*W + j*W + i)."""
        p = self.params
        b, _, h, w = out.shape
        v = out.reshape(b, p.num, p.entries, h, w)
        cols, rows = _grid(h, w, out)
        aw = self.anchors[:, 0].reshape(1, -1, 1, 1)
        ah = self.anchors[:, 1].reshape(1, -1, 1, 1)
        bx = (cols + v[:, :, 0]) / w
        by = (rows + v[:, :, 1]) / h
        bw = torch.exp(v[:, :, 2]) * aw / w
        bh = torch.exp(v[:, :, 3]) * ah / h
        obj = torch.ones_like(bx) if p.background else v[:, :, 4]
        rows_out = torch.cat([torch.stack([bx, by, bw, bh, obj], dim=2), v[:, :, 5:]], dim=2)
        return rows_out.permute(0, 1, 3, 4, 2).reshape(b, p.num * h * w, 5 + p.classes)

    def extra_repr(self) -> str:
        p = self.params
        return f"classes={p.classes}, num={p.num}, softmax={int(p.softmax)}"


class Yolo(nn.Module):
    """[yolo] (YOLOv3): logistic on everything but w and h."""

    def __init__(self, params: YoloParams) -> None:
        super().__init__()
        self.params = params
        all_anchors = torch.tensor(params.anchors, dtype=torch.float32).reshape(-1, 2)
        self.register_buffer("anchors", all_anchors[params.mask].clone(), persistent=False)

    def forward(self, x: Tensor, cache: list[Tensor | None]) -> Tensor:
        p = self.params
        b, _, h, w = x.shape
        v = x.reshape(b, len(p.mask), p.entries, h, w)
        out = torch.cat([torch.sigmoid(v[:, :, 0:2]), v[:, :, 2:4], torch.sigmoid(v[:, :, 4:])],
                        dim=2)
        return out.reshape(b, -1, h, w)

    def decode(self, out: Tensor, net_w: int, net_h: int) -> Tensor:
        """Boxes (B, n*H*W, 5 + C): anchors in network pixels (w = exp(tw) *
        anchor_w / net_w)."""
        p = self.params
        b, _, h, w = out.shape
        n = len(p.mask)
        v = out.reshape(b, n, p.entries, h, w)
        cols, rows = _grid(h, w, out)
        aw = self.anchors[:, 0].reshape(1, -1, 1, 1)
        ah = self.anchors[:, 1].reshape(1, -1, 1, 1)
        bx = (cols + v[:, :, 0]) / w
        by = (rows + v[:, :, 1]) / h
        bw = torch.exp(v[:, :, 2]) * aw / net_w
        bh = torch.exp(v[:, :, 3]) * ah / net_h
        rows_out = torch.cat([torch.stack([bx, by, bw, bh], dim=2), v[:, :, 4:]], dim=2)
        return rows_out.permute(0, 1, 3, 4, 2).reshape(b, n * h * w, 5 + p.classes)

    def extra_repr(self) -> str:
        return f"classes={self.params.classes}, mask={self.params.mask}"


class Softmax(nn.Module):
    """[softmax]: softmax(x / temperature) over each of `groups` equal
    slices of the flattened (C*H*W) input."""

    def __init__(self, groups: int, temperature: float) -> None:
        super().__init__()
        self.groups, self.temperature = groups, temperature

    def forward(self, x: Tensor, cache: list[Tensor | None]) -> Tensor:
        flat = x.reshape(x.shape[0], self.groups, -1)
        if self.temperature != 1:
            flat = flat / self.temperature
        return torch.softmax(flat, dim=-1).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, temperature={self.temperature}"


class Dropout(nn.Module):
    """[dropout]: identity in eval mode; in training, zero with probability p
    and scale the rest by 1/(1 - p) (as darknet)."""

    def __init__(self, probability: float) -> None:
        super().__init__()
        self.probability = probability

    def forward(self, x: Tensor, cache: list[Tensor | None]) -> Tensor:
        if not self.training or self.probability == 0:
            return x
        return F.dropout(x, self.probability, training=True)

    def extra_repr(self) -> str:
        return f"probability={self.probability}"


class Crop(nn.Module):
    """[crop]: the centre crop_height x crop_width window (eval) mapped by
    x*2 - 1 (x unchanged with noadjust=1).  In training mode, a random
    window per image and (flip=1) a random horizontal flip, as darknet."""

    def __init__(self, crop_height: int, crop_width: int, noadjust: bool, flip: bool) -> None:
        super().__init__()
        self.crop_height, self.crop_width = crop_height, crop_width
        self.noadjust, self.flip = noadjust, flip

    def _adjust(self, x: Tensor) -> Tensor:
        return x if self.noadjust else x * 2 - 1

    def forward(self, x: Tensor, cache: list[Tensor | None]) -> Tensor:
        h, w = x.shape[2], x.shape[3]
        ch, cw = self.crop_height, self.crop_width
        if not self.training:
            dh, dw = (h - ch) // 2, (w - cw) // 2
            return self._adjust(x[:, :, dh:dh + ch, dw:dw + cw])
        crops = []
        for image in x:
            dh = int(torch.randint(h - ch + 1, ()).item())
            dw = int(torch.randint(w - cw + 1, ()).item())
            crop = image[:, dh:dh + ch, dw:dw + cw]
            if self.flip and bool(torch.randint(2, ()).item()):
                crop = crop.flip(-1)
            crops.append(crop)
        return self._adjust(torch.stack(crops))

    def extra_repr(self) -> str:
        return f"{self.crop_height}x{self.crop_width}, noadjust={int(self.noadjust)}"


class Cost(nn.Module):
    """[cost]: a training loss on the previous layer's output.  Like the
    engine, the network's output is the last layer that is not a [cost]; in
    the module it passes its input through."""

    def forward(self, x: Tensor, cache: list[Tensor | None]) -> Tensor:
        return x
