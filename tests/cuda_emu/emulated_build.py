"""The whole CUDA engine built for the CPU: every .cu file of darknet_src,
its kernel launches rewritten as calls of cuda_emu.hpp's launch(), compiled
by g++ against emu_runtime/ (the CUDA runtime and cuBLAS calls the engine
makes, on host memory; SGEMM through the engine's own CPU GEMM), linked with
the C files compiled as for a CUDA build (-DDN_CUDA=1).  The result is a
libpydarknet.so whose "GPU" runs the CUDA path's host code and kernels on
the CPU: the GPU checks (tests/gpu/checks.py) run against it in CI.

With --cudnn, the convolutions go through conv_cudnn.cu to an emulated
cuDNN (emu_runtime/cudnn_emu.cpp: the real arithmetic, scripted algorithm
lists); with --nccl, replicas on distinct GPUs all-reduce through
emu_runtime/nccl.h's communicators.  The streams run work at issue, or as
late as CUDA allows, or in a seeded random order within CUDA's promises
(DN_EMU_STREAMS, emu_runtime/cuda_runtime.h), which shows a missing wait
between streams.  What it cannot show: speed,
cuBLAS's, cuDNN's and NCCL's own behaviour (algorithms, ring order,
transports).

    python tests/cuda_emu/emulated_build.py OUT_DIR [--cudnn] [--nccl]   # -> OUT_DIR/pkg/pydarknet
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMU = ROOT / "tests" / "cuda_emu"
ENGINE = ROOT / "darknet_src"


def _matching(text: str, start: int, open_char: str, close_char: str) -> int:
    """Index just past the bracket that closes the one at text[start]."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_char:
            depth += 1
        elif text[i] == close_char:
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError(f"unbalanced {open_char}{close_char} from offset {start}")


def rewrite_launches(source: str) -> str:
    """`kernel<<<grid, block, shared, stream>>>(args);` becomes
    `[&](auto... a) { if (dn_emu_args_on_device("kernel", a...)) dn_emu_launch("kernel<<<>>>", [=] { kernel(a...); },
    grid, block, shared, stream); }(args);`: the arguments are evaluated and
    copied at the launch, as CUDA does, every pointer among them must point
    into device memory, and the kernel runs when its stream gets to it (at
    once unless DN_EMU_STREAMS defers it)."""
    out, pos = [], 0
    for match in re.finditer(r"(\b[A-Za-z_]\w*)\s*<<<", source):
        if match.start() < pos:
            continue
        config_end = source.index(">>>", match.end())
        args_start = source.index("(", config_end)
        args_end = _matching(source, args_start, "(", ")")
        out.append(source[pos:match.start()])
        out.append(f"[&](auto... dn_emu_args) {{ if (dn_emu_args_on_device(\"{match.group(1)}\", dn_emu_args...)) "
                   f"dn_emu_launch(\"{match.group(1)}<<<>>>\", [=] {{ {match.group(1)}(dn_emu_args...); }}, "
                   f"{source[match.end():config_end]}); }}{source[args_start:args_end]}")
        pos = args_end
    out.append(source[pos:])
    return "".join(out)


PRELUDE = """// emulated_build.py: CUDA launches and intrinsics on the CPU
#include <functional>
#include "cuda_runtime.h"
// a launch on a stream of another device than the current one, or with a
// configuration CUDA refuses, fails as it would on a GPU (cudaGetLastError)
static inline bool dn_emu_launch_ok(dim3 grid, dim3 block, cudaStream_t stream)
{
    unsigned threads = block.x * block.y * block.z;
    if (stream && stream->device != dn_emu_device) return false;
    return grid.x && grid.y && grid.z && threads && threads <= 1024 && grid.y <= 65535 && grid.z <= 65535;
}
template <typename Grid, typename Block>
static inline void dn_emu_launch(const char *name, std::function<void()> kernel, Grid grid, Block block, size_t = 0,
                                 cudaStream_t stream = nullptr)
{
    if (!dn_emu_launch_ok(dim3(grid), dim3(block), stream)) {
        dn_emu_fail(cudaErrorInvalidValue);
        return;
    }
    dn_emu_traffic_counters.launches++;
    dn_emu_enqueue(name, stream, [kernel = std::move(kernel), grid = dim3(grid), block = dim3(block)] {
        launch(grid, block, kernel);
    });
}
// a kernel given a pointer outside device memory (host memory, or a block
// already freed) fails its launch; on a GPU it would fault or read garbage
template <typename T>
static inline bool dn_emu_arg_on_device(const T &) { return true; }
template <typename T>
static inline bool dn_emu_arg_on_device(T *p) { return !p || dn_emu_on_device(p, 0); }
template <typename... Args>
static inline bool dn_emu_args_on_device(const char *kernel, const Args &...args)
{
    int index = 0, bad = -1;
    ((bad < 0 && !dn_emu_arg_on_device(args) ? bad = index : 0, index++), ...);
    if (bad < 0) return true;
    fprintf(stderr, "cuda_emu: %s: argument %d is not device memory\\n", kernel, bad);
    dn_emu_fail(cudaErrorInvalidValue);
    return false;
}
#define __fadd_rn(a, b) ((a) + (b))
#define __fmul_rn(a, b) ((a) * (b))
"""


