"""The `pydarknet` command line (click)."""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import click

from .cli_convert import register_convert_command
from .cli_data import register_data_commands
from .errors import DarknetError

if TYPE_CHECKING:
    import numpy as np

    from .detect import Detection

    # detect's per-frame step: (frame, label for the text lines, JSON record) -> detections
    FrameDetector = Callable[[np.ndarray, str, dict[str, object]], list[Detection]]


class DarknetCommandGroup(click.Group):
    """Turns DarknetError, and the OS's refusals (a save folder under a file,
    no permission, a full disk), into a clean one-line message and exit
    status 1; warnings are one line each ("warning: ..."), not Python's
    file:line and source line."""

    def invoke(self, ctx: click.Context) -> object:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except DarknetError as exc:
                click.secho(f"error: {exc}", err=True, fg="red")
                ctx.exit(1)
            except OSError as exc:
                where = f" '{exc.filename}'" if exc.filename else ""
                click.secho(f"error: {exc.strerror or exc}{where}", err=True, fg="red")
                ctx.exit(1)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    click.secho(f"warning: {message}", err=True, fg="yellow")


def _unique_path(folder: Path, stem: str, suffix: str, taken: set[Path]) -> Path:
    """folder/stem+suffix, or stem-2, stem-3, ... where this run already
    wrote that name (dog.jpg and dog.png, or a/dog.jpg and b/dog.jpg)."""
    path, n = folder / f"{stem}{suffix}", 1
    while path in taken:
        n += 1
        path = folder / f"{stem}-{n}{suffix}"
    taken.add(path)
    return path


