"""The CUDA path end to end without a GPU: the whole engine built with its
.cu files compiled for the CPU (tests/cuda_emu/emulated_build.py: kernel
launches run under cuda_emu.hpp, the CUDA runtime and cuBLAS calls on host
memory), loaded as pydarknet's engine in a subprocess, which then sees
"GPUs" and runs:

- the prepared GPU checks (tests/gpu/checks.py, as device_check.sh runs
  them on a lent GPU): forward parity of yolov2-tiny, yolov2, yolov3-tiny,
  the resize sequence, backward parity for every layer type, the region and
  yolo losses, the 2-replica and one-rank all-reduce equivalences, training
  in 4 subdivisions with the copy stream;
- multi-GPU training on 2 emulated GPUs, both sync modes, against the CPU;
  `pydarknet train --gpus 0,1` on a generated dataset against `--replicas 2`;
  a GPU index that does not exist, and one GPU out of memory, each an error
  naming that GPU;
- detection on frames with the letterbox on the "GPU" against the CPU;
- the cuDNN build, against an emulated cuDNN (real arithmetic, scripted
  algorithm lists): forward, resize and backward parity, and the algorithm
  every convolution ran;
- the NCCL build, against emulated communicators (grouped all-reduces on
  each rank's stream): 2-GPU training in both modes, one-rank all-reduce,
  and `pydarknet train --gpus 0,1`, each counting the collectives it ran.

The streams run their work when issued, or as late as CUDA allows, or
with the copy stream running at once ahead of the compute stream's queued
work, or in a seeded random order within CUDA's promises, for the checks
where streams meet (DN_EMU_STREAMS, emu_runtime/cuda_runtime.h): a missing
wait between streams, or a buffer written before another stream has read
it, fails.

What this cannot show is left to the GPU machine: speed, two streams
really running at once, cuBLAS's, cuDNN's and NCCL's own results and
choices."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shared import darknet_data, shared_path

ROOT = Path(__file__).resolve().parent.parent
GPU_TESTS = ROOT / "tests" / "gpu"
sys.path.insert(0, str(ROOT / "tests" / "cuda_emu"))

import emulated_build  # noqa: E402


@pytest.fixture(scope="module")
def emulated_builds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("g++") is None or shutil.which("make") is None:
        pytest.skip("needs g++ and make to build the CUDA engine for the CPU")
    return tmp_path_factory.mktemp("emulated_cuda")


@pytest.fixture(scope="module")
def emulated_package(emulated_builds: Path) -> Path:
    folder = emulated_builds / "im2col"
    return emulated_build.package(folder, emulated_build.build(folder, c_objects=emulated_builds / "c"))


@pytest.fixture(scope="module")
def emulated_cudnn_package(emulated_builds: Path) -> Path:
    folder = emulated_builds / "cudnn"
    return emulated_build.package(folder, emulated_build.build(folder, cudnn=True, c_objects=emulated_builds / "c"))


@pytest.fixture(scope="module")
def emulated_nccl_package(emulated_builds: Path) -> Path:
    folder = emulated_builds / "nccl"
    return emulated_build.package(folder, emulated_build.build(folder, nccl=True, c_objects=emulated_builds / "c"))


def run_emulated(package: Path, code: str, **env: str) -> dict:
    """Runs `code` against the emulated engine; it prints one JSON line last."""
    environment = {**os.environ, **env,
                   "PYTHONPATH": os.pathsep.join([str(package), str(GPU_TESTS), str(ROOT / "tests")])}
    environment.pop("PYDARKNET_CHECK_DEVICE", None)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            env=environment, timeout=900, cwd=GPU_TESTS)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_engine_sees_emulated_gpus(emulated_package: Path) -> None:
    info = run_emulated(emulated_package, """
        import json
        import pydarknet
        from pydarknet._ffi import ffi, lib
        name = ffi.new("char[256]")
        lib.dn_cuda_device_name(1, name, 256)
        print(json.dumps({"file": pydarknet.__file__, "cuda": lib.dn_built_with_cuda(),
                          "gpus": lib.dn_cuda_device_count(), "name": ffi.string(name).decode()}))
    """, DN_EMU_GPUS="2")
    assert info["file"].startswith(str(emulated_package))
    assert info["cuda"] == 1 and info["gpus"] == 2
    assert info["name"] == "CUDA emulated on the CPU (device 1)"


# DN_EMU_STREAMS=random:SEED schedules, for the checks where streams meet.  Each
# seed caught a hand-made breakage of the copy stream's hand-over that the
# other two missed: random:5 a missing event wait (as "late" does), random:6 a
# pass returning before its work had read its input (as "late-except-newest"
# does), random:2 a host wait on the copy stream placed after the work reading
# the upload was issued (which neither shows)
RANDOM_SCHEDULES = ["random:2", "random:5", "random:6"]


@pytest.mark.parametrize("streams", ["issue", "late", "late-except-newest"])
def test_gpu_checks_pass_on_the_emulated_cuda_path(emulated_package: Path, streams: str) -> None:
    """The prepared GPU checks, with the streams running their work when
    issued, as late as CUDA allows (a missing wait before reading what
    another stream writes shows), and with the newest stream (the copy
    stream) running at once ahead of the others' queued work (one writing
    what another has yet to read shows; only training makes a copy stream,
    so the forward checks are left out there: with one stream they would
    run as at issue)."""
    training_only = streams == "late-except-newest"
    checks = run_emulated(emulated_package, f"""
        import json, checks
        print(json.dumps([c.__dict__ for c in checks.run_all(with_timings=False, training_only={training_only})]))
    """, DN_EMU_STREAMS=streams)
    names = [c["name"] for c in checks]
    assert len(checks) == (0 if training_only else 3 + 1) + 4 * 4 + 5 + 3, names
    failed = [c for c in checks if not c["passed"]]
    assert not failed, failed
    # the CUDA path really ran: its sums go in other orders than the CPU's
    # (im2col + GEMM against Winograd, per-block reductions), so the forward
    # outputs differ from the CPU's in the last bits
    forward = [c["error"] for c in checks if c["name"].startswith("forward")]
    assert all(0 < e < 1e-4 for e in forward), forward


@pytest.mark.parametrize("streams", RANDOM_SCHEDULES)
def test_training_checks_pass_under_random_stream_schedules(emulated_package: Path, streams: str) -> None:
    """The checks where streams meet on one GPU, under seeded random
    schedules (any stream may run ahead of or behind any other as far as
    CUDA allows): 4 subdivisions with the next pass's input on the copy
    stream, and 2 replicas sharing GPU 0 (two compute and two copy streams)."""
    checks = run_emulated(emulated_package, """
        import json, tempfile, checks
        from pathlib import Path
        with tempfile.TemporaryDirectory() as folder:
            results = [checks.subdivided_training(Path(folder)), checks.replicas_on_one_gpu(Path(folder))]
        print(json.dumps([c.__dict__ for c in results]))
    """, DN_EMU_STREAMS=streams)
    assert len(checks) == 2
    failed = [c for c in checks if not c["passed"]]
    assert not failed, failed


def test_gpu_checks_pass_with_cudnn_convolutions(emulated_cudnn_package: Path, tmp_path: Path) -> None:
    """The cuDNN build (conv_cudnn.cu) against an emulated cuDNN with real
    arithmetic: forward, resize and backward parity pass (and training in 2
    subdivisions, where gradients accumulate across passes), and every
    convolution ran the algorithm the engine should choose from the lists
    (FP32 FMA, the faster of two, within the workspace; never tensor-op).
    cuDNN's work runs on its handle's stream, as late as CUDA allows."""
    log = tmp_path / "cudnn.log"
    checks = run_emulated(emulated_cudnn_package, """
        import json, tempfile, checks
        from pathlib import Path
        from pydarknet._ffi import lib
        assert lib.dn_built_with_cudnn()
        results = []
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            for name in ("yolov2-tiny.cfg", "yolov3-tiny.cfg"):
                results.append(checks.forward_parity(name, folder))
            results.append(checks.resize_parity(folder))
            for title, text in checks.LAYER_NETS.items():
                results.extend(checks.backward_parity(title, text, folder))
            # 2 subdivisions: the weight gradients accumulate across passes
            results.append(checks.replicas_on_one_gpu(folder))
        print(json.dumps([c.__dict__ for c in results]))
    """, DN_EMU_CUDNN_LOG=str(log), DN_EMU_STREAMS="late")
    assert len(checks) == 2 + 1 + 4 * 4 + 1
    failed = [c for c in checks if not c["passed"]]
    assert not failed, failed
    runs = log.read_text().split("\n")[:-1]
    assert {line.split()[0] for line in runs} == {"forward", "filter", "data"}
    assert {line.split()[1] for line in runs} == {"algo=1"}, sorted(set(runs))


TWO_GPUS = """
    import json, os
    from pathlib import Path
    from checks import rel, replica_case, trained_params
    from emu_counters import collectives
    from pydarknet.errors import DarknetError
    from pydarknet.replicas import Trainer

    one, many, data = replica_case(Path(os.environ["CASE_DIR"]))
    out = {}
    for sync in ("allreduce", "darknet"):
        before = collectives()
        # all-reduce: one replica with the whole batch; darknet: 2 CPU replicas
        reference = Trainer(one, seed=2) if sync == "allreduce" else \\
            Trainer(many, replicas=2, sync=sync, sync_every=2, seed=2)
        with reference as cpu, Trainer(many, gpus=[0, 1], sync=sync, sync_every=2, seed=2) as gpus:
            for x, truth in data:
                cpu.step(x, truth)
                gpus.step(x, truth)
            out[sync] = {"error": rel(trained_params(gpus, 0), trained_params(cpu, 0)),
                         "replicas_identical": bool((trained_params(gpus, 0) == trained_params(gpus, 1)).all()),
                         "collectives": collectives() - before}
    errors = {}
    for name, gpus in (("missing", [0, 2]), ("oom", [0, 1])):
        if name == "oom":
            os.environ["DN_EMU_GPU_MB"] = "4096,1"  # read at each allocation: GPU 1 has 1 MiB
        try:
            Trainer(many, gpus=gpus, sync="allreduce", seed=2).close()
            errors[name] = None
        except DarknetError as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
    out["errors"] = errors
    os.environ["DN_EMU_GPU_MB"] = "4096"
    before = collectives()
    from checks import one_rank_allreduce
    one_rank = one_rank_allreduce(Path(os.environ["CASE_DIR"]))
    out["one_rank"] = {"passed": one_rank.passed, "detail": one_rank.detail,
                       "collectives": collectives() - before}
    print(json.dumps(out))
