"""YOLOv2's region loss in PyTorch, with the engine's numbers.

    >>> result = region_loss(raw, truth, model.layers[-1].params, seen=net_seen)
    >>> result.loss.backward()     # the gradient the engine passes back
    >>> float(result.cost)         # the cost the engine reports

`raw` is the input of the [region] layer (the last convolution's output,
(B, A*(5+C), H, W)); `truth` holds darknet truth rows (x, y, w, h, class),
box centre and size relative to the image, at most 30 per image read, an
x of 0 ending an image's list (darknet's layout: (B, 150) or (B, T, 5)).

What the engine does (darknet_src/src/layers/region_layer.c): its forward
sets a delta on the ACTIVATED outputs (logistic x, y, objectness; raw w, h;
softmax or logistic classes), each entry

    delta = scale * (target - activation)

with the targets and scales of darknet's forward_region_layer (no-object
under `thresh`, the prior pull while seen < 12800, bias_match, coord_scale
* (2 - w*h), rescore, object/noobject/class scales; later truths overwrite
earlier ones in the same anchor and cell).  It reports the cost

    cost = sum(delta ** 2)

and its backward (darknet's GPU path, see DARKNET-NOTES.md) passes back
`propagated`: delta with the x, y and objectness entries multiplied by the
logistic derivative a*(1 - a), the w, h and class entries unchanged.

`cost` is not a function whose gradient is the delta (its gradient would
be 2*scale*delta*...), so `region_loss` returns both numbers:

  * `loss`: a differentiable surrogate whose gradient with respect to `raw`
    is exactly minus the engine's propagated delta:

        d loss / d raw == -propagated        (identity checked by the tests)

    built from the targets and scales held fixed (darknet treats them as
    constants: the IoU used for rescore, the best-anchor choice and the
    no-object mask carry no gradient):

        x, y, objectness:   0.5 * scale * (target - sigmoid(raw)) ** 2
        w, h:               0.5 * scale * (target - raw) ** 2
        softmax classes:    class_scale * cross_entropy(raw_classes, class)
        logistic classes:   scale * bce_with_logits(raw, target)

    (and, for background=1 with softmax=1, whose deltas are not the
    gradient of any such sum, the linear term -sum(propagated * raw)).
    Minimising `loss` is the objective darknet's training follows.

  * `cost`: darknet's reported cost, sum(delta ** 2), detached (what
    `Network.forward_backward` returns for a network whose only loss layer
    is this one).

`seen` is the number of images the engine has seen INCLUDING this batch:
darknet adds the batch to `seen` before the forward, so pass
`network.seen + batch` for a network whose counter is read before the step.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..cfg import CfgSection
from .layers import RegionParams

__all__ = ["MAX_TRUTHS", "PRIOR_SEEN_LIMIT", "RegionLoss", "region_loss"]

MAX_TRUTHS = 30           # darknet's region layer reads at most 30 truths per image
PRIOR_SEEN_LIMIT = 12800  # the prior pull applies while seen < 12800


class RegionLoss(NamedTuple):
    """The result of `region_loss` (see the module doc)."""

    loss: Tensor        # differentiable surrogate: d loss / d raw == -propagated
    cost: Tensor        # darknet's cost: sum(delta ** 2), detached
    delta: Tensor       # the region layer's delta after its forward, shaped like raw
    propagated: Tensor  # what the engine's backward passes to the previous layer
    stats: dict[str, float]  # darknet's training line: avg_iou, avg_class, avg_obj,
                             # avg_noobj, recall, count


def _params(params: RegionParams | CfgSection | Mapping[str, Any]) -> RegionParams:
    if isinstance(params, RegionParams):
        return params
    if isinstance(params, CfgSection):
        return RegionParams.from_section(params)
    values = dict(params)
    if "anchors" in values and isinstance(values["anchors"], str):
        values["anchors"] = [float(v) for v in values["anchors"].split(",")]
    return RegionParams(**values)


def _truth_rows(truth: Tensor | np.ndarray, batch: int) -> Tensor:
    t = torch.as_tensor(np.asarray(truth) if not isinstance(truth, Tensor) else truth)
    t = t.detach().to("cpu", torch.float32).reshape(batch, -1)
    if t.shape[1] % 5:
        raise ValueError(f"truth must hold (x, y, w, h, class) rows: {t.shape[1]} values per "
                         "image is not a multiple of 5")
    return t.reshape(batch, -1, 5)[:, :MAX_TRUTHS]


def _iou(ax: Tensor, ay: Tensor, aw: Tensor, ah: Tensor, bx: Tensor, by: Tensor, bw: Tensor,
         bh: Tensor) -> Tensor:
    """darknet's box_iou (centre, size), float32, broadcasting."""
    def overlap(x1: Tensor, w1: Tensor, x2: Tensor, w2: Tensor) -> Tensor:
        left = torch.maximum(x1 - w1 / 2, x2 - w2 / 2)
        right = torch.minimum(x1 + w1 / 2, x2 + w2 / 2)
        return right - left

    ow, oh = overlap(ax, aw, bx, bw), overlap(ay, ah, by, bh)
    inter = torch.where((ow < 0) | (oh < 0), torch.zeros_like(ow), ow * oh)
    return inter / (aw * ah + bw * bh - inter)


