"""AP/mAP: hand-computed tiny cases, and exact agreement with pycocotools."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pydarknet.errors import DataError
from pydarknet.evaluate import (ImageDetections, ImageTruth, box_iou, coco_ap, coco_evaluate,
                                coco_image_ids, coco_results, evaluate_map, voc_ap,
                                write_coco_results)


def truth(*boxes, classes=None, difficult=None) -> ImageTruth:
    return ImageTruth(np.array(boxes, float).reshape(-1, 4),
                      classes if classes is not None else [0] * len(boxes), difficult)


def dets(*rows) -> ImageDetections:
    """rows: (x1, y1, x2, y2, score[, class])"""
    rows = [r if len(r) == 6 else (*r, 0) for r in rows]
    a = np.array(rows, float).reshape(-1, 6)
    return ImageDetections(a[:, :4], a[:, 5].astype(int), a[:, 4])


# Two images, class 0: TP, duplicate (FP), TP, FP; one truth never found.
HAND_TRUTHS = [truth([0, 0, 10, 10], [20, 20, 30, 30]), truth([0, 0, 10, 10])]
HAND_DETS = [dets((0, 0, 10, 10, .9), (0, 0, 10, 9, .8)),
             dets((1, 0, 11, 10, .7), (50, 50, 60, 60, .6))]


def test_voc_ap_hand_computed() -> None:
    r = evaluate_map(HAND_DETS, HAND_TRUTHS, 1)
    c = r.classes[0]
    np.testing.assert_allclose(c.recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(c.precision, [1, 1 / 2, 2 / 3, 1 / 2])
    # area under the envelope: 1/3 * 1 + 1/3 * 2/3
    assert c.ap == pytest.approx(5 / 9, abs=1e-12)
    assert r.map == pytest.approx(5 / 9, abs=1e-12)
    assert (c.n_truth, c.n_detections, c.tp, c.fp) == (3, 4, 2, 2)
    assert voc_ap(np.array([1 / 3, 1 / 3, 2 / 3, 2 / 3]), np.array([1, .5, 2 / 3, .5])) == \
        pytest.approx(5 / 9, abs=1e-12)
    assert "mAP@0.5 (all-point) = 55.56%" in r.format()


def test_coco_101_point_hand_computed() -> None:
    r = evaluate_map(HAND_DETS, HAND_TRUTHS, 1, method="coco")
    # recall thresholds 0..0.33 -> precision 1, 0.34..0.66 -> 2/3, above -> 0
    assert r.classes[0].ap == pytest.approx((34 * 1 + 33 * 2 / 3) / 101, abs=1e-12)
    assert coco_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(
        (51 * 1 + 50 * 0.5) / 101)


def test_a_taken_best_truth_is_a_duplicate_for_voc_not_for_coco() -> None:
    # the second detection's best truth is taken; the other (IoU .667) is free:
    # the VOC devkit (and AlexeyAB's detector map) count a duplicate, pycocotools a match
    d = [dets((0, 0, 10, 10, .9), (0, 0, 10, 10, .8))]
    t = [truth([0, 0, 10, 10], [2, 0, 12, 10])]
    voc = evaluate_map(d, t, 1).classes[0]
    assert (voc.tp, voc.fp, voc.ap) == (1, 1, 0.5)
    coco = evaluate_map(d, t, 1, method="coco").classes[0]
    assert (coco.tp, coco.fp) == (2, 0)
    # a best truth that is difficult: VOC ignores the detection, even with a free one past .5
    t = [truth([0, 0, 10, 10], [1, 0, 11, 10], difficult=[True, False])]
    voc = evaluate_map([dets((0, 0, 10, 10, .9))], t, 1).classes[0]
    assert (voc.tp, voc.fp, voc.ap) == (0, 0, 0.0)


def devkit_voc_eval(detections, truths, class_id: int, threshold: float = .5,
                    use_07_metric: bool = False) -> float:
    """The VOC devkit's voc_eval (all-point AP, or VOC2007's 11 points)
    written from its definition, loop by loop, as a reference independent
    of evaluate_map."""
    gts = []
    for t in truths:
        keep = t.classes == class_id
        gts.append({"boxes": t.boxes[keep], "difficult": t.difficult[keep],
                    "det": [False] * int(keep.sum())})
    npos = sum(int((~g["difficult"]).sum()) for g in gts)
    rows = [(float(d.scores[k]), i, d.boxes[k]) for i, d in enumerate(detections)
            for k in range(len(d.scores)) if d.classes[k] == class_id]
    order = sorted(range(len(rows)), key=lambda r: -rows[r][0])  # sorted() is stable
    tp, fp = [], []
    for r in order:
        _, image, box = rows[r]
        g = gts[image]
        ovmax, jmax = -math.inf, -1
        for j, gt in enumerate(g["boxes"]):
            iw = min(box[2], gt[2]) - max(box[0], gt[0])
            ih = min(box[3], gt[3]) - max(box[1], gt[1])
            inter = max(iw, 0.0) * max(ih, 0.0)
            union = (box[2] - box[0]) * (box[3] - box[1]) + (gt[2] - gt[0]) * (gt[3] - gt[1]) - inter
            overlap = inter / union if union > 0 else 0.0
            if overlap > ovmax:
                ovmax, jmax = overlap, j
        if ovmax > threshold:
            if g["difficult"][jmax]:
                continue
            if not g["det"][jmax]:
                g["det"][jmax] = True
                tp.append(1.0), fp.append(0.0)
            else:
                tp.append(0.0), fp.append(1.0)
        else:
            tp.append(0.0), fp.append(1.0)
    tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
    recall = tp_c / npos
    precision = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).eps)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            ap += (np.max(precision[recall >= t]) if np.sum(recall >= t) else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


@pytest.mark.parametrize("seed", range(6))
def test_voc_ap_equals_the_devkits(seed: int) -> None:
    """Crowded images (overlapping truths, near-duplicate detections, difficult
    boxes, tied scores): AP per class as the devkit's voc_eval computes it."""
    rng = np.random.default_rng(seed)
    truths, detections = [], []
    for _ in range(12):
        centres = rng.uniform(15, 30, (int(rng.integers(0, 8)), 2))
        sizes = rng.uniform(4, 16, (len(centres), 2))
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
        classes = rng.integers(0, 2, len(boxes))
        truths.append(ImageTruth(boxes, classes, rng.random(len(boxes)) < .2))
        # each truth found 0-3 times with jitter, plus strays; scores on a coarse grid (ties)
        copies = rng.integers(0, 4, len(boxes))
        found = np.repeat(boxes, copies, axis=0) + rng.normal(0, 2.5, (int(copies.sum()), 4))
        corners = rng.uniform(0, 50, (2, 2))
        strays = np.concatenate([corners, corners + rng.uniform(4, 16, (2, 2))], axis=1)
        rows = np.concatenate([found.reshape(-1, 4), strays])
        det_classes = np.concatenate([np.repeat(classes, copies), rng.integers(0, 2, 2)])
        detections.append(ImageDetections(rows, det_classes, rng.integers(1, 8, len(rows)) / 8))
    result = evaluate_map(detections, truths, 2)
    eleven = evaluate_map(detections, truths, 2, method="voc07")
    for c in range(2):
        assert result.classes[c].ap == pytest.approx(devkit_voc_eval(detections, truths, c),
                                                     abs=1e-12), c
        assert eleven.classes[c].ap == pytest.approx(
            devkit_voc_eval(detections, truths, c, use_07_metric=True), abs=1e-12), c
    assert "(11-point)" in eleven.format()


