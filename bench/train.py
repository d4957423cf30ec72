#!/usr/bin/env python3
"""Training throughput on the CPU: images/s of yolov2-tiny at 416x416, batch
16, pydarknet against PyTorch running the same architecture, in one run.

The PyTorch side is yolov2-tiny built from native modules (Conv2d without
bias + BatchNorm2d + LeakyReLU(0.1), MaxPool2d with darknet's padding for
the size-2 stride-1 pool, a linear 1x1 head) in training mode with an SGD
step (momentum .9, weight decay .0005) and a mean-squared loss on the head's
output: the fastest way PyTorch trains that network.  pydarknet runs
darknet's training step (forward, region loss, backward, update).

    python bench/train.py [--threads 2] [--steps 3] [--size 416] [--batch 16]
"""
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

from pydarknet.replicas import Trainer  # noqa: E402
from _cfgs import yolov2_tiny_cfg  # noqa: E402

def pydarknet_rate(cfg: Path, threads: int, steps: int, size: int, batch: int) -> float:
    rng = np.random.default_rng(0)
    with Trainer(cfg, threads=threads, seed=1) as trainer:
        truth_size = trainer.network(0).truth_size
        x = rng.random((batch, 3, size, size), dtype=np.float32)
        truth = np.zeros((batch, truth_size), np.float32)
        truth[:, :5] = [.5, .5, .3, .3, 1]
        trainer.step(x, truth)  # first step: allocations and first touch
        start = time.perf_counter()
        for _ in range(steps):
            trainer.step(x, truth)
        return steps * batch / (time.perf_counter() - start)


def torch_rate(threads: int, steps: int, size: int, batch: int) -> float:
    import torch
    from torch import nn

    torch.set_num_threads(threads)

    def conv(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
                nn.LeakyReLU(.1)]

    layers: list[nn.Module] = []
    channels = [3, 16, 32, 64, 128, 256, 512]
    for c_in, c_out in zip(channels, channels[1:]):
        layers += conv(c_in, c_out)
        layers.append(nn.MaxPool2d(2, 2))
    layers[-1] = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(2, 1))  # size=2 stride=1
    layers += conv(512, 1024) + conv(1024, 512) + [nn.Conv2d(512, 425, 1)]
    model = nn.Sequential(*layers).train()
    optim = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=.9, weight_decay=5e-4)
    x = torch.rand(batch, 3, size, size)
    target = torch.zeros(batch, 425, size // 32, size // 32)

    def step() -> None:
        optim.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        optim.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = yolov2_tiny_cfg(Path(tmp), args.size, args.batch)
        ours = pydarknet_rate(cfg, args.threads, args.steps, args.size, args.batch)
    try:
        import torch
    except ImportError:
        print("torch is not installed (pip install '.[torch]'): PyTorch side skipped")
        print(f"pydarknet {ours:.2f} images/s")
        return
    theirs = torch_rate(args.threads, args.steps, args.size, args.batch)
    print(f"# training yolov2-tiny {args.size}x{args.size}, batch {args.batch}, "
          f"{args.threads} threads, torch {torch.__version__}")
    print("| pydarknet images/s | PyTorch images/s | ratio (pydarknet time / PyTorch time) |")
    print("|---|---|---|")
    print(f"| {ours:.2f} | {theirs:.2f} | {theirs / ours:.2f} |")


if __name__ == "__main__":
    main()
