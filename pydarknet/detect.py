"""`Detector`: darknet detection on numpy/OpenCV frames.

One crossing of the Python/C border per call: the frame's pixels are read in
place by the engine (letterbox, BGR->RGB, /255, HWC->CHW in C), the network
runs, boxes are decoded with darknet's get_network_boxes, NMS runs, and the
results come back as one array.
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Sequence

import numpy as np

from ._ffi import check, ffi, lib
from .errors import ArgumentError, ImageError
from .names import default_names, read_names
from .network import Network

PathLike = str | os.PathLike[str]
NmsKind = Literal["sort", "obj", "none"]

_NMS = {"sort": lib.DN_NMS_SORT, "obj": lib.DN_NMS_OBJ, "none": lib.DN_NMS_NONE}

# dn_detection as a numpy record (checked against the C layout at import)
_RESULT = np.dtype([("image", "<i4"), ("box_index", "<i4"), ("class_id", "<i4"),
                    ("confidence", "<f4"), ("objectness", "<f4"), ("x", "<f4"), ("y", "<f4"),
                    ("w", "<f4"), ("h", "<f4")])
assert _RESULT.itemsize == ffi.sizeof("dn_detection"), "dn_detection layout changed"


@dataclass(frozen=True)
class Detection:
    """One detected object: a class and a box in pixels of the original frame.

    x, y are the box centre, w, h its size (darknet's convention); x1, y1,
    x2, y2 its corners.  confidence is darknet's prob (objectness times the
    class probability)."""

    class_id: int
    name: str
    confidence: float
    x: float
    y: float
    w: float
    h: float
    objectness: float = 0.0

    @property
    def x1(self) -> float:
        return self.x - self.w / 2

    @property
    def y1(self) -> float:
        return self.y - self.h / 2

    @property
    def x2(self) -> float:
        return self.x + self.w / 2

    @property
    def y2(self) -> float:
        return self.y + self.h / 2

    def to_dict(self) -> dict[str, Any]:
        """For JSON: a box darknet decoded to an infinite or NaN size (exp of
        an untrained network's large output) is given as null there, which
        JSON can carry, instead of Infinity, which it cannot."""
        def finite(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {"class_id": self.class_id, "name": self.name, "confidence": self.confidence,
                "box": {"x": finite(self.x), "y": finite(self.y), "w": finite(self.w), "h": finite(self.h)}}


def _number(name: str, value: object) -> float:
    """A threshold as a float (the engine checks its range)."""
    if isinstance(value, (bool, str, bytes)) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ArgumentError(f"{name} must be a number, got {value!r}")
    return float(value)


def _frame_struct(frame: np.ndarray, slot: Any) -> np.ndarray:
    """Fill a dn_frame for `frame`; returns the array that must stay alive."""
    if not isinstance(frame, np.ndarray):
        raise ImageError(f"a frame must be a numpy array (H x W x 3 uint8 BGR), got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ImageError(f"a frame must be uint8 BGR (as cv2.imread gives), got dtype {frame.dtype}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ImageError(f"a frame must be H x W x 3 (BGR), got shape {frame.shape}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ImageError(f"empty frame: shape {frame.shape}")
    if frame.strides[1] != 3 or frame.strides[2] != 1 or frame.strides[0] < 3 * frame.shape[1]:
        frame = np.ascontiguousarray(frame)
    # rows may be further apart than 3 * width (a crop of a larger frame): the
    # engine reads them in place through row_stride; the caller keeps `frame`
    # alive for the duration of the call
    slot.data = ffi.cast("const uint8_t *", frame.ctypes.data)
    slot.width = frame.shape[1]
    slot.height = frame.shape[0]
    slot.row_stride = frame.strides[0]
    return frame


class Detector:
    """A darknet detector (region or yolo output) on BGR frames.

    Args:
        cfg, weights: the darknet model.
        names: a .names file or a list of class names; default: COCO's for
            80 classes, VOC's for 20, else the class numbers.
        threads: worker threads (0 = one per CPU).
        device: "cpu" or "cuda:N" (CUDA builds): frames are uploaded and
            letterboxed on the GPU.
    """

    def __init__(self, cfg: PathLike, weights: PathLike | None, names: PathLike | Sequence[str] | None = None,
                 *, threads: int = 0, batch: int = 1, width: int = 0, height: int = 0,
                 device: str = "cpu") -> None:
        self._lock = threading.RLock()
        self.network = Network(cfg, weights, batch=batch, threads=threads, width=width,
                               height=height, device=device)
        self.classes = self._count_classes()
        if names is None:
            self.names = default_names(self.classes)
        elif isinstance(names, (str, os.PathLike)):
            self.names = read_names(names)
        else:
            self.names = [str(n) for n in names]
        if len(self.names) < self.classes:
            raise ArgumentError(f"{len(self.names)} class names for a network with "
                                f"{self.classes} classes")

    def _count_classes(self) -> int:
        classes = [l.classes for l in self.network.layers if l.type in ("region", "yolo")]
        if not classes:
            raise ArgumentError(f"{self.network.cfg_path} has no [region] or [yolo] layer: "
                                f"it is not a detector")
        return max(classes)

    def close(self) -> None:
        self.network.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def detect(self, frame: np.ndarray, thresh: float = .5, hier_thresh: float = .5,
               nms: float = .45, letterbox: bool = True, nms_kind: NmsKind = "sort") -> list[Detection]:
        """Detections in one H x W x 3 uint8 BGR frame, as darknet's `detect`
        gives them (letterbox, do_nms_sort) by default."""
        return self.detect_batch([frame], thresh, hier_thresh, nms, letterbox, nms_kind)[0]

    def detect_batch(self, frames: Sequence[np.ndarray], thresh: float = .5,
                     hier_thresh: float = .5, nms: float = .45, letterbox: bool = True,
                     nms_kind: NmsKind = "sort") -> list[list[Detection]]:
        """Detections for several frames in one forward pass (the network's
        batch grows to fit)."""
        if nms_kind not in _NMS:
            raise ArgumentError(f"nms_kind must be one of {sorted(_NMS)}, got {nms_kind!r}")
        if len(frames) == 0:
            return []
        with self._lock:
            if self.network.batch < len(frames):
                self.network.set_batch(len(frames))
            params = ffi.new("dn_detect_params *")
            params.thresh = _number("thresh", thresh)
            params.hier_thresh = _number("hier_thresh", hier_thresh)
            params.nms = _number("nms", nms)
            params.nms_kind = _NMS[nms_kind]
            params.resize = lib.DN_RESIZE_LETTERBOX if letterbox else lib.DN_RESIZE_PLAIN
            self.network._sync_views()
            structs = ffi.new("dn_frame[]", len(frames))
            keep = [_frame_struct(f, structs[i]) for i, f in enumerate(frames)]
            out = ffi.new("dn_detections **")
            check(lib.dn_network_detect(self.network.handle, structs, len(frames), params, out))
            del keep
            result = ffi.gc(out[0], lib.dn_detections_free)
            return self._unpack(result, len(frames))

    def _unpack(self, dets: Any, n_frames: int) -> list[list[Detection]]:
        per_frame: list[list[Detection]] = [[] for _ in range(n_frames)]
        if dets.count:
            raw = np.frombuffer(ffi.buffer(dets.items, dets.count * _RESULT.itemsize),
                                dtype=_RESULT).copy()
            for d in raw.tolist():
                image, _, class_id, confidence, objectness, x, y, w, h = d
                per_frame[image].append(Detection(class_id, self.names[class_id], confidence,
                                                  x, y, w, h, objectness))
        ffi.release(dets)
        return per_frame

    def __repr__(self) -> str:
        return f"<Detector {Path(self.network.cfg_path).name}: {self.classes} classes>"
