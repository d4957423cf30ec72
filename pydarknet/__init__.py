"""pydarknet: a darknet-compatible neural-network engine in C, driven from Python.

    >>> import cv2, pydarknet
    >>> with pydarknet.Detector("cfg/yolov3-tiny.cfg", "yolov3-tiny.weights", "data/coco.names") as det:
    ...     for d in det.detect(cv2.imread("dog.jpg")):
    ...         print(d.name, d.confidence, d.x1, d.y1, d.x2, d.y2)

The engine (Network, Detector) is imported lazily so that the pure-Python
data tools (pydarknet.cfg, pydarknet.coco, ...) load without it.
"""
from __future__ import annotations

from typing import Any

from .errors import (
    ArgumentError,
    CfgError,
    CudaError,
    DarknetError,
    DarknetIOError,
    DarknetMemoryError,
    DataError,
    ImageError,
    InternalError,
    NumericError,
    TrainingInterrupted,
    UnsupportedError,
    WeightsError,
)

__version__ = "0.1.0"

__all__ = [
    "ArgumentError", "CfgError", "CudaError", "DarknetError", "DarknetIOError",
    "DarknetMemoryError", "DataError", "Detection", "Detector", "ImageError", "InternalError",
    "Network", "NumericError", "TrainingInterrupted", "UnsupportedError", "WeightsError",
]

_LAZY = {
    "Network": ("network", "Network"),
    "LayerInfo": ("network", "LayerInfo"),
    "Detector": ("detect", "Detector"),
    "Detection": ("detect", "Detection"),
}


# submodules reachable as attributes without their own import
# (`pydarknet.image.frame_to_input`, `pydarknet.video.VideoReader`)
_SUBMODULES = {"anchors", "cfg", "coco", "data", "datasets", "detect", "draw", "evaluate", "hostmem", "image",
               "loader", "names", "network", "replicas", "summary", "torch", "train", "video", "voc"}


def __getattr__(name: str) -> Any:
    from importlib import import_module

    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(import_module(f".{module}", __name__), attr)
    if name in _SUBMODULES:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module 'pydarknet' has no attribute {name!r}")
