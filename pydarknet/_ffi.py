"""The binding: the only module that touches cffi.

`lib` and `ffi` come from the compiled module `_darknet_cffi` (API mode,
built by setup.py against darknet_src/include/darknet.h).  Every call that
returns a dn_status goes through `check`, which turns a failure into the
matching DarknetError subclass with the library's message.  cffi releases the
GIL for the duration of every C call.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

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

try:
    from ._darknet_cffi import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "pydarknet's engine is not built: install the package with `pip install .` "
        "(or `pip install -e .`) from the repository root"
    ) from exc

_ERRORS: dict[int, type[DarknetError]] = {
    lib.DN_ERR_ARG: ArgumentError,
    lib.DN_ERR_IO: DarknetIOError,
    lib.DN_ERR_CFG: CfgError,
    lib.DN_ERR_WEIGHTS: WeightsError,
    lib.DN_ERR_OOM: DarknetMemoryError,
    lib.DN_ERR_UNSUPPORTED: UnsupportedError,
    lib.DN_ERR_IMAGE: ImageError,
    lib.DN_ERR_DATA: DataError,
    lib.DN_ERR_NUMERIC: NumericError,
    lib.DN_ERR_CUDA: CudaError,
    lib.DN_ERR_INTERRUPTED: TrainingInterrupted,
    lib.DN_ERR_INTERNAL: InternalError,
}


def raise_status(status: int) -> NoReturn:
    """Raise the exception for a failed call (message from dn_last_error)."""
    message = ffi.string(lib.dn_last_error()).decode("utf-8", "replace")
    origin = ffi.string(lib.dn_last_error_origin()).decode("utf-8", "replace")
    lib.dn_clear_error()
    error = _ERRORS.get(status, InternalError)
    raise error(message or f"pydarknet call failed with status {status}", origin)


def check(status: int) -> None:
    """Raise unless `status` is DN_OK."""
    if status != lib.DN_OK:
        raise_status(status)


def path_arg(path: str | os.PathLike[str]) -> bytes:
    """A filesystem path as the C library takes it (ArgumentError for what
    is not a path, or holds a NUL byte, which C would cut the path at)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentError(f"expected a file path (str or os.PathLike), got {type(path).__name__}")
    encoded = os.fsencode(Path(path))
    if b"\0" in encoded:
        raise ArgumentError(f"a file path may not contain a NUL byte: {os.fsdecode(encoded)!r}")
    return encoded


def text(ptr: object) -> str:
    """A C string as str ('' for NULL)."""
    if ptr == ffi.NULL:
        return ""
    return ffi.string(ptr).decode("utf-8", "replace")


__all__ = ["check", "ffi", "lib", "path_arg", "raise_status", "text"]
