"""The inference fast paths of [convolutional] against the plain path.

At inference the engine runs a convolution one of three ways (the
PYDARKNET_CONV environment variable forces one, read at every forward):
  plain     im2col + GEMM, as in training: the reference here;
  packed    the same GEMM with the weights packed once and cached, and the
            im2col matrix packed straight from the image (never written):
            the same bits as plain;
  winograd  F(4x4, 3x3) for 3x3, stride-1, one-group convolutions
            (darknet_src/src/conv_winograd.c), weights transformed once
            and cached: other bits, close to plain.
Unset, the engine picks per layer (auto).  Checked here: the paths agree on
random shapes, they give the same bits with 1, 2 and 3 threads, and the
cached weights follow every way the weights can change.

tests/c/test_conv_fast.c tests the same C functions directly (double
precision references, every GEMM kernel, AddressSanitizer)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import relative_error
from pydarknet import Network

ACTIVATIONS = ["logistic", "relu", "relie", "linear", "ramp", "tanh", "plse", "leaky", "elu",
               "loggy", "stair", "hardtan", "lhtan", "selu"]

# Winograd tolerance, relative to the scale of the layer's output (max |plain|):
# F(4x4, 3x3) regroups each output's sum through transforms whose entries go
# up to 8, which costs precision in float32: measured worst 2-4e-6 over these
# shapes and whole yolov2 / yolov3-tiny (about 10x a direct sum's error).  A
# wrong transform entry, tile offset or border gives errors of order 1e-1.
WINOGRAD_TOL = 3e-5


def conv_cfg(*, batch: int, channels: int, height: int, width: int, layers: list[dict]) -> str:
    lines = ["[net]", f"batch={batch}", f"width={width}", f"height={height}",
             f"channels={channels}", ""]
    for layer in layers:
        lines.append("[convolutional]")
        lines += [f"{k}={v}" for k, v in layer.items()]
        lines.append("")
    return "\n".join(lines)


def write_cfg(tmp_path: Path, text: str, name: str = "net.cfg") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


class Mode:
    """PYDARKNET_CONV for the forwards inside the block ("" = auto)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __enter__(self) -> None:
        self.saved = os.environ.get("PYDARKNET_CONV")
        os.environ["PYDARKNET_CONV"] = self.mode

    def __exit__(self, *exc: object) -> None:
        if self.saved is None:
            os.environ.pop("PYDARKNET_CONV", None)
        else:
            os.environ["PYDARKNET_CONV"] = self.saved


def layer_outputs(net: Network, x: np.ndarray, mode: str) -> list[np.ndarray]:
    with Mode(mode):
        net.predict(x)
    return [net.layer_output(i).copy() for i in range(len(net))]


def random_input(net: Network, seed: int) -> np.ndarray:
    # images in [0, 1) like the detector's, shifted to have negative values too
    return np.random.default_rng(seed).random(net.input_shape, dtype=np.float32) - .25


