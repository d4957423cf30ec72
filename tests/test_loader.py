"""Training data: darknet's label rules, the augmentation's geometry (the
boxes follow the pixels), seeded repeatability, and the bad-label policy."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pydarknet import ArgumentError, DataError
from pydarknet._ffi import check, ffi, lib
from pydarknet.detect import _frame_struct
from pydarknet.loader import (Augmentation, BatchLoader, DetectionDataset, ScaleSchedule,
                              sample_seed)


def sample(frame: np.ndarray, labels: np.ndarray, size: int, seed: int, *, augment: bool = True,
           jitter: float = .2, hue: float = 0, saturation: float = 1, exposure: float = 1,
           max_boxes: int = 30) -> tuple[np.ndarray, np.ndarray]:
    params = ffi.new("dn_augment_params *", {"augment": int(augment), "jitter": jitter,
                                              "hue": hue, "saturation": saturation,
                                              "exposure": exposure, "flip": 1,
                                              "max_boxes": max_boxes})
    image = np.empty((3, size, size), np.float32)
    truth = np.empty(max_boxes * 5, np.float32)
    slot = ffi.new("dn_frame *")
    keep = _frame_struct(frame, slot)
    rows = np.ascontiguousarray(labels, np.float32)
    check(lib.dn_detection_sample(slot, ffi.from_buffer("float[]", rows), len(rows), size, size,
                                  params, seed, ffi.from_buffer("float[]", image),
                                  ffi.from_buffer("float[]", truth)))
    del keep
    return image, truth.reshape(max_boxes, 5)


def white_box_frame(x1: int, y1: int, x2: int, y2: int, w: int = 200, h: int = 120) -> np.ndarray:
    frame = np.zeros((h, w, 3), np.uint8)
    frame[y1:y2, x1:x2] = 255
    return frame


def box_of_bright_pixels(image: np.ndarray, level: float = .75) -> tuple[float, ...] | None:
    """Relative (x, y, w, h) of the pixels brighter than `level` in all channels."""
    mask = (image > level).all(axis=0)
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    _, h, w = image.shape
    x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return ((x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h)


def test_no_augmentation_is_a_plain_resize_with_the_same_boxes() -> None:
    frame = white_box_frame(40, 30, 120, 90)
    labels = np.array([[2, .4, .5, .4, .5], [0, .9, .1, .1, .1]], np.float32)
    image, truth = sample(frame, labels, 64, seed=1, augment=False)
    np.testing.assert_allclose(truth[:2], [[.4, .5, .4, .5, 2], [.9, .1, .1, .1, 0]], atol=1e-6)
    assert not truth[2:].any()
    assert image.shape == (3, 64, 64)


@pytest.mark.parametrize("setting,value,expected", [
    ("jitter", 1., "[0, 1)"), ("jitter", -.1, "[0, 1)"), ("jitter", float("nan"), "[0, 1)"),
    ("hue", 1e30, "[0, 1]"), ("hue", -.5, "[0, 1]"),
    ("saturation", 1e30, "a factor"), ("saturation", 0., "a factor"),
    ("exposure", float("inf"), "a factor"), ("exposure", 1e-30, "a factor"),
])
def test_augmentation_settings_out_of_range_are_refused(setting: str, value: float, expected: str) -> None:
    """Huge, non-finite or meaningless settings would give NaN sizes and
    hues, then float-to-int overflow: refused, naming the setting."""
    frame = white_box_frame(40, 30, 120, 90)
    labels = np.array([[0, .5, .5, .2, .2]], np.float32)
    with pytest.raises(ArgumentError) as info:
        sample(frame, labels, 32, seed=0, **{setting: value})
    assert f"augmentation {setting}=" in str(info.value) and expected in str(info.value)
    sample(frame, labels, 32, seed=0, jitter=.99, hue=1, saturation=.75, exposure=1.5)  # the limits work


@pytest.mark.parametrize("seed", range(12))
def test_boxes_follow_the_pixels(seed: int) -> None:
    """Scale, aspect jitter, placement and flip move the truth exactly as
    they move the object (within the pixel grid and the bilinear edge)."""
    x1, y1, x2, y2, w, h = 50, 30, 130, 90, 200, 120
    frame = white_box_frame(x1, y1, x2, y2, w, h)
    label = np.array([[1, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]],
                     np.float32)
    image, truth = sample(frame, label, 96, seed=seed)
    seen = box_of_bright_pixels(image)
    if truth[0, 0] == 0:  # the box was cut off the canvas: no pixels either
        assert seen is None or min(seen[2], seen[3]) < 3 / 96
        return
    assert seen is not None
    assert truth[0, 4] == 1
    # one canvas pixel of rounding (darknet places at integer offsets) plus
    # the bilinear edge
    np.testing.assert_allclose(truth[0, :4], seen, atol=2.5 / 96)


def test_same_seed_same_sample_and_seeds_differ() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (100, 150, 3), np.uint8)
    labels = np.array([[0, .5, .5, .3, .3]], np.float32)
    a = sample(frame, labels, 64, seed=7, hue=.1, saturation=1.5, exposure=1.5)
    b = sample(frame, labels, 64, seed=7, hue=.1, saturation=1.5, exposure=1.5)
    c = sample(frame, labels, 64, seed=8, hue=.1, saturation=1.5, exposure=1.5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert (a[0] >= 0).all() and (a[0] <= 1).all()  # darknet's constrain_image


def test_tiny_boxes_are_dropped_and_max_boxes_truncates() -> None:
    frame = white_box_frame(10, 10, 20, 20)
    labels = np.array([[0, .5, .5, .0005, .3]] + [[1, .1 * i + .05, .5, .05, .05] for i in range(9)],
                      np.float32)
    _, truth = sample(frame, labels, 32, seed=0, augment=False, max_boxes=4)
    assert (truth[:, 4] == 1).all() and len(truth) == 4  # the 0.0005-wide box is gone


def write_dataset(folder: Path, labels: dict[str, str]) -> Path:
    import cv2

    images = folder / "images"
    images.mkdir(parents=True)
    (folder / "labels").mkdir()
    lines = []
    for name, text in labels.items():
        cv2.imwrite(str(images / f"{name}.png"), white_box_frame(10, 10, 30, 40, 64, 48))
        if text is not None:
            (folder / "labels" / f"{name}.txt").write_text(text)
        lines.append(str(images / f"{name}.png"))
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    return folder / "train.txt"


def test_bad_labels_are_reported_with_file_and_line(tmp_path: Path) -> None:
    listing = write_dataset(tmp_path / "set", {
        "a": "0 0.5 0.5 0.2 0.2\n",
        "b": "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.1 0.1\n",   # class out of range
        "c": "1 1.5 0.5 0.2 0.2\n",                      # x outside [0, 1]
        "d": "1 0.5 zero 0.2 0.2\n",                     # unparsable
    })
    with pytest.raises(DataError) as info:
        DetectionDataset(listing, classes=2)
    message = str(info.value)
    assert "3 problem(s)" in message
    assert "b.txt:2" in message and "class 7 out of range" in message
    assert "c.txt:1" in message and "x=1.5" in message
    assert "d.txt:1" in message and "--bad-labels skip" in message
    skipped = DetectionDataset(listing, classes=2, bad_labels="skip")
    assert skipped.skipped == 3 and len(skipped) == 4
    assert [len(s.labels) for s in skipped.samples] == [1, 1, 0, 0]


def test_missing_label_file(tmp_path: Path) -> None:
    listing = write_dataset(tmp_path / "set", {"a": "0 0.5 0.5 0.2 0.2\n", "b": None})
    with pytest.raises(DataError, match=r"b.txt: error: label file missing"):
        DetectionDataset(listing, classes=1)
    assert len(DetectionDataset(listing, classes=1, bad_labels="skip")) == 1


def test_batches_are_repeatable_for_a_seed(tmp_path: Path) -> None:
    listing = write_dataset(tmp_path / "set", {f"i{k}": f"{k % 2} 0.3 0.5 0.2 0.4\n" for k in range(5)})
    dataset = DetectionDataset(listing, classes=2)

    def first_batches(seed: int) -> list[np.ndarray]:
        loader = BatchLoader(dataset, 4, 150, 30, Augmentation(hue=.1, saturation=1.5,
                                                               exposure=1.5),
                             ScaleSchedule(False, 32, 32, seed, 100), seed)
        try:
            return [b for k in range(3) for b in (lambda x: (x.images, x.truth))(loader.next())]
        finally:
            loader.close()

    one, two, other = first_batches(3), first_batches(3), first_batches(4)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(one, other))


def test_multiscale_schedule_is_darknets() -> None:
    schedule = ScaleSchedule(True, 416, 416, seed=0, max_batches=1000)
    sizes = [schedule.size(step, step) for step in range(300)]
    assert all(s[0] == s[1] and s[0] % 32 == 0 and 320 <= s[0] <= 608 for s in sizes)
    assert all(len({sizes[k] for k in range(b, b + 10)}) == 1 for b in range(0, 300, 10))
    assert len(set(sizes)) > 3
    assert schedule.size(5, 900) == (608, 608)  # the last 200 batches at 608
    assert ScaleSchedule(False, 416, 352, 0, 10).size(7, 3) == (416, 352)
    # darknet's "Resizing" iterations: every 10th, and the first of a (resumed) run
    assert [s for s in range(25) if schedule.draws_at(s, 0)] == [0, 10, 20]
    assert [s for s in range(7, 25) if schedule.draws_at(s, 7)] == [7, 10, 20]
    assert not ScaleSchedule(False, 416, 416, 0, 10).draws_at(0, 0)
    assert sample_seed(1, 2) != sample_seed(2, 1)


def batches(loader: BatchLoader, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Copies of the next `count` batches (a pinned loader reuses its buffers)."""
    try:
        return [(b.images.copy(), b.truth.copy()) for b in (loader.next() for _ in range(count))]
    finally:
        loader.close()


