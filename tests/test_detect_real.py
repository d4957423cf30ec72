"""The real pretrained COCO yolov3-tiny on darknet's sample images: the same
detections as darknet (same decoded pixels, darknet's letterbox) and as
OpenCV DNN (same plain-resized input)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oracle import darknet
from pydarknet import Detector, Network
from shared import SHARED, shared_path

SAMPLES = ["dog.jpg", "eagle.jpg", "giraffe.jpg", "horses.jpg", "kite.jpg", "person.jpg",
           "scream.jpg"]


@pytest.fixture(scope="module")
def model() -> tuple[Path, Path]:
    return shared_path("models/yolov3-tiny.cfg"), shared_path("models/yolov3-tiny.weights")


def load_bgr(name: str) -> np.ndarray:
    import cv2

    frame = cv2.imread(str(shared_path(f"darknet/data/{name}")), cv2.IMREAD_COLOR)
    assert frame is not None
    return frame


def to_darknet_image(frame: np.ndarray) -> np.ndarray:
    """What darknet's load_image_color makes of these pixels: RGB, CHW, /255."""
    return (frame[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / np.float32(255))


def as_rows(detections) -> np.ndarray:
    return np.array([[d.class_id, d.confidence, d.x, d.y, d.w, d.h] for d in detections],
                    np.float64).reshape(-1, 6)


def assert_same_detections(ours: np.ndarray, theirs: np.ndarray, conf_tol: float,
                           box_tol: float) -> None:
    """Same multiset of (class, confidence, box): each of theirs is matched to
    one of ours of the same class with the nearest box."""
    assert len(ours) == len(theirs), f"{len(ours)} detections vs {len(theirs)}:\n{ours}\n{theirs}"
    unused = list(range(len(ours)))
    for row in theirs:
        candidates = [i for i in unused if ours[i, 0] == row[0]]
        assert candidates, f"no detection of class {int(row[0])} in ours"
        best = min(candidates, key=lambda i: np.abs(ours[i, 2:6] - row[2:6]).max())
        assert abs(ours[best, 1] - row[1]) <= conf_tol, (ours[best], row)
        assert np.abs(ours[best, 2:6] - row[2:6]).max() <= box_tol, (ours[best], row)
        unused.remove(best)


@pytest.mark.oracle
@pytest.mark.parametrize("nms_kind", ["sort", "obj"])
@pytest.mark.parametrize("image", SAMPLES)
def test_same_detections_as_darknet(image: str, nms_kind: str, model) -> None:
    cfg, weights = model
    frame = load_bgr(image)
    reference = darknet()
    with Detector(cfg, weights, threads=2) as detector, reference.load(cfg, weights) as theirs:
        ours = as_rows(detector.detect(frame, thresh=.25, nms_kind=nms_kind))  # type: ignore[arg-type]
        rows = theirs.detect(to_darknet_image(frame), thresh=.25, nms=.45,
                             nms_kind={"sort": 0, "obj": 1}[nms_kind])
    assert len(rows) > 0 or image == "scream.jpg"
    assert_same_detections(ours, rows[:, :6].astype(np.float64), conf_tol=1e-3, box_tol=.5)


def test_dog_finds_darknets_objects(model) -> None:
    """darknet's documented result for yolov3-tiny on dog.jpg at thresh .5:
    dog, bicycle, car (and truck on the same box)."""
    cfg, weights = model
    with Detector(cfg, weights, threads=2) as detector:
        names = sorted(d.name for d in detector.detect(load_bgr("dog.jpg")))
    assert names == sorted(["dog", "bicycle", "car", "car", "truck"])


@pytest.mark.parametrize("image", SAMPLES)
def test_same_candidates_as_opencv(image: str, model) -> None:
    """Plain resize (no letterbox) and the same input blob for both: every
    (box, class) with confidence > .5 before NMS."""
    cv2 = pytest.importorskip("cv2")
    cfg, weights = model
    frame = load_bgr(image)
    h, w = frame.shape[:2]
    with Detector(cfg, weights, threads=2) as detector:
        ours = as_rows(detector.detect(frame, thresh=.5, nms=0, letterbox=False))
        blob = detector.network.info
        from pydarknet._ffi import ffi, lib  # the engine's own plain resize of these pixels
        size = (3, blob.height, blob.width)
        x = np.empty(size, np.float32)
        frame_c = np.ascontiguousarray(frame)
        f = ffi.new("dn_frame *", {"data": ffi.from_buffer("uint8_t[]", frame_c),
                                   "width": w, "height": h, "row_stride": frame_c.strides[0]})
        assert lib.dn_frame_to_input(f, blob.width, blob.height, lib.DN_RESIZE_PLAIN,
                                     ffi.from_buffer("float[]", x)) == 0
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setInput(x[None])
    outs = net.forward(net.getUnconnectedOutLayersNames())
    theirs = []
    for rows in outs:
        for row in rows:
            for cls in np.nonzero(row[5:] > .5)[0]:
                theirs.append([cls, row[5 + cls], row[0] * w, row[1] * h, row[2] * w, row[3] * h])
    theirs_arr = np.array(theirs, np.float64).reshape(-1, 6)
    assert_same_detections(ours, theirs_arr, conf_tol=1e-3, box_tol=.5)
