"""`Trainer`: a network trained over N replicas (CPU threads, or GPUs in a
CUDA build), darknet's way (`sync="darknet"`) or exactly (`"allreduce"`);
see the training section of darknet_src/include/darknet.h.  With one
replica it is plain darknet training."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Sequence

import numpy as np

from ._ffi import check, ffi, lib, path_arg
from ._views import HandleViews
from .errors import ArgumentError
from .network import Network, TrainStepResult

SyncMode = Literal["darknet", "allreduce"]
_SYNC = {"darknet": lib.DN_SYNC_DARKNET, "allreduce": lib.DN_SYNC_ALLREDUCE}


@dataclass(frozen=True)
class ReplicaStepResult:
    train: TrainStepResult          # loss (mean over replicas), rate, iteration, seen
    replicas_used: int              # 1 during the single-replica warm-up
    synced: bool
    sync_seconds: float
    replica_seconds: tuple[float, ...]


class Trainer:
    """N replicas of `cfg` with identical starting weights.

    Args:
        replicas: CPU replicas (each its own thread and thread pool).
        gpus: GPU ordinals (one replica each; CUDA builds only).
        sync: "darknet" (per-replica updates, weights averaged every
            `sync_every` steps, learning rate x N) or "allreduce" (gradients
            summed every step: the same weights as one replica with the
            whole batch).
        sync_bn_stats: also average the BN rolling statistics.
        warmup_single: first K steps on replica 0 alone.
        threads: per replica (0: CPUs / replicas).
    """

    def __init__(self, cfg: str | os.PathLike[str], *, replicas: int = 1,
                 gpus: Sequence[int] | None = None, sync: SyncMode = "darknet",
                 sync_every: int = 4, sync_bn_stats: bool = True, warmup_single: int = 0,
                 threads: int = 0, seed: int = 0) -> None:
        if sync not in _SYNC:
            raise ArgumentError(f"sync must be 'darknet' or 'allreduce', got {sync!r}")
        self.cfg_path = Path(cfg)
        params = ffi.new("dn_trainer_params *", lib.dn_trainer_default_params())
        params.replicas = len(gpus) if gpus else replicas
        self._gpus = ffi.new("int[]", list(gpus)) if gpus else ffi.NULL
        params.gpus = self._gpus
        params.n_gpus = len(gpus) if gpus else 0
        params.sync = _SYNC[sync]
        params.sync_every = sync_every
        params.sync_bn_stats = 1 if sync_bn_stats else 0
        params.warmup_single = warmup_single
        params.threads = threads
        params.seed = seed & 0xFFFFFFFFFFFFFFFF
        out = ffi.new("dn_trainer **")
        check(lib.dn_trainer_create(path_arg(cfg), params, out))
        self._handle: Any = ffi.gc(out[0], lib.dn_trainer_free)
        self._views = HandleViews(self._handle)
        self.sync = sync
        self.sync_every = sync_every
        self.replicas = int(lib.dn_trainer_replicas(self._handle))

    @property
    def handle(self) -> Any:
        if self._handle is None:
            raise ArgumentError("the trainer is closed")
        return self._handle

    def close(self) -> None:
        """Free the replicas and stop their threads (where arrays from a
        replica's params() or predict(copy=False) are alive, when the last of
        them is gone)."""
        if self._handle is not None:
            self._views.release()
            self._handle = None

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def network(self, index: int = 0) -> Network:
        """Replica `index` (valid while the trainer is open)."""
        handle = lib.dn_trainer_network(self.handle, index)
        if handle == ffi.NULL:
            raise ArgumentError(f"replica {index} out of range (0..{self.replicas - 1})")
        return Network._borrowed(handle, self, self.cfg_path)

    @property
    def images_per_step(self) -> int:
        return int(lib.dn_trainer_images_per_step(self.handle))

    def load_weights(self, path: str | os.PathLike[str]) -> int:
        """Weights for every replica; a partial file (pretrained backbone)
        loads the layers it holds.  Returns n: layers [0, n) hold the
        file's values or have none (as Network.load_weights)."""
        loaded = ffi.new("int *")
        check(lib.dn_trainer_load_weights(self.handle, path_arg(path), loaded))
        return int(loaded[0])

    def set_seen(self, seen: int) -> None:
        check(lib.dn_trainer_set_seen(self.handle, int(seen)))

    def set_max_batches(self, max_batches: int) -> None:
        check(lib.dn_trainer_set_max_batches(self.handle, max_batches))

    def resize(self, width: int, height: int) -> None:
        self._views.check_no_outputs("resize the replicas")
        check(lib.dn_trainer_resize(self.handle, width, height))

    def step(self, images: np.ndarray, truth: np.ndarray | None) -> ReplicaStepResult:
        """One iteration on images_per_step images (replica i takes the i-th share)."""
        n = self.images_per_step
        first = self.network(0)
        x, y, keep = first._training_arrays(images, truth, n)
        raw = ffi.new("dn_trainer_result *")
        check(lib.dn_trainer_step(self.handle, x, y, raw))
        del keep
        return ReplicaStepResult(
            train=TrainStepResult.from_c(ffi.addressof(raw, "train")),
            replicas_used=int(raw.replicas_used), synced=bool(raw.synced),
            sync_seconds=float(raw.sync_seconds),
            replica_seconds=tuple(float(raw.replica_seconds[r])
                                  for r in range(int(raw.replicas_used))))

    def save_weights(self, path: str | os.PathLike[str]) -> None:
        """Atomically write replica 0 (BN statistics averaged first with
        sync_bn_stats)."""
        check(lib.dn_trainer_save_weights(self.handle, path_arg(path)))
