"""Exceptions.  Every failure of the engine reaches Python as a DarknetError
subclass that also subclasses the matching builtin, so `except ValueError`
keeps working for callers that do not know pydarknet.

This module imports nothing from the binding: the data tools use it too.
"""
from __future__ import annotations


class DarknetError(Exception):
    """Base of every pydarknet error.

    Attributes:
        message: what went wrong (file, line, section, expected vs found).
        origin: library source location that raised it (C side), if any.
    """

    def __init__(self, message: str, origin: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.origin = origin


class ArgumentError(DarknetError, ValueError):
    """A bad argument."""


class DarknetIOError(DarknetError, OSError):
    """A file could not be read or written."""


class CfgError(DarknetError, ValueError):
    """A malformed or inconsistent .cfg file."""


class WeightsError(DarknetError, ValueError):
    """A .weights file that does not fit the network (truncated, oversized...)."""


class DarknetMemoryError(DarknetError, MemoryError):
    """An allocation failed."""


class UnsupportedError(DarknetError, NotImplementedError):
    """A layer type or option pydarknet does not implement."""


class ImageError(DarknetError, ValueError):
    """A frame or image that cannot be used."""


class DataError(DarknetError, ValueError):
    """A bad dataset: list, label file, annotation JSON, .data file."""


class NumericError(DarknetError, FloatingPointError):
    """NaN or infinite values (a diverging loss)."""


class CudaError(DarknetError, RuntimeError):
    """A CUDA runtime, cuBLAS or NCCL failure."""


class TrainingInterrupted(DarknetError):
    """Training was stopped on request (Ctrl-C); a checkpoint was saved."""


class InternalError(DarknetError, RuntimeError):
    """A bug in pydarknet."""