def _run(command: list[str], cwd: Path | None = None) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:6])} ... failed:\n{result.stderr[-4000:]}")


def build(out: Path, jobs: int | None = None, cudnn: bool = False, nccl: bool = False,
          c_objects: Path | None = None) -> Path:
    """Builds OUT/libpydarknet.so (emulated CUDA; with cuDNN's convolutions
    from emu_runtime/cudnn_emu.cpp where `cudnn`, with NCCL's all-reduce
    from emu_runtime/nccl.h where `nccl`) and returns it.  The C objects go
    to `c_objects` (default OUT/c): builds may share them (no C file reads
    DN_CUDNN or DN_NCCL)."""
    jobs = jobs or os.cpu_count() or 2
    out.mkdir(parents=True, exist_ok=True)
    src = out / "src"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(ENGINE / "src", src)
    (out / "emu_prelude.hpp").write_text(PRELUDE)
    cu_files = sorted(src.rglob("*.cu"))
    for path in [*cu_files, *src.rglob("*.cuh")]:
        path.write_text(rewrite_launches(path.read_text()))
    c_objects = c_objects or out / "c"
    # the C files as a CUDA build compiles them (device.c then routes to the CUDA twins)
    defines = ["-DDN_CUDA=1", *(["-DDN_CUDNN=1"] if cudnn else []), *(["-DDN_NCCL=1"] if nccl else [])]
    _run(["make", "-C", str(ENGINE), f"-j{jobs}", f"BUILD={c_objects}", f"LIB={c_objects / 'c-only.so'}",
          f"CFLAGS={' '.join(defines)}", "CUDA=0"])
    objects = sorted(c_objects.rglob("*.o"))

    includes = [f"-I{EMU / 'emu_runtime'}", f"-I{EMU / 'fake_cuda'}", f"-I{EMU}", f"-I{src}",
                f"-I{ENGINE / 'include'}"]  # emu_runtime's cuda_runtime.h before fake_cuda's

    def compile_cpp(path: Path) -> Path:
        obj = out / "cpp" / (path.name + ".o")
        _run(["g++", "-std=c++20", "-O1", "-ffp-contract=off", "-fPIC", "-pthread", "-fvisibility=hidden", *defines,
              "-include", str(out / "emu_prelude.hpp"), *includes, "-x", "c++", "-c", str(path), "-o", str(obj)])
        return obj

    (out / "cpp").mkdir(exist_ok=True)
    sources = [*cu_files, EMU / "emu_runtime" / "emu_traffic.cpp",
               *([EMU / "emu_runtime" / "cudnn_emu.cpp"] if cudnn else [])]
    with ThreadPoolExecutor(jobs) as pool:
        objects += list(pool.map(compile_cpp, sources))
    lib = out / "libpydarknet.so"
    _run(["g++", "-shared", "-o", str(lib), *map(str, objects), "-lm", "-lpthread"])
    return lib


def package(out: Path, lib: Path) -> Path:
    """A copy of the installed pydarknet package with the emulated engine in
    it (its cffi module finds libpydarknet.so beside itself); returns the
    folder to put on PYTHONPATH."""
    import pydarknet

    pkg = out / "pkg"
    if pkg.exists():
        shutil.rmtree(pkg)
    shutil.copytree(Path(pydarknet.__file__).parent, pkg / "pydarknet",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(lib, pkg / "pydarknet" / "libpydarknet.so")
    return pkg


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a not in ("--cudnn", "--nccl")]
    folder = Path(args[0] if args else "/tmp/pydarknet-emulated")
    print(package(folder, build(folder, cudnn="--cudnn" in sys.argv, nccl="--nccl" in sys.argv)))