"""


# collectives each build runs in TWO_GPUS: all-reduce steps, darknet-mode syncs, one-rank steps
COLLECTIVES = {"host": (0, 0, 0),  # no NCCL: reduced through the host, one rank needs nothing
               "nccl": (5, 2 * 2, 5)}  # one per step; steps 2 and 4: weights, BN statistics; one per step


@pytest.mark.parametrize("reduction, streams", [
    *[(reduction, streams) for reduction in ("host", "nccl") for streams in ("issue", "late", "late-except-newest")],
    # one random schedule for the host reduction (slower, and synchronous at each copy), two for NCCL's
    ("host", RANDOM_SCHEDULES[0]), *[("nccl", streams) for streams in RANDOM_SCHEDULES[1:]]])
def test_two_emulated_gpus_train_as_the_cpu_does(request: pytest.FixtureRequest, tmp_path: Path, reduction: str,
                                                 streams: str) -> None:
    """`--gpus 0,1` in both modes against CPU replicas (darknet mode) and one
    replica with the whole batch (all-reduce), reduced through the host or,
    in the NCCL build, by cuda.cu's communicators and grouped all-reduces on
    each replica's stream (emu_runtime/nccl.h: a collective starts when every
    rank's stream has run what came before); one rank in all-reduce mode
    trains as plain training; a missing GPU and a full one are errors naming
    it.  The replicas' host threads share the emulated devices' stream queues."""
    package = request.getfixturevalue("emulated_package" if reduction == "host" else "emulated_nccl_package")
    out = run_emulated(package, TWO_GPUS, DN_EMU_GPUS="2", CASE_DIR=str(tmp_path), DN_EMU_STREAMS=streams)
    for sync in ("allreduce", "darknet"):
        assert out[sync]["error"] < 1e-4, out
    assert out["allreduce"]["replicas_identical"], out
    missing, oom = out["errors"]["missing"], out["errors"]["oom"]
    assert missing and "GPU 2" in missing and "2 CUDA devices" in missing, missing
    assert oom and "out of GPU memory on GPU 1" in oom and "MemoryError" in oom, oom
    assert out["one_rank"]["passed"], out
    ran = (out["allreduce"]["collectives"], out["darknet"]["collectives"], out["one_rank"]["collectives"])
    assert ran == COLLECTIVES[reduction], out


@pytest.mark.parametrize("streams", ["late", *RANDOM_SCHEDULES])
def test_detection_on_frames_with_the_emulated_gpu_letterbox(emulated_package: Path, streams: str) -> None:
    """The real yolov3-tiny on darknet's dog.jpg: boxes from the GPU path
    (frame upload, letterbox and the network on the "GPU") against the CPU's."""
    cfg = shared_path("darknet/cfg/yolov3-tiny.cfg")
    weights = shared_path("models/yolov3-tiny.weights")
    names = darknet_data("coco.names")
    image = darknet_data("dog.jpg")
    out = run_emulated(emulated_package, f"""
        import json, cv2
        from pydarknet import Detector
        frame = cv2.imread({str(image)!r})
        boxes = {{}}
        for device in ("cpu", "cuda:0"):
            with Detector({str(cfg)!r}, {str(weights)!r}, {str(names)!r}, device=device) as detector:
                boxes[device] = [(d.name, d.confidence, d.x, d.y, d.w, d.h) for d in detector.detect(frame, thresh=.3)]
        print(json.dumps(boxes))
    """, DN_EMU_STREAMS=streams)
    cpu, gpu = out["cpu"], out["cuda:0"]
    assert len(cpu) >= 3, cpu  # dog, bicycle, truck/car
    assert [b[0] for b in gpu] == [b[0] for b in cpu]
    for ours, theirs in zip(gpu, cpu):
        assert ours[1] == pytest.approx(theirs[1], abs=1e-3)
        assert ours[2:] == pytest.approx(theirs[2:], abs=0.5)  # pixels


