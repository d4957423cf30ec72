"""darknet's .weights: byte-identical round trips, every header variant,
and clear errors for files that do not fit the cfg."""
from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_CFG
from pydarknet import DarknetIOError, Network, WeightsError
from shared import shared_path

CONNECTED_CFG = """[net]
batch=1
width=4
height=4
channels=2

[convolutional]
batch_normalize=1
filters=3
size=3
pad=1
activation=leaky

[connected]
output=5
activation=linear

[connected]
batch_normalize=1
output=2
activation=logistic
"""


def write_cfg(tmp_path: Path, text: str, name: str = "net.cfg") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_real_weights_round_trip_byte_identical(tmp_path: Path) -> None:
    cfg, weights = shared_path("models/yolov3-tiny.cfg"), shared_path("models/yolov3-tiny.weights")
    with Network(cfg, weights, threads=1) as net:
        out = tmp_path / "copy.weights"
        net.save_weights(out)
        assert out.read_bytes() == weights.read_bytes()
        major, minor, revision, seen = struct.unpack("<iiiq", weights.read_bytes()[:20])
        assert net.info.weights_version == (major, minor, revision)
        assert net.seen == seen


def test_random_round_trip_and_seen(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path, CONNECTED_CFG)
    first = tmp_path / "a.weights"
    with Network(cfg) as net:
        net.randomize(3)
        net.seen = 123456789012
        net.save_weights(first)
        params = {i: {k: v.copy() for k, v in net.params(i).items()} for i in range(len(net))}
    second = tmp_path / "b.weights"
    with Network(cfg, first) as net:
        assert net.seen == 123456789012
        for i, kinds in params.items():
            for kind, values in kinds.items():
                np.testing.assert_array_equal(net.params(i)[kind], values)
        net.save_weights(second)
    assert first.read_bytes() == second.read_bytes()
    # header 0.2.0 with a 64-bit seen, then biases, scales, mean, variance, weights
    assert struct.unpack("<iiiq", first.read_bytes()[:20]) == (0, 2, 0, 123456789012)


def payload(net: Network, transposed: bool = False) -> bytes:
    """The file body as darknet lays it out, from the network's parameters."""
    chunks = []
    for layer in net.layers:
        p = net.params(layer.index)
        if not p:
            continue
        if layer.type == "convolutional":
            order = ["biases", "scales", "rolling_mean", "rolling_variance", "weights"]
            chunks += [p[k] for k in order if k in p]
        else:
            w = p["weights"].reshape(layer.outputs, -1)
            chunks += [p["biases"], (w.T if transposed else w).ravel()]
            chunks += [p[k] for k in ("scales", "rolling_mean", "rolling_variance") if k in p]
    return b"".join(np.ascontiguousarray(c, np.float32).tobytes() for c in chunks)


def test_old_header_with_32_bit_seen(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path, CONNECTED_CFG)
    with Network(cfg) as net:
        net.randomize(4)
        body = payload(net)
    old = tmp_path / "old.weights"
    old.write_bytes(struct.pack("<iiii", 0, 1, 0, 4242) + body)   # version 0.1: 16-byte header
    with Network(cfg, old) as net:
        assert net.seen == 4242 and net.info.weights_version == (0, 1, 0)
        copy = tmp_path / "copy.weights"
        net.save_weights(copy)
    assert copy.read_bytes() == old.read_bytes()


def test_transposed_connected_weights(tmp_path: Path) -> None:
    """major or minor > 1000: connected weights are stored transposed."""
    cfg = write_cfg(tmp_path, CONNECTED_CFG)
    with Network(cfg) as net:
        net.randomize(5)
        expected = {i: net.params(i)["weights"].copy() for i in (1, 2)}
        body = payload(net, transposed=True)
    flipped = tmp_path / "t.weights"
    flipped.write_bytes(struct.pack("<iiii", 0, 1001, 0, 7) + body)
    with Network(cfg, flipped) as net:
        for i in (1, 2):
            np.testing.assert_array_equal(net.params(i)["weights"], expected[i])
        copy = tmp_path / "copy.weights"
        net.save_weights(copy)
    assert copy.read_bytes() == flipped.read_bytes()


