"""The prepared GPU checks (tests/gpu/checks.py, run by device_check.sh on a
lent GPU) end to end, with the CPU standing in for the GPU
(PYDARKNET_CHECK_DEVICE=cpu): a check broken by a change fails here, before
a GPU's few minutes are spent finding it.  CPU against CPU, every error is
(about) zero; the timings beside PyTorch need a GPU and are left out."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

GPU_TESTS = Path(__file__).resolve().parent / "gpu"

RUN = """
import json, checks
print(json.dumps([c.__dict__ for c in checks.run_all(with_timings=False)]))
"""


def test_device_check_script_parses() -> None:
    result = subprocess.run(["bash", "-n", str(GPU_TESTS / "device_check.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_gpu_checks_run_with_the_cpu_standing_in() -> None:
    env = {**os.environ, "PYDARKNET_CHECK_DEVICE": "cpu",
           "PYTHONPATH": os.pathsep.join([str(GPU_TESTS), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", RUN], capture_output=True, text=True, env=env, timeout=600,
                            cwd=GPU_TESTS)
    assert result.returncode == 0, result.stderr[-3000:]
    checks = json.loads(result.stdout.strip().splitlines()[-1])
    names = [c["name"] for c in checks]
    failed = [c for c in checks if not c["passed"]]
    assert not failed, failed
    assert all(c["error"] < 1e-6 for c in checks), checks
    # forward x 3 networks, the resize sequence, 4 backward networks x (deltas,
    # gradients, loss, weights), the region / yolo losses (5), the two
    # all-reduce equivalences, training in 4 subdivisions
    assert len(checks) == 3 + 1 + 4 * 4 + 5 + 2 + 1, names
    assert sum(" loss on the device" in n for n in names) == 5
    assert sum(n.startswith("weights after a step") for n in names) == 4
