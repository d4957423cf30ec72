"""The one way tests reach ../shared (darknet's cfgs, names, sample images and
the pretrained yolov3-tiny weights), which lives beside the checkout and must
not be copied into the repo.  Missing -> the test is skipped with the reason."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PYDARKNET_SHARED", REPO.parent / "shared")).resolve()


def shared_path(relative: str) -> Path:
    """Path of `relative` under ../shared, or skip the calling test."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"needs ../shared/{relative} (test inputs kept beside the checkout; "
                    f"set PYDARKNET_SHARED to point elsewhere): not found at {path}")
    return path


def darknet_cfg(name: str) -> Path:
    """A reference cfg from pjreddie darknet, e.g. darknet_cfg('yolov2.cfg')."""
    return shared_path(f"darknet/cfg/{name}")


def darknet_data(name: str) -> Path:
    """A file from darknet's data/ folder (names, sample images)."""
    return shared_path(f"darknet/data/{name}")


def reference_cfgs() -> list[Path]:
    """Every cfg in ../shared/darknet/cfg (empty when ../shared is missing)."""
    folder = SHARED / "darknet" / "cfg"
    return sorted(folder.glob("*.cfg")) if folder.is_dir() else []