def random_conv(rng: np.random.Generator, *, winograd: bool) -> dict:
    """One random convolution: 3x3 stride 1 for Winograd, anything otherwise.
    Not stair with Winograd: it jumps by 1 at every integer, so a last-bit
    difference there is an error of order 1 (the packed path is exact)."""
    activations = [a for a in ACTIVATIONS if a != "stair"] if winograd else ACTIVATIONS
    layer = {
        "batch_normalize": int(rng.integers(2)),
        "filters": int(rng.choice([1, 2, 3, 7, 16, 17, 33, 64, 96, 130, 257, 520])),
        "activation": str(rng.choice(activations)),
    }
    if winograd:
        layer.update(size=3, stride=1, padding=int(rng.integers(3)))
    else:
        size = int(rng.choice([1, 2, 3, 5]))
        layer.update(size=size, stride=int(rng.choice([1, 1, 2, 3])),
                     padding=int(rng.integers(size // 2 + 2)))
    return layer


def random_shape(rng: np.random.Generator) -> dict:
    return {
        "batch": int(rng.choice([1, 1, 2])),
        "channels": int(rng.choice([1, 2, 3, 5, 8, 16, 31, 64, 100, 300])),
        "height": int(rng.integers(3, 42)),
        "width": int(rng.integers(3, 42)),
    }


def build(tmp_path: Path, text: str, threads: int = 2, seed: int = 3) -> Network:
    net = Network(write_cfg(tmp_path, text), threads=threads)
    net.randomize(seed)
    return net


# ---- agreement with the plain path -----------------------------------------------------


@pytest.mark.parametrize("case", range(24))
def test_winograd_matches_plain(case: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(1000 + case)
    shape = random_shape(rng)
    layers = [random_conv(rng, winograd=True)]
    if case % 3 == 0:  # a second layer reads the first one's output
        layers.append(random_conv(rng, winograd=True))
    with build(tmp_path, conv_cfg(**shape, layers=layers), seed=case) as net:
        x = random_input(net, case)
        plain = layer_outputs(net, x, "plain")
        fast = layer_outputs(net, x, "winograd")
        for ours, reference in zip(fast, plain):
            assert relative_error(ours, reference) < WINOGRAD_TOL, (shape, layers)


@pytest.mark.parametrize("case", range(24))
def test_packed_path_gives_the_plain_bits(case: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(2000 + case)
    shape = random_shape(rng)
    layer = random_conv(rng, winograd=False)
    if case % 4 == 1 and shape["channels"] % 2 == 0 and layer["filters"] % 2 == 0:
        layer["groups"] = 2
    with build(tmp_path, conv_cfg(**shape, layers=[layer]), seed=case) as net:
        x = random_input(net, case)
        plain = layer_outputs(net, x, "plain")
        for mode in ("packed", ""):
            if mode == "" and layer["size"] == 3 and layer["stride"] == 1:
                continue  # auto may pick Winograd
            for ours, reference in zip(layer_outputs(net, x, mode), plain):
                np.testing.assert_array_equal(ours, reference, err_msg=f"{mode} {shape} {layer}")


def test_auto_matches_plain_on_a_detector(tmp_path: Path) -> None:
    """yolov3-tiny's layers at 416x416, BN and leaky, as the engine picks."""
    cfg = Path(__file__).resolve().parent.parent / "cfg" / "yolov3-tiny.cfg"
    with Network(cfg, threads=2) as net:
        net.randomize(5)
        x = random_input(net, 5)
        plain = layer_outputs(net, x, "plain")
        auto = layer_outputs(net, x, "")
        errors = [relative_error(a, p) for a, p in zip(auto, plain)]
        assert max(errors) < WINOGRAD_TOL, errors


# ---- the same bits for any thread count --------------------------------------------------


@pytest.mark.parametrize("mode", ["", "winograd", "packed"])
def test_bit_identical_across_threads(mode: str, tmp_path: Path) -> None:
    layers = [
        {"batch_normalize": 1, "filters": 40, "size": 3, "stride": 1, "pad": 1,
         "activation": "leaky"},
        {"batch_normalize": 0, "filters": 70, "size": 3, "stride": 2, "pad": 1,
         "activation": "logistic"},
        {"batch_normalize": 1, "filters": 136, "size": 3, "stride": 1, "padding": 0,
         "activation": "relu"},
        {"batch_normalize": 1, "filters": 30, "size": 1, "stride": 1, "pad": 0,
         "activation": "linear"},
    ]
    text = conv_cfg(batch=2, channels=17, height=61, width=45, layers=layers)
    results = []
    for threads in (1, 2, 3):
        with build(tmp_path, text, threads=threads) as net:
            results.append(layer_outputs(net, random_input(net, 9), mode))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


# ---- the cached weights follow the weights ----------------------------------------------


CACHE_LAYERS = [
    {"batch_normalize": 1, "filters": 32, "size": 3, "stride": 1, "pad": 1, "activation": "leaky"},
    {"batch_normalize": 0, "filters": 24, "size": 3, "stride": 1, "pad": 1, "activation": "leaky"},
    {"batch_normalize": 1, "filters": 16, "size": 1, "stride": 1, "pad": 0, "activation": "leaky"},
    {"batch_normalize": 1, "filters": 8, "size": 3, "stride": 2, "pad": 1, "activation": "linear"},
]
CACHE_CFG = conv_cfg(batch=1, channels=16, height=24, width=20, layers=CACHE_LAYERS)


def check_follows(net: Network, x: np.ndarray, before: np.ndarray) -> None:
    """The cached path now agrees with the plain path, which moved."""
    plain = layer_outputs(net, x, "plain")[-1]
    auto = layer_outputs(net, x, "")[-1]
    assert relative_error(auto, plain) < WINOGRAD_TOL
    assert relative_error(before, plain) > 1e-2, "the change did not change the output"


@pytest.mark.parametrize("layer", range(len(CACHE_LAYERS)))
def test_cache_follows_writes_through_params_views(layer: int, tmp_path: Path) -> None:
    with build(tmp_path, CACHE_CFG) as net:
        x = random_input(net, 1)
        before = layer_outputs(net, x, "")[-1]
        net.params(layer)["weights"][:] *= -1.5
        check_follows(net, x, before)
        # and again, through views fetched after the forward
        before = layer_outputs(net, x, "")[-1]
        weights = net.params(layer)["weights"]
        weights[: weights.size // 2] = 0
        check_follows(net, x, before)


def test_cache_follows_load_weights_and_randomize(tmp_path: Path) -> None:
    with build(tmp_path, CACHE_CFG, seed=1) as source:
        source.save_weights(tmp_path / "source.weights")
        x = random_input(source, 2)
        expected = layer_outputs(source, x, "")[-1]
    with build(tmp_path, CACHE_CFG, seed=2) as net:
        before = layer_outputs(net, x, "")[-1]
        net.load_weights(tmp_path / "source.weights")
        check_follows(net, x, before)
        np.testing.assert_array_equal(layer_outputs(net, x, "")[-1], expected)
        before = expected
        net.randomize(3)
        check_follows(net, x, before)


def test_resize_keeps_the_paths_right(tmp_path: Path) -> None:
    """A new input size changes the workspace and may change the method
    (Winograd pays on some sizes only); outputs stay those of the plain path."""
    with build(tmp_path, CACHE_CFG) as net:
        for width, height in ((20, 24), (7, 5), (61, 33), (20, 24)):
            net.resize(width, height)
            x = random_input(net, width)
            plain = layer_outputs(net, x, "plain")
            auto = layer_outputs(net, x, "")
            for ours, reference in zip(auto, plain):
                assert relative_error(ours, reference) < WINOGRAD_TOL, (width, height)


def test_cache_follows_training_updates(tmp_path: Path) -> None:
    text = CACHE_CFG.replace("batch=1", "batch=2") + "\n[cost]\ntype=sse\n"
    cfg = write_cfg(tmp_path, text.replace("[net]", "[net]\nlearning_rate=0.5\nmomentum=0"))
    with Network(cfg, train=True, batch=0, threads=2) as net:
        net.randomize(4)
        x = random_input(net, 3)
        truth = np.random.default_rng(4).random((2, net.truth_size), dtype=np.float32)
        before = layer_outputs(net, x, "")[-2]
        for _ in range(3):
            net.train_step(x, truth)
            plain = layer_outputs(net, x, "plain")[-2]
            auto = layer_outputs(net, x, "")[-2]
            assert relative_error(auto, plain) < WINOGRAD_TOL
            assert relative_error(before, plain) > 1e-4, "the update did not change the output"
            before = auto


# ---- maxpool's vector loops ----------------------------------------------------------------


def darknet_maxpool(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """darknet's window: from -padding/2, cells outside the input ignored."""
    _, h, w = x.shape
    out_h, out_w = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    out = np.full((x.shape[0], out_h, out_w), -np.finfo(np.float32).max, np.float32)
    for oy in range(out_h):
        y0 = oy * stride - padding // 2
        for ox in range(out_w):
            x0 = ox * stride - padding // 2
            window = x[:, max(y0, 0):max(y0 + size, 0), max(x0, 0):max(x0 + size, 0)]
            if window.size:
                out[:, oy, ox] = np.maximum(out[:, oy, ox], window.max(axis=(1, 2)))
    return out


@pytest.mark.parametrize("size,stride,padding", [(2, 2, 1), (2, 2, 0), (2, 1, 1), (3, 1, 2),
                                                 (3, 1, 0), (5, 1, 4), (3, 2, 2), (2, 1, 3)])
def test_maxpool_matches_darknet_windows(size: int, stride: int, padding: int,
                                         tmp_path: Path) -> None:
    """Inference maxpool (vector loops inside, scalar at the borders) against
    darknet's window rule, exactly: a max is exact in any order."""
    text = (f"[net]\nbatch=1\nwidth=37\nheight=22\nchannels=3\n\n"
            f"[maxpool]\nsize={size}\nstride={stride}\npadding={padding}\n")
    with Network(write_cfg(tmp_path, text), threads=2) as net:
        x = np.random.default_rng(size * 10 + stride).normal(size=net.input_shape).astype(np.float32)
        ours = net.predict(x)[0]
        np.testing.assert_array_equal(ours, darknet_maxpool(x[0], size, stride, padding))


# ---- the C functions directly ---------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "darknet_src" / "src"
C_SOURCES = ["pool.c", "error.c", "util.c", "activations.c", "im2col.c", "conv_winograd.c"]
# the library's own flags (darknet_src/Makefile), without -fvisibility
CFLAGS = ["-std=gnu11", "-pthread", "-fno-math-errno", "-ffp-contract=off", "-Wall", "-Wextra",
          "-Wno-unused-parameter"]


def build_c_test(out: Path, extra_flags: list[str]) -> subprocess.CompletedProcess:
    gemm = sorted(str(p) for p in SRC.glob("gemm*.c"))
    sources = gemm + [str(SRC / f) for f in C_SOURCES] + [str(ROOT / "tests/c/test_conv_fast.c")]
    cmd = ["gcc", *CFLAGS, *extra_flags, f"-I{ROOT / 'darknet_src/include'}", f"-I{SRC}",
           *sources, "-o", str(out), "-lm"]
    return subprocess.run(cmd, capture_output=True, text=True)


def run_c_test(binary: Path, **env_extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYDARKNET_GEMM"}
    env.update(env_extra)
    proc = subprocess.run([str(binary)], env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "conv tests passed" in proc.stdout, output
    assert "kernel generic: passed" in proc.stdout, output
    return proc.stdout


def test_c_functions(tmp_path: Path) -> None:
    binary = tmp_path / "test_conv_fast"
    built = build_c_test(binary, ["-O3"])
    assert built.returncode == 0, built.stderr
    print(run_c_test(binary))


def test_c_functions_sanitizers(tmp_path: Path) -> None:
    binary = tmp_path / "test_conv_fast_sanitized"
    built = build_c_test(binary, ["-O1", "-g", "-fsanitize=address,undefined",
                                  "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"])
    if built.returncode != 0:
        pytest.skip("gcc cannot build with -fsanitize=address,undefined: " + built.stderr[-500:])
    print(run_c_test(binary, CONV_TEST_QUICK="1", ASAN_OPTIONS="detect_leaks=1",
                     UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"))


def test_views_written_after_a_forward_are_seen(tmp_path) -> None:
    """A parameter view kept across a predict and written afterwards: the next
    predict uses the new values (no stale transformed-weight cache)."""
    import numpy as np

    from pydarknet import Network

    cfg = tmp_path / "w.cfg"
    cfg.write_text("[net]\nbatch=1\nwidth=16\nheight=16\nchannels=32\n"
                   "[convolutional]\nfilters=32\nsize=3\npad=1\nactivation=linear\n")
    x = np.random.default_rng(0).random((1, 32, 16, 16), dtype=np.float32)
    with Network(cfg, threads=2) as net:
        net.randomize(1)
        weights = net.params(0)["weights"]
        first = net.predict(x)
        weights *= 2  # through the view kept from before the forward
        second = net.predict(x)
        bias = net.params(0)["biases"]
        np.testing.assert_allclose(second - bias[None, :, None, None],
                                   2 * (first - bias[None, :, None, None]), rtol=1e-4, atol=1e-4)
