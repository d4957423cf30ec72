"""ONNX export of a `DarknetModel` (torch.onnx's exporter, torch.export based).

    >>> export_onnx(model, "yolov3-tiny.onnx")            # raw outputs, opset 18 (or newer)
    >>> export_onnx(model, "boxes.onnx", decode=True)     # (B, N, 5 + C) boxes

The graph takes one input, "input": float32 (batch, channels, height,
width), batch dynamic.  Its outputs are what `model(x)` returns: one output
named after the output layer ("output"), or for several [yolo] layers one
per layer, "yolo_<index>"; with decode=True a single "boxes" output.
Every darknet layer is plain tensor arithmetic in the module (see
layers.py), so the graph uses standard operators only (Conv, MaxPool, Pad,
Reshape, Transpose, Slice, Concat, Sigmoid, Softmax, ...).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import DarknetError
from .model import DarknetModel

__all__ = ["DEFAULT_OPSET", "export_onnx", "output_names"]

# torch.onnx's exporter writes opset 18 natively and converts to other
# opsets afterwards; its converter has no way down to 17 for Pad (used by
# the max pooling), so 18 is the oldest opset offered.
DEFAULT_OPSET = 18
MIN_OPSET = 18


class ExportError(DarknetError, RuntimeError):
    """The ONNX exporter failed."""


class _Decoded(nn.Module):
    def __init__(self, model: DarknetModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x, decode=True)  # type: ignore[return-value]


@contextlib.contextmanager
def _quiet_logger(name: str):  # noqa: ANN202
    """The exporter logs notes ("torchvision is not installed...") as warnings."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def output_names(model: DarknetModel, decode: bool = False) -> list[str]:
    """Names of the exported graph's outputs (see the module doc)."""
    if decode:
        return ["boxes"]
    if len(model.yolo_indexes) > 1:
        return [f"yolo_{i}" for i in model.yolo_indexes]
    return ["output"]


def export_onnx(model: DarknetModel, path: str | os.PathLike[str], *, opset: int = DEFAULT_OPSET,
                decode: bool = False, width: int = 0, height: int = 0, batch: int = 1,
                dynamic_batch: bool = True, quiet: bool = True) -> Path:
    """Write `model` (in eval mode) as ONNX to `path`; returns the path.

    width, height: the input size the graph is traced at (default the
    cfg's); the spatial size is fixed in the graph, the batch is dynamic
    unless dynamic_batch=False (then fixed to `batch`)."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset}: the export needs opset {MIN_OPSET} or newer")
    if (width or model.width, height or model.height) != (model.width, model.height):
        # the cfg at that size first: a size its routes cannot join is the
        # engine's one-line CfgError, not an exporter's trace
        DarknetModel(model.cfg, width=width or model.width, height=height or model.height)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    module: nn.Module = _Decoded(model) if decode else model
    example = torch.zeros(max(batch, 2 if dynamic_batch else 1), model.channels,
                          height or model.height, width or model.width)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    out = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as stack:
            if quiet:
                warnings.simplefilter("ignore")
                stack.enter_context(contextlib.redirect_stdout(out))
                stack.enter_context(_quiet_logger("torch.onnx"))
                stack.enter_context(_quiet_logger("torch.export"))
            program = torch.onnx.export(
                module, (example,), dynamo=True, opset_version=opset, input_names=["input"],
                output_names=output_names(model, decode), dynamic_shapes=dynamic_shapes,
                external_data=False, verbose=False)
            if program is None:
                raise ExportError("torch.onnx.export returned no program")
            program.save(str(p), external_data=False)
    except DarknetError:
        raise
    except Exception as e:  # noqa: BLE001 (the exporter raises many kinds)
        raise ExportError(f"ONNX export failed: {type(e).__name__}: {e}\n{out.getvalue()}"
                          ) from e
    finally:
        model.train(was_training)
    return p
