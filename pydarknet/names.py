"""Class names shipped with pydarknet, and the defaults a Detector uses."""
from __future__ import annotations

from pathlib import Path

from .data import read_names

_DATA_DIRS = (
    Path(__file__).resolve().parent / "data",          # installed wheel (copied at build)
    Path(__file__).resolve().parent.parent / "data",   # source checkout / editable install
)


def bundled_names(name: str) -> Path | None:
    """Path of a names file shipped with pydarknet (coco.names, voc.names)."""
    for folder in _DATA_DIRS:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def default_names(classes: int) -> list[str]:
    """COCO's names for 80 classes, VOC's for 20, else "0".."N-1"."""
    bundled = {80: "coco.names", 20: "voc.names"}.get(classes)
    if bundled:
        path = bundled_names(bundled)
        if path is not None:
            names = read_names(path)
            if len(names) == classes:
                return names
    return [str(i) for i in range(classes)]
