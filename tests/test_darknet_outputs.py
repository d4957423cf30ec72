"""Random weights: every layer's output equals pjreddie darknet's (Debian's
libdarknet.so) and the final outputs equal OpenCV DNN's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import relative_error
from oracle import darknet
from pydarknet import Network

NETWORKS = ["yolov2-tiny.cfg", "yolov2.cfg", "yolov2-voc.cfg", "yolov3-tiny.cfg", "darknet19.cfg"]
# yolov2.cfg ships at 608x608; 416 keeps the run short and exercises the same layers
SIZE_416 = {"yolov2.cfg": {"width=608": "width=416", "height=608": "height=416"}}

# Tolerance: both engines compute in float32 but sum in different orders
# (blocked SIMD GEMM vs darknet's plain loops, BN folded into one multiply
# here); measured differences are ~1e-5 of a layer's scale at worst.
TOLERANCE = 1e-4


def random_network(cfg: Path, tmp_path: Path, seed: int) -> tuple[Network, Path]:
    net = Network(cfg, threads=2)
    net.randomize(seed)
    weights = tmp_path / (cfg.stem + ".weights")
    net.save_weights(weights)
    return net, weights


@pytest.mark.oracle
@pytest.mark.parametrize("name", NETWORKS)
def test_every_layer_matches_darknet(name: str, batch1_cfg, tmp_path: Path) -> None:
    cfg = batch1_cfg(name, SIZE_416.get(name))
    reference = darknet()
    net, weights = random_network(cfg, tmp_path, seed=7)
    with net, reference.load(cfg, weights) as theirs:
        x = np.random.default_rng(1).random(net.input_shape, dtype=np.float32)
        out = net.predict(x)
        their_out = theirs.predict(x)
        errors = {}
        for layer in net.layers:
            errors[(layer.index, layer.type)] = relative_error(net.layer_output(layer.index),
                                                               theirs.layer_output(layer.index))
        worst = max(errors.values())
        assert worst < TOLERANCE, {k: v for k, v in errors.items() if v >= TOLERANCE}
        assert relative_error(out, their_out) < TOLERANCE
        # a weights file darknet wrote is read back the same (header, seen, floats)


def opencv_output(cv2, cfg: Path, weights: Path, blob: np.ndarray, layer_name: str) -> np.ndarray:
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(blob)
    return net.forward(layer_name)


def last_conv_name(net: Network) -> tuple[int, str]:
    """OpenCV names a darknet conv layer conv_<i> (bn_<i>, relu_<i> after it)."""
    index = max(l.index for l in net.layers if l.type == "convolutional")
    act = net.layer(index).activation
    bn = net.layer(index).batch_normalize
    name = f"relu_{index}" if act == "leaky" else (f"bn_{index}" if bn else f"conv_{index}")
    return index, name


@pytest.mark.parametrize("name", NETWORKS)
def test_final_outputs_match_opencv(name: str, batch1_cfg, tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    cfg = batch1_cfg(name, SIZE_416.get(name))
    net, weights = random_network(cfg, tmp_path, seed=11)
    with net:
        x = np.random.default_rng(2).random(net.input_shape, dtype=np.float32)
        out = net.predict(x)
        # the last convolution, before OpenCV post-processes region/yolo outputs
        index, layer_name = last_conv_name(net)
        theirs = opencv_output(cv2, cfg, weights, x, layer_name)
        assert relative_error(net.layer_output(index), theirs) < TOLERANCE
        last = net.layers[-1]
        if last.type == "softmax":
            their_out = opencv_output(cv2, cfg, weights, x, "")
            assert relative_error(out, their_out) < TOLERANCE
        elif last.type == "region":
            check_region_against_opencv(cv2, net, cfg, weights, x, out)
        else:
            for layer in net.layers:
                if layer.type == "yolo":
                    check_yolo_against_opencv(cv2, net, layer.index, cfg, weights, x)


def check_yolo_against_opencv(cv2, net: Network, index: int, cfg: Path, weights: Path,
                              x: np.ndarray) -> None:
    """OpenCV's yolo layer emits rows per (cell, anchor): x, y, w, h relative
    to the network input, objectness, and objectness * class probability
    where that exceeds its threshold of 0.2 (0 elsewhere)."""
    layer = net.layer(index)
    rows = opencv_output(cv2, cfg, weights, x, f"yolo_{index}")
    out = net.layer_output(index)[0]
    classes, anchors = layer.classes, layer.n_anchors
    _, h, w = out.shape
    ours = out.reshape(anchors, 5 + classes, h, w).transpose(2, 3, 0, 1).reshape(-1, 5 + classes)
    section = cfg.read_text().split("[yolo]")[1 + [l.index for l in net.layers
                                                  if l.type == "yolo"].index(index)]
    option = lambda key: section.split(key)[1].split("\n")[0].replace("=", "").strip()
    mask = [int(v) for v in option("mask").split(",")]
    all_anchors = np.array(option("anchors").split(","), np.float32).reshape(-1, 2)
    anchor_wh = all_anchors[mask]
    _, _, net_h, net_w = net.input_shape
    ys, xs, ns = np.meshgrid(np.arange(h), np.arange(w), np.arange(anchors), indexing="ij")
    decoded = np.stack([(xs.ravel() + ours[:, 0]) / w, (ys.ravel() + ours[:, 1]) / h,
                        np.exp(ours[:, 2]) * anchor_wh[ns.ravel(), 0] / net_w,
                        np.exp(ours[:, 3]) * anchor_wh[ns.ravel(), 1] / net_h, ours[:, 4]], axis=1)
    assert relative_error(decoded, rows[:, :5]) < TOLERANCE
    probs = ours[:, 5:] * ours[:, 4:5]
    clear = np.abs(probs - 0.2) > 1e-4
    expected = np.where(probs > 0.2, probs, 0)
    np.testing.assert_allclose(rows[:, 5:][clear], expected[clear], rtol=1e-4, atol=1e-6)


def check_region_against_opencv(cv2, net: Network, cfg: Path, weights: Path, x: np.ndarray,
                                out: np.ndarray) -> None:
    """OpenCV's region layer emits one row per (cell, anchor): x, y, w, h
    (relative), objectness, then class probabilities times objectness where
    they exceed the cfg's thresh (0 elsewhere)."""
    region = net.layers[-1]
    rows = opencv_output(cv2, cfg, weights, x, "")
    classes, anchors = region.classes, region.n_anchors
    _, _, h, w = out.shape
    entries = out.reshape(anchors, 5 + classes, h, w)
    # our rows in OpenCV's order: cell-major (y, x), then anchor
    ours = entries.transpose(2, 3, 0, 1).reshape(h * w * anchors, 5 + classes)
    anchors_wh = np.array(cfg.read_text().split("anchors")[1].split("\n")[0]
                          .replace("=", "").split(","), np.float32).reshape(-1, 2)
    ys, xs, ns = np.meshgrid(np.arange(h), np.arange(w), np.arange(anchors), indexing="ij")
    box_x = (xs.ravel() + ours[:, 0]) / w
    box_y = (ys.ravel() + ours[:, 1]) / h
    box_w = np.exp(ours[:, 2]) * anchors_wh[ns.ravel(), 0] / w
    box_h = np.exp(ours[:, 3]) * anchors_wh[ns.ravel(), 1] / h
    decoded = np.stack([box_x, box_y, box_w, box_h, ours[:, 4]], axis=1)
    assert relative_error(decoded, rows[:, :5]) < TOLERANCE
    probs = ours[:, 5:] * ours[:, 4:5]
    thresh = float(cfg.read_text().split("[region]")[1].split("thresh")[1].split("\n")[0]
                   .replace("=", "").strip())
    expected = np.where(probs > thresh, probs, 0)
    clear = np.abs(probs - thresh) > 1e-4  # leave out values within rounding of the cut
    np.testing.assert_allclose(rows[:, 5:][clear], expected[clear], rtol=1e-4, atol=1e-6)