def shapes_loader(dataset: DetectionDataset, seed: int, **options: object) -> BatchLoader:
    # multi-scale: the sizes change every 10 steps (320..608)
    return BatchLoader(dataset, 3, 150, 30, Augmentation(hue=.1, saturation=1.5, exposure=1.5),
                       ScaleSchedule(True, 32, 32, seed, 1000), seed, **options)  # type: ignore[arg-type]


def test_batches_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    listing = write_dataset(tmp_path / "set", {f"i{k}": f"{k % 2} 0.3 0.5 0.2 0.4\n" for k in range(6)})
    dataset = DetectionDataset(listing, classes=2)
    one = batches(shapes_loader(dataset, 5, workers=1), 12)
    four = batches(shapes_loader(dataset, 5, workers=4), 12)
    assert len({a.shape for a, _ in one}) > 1  # the size changed on the way
    for (images_1, truth_1), (images_4, truth_4) in zip(one, four):
        np.testing.assert_array_equal(images_1, images_4)
        np.testing.assert_array_equal(truth_1, truth_4)


def test_pinned_loader_recycles_a_bounded_set_of_buffers(tmp_path: Path) -> None:
    listing = write_dataset(tmp_path / "set", {f"i{k}": f"{k % 2} 0.3 0.5 0.2 0.4\n" for k in range(6)})
    dataset = DetectionDataset(listing, classes=2)
    plain = batches(shapes_loader(dataset, 7, workers=2), 25)
    loader = shapes_loader(dataset, 7, workers=2, pinned=True, prefetch=2)
    pinned = batches(loader, 25)
    for (images_a, truth_a), (images_b, truth_b) in zip(plain, pinned):
        np.testing.assert_array_equal(images_a, images_b)
        np.testing.assert_array_equal(truth_a, truth_b)
    # every buffer holds the largest batch: one being filled, `prefetch`
    # queued, one handed out (and none replaced on size changes)
    assert loader.buffers is not None
    assert loader.buffers.allocated <= 2 + 2
    # a page-locked buffer only where a GPU is present
    assert loader.buffers.any_pinned == (lib.dn_cuda_device_count() > 0)