@pytest.mark.parametrize("reduction", ["host", "nccl"])
def test_train_command_on_two_emulated_gpus(request: pytest.FixtureRequest, tmp_path: Path, reduction: str) -> None:
    """`pydarknet train --gpus 0,1 --sync allreduce` (loader, page-locked
    batches, the weights pulled back from the GPU for saving) trains as
    `--replicas 2` does on the CPU: the same losses and final weights, with
    the gradients reduced through the host or through NCCL."""
    emulated_package = request.getfixturevalue("emulated_package" if reduction == "host" else "emulated_nccl_package")
    import numpy as np

    from pydarknet import Network
    from pydarknet.coco import convert_coco
    from pydarknet.datasets import generate_shapes
    from test_train import write_cfg

    shapes = generate_shapes(tmp_path / "gen", count=16, width=64, height=64, seed=1, progress=False)
    data = convert_coco(shapes.instances_json, shapes.images_dir, tmp_path / "darknet", valid_fraction=.25,
                        seed=1, name="shapes", progress=False).data_file
    cfg = write_cfg(tmp_path, max_batches=3)
    final = {}
    for name, devices in (("cpu", ["--replicas", "2"]), ("gpus", ["--gpus", "0,1"])):
        command = ["train", str(cfg), "--data", str(data), "--backup", str(tmp_path / name), "--seed", "1",
                   "--no-progress", "--threads", "1", "--loader-threads", "2", "--sync", "allreduce", *devices]
        out = run_emulated(emulated_package, f"""
            import json, sys
            from click.testing import CliRunner
            from pydarknet.cli import main
            result = CliRunner().invoke(main, {command!r})
            print(json.dumps({{"code": result.exit_code, "output": result.output}}))
        """, DN_EMU_GPUS="2", DN_EMU_STREAMS="late")
        assert out["code"] == 0, out["output"]
        assert "done: 3 iterations" in out["output"]
        final[name] = tmp_path / name / "tiny-yolo_final.weights"
    losses = {name: [json.loads(line)["loss"] for line in (path.parent / "tiny-yolo.metrics.jsonl").open()]
              for name, path in final.items()}
    assert len(losses["gpus"]) == 3
    assert losses["gpus"] == pytest.approx(losses["cpu"], rel=1e-4)
    # 1e-3 as the GPU checks: the first layer's BN bias gradient sums 32,768
    # cancelling terms, in other orders on the two paths (6e-4 seen there,
    # every other tensor within 6e-5)
    with Network(cfg, final["cpu"]) as cpu, Network(cfg, final["gpus"]) as gpus:
        for i in range(len(cpu)):
            for key, values in cpu.params(i).items():
                theirs = gpus.params(i)[key]
                assert np.abs(theirs - values).max() <= 1e-3 * np.abs(values).max(), (i, key)


