"""Detection training data: darknet's image lists and labels, augmented in C
by darknet's recipe, assembled into batches by a background thread.

Images are decoded with OpenCV and augmented by the engine
(`dn_detection_sample`), both releasing the GIL, on a pool of sample
threads, so the next batch is prepared while the network trains on the
current one, at the speed of all the CPUs.  Everything random comes from
the run's seed: which images (drawn with replacement, as darknet's
get_random_paths), each sample's augmentation (a seed per sample), and the
multi-scale sizes, so a seeded run is repeatable whatever the thread timing.
"""
from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ._ffi import check, ffi, lib
from .data import Problem, parse_labels, read_image_list
from .detect import _frame_struct
from .errors import DarknetIOError, DataError, ImageError
from .hostmem import HostBufferPool

BadLabels = Literal["error", "skip"]
_SEED_MIX = 0x9E3779B97F4A7C15


@dataclass
class Sample:
    image: Path
    labels: np.ndarray  # (n, 5): class, x, y, w, h


class DetectionDataset:
    """The images of a darknet list and their labels, checked up front.

    bad_labels="error" (default) raises DataError listing every problem
    (file and line) before training starts; "skip" leaves bad lines (and
    images whose label file is missing) out and keeps the count in
    `skipped`."""

    def __init__(self, list_file: str | os.PathLike[str], classes: int, *,
                 bad_labels: BadLabels = "error", cache_bytes: int = 1 << 30) -> None:
        entries = read_image_list(list_file)
        if not entries:
            raise DataError(f"{list_file}: the image list is empty")
        self.samples: list[Sample] = []
        self.problems: list[Problem] = []
        for entry in entries:
            if entry.label is None:
                self.problems.append(Problem(Path(list_file), entry.line,
                                             f"'{entry.text}' has no image extension"))
                continue
            try:
                text = entry.label.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                self.problems.append(Problem(entry.label, 0, f"label file missing or unreadable "
                                                             f"(for {entry.image})"))
                continue
            labels, problems = parse_labels(text, entry.label, classes)
            self.problems.extend(problems)
            self.samples.append(Sample(entry.image, labels))
        if self.problems and bad_labels == "error":
            shown = "\n".join(str(p) for p in self.problems[:20])
            more = f"\n... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
            raise DataError(f"{len(self.problems)} problem(s) in the training labels "
                            f"(use --bad-labels skip to leave them out):\n{shown}{more}")
        if not self.samples:
            raise DataError(f"{list_file}: no usable images")
        self.skipped = len(self.problems)
        self._cache: dict[int, np.ndarray] = {}
        self._cache_left = cache_bytes
        self._cache_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.samples)

    def frame(self, index: int) -> np.ndarray:
        """Decoded BGR pixels of image `index` (kept in memory while the
        cache budget lasts: small datasets are decoded once)."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        import cv2

        path = self.samples[index].image
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            if not path.exists():
                raise DarknetIOError(f"training image not found: {path}")
            raise ImageError(f"cannot decode training image: {path}")
        with self._cache_lock:
            if index not in self._cache and frame.nbytes <= self._cache_left:
                self._cache[index] = frame
                self._cache_left -= frame.nbytes
        return frame


@dataclass(frozen=True)
class Augmentation:
    """darknet's augmentation settings (from [net] and the last layer)."""

    enabled: bool = True
    jitter: float = .2
    hue: float = 0.
    saturation: float = 1.
    exposure: float = 1.
    flip: bool = True


@dataclass
class Batch:
    images: np.ndarray  # (n, 3, h, w) float32
    truth: np.ndarray   # (n, truth_size) float32
    width: int
    height: int
    step: int


def default_workers() -> int:
    """Sample threads of a loader: one per CPU this process may use, at
    most 16 (decoding and augmentation release the GIL)."""
    return max(1, min(16, len(os.sched_getaffinity(0))))


def sample_seed(seed: int, sample_index: int) -> int:
    """A well-mixed 64-bit seed for one sample."""
    return (seed * _SEED_MIX + sample_index * 0xBF58476D1CE4E5B9 + 1) & 0xFFFFFFFFFFFFFFFF


