#!/usr/bin/env python3
"""Data-parallel training on CPU replicas: images/s for 1 and 2 replicas in
both sync modes, the time a sync takes per iteration, and the bytes a sync
exchanges for yolov2 and yolov2-tiny (from the engine's actual parameter
buffers) with what that means for 4 and 8 GPUs over PCIe 4.0 and NVLink.

    python bench/parallel.py [--steps 6] [--size 224]

On this 2-core machine two replicas share the cores a single replica uses,
so images/s measures the overhead of the scheme, not a speed-up."""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import clean_blas_env  # noqa: E402

clean_blas_env()

import numpy as np  # noqa: E402

from pydarknet import Network  # noqa: E402
from pydarknet.replicas import Trainer  # noqa: E402
from _cfgs import yolov2_tiny_cfg  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def fake_batch(n: int, size: int, truth_size: int, rng: np.random.Generator):
    x = rng.random((n, 3, size, size), dtype=np.float32)
    truth = np.zeros((n, truth_size), np.float32)
    truth[:, :5] = [.5, .5, .3, .3, 1]
    return x, truth


def measure(cfg: Path, replicas: int, sync: str, steps: int, size: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    with Trainer(cfg, replicas=replicas, sync=sync, sync_every=1 if sync == "darknet" else 4,
                 seed=1, threads=max(1, 2 // replicas)) as trainer:
        truth_size = trainer.network(0).truth_size
        n = trainer.images_per_step
        batches = [fake_batch(n, size, truth_size, rng) for _ in range(steps + 1)]
        trainer.step(*batches[0])  # warm-up: allocations, first-touch
        sync_times, start = [], time.perf_counter()
        for x, truth in batches[1:]:
            result = trainer.step(x, truth)
            if result.synced:
                sync_times.append(result.sync_seconds)
        elapsed = time.perf_counter() - start
    return {"images_per_s": steps * n / elapsed,
            "sync_ms": 1000 * (sum(sync_times) / len(sync_times)) if sync_times else 0.0}


def buffer_bytes(name: str) -> dict[str, int]:
    """Bytes of one replica's buffers, from the engine."""
    cfg = REPO / "cfg" / name
    with Network(cfg, threads=1) as net:
        info = net.info
        return {"params": 4 * info.n_params, "stats": 4 * info.n_stats}


def ring_seconds(nbytes: int, gpus: int, gbytes_per_s: float) -> float:
    """A ring all-reduce moves 2 (n-1)/n of the buffer through each link."""
    return 2 * (gpus - 1) / gpus * nbytes / (gbytes_per_s * 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8, help="images per replica per step")
    args = parser.parse_args()
    print(f"# CPU replicas, yolov2-tiny at {args.size}x{args.size}, batch {args.batch} per "
          f"replica, {args.steps} steps")
    print("| replicas | sync | images/s | sync per iteration (ms) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = yolov2_tiny_cfg(Path(tmp), args.size, args.batch)
        for replicas, sync in ((1, "darknet"), (2, "darknet"), (2, "allreduce")):
            r = measure(cfg, replicas, sync, args.steps, args.size)
            mode = sync if replicas > 1 else "-"
            detail = "every iteration" if sync == "darknet" and replicas > 1 else ""
            print(f"| {replicas} | {mode}{' (sync every 1)' if detail else ''} | "
                  f"{r['images_per_s']:.1f} | {r['sync_ms']:.1f} |")
    print()
    print("# bytes exchanged per sync (one replica's buffers, float32)")
    print("| network | parameters | BN statistics | darknet sync (weights, + stats) | "
          "all-reduce (gradients) | 4 GPUs PCIe 4.0 | 8 GPUs PCIe 4.0 | 8 GPUs NVLink |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("yolov2.cfg", "yolov2-tiny.cfg"):
        b = buffer_bytes(name)
        darknet = b["params"] + b["stats"]
        allreduce = b["params"]
        # effective bus bandwidth: PCIe 4.0 x16 ~25 GB/s, NVLink (H100) ~300 GB/s per direction
        pcie4 = ring_seconds(allreduce, 4, 25) * 1000
        pcie8 = ring_seconds(allreduce, 8, 25) * 1000
        nvlink8 = ring_seconds(allreduce, 8, 300) * 1000
        print(f"| {name[:-4]} | {b['params'] / 2**20:.1f} MiB | {b['stats'] / 2**10:.1f} KiB | "
              f"{darknet / 2**20:.1f} MiB | {allreduce / 2**20:.1f} MiB | {pcie4:.1f} ms | "
              f"{pcie8:.1f} ms | {nvlink8:.2f} ms |")


if __name__ == "__main__":
    main()