def _activate(z: Tensor, p: RegionParams) -> Tensor:
    """The region layer's output from its raw input, (B, A, E, H, W)."""
    parts = [torch.sigmoid(z[:, :, 0:2]), z[:, :, 2:4]]
    if p.background:
        if p.softmax:
            parts.append(torch.softmax(z[:, :, 4:], dim=2))
        else:
            parts += [z[:, :, 4:5], torch.sigmoid(z[:, :, 5:])]
    else:
        parts.append(torch.sigmoid(z[:, :, 4:5]))
        parts.append(torch.softmax(z[:, :, 5:], dim=2) if p.softmax
                     else torch.sigmoid(z[:, :, 5:]))
    return torch.cat(parts, dim=2)


def region_loss(output: Tensor, truth: Tensor | np.ndarray,
                layer_params: RegionParams | CfgSection | Mapping[str, Any], seen: int
                ) -> RegionLoss:
    """The engine's region loss on `output` (the raw input of [region],
    (B, A*(5+C), H, W)), darknet truth rows, the layer's options (a
    `RegionParams`, its cfg section, or a dict of options) and `seen`
    (images seen including this batch).  See the module doc for what each
    returned field equals."""
    p = _params(layer_params)
    if p.coords != 4:
        raise ValueError(f"coords={p.coords}: only coords=4 is implemented")
    if output.dim() != 4:
        raise ValueError(f"expected output (B, A*(5+C), H, W), got {tuple(output.shape)}")
    B, C, H, W = output.shape
    A, E = p.num, p.entries
    if C != A * E:
        raise ValueError(f"output has {C} channels; the region layer needs num * (classes + 5) "
                         f"= {A * E}")
    z = output.reshape(B, A, E, H, W)
    truths = _truth_rows(truth, B).to(output.device)
    with torch.no_grad():
        act = _activate(z.detach().float(), p)
        scale, target, stats = _targets(act, z.detach().float(), truths, p, seen)
        delta = scale * (target - act)
        propagated = delta.clone()
        logistic = [0, 1] if p.background else [0, 1, 4]
        a = act[:, :, logistic]
        propagated[:, :, logistic] = delta[:, :, logistic] * ((1 - a) * a)
        cost = (delta * delta).sum()
    loss = _surrogate(z, scale, target, propagated, p)
    return RegionLoss(loss, cost, delta.reshape(B, C, H, W), propagated.reshape(B, C, H, W),
                      stats)


