"""numpy arrays over engine memory that keep that memory alive.

A `Network` hands out arrays over its C buffers: `params()` and `grads()`
(the network's one parameter buffer, fixed for its life) and
`predict(copy=False)` (a layer's output, remade by `resize` and
`set_batch`).  Each such array holds, through its base, the owner's C
handle, so:

- `close()` frees the C network at once where no such array is left, and
  otherwise leaves the freeing to the collection of the last one: an array
  read after `close()` still reads the memory it was given, never freed
  memory;
- `resize()` and `set_batch()` refuse to run while an output array from
  `predict(copy=False)` is alive (they would free the memory under it).
"""
from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from ._ffi import ffi
from .errors import ArgumentError


class _Memory:
    """numpy's view of `n` floats at a C address (through
    __array_interface__), holding the C handle that owns them."""

    __slots__ = ("__array_interface__", "handle", "kind", "__weakref__")

    def __init__(self, address: int, n: int, handle: Any, kind: str, writeable: bool) -> None:
        self.__array_interface__ = {"data": (address, not writeable), "shape": (n,), "typestr": "<f4",
                                    "version": 3}
        self.handle = handle
        self.kind = kind


class HandleViews:
    """The arrays handed out over one C handle's memory (a network's, or a
    trainer's for all its replicas), and the handle's release."""

    def __init__(self, handle: Any) -> None:
        self.handle: Any = handle
        self._live: weakref.WeakSet[_Memory] = weakref.WeakSet()

    def array(self, pointer: Any, n: int, *, kind: str, writeable: bool) -> np.ndarray:
        """A float32 array of the `n` floats at `pointer`; `kind` is "params"
        (memory that lives as long as the handle) or "output" (memory a
        resize remakes)."""
        if n == 0:
            return np.zeros(0, np.float32)
        memory = _Memory(int(ffi.cast("uintptr_t", pointer)), n, self.handle, kind, writeable)
        self._live.add(memory)
        return np.asarray(memory)

    def outputs_alive(self) -> int:
        """How many output arrays are still alive."""
        return sum(memory.kind == "output" for memory in list(self._live))

    def check_no_outputs(self, action: str) -> None:
        alive = self.outputs_alive()
        if alive:
            raise ArgumentError(
                f"cannot {action}: {alive} array{'s' if alive > 1 else ''} from predict(copy=False) "
                f"still view{'' if alive > 1 else 's'} the outputs it would remake; delete "
                f"{'them' if alive > 1 else 'it'} first, or use predict(copy=True)")

    def release(self) -> None:
        """Free the handle now where no array views its memory; otherwise the
        last array's collection frees it."""
        handle, self.handle = self.handle, None
        if handle is not None and not list(self._live):
            ffi.release(handle)
