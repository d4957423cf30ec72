"""pydarknet.torch.DarknetModel against the engine: every layer's output and
the final output, with the engine's seeded He-scaled random weights
(`Network.randomize` + `save_weights`) and with the real yolov3-tiny
weights; decoded boxes; darknet's training-mode batch norm; errors that
name the cfg section.

Input sizes: the reference cfgs run at 160x160 (224 for darknet19's
classifier) instead of 416/608: every layer (reorg, route, the size=2
stride=1 maxpool, upsample) works the same at any multiple of 32, and it
keeps the run short on 2 cores.  The real yolov3-tiny runs at its 416.

Tolerance: 1e-4 of each layer's output scale (conftest.relative_error).
The engine sums in a blocked SIMD GEMM with batch norm folded into one
multiply-add (factors in double); PyTorch's convolution sums in another
order; measured differences are ~1e-6.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import relative_error  # noqa: E402
from pydarknet import Network  # noqa: E402
from pydarknet.cfg import Cfg  # noqa: E402
from pydarknet.errors import CfgError, UnsupportedError  # noqa: E402
from pydarknet.torch import DarknetBatchNorm, DarknetModel  # noqa: E402
from shared import darknet_cfg, shared_path  # noqa: E402

TOLERANCE = 1e-4
torch.set_num_threads(2)

FAMILIES = {"yolov2-tiny.cfg": 160, "yolov2.cfg": 160, "yolov2-voc.cfg": 160,
            "darknet19.cfg": 224, "yolov3-tiny.cfg": 160}


def resized(text: str, size: int) -> str:
    for key in ("width", "height"):
        text = re.sub(rf"^{key}\s*=.*$", f"{key}={size}", text, count=1, flags=re.M)
    return text


def engine_random(cfg: Path, tmp_path: Path, seed: int) -> tuple[Network, Path]:
    """The engine's seeded random weights, written by the engine."""
    net = Network(cfg, threads=2)
    net.randomize(seed)
    weights = tmp_path / (cfg.stem + ".weights")
    net.save_weights(weights)
    return net, weights


def compare_layers(model: DarknetModel, net: Network, x: np.ndarray
                   ) -> dict[tuple[int, str], float]:
    """Relative error of every layer's output (model vs engine)."""
    reference = net.predict(x)
    with torch.no_grad():
        ours = model.layer_outputs(torch.from_numpy(x))
        final = model(torch.from_numpy(x))
    # a [cost] layer's output is not an activation (the engine leaves it unset at inference)
    errors = {(i, model.types[i]): relative_error(ours[i].numpy(), net.layer_output(i))
              for i in range(len(model.layers)) if model.types[i] != "cost"}
    if isinstance(final, list):
        final = final[-1]
    errors[(-1, "output")] = relative_error(final.numpy(), reference)
    return errors


def assert_close(errors: dict[tuple[int, str], float]) -> None:
    bad = {k: v for k, v in errors.items() if not v < TOLERANCE}
    assert not bad, bad


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_matches_engine_random_weights(name: str, batch1_cfg, tmp_path: Path) -> None:
    cfg = batch1_cfg(name)
    cfg.write_text(resized(cfg.read_text(), FAMILIES[name]))
    net, weights = engine_random(cfg, tmp_path, seed=7)
    with net:
        model = DarknetModel(cfg).eval()
        model.load_darknet_weights(weights)
        x = np.random.default_rng(1).random(net.input_shape, dtype=np.float32)
        errors = compare_layers(model, net, x)
    assert_close(errors)
    types = set(model.types)
    if name == "yolov2.cfg":
        assert {"reorg", "route", "region"} <= types
    if name == "yolov3-tiny.cfg":
        assert {"upsample", "route", "yolo", "maxpool"} <= types


def test_real_yolov3_tiny_matches_engine() -> None:
    cfg = shared_path("models/yolov3-tiny.cfg")
    weights = shared_path("models/yolov3-tiny.weights")
    with Network(cfg, weights, threads=2) as net:
        model = DarknetModel.from_darknet(cfg, weights)
        x = np.random.default_rng(4).random(net.input_shape, dtype=np.float32)
        errors = compare_layers(model, net, x)
        assert_close(errors)
        with torch.no_grad():
            heads = model(torch.from_numpy(x))
        # several [yolo] layers: a list of every yolo layer's output
        assert isinstance(heads, list) and len(heads) == 2
        for index, head in zip(model.yolo_indexes, heads):
            assert relative_error(head.numpy(), net.layer_output(index)) < TOLERANCE
        assert model.seen == net.seen and model.weights_version == net.info.weights_version