def test_voc07_hand_computed_and_bad_input() -> None:
    # recall .5 at precision 1 (one of two truths): 6 of the 11 points at 1
    r = evaluate_map([dets((0, 0, 10, 10, .9))], [truth([0, 0, 10, 10], [50, 50, 60, 60])], 1,
                     method="voc07")
    assert r.classes[0].ap == pytest.approx(6 / 11, abs=1e-12)
    with pytest.raises(ValueError, match="detections of image 0: class 3 is outside 0..1"):
        evaluate_map([dets((0, 0, 10, 10, .9, 3))], [truth([0, 0, 10, 10])], 2)
    with pytest.raises(ValueError, match="truths of image 0: class -1 is outside 0..1"):
        evaluate_map([dets()], [truth([0, 0, 10, 10], classes=[-1])], 2)
    empty = evaluate_map([dets()], [truth()], 2)
    assert "no ground truth to measure it on" in empty.format()


def test_difficult_truths_are_ignored() -> None:
    t = truth([0, 0, 10, 10], [50, 50, 60, 60], difficult=[True, False])
    r = evaluate_map([dets((0, 0, 10, 10, .9), (50, 50, 60, 60, .8))], [t], 1)
    c = r.classes[0]
    assert (c.n_truth, c.tp, c.fp, c.ap) == (1, 1, 0, 1.0)
    assert evaluate_map([dets((0, 0, 10, 10, .9))], [t], 1, method="coco").classes[0].tp == 0


