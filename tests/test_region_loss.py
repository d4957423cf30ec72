"""The region (YOLOv2) and yolo (YOLOv3) losses.

(a) A Python reference of darknet's target assignment (written from its
    documented behaviour, see ../shared/DARKNET-NOTES.md) against the
    engine's delta on random outputs and truths: seen below and above
    12,800, rescore and bias_match on and off, several truths per image, two
    truths in one cell.
(b) Hand-computed tiny cases with exact expected numbers for each term of
    the region loss.
(c) Finite differences of the surrogate losses: with the assignment held
    fixed, the delta after backward is minus the gradient of a smooth loss.

Region layout: for anchor a, 5 + C planes of H x W: x, y, w, h, objectness,
classes.  The forward leaves delta = scale * (target - output) on the
ACTIVATED outputs (logistic x, y, objectness; raw w, h; softmax classes).
Its backward follows darknet's GPU path (pjreddie's CPU backward is empty,
see DARKNET-NOTES.md): x, y and objectness deltas are multiplied by the
logistic derivative, then the whole delta is passed on.  The yolo layer's
backward passes its delta on unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from conftest import relative_error
from pydarknet import Network

PRIOR_SEEN = 12800
REGION_TRUTHS = 30


def logistic(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """darknet's box_iou for (x, y, w, h) boxes (centre and size)."""
    def overlap(x1: float, w1: float, x2: float, w2: float) -> float:
        return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)
    ow, oh = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
    inter = 0.0 if ow < 0 or oh < 0 else ow * oh
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def truth_list(truth: np.ndarray) -> list[np.ndarray]:
    """The boxes of one image's truth rows (x, y, w, h, class); x == 0 ends it."""
    boxes = []
    for row in truth.reshape(-1, 5):
        if row[0] == 0:
            break
        boxes.append(row.astype(np.float64))
    return boxes


@dataclass
class Targets:
    """The loss as darknet sets it up: per output entry a scale S and a
    target T on the activated output A (delta = S*(T - A)), and the class
    each anchor-cell was given (-1: none).  Region classes (softmax) use
    `cls` and class_scale; yolo's logistic classes use S and T like the
    other entries (a second truth in an anchor-cell only pulls its own
    class entry up: darknet's `tag` rule)."""
    activated: np.ndarray   # (B, n, 5 + C, H, W)
    scale: np.ndarray       # (B, n, 5 + C, H, W), class entries used by yolo only
    target: np.ndarray
    cls: np.ndarray         # (B, n, H, W)
    class_scale: float
    margins: list[float] = field(default_factory=list)  # distances to decision thresholds
    ious: list[float] = field(default_factory=list)     # of each matched truth
    close_matches: int = 0  # yolo: predictions given a truth by IoU > truth_thresh

    def delta(self, softmax_classes: bool) -> np.ndarray:
        """The delta the forward pass leaves (same layout as the output)."""
        d = self.scale * (self.target - self.activated)
        if softmax_classes:
            d[:, :, 5:] = 0
            for b, a, j, i in zip(*np.nonzero(self.cls >= 0)):
                onehot = np.zeros(self.activated.shape[2] - 5)
                onehot[self.cls[b, a, j, i]] = 1
                d[b, a, 5:, j, i] = self.class_scale * (onehot - self.activated[b, a, 5:, j, i])
        return d