def test_a_training_step_moves_only_images_truths_and_the_loss(emulated_package: Path, tmp_path: Path) -> None:
    """Host <-> device traffic of one training step (2 passes): up, the images,
    the truths and the anchors; down, the loss's partial sums (2 x 128 + 6 per
    image floats per pass) and the update's finite-check flag.  No
    activation, delta or weight goes through the host (darknet's GPU path
    pulls the region output down and pushes its delta up every pass)."""
    out = run_emulated(emulated_package, """
        import json, os, re
        from pathlib import Path
        from checks import replica_case
        from emu_counters import traffic
        from pydarknet import Network

        one, _, data = replica_case(Path(os.environ["CASE_DIR"]))
        with Network(one, train=True, batch=0, device="cuda:0") as net:
            x, truth = data[0]
            net.train_step(x, truth)  # the first step sizes what it needs
            before = traffic()
            net.train_step(x, truth)
            after = traffic()
            print(json.dumps({"moved": [b - a for a, b in zip(before, after)], "images": x.nbytes,
                              "truths": truth.nbytes, "batch": net.batch, "passes": net.images_per_step // net.batch,
                              "region_output": 4 * net.layer(len(net) - 1).outputs * net.batch,
                              "anchors": int(re.search(r"\\[region\\][^[]*\\nnum=(\\d+)", one.read_text()).group(1))}))
    """, CASE_DIR=str(tmp_path))
    host_to_device, device_to_host, _, launches = out["moved"]
    passes, batch = out["passes"], out["batch"]
    anchors = passes * out["anchors"] * 2 * 4  # uploaded with each pass's truths
    assert host_to_device == out["images"] + out["truths"] + anchors, out
    loss_results = passes * 4 * (2 * 128 + 6 * batch)
    assert loss_results <= device_to_host <= loss_results + 16, out
    assert device_to_host < out["region_output"], out  # what darknet's round trip would pull each pass
    assert launches > 0


