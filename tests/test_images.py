"""Frames to network input: darknet's resize, letterbox and channel order,
bit for bit (the same float operations in the same order)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oracle import darknet
from pydarknet import ImageError
from pydarknet.image import frame_to_input, letterbox, resize


def random_frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def to_darknet_image(frame: np.ndarray) -> np.ndarray:
    return frame[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / np.float32(255)


SIZES = [(480, 640), (640, 480), (416, 416), (37, 91), (1, 5), (300, 1)]


@pytest.mark.oracle
@pytest.mark.parametrize("h,w", SIZES)
def test_letterbox_equals_darknet(h: int, w: int) -> None:
    frame = random_frame(h, w)
    ours = frame_to_input(frame, 416, 416, letterbox=True)
    theirs = darknet().letterbox(to_darknet_image(frame), 416, 416)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.oracle
@pytest.mark.parametrize("h,w", SIZES[:4])
def test_plain_resize_equals_darknet(h: int, w: int) -> None:
    frame = random_frame(h, w, 1)
    ours = frame_to_input(frame, 320, 256, letterbox=False)
    theirs = darknet().resize(to_darknet_image(frame), 320, 256)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.oracle
def test_float_image_ops_equal_darknet() -> None:
    image = np.random.default_rng(3).random((3, 50, 70), dtype=np.float32)
    np.testing.assert_array_equal(resize(image, 33, 47), darknet().resize(image, 33, 47))
    np.testing.assert_array_equal(letterbox(image, 64, 64), darknet().letterbox(image, 64, 64))


def test_letterbox_geometry() -> None:
    """A 640x480 frame fits 416x312 inside 416x416: 52 rows of 0.5 above and below."""
    frame = np.full((480, 640, 3), 255, np.uint8)
    frame[..., 0] = 0  # blue 0, green and red 255
    x = frame_to_input(frame, 416, 416)
    assert x.shape == (3, 416, 416)
    assert np.all(x[:, :52] == .5) and np.all(x[:, 364:] == .5)
    body = x[:, 52:364]
    np.testing.assert_allclose(body[0], 1)  # red (RGB order)
    np.testing.assert_allclose(body[1], 1)
    np.testing.assert_allclose(body[2], 0)  # blue


def test_strided_frame_equals_contiguous() -> None:
    big = random_frame(200, 300, 5)
    view = big[10:150, 20:260]          # rows further apart than 3 * width
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(frame_to_input(view, 96, 64),
                                  frame_to_input(np.ascontiguousarray(view), 96, 64))
    flipped = big[:, ::-1]              # negative strides: copied first
    np.testing.assert_array_equal(frame_to_input(flipped, 64, 64),
                                  frame_to_input(np.ascontiguousarray(flipped), 64, 64))


@pytest.mark.parametrize("bad,match", [
    (np.zeros((10, 10), np.uint8), "H x W x 3"),
    (np.zeros((10, 10, 4), np.uint8), "H x W x 3"),
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    ([[1, 2, 3]], "numpy array"),
])
def test_bad_frames_raise_image_error(bad, match: str) -> None:
    with pytest.raises(ImageError, match=match):
        frame_to_input(bad, 32, 32)


@pytest.mark.parametrize("w,h,out_w,out_h", [(3, 1, 16777221, 1), (1, 3, 1, 16777221)])
def test_resize_past_2_to_the_24_stays_inside_the_source(w: int, h: int, out_w: int, out_h: int) -> None:
    """Over 2^24 output pixels a side, darknet's float c * scale rounds up to
    the last source index before the last output: the sample must not read
    one past the row (or column).  The value after the image is +inf here,
    so a read past it shows as NaN (0 * inf)."""
    from pydarknet._ffi import check, ffi, lib
    source = np.array([0, 1, 2, np.inf], np.float32)  # the image is the first 3 values
    out = np.empty(out_w * out_h, np.float32)
    check(lib.dn_image_resize(ffi.from_buffer("float[]", source), w, h, 1, out_w, out_h,
                              ffi.from_buffer("float[]", out)))
    assert np.isfinite(out).all()
    assert out[0] == 0 and out[-1] == 2 and (np.diff(out) >= 0).all()


def test_row_stride_check_does_not_overflow() -> None:
    """3 * width overflows an int for a width over 715827882: the check must
    still see that a 3-byte row stride is too small."""
    from pydarknet._ffi import ffi, lib
    data = np.zeros(16, np.uint8)
    frame = ffi.new("dn_frame *", {"data": ffi.from_buffer("uint8_t[]", data), "width": 800000000,
                                   "height": 1, "row_stride": 3})
    out = np.empty(3, np.float32)
    status = lib.dn_frame_to_input(frame, 1, 1, lib.DN_RESIZE_PLAIN, ffi.from_buffer("float[]", out))
    assert status == lib.DN_ERR_IMAGE
    assert "row stride 3 is smaller than 3 * width (2400000000)" in ffi.string(lib.dn_last_error()).decode()


def test_submodules_resolve_as_the_readme_uses_them(tmp_path: Path) -> None:
    """`pydarknet.image.frame_to_input` and `pydarknet.video.VideoReader`
    after a bare `import pydarknet` (a fresh interpreter, nothing imported;
    run outside the checkout, so that it imports the installed package)."""
    import subprocess
    import sys

    code = ("import pydarknet; print(pydarknet.image.frame_to_input.__name__, "
            "pydarknet.video.VideoReader.__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["frame_to_input", "VideoReader"]