def test_a_handed_out_batch_stays_valid_until_the_next_one(tmp_path: Path) -> None:
    listing = write_dataset(tmp_path / "set", {f"i{k}": f"{k % 2} 0.3 0.5 0.2 0.4\n" for k in range(4)})
    dataset = DetectionDataset(listing, classes=2)
    loader = shapes_loader(dataset, 9, workers=2, pinned=True, prefetch=3)
    try:
        batch = loader.next()
        kept = batch.images.copy()
        import time
        time.sleep(.5)  # the thread fills the queue meanwhile
        np.testing.assert_array_equal(batch.images, kept)
    finally:
        loader.close()


def test_a_missing_image_fails_the_batch_with_its_path(tmp_path: Path) -> None:
    listing = write_dataset(tmp_path / "set", {f"i{k}": "0 0.5 0.5 0.2 0.2\n" for k in range(4)})
    dataset = DetectionDataset(listing, classes=1)
    (tmp_path / "set" / "images" / "i2.png").unlink()
    from pydarknet import DarknetIOError

    loader = BatchLoader(dataset, 8, 150, 30, Augmentation(), ScaleSchedule(False, 32, 32, 1, 10), 1,
                         workers=3)
    try:
        with pytest.raises(DarknetIOError, match=r"training image not found: .*i2\.png"):
            for _ in range(5):  # 8 draws of 4 images: i2 comes up
                loader.next()
    finally:
        loader.close()
    assert not loader._thread.is_alive()
