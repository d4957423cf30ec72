"""The CUDA path against the CPU path on a GPU (skipped without one; the
prepared device run is tests/gpu/device_check.sh)."""
from __future__ import annotations

from pathlib import Path

import pytest

from pydarknet._ffi import lib

pytestmark = pytest.mark.skipif(not lib.dn_built_with_cuda() or lib.dn_cuda_device_count() < 1,
                                reason="needs a CUDA build of pydarknet and a GPU")


@pytest.mark.parametrize("name", ["yolov2-tiny.cfg", "yolov2.cfg", "yolov3-tiny.cfg"])
def test_forward_parity(name: str, tmp_path: Path) -> None:
    from checks import forward_parity

    check = forward_parity(name, tmp_path)
    assert check.passed, check


def test_resize_parity(tmp_path: Path) -> None:
    from checks import resize_parity

    check = resize_parity(tmp_path)
    assert check.passed, check


def test_backward_parity(tmp_path: Path) -> None:
    from checks import LAYER_NETS, backward_parity

    failed = [c for title, text in LAYER_NETS.items()
              for c in backward_parity(title, text, tmp_path) if not c.passed]
    assert not failed, failed


def test_replicas_on_one_gpu(tmp_path: Path) -> None:
    from checks import replicas_on_one_gpu

    check = replicas_on_one_gpu(tmp_path)
    assert check.passed, check


def test_one_rank_allreduce(tmp_path: Path) -> None:
    from checks import one_rank_allreduce

    check = one_rank_allreduce(tmp_path)
    assert check.passed, check
