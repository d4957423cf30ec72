"""Benchmark process hygiene shared by the scripts in bench/.

This machine sets OPENBLAS_CORETYPE=Haswell (which halves OpenBLAS's speed on
Zen) and OPENBLAS_L2_SIZE; OpenBLAS (inside numpy, OpenCV, torch) reads them
when it loads, so a benchmark re-executes itself once without them before
importing anything heavy.  Tests and CI leave both alone."""
from __future__ import annotations

import os
import sys

_FORCED = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def clean_blas_env() -> None:
    """Re-exec the current script without the forced OpenBLAS settings."""
    if any(name in os.environ for name in _FORCED):
        env = {k: v for k, v in os.environ.items() if k not in _FORCED}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