def region_targets(raw: np.ndarray, truths: np.ndarray, *, anchors: np.ndarray, classes: int,
                   seen: int, thresh: float, coord_scale: float, object_scale: float,
                   noobject_scale: float, class_scale: float, rescore: int,
                   bias_match: int) -> Targets:
    """darknet's region loss (softmax=1) on raw outputs (B, n*(5+C), H, W);
    `seen` as the layer sees it (after the batch was added)."""
    B, _, H, W = raw.shape
    n = len(anchors)
    r = raw.astype(np.float64).reshape(B, n, 5 + classes, H, W)
    act = r.copy()
    act[:, :, 0:2] = logistic(r[:, :, 0:2])
    act[:, :, 4] = logistic(r[:, :, 4])
    e = np.exp(r[:, :, 5:] - r[:, :, 5:].max(axis=2, keepdims=True))
    act[:, :, 5:] = e / e.sum(axis=2, keepdims=True)
    S, T = np.zeros_like(act), np.zeros_like(act)
    cls = np.full((B, n, H, W), -1)
    out = Targets(act, S, T, cls, class_scale)

    def pred_box(b: int, a: int, j: int, i: int) -> tuple[float, ...]:
        return ((i + act[b, a, 0, j, i]) / W, (j + act[b, a, 1, j, i]) / H,
                math.exp(r[b, a, 2, j, i]) * anchors[a, 0] / W,
                math.exp(r[b, a, 3, j, i]) * anchors[a, 1] / H)

    def set_box(b: int, a: int, j: int, i: int, box: tuple[float, ...], scale: float) -> None:
        S[b, a, 0:4, j, i] = scale
        T[b, a, 0:4, j, i] = (box[0] * W - i, box[1] * H - j,
                              math.log(box[2] * W / anchors[a, 0]),
                              math.log(box[3] * H / anchors[a, 1]))

    for b in range(B):
        boxes = truth_list(truths[b])
        for j in range(H):
            for i in range(W):
                for a in range(n):
                    pred = pred_box(b, a, j, i)
                    best = max([0.0] + [iou(pred, t[:4]) for t in boxes])
                    out.margins.append(abs(best - thresh))
                    S[b, a, 4, j, i], T[b, a, 4, j, i] = noobject_scale, 0
                    if best > thresh:
                        S[b, a, 4, j, i] = 0
                    if seen < PRIOR_SEEN:
                        prior = ((i + .5) / W, (j + .5) / H, anchors[a, 0] / W, anchors[a, 1] / H)
                        set_box(b, a, j, i, prior, .01)
        for t in boxes:
            x, y, w, h, c = t
            i, j = int(x * W), int(y * H)
            out.margins += [abs(x * W - round(x * W)), abs(y * H - round(y * H))]
            shape_ious = []
            for a in range(n):
                pw, ph = ((anchors[a, 0] / W, anchors[a, 1] / H) if bias_match
                          else pred_box(b, a, j, i)[2:])
                shape_ious.append(iou((0, 0, pw, ph), (0, 0, w, h)))
            best_n = int(np.argmax(shape_ious))  # first of equals, as darknet's strict >
            if n > 1:
                out.margins.append(np.sort(shape_ious)[-1] - np.sort(shape_ious)[-2])
            matched = iou(pred_box(b, best_n, j, i), (x, y, w, h))
            out.ious.append(matched)
            set_box(b, best_n, j, i, (x, y, w, h), coord_scale * (2 - w * h))
            S[b, best_n, 4, j, i] = object_scale
            T[b, best_n, 4, j, i] = matched if rescore else 1
            cls[b, best_n, j, i] = int(c)
    return out


def yolo_targets(raw: np.ndarray, truths: np.ndarray, *, anchors: np.ndarray, mask: list[int],
                 classes: int, net_w: int, net_h: int, ignore_thresh: float,
                 truth_thresh: float, max_boxes: int = 90) -> Targets:
    """darknet's yolo loss on raw outputs (B, len(mask)*(5+C), H, W); anchors
    in network pixels.  All entries are 'square' terms on A here: x, y,
    objectness and every class are logistic outputs with delta S*(T - A)."""
    B, _, H, W = raw.shape
    n = len(mask)
    r = raw.astype(np.float64).reshape(B, n, 5 + classes, H, W)
    act = logistic(r)
    act[:, :, 2:4] = r[:, :, 2:4]
    S, T = np.zeros_like(act), np.zeros_like(act)
    out = Targets(act, S, T, np.full((B, n, H, W), -1), 1.0)

    def pred_box(b: int, a: int, j: int, i: int) -> tuple[float, ...]:
        return ((i + act[b, a, 0, j, i]) / W, (j + act[b, a, 1, j, i]) / H,
                math.exp(r[b, a, 2, j, i]) * anchors[mask[a], 0] / net_w,
                math.exp(r[b, a, 3, j, i]) * anchors[mask[a], 1] / net_h)

    def assign(b: int, a: int, j: int, i: int, t: np.ndarray) -> None:
        x, y, w, h, c = t
        S[b, a, 0:4, j, i] = 2 - w * h
        T[b, a, 0:4, j, i] = (x * W - i, y * H - j, math.log(w * net_w / anchors[mask[a], 0]),
                              math.log(h * net_h / anchors[mask[a], 1]))
        S[b, a, 4, j, i], T[b, a, 4, j, i] = 1, 1
        if out.cls[b, a, j, i] >= 0:  # darknet: a class delta already there -> tag only
            S[b, a, 5 + int(c), j, i], T[b, a, 5 + int(c), j, i] = 1, 1
        else:
            S[b, a, 5:, j, i] = 1
            T[b, a, 5:, j, i] = 0
            T[b, a, 5 + int(c), j, i] = 1
        out.cls[b, a, j, i] = int(c)

    for b in range(B):
        boxes = truth_list(truths[b])[:max_boxes]
        for j in range(H):
            for i in range(W):
                for a in range(n):
                    pred = pred_box(b, a, j, i)
                    ious = [iou(pred, t[:4]) for t in boxes]
                    best = max([0.0] + ious)
                    out.margins += [abs(best - ignore_thresh), abs(best - truth_thresh)]
                    S[b, a, 4, j, i], T[b, a, 4, j, i] = 1, 0
                    if best > ignore_thresh:
                        S[b, a, 4, j, i] = 0
                    if best > truth_thresh:
                        assign(b, a, j, i, boxes[int(np.argmax(ious))])
                        out.close_matches += 1
        for t in boxes:
            x, y, w, h, _ = t
            i, j = int(x * W), int(y * H)
            shape_ious = [iou((0, 0, aw / net_w, ah / net_h), (0, 0, w, h)) for aw, ah in anchors]
            best_n = int(np.argmax(shape_ious))
            out.margins.append(np.sort(shape_ious)[-1] - np.sort(shape_ious)[-2])
            if best_n not in mask:
                continue
            a = mask.index(best_n)
            out.ious.append(iou(pred_box(b, a, j, i), (x, y, w, h)))
            assign(b, a, j, i, t)
    return out