def test_truncated_file_names_the_layer(tmp_path: Path, tiny_cfg: Path) -> None:
    full = tmp_path / "full.weights"
    with Network(tiny_cfg) as net:
        net.save_weights(full)
    data = full.read_bytes()
    short = tmp_path / "short.weights"
    short.write_bytes(data[:-10])
    with Network(tiny_cfg) as net, pytest.raises(WeightsError) as info:
        net.load_weights(short)
    message = str(info.value)
    assert f"needs {len(data)} bytes" in message and f"has {len(data) - 10}" in message
    assert "layer 2 ([convolutional]" in message and "short.weights" in message


def test_oversized_file_is_an_error(tmp_path: Path, tiny_cfg: Path) -> None:
    path = tmp_path / "big.weights"
    with Network(tiny_cfg) as net:
        net.save_weights(path)
    path.write_bytes(path.read_bytes() + b"\0" * 8)
    with Network(tiny_cfg) as net, pytest.raises(WeightsError, match="8 bytes too many"):
        net.load_weights(path)


def test_weights_for_another_cfg(tmp_path: Path, tiny_cfg: Path) -> None:
    """A wrong filters= count does not misread silently as in darknet."""
    path = tmp_path / "tiny.weights"
    with Network(tiny_cfg) as net:
        net.save_weights(path)
    other = write_cfg(tmp_path, TINY_CFG.replace("filters=8", "filters=16"), "other.cfg")
    with Network(other) as net, pytest.raises(WeightsError, match="needs .* bytes"):
        net.load_weights(path)


def test_partial_backbone_weights(tmp_path: Path) -> None:
    """darknet53.conv.74-style files: the first layers only, the rest keep
    their initial values."""
    cfg = write_cfg(tmp_path, CONNECTED_CFG)
    with Network(cfg) as net:
        net.randomize(6)
        net.save_weights(tmp_path / "all.weights")
        conv_params = {k: v.copy() for k, v in net.params(0).items()}
    conv_bytes = 20 + 4 * sum(v.size for v in conv_params.values())
    backbone = tmp_path / "backbone.weights"
    backbone.write_bytes((tmp_path / "all.weights").read_bytes()[:conv_bytes])
    with Network(cfg) as net:
        with pytest.raises(WeightsError):
            net.load_weights(backbone)
        assert net.load_weights(backbone, partial=True) == 1
        for kind, values in conv_params.items():
            np.testing.assert_array_equal(net.params(0)[kind], values)
    # a file cut inside a layer is still an error in partial mode
    broken = tmp_path / "broken.weights"
    broken.write_bytes(backbone.read_bytes()[:-4])
    with Network(cfg) as net, pytest.raises(WeightsError, match="layer 0"):
        net.load_weights(broken, partial=True)


@pytest.mark.parametrize("content,match", [(b"", "too short"), (b"\0" * 15, "too short"),
                                           (struct.pack("<iii", 0, 2, 0) + b"\0" * 4, "version 0.2 weights header .16 bytes, need 20")])