# ---- every layer type and option, on small synthetic networks ------------------------------

ZOO_DETECTOR = """[net]
batch=1
subdivisions=1
width=16
height=16
channels=3

# 0
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

# 1: grouped
[convolutional]
batch_normalize=1
filters=8
groups=2
size=3
stride=1
pad=1
activation=elu

# 2: darknet's size=2 stride=1 window (padding 1, offset 0)
[maxpool]
size=2
stride=1

# 3: 16 -> 8
[maxpool]
size=3
stride=2

# 4: explicit padding=, no batch norm
[convolutional]
filters=16
size=3
stride=2
padding=1
activation=relu

# 5
[route]
layers=-3

# 6, 7
[reorg]
stride=2

[reorg]
stride=2

# 8: 128 + 16 channels at 4x4
[route]
layers=-1,4

# 9
[convolutional]
filters=16
size=1
stride=1
activation=tanh

# 10: 4x4 -> 8x8
[upsample]
stride=2

# 11: channels differ (8 from layer 3, 16 here), alpha and beta
[shortcut]
from=3
alpha=.5
beta=2
activation=linear

# 12: darknet's reverse upsample: 2x2 block sums times scale
[upsample]
stride=-2
scale=.25

# 13: same shape
[shortcut]
from=4
activation=leaky

# 14: from a larger layer (16x16 -> 4x4, strided)
[shortcut]
from=2
activation=ramp

# 15: reverse reorg 16x4x4 -> 4x8x8
[reorg]
stride=2
reverse=1

# 16: from a smaller layer (16x4x4 into 4x8x8, sampled)
[shortcut]
from=14
beta=.7

# 17..25: the remaining activations
[convolutional]
filters=6
size=1
activation=loggy

[convolutional]
filters=6
size=3
pad=1
activation=hardtan

[convolutional]
filters=6
size=1
activation=lhtan

[convolutional]
filters=6
size=1
activation=selu

[convolutional]
filters=6
size=1
activation=plse

[convolutional]
filters=6
size=1
activation=relie

[convolutional]
filters=6
size=1
activation=logistic

[convolutional]
filters=6
size=1
activation=stair

[maxpool]
size=2
stride=2

# 26
[convolutional]
filters=14
size=1
stride=1
activation=linear

[region]
anchors=1,1, 2,2.5
classes=2
coords=4
num=2
softmax=0
"""

ZOO_CLASSIFIER = """[net]
batch=1
subdivisions=1
width=20
height=18
channels=3

[crop]
crop_width=16
crop_height=14

[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=selu

[maxpool]
size=3
stride=3
padding=1

[dropout]
probability=.3

[connected]
output=10
batch_normalize=1
activation=leaky

[connected]
output=12
activation=linear

[softmax]
groups=3
temperature=2

[cost]
"""

ZOO_YOLO = """[net]
batch=1
subdivisions=1
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=14
size=1
activation=linear

[yolo]
mask=1,2
anchors=4,5, 9,8, 20,16
classes=2
num=3

[route]
layers=-3

[crop]
crop_width=12
crop_height=12
noadjust=1

[convolutional]
filters=7
size=1
activation=linear

[yolo]
mask=0
anchors=4,5, 9,8, 20,16
classes=2
num=3
"""


# Odd sizes: maxpool windows over the edge (default and large padding),
# darknet's reverse upsample on a 7x7 input (it reads the input memory with
# the 3x3 output's strides, across images too: batch 2), a shortcut from
# 7x7 onto 6x6 (over the common 6x6 corner), padding= overridden by pad=.
ZOO_EDGES = """[net]
width=7
height=7
channels=3

[convolutional]
filters=3
size=1
activation=linear

[maxpool]
size=2
stride=2

[route]
layers=0

[maxpool]
size=3
stride=2

[route]
layers=0

[upsample]
stride=-2
scale=.5

[route]
layers=0

[convolutional]
filters=4
size=2
stride=1
padding=0
activation=leaky

[shortcut]
from=0
activation=linear

[maxpool]
size=4
stride=1
padding=5

[convolutional]
filters=4
size=3
stride=3
pad=1
padding=2
activation=stair
"""


def test_odd_sizes_match_engine(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path, "edges.cfg", ZOO_EDGES)
    with Network(cfg, batch=2, threads=1) as net:
        net.randomize(1)
        net.save_weights(tmp_path / "edges.weights")
        model = DarknetModel(cfg).eval()
        model.load_darknet_weights(tmp_path / "edges.weights")
        x = np.random.default_rng(0).normal(0, 1, net.input_shape).astype(np.float32)
        errors = compare_layers(model, net, x)
        assert [s.output_shape for s in model.shapes] == [l.output_shape for l in net.layers]
    assert_close(errors)


