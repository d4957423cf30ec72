"""Atomic file writes: every file the package writes (cfg, .data, .names,
.weights, .pt, the loss chart) goes to a temporary file beside its target,
which then replaces the target, so a failure never leaves a half-written
file where a good one was."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import DarknetIOError


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """`write(tmp)` fills a temporary file in `path`'s folder, which then
    replaces `path`; on any failure the temporary file is removed and `path`
    is left as it was.  OSError becomes DarknetIOError naming `path`."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        try:
            write(tmp)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as e:
        raise DarknetIOError(f"{target}: cannot write: {e.strerror or e}") from None
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """UTF-8 text with "\\n" line ends, written atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline="\n"))