def test_broken_headers(tmp_path: Path, tiny_cfg: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.weights"
    path.write_bytes(content)
    with Network(tiny_cfg) as net, pytest.raises(WeightsError, match=match):
        net.load_weights(path)


def payload_of(tmp_path: Path, cfg: Path) -> bytes:
    """The layer data (after the 20-byte header) of a saved random network."""
    with Network(cfg) as net:
        net.randomize(1)
        net.save_weights(tmp_path / "payload.weights")
    return (tmp_path / "payload.weights").read_bytes()[20:]


def test_negative_seen_is_refused(tmp_path: Path, tiny_cfg: Path) -> None:
    """darknet's seen is a 64-bit count: one with the top bit set is no count
    (and would overflow when training adds to it)."""
    path = tmp_path / "bad.weights"
    path.write_bytes(struct.pack("<iiiQ", 0, 2, 0, 1 << 63) + payload_of(tmp_path, tiny_cfg))
    with Network(tiny_cfg) as net, pytest.raises(WeightsError) as info:
        net.load_weights(path)
    assert "bad.weights: header seen=-9223372036854775808 is negative" in str(info.value)


def test_seen_stops_at_the_largest_count(tmp_path: Path) -> None:
    """A count loaded near INT64_MAX does not wrap negative when training adds the batch."""
    cfg = write_cfg(tmp_path, "[net]\nbatch=2\nwidth=4\nheight=4\nchannels=2\n"
                    "[convolutional]\nfilters=1\nsize=1\nactivation=linear\n")
    biggest = (1 << 63) - 1
    with Network(cfg, train=True) as net:
        path = tmp_path / "late.weights"
        net.save_weights(path)
        data = path.read_bytes()
        path.write_bytes(data[:12] + struct.pack("<q", biggest - 1) + data[20:])
        net.load_weights(path)
        assert net.seen == biggest - 1
        x = np.zeros((net.images_per_step, 2, 4, 4), np.float32)
        for _ in range(2):  # the first step reaches INT64_MAX, the second stays there
            net.train_step(x, None)
            assert net.seen == biggest


def test_version_test_does_not_overflow(tmp_path: Path, tiny_cfg: Path) -> None:
    """darknet's 64-bit seen test, major*10 + minor >= 2, on a major whose
    *10 overflows an int: -300000000 is below 2, so seen is 32-bit (16-byte
    header), and the file saves back as it was."""
    path = tmp_path / "old.weights"
    data = struct.pack("<iiii", -300000000, 0, 0, 1234) + payload_of(tmp_path, tiny_cfg)
    path.write_bytes(data)
    with Network(tiny_cfg) as net:
        net.load_weights(path)
        assert net.seen == 1234
        assert net.info.weights_version == (-300000000, 0, 0)
        net.save_weights(tmp_path / "again.weights")
    assert (tmp_path / "again.weights").read_bytes() == data


def test_missing_and_directory(tmp_path: Path, tiny_cfg: Path) -> None:
    with Network(tiny_cfg) as net:
        with pytest.raises(DarknetIOError, match="nope.weights"):
            net.load_weights(tmp_path / "nope.weights")
        with pytest.raises(DarknetIOError, match="not a regular file"):
            net.load_weights(tmp_path)


def test_failed_save_keeps_the_old_file(tmp_path: Path, tiny_cfg: Path) -> None:
    """Saves are atomic: a save that cannot complete leaves what was there."""
    target = tmp_path / "model.weights"
    with Network(tiny_cfg) as net:
        net.save_weights(target)
        before = target.read_bytes()
        net.randomize(9)
        with pytest.raises(DarknetIOError):
            net.save_weights(tmp_path / "missing-dir" / "model.weights")
        # a directory in the way
        (tmp_path / "blocked.weights").mkdir()
        (tmp_path / "blocked.weights" / "keep").write_text("x")
        with pytest.raises(DarknetIOError, match="blocked.weights': not a regular file"):
            net.save_weights(tmp_path / "blocked.weights")
        # a read-only file is refused, as the Python writers refuse it
        target.chmod(0o444)
        with pytest.raises(DarknetIOError, match="model.weights': the file is read-only"):
            net.save_weights(target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked.weights", "model.weights",
                                                          "tiny.cfg"]


def test_save_keeps_the_permissions_of_the_file_it_replaces(tmp_path: Path, tiny_cfg: Path) -> None:
    """A replaced file keeps its mode (not the temporary file's 0600); a new
    one gets what a plain open gives: 0666 less the umask."""
    old_umask = os.umask(0o027)
    try:
        with Network(tiny_cfg) as net:
            net.save_weights(tmp_path / "new.weights")
            (tmp_path / "shared.weights").write_bytes(b"")
            (tmp_path / "shared.weights").chmod(0o664)
            net.save_weights(tmp_path / "shared.weights")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "new.weights").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "shared.weights").stat().st_mode) == 0o664
    assert (tmp_path / "shared.weights").stat().st_size == (tmp_path / "new.weights").stat().st_size