def test_iou_threshold_strict_for_voc_inclusive_for_coco() -> None:
    d, t = [dets((0, 0, 10, 20, .9))], [truth([0, 0, 10, 10])]  # IoU exactly 0.5
    assert evaluate_map(d, t, 1).classes[0].ap == 0.0
    # pycocotools divides by tp + fp + eps: 1 - 1e-16
    assert evaluate_map(d, t, 1, method="coco").classes[0].ap == pytest.approx(1.0, abs=1e-15)
    assert evaluate_map(d, t, 1, iou_threshold=0.4).classes[0].ap == 1.0


def test_classes_without_truth_and_wrong_class() -> None:
    t = [truth([0, 0, 10, 10], classes=[0])]
    d = [dets((0, 0, 10, 10, .9, 1), (0, 0, 10, 10, .8, 0))]
    r = evaluate_map(d, t, 3, names=["a", "b", "c"])
    assert r.classes[0].ap == 1.0
    assert math.isnan(r.classes[1].ap) and r.classes[1].fp == 1
    assert math.isnan(r.classes[2].ap) and r.classes[2].n_detections == 0
    assert r.map == 1.0  # over classes with truth
    doc = r.to_dict()
    assert doc["map"] == 1.0 and doc["classes"][1]["ap"] is None
    assert (doc["tp"], doc["fp"], doc["fn"]) == (1, 1, 0)
    assert evaluate_map([dets()], [truth()], 1).map != evaluate_map([dets()], [truth()], 1).map  # nan


def test_report_threshold_counts() -> None:
    r = evaluate_map(HAND_DETS, HAND_TRUTHS, 1, report_thresh=0.75)
    assert (r.classes[0].tp, r.classes[0].fp) == (1, 1)
    t = r.totals()
    assert t["precision"] == 0.5 and t["recall"] == pytest.approx(1 / 3)


def test_box_iou_and_truth_from_labels() -> None:
    np.testing.assert_allclose(box_iou(np.array([0., 0, 10, 10]), np.array([[5., 0, 15, 10], [20, 20, 30, 30],
                                                                          [0, 0, 0, 0]])),
                               [50 / 150, 0, 0])
    t = ImageTruth.from_labels(np.array([[2, 0.5, 0.25, 0.5, 0.5]]), 200, 100)
    np.testing.assert_allclose(t.boxes, [[50, 0, 150, 50]])
    assert t.classes.tolist() == [2]


# -- against pycocotools -------------------------------------------------------

CAT_IDS = [2, 5, 11]


def synthetic(seed: int = 0, n_images: int = 25):
    """Ground truth (COCO dict) and jittered/false predictions with unique scores."""
    rng = np.random.default_rng(seed)
    images, anns, truths, detections = [], [], [], []
    ann_id = 1
    for i in range(n_images):
        image_id = 1000 + 3 * i
        W, H = 640, 480
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": W, "height": H})
        n = int(rng.integers(0, 6))
        wh = rng.uniform(20, 200, (n, 2))
        xy = rng.uniform(0, 1, (n, 2)) * ([W, H] - wh)
        cls = rng.integers(0, 3, n)
        boxes = np.concatenate([xy, xy + wh], axis=1)
        for b, c in zip(boxes, cls):
            anns.append({"id": ann_id, "image_id": image_id, "category_id": CAT_IDS[c],
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                         "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": 0})
            ann_id += 1
        truths.append(ImageTruth(boxes, cls))
        # predictions: most truths found (jittered, sometimes twice), some noise boxes
        pb, pc = [], []
        for b, c in zip(boxes, cls):
            for _ in range(int(rng.integers(0, 3))):
                size = (b[2:] - b[:2])
                pb.append(b + np.concatenate([rng.normal(0, .12, 2) * size, rng.normal(0, .12, 2) * size]))
                pc.append(c if rng.random() > 0.1 else rng.integers(0, 3))
        for _ in range(int(rng.integers(0, 3))):
            xy1 = rng.uniform(0, 400, 2)
            pb.append(np.concatenate([xy1, xy1 + rng.uniform(20, 200, 2)]))
            pc.append(rng.integers(0, 3))
        detections.append(ImageDetections(np.array(pb).reshape(-1, 4), np.array(pc, int),
                                          np.zeros(len(pb))))
    scores = rng.permutation(sum(len(d.scores) for d in detections)) / 1000 + 0.001
    k = 0
    for d in detections:
        d.scores = scores[k:k + len(d.scores)]
        k += len(d.scores)
    doc = {"info": {}, "images": images, "annotations": anns,
           "categories": [{"id": c, "name": f"c{c}"} for c in CAT_IDS]}
    return doc, truths, detections, [im["id"] for im in images]


