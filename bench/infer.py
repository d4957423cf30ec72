#!/usr/bin/env python3
"""Forward latency at 416x416, batch 1, pydarknet vs OpenCV DNN in the same
process, on yolov2-tiny, yolov2 (random He-scaled weights written by
pydarknet) and yolov3-tiny (the real COCO weights from ../shared/models when
present).  Prints milliseconds, the ratio (pydarknet / OpenCV: <= 1.0 means
pydarknet is at least as fast) and pydarknet's achieved GFLOP/s.

    python bench/infer.py [--threads 2] [--repeat 20] [--markdown]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import clean_blas_env  # noqa: E402

clean_blas_env()

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import pydarknet  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def cfg_at_416(name: str, folder: Path) -> Path:
    """The repo's cfg (or darknet's from ../shared) at 416x416, batch 1."""
    source = REPO / "cfg" / name
    if not source.exists():
        source = SHARED / "darknet" / "cfg" / name
    lines = []
    section = ""
    for line in source.read_text().splitlines():
        key = line.split("=")[0].strip()
        if line.strip().startswith("["):
            section = line.strip()
        if section in ("[net]", "[network]") and key in ("width", "height"):
            line = f"{key}=416"
        if section in ("[net]", "[network]") and key in ("batch", "subdivisions"):
            line = f"{key}=1"
        lines.append(line)
    out = folder / name
    out.write_text("\n".join(lines) + "\n")
    return out


def time_calls(fn, repeat: int) -> float:
    fn()
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def bench(name: str, folder: Path, threads: int, repeat: int) -> dict[str, float | str]:
    cfg = cfg_at_416(name, folder)
    weights = folder / (Path(name).stem + ".weights")
    real = SHARED / "models" / "yolov3-tiny.weights"
    net = pydarknet.Network(cfg, threads=threads)
    if name == "yolov3-tiny.cfg" and real.exists():
        net.load_weights(real)
        kind = "real"
    else:
        net.randomize(1)
        net.save_weights(weights)
        kind = "random"
    if kind == "real":
        weights = real
    x = np.random.default_rng(0).random(net.input_shape, dtype=np.float32)
    ours = time_calls(lambda: net.predict(x, copy=False), repeat)
    cv2.setNumThreads(threads)
    cvnet = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    cvnet.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    names = cvnet.getUnconnectedOutLayersNames()

    def opencv() -> None:
        cvnet.setInput(x)
        cvnet.forward(names)

    theirs = time_calls(opencv, repeat)
    bflops = net.info.bflops
    net.close()
    return {"network": Path(name).stem, "weights": kind, "pydarknet_ms": ours,
            "opencv_ms": theirs, "ratio": ours / theirs, "gflops": bflops / (ours / 1000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--networks", nargs="*",
                        default=["yolov2-tiny.cfg", "yolov2.cfg", "yolov3-tiny.cfg"])
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.networks:
            rows.append(bench(name, Path(tmp), args.threads, args.repeat))
    print(f"# inference, 416x416, batch 1, {args.threads} threads, OpenCV {cv2.__version__}, "
          f"GEMM kernel {pydarknet._ffi.text(pydarknet._ffi.lib.dn_cpu_kernel())}")
    if args.markdown:
        print("| network | weights | pydarknet ms | OpenCV DNN ms | ratio | pydarknet GFLOP/s |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['network']} | {r['weights']} | {r['pydarknet_ms']:.1f} | "
                  f"{r['opencv_ms']:.1f} | {r['ratio']:.2f} | {r['gflops']:.0f} |")
    else:
        for r in rows:
            print(f"{r['network']:12s} pydarknet {r['pydarknet_ms']:7.1f} ms  OpenCV "
                  f"{r['opencv_ms']:7.1f} ms  ratio {r['ratio']:.2f}  {r['gflops']:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