# ---- networks -----------------------------------------------------------------------------------

def region_net(tmp_path: Path, *, batch: int, w: int, h: int, anchors: np.ndarray, classes: int,
               options: str = "", backward: bool = False, softmax: int = 1) -> Network:
    """[region] alone.  The region backward multiplies the delta by the
    logistic derivative IN PLACE (as darknet's GPU path does); to read the
    delta the forward left, backward=False sets stopbackward=1 on it."""
    n = len(anchors)
    if not backward:
        options += "stopbackward=1\n"
    text = (f"[net]\nbatch={batch}\nsubdivisions=1\nwidth={w}\nheight={h}\n"
            f"channels={n * (5 + classes)}\nlearning_rate=0\nmomentum=0\ndecay=0\n\n"
            f"[region]\nanchors={','.join(f'{v:g}' for v in anchors.ravel())}\n"
            f"classes={classes}\ncoords=4\nnum={n}\nsoftmax={softmax}\n{options}\n")
    path = tmp_path / "region.cfg"
    path.write_text(text)
    return Network(path, train=True, batch=0, threads=1)


def yolo_net(tmp_path: Path, *, batch: int, w: int, h: int, anchors: np.ndarray,
             mask: list[int], classes: int, options: str = "") -> Network:
    """[upsample] stride=-2 scale=.25 (a 2x2 average, so the network input is
    twice the grid and anchors in pixels differ from grid cells), then [yolo]."""
    text = (f"[net]\nbatch={batch}\nsubdivisions=1\nwidth={2 * w}\nheight={2 * h}\n"
            f"channels={len(mask) * (5 + classes)}\nlearning_rate=0\nmomentum=0\ndecay=0\n\n"
            "[upsample]\nstride=-2\nscale=.25\n\n"
            f"[yolo]\nmask={','.join(map(str, mask))}\n"
            f"anchors={','.join(f'{v:g}' for v in anchors.ravel())}\n"
            f"classes={classes}\nnum={len(anchors)}\n{options}\n")
    path = tmp_path / "yolo.cfg"
    path.write_text(text)
    return Network(path, train=True, batch=0, threads=1)


def random_truths(rng: np.random.Generator, batch: int, per_image: int, rows: int, classes: int,
                  grid: tuple[int, int]) -> np.ndarray:
    """Boxes inside the image; in each image the second box shares the first
    one's cell (two truths in one cell); centres kept off cell borders."""
    W, H = grid
    truth = np.zeros((batch, rows, 5), np.float32)
    for b in range(batch):
        for t in range(per_image):
            if t == 1:
                ci, cj = int(truth[b, 0, 0] * W), int(truth[b, 0, 1] * H)
            else:
                ci, cj = rng.integers(W), rng.integers(H)
            x, y = (ci + rng.uniform(.1, .9)) / W, (cj + rng.uniform(.1, .9)) / H
            w, h = rng.uniform(.1, .7, 2)
            truth[b, t] = (x, y, w, h, rng.integers(classes))
    return truth.reshape(batch, -1)


# ---- (a) reference assignment vs the engine -----------------------------------------------------

REGION_ANCHORS = np.array([[1.0, 1.5], [2.5, 2.0], [3.2, 3.6]])
REGION_OPTIONS = dict(thresh=.3, coord_scale=1.5, object_scale=5, noobject_scale=.7,
                      class_scale=1.3)


def options_text(**options: float) -> str:
    return "".join(f"{k}={v:g}\n" for k, v in options.items())


def draw_region_case(net: Network, seed: int, seen: int, rescore: int, bias_match: int
                     ) -> tuple[np.ndarray, np.ndarray, Targets]:
    """Random outputs and truths, re-drawn while a decision of the reference is
    within 1e-4 of its threshold (float32 vs float64 could go either way)."""
    B, C, H, W = net.input_shape
    for attempt in range(20):
        rng = np.random.default_rng(1000 * seed + attempt)
        x = rng.normal(0, 1, (B, C, H, W)).astype(np.float32)
        truth = random_truths(rng, B, 4, REGION_TRUTHS, 3, (W, H))
        targets = region_targets(x, truth, anchors=REGION_ANCHORS, classes=3,
                                 seen=seen + B, rescore=rescore, bias_match=bias_match,
                                 **REGION_OPTIONS)
        if min(targets.margins) > 1e-4:
            return x, truth, targets
    raise AssertionError("no draw keeps the decisions away from the thresholds")