def run_pycocotools(doc, results):
    gt = COCO()
    gt.dataset = json.loads(json.dumps(doc))
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(results), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_ap_equals_pycocotools(seed: int, capsys) -> None:
    doc, truths, detections, image_ids = synthetic(seed)
    results = coco_results(detections, image_ids, CAT_IDS, decimals=None)
    ev = run_pycocotools(doc, results)
    capsys.readouterr()
    precision = ev.eval["precision"]  # [T, R, K, A, M]; area "all", maxDets 100
    means = []
    for t_index, iou in enumerate(ev.params.iouThrs):
        ours = evaluate_map(detections, truths, 3, float(iou), method="coco")
        for k in range(3):
            ref = precision[t_index, :, k, 0, 2]
            if ref[0] == -1:
                assert math.isnan(ours.classes[k].ap)
            else:
                assert ours.classes[k].ap == pytest.approx(float(ref.mean()), abs=1e-12), (iou, k)
        means.append(ours.map)
    assert ev.stats[1] == pytest.approx(means[0], abs=1e-12)         # AP@.5
    assert ev.stats[2] == pytest.approx(means[5], abs=1e-12)         # AP@.75
    assert ev.stats[0] == pytest.approx(np.mean(means), abs=1e-12)   # AP@[.5:.95]
    # and the VOC variant differs only by interpolation on this data
    voc = evaluate_map(detections, truths, 3, 0.5).map
    assert abs(voc - means[0]) < 0.05
    # coco_evaluate wraps the same
    metrics = coco_evaluate(doc, results)
    # pycocotools' -1 (no truth in an area range) is nan here
    assert metrics.stats == pytest.approx([math.nan if v == -1 else v for v in ev.stats],
                                          abs=1e-12, nan_ok=True)
    assert metrics.map50 == pytest.approx(means[0], abs=1e-12)
    assert "Average Precision" in metrics.text


def test_perfect_predictions_and_results_file(tmp_path: Path) -> None:
    doc, truths, _, image_ids = synthetic(4, n_images=8)
    perfect = [ImageDetections(t.boxes, t.classes, np.linspace(1, 0.5, len(t.classes)))
               for t in truths]
    results = coco_results(perfect, image_ids, CAT_IDS)
    assert results[0]["category_id"] in CAT_IDS and len(results[0]["bbox"]) == 4
    first = next(t for t in truths if len(t.classes))
    x1, y1, x2, y2 = first.boxes[0]
    assert results[0]["bbox"] == [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)]
    path = write_coco_results(tmp_path / "r.json", results)
    assert json.loads(path.read_text()) == results
    (tmp_path / "gt.json").write_text(json.dumps(doc))
    m = coco_evaluate(tmp_path / "gt.json", json.loads(path.read_text()))
    assert m.map == pytest.approx(1.0) and m.map50 == pytest.approx(1.0)
    assert evaluate_map(perfect, truths, 3).map == 1.0
    # restricted to some images
    m = coco_evaluate(doc, results, image_ids=image_ids[:3])
    assert m.map == pytest.approx(1.0)
    assert coco_evaluate(doc, []).stats == [0.0] * 12


def test_coco_ids_and_errors() -> None:
    doc = {"images": [{"id": 7, "file_name": "a.jpg"}, {"id": 9, "file_name": "x/a.jpg"}]}
    assert coco_image_ids(doc, ["/o/images/train/a.jpg", "/o/images/train/x/a.jpg"]) == [7, 9]
    with pytest.raises(DataError, match="no image with this file_name"):
        coco_image_ids(doc, ["/o/images/b.jpg"])
    with pytest.raises(ValueError, match="class 3 has no category id"):
        coco_results([dets((0, 0, 1, 1, .5, 3))], [1], CAT_IDS)
    with pytest.raises(ValueError, match="2 detection lists for 1 images"):
        evaluate_map([dets(), dets()], [truth()], 1)