@click.group(cls=DarknetCommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pydarknet-engine", prog_name="pydarknet")
def main() -> None:
    """pydarknet: darknet's networks, files and numbers, from Python.

    Start with `pydarknet demo` (trains a small detector on generated data),
    or `pydarknet detect CFG WEIGHTS IMAGE` with a darknet model.
    """


@main.command()
@click.argument("cfg", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--width", type=int, default=0, help="Override the cfg's input width.")
@click.option("--height", type=int, default=0, help="Override the cfg's input height.")
def summary(cfg: Path, width: int, height: int) -> None:
    """Print darknet's layer table for CFG (filters, size, input -> output,
    BFLOPs) and the total BFLOPs."""
    from .network import Network
    from .summary import summary_lines

    with Network(cfg, width=width, height=height, threads=1) as net:
        for line in summary_lines(net):
            click.echo(line)


@main.command()
@click.argument("cfg", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("weights", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))  # or videos
@click.option("--names", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Class names (.names); default COCO's for 80 classes, VOC's for 20.")
@click.option("--thresh", default=.5, show_default=True, help="Confidence threshold.")
@click.option("--hier-thresh", default=.5, show_default=True, help="darknet's hier_thresh.")
@click.option("--nms", default=.45, show_default=True, help="NMS IoU threshold (0 = off).")
@click.option("--nms-kind", type=click.Choice(["sort", "obj"]), default="sort", show_default=True,
              help="darknet's do_nms_sort (the detect command) or do_nms_obj (darknet.py).")
@click.option("--no-letterbox", is_flag=True, help="Plain resize instead of letterbox.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per image per line instead of darknet's text.")
@click.option("--save-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("predictions"), show_default=True,
              help="Where annotated images (and videos, as .mp4) are written.")
@click.option("--no-save", is_flag=True, help="Do not write annotated images or videos.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="Worker threads (0 = all CPUs).")
@click.option("--device", default="cpu", show_default=True,
              help="cpu, or cuda:N on a CUDA build of pydarknet.")
def detect(cfg: Path, weights: Path, images: tuple[Path, ...], names: Path | None, thresh: float,
           hier_thresh: float, nms: float, nms_kind: str, no_letterbox: bool, as_json: bool,
           save_dir: Path, no_save: bool, threads: int, device: str) -> None:
    """Detect objects in IMAGES with a darknet model (CFG, WEIGHTS).

    Prints darknet's lines ("dog: 56%") per image, or JSON with --json:
    {"image", "detections": [{"class_id", "name", "confidence",
    "box": {"x", "y", "w", "h"}}]} with the box centre and size in pixels.
    A video file (.mp4, .avi, .mkv, ...) is read frame by frame (darknet's
    `detector demo` on a file): the same lines per frame (JSON records add
    "frame"), and the annotated video goes to the save folder as .mp4.
    """
    import cv2

    from .detect import Detector
    from .draw import draw_detections
    from .errors import DarknetIOError, ImageError
    from .video import is_video

    options = dict(thresh=thresh, hier_thresh=hier_thresh, nms=nms, letterbox=not no_letterbox,
                   nms_kind=nms_kind)

    with Detector(cfg, weights, names, threads=threads, device=device) as detector:
        def detect_frame(frame: np.ndarray, label: str, record: dict[str, object]) -> list[Detection]:
            start = time.perf_counter()
            found = detector.detect(frame, **options)  # type: ignore[arg-type]
            elapsed = time.perf_counter() - start
            if as_json:
                click.echo(json.dumps({**record, "detections": [d.to_dict() for d in found]}))
            else:
                click.echo(f"{label}: Predicted in {elapsed:f} seconds.")
                for d in found:
                    click.echo(f"{d.name}: {d.confidence * 100:.0f}%")
            return found

        if not no_save:
            save_dir.mkdir(parents=True, exist_ok=True)
        written: set[Path] = set()
        unreadable = 0
        for image in images:
            if is_video(image):
                out = None if no_save else _unique_path(save_dir, image.stem, ".mp4", written)
                _detect_video(image, detect_frame, detector.classes, out, as_json)
                continue
            frame = cv2.imread(str(image), cv2.IMREAD_COLOR)
            if frame is None:  # reported, and the other images still run
                click.secho(f"error: cannot decode image '{image}'", err=True, fg="red")
                unreadable += 1
                continue
            found = detect_frame(frame, str(image), {"image": str(image)})
            if not no_save:
                out = _unique_path(save_dir, image.stem, ".jpg", written)
                if not cv2.imwrite(str(out), draw_detections(frame, found, detector.classes)):
                    raise DarknetIOError(f"cannot write the annotated image '{out}'")
        if unreadable:
            raise ImageError(f"{unreadable} of {len(images)} images could not be decoded")


def _detect_video(video: Path, detect_frame: FrameDetector, classes: list[str], out: Path | None,
                  as_json: bool) -> None:
    """Every frame of `video` through `detect_frame`; the annotated frames to
    `out` (an .mp4) where given."""
    from contextlib import nullcontext

    from .draw import draw_detections
    from .errors import ImageError
    from .video import VideoReader, VideoWriter

    start = time.perf_counter()
    with VideoReader(video) as reader:
        writer = VideoWriter(out, reader.fps) if out else None
        frames = 0
        with writer if writer else nullcontext():
            for index, frame in enumerate(reader):
                found = detect_frame(frame, f"{video} frame {index}", {"image": str(video), "frame": index})
                if writer:
                    writer.write(draw_detections(frame, found, classes))
                frames += 1
    if not frames:
        raise ImageError(f"no frames could be read from video '{video}'")
    if not as_json:
        seconds = time.perf_counter() - start
        saved = f", saved {writer.path}" if writer else ""
        click.echo(f"{video}: {frames} frames, {frames / seconds:.1f} FPS{saved}")


@main.command("train")
@click.argument("cfg", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", "data", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The .data file (classes, train, names, backup).  Default: the .data "
                   "beside the cfg with the same name (yolov2.cfg -> yolov2.data).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Start from these weights (a checkpoint to resume, or a pretrained "
                   "backbone such as darknet53.conv.74: the layers the file holds).")
@click.option("--max-batches", type=click.IntRange(min=1), help="Override the cfg's max_batches.")
@click.option("--seed", type=int, help="Seed everything random: a CPU run is then repeatable.")
@click.option("--clear", is_flag=True,
              help="Reset the images-seen counter of --weights (fine-tuning a pretrained model: "
                   "its counter would otherwise already be past max_batches).")
@click.option("--backup", type=click.Path(file_okay=False, path_type=Path),
              help="Checkpoint folder (default: the .data's backup=, else ./backup).")
@click.option("--backup-every", type=click.IntRange(min=1), default=100, show_default=True,
              help="Write <cfg>.backup every N iterations.")
@click.option("--save-every", type=click.IntRange(min=1), default=10000, show_default=True,
              help="Write <cfg>_<N>.weights every N iterations (and every 100 below 1000).")
@click.option("--bad-labels", type=click.Choice(["error", "skip"]), default="error",
              show_default=True,
              help="Bad label lines or missing label files: stop before training, or leave "
                   "them out.")
@click.option("--no-augment", is_flag=True, help="Plain resize, no random augmentation.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="CPU threads (0 = all).")
@click.option("--loader-threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="Threads decoding and augmenting training images (0 = one per CPU, at "
                   "most 16, with --gpus; else 1).")
@click.option("--replicas", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Data-parallel training over N CPU replicas (each its own threads).")
@click.option("--gpus", help="Comma-separated GPU ordinals, one replica each (CUDA builds), "
                             "e.g. --gpus 0,1,2,3.")
@click.option("--sync", type=click.Choice(["darknet", "allreduce"]), default="darknet",
              show_default=True,
              help="darknet: per-replica updates, weights averaged every --sync-every "
                   "iterations, learning rate x N (darknet's -gpus).  allreduce: gradients "
                   "summed every iteration (the same as one replica with the whole batch).")
@click.option("--sync-every", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--sync-bn-stats/--no-sync-bn-stats", default=True, show_default=True,
              help="Also average the batch-norm rolling statistics (darknet keeps replica 0's).")
@click.option("--warmup-single", type=click.IntRange(min=0), default=0, show_default=True,
              help="Train the first K iterations on one replica, then copy it to all.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def train_command(cfg: Path, data: Path | None, weights: Path | None, max_batches: int | None,
                  seed: int | None, clear: bool, backup: Path | None, backup_every: int,
                  save_every: int, bad_labels: str, no_augment: bool, threads: int,
                  loader_threads: int, replicas: int, gpus: str | None, sync: str, sync_every: int,
                  sync_bn_stats: bool, warmup_single: int, progress: bool) -> None:
    """Train a detector (darknet's `detector train`).

    Prints darknet's line every iteration with --no-progress, else a live
    progress bar; writes checkpoints as darknet names them into the backup
    folder (<cfg>.backup, <cfg>_<iter>.weights, <cfg>_final.weights),
    a JSON-lines metrics log and a loss chart (PNG).  Ctrl-C saves
    <cfg>.backup and stops; `--weights <cfg>.backup` resumes where it stopped.
    """
    from .train import IterationStats, TrainOptions, train

    def report(stats: IterationStats) -> None:
        if not progress:  # darknet's order: the new size, the batch's wait, the loss layers' lines, the iteration's
            if stats.scale_drawn:
                click.echo(f"Resizing\n{stats.scale_drawn}")
            click.echo(f"Loaded: {stats.load_seconds:f} seconds")
            for s in stats.layers:
                click.echo(f"Region Avg IOU: {s.avg_iou:f}, Class: {s.avg_class:f}, Obj: "
                           f"{s.avg_obj:f}, No Obj: {s.avg_noobj:f}, Avg Recall: {s.recall:f},  "
                           f"count: {s.count}")
            click.echo(stats.darknet_line())
            if len(stats.replica_images_per_second) > 1:
                click.echo("replicas: " + ", ".join(
                    f"{v:.1f} img/s" for v in stats.replica_images_per_second)
                    + f"; sync {stats.sync_seconds * 1000:.1f} ms")

    gpu_list = _parse_gpus(gpus)
    n = len(gpu_list) if gpu_list else replicas
    if n > 1:
        click.echo(f"data-parallel training on {n} {'GPUs' if gpu_list else 'CPU replicas'}, "
                   f"sync={sync}" + (
                       f" every {sync_every} iterations: learning rate x {n} (darknet), seen "
                       f"grows by {sync_every} x {n - 1} x batch x subdivisions at each sync"
                       if sync == "darknet" else
                       f": gradients summed each iteration over {n} x batch x subdivisions "
                       f"images") + (f"; first {warmup_single} iterations on one replica"
                                     if warmup_single else ""))
    options = TrainOptions(cfg=cfg, data=data, weights=weights, max_batches=max_batches,
                           seed=seed, clear=clear, backup=backup, backup_every=backup_every,
                           save_every=save_every, bad_labels=bad_labels,  # type: ignore[arg-type]
                           augment=not no_augment, threads=threads,
                           loader_threads=loader_threads, progress=progress,
                           replicas=replicas, gpus=gpu_list, sync=sync,  # type: ignore[arg-type]
                           sync_every=sync_every, sync_bn_stats=sync_bn_stats,
                           warmup_single=warmup_single)
    result = train(options, on_iteration=report)
    if result.interrupted:
        click.echo(f"interrupted at iteration {result.iterations}: saved "
                   f"{result.checkpoints[-1]}; resume with --weights {result.checkpoints[-1]}")
    else:
        click.echo(f"done: {result.iterations} iterations, avg loss {result.avg_loss:.4f}, "
                   f"weights {result.final_weights}")


def _parse_gpus(gpus: str | None) -> tuple[int, ...] | None:
    """--gpus 0,1,2,3 -> (0, 1, 2, 3); a CPU build says how to train instead."""
    if not gpus:
        return None
    from ._ffi import lib
    from .errors import ArgumentError, UnsupportedError

    try:
        ordinals = tuple(int(g) for g in gpus.split(",") if g.strip())
    except ValueError:
        raise ArgumentError(f"--gpus takes comma-separated GPU numbers, got {gpus!r}") from None
    if not lib.dn_built_with_cuda():
        raise UnsupportedError(f"--gpus {gpus}: this pydarknet was built without CUDA "
                               f"(reinstall with PYDARKNET_CUDA=1 on a machine with nvcc); "
                               f"to train data-parallel on the CPU use --replicas "
                               f"{len(ordinals)}")
    return ordinals


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo"),
              show_default=True, help="Where the dataset, model and results go.")
@click.option("--quick", is_flag=True, help="A smaller run (a minute or two; for CI).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
def demo(out: Path, quick: bool, seed: int, threads: int, progress: bool) -> None:
    """Train a small YOLOv2-style detector on generated shapes, on the CPU.

    Generates a dataset (COCO format), converts it with the COCO converter,
    computes anchors, trains for a few minutes, reports mAP@0.5 on held-out
    images and saves annotated detections and the loss chart.
    """
    from .demo import run_demo

    result = run_demo(out, quick=quick, seed=seed, threads=threads, progress=progress,
                      say=click.echo)
    click.echo(f"cfg:          {result.cfg}")
    click.echo(f"data:         {result.data}")
    click.echo(f"weights:      {result.weights}")
    click.echo(f"loss chart:   {result.chart}")
    click.echo(f"metrics log:  {result.metrics}")
    click.echo(f"predictions:  {result.predictions}")
    click.echo(f"mAP@0.5 = {result.map50:.4f}")


register_data_commands(main)
register_convert_command(main)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