@pytest.mark.parametrize("seen", [0, 20000])
@pytest.mark.parametrize("rescore", [0, 1])
@pytest.mark.parametrize("bias_match", [0, 1])
def test_region_delta_matches_reference(seen: int, rescore: int, bias_match: int,
                                        tmp_path: Path) -> None:
    net = region_net(tmp_path, batch=2, w=4, h=4, anchors=REGION_ANCHORS, classes=3,
                     options=options_text(rescore=rescore, bias_match=bias_match,
                                          **REGION_OPTIONS))
    x, truth, targets = draw_region_case(net, 1 + rescore + 2 * bias_match, seen, rescore,
                                         bias_match)
    net.seen = seen
    cost = net.forward_backward(x, truth)
    assert net.seen == seen + 2  # counted before the forward
    expected = targets.delta(softmax_classes=True).reshape(2, -1, 4, 4)
    ours = net.delta(0)
    # the no-object entries suppressed under thresh (and nothing else) are exactly 0
    np.testing.assert_array_equal(ours == 0, expected == 0)
    # float32 engine vs float64 reference: ~1e-7 relative per operation
    assert relative_error(ours, expected) < 2e-5
    assert cost == pytest.approx(float(np.sum(expected ** 2)), rel=1e-5)
    # the draw covers the cases it is meant to: suppressed and penalised
    # no-object entries, and (seen < 12800) the prior pull on unmatched anchors
    obj = targets.scale[:, :, 4]
    assert (obj == 0).any() and (obj == REGION_OPTIONS["noobject_scale"]).any()
    if seen < PRIOR_SEEN:
        assert np.count_nonzero(targets.scale[:, :, 0] == .01) > 0
    else:
        assert not np.any(targets.scale[:, :, 0] == .01)


def test_region_prior_boundary(tmp_path: Path) -> None:
    """The prior term applies while seen (after adding the batch) < 12800."""
    net = region_net(tmp_path, batch=2, w=3, h=3, anchors=REGION_ANCHORS[:2], classes=2)
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, net.input_shape).astype(np.float32)
    truth = np.zeros((2, net.truth_size), np.float32)
    x_entries = np.s_[:, [0, 7]]  # the x planes of both anchors
    net.seen = PRIOR_SEEN - 3  # -> 12799 during the forward
    net.forward_backward(x, truth)
    assert np.all(net.delta(0)[x_entries] != 0)
    net.seen = PRIOR_SEEN - 2  # -> 12800
    net.forward_backward(x, truth)
    assert np.all(net.delta(0)[x_entries] == 0)


YOLO_ANCHORS = np.array([[1.0, 1.5], [2.0, 2.0], [3.0, 4.5], [5.0, 3.0], [6.0, 7.0], [8.0, 8.0]])
YOLO_MASK = [2, 3, 4]