def with_unit_variance(model: DarknetModel) -> DarknetModel:
    """A new model has darknet's initial rolling variance 0 (outputs scaled
    by 1e6 at inference); 1 keeps decoded boxes finite."""
    for module in model.modules():
        if isinstance(module, DarknetBatchNorm):
            module.running_var.fill_(1)
    return model.eval()


def write_cfg(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name,text", [("zoo_detector.cfg", ZOO_DETECTOR),
                                       ("zoo_classifier.cfg", ZOO_CLASSIFIER),
                                       ("zoo_yolo.cfg", ZOO_YOLO)])
def test_every_layer_type_matches_engine(name: str, text: str, tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path, name, text)
    net, weights = engine_random(cfg, tmp_path, seed=3)
    with net:
        model = DarknetModel(cfg).eval()
        model.load_darknet_weights(weights)
        assert [l.type for l in net.layers] == model.types
        for shape, layer in zip(model.shapes, net.layers):
            assert shape.output_shape == layer.output_shape, (shape.index, shape.type)
        # inputs spread wider than [0, 1] to exercise the activations' branches
        x = np.random.default_rng(2).normal(0, 2, net.input_shape).astype(np.float32)
        errors = compare_layers(model, net, x)
    assert_close(errors)
    # the output is the last layer that is not a [cost], as in the engine
    assert model.output_index == len(model.layers) - (2 if name == "zoo_classifier.cfg" else 1)


def test_decode_region(tmp_path: Path) -> None:
    """decode=True: darknet's region box formula on the engine's output."""
    model = with_unit_variance(DarknetModel(ZOO_DETECTOR))
    x = torch.from_numpy(np.random.default_rng(5).random((2, 3, 16, 16), dtype=np.float32))
    with torch.no_grad():
        out = model(x).numpy()
        boxes = model(x, decode=True).numpy()
    n, classes, h, w = 2, 2, 4, 4
    anchors = np.array([[1, 1], [2, 2.5]], np.float32)
    assert boxes.shape == (2, n * h * w, 5 + classes)
    v = out.reshape(2, n, 5 + classes, h, w)
    for a in range(n):
        for j in range(h):
            for i in range(w):
                row = boxes[:, a * h * w + j * w + i]  # darknet's candidate index
                np.testing.assert_allclose(row[:, 0], (i + v[:, a, 0, j, i]) / w, rtol=1e-6)
                np.testing.assert_allclose(row[:, 1], (j + v[:, a, 1, j, i]) / h, rtol=1e-6)
                np.testing.assert_allclose(row[:, 2], np.exp(v[:, a, 2, j, i]) * anchors[a, 0] / w,
                                           rtol=1e-6)
                np.testing.assert_allclose(row[:, 3], np.exp(v[:, a, 3, j, i]) * anchors[a, 1] / h,
                                           rtol=1e-6)
                np.testing.assert_array_equal(row[:, 4:], v[:, a, 4:, j, i])


def test_decode_yolo_heads_in_layer_order() -> None:
    """Several [yolo] layers: rows of each head in layer order; anchors in
    network pixels (w = exp(tw) * anchor_w / net_w)."""
    model = with_unit_variance(DarknetModel(ZOO_YOLO))
    x = torch.from_numpy(np.random.default_rng(6).random((1, 3, 32, 32), dtype=np.float32))
    with torch.no_grad():
        heads = model(x)
        boxes = model(x, decode=True)
    assert [tuple(h.shape) for h in heads] == [(1, 14, 16, 16), (1, 7, 12, 12)]
    assert boxes.shape == (1, 2 * 16 * 16 + 12 * 12, 5 + 2)
    first = heads[0].numpy().reshape(2, 7, 16, 16)
    # anchor 1 of the first head is mask index 2: (20, 16) pixels
    a, j, i = 1, 3, 5
    row = boxes[0, a * 256 + j * 16 + i].numpy()
    expected = [(i + first[a, 0, j, i]) / 16, (j + first[a, 1, j, i]) / 16,
                np.exp(first[a, 2, j, i]) * 20 / 32, np.exp(first[a, 3, j, i]) * 16 / 32,
                *first[a, 4:, j, i]]
    np.testing.assert_allclose(row, expected, rtol=1e-6)


