"""cffi build script (API mode): the binding module is compiled against
darknet_src/include/darknet.h and linked to libpydarknet.so (see setup.py).

The cdef is the public header itself with its preprocessor lines dropped, so
the header stays the single source of what Python sees and the C compiler
checks the binding against the very declarations the library was built with.
"""
from __future__ import annotations

from pathlib import Path

from cffi import FFI

HEADER = Path(__file__).resolve().parent.parent / "darknet_src" / "include" / "darknet.h"


def cdef_text(header: Path = HEADER) -> str:
    lines = header.read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source("pydarknet._darknet_cffi", '#include "darknet.h"')

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
