"""The GPU entry points on a machine without a usable GPU: clear errors that
say what to do, on a CPU build and on a CUDA build alike."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import TINY_CFG
from pydarknet import ArgumentError, DarknetError, Network, UnsupportedError
from pydarknet._ffi import lib
from pydarknet.cli import main
from pydarknet.network import parse_device
from pydarknet.replicas import Trainer

CUDA_BUILD = bool(lib.dn_built_with_cuda())
GPUS = lib.dn_cuda_device_count()
pytestmark = pytest.mark.skipif(GPUS > 0, reason="a GPU is present (tests/gpu covers it)")


def test_device_strings() -> None:
    assert parse_device("cpu") == -1
    assert parse_device("cuda") == 0
    assert parse_device("CUDA:3") == 3
    with pytest.raises(ArgumentError, match="cuda:N"):
        parse_device("gpu0")


def test_build_flags_are_consistent() -> None:
    """cuDNN only ever comes inside a CUDA build (PYDARKNET_CUDNN=1 adds it
    to PYDARKNET_CUDA's kernels; a CPU build answers 0 to both)."""
    assert lib.dn_built_with_cudnn() in (0, 1)
    if lib.dn_built_with_cudnn():
        assert CUDA_BUILD
    if not CUDA_BUILD:
        assert lib.dn_built_with_cudnn() == 0
        assert GPUS == 0


def test_network_on_a_missing_gpu(tiny_cfg: Path) -> None:
    expected = ArgumentError if CUDA_BUILD else UnsupportedError
    match = "GPU 0 does not exist" if CUDA_BUILD else "built without CUDA"
    with pytest.raises(expected, match=match):
        Network(tiny_cfg, device="cuda:0")
    with Network(tiny_cfg) as net:  # the CPU is always there
        assert net.info.device == "cpu"


def test_trainer_on_missing_gpus(tiny_cfg: Path) -> None:
    if CUDA_BUILD:
        with pytest.raises(ArgumentError, match="GPU 1 does not exist"):
            Trainer(tiny_cfg, gpus=[1])
    else:
        with pytest.raises(UnsupportedError, match="--replicas"):
            Trainer(tiny_cfg, gpus=[0, 1])


def test_train_command_with_gpus(tmp_path: Path) -> None:
    cfg = tmp_path / "t.cfg"
    cfg.write_text(TINY_CFG.replace("batch=1", "batch=2\nmax_batches=2"))
    data = tmp_path / "t.data"
    data.write_text(f"classes=2\ntrain={tmp_path / 'train.txt'}\n")
    (tmp_path / "train.txt").write_text("")
    result = CliRunner().invoke(main, ["train", str(cfg), "--data", str(data), "--gpus", "0,1",
                                       "--no-progress"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    if CUDA_BUILD:
        assert "does not exist" in result.output
    else:
        assert "built without CUDA" in result.output and "--replicas 2" in result.output


def test_errors_are_darknet_errors(tiny_cfg: Path) -> None:
    with pytest.raises(DarknetError):
        Network(tiny_cfg, device="cuda:7")
