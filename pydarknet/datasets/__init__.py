"""Generated datasets for demos and tests (pure Python, no engine needed)."""
from __future__ import annotations

from .shapes import SHAPE_CLASSES, ShapeObject, ShapesDataset, generate_shapes, render_shapes

__all__ = ["SHAPE_CLASSES", "ShapeObject", "ShapesDataset", "generate_shapes", "render_shapes"]
