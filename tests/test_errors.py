"""Bad input of every kind raises the right DarknetError subclass with a
message a user can act on (file, line, section, expected vs found), and the
process survives all of it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_CFG
from pydarknet._ffi import check, ffi, lib
from pydarknet import (ArgumentError, CfgError, DarknetError, DarknetIOError, Detector,
                       ImageError, Network, UnsupportedError)

NET = "[net]\nbatch=1\nwidth=16\nheight=16\nchannels=3\n"
CONV = "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"
# an input just under 2^31 values: a layer that grows it overflows an int
BIG_NET = "[net]\nbatch=1\nwidth=65536\nheight=32767\nchannels=1\n"

# (name, cfg text, exception, fragments the message must contain)
BAD_CFGS = [
    ("empty", "", CfgError, ["no sections"]),
    ("comments only", "# nothing\n; here\n", CfgError, ["no sections"]),
    ("no net first", CONV + NET, CfgError, [":1:", "[convolutional]", "[net] or [network]"]),
    ("unknown section", NET + "[convolutionnal]\nfilters=3\n", CfgError,
     [":6:", "[convolutionnal]", "unknown section"]),
    ("option before section", "filters=3\n" + NET, CfgError, [":1:", "before the first"]),
    ("line without =", NET + CONV + "stride 2\n", CfgError, [":11:", "key=value", "stride2"]),
    ("bad header", NET + "[convolutional\nfilters=2\n", CfgError, [":6:", "malformed section"]),
    ("int not parsable", NET + CONV.replace("filters=4", "filters=four"), CfgError,
     [":7:", "[convolutional]", "(section at line 6)", "'filters'", "integer", "'four'"]),
    ("float not parsable", NET.replace("[net]\n", "[net]\nmomentum=.9.1\n"), CfgError,
     [":2:", "[net]", "'momentum'", "a number", "'.9.1'"]),
    ("unknown activation", NET + CONV.replace("leaky", "leakyy"), CfgError,
     ["unknown activation 'leakyy'", "[convolutional]"]),
    ("route out of range", NET + CONV + "[route]\nlayers=-3\n", CfgError,
     ["[route]", "layers=-3", "refers to layer -2"]),
    ("route forward", NET + CONV + "[route]\nlayers=1\n", CfgError, ["refers to layer 1", "earlier"]),
    ("route size mismatch", NET + CONV + "[maxpool]\nsize=2\nstride=2\n[route]\nlayers=-1,-2\n",
     CfgError, ["[route]", "differ in width or height"]),
    ("shortcut out of range", NET + CONV + "[shortcut]\nfrom=-5\n", CfgError,
     ["[shortcut]", "from=-5"]),
    ("region filters", NET + CONV + "[region]\nclasses=2\nnum=2\n", CfgError,
     ["[region]", "expects the layer before it to output 14 channels", "set filters=14"]),
    ("yolo filters", NET + CONV + "[yolo]\nmask=0,1\nanchors=1,1,2,2,3,3\nclasses=3\nnum=3\n",
     CfgError, ["[yolo]", "16 channels", "set filters=16"]),
    ("yolo mask out of range", NET + CONV.replace("filters=4", "filters=16") +
     "[yolo]\nmask=0,5\nanchors=1,1,2,2,3,3\nclasses=3\nnum=3\n", CfgError, ["mask value 5"]),
    ("anchor count", NET + CONV.replace("filters=4", "filters=14") +
     "[region]\nclasses=2\nnum=2\nanchors=1,1,2\n", CfgError, ["anchors= has 3 values", "4"]),
    ("unsupported layer", NET + "[lstm]\noutput=4\n", UnsupportedError,
     ["[lstm]", "unsupported layer", "LSTM"]),
    ("batch < subdivisions", NET.replace("batch=1", "batch=2\nsubdivisions=4"), CfgError,
     ["batch=2 is smaller than subdivisions=4"]),
    ("unknown policy", NET.replace("[net]\n", "[net]\npolicy=cosine\n") + CONV, CfgError,
     ["policy=cosine"]),
    ("steps without matching scales", NET.replace(
        "[net]\n", "[net]\npolicy=steps\nsteps=10,20\nscales=.1\n") + CONV, CfgError,
     ["steps= has 2 values but scales= has 1"]),
    ("no input size", "[net]\nbatch=1\n" + CONV, CfgError, ["width=", "height=", "channels="]),
    ("kernel larger than input", NET + CONV.replace("size=3\npad=1", "size=32"), CfgError,
     ["32x32 kernel", "does not fit a 16x16 input"]),
    ("groups not dividing", NET + CONV.replace("filters=4", "filters=4\ngroups=2"), CfgError,
     ["groups=2 must divide", "(3)"]),
    # shapes are computed without int overflow and refused when they do not fit an int
    ("input volume overflows", "[net]\nwidth=65537\nheight=65537\nchannels=1\n[maxpool]\nsize=1\n",
     CfgError, [":1:", "[net]", "width=65537 height=65537 channels=1", "too large",
                "4295098369 values; at most 2147483647"]),
    ("maxpool output overflows", BIG_NET + "[maxpool]\nsize=1\nstride=1\npadding=2\n", CfgError,
     [":6:", "[maxpool]", "output 65538x32769x1 is too large (2147614722 values; at most 2147483647)"]),
    ("maxpool padding absurd", NET + "[maxpool]\nsize=1\nstride=1\npadding=2147483646\n", CfgError,
     ["[maxpool]", "padding 2147483646", "more than 2147483647 a side"]),
    ("conv output overflows", BIG_NET + "[convolutional]\nfilters=2\nsize=1\n", CfgError,
     ["[convolutional]", "output 65536x32767x2 is too large (4294836224 values"]),
    ("conv padding absurd", NET + CONV.replace("pad=1", "padding=2147483647"), CfgError,
     ["[convolutional]", "padding 2147483647", "more than 2147483647 a side"]),
    ("conv size absurd", NET + CONV.replace("size=3", "size=50000"), CfgError,
     ["[convolutional]", "size=50000 with 3 input channels", "7500000000 values", "at most 1073741824"]),
    # size*size*channels = 2^64: an int64 product wraps to 0 (it passed the check, then divided by 0)
    ("conv filter wraps int64", "[net]\nbatch=1\nwidth=1\nheight=1\nchannels=1048576\n\n"
     "[convolutional]\nfilters=1\nsize=4194304\npad=1\n", CfgError,
     ["[convolutional]", "size=4194304 with 1048576 input channels", "18446744073709551616 values"]),
    ("upsample output overflows", NET + "[upsample]\nstride=2147483647\n", CfgError,
     ["[upsample]", "output 34359738352x34359738352x3 is too large"]),
    ("reorg stride squared overflows", NET + "[reorg]\nstride=46341\nreverse=1\n", CfgError,
     ["[reorg]", "stride 46341 does not divide its 16x16x3 input"]),
    ("route channels overflow", "[net]\nwidth=1\nheight=1\nchannels=1073741824\n[avgpool]\n"
     "[route]\nlayers=0,0\n", CfgError, ["[route]", "output 1x1x2147483648 is too large"]),
    ("region channels overflow", NET + "[region]\nclasses=1000000000\nnum=3\n", CfgError,
     ["[region]", "3000000015 channels"]),
    ("yolo max absurd", NET + CONV.replace("filters=4", "filters=6") +
     "[yolo]\nmask=0\nanchors=10,14\nclasses=1\nnum=1\nmax=858993460\n", CfgError,
     ["[yolo]", "max=858993460, expected 1..10000"]),
    ("yolo jitter", NET + CONV.replace("filters=4", "filters=6") +
     "[yolo]\nclasses=1\nnum=1\njitter=5\n", CfgError, ["[yolo]", "jitter=5, expected", "[0, 1)"]),
    ("region jitter", NET + CONV.replace("filters=4", "filters=6") +
     "[region]\nclasses=1\nnum=1\njitter=1\n", CfgError, ["[region]", "jitter=1, expected"]),
    ("net hue", NET.replace("[net]\n", "[net]\nhue=1e30\n") + CONV, CfgError,
     ["[net]", "hue=1e+30, expected", "[0, 1]"]),
    ("net saturation", NET.replace("[net]\n", "[net]\nsaturation=0\n") + CONV, CfgError,
     ["[net]", "saturation=0, expected a factor"]),
]


@pytest.mark.parametrize("name,text,error,fragments", BAD_CFGS, ids=[c[0] for c in BAD_CFGS])
def test_bad_cfg(tmp_path: Path, name: str, text: str, error: type, fragments: list[str]) -> None:
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    with pytest.raises(error) as info:
        Network(path)
    message = str(info.value)
    assert "bad.cfg" in message or name in ("empty",), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert isinstance(info.value, DarknetError)


def test_missing_cfg_and_binary_cfg(tmp_path: Path) -> None:
    with pytest.raises(DarknetIOError, match="nope.cfg"):
        Network(tmp_path / "nope.cfg")
    binary = tmp_path / "model.cfg"
    binary.write_bytes(b"[net]\n\0\0\x01garbage")
    with pytest.raises(CfgError, match="NUL bytes"):
        Network(binary)
    with pytest.raises(DarknetIOError):
        Network(tmp_path)  # a directory


def test_arguments_that_are_not_paths_or_numbers(tiny_cfg: Path) -> None:
    """What C would misread is refused in Python: a NUL byte would cut the
    path short (opening 'a' for 'a\\0b'), a float or string would not be an
    int, a number past an int would wrap."""
    (tiny_cfg.parent / "a").write_bytes(tiny_cfg.read_bytes())
    for path, message in [(None, "file path.*NoneType"), (3, "file path.*int"),
                          (str(tiny_cfg.parent / "a") + "\0b", "NUL byte")]:
        with pytest.raises(ArgumentError, match=message):
            Network(path)  # type: ignore[arg-type]
    for options, message in [({"batch": "4"}, "batch must be an integer"),
                             ({"threads": 2.5}, "threads must be an integer"),
                             ({"width": True}, "width must be an integer"),
                             ({"height": 2**40}, "height is out of range"),
                             ({"device": 0}, "device must be")]:
        with pytest.raises(ArgumentError, match=message):
            Network(tiny_cfg, **options)  # type: ignore[arg-type]
    with Network(tiny_cfg) as net, pytest.raises(ArgumentError, match="NUL byte"):
        net.save_weights(str(tiny_cfg.parent / "w.weights") + "\0x")
    assert not (tiny_cfg.parent / "w.weights").exists()


def test_a_batch_past_an_int_is_refused_before_anything_changes(tiny_cfg: Path) -> None:
    """The layers count a whole batch's values in ints (as darknet): a batch
    or a size that would overflow them is refused before allocating, and the
    network goes on at its old batch and size."""
    with pytest.raises(ArgumentError, match=r"batch 200000000 is too large .* layer 0 "
                                            r"\(\[convolutional\]\) holds 8192 values per image.*"
                                            r"batch <= 262143\)"):
        Network(tiny_cfg, batch=200_000_000)
    with Network(tiny_cfg, batch=2) as net:
        before = net.predict(np.ones((2, 3, 32, 32), np.float32)).copy()
        with pytest.raises(ArgumentError, match=r"batch 1000000 is too large .*at 32x32: layer 0 "
                                                r"\(\[convolutional\]\) holds"):
            net.set_batch(1_000_000)
        with pytest.raises(ArgumentError, match=r"batch 2 is too large for this network at 12000x12000"):
            net.resize(12_000, 12_000)
        assert (net.info.width, net.info.height) == (32, 32)
        np.testing.assert_array_equal(net.predict(np.ones((2, 3, 32, 32), np.float32)), before)


def test_errors_are_also_builtin_exceptions(tmp_path: Path) -> None:
    path = tmp_path / "bad.cfg"
    path.write_text(NET + CONV.replace("filters=4", "filters=x"))
    with pytest.raises(ValueError):
        Network(path)
    with pytest.raises(OSError):
        Network(tmp_path / "missing.cfg")
    with pytest.raises(NotImplementedError):
        path.write_text(NET + "[gru]\noutput=3\n")
        Network(path)


def test_unused_options_warn(tmp_path: Path) -> None:
    path = tmp_path / "warn.cfg"
    path.write_text(NET + CONV.replace("size=3", "size=3\nfilterz=8"))
    with pytest.warns(UserWarning, match=r"warn.cfg:9: \[convolutional\]: unused option 'filterz=8'"):
        Network(path).close()


def test_a_misspelt_key_is_named_in_the_error_it_causes(tmp_path: Path) -> None:
    """`filtres=255` leaves the [convolutional] at filters=1 and the [yolo]
    after it fails: the error names the misspelt key (its warning would
    never be shown, the network is never made)."""
    text = (Path(__file__).parent.parent / "cfg" / "yolov3-tiny.cfg").read_text()
    head, tail = text.rsplit("filters=255", 1)
    path = tmp_path / "typo.cfg"
    path.write_text(head + "filtres=255" + tail)
    line = (head + "filtres").count("\n") + 1
    with pytest.raises(CfgError, match=rf"outputs 26x26x1: set filters=255 .*\(note: unused option "
                                       rf"'filtres=255' in \[convolutional\] at line {line}\)$"):
        Network(path)


def test_a_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "bom.cfg"  # as Windows editors save UTF-8
    path.write_bytes(b"\xef\xbb\xbf" + TINY_CFG.encode())
    with Network(path) as net:
        assert len(net) > 0


def test_repeated_option_names_the_value_used(tmp_path: Path) -> None:
    # darknet reads a repeated key's first value (yolov3-openimages.cfg sets batch twice)
    path = tmp_path / "twice.cfg"
    path.write_text(NET + CONV.replace("size=3", "size=3\nfilters=9"))
    with pytest.warns(UserWarning, match=r"twice.cfg:9: \[convolutional\]: 'filters=9' ignored: "
                                         r"'filters' is set on line 7 \(darknet reads the first\)"):
        with Network(path) as net:
            assert net.layers[0].filters == 4


def test_failed_set_batch_leaves_nothing_to_run_on(tiny_cfg: Path) -> None:
    """A reallocation that runs out of memory part way leaves no half-sized
    buffers to compute on: every call that would use them says so, until a
    set_batch succeeds.  In a process limited to 1.5 GB more address space
    than it has (a batch of 40,000 needs gigabytes of activations)."""
    script = tiny_cfg.parent / "oom.py"
    script.write_text(f"""
