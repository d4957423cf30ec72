"""ONNX export: onnxruntime runs the exported graph and gives the model's
(and so the engine's) raw outputs on random inputs.

Sizes: the synthetic networks from test_torch_model.py (every layer type,
16x16 to 32x32 inputs) and the real yolov3-tiny at 160x160 instead of 416
(same graph, a fraction of the time on 2 cores).  Each export takes a few
seconds (torch.export + the ONNX translation), so there are three.

Tolerance: 1e-4 of the output's scale: onnxruntime's kernels sum in their
own order (measured ~1e-6).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # torch.onnx's exporter needs it

from conftest import relative_error  # noqa: E402
from pydarknet import CfgError, Network  # noqa: E402
from pydarknet.torch import DarknetModel, export_onnx  # noqa: E402
from shared import shared_path  # noqa: E402
from test_torch_model import ZOO_CLASSIFIER, ZOO_DETECTOR  # noqa: E402
from test_torch_weights import run_cli  # noqa: E402

TOLERANCE = 1e-4
torch.set_num_threads(2)


def session(path: Path) -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def randomised(model: DarknetModel, seed: int) -> DarknetModel:
    """Random parameters of darknet's scale (He weights, unit-ish BN)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(1, 1.5, generator=generator)
            elif name.endswith(("weight", "bias", "running_mean")) and tensor.dim() == 1:
                tensor.normal_(0, .1, generator=generator)
                if name.endswith("bn.weight"):
                    tensor.add_(1)
            else:
                tensor.normal_(0, (2 / tensor[0].numel()) ** .5, generator=generator)
    return model.eval()


@pytest.mark.parametrize("text,decode,opset", [(ZOO_DETECTOR, False, 18),
                                               (ZOO_CLASSIFIER, False, 18),
                                               (ZOO_DETECTOR, True, 20)],
                         ids=["detector-raw", "classifier-raw", "detector-decoded-opset20"])
def test_every_layer_type_exports(text: str, decode: bool, opset: int, tmp_path: Path) -> None:
    model = randomised(DarknetModel(text), seed=1)
    path = export_onnx(model, tmp_path / "zoo.onnx", decode=decode, opset=opset)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == opset
    # a batch of 3: the batch is dynamic (traced with 2)
    x = np.random.default_rng(2).normal(0, 2, (3, model.channels, model.height, model.width)
                                        ).astype(np.float32)
    sess = session(path)
    assert [i.name for i in sess.get_inputs()] == ["input"]
    (out,) = sess.run(None, {"input": x})
    with torch.no_grad():
        expected = model(torch.from_numpy(x), decode=decode).numpy()
    assert out.shape == expected.shape
    assert relative_error(out, expected) < TOLERANCE
    assert not model.training  # export leaves the mode as it was


def test_real_yolov3_tiny_through_cli(tmp_path: Path) -> None:
    """`convert CFG WEIGHTS --to onnx` at 160x160: one output per [yolo]
    layer, equal to the engine's layer outputs at the same size."""
    cfg = shared_path("models/yolov3-tiny.cfg")
    weights = shared_path("models/yolov3-tiny.weights")
    path = tmp_path / "yolov3-tiny.onnx"
    code, out = run_cli(str(cfg), str(weights), "--to", "onnx", str(path), "--width", "160",
                        "--height", "160")
    assert code == 0, out
    sess = session(path)
    assert [o.name for o in sess.get_outputs()] == ["yolo_16", "yolo_23"]
    x = np.random.default_rng(3).random((2, 3, 160, 160), dtype=np.float32)
    heads = sess.run(None, {"input": x})
    with Network(cfg, weights, width=160, height=160, batch=2, threads=2) as net:
        net.predict(x)
        for index, head in zip((16, 23), heads):
            assert relative_error(head, net.layer_output(index)) < TOLERANCE


def test_old_opsets_are_refused(tmp_path: Path) -> None:
    """The exporter writes opset 18 natively and cannot convert Pad down to 17."""
    with pytest.raises(ValueError, match="opset 18 or newer"):
        export_onnx(DarknetModel(ZOO_CLASSIFIER), tmp_path / "old.onnx", opset=17)
    code, out = run_cli(str(shared_path("models/yolov3-tiny.cfg")), "--to", "onnx",
                        str(tmp_path / "x.onnx"), "--opset", "17")
    assert code == 2 and "--opset" in out


def test_a_size_the_cfg_cannot_take_is_a_cfg_error(tmp_path: Path) -> None:
    """yolov3-tiny at width 100: its route cannot join 26- and 25-wide maps;
    the engine's one-line CfgError, not the exporter's trace."""
    model = DarknetModel(shared_path("models/yolov3-tiny.cfg"))
    with pytest.raises(CfgError, match=r"\[route\] layers .* differ"):
        export_onnx(model, tmp_path / "x.onnx", width=100)
    assert not (tmp_path / "x.onnx").exists()
    code, out = run_cli(str(shared_path("models/yolov3-tiny.cfg")), "--to", "onnx",
                        str(tmp_path / "x.onnx"), "--width", "100")
    errors = [line for line in out.splitlines() if not line.startswith("note: ")]
    assert code == 1 and len(errors) == 1 and errors[0].startswith("error: ") and "differ" in out, out
