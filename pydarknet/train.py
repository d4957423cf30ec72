"""Training: darknet's loop (train_detector) with progress you can watch.

- Batches come from `loader.BatchLoader` (darknet's augmentation, in
  parallel threads, prepared ahead; page-locked memory when training on
  GPUs); each iteration is one `Network.train_step` (darknet's
  train_network: `subdivisions` forward/backward passes, one SGD update).
- Checkpoints as darknet names them, written atomically (temporary file +
  rename): `<backup>/<cfg>.backup` every `backup_every` iterations,
  `<backup>/<cfg>_<iter>.weights` every `save_every` iterations and every
  100 below 1000 (darknet's rule), `<backup>/<cfg>_final.weights` at the end.
  `seen` is saved in every file, so training from a checkpoint continues
  the schedule (iteration number, learning rate) where it stopped.
- Ctrl-C saves `<cfg>.backup` and stops cleanly.  A NaN or infinite loss
  (or weights) stops with NumericError naming the iteration and layer, and
  nothing is written after it: the checkpoints on disk stay good.
- Progress: a tqdm bar (iteration, loss, average loss, learning rate,
  images/s, ETA), a JSON-lines metrics log, and a loss chart (PNG) redrawn
  during training.  `on_iteration` receives every iteration's statistics.

Where the data comes from when no .data is given: `<cfg without .cfg>.data`
beside the cfg (see `find_data_file`).
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

from .data import DataConfig, read_data_file
from .errors import ArgumentError, DataError, TrainingInterrupted
from .files import atomic_write
from .loader import Augmentation, BatchLoader, DetectionDataset, ScaleSchedule, default_workers
from .network import DetectionLayerStats, Network
from .replicas import Trainer

PathLike = str | os.PathLike[str]


@dataclass
class TrainOptions:
    cfg: Path
    data: Path | None = None
    weights: Path | None = None
    max_batches: int | None = None     # override the cfg's max_batches
    seed: int | None = None            # repeatable CPU runs
    clear: bool = False                # reset `seen` (fine-tuning a pretrained model)
    backup: Path | None = None         # default: the .data's backup=, else "backup"
    backup_every: int = 100            # <cfg>.backup
    save_every: int = 10000            # <cfg>_<iter>.weights (and every 100 below 1000)
    bad_labels: Literal["error", "skip"] = "error"
    augment: bool = True
    threads: int = 0
    loader_threads: int = 0            # image decoding/augmentation (0: see loader_threads())
    progress: bool = True
    metrics: bool = True               # <backup>/<cfg>.metrics.jsonl
    chart: bool = True                 # <backup>/<cfg>.loss.png
    chart_every: float = 30.0          # seconds between chart redraws
    early_saves: bool = True           # darknet's extra saves every 100 below 1000
    replicas: int = 1                  # data-parallel CPU replicas
    gpus: tuple[int, ...] | None = None  # one replica per GPU (CUDA builds)
    sync: Literal["darknet", "allreduce"] = "darknet"
    sync_every: int = 4
    sync_bn_stats: bool = True
    warmup_single: int = 0


def loader_threads(options: TrainOptions) -> int:
    """Sample threads of the training loader: as asked, else one per CPU (up
    to 16) to feed GPUs, and one on the CPU, where the network's own threads
    use every core and a step takes far longer than loading its images."""
    if options.loader_threads > 0:
        return options.loader_threads
    return default_workers() if options.gpus else 1


@dataclass(frozen=True)
class IterationStats:
    """One iteration, as darknet prints it (plus what a progress bar needs)."""

    iteration: int
    loss: float
    avg_loss: float
    learning_rate: float
    seconds: float
    images: int               # images seen (darknet's i*imgs)
    images_per_second: float
    width: int
    height: int
    layers: tuple[DetectionLayerStats, ...] = ()
    replica_images_per_second: tuple[float, ...] = ()
    sync_seconds: float = 0.0
    load_seconds: float = 0.0  # waiting for the batch (darknet's "Loaded: ... seconds")
    # multi-scale training drew this iteration's size, every 10 iterations and
    # at the first of a run (darknet then prints "Resizing" and the size,
    # drawn anew or not); 0 where it drew none
    scale_drawn: int = 0

    def darknet_line(self) -> str:
        return (f"{self.iteration}: {self.loss:f}, {self.avg_loss:f} avg, {self.learning_rate:f} "
                f"rate, {self.seconds:f} seconds, {self.images} images")


@dataclass
class TrainResult:
    final_weights: Path | None
    iterations: int
    avg_loss: float
    interrupted: bool = False
    checkpoints: list[Path] = field(default_factory=list)


def find_data_file(cfg: Path, data: Path | None) -> Path:
    """The .data to train with: the one given, else `<cfg stem>.data` beside
    the cfg (e.g. cfg/yolov2.cfg -> cfg/yolov2.data)."""
    if data is not None:
        return data
    candidate = cfg.with_suffix(".data")
    if candidate.exists():
        return candidate
    raise ArgumentError(f"no --data given and no {candidate} beside the cfg: pass "
                        f"--data D.data (classes, train, names, backup) or create {candidate}")


def checkpoint_name(cfg: Path, suffix: str) -> str:
    return f"{cfg.stem}{suffix}"


class LossChart:
    """Loss and average loss per iteration, redrawn to a PNG at most every
    `every` seconds (and at the end), written atomically."""

    def __init__(self, path: Path, every: float) -> None:
        self.path = path
        self.every = every
        self.last = 0.0
        self.iterations: list[int] = []
        self.loss: list[float] = []
        self.avg: list[float] = []

    def add(self, stats: IterationStats) -> None:
        self.iterations.append(stats.iteration)
        self.loss.append(stats.loss)
        self.avg.append(stats.avg_loss)
        if time.monotonic() - self.last >= self.every:
            self.draw()

    def draw(self) -> None:
        if not self.iterations:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
        ax.plot(self.iterations, self.loss, color="#bbbbbb", linewidth=.8, label="loss")
        ax.plot(self.iterations, self.avg, color="#1f77b4", linewidth=1.6, label="avg loss")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        finite = [v for v in self.loss if math.isfinite(v) and v > 0]
        if finite and max(finite) / max(min(finite), 1e-12) > 100:
            ax.set_yscale("log")
        ax.grid(alpha=.3)
        ax.legend()
        ax.set_title(f"{self.path.name.split('.')[0]}: avg loss {self.avg[-1]:.4f} at "
                     f"iteration {self.iterations[-1]}")
        fig.tight_layout()
        try:
            atomic_write(self.path, lambda tmp: fig.savefig(tmp, format="png"))
        finally:
            plt.close(fig)
        self.last = time.monotonic()


class _InterruptFlag:
    """SIGINT sets a flag; the loop saves and stops between iterations."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: object = None

    def __enter__(self) -> "_InterruptFlag":
        if threading_main():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.raised:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def train(options: TrainOptions,
          on_iteration: Callable[[IterationStats], None] | None = None) -> TrainResult:
    """Train a detector as darknet's `detector train` does (see module doc)."""
    cfg = Path(options.cfg)
    data_path = find_data_file(cfg, options.data)
    data = read_data_file(data_path)
    train_list = data.path_of("train")
    assert train_list is not None
    backup = Path(options.backup) if options.backup else (
        data.path_of("backup", required=False) or Path("backup"))
    backup.mkdir(parents=True, exist_ok=True)

    trainer = Trainer(cfg, replicas=options.replicas, gpus=options.gpus, sync=options.sync,
                      sync_every=options.sync_every, sync_bn_stats=options.sync_bn_stats,
                      warmup_single=options.warmup_single, threads=options.threads,
                      seed=options.seed if options.seed is not None
                      else int.from_bytes(os.urandom(4), "little"))
    try:
        return _train(options, cfg, data, train_list, backup, trainer, on_iteration)
    finally:
        trainer.close()