import resource, numpy as np, pydarknet
from pydarknet._ffi import check, ffi, lib
with pydarknet.Network({str(tiny_cfg)!r}) as net:
    x = np.random.default_rng(0).random(net.input_shape, dtype=np.float32)
    before = net.predict(x).copy()
    size_kb = int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmSize:")))
    resource.setrlimit(resource.RLIMIT_AS, ((size_kb << 10) + (3 << 29),) * 2)
    def fails(call, match):
        try:
            call()
        except MemoryError as e:
            assert match in str(e), e
            return
        raise AssertionError("no MemoryError")
    fails(lambda: net.set_batch(40_000), "out of memory")
    output = ffi.new("float **")
    for call in (lambda: check(lib.dn_network_predict(net.handle, ffi.NULL, output)),  # its own input buffer
                 lambda: net.layer_output(0)):
        fails(call, "last set_batch or resize")
    fails(lambda: net.set_batch(40_000), "out of memory")  # the same size again is retried, not taken as done
    net.set_batch(1)
    assert np.array_equal(net.predict(x), before)
print("ok")
""")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr


def test_failed_resize_keeps_the_old_size() -> None:
    """A size one layer refuses (yolov3-tiny's route joins a 13x13 and a 26x26
    map: 420 gives 14 and 27) changes no layer: the network keeps running at
    its old size."""
    cfg = Path(__file__).resolve().parent.parent / "cfg" / "yolov3-tiny.cfg"
    with Network(cfg, batch=1) as net:
        net.randomize(3)
        x = np.random.default_rng(0).random(net.input_shape, dtype=np.float32)
        before = net.predict(x)
        shapes = [(layer.input_shape, layer.output_shape) for layer in net.layers]
        with pytest.raises(DarknetError, match="route"):
            net.resize(420, 420)
        assert [(layer.input_shape, layer.output_shape) for layer in net.layers] == shapes
        np.testing.assert_array_equal(net.predict(x), before)
        net.resize(608, 608)  # a size it takes
        assert net.input_shape == (1, 3, 608, 608)


RESIZES = [
    # a [reorg] resized to a size its stride does not divide (it would write past its output)
    ("[net]\nwidth=16\nheight=16\nchannels=4\n[reorg]\nstride=2\n", (17, 16), ArgumentError,
     ["resizing to 17x16: layer 0 ([reorg]): stride 2 does not divide its 17x16x4 input"]),
    # (-3) * (-3) * 6 > 0: a negative shape is refused, not only an empty one
    ("[net]\nwidth=8\nheight=8\nchannels=6\n[maxpool]\nsize=5\nstride=1\npadding=0\n"
     "[yolo]\nclasses=1\nnum=1\nanchors=10,10\n", (1, 1), ArgumentError,
     ["resizing to 1x1: layer 0 ([maxpool])", "does not fit a 1x1 input (output -3x-3)"]),
    ("[net]\nwidth=16\nheight=16\nchannels=1\n[upsample]\nstride=2\n", (32768, 32767), ArgumentError,
     ["resizing to 32768x32767: layer 0 ([upsample]): output 65536x65534x1 is too large "
      "(4294836224 values; at most 2147483647)"]),
    ("[net]\nwidth=16\nheight=16\nchannels=1\n[upsample]\nstride=2\n", (65536, 32768), ArgumentError,
     ["resizing to 65536x32768: the 65536x32768x1 input is too large (2147483648 values"]),
]


@pytest.mark.parametrize("text,size,error,fragments", RESIZES,
                         ids=["reorg stride", "maxpool negative", "upsample overflow", "input overflow"])
def test_resize_refuses_shapes_a_layer_cannot_take(tmp_path: Path, text: str, size: tuple[int, int],
                                                   error: type, fragments: list[str]) -> None:
    """Every layer's resize checks its new shape as its parse does; the
    network keeps its old size and still runs."""
    path = tmp_path / "net.cfg"
    path.write_text(text)
    with Network(path) as net:
        shapes = [(layer.input_shape, layer.output_shape) for layer in net.layers]
        with pytest.raises(error) as info:
            net.resize(*size)
        for fragment in fragments:
            assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"
        assert [(layer.input_shape, layer.output_shape) for layer in net.layers] == shapes
        net.predict(np.zeros(net.input_shape, np.float32))


def test_bad_predict_calls(tiny_cfg: Path) -> None:
    with Network(tiny_cfg) as net:
        with pytest.raises(ArgumentError, match="float32"):
            net.predict(np.zeros((1, 3, 32, 32), np.float64))
        with pytest.raises(ArgumentError, match="shape"):
            net.predict(np.zeros((1, 3, 16, 16), np.float32))
        with pytest.raises(ArgumentError, match="batch is 1"):
            net.predict(np.zeros((2, 3, 32, 32), np.float32))
        with pytest.raises(ArgumentError, match="out of range"):
            net.layer(99)
        with pytest.raises(ArgumentError, match="batch must be >= 1"):
            net.set_batch(0)
        with pytest.raises(ArgumentError, match="must be positive"):
            net.resize(0, 32)
    with pytest.raises(ArgumentError, match="closed"):
        net.predict(np.zeros((1, 3, 32, 32), np.float32))


def test_detector_on_a_classifier(tmp_path: Path) -> None:
    path = tmp_path / "classifier.cfg"
    path.write_text(NET + CONV + "[avgpool]\n[softmax]\n")
    with pytest.raises(ArgumentError, match="not a detector"):
        Detector(path, None)


def test_bad_frames_to_detector(tiny_cfg: Path) -> None:
    with Detector(tiny_cfg, None, names=["a", "b"]) as det:
        with pytest.raises(ImageError):
            det.detect(np.zeros((8, 8), np.uint8))
        with pytest.raises(ImageError):
            det.detect(np.zeros((8, 8, 3), np.float32))
        with pytest.raises(ArgumentError, match="thresh"):
            det.detect(np.zeros((8, 8, 3), np.uint8), thresh=2)
        # a negative or NaN nms would silently turn NMS off (0 does, on purpose)
        for nms in (-1, float("nan"), 1.5):
            with pytest.raises(ArgumentError, match=r"nms must be in \[0, 1\] \(0: no NMS\)"):
                det.detect(np.zeros((8, 8, 3), np.uint8), nms=nms)
        with pytest.raises(ArgumentError, match="thresh must be a number, got '0.5'"):
            det.detect(np.zeros((8, 8, 3), np.uint8), thresh="0.5")  # type: ignore[arg-type]
        assert det.detect(np.zeros((8, 8, 3), np.uint8), thresh=.99) == []
        assert det.detect(np.zeros((8, 8, 3), np.uint8), thresh=.99, nms=0) == []


def test_process_survives_everything(tmp_path: Path) -> None:
    """All of the above in a fresh interpreter that must exit normally."""
    script = tmp_path / "survive.py"
    cfgs = []
    for i, (_, text, _, _) in enumerate(BAD_CFGS):
        path = tmp_path / f"bad{i}.cfg"
        path.write_text(text)
        cfgs.append(str(path))
    good = tmp_path / "tiny.cfg"
    good.write_text(TINY_CFG)
    bad_weights = tmp_path / "bad.weights"
    bad_weights.write_bytes(b"\x00" * 37)
    script.write_text(f"""
import numpy as np, pydarknet
failures = 0
for cfg in {cfgs!r}:
    try:
        pydarknet.Network(cfg)
    except pydarknet.DarknetError:
        failures += 1
net = pydarknet.Network({str(good)!r})
for call in (lambda: net.load_weights({str(bad_weights)!r}),
             lambda: net.predict(np.zeros((3,), np.float32))):
    try:
        call()
    except pydarknet.DarknetError:
        failures += 1
print("survived", failures)
""")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"survived {len(BAD_CFGS) + 2}" in result.stdout
