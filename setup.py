"""Build: `make -C darknet_src` compiles the engine into pydarknet/libpydarknet.so,
then cffi (API mode) compiles the binding module against the same header and
links it to that library (rpath $ORIGIN).

Environment switches (read by darknet_src/Makefile too):
  PYDARKNET_CUDA=1|0   build the CUDA kernels (default: auto, on when nvcc and
                       the CUDA libraries are found; 0 forces the CPU build)
  PYDARKNET_CUDNN=1    use cuDNN for convolutions (CUDA builds)
  PYDARKNET_NATIVE=1   -march=native (the default build runs on any x86-64
                       and picks AVX2/AVX-512 kernels at run time)
  PYDARKNET_DEBUG=1    -O0 -g with address sanitizer off
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
ENGINE_EXT = "pydarknet.libpydarknet"


class EngineLibrary(Extension):
    """The engine, built by darknet_src/Makefile (not by distutils)."""

    def __init__(self) -> None:
        super().__init__(ENGINE_EXT, sources=[])


class BuildExt(build_ext):
    def get_ext_filename(self, fullname: str) -> str:
        # called with the dotted name or with its last part only
        if fullname == ENGINE_EXT:
            return os.path.join("pydarknet", "libpydarknet.so")
        if fullname == ENGINE_EXT.rsplit(".", 1)[1]:
            return "libpydarknet.so"
        return super().get_ext_filename(fullname)

    def build_extensions(self) -> None:
        # The engine first: the cffi module links against it.
        ordered = sorted(self.extensions, key=lambda e: e.name != ENGINE_EXT)
        for ext in ordered:
            self.build_extension(ext)

    def build_extension(self, ext: Extension) -> None:
        engine_path = Path(self.get_ext_fullpath(ENGINE_EXT)).resolve()
        if ext.name == ENGINE_EXT:
            self._make_engine(engine_path)
            return
        ext.include_dirs.append(str(ROOT / "darknet_src" / "include"))
        ext.library_dirs.append(str(engine_path.parent))
        ext.libraries.append("pydarknet")
        ext.extra_link_args.append("-Wl,-rpath,$ORIGIN")
        super().build_extension(ext)

    def _make_engine(self, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        build_dir = Path(self.build_temp).resolve() / "engine"
        jobs = os.environ.get("PYDARKNET_JOBS", str(os.cpu_count() or 2))
        cmd = ["make", "-C", str(ROOT / "darknet_src"), f"-j{jobs}",
               f"BUILD={build_dir}", f"LIB={target}", "lib"]
        print(" ".join(cmd), flush=True)
        subprocess.check_call(cmd)


class BuildPy(build_py):
    """Also ship data/*.names inside the package (pydarknet/data/)."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "pydarknet" / "data"
        target.mkdir(parents=True, exist_ok=True)
        for names in sorted((ROOT / "data").glob("*.names")):
            self.copy_file(str(names), str(target / names.name))


setup(
    ext_modules=[EngineLibrary()],
    cffi_modules=["pydarknet/_build_ffi.py:ffibuilder"],
    cmdclass={"build_ext": BuildExt, "build_py": BuildPy},
    zip_safe=False,
)
