"""Central finite-difference checks of every layer's backward pass.

Method: a tiny cfg = [net] + the layer(s) under test + a loss layer.  With
`[cost] type=sse` the loss is L = 1/2 * sum (truth - y)^2 over the output y
of the last layer before the cost, whose negative gradient is exactly the
cost layer's delta (truth - y); with a `[softmax]` loss layer and one-hot
truth it is L = -sum t log p.  L is evaluated in float64 in Python from the
engine's float32 training-mode forward; each parameter (through the writable
views `params(i)`) and each input value is moved by +-eps and

    numeric = -(L(p + eps) - L(p - eps)) / (2 eps)

is compared with what the backward pass left in `grads(i)` (weights,
biases, BN scales) and `input_delta()`: both hold the NEGATIVE gradient
(darknet's convention).  Every test runs a batch of 2 or more images so that
per-image offsets are exercised.

Tolerance: `relative_error` (conftest) = max |analytic - numeric| /
max |numeric| < TOL = 1e-3.  The forward is float32, so L carries a rounding
noise of ~1e-7 of the sum of its terms; divided by 2 eps (eps = 1e-2) that
dominates the error, above the central difference's truncation error
eps^2/6 * L''' (measured worst case 2.2e-4, and it doubles when eps is
halved: noise, not truncation).  A real bug (a wrong index, factor or sign)
shows up as an O(1) error; deliberately broken engines (a dropped scale, an
overwrite instead of an accumulation, a wrong offset) fail these tests.

Kinks: inputs are chosen away from them, so that no perturbation crosses one
(leaky/relu and the other piecewise activations: pre-activations kept
|z - kink| > 0.2 > eps * max|input|; maxpool: window values at least 0.1
apart, so no tie and no change of argmax under +-eps).

The region and yolo losses are checked by finite differences of their
surrogate losses in tests/test_region_loss.py (they need the target
assignment computed there).
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import relative_error
from pydarknet import Network

TOL = 1e-3
EPS = 1e-2


# ---- building and probing small networks ----------------------------------------------------

def make_net(tmp_path: Path, layers: str, *, batch: int, c: int, h: int, w: int,
             name: str = "grad.cfg") -> Network:
    text = (f"[net]\nbatch={batch}\nsubdivisions=1\nwidth={w}\nheight={h}\nchannels={c}\n"
            f"learning_rate=0\nmomentum=0\ndecay=0\n\n{layers}")
    path = tmp_path / name
    path.write_text(text)
    net = Network(path, train=True, batch=0, threads=1)
    net.randomize(1)
    return net


SSE = "\n[cost]\ntype=sse\n"


class GradCheck:
    """One network, one input and truth; analytic and numerical gradients."""

    def __init__(self, net: Network, x: np.ndarray, truth: np.ndarray, *, loss: str = "sse",
                 reseed: int | None = None) -> None:
        self.net = net
        self.x = np.ascontiguousarray(x, np.float32)
        self.truth = np.ascontiguousarray(truth, np.float32)
        self.batch = net.info.batch
        self.kind = loss
        self.reseed = reseed  # dropout: same mask on every forward
        n = len(net)
        self.out_layer = n - 2 if loss == "sse" else n - 1
        assert net.layer(n - 1).type == ("cost" if loss == "sse" else "softmax")

    def forward(self) -> None:
        if self.reseed is not None:
            self.net.seed(self.reseed)
        self.net.forward_backward(self.x, self.truth)

    def loss(self) -> float:
        self.forward()
        y = self.net.layer_output(self.out_layer).reshape(self.batch, -1).astype(np.float64)
        t = self.truth.reshape(self.batch, -1).astype(np.float64)
        if self.kind == "sse":
            return float(0.5 * np.sum((t - y) ** 2))
        return float(-np.sum(t * np.log(y)))

    def analytic(self) -> tuple[dict[int, dict[str, np.ndarray]], np.ndarray]:
        """The negative gradients one backward pass leaves (grads from zero)."""
        self.net.input_delta()  # ask the engine to keep the input's delta
        self.net.zero_grads()
        self.forward()
        grads = {i: {k: v.copy() for k, v in self.net.grads(i).items()}
                 for i in range(len(self.net))}
        return grads, self.net.input_delta()

    def _numeric(self, values: np.ndarray, eps: float) -> np.ndarray:
        """-dL/dv for each entry of the writable float32 array `values`."""
        out = np.zeros(values.size)
        flat = values.reshape(-1)
        for k in range(flat.size):
            old = flat[k]
            flat[k] = old + eps
            plus = self.loss()
            flat[k] = old - eps
            minus = self.loss()
            flat[k] = old
            # the step actually taken in float32
            out[k] = -(plus - minus) / (float(np.float32(old + eps)) - float(np.float32(old - eps)))
        return out.reshape(values.shape)

    def numeric_param(self, layer: int, kind: str, eps: float = EPS) -> np.ndarray:
        return self._numeric(self.net.params(layer)[kind], eps)

    def numeric_input(self, eps: float = EPS) -> np.ndarray:
        return self._numeric(self.x, eps)

    def check_all(self, eps: float = EPS, tol: float = TOL,
                  skip: tuple[tuple[int, str], ...] = ()) -> dict[str, float]:
        """Every parameter of every layer and the input; returns the errors."""
        grads, input_delta = self.analytic()
        errors = {}
        for i, kinds in grads.items():
            for kind, analytic in kinds.items():
                if (i, kind) in skip:
                    continue
                errors[f"{i}.{kind}"] = relative_error(analytic, self.numeric_param(i, kind, eps))
        errors["input"] = relative_error(input_delta, self.numeric_input(eps))
        bad = {k: v for k, v in errors.items() if not v < tol}
        assert not bad, f"analytic vs numerical gradient, relative errors: {errors}"
        return errors


def rng_for(name: str) -> np.random.Generator:
    """A generator seeded by a test case's name (stable across runs)."""
    return np.random.default_rng(zlib.crc32(name.encode()))