def _targets(act: Tensor, raw: Tensor, truths: Tensor, p: RegionParams, seen: int
             ) -> tuple[Tensor, Tensor, dict[str, float]]:
    """darknet's forward_region_layer: the scale and target of every entry
    (delta = scale * (target - act)), and its statistics."""
    B, A, E, H, W = act.shape
    device = act.device
    scale = torch.zeros_like(act)
    target = torch.zeros_like(act)
    anchors = torch.tensor(p.anchors, dtype=torch.float32, device=device).reshape(A, 2)
    aw = anchors[:, 0].reshape(1, A, 1, 1)
    ah = anchors[:, 1].reshape(1, A, 1, 1)
    cols = torch.arange(W, dtype=torch.float32, device=device).reshape(1, 1, 1, W)
    rows = torch.arange(H, dtype=torch.float32, device=device).reshape(1, 1, H, 1)
    # predicted boxes (region_box): logistic x, y; w, h from the raw outputs
    px = (cols + act[:, :, 0]) / W
    py = (rows + act[:, :, 1]) / H
    pw = torch.exp(raw[:, :, 2]) * aw / W
    ph = torch.exp(raw[:, :, 3]) * ah / H

    # -- every anchor: no-object (unless it overlaps a truth by > thresh) --
    valid = []
    for b in range(B):
        n = 0
        while n < truths.shape[1] and truths[b, n, 0].item() != 0:  # x == 0 ends the list
            n += 1
        valid.append(n)
    best_iou = torch.zeros((B, A, H, W), dtype=torch.float32, device=device)
    for b in range(B):
        if valid[b]:
            t = truths[b, : valid[b]].reshape(-1, 1, 1, 1, 5)
            ious = _iou(px[b], py[b], pw[b], ph[b], t[..., 0], t[..., 1], t[..., 2], t[..., 3])
            best_iou[b] = torch.clamp(ious.max(dim=0).values, min=0)
    obj = act[:, :, 4]
    scale[:, :, 4] = torch.where(best_iou > p.thresh, torch.zeros_like(obj),
                                 torch.full_like(obj, p.noobject_scale))
    target[:, :, 4] = 1.0 if p.background else 0.0

    # -- while seen < 12800: every anchor's box pulled towards its prior --
    if seen < PRIOR_SEEN_LIMIT:
        prior_x = (cols + 0.5) / W
        prior_y = (rows + 0.5) / H
        prior_w, prior_h = aw / W, ah / H
        scale[:, :, 0:4] = 0.01
        target[:, :, 0] = (prior_x * W - cols).expand(B, A, H, W)
        target[:, :, 1] = (prior_y * H - rows).expand(B, A, H, W)
        target[:, :, 2] = torch.log(prior_w * W / aw).expand(B, A, H, W)
        target[:, :, 3] = torch.log(prior_h * H / ah).expand(B, A, H, W)

    # -- each truth: the best anchor of its cell --
    iou_sum = recall = cat_sum = obj_sum = 0.0
    count = 0
    for b in range(B):
        for t in range(valid[b]):
            tx, ty, tw, th, tc = (truths[b, t, k] for k in range(5))
            cls = int(tc.item())
            if not 0 <= cls < p.classes:
                raise ValueError(f"truth {t} of image {b} has class {tc.item():g}, outside "
                                 f"0..{p.classes - 1}")
            i = min(int((tx * W).item()), W - 1)
            j = min(int((ty * H).item()), H - 1)
            best, best_n = 0.0, 0
            for n in range(A):
                if p.bias_match:
                    sw, sh = anchors[n, 0] / W, anchors[n, 1] / H
                else:
                    sw, sh = pw[b, n, j, i], ph[b, n, j, i]
                zero = torch.zeros((), device=device)
                shape_iou = _iou(zero, zero, sw, sh, zero, zero, tw, th).item()
                if shape_iou > best:
                    best, best_n = shape_iou, n
            n = best_n
            box_scale = p.coord_scale * (2 - tw * th)
            scale[b, n, 0:4, j, i] = box_scale
            target[b, n, 0, j, i] = tx * W - i
            target[b, n, 1, j, i] = ty * H - j
            target[b, n, 2, j, i] = torch.log(tw * W / anchors[n, 0])
            target[b, n, 3, j, i] = torch.log(th * H / anchors[n, 1])
            iou = _iou(px[b, n, j, i], py[b, n, j, i], pw[b, n, j, i], ph[b, n, j, i],
                       tx, ty, tw, th)
            iou_value = iou.item()
            recall += iou_value > 0.5
            iou_sum += iou_value
            obj_sum += act[b, n, 4, j, i].item()
            scale[b, n, 4, j, i] = p.object_scale
            if p.background:
                target[b, n, 4, j, i] = 0.0
            else:
                target[b, n, 4, j, i] = iou if p.rescore else 1.0
            classes = slice(5, 5 + p.classes)
            class0 = scale[b, n, 5, j, i] * (target[b, n, 5, j, i] - act[b, n, 5, j, i])
            if not p.softmax and class0.item() != 0:
                # darknet's tag: a cell already given a truth only gets the new class pulled up
                scale[b, n, 5 + cls, j, i] = p.class_scale
                target[b, n, 5 + cls, j, i] = 1.0
            else:
                scale[b, n, classes, j, i] = p.class_scale
                target[b, n, classes, j, i] = 0.0
                target[b, n, 5 + cls, j, i] = 1.0
                cat_sum += act[b, n, 5 + cls, j, i].item()
            count += 1
    stats = {
        "avg_iou": iou_sum / count if count else 0.0,
        "avg_class": cat_sum / count if count else 0.0,
        "avg_obj": obj_sum / count if count else 0.0,
        "avg_noobj": float(act[:, :, 4].sum().item()) / (B * A * H * W),
        "recall": recall / count if count else 0.0,
        "count": float(count),
    }
    return scale, target, stats


def _surrogate(z: Tensor, scale: Tensor, target: Tensor, propagated: Tensor, p: RegionParams
               ) -> Tensor:
    """A loss whose gradient w.r.t. z is -propagated (see the module doc)."""
    def squared(index: list[int], value: Tensor) -> Tensor:
        return (0.5 * scale[:, :, index] * (target[:, :, index] - value) ** 2).sum()

    loss = squared([0, 1], torch.sigmoid(z[:, :, 0:2])) + squared([2, 3], z[:, :, 2:4])
    if p.background and p.softmax:
        # objectness and classes share one softmax whose delta is passed on as it is
        loss = loss - (propagated[:, :, 4:] * z[:, :, 4:]).sum()
        return loss
    if p.background:
        loss = loss + squared([4], z[:, :, 4:5])
    else:
        loss = loss + squared([4], torch.sigmoid(z[:, :, 4:5]))
    zc, sc, tc = z[:, :, 5:], scale[:, :, 5:], target[:, :, 5:]
    if p.softmax:
        # every class entry of an assigned anchor-cell has the same scale
        cell_scale = sc.amax(dim=2)
        loss = loss - (cell_scale * (tc * torch.log_softmax(zc, dim=2)).sum(dim=2)).sum()
    else:
        loss = loss + (sc * (F.softplus(zc) - tc * zc)).sum()
    return loss
