"""Benchmark: training batches per second, pydarknet's loader beside darknet's.

    PYTHONPATH=. python bench/loader.py [--size 416] [--batch 64] [--rounds 4]

Both sides decode JPEGs (the sample photos of ../shared/darknet/data, copied
into a temporary images/ + labels/ folder) and apply darknet's detection
augmentation (jitter .2, hue .1, saturation 1.5, exposure 1.5, flip) into a
batch of `--batch` images at `--size`, with nothing cached between batches:
- pydarknet: `BatchLoader` with N sample threads (`--loader-threads`);
- darknet (Debian's libdarknet, through ctypes): `load_data_detection` on
  N threads of batch/N images each, which is what darknet's `load_data`
  threads do while a GPU trains.
Prints images/s for 1 thread and for every CPU, and the ratio of times
(pydarknet's over darknet's: <= 1.0, pydarknet is at least as fast).
"""
from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._env import clean_blas_env  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "darknet" / "data"
LIBDARKNET = Path("/usr/lib/darknet/libdarknet.so")
JITTER, HUE, SATURATION, EXPOSURE, MAX_BOXES, CLASSES = .2, .1, 1.5, 1.5, 30, 80


class _Matrix(ctypes.Structure):
    _fields_ = [("rows", ctypes.c_int), ("cols", ctypes.c_int),
                ("vals", ctypes.POINTER(ctypes.POINTER(ctypes.c_float)))]


class _Data(ctypes.Structure):
    _fields_ = [("w", ctypes.c_int), ("h", ctypes.c_int), ("X", _Matrix), ("y", _Matrix),
                ("shallow", ctypes.c_int), ("num_boxes", ctypes.POINTER(ctypes.c_int)),
                ("boxes", ctypes.c_void_p)]


def make_dataset(folder: Path, n_images: int) -> list[Path]:
    """`n_images` JPEGs (copies of the sample photos) with 1-4 boxes each."""
    import numpy as np

    photos = sorted(SHARED.glob("*.jpg"))
    if not photos:
        sys.exit(f"needs the sample photos in {SHARED}")
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for k in range(n_images):
        path = folder / "images" / f"{k:04d}.jpg"
        shutil.copyfile(photos[k % len(photos)], path)
        boxes = rng.uniform(.2, .8, (int(rng.integers(1, 5)), 4)) * [1, 1, .4, .4]
        (folder / "labels" / f"{k:04d}.txt").write_text("".join(
            f"{int(rng.integers(0, CLASSES))} {x:.4f} {y:.4f} {w:.4f} {h:.4f}\n" for x, y, w, h in boxes))
        paths.append(path)
    return paths


def time_ours(paths: list[Path], listing: Path, size: int, batch: int, rounds: int,
              threads: int) -> float:
    from pydarknet.loader import Augmentation, BatchLoader, DetectionDataset, ScaleSchedule

    dataset = DetectionDataset(listing, CLASSES, cache_bytes=0)  # decode every time
    loader = BatchLoader(dataset, batch, 5 * MAX_BOXES, MAX_BOXES,
                         Augmentation(jitter=JITTER, hue=HUE, saturation=SATURATION, exposure=EXPOSURE),
                         ScaleSchedule(False, size, size, 0, 10**6), 0, prefetch=1, workers=threads)
    try:
        loader.next()  # warm up (threads, OpenCV)
        start = time.perf_counter()
        for _ in range(rounds):
            loader.next()
        return rounds * batch / (time.perf_counter() - start)
    finally:
        loader.close()


def time_darknet(paths: list[Path], size: int, batch: int, rounds: int, threads: int) -> float:
    lib = ctypes.CDLL(str(LIBDARKNET))
    lib.load_data_detection.restype = _Data
    lib.load_data_detection.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                        ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                        ctypes.c_float, ctypes.c_float, ctypes.c_float, ctypes.c_float]
    lib.free_data.argtypes = [_Data]
    c_paths = (ctypes.c_char_p * len(paths))(*[str(p).encode() for p in paths])
    shares = [batch // threads + (1 if k < batch % threads else 0) for k in range(threads)]

    def load(n: int) -> None:
        data = lib.load_data_detection(n, c_paths, len(paths), size, size, MAX_BOXES, CLASSES,
                                       JITTER, HUE, SATURATION, EXPOSURE)
        lib.free_data(data)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(load, shares))  # warm up
        start = time.perf_counter()
        for _ in range(rounds):
            list(pool.map(load, shares))
        return rounds * batch / (time.perf_counter() - start)


def main() -> None:
    clean_blas_env()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    if not LIBDARKNET.exists():
        sys.exit(f"needs pjreddie darknet (apt-get install darknet): {LIBDARKNET}")
    cpus = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_dataset(folder, 256)
        listing = folder / "train.txt"
        listing.write_text("".join(f"{p}\n" for p in paths))
        print(f"{args.batch} images per batch at {args.size}x{args.size}, JPEG decode + darknet's "
              f"augmentation, {cpus} CPUs")
        print(f"{'threads':>8} {'pydarknet img/s':>16} {'darknet img/s':>14} {'time ratio':>11}")
        for threads in sorted({1, cpus}):
            ours = time_ours(paths, listing, args.size, args.batch, args.rounds, threads)
            theirs = time_darknet(paths, args.size, args.batch, args.rounds, threads)
            print(f"{threads:>8} {ours:>16.1f} {theirs:>14.1f} {theirs / ours:>11.2f}", flush=True)


if __name__ == "__main__":
    main()