class ScaleSchedule:
    """darknet's multi-scale training: every 10 steps a new square size
    (10..19) * 32 = 320..608, and 608 for the last 200 batches; a fixed size
    when random=0.  Deterministic for a seed."""

    def __init__(self, random: bool, width: int, height: int, seed: int, max_batches: int) -> None:
        self.random = random
        self.base = (width, height)
        self.max_batches = max_batches
        self._rng = np.random.default_rng(seed ^ 0x5EED)
        self._sizes: list[tuple[int, int]] = []

    def largest(self) -> tuple[int, int]:
        """The largest input size the schedule can give."""
        return (max(self.base[0], 608), max(self.base[1], 608)) if self.random else self.base

    def draws_at(self, step: int, first_step: int) -> bool:
        """Whether step `step` of a run that began at `first_step` draws a
        size (darknet's "Resizing" iterations)."""
        return self.random and (step % 10 == 0 or step == first_step)

    def size(self, step: int, batch_num: int) -> tuple[int, int]:
        """Input size for the `step`-th step of this run (at batch_num)."""
        if not self.random:
            return self.base
        while len(self._sizes) <= step // 10:
            dim = int((self._rng.integers(0, 10) + 10) * 32)
            self._sizes.append((dim, dim))
        if batch_num + 200 > self.max_batches:
            return (608, 608)
        return self._sizes[step // 10]


class BatchLoader:
    """Prepares batches in a background thread, `prefetch` ahead, its
    images decoded and augmented by `workers` threads (darknet loads the
    images of a batch in parallel too: one GPU step of yolov2 needs 64 of
    them in a fraction of a second).  Each sample's randomness comes from
    its own seed, so the batches are the same for any number of workers.

    A step takes `images_per_step` images per replica: `replicas` shares,
    or one share during the first `warmup_steps` steps (the single-replica
    warm-up of data-parallel training).

    pinned=True (training on a GPU): the images of a batch are written in
    page-locked memory, recycled; a batch returned by `next()` stays valid
    until the following call to `next()`."""

    def __init__(self, dataset: DetectionDataset, images_per_step: int, truth_size: int,
                 max_boxes: int, augmentation: Augmentation, schedule: ScaleSchedule,
                 seed: int, *, prefetch: int = 2, first_step: int = 0,
                 first_batch_num: int = 0, steps_per_batch: int = 1, replicas: int = 1,
                 warmup_steps: int = 0, workers: int = 0, pinned: bool = False) -> None:
        self.dataset = dataset
        self.share = images_per_step
        self.replicas = replicas
        self.warmup_steps = warmup_steps
        self.truth_size = truth_size
        self.max_boxes = max_boxes
        self.augmentation = augmentation
        self.schedule = schedule
        self.seed = seed
        self.workers = workers if workers > 0 else default_workers()
        self.buffers: HostBufferPool | None = None
        if pinned:  # every buffer holds the largest batch: multi-scale steps reuse them all
            width, height = schedule.largest()
            self.buffers = HostBufferPool(pinned=True, min_floats=images_per_step * max(replicas, 1)
                                          * 3 * width * height)
        self._handed: Batch | None = None
        self._workers = ThreadPoolExecutor(self.workers, thread_name_prefix="pydarknet-sample") \
            if self.workers > 1 else None
        # the images are drawn step after step from one generator: a resumed
        # run (first_step = the iteration it resumes at) replays the earlier
        # steps' draws, so that it goes on with what the uninterrupted run
        # would have drawn there, not with the first steps' images again
        self._rng = np.random.default_rng(seed)
        for step in range(first_step):
            self._rng.integers(0, len(dataset), size=self.images_for(step))
        self._queue: queue.Queue[Batch | BaseException] = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._step = first_step
        self._batch_num = first_batch_num
        self._steps_per_batch = steps_per_batch
        self._thread = threading.Thread(target=self._run, name="pydarknet-loader", daemon=True)
        self._thread.start()

    def _params(self) -> object:
        p = ffi.new("dn_augment_params *")
        a = self.augmentation
        p.augment = 1 if a.enabled else 0
        p.jitter, p.hue, p.saturation, p.exposure = a.jitter, a.hue, a.saturation, a.exposure
        p.flip = 1 if a.flip else 0
        p.max_boxes = self.max_boxes
        return p

    def images_for(self, step: int) -> int:
        """Images of step `step` (one share per replica taking part)."""
        if self.replicas > 1 and step < self.warmup_steps:
            return self.share
        return self.share * self.replicas

    def make_batch(self, step: int, batch_num: int) -> Batch:
        """The batch of a given step (used by the thread; deterministic)."""
        width, height = self.schedule.size(step, batch_num)
        n = self.images_for(step)
        shape = (n, 3, height, width)
        images = self.buffers.take(shape) if self.buffers else np.empty(shape, np.float32)
        truth = np.zeros((n, self.truth_size), np.float32)
        indexes = self._rng.integers(0, len(self.dataset), size=n)
        params = self._params()
        first_sample = step * self.share * self.replicas

        def prepare(i: int) -> None:
            self._prepare_sample(int(indexes[i]), first_sample + i, params, images[i], truth[i])

        try:
            if self._workers is None:
                for i in range(n):
                    prepare(i)
            else:
                # in index order: the first failing sample's error is raised
                for _ in self._workers.map(prepare, range(n)):
                    pass
        except BaseException:
            if self.buffers:
                self.buffers.give(images)
            raise
        return Batch(images, truth, width, height, step)

    def _prepare_sample(self, index: int, sample: int, params: object, image: np.ndarray,
                        truth: np.ndarray) -> None:
        """Decode, augment and letterbox one image into `image` (3 x h x w)
        and its boxes into `truth` (darknet's layout)."""
        height, width = image.shape[1:]
        labels = np.ascontiguousarray(self.dataset.samples[index].labels, np.float32)
        slot = ffi.new("dn_frame *")
        frame = _frame_struct(self.dataset.frame(index), slot)
        truth_row = np.zeros(self.max_boxes * 5, np.float32)
        check(lib.dn_detection_sample(
            slot, ffi.from_buffer("float[]", labels) if len(labels) else ffi.NULL,
            len(labels), width, height, params, sample_seed(self.seed, sample),
            ffi.from_buffer("float[]", image), ffi.from_buffer("float[]", truth_row)))
        truth[:min(truth_row.size, self.truth_size)] = truth_row[:self.truth_size]
        del frame

    def _run(self) -> None:
        step, batch_num = self._step, self._batch_num
        try:
            while not self._stop.is_set():
                batch = self.make_batch(step, batch_num)
                while not self._stop.is_set():
                    try:
                        self._queue.put(batch, timeout=.1)
                        break
                    except queue.Full:
                        continue
                step += 1
                batch_num += self._steps_per_batch
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._queue.put(exc)

    def next(self) -> Batch:
        """The next batch (with pinned buffers, the previous one's images
        go back to the pool now)."""
        if self.buffers and self._handed is not None:
            self.buffers.give(self._handed.images)
        self._handed = None
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        self._handed = item
        return item

    def close(self) -> None:
        """Stop the thread (no thread is left running)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=.1)
        if self._workers is not None:
            self._workers.shutdown(wait=True)