def _detection_classes(net: Network) -> int:
    classes = [l.classes for l in net.layers if l.type in ("region", "yolo")]
    if not classes:
        raise ArgumentError(f"{net.cfg_path} has no [region] or [yolo] layer: `train` trains "
                            f"detectors")
    return max(classes)


def _train(options: TrainOptions, cfg: Path, data: DataConfig, train_list: Path, backup: Path,
           trainer: Trainer, on_iteration: Callable[[IterationStats], None] | None) -> TrainResult:
    net = trainer.network(0)
    seed = options.seed if options.seed is not None else int.from_bytes(os.urandom(4), "little")
    if options.weights is not None:
        trainer.load_weights(options.weights)
    if options.clear:
        trainer.set_seen(0)
    if options.max_batches is not None:
        trainer.set_max_batches(options.max_batches)
    params = net.train_params()
    max_batches = int(params["max_batches"])
    if max_batches <= 0:
        raise ArgumentError(f"{cfg}: max_batches is {max_batches}: set max_batches= in [net] or "
                            f"pass --max-batches")
    classes = _detection_classes(net)
    if classes != data.classes:
        raise DataError(f"{data.where('classes')}: classes={data.classes} but {cfg} predicts "
                        f"{classes} classes")
    dataset = DetectionDataset(train_list, data.classes, bad_labels=options.bad_labels)
    augmentation = Augmentation(enabled=options.augment, jitter=float(params["jitter"]),
                                hue=float(params["hue"]), saturation=float(params["saturation"]),
                                exposure=float(params["exposure"]))
    info = net.info
    schedule = ScaleSchedule(bool(params["random"]) and options.augment, info.width, info.height,
                             seed, max_batches)
    start_batch = net.current_batch
    if start_batch >= max_batches:
        raise ArgumentError(f"{options.weights}: already trained to iteration {start_batch}, and max_batches "
                            f"is {max_batches}: nothing to do (raise --max-batches, or --clear to count "
                            f"from 0 again)")
    share = net.images_per_step
    loader = BatchLoader(dataset, share, net.truth_size, int(params["max_boxes"]), augmentation,
                         schedule, seed, first_step=start_batch, first_batch_num=start_batch,
                         replicas=trainer.replicas, warmup_steps=options.warmup_single,
                         workers=loader_threads(options), pinned=bool(options.gpus))
    metrics = (backup / checkpoint_name(cfg, ".metrics.jsonl")).open("a") if options.metrics else None
    chart = LossChart(backup / checkpoint_name(cfg, ".loss.png"), options.chart_every) \
        if options.chart else None
    result = TrainResult(final_weights=None, iterations=start_batch, avg_loss=-1)

    def save(suffix: str) -> Path:
        path = backup / checkpoint_name(cfg, suffix)
        trainer.save_weights(path)
        result.checkpoints.append(path)
        return path

    bar = _progress_bar(options.progress, start_batch, max_batches)
    avg_loss = -1.0
    last_saved = {".backup": start_batch}
    try:
        with _InterruptFlag() as interrupt:
            while net.current_batch < max_batches:
                waited = time.perf_counter()
                batch = loader.next()
                load_seconds = time.perf_counter() - waited
                if (batch.width, batch.height) != (net.info.width, net.info.height):
                    trainer.resize(batch.width, batch.height)
                start = time.perf_counter()
                step = trainer.step(batch.images, batch.truth)
                seconds = time.perf_counter() - start
                step_result = step.train
                avg_loss = step_result.loss if avg_loss < 0 else avg_loss * .9 + step_result.loss * .1
                iteration = step_result.batch_num
                stats = IterationStats(
                    iteration=iteration, loss=step_result.loss, avg_loss=avg_loss,
                    learning_rate=step_result.learning_rate, seconds=seconds,
                    images=step_result.seen, images_per_second=len(batch.images) / seconds,
                    width=batch.width, height=batch.height, layers=step_result.layers,
                    replica_images_per_second=tuple(share / s if s > 0 else 0.0
                                                    for s in step.replica_seconds),
                    sync_seconds=step.sync_seconds, load_seconds=load_seconds,
                    scale_drawn=batch.width if schedule.draws_at(batch.step, start_batch) else 0)
                result.iterations, result.avg_loss = iteration, avg_loss
                if on_iteration:
                    on_iteration(stats)
                if metrics:
                    metrics.write(json.dumps({**asdict(stats), "layers": [asdict(s) for s in stats.layers]}) + "\n")
                    metrics.flush()
                if chart:
                    chart.add(stats)
                if bar is not None:
                    bar.n = min(iteration, max_batches)
                    extra = ""
                    if len(stats.replica_images_per_second) > 1:
                        extra = " [" + " ".join(f"{v:.0f}" for v in stats.replica_images_per_second) \
                                   + f" img/s, sync {stats.sync_seconds * 1000:.0f} ms]"
                    if stats.load_seconds > .05 * stats.seconds:  # the loader falls behind
                        extra += f" data wait {stats.load_seconds * 1000:.0f} ms"
                    bar.set_postfix_str(f"loss {stats.loss:.3f} avg {avg_loss:.3f} lr "
                                        f"{stats.learning_rate:.2g} {stats.images_per_second:.1f} img/s"
                                        f" {batch.width}x{batch.height}{extra}", refresh=False)
                    bar.refresh()
                # darknet's rules, on iteration numbers that may jump (multi-replica syncs)
                if iteration // options.backup_every > last_saved[".backup"] // options.backup_every:
                    save(".backup")
                    last_saved[".backup"] = iteration
                if iteration % options.save_every == 0 or (
                        options.early_saves and iteration < 1000 and iteration % 100 == 0):
                    save(f"_{iteration}.weights")
                if interrupt.raised:
                    save(".backup")
                    result.interrupted = True
                    break
        if not result.interrupted:
            result.final_weights = save("_final.weights")
    finally:
        loader.close()
        if bar is not None:
            bar.close()
        if metrics:
            metrics.close()
        if chart:
            chart.draw()
    return result


def _progress_bar(enabled: bool, start: int, total: int):  # type: ignore[no-untyped-def]
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="it", desc="train", dynamic_ncols=True,
                file=sys.stderr, disable=not sys.stderr.isatty() and os.environ.get("PYDARKNET_PROGRESS") != "1")
