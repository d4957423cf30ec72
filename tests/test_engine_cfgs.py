"""Every cfg of pjreddie darknet either builds with darknet's shapes, BFLOPs
and layer table, or fails with a clear "unsupported" error naming the file,
line and section."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from oracle import DARKNET_LAYER_TYPES, darknet, with_batch_one
from pydarknet import Network, UnsupportedError
from pydarknet.summary import summary_lines
from shared import reference_cfgs

# what pydarknet does not implement, and the section its error must name
UNSUPPORTED = {
    "darknet9000.cfg": "[softmax]",   # hierarchical softmax (tree=)
    "yolo9000.cfg": "[region]",       # hierarchical softmax (tree=)
    "go.cfg": "[reorg]",              # reorg extra=1
    "go.test.cfg": "[reorg]",
    "gru.cfg": "[gru]",
    "rnn.cfg": "[rnn]",
    "rnn.train.cfg": "[rnn]",
    "t1.test.cfg": "[detection]",     # YOLOv1
    "yolov1-tiny.cfg": "[detection]",
    "yolov1.cfg": "[local]",
}
MUST_LOAD = {"yolov2.cfg", "yolov2-tiny.cfg", "yolov2-voc.cfg", "yolov2-tiny-voc.cfg",
             "darknet19.cfg", "darknet19_448.cfg", "yolov3-tiny.cfg"}

CFGS = reference_cfgs()


def cfg_id(path: Path | None) -> str:
    return path.name if path else "no-shared"


def build(cfg: Path, tmp_path: Path) -> Network:
    copy = tmp_path / cfg.name
    copy.write_text(with_batch_one(cfg.read_text()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Network(copy, threads=1)


def darknet_table(printed: str) -> list[str]:
    """darknet's printed layer table without its "x: Using default" notes."""
    printed = re.sub(r"\w+: Using default '[^']*'\n", "", printed)
    return [line for line in printed.splitlines() if line.strip()]


@pytest.mark.parametrize("cfg", CFGS or [None], ids=cfg_id)
def test_reference_cfg_builds_or_is_unsupported(cfg: Path | None, tmp_path: Path) -> None:
    if cfg is None:
        pytest.skip("needs ../shared/darknet/cfg")
    if cfg.name in UNSUPPORTED:
        with pytest.raises(UnsupportedError) as info:
            build(cfg, tmp_path)
        message = str(info.value)
        assert UNSUPPORTED[cfg.name] in message, message
        assert cfg.name in message and re.search(r":\d+:", message), message
        return
    with build(cfg, tmp_path) as net:
        layers = net.layers
        assert layers, cfg.name
        assert net.info.bflops > 0
        # the output of every layer feeds the next one
        for before, after in zip(layers, layers[1:]):
            if after.type not in ("route",):
                assert after.input_shape == before.output_shape or after.type == "connected", (
                    cfg.name, after.index)


@pytest.mark.oracle
@pytest.mark.parametrize("cfg", [c for c in CFGS if c.name not in UNSUPPORTED] or [None], ids=cfg_id)
def test_shapes_bflops_and_table_match_darknet(cfg: Path | None, tmp_path: Path) -> None:
    if cfg is None:
        pytest.skip("needs ../shared/darknet/cfg")
    reference = darknet()
    copy = tmp_path / cfg.name
    copy.write_text(with_batch_one(cfg.read_text()))
    with build(cfg, tmp_path) as net, reference.load(copy) as theirs:
        layers = net.layers
        assert theirs.n_layers == len(layers)
        for ours in layers:
            info = theirs.layer_info(ours.index)
            assert info["type"] == DARKNET_LAYER_TYPES[ours.type], (ours.index, ours.type)
            assert info["outputs"] == ours.outputs, (ours.index, ours.type)
            if ours.type not in ("softmax", "cost"):  # darknet leaves their shape at 0
                c, h, w = ours.output_shape
                assert (info["out_c"], info["out_h"], info["out_w"]) == (c, h, w), ours.index
        printed = theirs.printed_bflops()
        conv = [l.bflops for l in layers if l.type == "convolutional"]
        assert len(printed) == len(conv)
        assert all(abs(round(ours, 3) - p) < 1e-9 for ours, p in zip(conv, printed))
        # the total counts connected layers too (darknet prints no total)
        connected = sum(l.bflops for l in layers if l.type == "connected")
        assert net.info.bflops == pytest.approx(sum(conv) + connected, rel=1e-9)
        # `pydarknet summary` prints darknet's table line for line
        assert summary_lines(net)[:-1] == darknet_table(theirs.printed)


@pytest.mark.parametrize("name", sorted(MUST_LOAD))
def test_yolov2_family_loads(name: str, batch1_cfg) -> None:
    with Network(batch1_cfg(name), threads=1) as net:
        assert net.layers[-1].type in ("region", "yolo", "softmax")
