"""Host arrays for batches: page-locked (pinned) memory from the engine when
they go to a GPU, so the upload is a DMA at full bus speed instead of a copy
through the driver's staging buffer; plain aligned memory otherwise.

The memory is freed when the array and every view of it are gone (the
array's base holds the engine's pointer through `ffi.gc`).
"""
from __future__ import annotations

import threading
from math import prod

import numpy as np

from ._ffi import check, ffi, lib


def host_array(shape: tuple[int, ...], *, pinned: bool) -> tuple[np.ndarray, bool]:
    """An uninitialised float32 array of `shape`; returns it and whether it
    is page-locked (only where asked for, in a CUDA build with a GPU, and
    the system allowed it)."""
    n = prod(shape)
    out = ffi.new("float **")
    is_pinned = ffi.new("int *")
    check(lib.dn_host_alloc(n, 1 if pinned else 0, out, is_pinned))
    owner = ffi.gc(out[0], lib.dn_host_free)
    # the buffer keeps `owner` alive, the array keeps the buffer alive
    array = np.frombuffer(ffi.buffer(owner, max(n, 1) * 4), np.float32, count=n).reshape(shape)
    return array, bool(is_pinned[0])


class HostBufferPool:
    """Recycled host buffers for batches of varying shape (multi-scale
    training): `take` hands out an array of the asked shape, carved from a
    free buffer large enough or a new one; `give` returns it for reuse.
    Pinned memory is slow to allocate and to lock, so a training run keeps
    a handful of buffers instead of allocating one per step."""

    def __init__(self, *, pinned: bool, min_floats: int = 0) -> None:
        self.pinned = pinned
        self.min_floats = min_floats         # capacity of every new buffer, at least
        self.any_pinned = False
        self._free: list[np.ndarray] = []   # flat buffers
        self._lock = threading.Lock()
        self.allocated = 0                   # buffers created (for tests and logs)

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        n = prod(shape)
        with self._lock:
            fits = [b for b in self._free if b.size >= n]
            if fits:
                buffer = min(fits, key=lambda b: b.size)
                self._free = [b for b in self._free if b is not buffer]
                return buffer[:n].reshape(shape)
            if self._free:  # none large enough: one is replaced, the count stays bounded
                smallest = min(range(len(self._free)), key=lambda k: self._free[k].size)
                del self._free[smallest]
        buffer, is_pinned = host_array((max(n, self.min_floats),), pinned=self.pinned)
        with self._lock:
            self.allocated += 1
            self.any_pinned |= is_pinned
        return buffer[:n].reshape(shape)

    def give(self, array: np.ndarray) -> None:
        """Return an array from `take` (its whole underlying buffer)."""
        root = _root(array)
        with self._lock:
            if not any(b is root for b in self._free):
                self._free.append(root)


def _root(array: np.ndarray) -> np.ndarray:
    """The array that owns the memory of a view (the one over the engine's
    buffer)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array
