#!/usr/bin/env python3
"""Benchmark pydarknet's CPU GEMM (darknet_src/src/gemm.c) against numpy's
matmul (OpenBLAS) in the same run, on the conv shapes of YOLO at 416x416
(C[filters][out_h*out_w] = W[filters][in_c*k*k] * im2col) and on the
transposed shapes training uses.

    python3 bench/gemm.py                 # 1 and 2 threads, every shape
    python3 bench/gemm.py --threads 1 4   # other thread counts
    python3 bench/gemm.py --quick         # fewer repetitions
    python3 bench/gemm.py --kernel generic  # force a kernel (PYDARKNET_GEMM)
    python3 bench/gemm.py --only 13x13      # the shapes whose label has "13x13"

The GEMM sources are compiled here with the library's flags (no -march) into
a temporary shared object called through ctypes.  OpenBLAS reads its
settings at load time, so each thread count runs in a child process with
OPENBLAS_NUM_THREADS set and OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed
(forcing the Haswell core type halves OpenBLAS's speed on Zen)."""
import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "darknet_src", "src")
INCLUDE = os.path.join(ROOT, "darknet_src", "include")
LIB_SOURCES = ["pool.c", "error.c", "util.c", "activations.c"]
CFLAGS = ["-std=gnu11", "-O3", "-fPIC", "-pthread", "-fno-math-errno", "-ffp-contract=off"]
IDLE_PAUSE = 0.2  # seconds

# (label, M, N, K, trans_a, trans_b)
SHAPES = [
    ("conv 416x416x3 -> 16", 16, 173056, 27, 0, 0),
    ("conv 208x208x16 -> 32", 32, 43264, 144, 0, 0),
    ("conv 104x104x32 -> 64", 64, 10816, 288, 0, 0),
    ("conv 52x52x64 -> 128", 128, 2704, 576, 0, 0),
    ("conv 26x26x128 -> 256", 256, 676, 1152, 0, 0),
    ("conv 13x13x256 -> 512", 512, 169, 2304, 0, 0),
    ("conv 13x13x512 -> 1024", 1024, 169, 4608, 0, 0),
    ("conv 13x13x1024 -> 1024", 1024, 169, 9216, 0, 0),
    ("conv 1x1 1024 -> 125", 125, 169, 1024, 0, 0),
    ("conv 1x1 512 -> 255", 255, 169, 512, 0, 0),
    ("conv 1x1 256 -> 128", 128, 169, 256, 0, 0),
    ("conv 26x26 384 -> 256", 256, 676, 3456, 0, 0),
    ("conv 1x1 26x26 512 -> 64", 64, 676, 512, 0, 0),
    ("dW 104x104 (0,1)", 64, 288, 10816, 0, 1),
    ("dW 26x26 (0,1)", 256, 1152, 676, 0, 1),
    ("dW 13x13 (0,1)", 1024, 4608, 169, 0, 1),
    ("dX 104x104 (1,0)", 288, 10816, 64, 1, 0),
    ("dX 26x26 (1,0)", 1152, 676, 256, 1, 0),
    ("dX 13x13 (1,0)", 4608, 169, 1024, 1, 0),
    ("connected b=64 (0,1)", 64, 1024, 4096, 0, 1),
    ("both transposed (1,1)", 512, 676, 1152, 1, 1),
]


def clean_env(threads=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    if threads is not None:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
            env[var] = str(threads)
    return env


def build_library(out_dir):
    sources = sorted(os.path.join(SRC, f) for f in os.listdir(SRC)
                     if f.startswith("gemm") and f.endswith(".c"))
    sources += [os.path.join(SRC, f) for f in LIB_SOURCES]
    lib = os.path.join(out_dir, "libgemm_bench.so")
    cmd = ["gcc", *CFLAGS, "-shared", "-I" + INCLUDE, "-I" + SRC, *sources, "-o", lib, "-lm"]
    subprocess.run(cmd, check=True)
    return lib


def load_library(path):
    lib = ctypes.CDLL(path)
    f32p = ctypes.c_void_p
    lib.dn_gemm.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                            ctypes.c_int, ctypes.c_int, ctypes.c_float, f32p, ctypes.c_int,
                            f32p, ctypes.c_int, ctypes.c_float, f32p, ctypes.c_int]
    lib.dn_gemm.restype = None
    lib.dn_pool_create.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)]
    lib.dn_pool_create.restype = ctypes.c_int
    lib.dn_pool_free.argtypes = [ctypes.c_void_p]
    lib.dn_gemm_kernel_name.restype = ctypes.c_char_p
    return lib


def best_time(fn, min_seconds, min_reps=2):
    """The fastest of repeated calls, after one warm-up call."""
    fn()
    best, total, reps = float("inf"), 0.0, 0
    while reps < min_reps or total < min_seconds:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, total, reps = min(best, dt), total + dt, reps + 1
    return best