def normal(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def leaky_inverse(y: np.ndarray) -> np.ndarray:
    return np.where(y > 0, y, 10 * y)


def keep_leaky_off_kink(check: "GradCheck", layer: int, margin: float = .2) -> None:
    """Assert that the leaky pre-activations of `layer` stay `margin` from 0
    (so +-eps on one value never crosses the kink)."""
    check.forward()
    z = leaky_inverse(check.net.layer_output(layer).astype(np.float64))
    assert np.abs(z).min() > margin, f"a pre-activation is {np.abs(z).min():.3g} from the kink"
    assert (z > 0).any() and (z < 0).any(), "both pieces of leaky must be exercised"


def split_filters(params: dict[str, np.ndarray], shift: float, weight_scale: float) -> None:
    """Biases alternately +shift and -shift and small weights: each filter's
    pre-activations stay on one side of 0, half the filters on each side."""
    n = params["biases"].size
    params["biases"][:] = np.where(np.arange(n) % 2 == 0, shift, -shift)
    params["weights"][:] *= weight_scale


# ---- convolution -------------------------------------------------------------------------------

CONV_CASES = {
    # name: (input c, h, w, layer text)
    "3x3": (3, 5, 5, "filters=4\nsize=3\nstride=1\npad=1\nactivation=logistic"),
    "3x3-unpadded": (2, 5, 6, "filters=3\nsize=3\nstride=1\npad=0\nactivation=tanh"),
    "strided": (3, 5, 5, "filters=4\nsize=3\nstride=2\npad=1\nactivation=logistic"),
    "strided-even-2x2": (2, 6, 6, "filters=3\nsize=2\nstride=2\npadding=0\nactivation=linear"),
    "grouped": (4, 4, 5, "filters=6\nsize=3\nstride=1\npad=1\ngroups=2\nactivation=logistic"),
    "1x1": (4, 3, 4, "filters=5\nsize=1\nstride=1\npad=1\nactivation=logistic"),
    "1x1-strided": (3, 5, 5, "filters=2\nsize=1\nstride=2\npad=0\nactivation=tanh"),
    "5x5": (2, 6, 6, "filters=2\nsize=5\nstride=1\npad=1\nactivation=logistic"),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_convolutional(case: str, tmp_path: Path) -> None:
    c, h, w, options = CONV_CASES[case]
    net = make_net(tmp_path, f"[convolutional]\n{options}\n" + SSE, batch=2, c=c, h=h, w=w)
    rng = rng_for(case)
    x = normal(rng, 2, c, h, w)
    truth = normal(rng, 2, net.truth_size)
    GradCheck(net, x, truth).check_all()


def test_convolutional_leaky_two_layers(tmp_path: Path) -> None:
    """Two stacked convolutions: the delta crosses a leaky activation and a
    convolution's input gradient feeds the next layer's backward."""
    text = ("[convolutional]\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=leaky\n\n"
            "[convolutional]\nfilters=3\nsize=3\nstride=1\npad=1\nactivation=linear\n" + SSE)
    net = make_net(tmp_path, text, batch=2, c=2, h=5, w=5)
    split_filters(net.params(0), 2.0, .25)
    rng = np.random.default_rng(5)
    check = GradCheck(net, normal(rng, 2, 2, 5, 5), normal(rng, 2, net.truth_size))
    keep_leaky_off_kink(check, 0)
    check.check_all()


# ---- batch normalisation in training mode -------------------------------------------------------
#
# darknet's training batch norm (reproduced by the engine on purpose):
#  - forward: x_hat = (x - mean) / (sqrt(var) + 1e-6) with the UNBIASED
#    variance var = sum (x - mean)^2 / (N - 1), N = batch * spatial;
#  - backward: differentiates x_hat = (x - mean) / sqrt(var + 1e-5) and takes
#    d var / d x_i = 2 (x_i - mean) / N (the biased variance's derivative).
# The epsilon mismatch changes the gradient by ~(1e-5/2 + 1e-6)/var relative:
# with var ~ 1 here that is < 1e-5, far below TOL, so it is ignored.  The
# 1/N vs 1/(N - 1) mismatch is not small (1/(N-1) of the variance term, a few
# percent for N = 32): the tests compute it exactly in float64,
#     delta_darknet - delta_true = var_delta * 2 (x - mean) * (1/N - 1/(N-1)),
#     var_delta = -1/2 (var + 1e-5)^(-3/2) * sum delta_xhat * (x - mean),
# carry it through the layer's linear map to the weights and the input, and
# check analytic - correction against the finite differences.  They also check
# that the correction is visible (> 10 TOL), i.e. that darknet's formula, not
# the exact gradient, is what the engine computes.  The scale and bias
# gradients do not go through the normalisation and are compared directly.

def im2col(x: np.ndarray, size: int, stride: int, pad: int) -> np.ndarray:
    """(C, H, W) -> (C*size*size, out_h*out_w), darknet's row order."""
    c, h, w = x.shape
    oh, ow = (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((c, size, size, oh, ow))
    for ky in range(size):
        for kx in range(size):
            cols[:, ky, kx] = xp[:, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride]
    return cols.reshape(c * size * size, oh * ow)


def col2im(cols: np.ndarray, shape: tuple[int, int, int], size: int, stride: int,
           pad: int) -> np.ndarray:
    """The adjoint of im2col."""
    c, h, w = shape
    oh, ow = (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1
    xp = np.zeros((c, h + 2 * pad, w + 2 * pad))
    cols = cols.reshape(c, size, size, oh, ow)
    for ky in range(size):
        for kx in range(size):
            xp[:, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride] += cols[:, ky, kx]
    return xp[:, pad:pad + h, pad:pad + w]


def bn_quirk(x: np.ndarray, truth: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
             activation: str) -> np.ndarray:
    """darknet's BN input delta minus the exact one, for a BN layer (pre-BN
    values x, shape (B, F, S)) followed by `activation` and the sse cost."""
    B, F, S = x.shape
    n = B * S
    mean = x.mean(axis=(0, 2), keepdims=True)
    var = ((x - mean) ** 2).sum(axis=(0, 2), keepdims=True) / (n - 1)
    g, b = gamma.reshape(1, F, 1), beta.reshape(1, F, 1)
    z = g * (x - mean) / (np.sqrt(var) + 1e-6) + b
    if activation == "leaky":
        y, slope = np.where(z > 0, z, .1 * z), np.where(z > 0, 1.0, .1)
    else:
        assert activation == "linear"
        y, slope = z, np.ones_like(z)
    delta_xhat = g * (truth.reshape(B, F, S) - y) * slope
    var_delta = -.5 * (var + 1e-5) ** -1.5 * (delta_xhat * (x - mean)).sum(axis=(0, 2),
                                                                            keepdims=True)
    return var_delta * 2 * (x - mean) * (1 / n - 1 / (n - 1))


def check_bn(check: GradCheck, layer: int, correction_w: np.ndarray,
             correction_in: np.ndarray) -> None:
    grads, input_delta = check.analytic()
    g = grads[layer]
    for kind in ("scales", "biases"):
        err = relative_error(g[kind], check.numeric_param(layer, kind))
        assert err < TOL, (kind, err)
    numeric_w = check.numeric_param(layer, "weights")
    numeric_in = check.numeric_input()
    # darknet's formula, not the exact gradient: the correction is visible ...
    assert relative_error(g["weights"], numeric_w) > 10 * TOL
    assert relative_error(input_delta, numeric_in) > 10 * TOL
    # ... and accounts for the whole difference
    assert relative_error(g["weights"] - correction_w.ravel(), numeric_w) < TOL
    assert relative_error(input_delta - correction_in, numeric_in) < TOL


@pytest.mark.parametrize("activation", ["linear", "leaky"])
def test_convolutional_batchnorm_training(activation: str, tmp_path: Path) -> None:
    B, C, H, W, F, size, stride, pad = 2, 3, 4, 4, 4, 3, 1, 1
    text = (f"[convolutional]\nbatch_normalize=1\nfilters={F}\nsize={size}\nstride={stride}\n"
            f"pad=1\nactivation={activation}\n" + SSE)
    net = make_net(tmp_path, text, batch=B, c=C, h=H, w=W)
    x = normal(np.random.default_rng(3), B, C, H, W)
    truth = normal(np.random.default_rng(4), B, net.truth_size)
    p = net.params(0)
    if activation == "leaky":
        # BN output = scale * x_hat + beta with |x_hat| < 2.5: scales .2-.3
        # and betas +-1.2 keep every filter on one side of leaky's kink
        p["scales"][:] = np.linspace(.2, .3, F)
        p["biases"][:] = [1.2, -1.2, 1.2, -1.2]
        keep_leaky_off_kink(GradCheck(net, x, truth), 0)
    else:
        p["scales"][:] = np.linspace(.6, 1.4, F)  # not all 1, so a missing factor shows
    weights = p["weights"].astype(np.float64).reshape(F, -1)
    cols = [im2col(x[b].astype(np.float64), size, stride, pad) for b in range(B)]
    pre_bn = np.stack([weights @ cols[b] for b in range(B)])
    delta = bn_quirk(pre_bn, truth, p["scales"].astype(np.float64),
                     p["biases"].astype(np.float64), activation)
    correction_w = sum(delta[b] @ cols[b].T for b in range(B))
    correction_in = np.stack([col2im(weights.T @ delta[b], (C, H, W), size, stride, pad)
                              for b in range(B)])
    check_bn(GradCheck(net, x, truth), 0, correction_w, correction_in)


def test_connected_batchnorm_training(tmp_path: Path) -> None:
    B, n_in, n_out = 6, 5, 3
    text = f"[connected]\nbatch_normalize=1\noutput={n_out}\nactivation=linear\n" + SSE
    net = make_net(tmp_path, text, batch=B, c=n_in, h=1, w=1)
    p = net.params(0)
    p["scales"][:] = [.7, 1.2, 1.5]
    rng = np.random.default_rng(8)
    x = normal(rng, B, n_in, 1, 1)
    truth = normal(rng, B, n_out)
    weights = p["weights"].astype(np.float64).reshape(n_out, n_in)
    inputs = x.reshape(B, n_in).astype(np.float64)
    pre_bn = (inputs @ weights.T)[:, :, None]
    delta = bn_quirk(pre_bn, truth, p["scales"].astype(np.float64),
                     p["biases"].astype(np.float64), "linear")[:, :, 0]
    check_bn(GradCheck(net, x, truth), 0, delta.T @ inputs, (delta @ weights).reshape(x.shape))


# ---- connected -----------------------------------------------------------------------------------

def test_connected(tmp_path: Path) -> None:
    text = ("[connected]\noutput=4\nactivation=tanh\n\n"
            "[connected]\noutput=3\nactivation=logistic\n" + SSE)
    net = make_net(tmp_path, text, batch=3, c=2, h=2, w=3)
    rng = np.random.default_rng(9)
    GradCheck(net, normal(rng, 3, 2, 2, 3), normal(rng, 3, 3)).check_all()


def test_connected_input_with_two_consumers(tmp_path: Path) -> None:
    """Layer 0's output feeds the connected layer and the route: the
    connected backward must ADD its input gradient to what the route's
    backward (run first) left there, as darknet's connected layer does."""
    text = ("[convolutional]\nfilters=3\nsize=1\nstride=1\npad=0\nactivation=logistic\n\n"
            "[connected]\noutput=4\nactivation=tanh\n\n"
            "[route]\nlayers=-1,-2\n" + SSE)
    net = make_net(tmp_path, text, batch=2, c=2, h=1, w=1)
    rng = np.random.default_rng(22)
    GradCheck(net, normal(rng, 2, 2, 1, 1), normal(rng, 2, 7)).check_all()


# ---- pooling ------------------------------------------------------------------------------------

def distinct_values(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values at least 0.1 apart: no ties, and +-eps never changes an argmax."""
    n = int(np.prod(shape))
    values = (rng.permutation(n) - n / 2) * 0.1 + rng.uniform(-.02, .02, n)
    return values.reshape(shape).astype(np.float32)


MAXPOOL_CASES = {
    "2x2-stride2": ((2, 6, 6), "size=2\nstride=2"),
    "2x2-stride2-odd-input": ((2, 5, 5), "size=2\nstride=2"),
    "2x2-stride1": ((2, 4, 4), "size=2\nstride=1"),  # yolov3-tiny: keeps 4x4
    "3x3-stride2": ((2, 5, 5), "size=3\nstride=2"),
    "3x3-stride1-padding0": ((1, 5, 6), "size=3\nstride=1\npadding=0"),
}


@pytest.mark.parametrize("case", sorted(MAXPOOL_CASES))
def test_maxpool(case: str, tmp_path: Path) -> None:
    (c, h, w), options = MAXPOOL_CASES[case]
    net = make_net(tmp_path, f"[maxpool]\n{options}\n" + SSE, batch=2, c=c, h=h, w=w)
    rng = rng_for(case)
    x = distinct_values(rng, (2, c, h, w))
    truth = normal(rng, 2, net.truth_size)
    GradCheck(net, x, truth).check_all()
    if case == "2x2-stride1":
        assert net.layer(0).output_shape == (c, h, w)


def test_avgpool(tmp_path: Path) -> None:
    net = make_net(tmp_path, "[avgpool]\n" + SSE, batch=2, c=3, h=4, w=5)
    rng = np.random.default_rng(10)
    GradCheck(net, normal(rng, 2, 3, 4, 5), normal(rng, 2, 3)).check_all()


# ---- route, reorg, shortcut, upsample -----------------------------------------------------------

def test_route_two_inputs(tmp_path: Path) -> None:
    """Layer 0 feeds both layer 1 (a 1x1 convolution) and the route: its delta
    is the sum of two contributions."""
    text = ("[convolutional]\nfilters=2\nsize=3\nstride=1\npad=1\nactivation=logistic\n\n"
            "[convolutional]\nfilters=3\nsize=1\nstride=1\npad=1\nactivation=tanh\n\n"
            "[route]\nlayers=-1,-2\n\n"
            "[convolutional]\nfilters=2\nsize=3\nstride=1\npad=1\nactivation=linear\n" + SSE)
    net = make_net(tmp_path, text, batch=2, c=2, h=4, w=4)
    assert net.layer(2).output_shape == (5, 4, 4)
    rng = np.random.default_rng(11)
    GradCheck(net, normal(rng, 2, 2, 4, 4), normal(rng, 2, net.truth_size)).check_all()


@pytest.mark.parametrize("reverse", [0, 1])
def test_reorg(reverse: int, tmp_path: Path) -> None:
    shape = (8, 2, 2) if reverse else (4, 4, 6)
    net = make_net(tmp_path, f"[reorg]\nstride=2\nreverse={reverse}\n" + SSE, batch=2, c=shape[0],
                   h=shape[1], w=shape[2])
    expected = (2, 4, 4) if reverse else (16, 2, 3)
    assert net.layer(0).output_shape == expected
    rng = np.random.default_rng(12 + reverse)
    x = normal(rng, 2, *shape)
    GradCheck(net, x, normal(rng, 2, net.truth_size)).check_all()
    # a permutation: every input value reaches exactly one output
    GradCheck(net, x, np.zeros((2, net.truth_size))).forward()
    out = net.layer_output(0)
    assert sorted(out.ravel()) == sorted(x.ravel())


SHORTCUT_CASES = {
    # name: (input c, h, w, the layer `from` points at, the layer before the shortcut)
    "same-size": (2, 4, 4, "filters=3\nsize=3\nstride=1\npad=1",
                  "filters=3\nsize=3\nstride=1\npad=1"),
    "from-larger": (2, 6, 6, "filters=3\nsize=3\nstride=1\npad=1",
                    "filters=3\nsize=3\nstride=2\npad=1"),  # from 6x6 into 3x3: strided
    "from-fewer-channels": (2, 6, 6, "filters=2\nsize=3\nstride=2\npad=1",
                            "filters=4\nsize=3\nstride=1\npad=1"),  # 2 channels into 4
}


def shortcut_net(tmp_path: Path, case: str, alpha: float, beta: float) -> Network:
    c, h, w, first, second = SHORTCUT_CASES[case]
    text = (f"[convolutional]\n{first}\nactivation=logistic\n\n"
            f"[convolutional]\n{second}\nactivation=tanh\n\n"
            f"[shortcut]\nfrom=-2\nalpha={alpha}\nbeta={beta}\nactivation=logistic\n" + SSE)
    return make_net(tmp_path, text, batch=2, c=c, h=h, w=w)


@pytest.mark.parametrize("case", sorted(SHORTCUT_CASES))
def test_shortcut(case: str, tmp_path: Path) -> None:
    # alpha != 1 only where the two inputs cover each other (see the quirk below)
    alpha = .7 if case != "from-fewer-channels" else 1
    net = shortcut_net(tmp_path, case, alpha, 1.3)
    c, h, w = SHORTCUT_CASES[case][:3]
    rng = rng_for(case)
    GradCheck(net, normal(rng, 2, c, h, w), normal(rng, 2, net.truth_size)).check_all()


def test_shortcut_alpha_quirk(tmp_path: Path) -> None:
    """darknet quirk, reproduced: the forward computes alpha*in + beta*from only
    over the channels both have (the rest of the output is `in` unscaled),
    but the backward passes alpha*delta to ALL of the input.  With alpha != 1
    and `from` narrower than the input, the input gradient of the extra
    channels is therefore alpha times the true one (real cfgs use alpha = 1)."""
    alpha = .7
    net = shortcut_net(tmp_path, "from-fewer-channels", alpha, 1.3)
    rng = np.random.default_rng(21)
    check = GradCheck(net, normal(rng, 2, 2, 6, 6), normal(rng, 2, net.truth_size))
    check.analytic()
    # the shortcut's delta w.r.t. its input (layer 1's output, 4 channels; `from` has 2):
    # layer 1's delta after its tanh derivative, divided back by that derivative
    shortcut_delta = net.delta(2)
    y1 = net.layer_output(1)
    received = net.delta(1) / (1 - y1 ** 2)
    np.testing.assert_allclose(received, alpha * shortcut_delta, rtol=1e-4, atol=1e-7)
    # ... while the exact gradient of the extra channels is the unscaled delta:
    # layer 1's bias gradient of channels 2, 3 is alpha times the numerical one
    numeric = check.numeric_param(1, "biases")
    analytic = check.analytic()[0][1]["biases"]
    np.testing.assert_allclose(analytic[:2], numeric[:2], rtol=TOL, atol=TOL * abs(numeric).max())
    np.testing.assert_allclose(analytic[2:], alpha * numeric[2:], rtol=TOL,
                               atol=TOL * abs(numeric).max())


def test_shortcut_from_smaller_upsamples(tmp_path: Path) -> None:
    """`from` smaller than the input: darknet samples it onto every
    `sample`-th position (a 2x2 layer added into a 4x4 one)."""
    text = ("[convolutional]\nfilters=3\nsize=3\nstride=2\npad=1\nactivation=logistic\n\n"
            "[upsample]\nstride=2\n\n"
            "[shortcut]\nfrom=-2\nactivation=linear\n" + SSE)
    net = make_net(tmp_path, text, batch=2, c=2, h=4, w=4)
    assert net.layer(0).output_shape == (3, 2, 2) and net.layer(2).output_shape == (3, 4, 4)
    rng = np.random.default_rng(14)
    GradCheck(net, normal(rng, 2, 2, 4, 4), normal(rng, 2, net.truth_size)).check_all()


@pytest.mark.parametrize("options,shape,out", [
    ("stride=2", (2, 3, 2), (2, 6, 4)),
    ("stride=3\nscale=.5", (1, 2, 2), (1, 6, 6)),
    ("stride=-2", (2, 4, 6), (2, 2, 3)),
    ("stride=-2\nscale=.25", (1, 4, 4), (1, 2, 2)),
])
def test_upsample(options: str, shape: tuple[int, int, int], out: tuple[int, int, int],
                  tmp_path: Path) -> None:
    net = make_net(tmp_path, f"[upsample]\n{options}\n" + SSE, batch=2, c=shape[0], h=shape[1],
                   w=shape[2])
    assert net.layer(0).output_shape == out
    rng = np.random.default_rng(15)
    GradCheck(net, normal(rng, 2, *shape), normal(rng, 2, net.truth_size)).check_all()


# ---- softmax as the loss ------------------------------------------------------------------------

@pytest.mark.parametrize("groups", [1, 2])
def test_softmax_cross_entropy(groups: int, tmp_path: Path) -> None:
    """L = -sum t log p with one-hot truth per group; the softmax layer's delta
    is t - p and its backward passes it on, so the connected layer below
    receives -dL/dlogits."""
    B, n = 3, 6
    text = f"[connected]\noutput={n}\nactivation=linear\n\n[softmax]\ngroups={groups}\n"
    net = make_net(tmp_path, text, batch=B, c=4, h=1, w=1)
    rng = np.random.default_rng(16 + groups)
    truth = np.zeros((B, n), np.float32)
    size = n // groups
    for b in range(B):
        for g in range(groups):
            truth[b, g * size + rng.integers(size)] = 1
    check = GradCheck(net, normal(rng, B, 4, 1, 1, scale=2), truth, loss="xent")
    check.check_all()
    # the cost darknet reports is the same cross-entropy
    cost = net.forward_backward(check.x, truth)
    assert cost == pytest.approx(check.loss(), rel=1e-5)


# ---- dropout with a fixed mask ------------------------------------------------------------------

def test_dropout_fixed_mask(tmp_path: Path) -> None:
    """Reseeding before every forward repeats the mask, so the dropout layer is
    a fixed map (masked, the rest scaled by 1/(1-p)) and finite differences
    apply."""
    p = .4
    text = ("[connected]\noutput=12\nactivation=tanh\n\n"
            f"[dropout]\nprobability={p}\n\n"
            "[connected]\noutput=3\nactivation=linear\n" + SSE)
    net = make_net(tmp_path, text, batch=2, c=5, h=1, w=1)
    rng = np.random.default_rng(18)
    x, truth = normal(rng, 2, 5, 1, 1), normal(rng, 2, 3)
    check = GradCheck(net, x, truth, reseed=123)
    check.check_all()
    # the mask: dropped units are exactly 0, kept ones scaled by 1/(1 - p)
    check.forward()
    before, after = net.layer_output(0).ravel(), net.layer_output(1).ravel()
    dropped = after == 0
    assert 0 < dropped.sum() < dropped.size
    np.testing.assert_allclose(after[~dropped], before[~dropped] / (1 - p), rtol=1e-6)
    # and nothing flows back through a dropped unit
    delta_in, delta_out = net.delta(0).ravel(), net.delta(1).ravel()
    assert np.all(delta_in[dropped] == 0)
    # delta(0) is after tanh's derivative: undo it to compare with the mask
    slope = 1 - before ** 2
    np.testing.assert_allclose(delta_in[~dropped], delta_out[~dropped] / (1 - p) * slope[~dropped],
                               rtol=1e-5, atol=1e-7)
    # a different seed draws a different mask
    net.seed(124)
    net.forward_backward(x, truth)
    assert not np.array_equal(net.layer_output(1).ravel() == 0, dropped)


# ---- the 14 activations, through a 1x1 convolution ----------------------------------------------

ACTIVATIONS = ["logistic", "loggy", "relu", "elu", "selu", "relie", "plse", "hardtan", "lhtan",
               "linear", "ramp", "leaky", "tanh", "stair"]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation(activation: str, tmp_path: Path) -> None:
    """Pre-activations z = w*x + b are placed at half-integers +-0.25, so every
    kink (0, +-1, +-4, and each integer for stair) is >= 0.25 away, while
    +-eps on w, b or x moves z by < 0.07; they cover -5.5..5.5 so that every
    piece of every activation is visited (saturated pieces: both sides 0)."""
    net = make_net(tmp_path, f"[convolutional]\nfilters=1\nsize=1\nstride=1\npad=0\n"
                   f"activation={activation}\n" + SSE, batch=2, c=1, h=2, w=11)
    w_, b_ = 1.25, -.1
    p = net.params(0)
    p["weights"][:] = w_
    p["biases"][:] = b_
    rng = np.random.default_rng(19)
    z = np.concatenate([np.arange(-5.5, 5.5) + rng.uniform(-.25, .25, 11) for _ in range(4)])
    x = ((z - b_) / w_).reshape(2, 1, 2, 11).astype(np.float32)
    truth = normal(rng, 2, 22)
    check = GradCheck(net, x, truth)
    check.check_all()


# ---- the engine's own contract ------------------------------------------------------------------

def test_gradients_accumulate_and_input_delta_does_not(tmp_path: Path) -> None:
    """Parameter gradients are summed over forward_backward calls (darknet's
    subdivisions) until update/zero_grads; the deltas, including the input's,
    describe the last pass only."""
    net = make_net(tmp_path, "[convolutional]\nfilters=2\nsize=3\nstride=1\npad=1\n"
                   "activation=logistic\n" + SSE, batch=2, c=2, h=3, w=3)
    rng = np.random.default_rng(20)
    x, truth = normal(rng, 2, 2, 3, 3), normal(rng, 2, net.truth_size)
    net.input_delta()
    net.zero_grads()
    net.forward_backward(x, truth)
    once, delta_once = net.grads(0)["weights"].copy(), net.input_delta()
    layer_delta_once = net.delta(0)
    assert np.abs(delta_once).max() > 0
    net.forward_backward(x, truth)
    np.testing.assert_allclose(net.grads(0)["weights"], 2 * once, rtol=1e-6)
    np.testing.assert_array_equal(net.delta(0), layer_delta_once)
    np.testing.assert_array_equal(net.input_delta(), delta_once)
    net.zero_grads()
    assert not net.grads(0)["weights"].any()


def test_threads_do_not_change_the_gradients(tmp_path: Path) -> None:
    """The same backward on 1 and 2 threads (layers large enough for the
    engine to split im2col/col2im, activations and GEMMs across threads):
    equal up to summation order."""
    text = ("[convolutional]\nbatch_normalize=1\nfilters=16\nsize=3\nstride=1\npad=1\n"
            "activation=leaky\n\n"
            "[convolutional]\nbatch_normalize=1\nfilters=16\nsize=3\nstride=1\npad=1\n"
            "activation=leaky\n\n"
            "[maxpool]\nsize=2\nstride=2\n\n"
            "[convolutional]\nfilters=8\nsize=3\nstride=1\npad=1\nactivation=logistic\n"
            + SSE)
    rng = np.random.default_rng(23)
    x = normal(rng, 2, 3, 32, 32)
    results = []
    for threads in (1, 2):
        path = tmp_path / f"threads{threads}.cfg"
        path.write_text("[net]\nbatch=2\nsubdivisions=1\nwidth=32\nheight=32\nchannels=3\n\n"
                        + text)
        net = Network(path, train=True, batch=0, threads=threads)
        net.randomize(1)
        truth = normal(np.random.default_rng(24), 2, net.truth_size)
        net.input_delta()
        net.forward_backward(x, truth)
        results.append(({i: {k: v.copy() for k, v in net.grads(i).items()} for i in range(4)},
                        net.input_delta()))
    (grads1, input1), (grads2, input2) = results
    assert relative_error(input2, input1) < 1e-5
    for i, kinds in grads1.items():
        for kind, value in kinds.items():
            assert relative_error(grads2[i][kind], value) < 1e-5, (i, kind)
