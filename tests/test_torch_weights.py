"""darknet .weights <-> DarknetModel <-> .pt, and `pydarknet convert`.

darknet -> PyTorch -> darknet must give back the same bytes, header and
`seen` included, for the real yolov3-tiny weights and for the engine's
random weights in every header layout (64-bit and 32-bit seen, transposed
connected weights); where the engine writes a file too, our file must
equal the engine's byte for byte.
"""
from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from conftest import relative_error  # noqa: E402
from pydarknet import Network  # noqa: E402
from pydarknet.cli_convert import register_convert_command  # noqa: E402
from pydarknet.errors import WeightsError  # noqa: E402
from pydarknet.torch import DarknetModel, read_header  # noqa: E402
from shared import shared_path  # noqa: E402

torch.set_num_threads(2)

# Every kind of parameter block: a flipped conv (weights stored
# transposed), grouped conv with batch norm, plain conv, connected with and
# without batch norm.
PARAMS_CFG = """[net]
batch=1
subdivisions=1
width=12
height=10
channels=3

[convolutional]
batch_normalize=1
filters=6
size=3
stride=1
pad=1
flipped=1
activation=leaky

[convolutional]
batch_normalize=1
filters=4
groups=2
size=3
stride=2
pad=1
activation=relu

[convolutional]
filters=4
size=1
activation=linear

[connected]
output=7
batch_normalize=1
activation=leaky

[connected]
output=5
activation=logistic
"""


def cli() -> click.Group:
    group = click.Group()
    register_convert_command(group)
    return group


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli(), ["convert", *args])
    return result.exit_code, result.output


def engine_weights(cfg: Path, path: Path, seed: int, seen: int) -> Path:
    with Network(cfg, threads=1) as net:
        net.randomize(seed)
        net.seen = seen
        net.save_weights(path)
    return path


def with_header(src: Path, dst: Path, major: int, minor: int, revision: int, seen: int) -> Path:
    """The payload of `src` (a 0.2 file) under another header layout."""
    payload = src.read_bytes()[20:]
    head = struct.pack("<iii", major, minor, revision)
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    head += struct.pack("<Q", seen) if wide else struct.pack("<I", seen)
    dst.write_bytes(head + payload)
    return dst


# ---- round trips -------------------------------------------------------------------------------


def test_real_yolov3_tiny_round_trip_through_cli(tmp_path: Path) -> None:
    cfg = shared_path("models/yolov3-tiny.cfg")
    weights = shared_path("models/yolov3-tiny.weights")
    pt, back, back_cfg = tmp_path / "m.pt", tmp_path / "back.weights", tmp_path / "back.cfg"
    code, out = run_cli(str(cfg), str(weights), "--to", "pytorch", str(pt))
    assert code == 0, out
    code, out = run_cli(str(pt), "--to", "darknet", str(back), "--cfg-out", str(back_cfg))
    assert code == 0, out
    assert back.read_bytes() == weights.read_bytes()
    # the cfg text as read (comments and spacing kept; a final newline added)
    assert back_cfg.read_text() == cfg.read_text().rstrip("\n") + "\n"
    header = read_header(weights)
    model = DarknetModel.from_file(pt)
    assert model.seen == header.seen > 0
    assert model.weights_version == (header.major, header.minor, header.revision)
    assert not model.training


@pytest.mark.parametrize("version", [(0, 2, 0), (0, 1, 0), (1, 0, 3), (0, 1001, 0), (1002, 0, 7)],
                         ids=["0.2-seen64", "0.1-seen32", "1.0-seen64", "minor1001-transposed",
                              "major1002-transposed"])