def test_decode_yolo_classes_differ_is_an_error() -> None:
    """Heads with different class counts cannot share one box tensor."""
    head, tail = ZOO_YOLO.rsplit("classes=2", 1)
    text = (head + "classes=16" + tail).replace("filters=7", "filters=21")
    model = DarknetModel(text).eval()
    with torch.no_grad():
        assert [h.shape[1] for h in model(torch.zeros(1, 3, 32, 32))] == [14, 21]
    with pytest.raises(ValueError, match="different class counts"):
        model(torch.zeros(1, 3, 32, 32), decode=True)


def test_input_forms_and_sizes(tmp_path: Path) -> None:
    """A path, a Cfg or cfg text; other input sizes work where the layers allow."""
    path = write_cfg(tmp_path, "zoo.cfg", ZOO_DETECTOR)
    for source in (path, str(path), Cfg.read(path), ZOO_DETECTOR):
        assert DarknetModel(source).types == DarknetModel(path).types
    model = DarknetModel(path, width=32, height=32).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 14, 8, 8)
    with pytest.raises(ValueError, match="channels|shape"):
        model(torch.zeros(1, 4, 32, 32))


def test_training_batch_norm_is_darknets(tmp_path: Path) -> None:
    """model.train(): batch statistics with the unbiased variance, the
    sqrt(var) + 1e-6 denominator and .99/.01 rolling updates, as the
    engine's training forward."""
    text = ("[net]\nbatch=4\nsubdivisions=1\nwidth=6\nheight=5\nchannels=3\n\n"
            "[convolutional]\nbatch_normalize=1\nfilters=5\nsize=3\npad=1\nactivation=leaky\n\n"
            "[cost]\n")
    cfg = write_cfg(tmp_path, "bn.cfg", text)
    net = Network(cfg, train=True, batch=0, threads=1)
    net.randomize(9)
    weights = tmp_path / "bn.weights"
    net.save_weights(weights)
    model = DarknetModel(cfg)
    model.load_darknet_weights(weights)
    model.train()
    rng = np.random.default_rng(3)
    x = rng.normal(1, 2, (4, 3, 5, 6)).astype(np.float32)
    net.forward_backward(x, np.zeros((4, 5 * 5 * 6), np.float32))
    out = model.layer_outputs(torch.from_numpy(x))[0].detach().numpy()
    assert relative_error(out, net.layer_output(0)) < TOLERANCE
    engine = net.params(0)
    bn = model.layers[0].bn
    assert relative_error(bn.running_mean.numpy(), engine["rolling_mean"]) < TOLERANCE
    assert relative_error(bn.running_var.numpy(), engine["rolling_variance"]) < TOLERANCE


# ---- errors name the section ----------------------------------------------------------------


def test_unsupported_layer_names_the_section() -> None:
    cfg = darknet_cfg("yolov1.cfg")
    line = next(i for i, l in enumerate(cfg.read_text().splitlines(), 1) if l.strip() == "[local]")
    with pytest.raises(UnsupportedError) as info:
        DarknetModel(cfg)
    message = str(info.value)
    assert f"yolov1.cfg:{line}" in message and "[local]" in message
    assert "locally connected" in message
    # an RNN's [net] has no width/height: the unsupported layer is still the reason given
    with pytest.raises(UnsupportedError, match=r"\[rnn\]: unsupported layer"):
        DarknetModel(darknet_cfg("rnn.cfg"))


@pytest.mark.parametrize("section,fragment,error", [
    ("[lstm]\noutput=4\n", "[lstm]", UnsupportedError),
    ("[mystery]\nsize=1\n", "unknown section", CfgError),
    ("[convolutional]\nfilters=4\nbinary=1\n", "binary", UnsupportedError),
    ("[convolutional]\nfilters=4\nactivation=swish\n", "unknown activation 'swish'", CfgError),
    ("[route]\nlayers=5\n", "refers to layer 5", CfgError),
    ("[region]\nclasses=2\nnum=1\n", "expects the layer before it to output 7", CfgError),
    ("[softmax]\ntree=data/9k.tree\n", "hierarchical softmax", UnsupportedError),
    ("[cost]\n\n[convolutional]\nfilters=2\n", "[cost] followed by other layers",
     UnsupportedError),
])
def test_bad_sections_name_file_and_line(section: str, fragment: str, error: type,
                                         tmp_path: Path) -> None:
    text = ("[net]\nwidth=8\nheight=8\nchannels=3\n\n[convolutional]\nfilters=4\nsize=1\n\n"
            + section)
    cfg = write_cfg(tmp_path, "bad.cfg", text)
    with pytest.raises(error) as info:
        DarknetModel(cfg)
    assert fragment in str(info.value)
    assert re.search(r"bad\.cfg:\d+", str(info.value)), str(info.value)
