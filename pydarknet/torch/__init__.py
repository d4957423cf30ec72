"""darknet networks in PyTorch: a module built from a cfg, exact weight
conversion both ways, the YOLOv2 region loss, and ONNX export.

    >>> from pydarknet.torch import DarknetModel
    >>> model = DarknetModel.from_darknet("yolov3-tiny.cfg", "yolov3-tiny.weights")
    >>> heads = model(images)                   # == the engine's predict
    >>> model.save("yolov3-tiny.pt")            # state dict + cfg + header
    >>> DarknetModel.from_file("yolov3-tiny.pt").save_darknet_weights("back.weights")

Needs the `torch` extra: pip install "pydarknet-engine[torch]" (or
pip install ".[torch]" from a checkout).  Nothing else in pydarknet imports
this package, and it never uses the engine: conversion works from the cfg
model (pydarknet.cfg) and numpy alone.
"""
from __future__ import annotations

INSTALL_HINT = ('pip install "pydarknet-engine[torch]" (or pip install ".[torch]" from a '
                "pydarknet checkout)")

try:
    import torch as _torch  # noqa: F401
except ImportError as _e:  # pragma: no cover - exercised without torch only
    raise ImportError(f"pydarknet.torch needs PyTorch: {INSTALL_HINT}") from _e

from .layers import DarknetBatchNorm, RegionParams, YoloParams, activate  # noqa: E402
from .loss import RegionLoss, region_loss  # noqa: E402
from .model import DarknetModel, LayerShape  # noqa: E402
from .weights import (  # noqa: E402
    WeightsHeader,
    load_darknet_weights,
    load_pt,
    read_header,
    save_darknet_weights,
    save_pt,
)

__all__ = [
    "INSTALL_HINT", "DarknetBatchNorm", "DarknetModel", "LayerShape", "RegionLoss",
    "RegionParams", "WeightsHeader", "YoloParams", "activate", "export_onnx",
    "load_darknet_weights", "load_pt", "read_header", "region_loss", "save_darknet_weights",
    "save_pt",
]


def export_onnx(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """See pydarknet.torch.onnx.export_onnx (imported on first use: the
    exporter loads onnx and onnxscript)."""
    from .onnx import export_onnx as _export

    return _export(*args, **kwargs)
