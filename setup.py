"""Build: `make -C darknet_src` compiles the engine into pydarknet/libpydarknet.so,
then cffi (API mode) compiles the binding module against the same header and
links it to that library (rpath $ORIGIN).

Environment switches (read by darknet_src/Makefile too):
  PYDARKNET_CUDA=1|0   build the CUDA kernels (default: auto, on when nvcc and
                       cuBLAS are found: the toolkit's or the nvidia-cublas /
                       nvidia-cuda-runtime / nvidia-nccl-cu13 wheels of the
                       environment; 0 forces the CPU build)
  PYDARKNET_CUDNN=1    convolutions through cuDNN in a CUDA build (the toolkit's
                       or the nvidia-cudnn-cu13 wheel), as darknet's CUDNN=1
  PYDARKNET_NATIVE=1   -march=native (the default build runs on any x86-64
                       and picks AVX2/AVX-512 kernels at run time)
  PYDARKNET_DEBUG=1    -O0 -g with address sanitizer off
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
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
        built = build_dir / target.name
        jobs = os.environ.get("PYDARKNET_JOBS", str(os.cpu_count() or 2))
        cmd = ["make", "-C", str(ROOT / "darknet_src"), f"-j{jobs}",
               f"BUILD={build_dir}", f"LIB={built}"]
        cuda_dirs = cuda_settings()
        if cuda_dirs is not None:
            cmd += ["CUDA=1", f"CUDA_EXTRA_DIRS={' '.join(cuda_dirs)}"]
        else:
            cmd += ["CUDA=0"]
        cmd.append("lib")
        print(" ".join(cmd), flush=True)
        subprocess.check_call(cmd)
        # replace, never rewrite in place: processes that have the old library
        # mapped (an editable install in use) keep running on it
        staging = target.with_name(target.name + ".new")
        shutil.copy2(built, staging)
        os.replace(staging, target)


def cuda_settings() -> list[str] | None:
    """None for a CPU build, else the extra folders (include/ + lib/) holding
    cuBLAS and NCCL.  PYDARKNET_CUDA=1 asks for CUDA, 0 refuses it, unset
    builds with CUDA when nvcc and cuBLAS are both found (the toolkit's, or
    the nvidia-cublas / nvidia-nccl-cu13 wheels of this environment)."""
    mode = os.environ.get("PYDARKNET_CUDA", "auto").strip().lower()
    if mode in ("0", "no", "off", "false"):
        return None
    nvcc = shutil.which("nvcc")
    toolkit = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    if nvcc:
        toolkit = Path(nvcc).resolve().parent.parent
    site = Path(sysconfig.get_paths()["purelib"]) / "nvidia"
    wheels = [str(d) for d in (site / "cu13", site / "nccl", site / "cudnn") if (d / "include").is_dir()]
    lib_dirs = [Path(d) / "lib" for d in wheels] + [toolkit / "lib64", toolkit / "lib"]
    has_cublas = any(next(d.glob("libcublas.so*"), None) is not None for d in lib_dirs)
    if nvcc and has_cublas:
        return wheels
    if mode in ("1", "yes", "on", "true"):
        missing = "nvcc" if not nvcc else "cuBLAS (pip install nvidia-cublas nvidia-cuda-runtime)"
        raise SystemExit(f"PYDARKNET_CUDA=1 but {missing} was not found")
    return None


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
