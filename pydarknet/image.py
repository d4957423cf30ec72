"""Frame preprocessing as the engine does it (darknet's arithmetic, in C):
for callers who run `Network.predict` themselves."""
from __future__ import annotations

import numpy as np

from ._ffi import check, ffi, lib
from .detect import _frame_struct


def frame_to_input(frame: np.ndarray, width: int, height: int, letterbox: bool = True) -> np.ndarray:
    """An H x W x 3 uint8 BGR frame as network input: (3, height, width)
    float32 RGB in [0, 1], letterboxed (pjreddie's letterbox_image: fit,
    pad with 0.5) or plainly resized with darknet's bilinear resize_image."""
    out = np.empty((3, height, width), np.float32)
    slot = ffi.new("dn_frame *")
    keep = _frame_struct(frame, slot)
    mode = lib.DN_RESIZE_LETTERBOX if letterbox else lib.DN_RESIZE_PLAIN
    check(lib.dn_frame_to_input(slot, width, height, mode, ffi.from_buffer("float[]", out)))
    del keep
    return out


def _chw(image: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(image, dtype=np.float32)
    if x.ndim != 3:
        from .errors import ImageError

        raise ImageError(f"expected a (channels, height, width) float image, got shape {x.shape}")
    return x


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """darknet's resize_image on a (C, H, W) float image."""
    x = _chw(image)
    c, h, w = x.shape
    out = np.empty((c, height, width), np.float32)
    check(lib.dn_image_resize(ffi.from_buffer("float[]", x), w, h, c, width, height,
                              ffi.from_buffer("float[]", out)))
    return out


def letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """darknet's letterbox_image on a (C, H, W) float image."""
    x = _chw(image)
    c, h, w = x.shape
    out = np.empty((c, height, width), np.float32)
    check(lib.dn_image_letterbox(ffi.from_buffer("float[]", x), w, h, c, width, height,
                                 ffi.from_buffer("float[]", out)))
    return out
