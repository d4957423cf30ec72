"""What the emulated CUDA build counts (tests/cuda_emu/emu_runtime/
emu_traffic.cpp), read through ctypes in a process whose pydarknet is that
build (tests/test_cuda_emulated_engine.py's subprocesses)."""
from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def _engine() -> ctypes.CDLL:
    import pydarknet

    engine = ctypes.CDLL(str(Path(pydarknet.__file__).parent / "libpydarknet.so"))
    engine.dn_emu_collectives.restype = ctypes.c_ulonglong
    return engine


def traffic() -> list[int]:
    """Bytes host -> device, device -> host, device -> device, and kernel
    launches, since the process started."""
    counts = (ctypes.c_ulonglong * 4)()
    _engine().dn_emu_traffic(counts)
    return list(counts)


def device_memory() -> list[int]:
    """Device bytes allocated now (all devices), and live allocations."""
    now = (ctypes.c_ulonglong * 2)()
    _engine().dn_emu_device_memory(now)
    return list(now)


def collectives() -> int:
    """NCCL collectives run (0 in a build without NCCL)."""
    return int(_engine().dn_emu_collectives())