def draw_yolo_case(net: Network, seed: int, ignore: float, truth_thresh: float
                   ) -> tuple[np.ndarray, np.ndarray, Targets]:
    B, C, H2, W2 = net.input_shape
    for attempt in range(20):
        rng = np.random.default_rng(500 + 100 * seed + attempt)
        x = rng.normal(0, 2, (B, C, H2, W2)).astype(np.float32)
        truth = random_truths(rng, B, 5, 90, 3, (W2 // 2, H2 // 2))
        net.forward_backward(x, truth)
        raw = net.layer_output(0)
        targets = yolo_targets(raw, truth, anchors=YOLO_ANCHORS, mask=YOLO_MASK, classes=3,
                               net_w=W2, net_h=H2, ignore_thresh=ignore,
                               truth_thresh=truth_thresh)
        if min(targets.margins) > 1e-4:
            return x, truth, targets
    raise AssertionError("no draw keeps the decisions away from the thresholds")


@pytest.mark.parametrize("ignore,truth_thresh", [(.3, 1.0), (.2, .45)])
def test_yolo_delta_matches_reference(ignore: float, truth_thresh: float, tmp_path: Path) -> None:
    net = yolo_net(tmp_path, batch=2, w=4, h=4, anchors=YOLO_ANCHORS, mask=YOLO_MASK, classes=3,
                   options=f"ignore_thresh={ignore}\ntruth_thresh={truth_thresh}\n")
    x, truth, targets = draw_yolo_case(net, int(ignore * 10), ignore, truth_thresh)
    cost = net.forward_backward(x, truth)
    expected = targets.delta(softmax_classes=False).reshape(2, -1, 4, 4)
    ours = net.delta(1)
    np.testing.assert_array_equal(ours == 0, expected == 0)
    assert relative_error(ours, expected) < 2e-5
    assert cost == pytest.approx(float(np.sum(expected ** 2)), rel=1e-5)
    # coverage: ignored and penalised predictions; truths outside the mask
    obj = targets.scale[:, :, 4]
    assert (obj == 0).any() and (obj == 1).any()
    assert len(targets.ious) < np.count_nonzero(truth.reshape(2, -1, 5)[:, :, 0])
    # some predictions close enough to be given a truth by truth_thresh
    assert (targets.close_matches > 0) == (truth_thresh < 1)


# ---- (b) hand-computed cases --------------------------------------------------------------------

def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def hand_net(tmp_path: Path, anchors: list[float], options: str, classes: int = 2,
             backward: bool = False) -> Network:
    return region_net(tmp_path, batch=1, w=2, h=2, anchors=np.array(anchors).reshape(-1, 2),
                      classes=classes, options=options, backward=backward)


def truth_rows(*boxes: tuple[float, ...]) -> np.ndarray:
    truth = np.zeros((1, REGION_TRUTHS * 5), np.float32)
    for k, box in enumerate(boxes):
        truth[0, 5 * k:5 * k + 5] = box
    return truth


# entries of anchor a's planes: x=0, y=1, w=2, h=3, objectness=4, classes 5..
@pytest.mark.parametrize("rescore", [0, 1])
def test_region_hand_coordinates_objectness_classes(rescore: int, tmp_path: Path) -> None:
    """2x2 grid, one anchor of 1x1 cells, seen past the prior term.  All raw
    outputs 0 except the class logits of cell (i=1, j=0): (.4, -.3).  Truth
    (x .7, y .3, w .4, h .2, class 1) falls in cell (1, 0).

    Every predicted box is (cell centre, .5 x .5); the one of cell (1, 0) is
    (.75, .25, .5, .5) and overlaps the truth by .4 x .2 = .08, so its IoU is
    .08 / (.25 + .08 - .08) = .32; the other cells do not overlap it.  All
    best IoUs are below thresh .6, so every objectness gets the no-object
    delta noobject_scale * (0 - .5), except the truth's, overwritten by
    object_scale * (target - .5) with target 1 (IoU .32 with rescore)."""
    coord, obj, noobj, cls_scale = 2.0, 5.0, .5, 3.0
    net = hand_net(tmp_path, [1, 1], options_text(
        thresh=.6, coord_scale=coord, object_scale=obj, noobject_scale=noobj,
        class_scale=cls_scale, rescore=rescore))
    x = np.zeros((1, 7, 2, 2), np.float32)
    x[0, 5, 0, 1], x[0, 6, 0, 1] = .4, -.3
    truth = truth_rows((.7, .3, .4, .2, 1))
    net.seen = 20000
    cost = net.forward_backward(x, truth)

    expected = np.zeros((7, 2, 2))
    expected[4] = noobj * (0 - .5)
    scale = coord * (2 - .4 * .2)  # 3.84
    expected[0, 0, 1] = scale * ((.7 * 2 - 1) - .5)          # tx = .4
    expected[1, 0, 1] = scale * ((.3 * 2 - 0) - .5)          # ty = .6
    expected[2, 0, 1] = scale * (math.log(.4 * 2 / 1) - 0)   # tw = log .8
    expected[3, 0, 1] = scale * (math.log(.2 * 2 / 1) - 0)   # th = log .4
    expected[4, 0, 1] = obj * ((.32 if rescore else 1) - .5)
    p0 = 1 / (1 + math.exp(-.3 - .4))  # softmax(.4, -.3)[0]
    expected[5, 0, 1] = cls_scale * (0 - p0)
    expected[6, 0, 1] = cls_scale * (1 - (1 - p0))
    np.testing.assert_allclose(net.delta(0)[0], expected, rtol=1e-5, atol=1e-6)
    assert cost == pytest.approx(float(np.sum(expected ** 2)), rel=1e-5)

    # backward (darknet's GPU path): x, y and objectness times sigma'(0) = .25,
    # in place and into the input's delta
    after = expected.copy()
    after[[0, 1, 4]] *= .25
    full = hand_net(tmp_path, [1, 1], options_text(
        thresh=.6, coord_scale=coord, object_scale=obj, noobject_scale=noobj,
        class_scale=cls_scale, rescore=rescore), backward=True)
    full.seen = 20000
    full.input_delta()
    assert full.forward_backward(x, truth) == pytest.approx(cost)
    np.testing.assert_allclose(full.delta(0)[0], after, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full.input_delta()[0], after, rtol=1e-5, atol=1e-6)

    # darknet's statistics line
    net.seen = 20000
    stats = net.train_step(x, truth).layers[0]
    assert stats.count == 1
    assert stats.avg_iou == pytest.approx(.32, rel=1e-5)
    assert stats.recall == 0  # IoU .32 is not above .5
    assert stats.avg_obj == pytest.approx(.5)
    assert stats.avg_class == pytest.approx(1 - p0, rel=1e-5)
    assert stats.avg_noobj == pytest.approx(.5)


def test_region_hand_prior_term(tmp_path: Path) -> None:
    """No truth; raw x 1, y -.5, w .3, h -.2 everywhere.  While seen < 12800
    every anchor is pulled towards its prior (cell centre, anchor size) with
    scale .01: tx = ty = .5, tw = th = log(1) = 0.  Afterwards only the
    no-object term is left."""
    net = hand_net(tmp_path, [1, 1], options_text(noobject_scale=.5))
    x = np.zeros((1, 7, 2, 2), np.float32)
    x[0, 0], x[0, 1], x[0, 2], x[0, 3] = 1, -.5, .3, -.2
    truth = truth_rows()
    expected = np.zeros((7, 2, 2))
    expected[0] = .01 * (.5 - sig(1))
    expected[1] = .01 * (.5 - sig(-.5))
    expected[2] = .01 * (0 - .3)
    expected[3] = .01 * (0 + .2)
    expected[4] = .5 * (0 - .5)
    net.seen = 0
    net.forward_backward(x, truth)
    np.testing.assert_allclose(net.delta(0)[0], expected, rtol=1e-5, atol=1e-8)
    net.seen = 20000
    net.forward_backward(x, truth)
    expected[:4] = 0
    np.testing.assert_allclose(net.delta(0)[0], expected, rtol=1e-5, atol=1e-8)


def test_region_hand_truth_overrides_prior(tmp_path: Path) -> None:
    """With a truth, its anchor-cell gets the truth's coordinate deltas whatever
    seen is; the other cells get the prior pull only before 12800."""
    net = hand_net(tmp_path, [1, 1], "")
    x = np.zeros((1, 7, 2, 2), np.float32)
    x[0, 0], x[0, 2] = 1, .3
    truth = truth_rows((.7, .3, .4, .2, 0))
    net.seen = 0
    net.forward_backward(x, truth)
    early = net.delta(0)[0]
    net.seen = 20000
    net.forward_backward(x, truth)
    late = net.delta(0)[0]
    scale = 2 - .4 * .2
    assert early[0, 0, 1] == pytest.approx(scale * (.4 - sig(1)), rel=1e-5)
    assert early[2, 0, 1] == pytest.approx(scale * (math.log(.8) - .3), rel=1e-5)
    np.testing.assert_array_equal(early[:4, 0, 1], late[:4, 0, 1])
    assert early[0, 1, 1] == pytest.approx(.01 * (.5 - sig(1)), rel=1e-5)
    assert early[2, 1, 1] == pytest.approx(.01 * (0 - .3), rel=1e-5)
    assert late[0, 1, 1] == 0 and late[2, 1, 1] == 0


@pytest.mark.parametrize("thresh,suppressed", [(.1, [(0, 1), (1, 0)]), (.2, [])])
def test_region_hand_noobject_threshold(thresh: float, suppressed: list[tuple[int, int]],
                                        tmp_path: Path) -> None:
    """One anchor of 2x2 cells: every predicted box is (cell centre, 1 x 1).
    Truth (.3, .3, .5, .5) is in cell (0, 0).  IoUs of the other cells' boxes
    with it: cells (1, 0) and (0, 1) overlap it by .3 x .5 = .15, IoU
    .15 / (1 + .25 - .15) = .136; cell (1, 1) by .3 x .3, IoU .09 / 1.16 =
    .078.  With thresh .1 the first two get no no-object delta; with .2 none
    is spared."""
    net = hand_net(tmp_path, [2, 2], options_text(thresh=thresh, noobject_scale=.8,
                                                  object_scale=4))
    x = np.zeros((1, 7, 2, 2), np.float32)
    net.seen = 20000
    net.forward_backward(x, truth_rows((.3, .3, .5, .5, 0)))
    objectness = net.delta(0)[0, 4]
    expected = np.full((2, 2), .8 * (0 - .5))
    for j, i in suppressed:
        expected[j, i] = 0
    expected[0, 0] = 4 * (1 - .5)
    np.testing.assert_allclose(objectness, expected, rtol=1e-6)
    # the truth's coordinates: scale 2 - .25, tx = ty = .6, tw = th = log(.5 * 2 / 2)
    np.testing.assert_allclose(net.delta(0)[0, :4, 0, 0],
                               1.75 * np.array([.1, .1, math.log(.5), math.log(.5)]), rtol=1e-5)


@pytest.mark.parametrize("bias_match", [0, 1])
def test_region_hand_bias_match(bias_match: int, tmp_path: Path) -> None:
    """Anchors 1x1 and 2x2 cells (.5 and 1 of the image); truth (.25, .25, .5,
    .5) in cell (0, 0).  By anchor shape, anchor 0 fits it exactly (IoU 1 vs
    .25).  The predictions say otherwise: raw w = h = log 3 for anchor 0 (a
    1.5 x 1.5 box, shape IoU .25/2.25) and log .5 for anchor 1 (.5 x .5, shape
    IoU 1).  bias_match=1 picks anchor 0, bias_match=0 anchor 1."""
    net = hand_net(tmp_path, [1, 1, 2, 2], options_text(bias_match=bias_match, object_scale=5,
                                                        thresh=.6))
    x = np.zeros((1, 14, 2, 2), np.float32)
    x[0, 2:4] = math.log(3)
    x[0, 7 + 2:7 + 4] = math.log(.5)
    net.seen = 20000
    net.forward_backward(x, truth_rows((.25, .25, .5, .5, 1)))
    d = net.delta(0)[0]
    best = 0 if bias_match else 1
    other = 1 - best
    assert d[7 * best + 4, 0, 0] == pytest.approx(5 * (1 - .5))
    scale = 2 - .25
    tw = math.log(.5 * 2 / (1 if best == 0 else 2))
    raw_w = math.log(3) if best == 0 else math.log(.5)
    assert d[7 * best + 2, 0, 0] == pytest.approx(scale * (tw - raw_w), abs=1e-6)
    # the other anchor in that cell: anchor 1's .5 x .5 box at the cell centre
    # IS the truth (IoU 1 > thresh): spared; anchor 0's 1.5 x 1.5 box is not
    # (IoU .25/2.25): the no-object delta
    assert d[7 * other + 4, 0, 0] == pytest.approx(0 if other == 1 else -.5)
    assert not d[7 * other:7 * other + 4, 0, 0].any()


def test_region_hand_two_truths_one_cell(tmp_path: Path) -> None:
    """Two truths in cell (1, 1) with one anchor: the later one's deltas
    overwrite the earlier one's (coordinates, objectness and classes)."""
    net = hand_net(tmp_path, [1, 1], options_text(thresh=.99), classes=3)
    x = np.zeros((1, 8, 2, 2), np.float32)
    net.seen = 20000
    net.forward_backward(x, truth_rows((.6, .6, .4, .4, 0), (.7, .8, .2, .3, 2)))
    d = net.delta(0)[0, :, 1, 1]
    scale = 2 - .2 * .3
    np.testing.assert_allclose(d[:4], scale * np.array([.4 - .5, .6 - .5, math.log(.4),
                                                        math.log(.6)]), rtol=1e-5)
    assert d[4] == pytest.approx(.5)
    np.testing.assert_allclose(d[5:], [-1 / 3, -1 / 3, 2 / 3], rtol=1e-5)


# ---- (c) finite differences of the surrogate losses ---------------------------------------------
#
# With the assignment fixed (the scales S, targets T and classes of the
# reference at the unperturbed point: rescore's IoU target included, as
# darknet treats it as a constant):
#   region: L = sum 1/2 S (T - A)^2 over x, y, w, h, objectness
#             + class_scale * sum over assigned anchor-cells of -log p[class]
#     A is the activated output (logistic x, y, objectness; raw w, h), so
#     -dL/d raw = S (T - A) * A(1 - A) on x, y, objectness (the logistic
#     derivative the backward applies), S (T - raw) on w, h, and
#     class_scale * (onehot - p) on the class logits through the softmax.
#   yolo: the backward passes S (T - A) on unchanged, without the logistic
#     derivative, so it is not the gradient of a squared error.  It IS the
#     gradient of the binary cross-entropy: for A = logistic(raw),
#     -d/d raw [-(T log A + (1 - T) log(1 - A))] = T - A.  So
#   yolo: L = sum S * BCE(T, A) over x, y, objectness, classes
#           + sum 1/2 S (T - raw)^2 over w, h.
# L is evaluated in float64 on the engine's float32 forward outputs; eps and
# tolerance as in test_gradients.py.

def surrogate_region(activated: np.ndarray, targets: Targets) -> float:
    A = activated.astype(np.float64)
    box = 0.5 * np.sum(targets.scale[:, :, :5] * (targets.target[:, :, :5] - A[:, :, :5]) ** 2)
    b, a, j, i = np.nonzero(targets.cls >= 0)
    p = A[b, a, 5 + targets.cls[b, a, j, i], j, i]
    return float(box - targets.class_scale * np.sum(np.log(p)))


def surrogate_yolo(activated: np.ndarray, targets: Targets) -> float:
    A = activated.astype(np.float64)
    S, T = targets.scale, targets.target
    logistic_entries = np.ones(A.shape[2], bool)
    logistic_entries[2:4] = False
    As, Ss, Ts = A[:, :, logistic_entries], S[:, :, logistic_entries], T[:, :, logistic_entries]
    bce = -(Ts * np.log(As) + (1 - Ts) * np.log(1 - As))
    return float(np.sum(Ss * bce) + 0.5 * np.sum(S[:, :, 2:4] * (T[:, :, 2:4] - A[:, :, 2:4]) ** 2))


def finite_differences(net: Network, x: np.ndarray, truth: np.ndarray, loss, eps: float = 1e-2
                       ) -> np.ndarray:
    numeric = np.zeros(x.size)
    flat = x.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        values = []
        for step in (eps, -eps):
            flat[k] = old + step
            net.forward_backward(x, truth)
            values.append(loss())
        flat[k] = old
        numeric[k] = -(values[0] - values[1]) / (2 * eps)
    return numeric.reshape(x.shape)


@pytest.mark.parametrize("seen,rescore", [(0, 1), (20000, 0)])
def test_region_surrogate_finite_differences(seen: int, rescore: int, tmp_path: Path) -> None:
    anchors = REGION_ANCHORS[:2]
    options = dict(REGION_OPTIONS, rescore=rescore, bias_match=1)
    net = region_net(tmp_path, batch=2, w=3, h=3, anchors=anchors, classes=2,
                     options=options_text(**options), backward=True)
    rng = np.random.default_rng(30 + rescore)
    x = rng.normal(0, 1, net.input_shape).astype(np.float32)
    truth = random_truths(rng, 2, 3, REGION_TRUTHS, 2, (3, 3))
    targets = region_targets(x, truth, anchors=anchors, classes=2, seen=seen + 2, **options)
    net.seen = seen
    net.input_delta()
    net.forward_backward(x, truth)
    analytic = net.input_delta()
    shape = targets.activated.shape

    def loss() -> float:
        return surrogate_region(net.layer_output(0).reshape(shape), targets)

    numeric = finite_differences(net, x, truth, loss)
    assert relative_error(analytic, numeric) < 1e-3
    # the x, y, objectness deltas did go through the logistic derivative
    forward_delta = targets.delta(softmax_classes=True).reshape(x.shape)
    assert relative_error(analytic, forward_delta) > .1


def test_yolo_surrogate_finite_differences(tmp_path: Path) -> None:
    net = yolo_net(tmp_path, batch=2, w=3, h=3, anchors=YOLO_ANCHORS, mask=YOLO_MASK, classes=2,
                   options="ignore_thresh=.4\n")
    rng = np.random.default_rng(40)
    x = rng.normal(0, 1, net.input_shape).astype(np.float32)
    truth = random_truths(rng, 2, 4, 90, 2, (3, 3))
    net.input_delta()
    net.forward_backward(x, truth)
    targets = yolo_targets(net.layer_output(0), truth, anchors=YOLO_ANCHORS, mask=YOLO_MASK,
                           classes=2, net_w=6, net_h=6, ignore_thresh=.4, truth_thresh=1)
    assert targets.ious, "some truth must be matched in this layer"
    analytic = net.input_delta()
    shape = targets.activated.shape

    def loss() -> float:
        return surrogate_yolo(net.layer_output(1).reshape(shape), targets)

    numeric = finite_differences(net, x, truth, loss)
    assert relative_error(analytic, numeric) < 1e-3
    # the yolo delta reaches its input unchanged
    np.testing.assert_array_equal(net.delta(0), net.delta(1))


@pytest.mark.parametrize("box,what", [
    ((.5, .5, .2, .2, 3), "class=3"),        # 3 classes: 0..2
    ((.5, .5, .2, .2, -1), "class=-1"),
    ((-.4, .5, .2, .2, 0), "x=-0.4"),        # its cell index would be negative
    ((.5, float("nan"), .2, .2, 0), "y=nan"),
])
def test_boxes_the_loss_cannot_place_are_data_errors(tmp_path: Path, box: tuple[float, ...], what: str) -> None:
    """darknet writes such a box's deltas outside its anchor-cell (another
    image's entries, or past the buffer); here it is an error naming it,
    before anything is computed."""
    from pydarknet.errors import DataError

    net = region_net(tmp_path, batch=2, w=4, h=4, anchors=REGION_ANCHORS, classes=3)
    x = np.zeros(net.input_shape, np.float32)
    truth = np.zeros((2, net.truth_size), np.float32)
    truth[0, :5] = (.3, .3, .1, .1, 1)
    truth[1, 5:10] = box  # image 1, box 1 (after a good box 0)
    truth[1, :5] = (.6, .6, .2, .2, 2)
    with pytest.raises(DataError, match=f"image 1, box 1: .*{what}.*class in 0..2"):
        net.forward_backward(x, truth)
    truth[1, 5:10] = (1.0, 1.0, .2, .2, 2)  # the far edge is clamped into the last cell
    assert np.isfinite(net.forward_backward(x, truth))