def test_random_round_trip_every_header_layout(version: tuple[int, int, int],
                                               tmp_path: Path) -> None:
    """The engine and the model read the same file the same way (equal
    outputs: the transposed layouts are honoured alike), and the model
    writes back the same bytes."""
    cfg = tmp_path / "params.cfg"
    cfg.write_text(PARAMS_CFG)
    seen = 123_456_789 if version[0] * 10 + version[1] >= 2 else 1_234_567
    original = engine_weights(cfg, tmp_path / "engine.weights", seed=5, seen=seen)
    weights = with_header(original, tmp_path / "v.weights", *version, seen=seen)
    model = DarknetModel(cfg).eval()
    model.load_darknet_weights(weights)
    assert (model.weights_version, model.seen) == (version, seen)
    pt = model.save(tmp_path / "v.pt")
    back = DarknetModel.from_file(pt).save_darknet_weights(tmp_path / "back.weights")
    assert back.read_bytes() == weights.read_bytes()
    with Network(cfg, weights, threads=1) as net:
        x = np.random.default_rng(0).normal(0, 1, net.input_shape).astype(np.float32)
        with torch.no_grad():
            ours = model(torch.from_numpy(x)).numpy()
        assert relative_error(ours, net.predict(x)) < 1e-4
        assert net.seen == seen
        # the engine writes the same file
        net.save_weights(tmp_path / "engine_back.weights")
    assert (tmp_path / "engine_back.weights").read_bytes() == weights.read_bytes()


@pytest.mark.parametrize("flag", ["dontloadscales", "dontsave"])
def test_layer_flags_as_the_engine(flag: str, tmp_path: Path) -> None:
    """dontloadscales leaves the BN triple out of the file (read and
    written), dontsave leaves the layer out when writing: same outputs and
    the same written bytes as the engine."""
    text = PARAMS_CFG.replace("groups=2\n", f"groups=2\n{flag}=1\n")
    cfg = tmp_path / "flags.cfg"
    cfg.write_text(text)
    plain = tmp_path / "plain.cfg"
    plain.write_text(PARAMS_CFG)
    # dontsave: a complete file (written without the flag) is read, the layer is not written
    with Network(cfg if flag == "dontloadscales" else plain, threads=1) as net:
        net.randomize(2)
        if flag == "dontloadscales":  # darknet's initial values for what the file lacks
            p = net.params(1)
            p["scales"][:], p["rolling_mean"][:], p["rolling_variance"][:] = 1, 0, 0
        net.save_weights(tmp_path / "w.weights")
    model = DarknetModel(cfg).eval()
    model.load_darknet_weights(tmp_path / "w.weights")
    model.save_darknet_weights(tmp_path / "ours.weights")
    with Network(cfg, tmp_path / "w.weights", threads=1) as net:
        net.save_weights(tmp_path / "engine.weights")
        x = np.random.default_rng(1).random(net.input_shape, dtype=np.float32)
        with torch.no_grad():
            assert relative_error(model(torch.from_numpy(x)).numpy(), net.predict(x)) < 1e-4
    assert (tmp_path / "ours.weights").read_bytes() == (tmp_path / "engine.weights").read_bytes()


def test_state_dict_names(tmp_path: Path) -> None:
    model = DarknetModel(PARAMS_CFG)
    keys = set(model.state_dict())
    assert {"layers.0.conv.weight", "layers.0.bn.weight", "layers.0.bn.bias",
            "layers.0.bn.running_mean", "layers.0.bn.running_var", "layers.2.conv.bias",
            "layers.3.linear.weight", "layers.3.bn.running_var", "layers.4.linear.bias"} <= keys
    assert "layers.0.conv.bias" not in keys  # batch norm's bias is darknet's bias
    assert tuple(model.layers[1].conv.weight.shape) == (4, 3, 3, 3)  # (n, c/groups, k, k)


# ---- size checks, partial files ----------------------------------------------------------------


