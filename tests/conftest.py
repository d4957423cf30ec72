"""Shared fixtures.  ../shared is reached only through tests/shared.py and the
darknet reference only through tests/oracle.py; both skip with a reason."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from oracle import with_batch_one  # noqa: E402
from shared import darknet_cfg  # noqa: E402


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours - reference| / max |reference|.

    Elementwise relative errors explode where an activation crosses zero, so
    a layer's error is measured against the scale of its output; the
    engines sum in different orders (blocked SIMD GEMM vs darknet's plain
    loops), which leaves ~1e-6 of that scale."""
    ours = np.asarray(ours, np.float64).ravel()
    reference = np.asarray(reference, np.float64).ravel()
    assert ours.shape == reference.shape, f"shapes differ: {ours.shape} vs {reference.shape}"
    scale = max(float(np.abs(reference).max()), 1e-30)
    return float(np.abs(ours - reference).max() / scale)


@pytest.fixture
def batch1_cfg(tmp_path: Path):
    """Copy a reference cfg (by name) with batch=1, subdivisions=1, and
    optional extra text substitutions; returns the new path."""

    def make(name: str, replace: dict[str, str] | None = None) -> Path:
        text = with_batch_one(darknet_cfg(name).read_text())
        for old, new in (replace or {}).items():
            assert old in text, f"{old!r} not in {name}"
            text = text.replace(old, new)
        path = tmp_path / name
        path.write_text(text)
        return path

    return make


TINY_CFG = """[net]
batch=1
subdivisions=1
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=14
size=1
stride=1
pad=1
activation=linear

[region]
anchors = 1,1, 2,2
classes=2
coords=4
num=2
softmax=1
"""


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> Path:
    """A small region detector (32x32 input, 2 classes, 2 anchors)."""
    path = tmp_path / "tiny.cfg"
    path.write_text(TINY_CFG)
    return path