def compare(call_ours, call_numpy, min_seconds, rounds=3):
    """Best times of both, measured in alternating rounds (so that a busy
    moment on the machine hits both alike), with a pause before each round
    so that the other library's idle threads have stopped spinning (OpenBLAS
    spins for about 0.1 s after a call, our pool for well under 1 ms)."""
    t_ours = t_numpy = float("inf")
    for _ in range(rounds):
        time.sleep(IDLE_PAUSE)
        t_ours = min(t_ours, best_time(call_ours, min_seconds / rounds))
        time.sleep(IDLE_PAUSE)
        t_numpy = min(t_numpy, best_time(call_numpy, min_seconds / rounds))
    return t_ours, t_numpy


def run_child(args):
    """One thread count: time every shape, print one JSON line per shape."""
    import numpy as np

    lib = load_library(args.lib)
    pool = ctypes.c_void_p()
    if lib.dn_pool_create(args.child, ctypes.byref(pool)) != 0:
        raise SystemExit("could not create a pool")
    rng = np.random.default_rng(0)
    min_seconds = 0.3 if args.quick else 1.2
    for label, M, N, K, ta, tb in SHAPES:
        a = rng.uniform(-1, 1, (K, M) if ta else (M, K)).astype(np.float32)
        b = rng.uniform(-1, 1, (N, K) if tb else (K, N)).astype(np.float32)
        op_a, op_b = (a.T if ta else a), (b.T if tb else b)
        ours = np.empty((M, N), np.float32)
        theirs = np.empty((M, N), np.float32)
        lda, ldb = a.shape[1], b.shape[1]

        def call_ours():
            lib.dn_gemm(pool, ta, tb, M, N, K, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb,
                        0.0, ours.ctypes.data, N)

        def call_numpy():
            np.matmul(op_a, op_b, out=theirs)

        t_ours, t_numpy = compare(call_ours, call_numpy, min_seconds)
        scale = float(np.abs(theirs).max()) or 1.0
        diff = float(np.abs(ours - theirs).max()) / scale
        flops = 2.0 * M * N * K
        print(json.dumps({"label": label, "shape": [M, N, K, ta, tb],
                          "ours": flops / t_ours / 1e9, "numpy": flops / t_numpy / 1e9,
                          "diff": diff}), flush=True)
    lib.dn_pool_free(pool)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--kernel", choices=["generic", "avx2", "avx512"])
    parser.add_argument("--only", metavar="TEXT", help="only the shapes whose label contains TEXT")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--lib", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        SHAPES[:] = [shape for shape in SHAPES if args.only in shape[0]]
    if args.child:
        return run_child(args)

    with tempfile.TemporaryDirectory() as tmp:
        lib_path = build_library(tmp)
        env_kernel = {"PYDARKNET_GEMM": args.kernel} if args.kernel else {}
        kernel = subprocess.run(
            [sys.executable, "-c",
             "import ctypes,sys; l=ctypes.CDLL(sys.argv[1]); "
             "l.dn_gemm_kernel_name.restype=ctypes.c_char_p; "
             "print(l.dn_gemm_kernel_name().decode())", lib_path],
            env={**clean_env(), **env_kernel}, capture_output=True, text=True, check=True)
        print(f"kernel: {kernel.stdout.strip()}   (GFLOP/s, best of repeated runs; "
              f"ratio = ours / numpy-OpenBLAS)")
        results = {}
        for threads in args.threads:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", str(threads),
                   "--lib", lib_path] + (["--quick"] if args.quick else []) + \
                  (["--only", args.only] if args.only else [])
            out = subprocess.run(cmd, env={**clean_env(threads), **env_kernel},
                                 capture_output=True, text=True, check=True)
            results[threads] = [json.loads(line) for line in out.stdout.splitlines()
                                if line.startswith("{")]

    header = f"{'shape':26s} {'M':>5s} {'N':>6s} {'K':>6s} {'ta':>2s} {'tb':>2s}"
    for threads in args.threads:
        header += f" | {threads}T ours  numpy  ratio"
    print(header)
    print("-" * len(header))
    worst = 0.0
    for row, (label, M, N, K, ta, tb) in enumerate(SHAPES):
        line = f"{label:26s} {M:5d} {N:6d} {K:6d} {ta:2d} {tb:2d}"
        for threads in args.threads:
            r = results[threads][row]
            line += f" | {r['ours']:8.1f} {r['numpy']:6.1f} {r['ours'] / r['numpy']:6.2f}"
            worst = max(worst, r["diff"])
        print(line)
    for threads in args.threads:
        rs = results[threads]
        ratio = sum(r["ours"] / r["numpy"] for r in rs) / len(rs)
        print(f"{threads} thread(s): mean ratio {ratio:.2f}, "
              f"min {min(r['ours'] / r['numpy'] for r in rs):.2f}")
    print(f"largest difference from numpy, relative to max|C|: {worst:.2e}")


if __name__ == "__main__":
    main()