def test_device_memory_comes_back(emulated_package: Path, tmp_path: Path) -> None:
    """The GPU path frees what it allocates, to the byte (the emulated
    runtime counts it): 500 detections and predictions on the emulated GPU
    (frame upload and letterbox buffers made and freed per call) leave
    device memory where it was, and networks created, trained (loss
    scratch, copy stream, spare input), resized and freed return it all."""
    out = run_emulated(emulated_package, """
        import gc, json, os
        from pathlib import Path
        import numpy as np
        from conftest import TINY_CFG
        from emu_counters import device_memory
        from pydarknet import Detector, Network

        cfg = Path(os.environ["CASE_DIR"]) / "tiny.cfg"
        cfg.write_text(TINY_CFG.replace("batch=1\\nsubdivisions=1", "batch=4\\nsubdivisions=2"))
        empty = device_memory()
        frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)
        with Detector(cfg, None, names=["a", "b"], device="cuda:0") as detector:
            detector.network.randomize(3)
            x = np.random.default_rng(1).random(detector.network.input_shape, dtype=np.float32)
            found = len(detector.detect(frame, thresh=.75))
            loaded = device_memory()
            for _ in range(500):
                detector.detect(frame, thresh=.75)
                detector.network.predict(x)
            after_calls = device_memory()
        rng = np.random.default_rng(2)
        for i in range(20):
            net = Network(cfg, train=True, batch=0, device="cuda:0")
            x = rng.random((net.images_per_step, *net.input_shape[1:]), dtype=np.float32)
            truth = np.zeros((net.images_per_step, net.truth_size), np.float32)
            truth[:, :5] = (.5, .5, .3, .3, 1)
            net.train_step(x, truth)
            net.resize(64, 64)  # buffers remade
            if i % 2:
                net.close()
            del net
        gc.collect()
        print(json.dumps({"empty": empty, "loaded": loaded, "after_calls": after_calls, "found": found,
                          "after_networks": device_memory()}))
    """, CASE_DIR=str(tmp_path), DN_EMU_STREAMS="late")
    assert 0 < out["found"] < 100
    assert out["loaded"][0] > out["empty"][0]
    assert out["after_calls"] == out["loaded"], out
    assert out["after_networks"] == out["empty"], out
