"""pydarknet.torch.region_loss against the engine's region layer.

The network is a lone [region] on the input (channels = num*(5+C)), so
the raw outputs are random numbers we choose and the engine's
`input_delta()` after `forward_backward` is exactly what its region
backward passes on (darknet's GPU path: x, y, objectness deltas times the
logistic derivative; see DARKNET-NOTES.md).  Checked, on random outputs
and truths:

  * loss value: `result.cost` == the engine's cost (sum of delta^2);
  * gradient: d result.loss / d raw == -(the engine's propagated delta);
  * the delta itself, and that the draw covers every term: no-object
    entries suppressed (best IoU > thresh) and penalised, the prior pull
    while seen < 12800 (and not after), rescore 0/1, bias_match 0/1,
    coord_scale * (2 - w*h), object/noobject/class scales, softmax and
    logistic classes, background=1, two truths in one cell (same anchor:
    the later one wins; logistic classes: darknet's "tag").

Tolerance: 1e-4 relative (the loss) and 1e-4 of the gradient's scale; both
sides compute in float32 with the same formulas, measured ~1e-7.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_CFG, relative_error  # noqa: E402
from pydarknet import Network  # noqa: E402
from pydarknet.cfg import Cfg  # noqa: E402
from pydarknet.torch import DarknetModel, RegionParams, region_loss  # noqa: E402

torch.set_num_threads(2)
TOLERANCE = 1e-4
PRIOR_SEEN = 12800
ANCHORS = np.array([[1.0, 1.5], [2.5, 2.0], [3.2, 3.6]])
CLASSES = 3
SCALES = "thresh=.3\ncoord_scale=1.5\nobject_scale=5\nnoobject_scale=.7\nclass_scale=1.3\n"


def region_cfg(tmp_path: Path, options: str, batch: int = 2, size: int = 4) -> Path:
    n = len(ANCHORS)
    text = (f"[net]\nbatch={batch}\nsubdivisions=1\nwidth={size}\nheight={size}\n"
            f"channels={n * (5 + CLASSES)}\nlearning_rate=0\nmomentum=0\ndecay=0\n\n"
            f"[region]\nanchors={','.join(f'{v:g}' for v in ANCHORS.ravel())}\n"
            f"classes={CLASSES}\ncoords=4\nnum={n}\n{options}")
    path = tmp_path / "region.cfg"
    path.write_text(text)
    return path


def random_truth(rng: np.random.Generator, batch: int, grid: int, per_image: int = 4
                 ) -> np.ndarray:
    """Boxes inside the image, centres off the cell borders; the second box
    of each image shares the first one's cell."""
    truth = np.zeros((batch, 30, 5), np.float32)
    for b in range(batch):
        for t in range(per_image):
            if t == 1:
                ci, cj = int(truth[b, 0, 0] * grid), int(truth[b, 0, 1] * grid)
            else:
                ci, cj = rng.integers(grid), rng.integers(grid)
            truth[b, t] = ((ci + rng.uniform(.1, .9)) / grid, (cj + rng.uniform(.1, .9)) / grid,
                           *rng.uniform(.1, .7, 2), rng.integers(CLASSES))
    return truth.reshape(batch, -1)


def engine_and_ours(cfg: Path, x: np.ndarray, truth: np.ndarray, seen: int):
    net = Network(cfg, train=True, batch=0, threads=1)
    net.input_delta()  # ask the engine to keep the input's delta
    net.seen = seen
    cost = net.forward_backward(x, truth)
    engine_delta = net.input_delta()
    section = Cfg.read(cfg).find("region")[0]
    raw = torch.from_numpy(x).requires_grad_()
    # darknet counts the batch before the forward: the layer sees seen + batch
    result = region_loss(raw, truth, section, seen + x.shape[0])
    result.loss.backward()
    net.close()
    return cost, engine_delta, result, raw.grad.numpy()


def check_parity(cost: float, engine_delta: np.ndarray, result, grad: np.ndarray) -> None:
    assert float(result.cost) == pytest.approx(cost, rel=TOLERANCE)
    assert relative_error(-grad, engine_delta) < TOLERANCE
    assert relative_error(result.propagated.numpy(), engine_delta) < TOLERANCE
    # the same entries are exactly zero (no-object suppression, unassigned classes)
    np.testing.assert_array_equal(grad == 0, engine_delta == 0)


def entries(t: np.ndarray) -> np.ndarray:
    """(B, A*(5+C), H, W) -> (B, A, 5+C, H, W)."""
    return t.reshape(t.shape[0], len(ANCHORS), 5 + CLASSES, *t.shape[2:])


@pytest.mark.parametrize("seen", [0, 20000])
@pytest.mark.parametrize("rescore", [0, 1])
@pytest.mark.parametrize("bias_match", [0, 1])
def test_region_loss_and_gradient_match_engine(seen: int, rescore: int, bias_match: int,
                                               tmp_path: Path) -> None:
    cfg = region_cfg(tmp_path, f"softmax=1\nrescore={rescore}\nbias_match={bias_match}\n"
                     + SCALES)
    rng = np.random.default_rng(10 + rescore + 2 * bias_match)
    x = rng.normal(0, 1, (2, len(ANCHORS) * (5 + CLASSES), 4, 4)).astype(np.float32)
    truth = random_truth(rng, 2, 4)
    cost, engine_delta, result, grad = engine_and_ours(cfg, x, truth, seen)
    check_parity(cost, engine_delta, result, grad)
    delta = entries(result.delta.numpy())
    obj = delta[:, :, 4]
    # no-object entries: some suppressed (IoU > thresh), some penalised
    assert (obj == 0).any() and (obj < 0).any()
    assert result.stats["count"] == 8
    # the prior pull: unassigned anchors get x deltas .01 * (.5 - x) only while seen < 12800
    act_x = 1 / (1 + np.exp(-entries(x)[:, :, 0]))
    prior = np.isclose(delta[:, :, 0], .01 * (.5 - act_x), rtol=1e-5, atol=0)
    if seen < PRIOR_SEEN:
        assert prior.sum() >= delta[:, :, 0].size - 8
        # compared on their own (they are small next to the truths' terms)
        pulled = np.broadcast_to(prior[:, :, None], delta.shape).copy()
        pulled[:, :, 4:] = False
        e = entries(engine_delta)
        assert relative_error(entries(-grad)[pulled], e[pulled]) < TOLERANCE
    else:
        assert not prior.any()
        assert np.count_nonzero(delta[:, :, 0]) <= 8


