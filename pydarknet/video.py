"""Video files for `pydarknet detect` (darknet's `detector demo` on a file):
frames in through OpenCV, annotated frames out to a video written under a
temporary name and renamed when complete."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import DarknetIOError, ImageError

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


class VideoReader:
    """The frames of a video file (H x W x 3 uint8 BGR) and its frame rate."""

    def __init__(self, path: Path) -> None:
        import cv2

        self.path = path
        if not Path(path).is_file():
            raise DarknetIOError(f"cannot open video '{path}': "
                                 f"{'not a file' if Path(path).exists() else 'no such file'}")
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            raise ImageError(f"cannot open video '{path}' (unknown format or not a video)")
        fps = float(self._capture.get(cv2.CAP_PROP_FPS))
        self.fps = fps if fps > 0 else 25.0

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            ok, frame = self._capture.read()
            if not ok:
                return
            yield frame

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoWriter:
    """An MPEG-4 video of the frames given to `write` (sized by the first),
    at `path` once `close` succeeds; a failure leaves no partial file."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps
        self.frames = 0
        self._partial = path.with_name(f".{path.stem}.partial{path.suffix}")
        self._writer = None

    def write(self, frame: np.ndarray) -> None:
        import cv2

        if self._writer is None:
            height, width = frame.shape[:2]
            self._writer = cv2.VideoWriter(str(self._partial), cv2.VideoWriter_fourcc(*"mp4v"),
                                           self.fps, (width, height))
            if not self._writer.isOpened():
                raise DarknetIOError(f"cannot write video '{self.path}' (OpenCV has no MPEG-4 writer "
                                     f"for {width}x{height})")
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            try:
                os.replace(self._partial, self.path)
            except OSError as exc:
                self._partial.unlink(missing_ok=True)
                raise DarknetIOError(f"cannot write video '{self.path}': {exc.strerror}") from exc

    def abandon(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()