def test_size_errors_name_the_layer(tmp_path: Path) -> None:
    cfg = tmp_path / "params.cfg"
    cfg.write_text(PARAMS_CFG)
    good = engine_weights(cfg, tmp_path / "good.weights", seed=1, seen=0).read_bytes()
    model = DarknetModel(cfg)
    short = tmp_path / "short.weights"
    short.write_bytes(good[:200])
    with pytest.raises(WeightsError,
                       match=r"runs out in layer 0 \(\[convolutional\] at cfg line 8"):
        model.load_darknet_weights(short)
    long = tmp_path / "long.weights"
    long.write_bytes(good + b"\0" * 8)
    with pytest.raises(WeightsError, match="8 bytes too many"):
        model.load_darknet_weights(long)
    tiny = tmp_path / "tiny.weights"
    tiny.write_bytes(good[:10])
    with pytest.raises(WeightsError, match="too short"):
        model.load_darknet_weights(tiny)
    # a failed load leaves the model as it was
    before = model.layers[0].conv.weight.detach().clone()
    with pytest.raises(WeightsError):
        model.load_darknet_weights(short, partial=True)
    assert torch.equal(before, model.layers[0].conv.weight)


def test_partial_file_as_the_engine(tmp_path: Path) -> None:
    """A file that ends at a layer boundary (a pretrained backbone)."""
    cfg = shared_path("models/yolov3-tiny.cfg")
    full = shared_path("models/yolov3-tiny.weights").read_bytes()
    model = DarknetModel(cfg)
    # header + the first two convolutions (16 and 32 filters, batch norm)
    size = 20 + 4 * (4 * 16 + 16 * 3 * 9) + 4 * (4 * 32 + 32 * 16 * 9)
    backbone = tmp_path / "backbone.weights"
    backbone.write_bytes(full[:size])
    loaded = model.load_darknet_weights(backbone, partial=True)
    whole = shared_path("models/yolov3-tiny.weights")
    with Network(cfg, threads=1) as net:
        # layers [0, 4) hold the file's values or have none: 4 is the first it did not reach
        assert loaded == net.load_weights(backbone, partial=True) == 4
        engine = net.params(2)["weights"].copy()
        # a whole file covers every layer, partial or not (the [yolo] layer last included)
        assert net.load_weights(whole, partial=True) == net.load_weights(whole) == len(net)
        assert net.load_weights(whole, partial=True, cutoff=5) == 5
    assert np.array_equal(model.layers[2].conv.weight.detach().numpy().ravel(), engine)
    assert model.load_darknet_weights(whole, partial=True, cutoff=5) == 5
    assert model.load_darknet_weights(whole, partial=True) == len(model.layers)


# ---- the command line -------------------------------------------------------------------


def test_cli_usage_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "params.cfg"
    cfg.write_text(PARAMS_CFG)
    code, out = run_cli(str(cfg), "--to", "pytorch")
    assert code == 2 and "SOURCE [WEIGHTS] OUT" in out
    pt = tmp_path / "m.pt"
    assert run_cli(str(cfg), "--to", "pytorch", str(pt))[0] == 0  # initial weights, with a note
    code, out = run_cli(str(pt), str(cfg), "--to", "darknet", str(tmp_path / "x.weights"))
    assert code == 2 and "without WEIGHTS" in out
    code, out = run_cli(str(cfg), str(tmp_path / "missing.weights"), "--to", "darknet",
                        str(tmp_path / "x.weights"))
    assert code == 2 and "does not exist" in out
    wrong = tmp_path / "wrong.weights"
    wrong.write_bytes(b"\0" * 64)
    code, out = run_cli(str(cfg), str(wrong), "--to", "pytorch", str(tmp_path / "y.pt"))
    assert code == 1 and "error:" in out and "the file has 64" in out


def test_cli_without_torch_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    cfg = tmp_path / "params.cfg"
    cfg.write_text(PARAMS_CFG)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    code, out = run_cli(str(cfg), "--to", "pytorch", str(tmp_path / "m.pt"))
    assert code == 1
    assert 'pip install "pydarknet-engine[torch]"' in out and 'pip install ".[torch]"' in out


def test_package_imports_without_torch() -> None:
    """`import pydarknet`, the cfg tools and the convert command load without
    torch; `import pydarknet.torch` says what to install."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import pydarknet, pydarknet.cfg, pydarknet.cli_convert\n"
        "try:\n"
        "    import pydarknet.torch\n"
        "except ImportError as e:\n"
        "    print('hint:', e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pydarknet-engine[torch]" in result.stdout