@pytest.mark.parametrize("options", [
    "softmax=0\nrescore=1\n",             # logistic classes (and darknet's tag)
    "softmax=1\nbackground=1\n",          # objectness replaced by a background softmax entry
    "softmax=0\nbackground=1\nrescore=1\n",
], ids=["logistic-classes", "background-softmax", "background-logistic"])
def test_region_variants_match_engine(options: str, tmp_path: Path) -> None:
    cfg = region_cfg(tmp_path, options + SCALES)
    rng = np.random.default_rng(21)
    x = rng.normal(0, 1, (2, len(ANCHORS) * (5 + CLASSES), 4, 4)).astype(np.float32)
    truth = random_truth(rng, 2, 4)
    check_parity(*engine_and_ours(cfg, x, truth, seen=100))


@pytest.mark.parametrize("softmax", [0, 1])
def test_two_truths_in_one_anchor(softmax: int, tmp_path: Path) -> None:
    """Two truths of the same shape in the same cell get the same anchor:
    the later truth's box, objectness and classes win (logistic classes:
    the earlier class stays pulled up, darknet's tag)."""
    cfg = region_cfg(tmp_path, f"softmax={softmax}\nbias_match=1\n" + SCALES, batch=1)
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (1, len(ANCHORS) * (5 + CLASSES), 4, 4)).astype(np.float32)
    truth = np.zeros((1, 30, 5), np.float32)
    truth[0, 0] = (.30, .55, .5, .6, 0)
    truth[0, 1] = (.40, .60, .5, .6, 2)
    cost, engine_delta, result, grad = engine_and_ours(cfg, x, truth.reshape(1, -1), 20000)
    check_parity(cost, engine_delta, result, grad)
    classes = entries(result.delta.numpy())[0, :, 5:, 2, 1]  # cell (i=1, j=2)
    anchor = int(np.flatnonzero(np.abs(classes).sum(axis=1))[0])
    pulled_up = np.flatnonzero(classes[anchor] > 0)
    assert list(pulled_up) == ([0, 2] if softmax == 0 else [2])


def test_params_forms_agree(tmp_path: Path) -> None:
    """RegionParams, the cfg section, or a dict of options."""
    section = Cfg.read(region_cfg(tmp_path, "softmax=1\n" + SCALES)).find("region")[0]
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(0, 1, (2, 24, 4, 4)).astype(np.float32))
    truth = random_truth(rng, 2, 4)
    options = dict(classes=CLASSES, num=3, anchors=",".join(map(str, ANCHORS.ravel())),
                   softmax=True, thresh=.3, coord_scale=1.5, object_scale=5,
                   noobject_scale=.7, class_scale=1.3)
    results = [region_loss(x, truth, p, 64) for p in
               (section, RegionParams.from_section(section), options)]
    for r in results[1:]:
        assert float(r.cost) == float(results[0].cost)
        assert float(r.loss) == float(results[0].loss)


def test_fine_tuning_gradients_match_engine(tmp_path: Path) -> None:
    """DarknetModel.region_loss through a network (conftest's tiny detector:
    conv + BN + leaky, maxpool, conv, region) in training mode: the
    parameter gradients autograd gives equal minus the engine's accumulated
    ones, so a converted model fine-tunes on the engine's objective."""
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY_CFG.replace("batch=1", "batch=2"))
    net = Network(cfg, train=True, batch=0, threads=1)
    net.randomize(4)
    weights = tmp_path / "tiny.weights"
    net.save_weights(weights)
    model = DarknetModel(cfg)
    model.load_darknet_weights(weights)
    model.train()
    rng = np.random.default_rng(8)
    x = rng.random((2, 3, 32, 32), dtype=np.float32)
    truth = np.zeros((2, 30, 5), np.float32)
    truth[:, 0] = (.3, .4, .2, .3, 1)
    truth[1, 1] = (.7, .6, .4, .2, 0)
    truth = truth.reshape(2, -1)
    net.seen = 0
    cost = net.forward_backward(x, truth)
    result = model.region_loss(torch.from_numpy(x), truth, seen=2)
    result.loss.backward()
    assert float(result.cost) == pytest.approx(cost, rel=TOLERANCE)
    # training-mode batch norm backpropagates as darknet's backward (which is
    # not the exact derivative of its forward: without it the first layer
    # would differ by ~2e-3)
    for index in (0, 2):
        engine = net.grads(index)
        conv = model.layers[index].conv
        assert relative_error(-conv.weight.grad.numpy().ravel(), engine["weights"]) < TOLERANCE
    bn = model.layers[0].bn
    assert relative_error(-bn.weight.grad.numpy(), net.grads(0)["scales"]) < TOLERANCE
    assert relative_error(-bn.bias.grad.numpy(), net.grads(0)["biases"]) < TOLERANCE
    engine_bias = net.grads(2)["biases"]
    assert relative_error(-model.layers[2].conv.bias.grad.numpy(), engine_bias) < TOLERANCE
    net.close()
