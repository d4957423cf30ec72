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


def _umask() -> int:
    """The process umask, read without setting it where Linux tells it
    (os.umask can only read it by changing it, which races other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """`write(tmp)` fills a temporary file in `path`'s folder, which then
    replaces `path` (keeping its permissions); on any failure the temporary
    file is removed and `path` is left as it was.  A read-only `path` is
    refused.  OSError becomes DarknetIOError naming `path`."""
    target = Path(path)
    # the written file gets the permissions of the one it replaces, else what
    # a plain open() would give (0666 less the umask), not mkstemp's 0600
    try:
        mode = target.stat().st_mode & 0o7777
    except OSError:  # not there yet
        mode = 0o666 & ~_umask()
    else:
        if not mode & 0o222:  # root could write it, but it was made read-only
            raise DarknetIOError(f"{target}: cannot write: the file is read-only")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        try:
            write(tmp)
            os.chmod(tmp, mode)
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
