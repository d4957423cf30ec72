"""GPU checks: the CUDA path against the CPU path (the reference), the
multi-replica equivalence on one GPU, and timings beside PyTorch.

Used by tests/gpu/test_gpu.py (pytest, skipped without a GPU) and by
tests/gpu/device_check.sh (one run on a lent GPU machine: everything it needs
is in the repository or generated; no ../shared)."""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pydarknet import Network
from pydarknet.cfg import Cfg
from pydarknet.hostmem import host_array
from pydarknet.replicas import Trainer

REPO = Path(__file__).resolve().parent.parent.parent
# "cpu" dry-runs the script's logic on a machine without a GPU (CPU vs CPU)
DEVICE = os.environ.get("PYDARKNET_CHECK_DEVICE", "cuda:0")
TOLERANCE = 1e-3  # GPU vs CPU: cuBLAS/reduction order and FMA contraction (~1e-5 seen)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-30))


@dataclass
class Check:
    name: str
    error: float
    passed: bool
    detail: str = ""


def cfg_copy(name: str, folder: Path, **net_options: object) -> Path:
    """A repo cfg with [net] options replaced (width, height, batch, ...)."""
    cfg = Cfg.read(REPO / "cfg" / name)
    for key, value in net_options.items():
        cfg.net.set(key, value)  # type: ignore[arg-type]
    return cfg.write(folder / f"{Path(name).stem}-{abs(hash(tuple(net_options.items()))) % 10**6}.cfg")


def forward_parity(name: str, folder: Path, size: int = 416) -> Check:
    cfg = cfg_copy(name, folder, width=size, height=size, batch=1, subdivisions=1)
    weights = folder / f"{name}.weights"
    with Network(cfg, threads=8) as cpu:
        cpu.randomize(3)
        cpu.save_weights(weights)
        x = np.random.default_rng(0).random(cpu.input_shape, dtype=np.float32)
        cpu.predict(x)
        reference = [cpu.layer_output(i) for i in range(len(cpu))]
    with Network(cfg, weights, device=DEVICE) as gpu:
        gpu.predict(x)
        errors = [rel(gpu.layer_output(i), ref) for i, ref in enumerate(reference)]
    worst = max(errors)
    return Check(f"forward {Path(name).stem} {size}", worst, worst < TOLERANCE,
                 f"worst layer {int(np.argmax(errors))}")


def resize_parity(folder: Path, sizes: tuple[int, ...] = (416, 320, 416, 608, 320)) -> Check:
    """yolov2-tiny, batch 2, resized between predictions as multi-scale
    training and video at several sizes do: every size's output against the
    CPU's (the device buffers remade, cuDNN's per-shape choices kept and
    revisited)."""
    cfg = cfg_copy("yolov2-tiny.cfg", folder, width=sizes[0], height=sizes[0], batch=2, subdivisions=1)
    weights = folder / "resize.weights"
    rng = np.random.default_rng(5)
    worst, where = 0.0, ""
    with Network(cfg, threads=8) as cpu:
        cpu.randomize(4)
        cpu.save_weights(weights)
        with Network(cfg, weights, device=DEVICE) as gpu:
            for size in sizes:
                cpu.resize(size, size)
                gpu.resize(size, size)
                x = rng.random(cpu.input_shape, dtype=np.float32)
                error = rel(gpu.predict(x), cpu.predict(x))
                if error >= worst:
                    worst, where = error, f"worst at {size}"
    return Check(f"forward yolov2-tiny b2 resized {'->'.join(map(str, sizes))}", worst, worst < TOLERANCE, where)


def _train_net(size: int) -> str:
    """The [net] section of the small training networks below."""
    return f"""
[net]
batch=4
subdivisions=1
width={size}
height={size}
channels=3
momentum=0.9
decay=0.0005
learning_rate=0.01
policy=constant
max_batches=10
"""


# the output of the region networks below: 2 anchors x (4 + 1 + 2 classes)
_REGION_OUTPUT = """[convolutional]
size=1
stride=1
pad=1
filters=14
activation=linear
[region]
anchors=1,1,2,2
classes=2
coords=4
num=2
softmax=1
rescore=1
bias_match=1
"""

# small networks covering every layer type's backward
LAYER_NETS = {
    "conv+bn, maxpool, route, reorg, region": _train_net(32) + """[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky
[route]
layers=-2
[reorg]
stride=2
[route]
layers=-1,-3
""" + _REGION_OUTPUT,
    "grouped conv, shortcut, upsample, avgpool, yolo": _train_net(32) + """[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky
[convolutional]
filters=8
size=3
stride=1
pad=1
groups=2
activation=relu
[shortcut]
from=-2
activation=linear
[maxpool]
size=2
stride=1
[convolutional]
filters=8
size=3
stride=2
pad=1
activation=logistic
[upsample]
stride=2
[route]
layers=-1,-4
[convolutional]
size=1
stride=1
pad=1
filters=14
activation=linear
[yolo]
mask=0,1
anchors=4,4,8,8,16,16
classes=2
num=3
ignore_thresh=.5
""",
    # weight gradients split into pixel ranges (convolutional_layer.cu): 45 x 45
    # = 2025 pixels in 7 ranges of 289 and 2 left over (3x3 and 1x1)
    "split weight gradients": _train_net(45) + """[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky
[convolutional]
filters=16
size=1
stride=1
pad=0
activation=leaky
""" + _REGION_OUTPUT,
    "connected+bn, dropout, softmax": _train_net(8) + """[convolutional]
filters=4
size=3
stride=1
pad=1
activation=leaky
[avgpool]
[connected]
output=16
batch_normalize=1
activation=leaky
[dropout]
probability=.3
[connected]
output=5
activation=linear
[softmax]
""",
}


def training_truth(net: Network, rng: np.random.Generator) -> np.ndarray:
    batch = net.info.batch
    truth = np.zeros((batch, net.truth_size), np.float32)
    last = net.layers[-1].type
    for b in range(batch):
        if last == "softmax":
            truth[b, rng.integers(0, net.truth_size)] = 1
        else:
            for k in range(2):
                truth[b, 5 * k:5 * k + 5] = [rng.uniform(.2, .8), rng.uniform(.2, .8),
                                             rng.uniform(.1, .4), rng.uniform(.1, .4),
                                             rng.integers(0, 2)]
    return truth


def backward_parity(title: str, text: str, folder: Path) -> list[Check]:
    cfg = folder / f"net-{abs(hash(title)) % 10**6}.cfg"
    cfg.write_text(text)
    weights = folder / f"{cfg.stem}.weights"
    rng = np.random.default_rng(4)
    with Network(cfg, train=True, batch=0, threads=4) as cpu:
        cpu.randomize(5)
        cpu.save_weights(weights)
        x = rng.random(cpu.input_shape, dtype=np.float32)
        truth = training_truth(cpu, rng)
        cpu.seed(9)
        cpu_loss = cpu.forward_backward(x, truth)
        cpu_deltas = [cpu.delta(i) for i in range(len(cpu))]
        cpu_grads = [{k: v.copy() for k, v in cpu.grads(i).items()} for i in range(len(cpu))]
        cpu.update()
        cpu_params = [{k: v.copy() for k, v in cpu.params(i).items()} for i in range(len(cpu))]
    with Network(cfg, weights, train=True, batch=0, device=DEVICE) as gpu:
        gpu.seed(9)
        gpu_loss = gpu.forward_backward(x, truth)
        delta_err = max(rel(gpu.delta(i), d) for i, d in enumerate(cpu_deltas))
        grad_err = max((rel(gpu.grads(i)[k], v) for i, g in enumerate(cpu_grads)
                        for k, v in g.items()), default=0.0)
        gpu.update()
        param_err = max((rel(gpu.params(i)[k], v) for i, p in enumerate(cpu_params)
                         for k, v in p.items()), default=0.0)
    loss_err = abs(gpu_loss - cpu_loss) / max(abs(cpu_loss), 1e-12)
    return [Check(f"backward deltas: {title}", delta_err, delta_err < TOLERANCE),
            Check(f"gradients: {title}", grad_err, grad_err < TOLERANCE),
            Check(f"loss: {title}", loss_err, loss_err < TOLERANCE),
            Check(f"weights after a step: {title}", param_err, param_err < TOLERANCE)]


# The detection losses at full size: yolov2's [region] (13 x 13, 5 anchors,
# 80 classes) and yolov3-tiny's 13 x 13 [yolo], each behind a 1x1
# convolution with stride 32 that turns a 416 x 416 input into its grid.
LOSS_NET_HEAD = """[net]
batch=8
subdivisions=2
width=416
height=416
channels=3
learning_rate=0.001
momentum=0.9
decay=0.0005
[convolutional]
filters={filters}
size=1
stride=32
activation=linear
"""
LOSS_NETS: dict[str, str] = {
    "region": LOSS_NET_HEAD.format(filters=425) + """[region]
anchors = 0.57273,0.677385, 1.87446,2.06253, 3.33843,5.47434, 7.88282,3.52778, 9.77052,9.16828
bias_match=1
classes=80
coords=4
num=5
softmax=1
rescore=1
object_scale=5
noobject_scale=1
class_scale=1
coord_scale=1
thresh=.6
""",
    # logistic classes (darknet's tag rule for a second truth in a cell), no rescore
    "region-logistic": LOSS_NET_HEAD.format(filters=425) + """[region]
anchors = 0.57273,0.677385, 1.87446,2.06253, 3.33843,5.47434, 7.88282,3.52778, 9.77052,9.16828
classes=80
coords=4
num=5
softmax=0
object_scale=5
noobject_scale=1
class_scale=1
coord_scale=1
thresh=.6
""",
    # predictions overlapping a truth by more than truth_thresh take it themselves
    "yolo-close": LOSS_NET_HEAD.format(filters=255) + """[yolo]
mask = 3,4,5
anchors = 10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=80
num=6
ignore_thresh=.3
truth_thresh=.5
""",
    "yolo": LOSS_NET_HEAD.format(filters=255) + """[yolo]
mask = 3,4,5
anchors = 10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=80
num=6
ignore_thresh=.7
truth_thresh=1
""",
}


def crowded_truth(net: Network, rng: np.random.Generator) -> np.ndarray:
    """0 to 30 boxes per image (one image without any), some sharing a cell,
    one at x = 1.0 (the cell index darknet would step off the grid with)."""
    images = net.images_per_step
    rows = net.truth_size // 5
    truth = np.zeros((images, rows, 5), np.float32)
    for b in range(images):
        count = 0 if b == 1 else int(rng.integers(1, min(30, rows) + 1))
        for t in range(count):
            if t % 4 == 3:  # in the previous box's cell
                truth[b, t] = truth[b, t - 1]
                truth[b, t, 2:4] = rng.uniform(.05, .6, 2)
            else:
                truth[b, t] = [rng.uniform(.01, .99), rng.uniform(.01, .99), *rng.uniform(.02, .8, 2),
                               rng.integers(0, 80)]
        if b == images - 1 and count < rows:
            truth[b, count] = [1.0, .5, .2, .3, 7]
    return truth.reshape(images, -1)


def loss_parity(kind: str, seen: int, folder: Path) -> Check:
    """One training step (2 passes of 8) of LOSS_NETS[kind] on both sides: the
    loss layer's delta, the step's loss and statistics (IoU, class, objectness,
    recall, count), the weights after the update."""
    cfg = folder / f"loss-{kind}.cfg"
    cfg.write_text(LOSS_NETS[kind])
    weights = folder / f"loss-{kind}.weights"
    rng = np.random.default_rng(21)
    results = []
    with Network(cfg, train=True, batch=0, threads=4) as cpu:
        cpu.randomize(3)
        cpu.save_weights(weights)
        shape = (cpu.images_per_step, *cpu.input_shape[1:])
        x = rng.standard_normal(shape).astype(np.float32)
        truth = crowded_truth(cpu, rng)
    for device in ("cpu", DEVICE):
        with Network(cfg, weights, train=True, batch=0, threads=4, device=device) as net:
            net.seen = seen
            step = net.train_step(x, truth)
            results.append((step, net.delta(1).copy(), {k: v.copy() for k, v in net.params(0).items()}))
    (cpu_step, cpu_delta, cpu_params), (gpu_step, gpu_delta, gpu_params) = results
    cpu_stats, gpu_stats = cpu_step.layers[0], gpu_step.layers[0]
    fields = ("avg_iou", "avg_class", "avg_obj", "avg_noobj", "recall", "recall75")
    stats_err = max(abs(getattr(gpu_stats, f) - getattr(cpu_stats, f)) / max(abs(getattr(cpu_stats, f)), 1e-6)
                    for f in fields)
    error = max(rel(gpu_delta, cpu_delta), abs(gpu_step.loss - cpu_step.loss) / abs(cpu_step.loss), stats_err,
                max(rel(gpu_params[k], v) for k, v in cpu_params.items()))
    same_count = gpu_stats.count == cpu_stats.count > 0
    return Check(f"{kind} loss on the device, seen {seen}: delta, loss, statistics, weights", error,
                 error < TOLERANCE and same_count, f"{cpu_stats.count} truths matched")


def replica_case(folder: Path) -> tuple[Path, Path, list[tuple[np.ndarray, np.ndarray]]]:
    """The replica equivalences' networks: batch 4 per replica, and one
    replica of batch 8 in 2 subdivisions; and 5 steps of 8 images."""
    text = LAYER_NETS["conv+bn, maxpool, route, reorg, region"]
    many = folder / "many.cfg"
    many.write_text(text)
    one = folder / "one.cfg"
    one.write_text(text.replace("batch=4\nsubdivisions=1", "batch=8\nsubdivisions=2"))
    rng = np.random.default_rng(1)
    data = []
    for _ in range(5):
        x = rng.random((8, 3, 32, 32), dtype=np.float32)
        truth = np.zeros((8, 150), np.float32)
        truth[:, :5] = [.4, .6, .3, .2, 1]
        data.append((x, truth))
    return one, many, data


def trained_params(trainer: Trainer, replica: int) -> np.ndarray:
    """A replica's weights, one array (BN rolling statistics left out)."""
    net = trainer.network(replica)
    return np.concatenate([v for i in range(len(net)) for k, v in net.params(i).items()
                           if k not in ("rolling_mean", "rolling_variance")])


def replicas_on_one_gpu(folder: Path) -> Check:
    """2 replicas x batch 4 on GPU 0 (host reduction; NCCL refuses two ranks
    on one GPU) == 1 replica x batch 8 with subdivisions 2, 5 steps."""
    one, many, data = replica_case(folder)
    gpus = (lambda k: [0] * k) if DEVICE != "cpu" else (lambda k: None)
    with Trainer(one, gpus=gpus(1), seed=2) as single, \
            Trainer(many, gpus=gpus(2), replicas=2, sync="allreduce", seed=2) as pair:
        for x, truth in data:
            single.step(x, truth)
            pair.step(x, truth)
        err = rel(trained_params(pair, 0), trained_params(single, 0))
        same = np.array_equal(trained_params(pair, 0), trained_params(pair, 1))
    return Check("allreduce 2 x batch 4 on one GPU == 1 x batch 8", err,
                 err < TOLERANCE and same, "replicas identical" if same else "replicas differ")


def one_rank_allreduce(folder: Path) -> Check:
    """One replica on GPU 0 in all-reduce mode (a one-rank reduction: NCCL's
    path when the library has NCCL) == plain training, 5 steps."""
    one, _, data = replica_case(folder)
    gpus = [0] if DEVICE != "cpu" else None
    synced = True
    with Trainer(one, gpus=gpus, seed=2) as plain, \
            Trainer(one, gpus=gpus, sync="allreduce", seed=2) as reduced:
        for x, truth in data:
            plain.step(x, truth)
            synced &= reduced.step(x, truth).synced
        err = rel(trained_params(reduced, 0), trained_params(plain, 0))
    return Check("allreduce with one rank on GPU 0 == plain training", err,
                 err < TOLERANCE and synced, "reduced every step" if synced else "no reduction ran")


def subdivided_training(folder: Path) -> Check:
    """Batch 8 in 4 subdivisions on GPU 0 == the same training on the CPU,
    5 steps.  Each pass's successor goes up on the copy stream while the pass
    computes, from one page-locked buffer refilled every step, as `pydarknet
    train --gpus` feeds it: a missing wait between the streams, or a step
    that returns before its uploads have read the buffer, shows here."""
    one, _, data = replica_case(folder)
    cfg = folder / "subdivided.cfg"
    text = one.read_text()
    assert "batch=8\nsubdivisions=2" in text
    cfg.write_text(text.replace("batch=8\nsubdivisions=2", "batch=8\nsubdivisions=4"))
    images, pinned = host_array(data[0][0].shape, pinned=DEVICE != "cpu")
    gpus = [0] if DEVICE != "cpu" else None
    with Trainer(cfg, gpus=gpus, seed=2) as device, Trainer(cfg, seed=2) as cpu:
        for x, truth in data:
            images[...] = x
            device.step(images, truth)
            images[...] = np.nan  # what the loader would write next, before the next step
            cpu.step(x, truth)
        err = rel(trained_params(device, 0), trained_params(cpu, 0))
    return Check("batch 8 in 4 subdivisions (next pass on the copy stream) == CPU", err, err < TOLERANCE,
                 "page-locked input" if pinned else "pageable input")


def kernel_profile(step: Callable[[], object], path: Path, top: int = 30) -> str:
    """The GPU kernels and copies of one call of `step`, by total time.

    torch.profiler's CUPTI tracing records every kernel launched in the
    process, the engine's as well as PyTorch's, so the same table serves
    both sides.  Writes the table to `path`; returns a one-line summary."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - start) * 1000
    totals: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type != DeviceType.CUDA:
            continue
        entry = totals.setdefault(event.name, [0, 0.0])
        entry[0] += 1
        entry[1] += event.time_range.elapsed_us() / 1000
    busy_ms = sum(ms for _, ms in totals.values())
    rows = sorted(totals.items(), key=lambda kv: -kv[1][1])
    lines = [f"wall {wall_ms:.1f} ms (profiled), kernels and copies {busy_ms:.1f} ms", "",
             f"{'ms':>9s} {'share':>6s} {'calls':>6s}  kernel or copy"]
    lines += [f"{ms:9.2f} {ms / max(busy_ms, 1e-9):6.1%} {calls:6d}  {name[:110]}"
              for name, (calls, ms) in rows[:top]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return f"kernels and copies {busy_ms:.0f} ms in {wall_ms:.0f} ms; top: " + ", ".join(
        f"{name[:40]} {ms:.0f} ms" for name, (_, ms) in rows[:3])


def _profile(step: Callable[[], object], side: str) -> None:
    """A kernel table of one training step under $PYDARKNET_CHECK_PROFILE
    (device_check.sh sets it); a failure of the profiler is printed, not fatal."""
    folder = os.environ.get("PYDARKNET_CHECK_PROFILE")
    if not folder or DEVICE == "cpu":
        return
    try:
        print(f"  profile {side}: " + kernel_profile(step, Path(folder) / f"train-{side}.txt"), flush=True)
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        print(f"  profile {side} failed: {type(exc).__name__}: {exc}"[:300], flush=True)


def loader_rate(folder: Path, size: int = 416, batch: int = 64, rounds: int = 3) -> tuple[float, int]:
    """Training batches per second from JPEGs (generated: 500 x 375 photos
    of rectangles, 1-3 boxes each, nothing cached) with darknet's
    augmentation into page-locked memory, as `pydarknet train --gpus`
    loads them; returns images/s and the sample threads."""
    import cv2

    from pydarknet.loader import Augmentation, BatchLoader, DetectionDataset, ScaleSchedule

    root = folder / "loader"
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    rng = np.random.default_rng(3)
    lines = []
    for k in range(128):
        image = np.full((375, 500, 3), rng.integers(0, 256, 3), np.uint8)
        labels = []
        for _ in range(int(rng.integers(1, 4))):
            x, y = int(rng.integers(0, 400)), int(rng.integers(0, 300))
            w, h = int(rng.integers(30, 100)), int(rng.integers(30, 75))
            image[y:y + h, x:x + w] = rng.integers(0, 256, 3)
            labels.append(f"0 {(x + w / 2) / 500:.4f} {(y + h / 2) / 375:.4f} {w / 500:.4f} {h / 375:.4f}\n")
        path = root / "images" / f"{k:03d}.jpg"
        cv2.imwrite(str(path), image)
        (root / "labels" / f"{k:03d}.txt").write_text("".join(labels))
        lines.append(f"{path}\n")
    (root / "train.txt").write_text("".join(lines))
    dataset = DetectionDataset(root / "train.txt", 1, cache_bytes=0)
    loader = BatchLoader(dataset, batch, 150, 30, Augmentation(hue=.1, saturation=1.5, exposure=1.5),
                         ScaleSchedule(False, size, size, 0, 10**6), 0, prefetch=1, pinned=True)
    try:
        loader.next()
        start = time.perf_counter()
        for _ in range(rounds):
            loader.next()
        return rounds * batch / (time.perf_counter() - start), loader.workers
    finally:
        loader.close()


def timings(folder: Path, steps: int = 2) -> list[Check]:
    """yolov2 at 416: training images/s (batch 64) and inference latency,
    pydarknet and PyTorch (fp32, cuDNN) on the same GPU.

    Both training loops start each step from the same batch in page-locked
    host memory, as `pydarknet train --gpus` and a PyTorch DataLoader with
    pin_memory=True give it: the engine's step uploads it, and so does the
    PyTorch loop."""
    import torch

    results: list[Check] = []
    # batch 64 in 4 subdivisions (16 images per forward), as yolov2 is trained
    train_cfg = cfg_copy("yolov2.cfg", folder, width=416, height=416, batch=64, subdivisions=4)
    rng = np.random.default_rng(0)
    with Trainer(train_cfg, gpus=[0] if DEVICE != "cpu" else None, seed=1) as trainer:
        n = trainer.images_per_step
        x, pinned = host_array((n, 3, 416, 416), pinned=True)
        x[...] = rng.random(x.shape, dtype=np.float32)
        print(f"  training batch in {'page-locked' if pinned else 'pageable'} host memory", flush=True)
        truth = np.zeros((n, trainer.network(0).truth_size), np.float32)
        truth[:, :5] = [.5, .5, .3, .3, 1]
        trainer.step(x, truth)
        start = time.perf_counter()
        for _ in range(steps):
            trainer.step(x, truth)
        ours_train = steps * n / (time.perf_counter() - start)
        _profile(lambda: trainer.step(x, truth), "pydarknet")
    infer_cfg = cfg_copy("yolov2.cfg", folder, width=416, height=416, batch=1, subdivisions=1)
    with Network(infer_cfg, device=DEVICE) as net:
        x1 = rng.random(net.input_shape, dtype=np.float32)
        for _ in range(3):
            net.predict(x1, copy=False)
        start = time.perf_counter()
        for _ in range(20):
            net.predict(x1, copy=False)
        ours_ms = (time.perf_counter() - start) / 20 * 1000

    from pydarknet.torch import DarknetModel

    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = DarknetModel(infer_cfg).cuda().eval()
    xt = torch.from_numpy(x1).cuda()
    with torch.no_grad():
        for _ in range(3):
            model(xt)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(20):
            model(xt).cpu()  # the engine's predict also returns the output to the host
        torch_ms = (time.perf_counter() - start) / 20 * 1000
    model.train()
    optim = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=.9)

    x_pinned = torch.from_numpy(np.array(x)).pin_memory()

    def torch_step() -> None:
        optim.zero_grad()
        out = model(x_pinned.cuda(non_blocking=True))
        loss = (out if isinstance(out, torch.Tensor) else out[0]).square().mean()
        loss.backward()
        optim.step()

    for step in range(steps + 1):
        if step == 1:
            torch.cuda.synchronize()
            start = time.perf_counter()
        torch_step()
    torch.cuda.synchronize()
    torch_train = steps * n / (time.perf_counter() - start)
    _profile(torch_step, "pytorch")
    results.append(Check(f"train yolov2 416 b64: {ours_train:.1f} img/s vs torch {torch_train:.1f}",
                         torch_train / ours_train, True, f"ratio {ours_train / torch_train:.2f}"))
    results.append(Check(f"infer yolov2 416 b1: {ours_ms:.2f} ms vs torch {torch_ms:.2f}",
                         ours_ms / torch_ms, True, f"ratio {ours_ms / torch_ms:.2f}"))
    # can the loader feed the GPU? (JPEG decode + augmentation on the host's CPUs)
    loaded, threads = loader_rate(folder)
    results.append(Check(f"loader 416 b64, {threads} threads: {loaded:.0f} img/s vs train {ours_train:.0f}",
                         loaded / max(ours_train, torch_train), loaded >= ours_train,
                         "keeps up" if loaded >= max(ours_train, torch_train) else "slower than training"))
    return results


def run_all(with_timings: bool = True, training_only: bool = False) -> list[Check]:
    """Every check (training_only: those that train, leaving out the
    forward and resize parities), then the timings where asked for."""
    checks: list[Check] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in () if training_only else ("yolov2-tiny.cfg", "yolov2.cfg", "yolov3-tiny.cfg"):
            checks.append(_guard(f"forward {name}", lambda n=name: [forward_parity(n, folder)]))
        if not training_only:
            checks.append(_guard("resize", lambda: [resize_parity(folder)]))
        for title, text in LAYER_NETS.items():
            checks.extend(_guarded_list(f"backward {title}",
                                        lambda t=title, s=text: backward_parity(t, s, folder)))
        for kind, seen in (("region", 0), ("region", 20000), ("region-logistic", 0), ("yolo", 0), ("yolo-close", 0)):
            checks.append(_guard(f"{kind} loss", lambda k=kind, n=seen: [loss_parity(k, n, folder)]))
        checks.append(_guard("replicas", lambda: [replicas_on_one_gpu(folder)]))
        checks.append(_guard("one rank", lambda: [one_rank_allreduce(folder)]))
        checks.append(_guard("subdivisions", lambda: [subdivided_training(folder)]))
        for c in checks:
            print(f"  {c.name[:60]:60s} {c.error:10.3g} {'PASS' if c.passed else 'FAIL'} {c.detail}",
                  flush=True)
        if with_timings and os.environ.get("PYDARKNET_CHECK_TIMINGS", "1") != "0":
            checks.extend(_guarded_list("timings", lambda: timings(folder)))
    return checks


def _guarded_list(name: str, fn) -> list[Check]:  # type: ignore[no-untyped-def]
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a failed check is reported, the rest still run
        return [Check(name, float("nan"), False, f"{type(exc).__name__}: {exc}"[:300])]


def _guard(name: str, fn) -> Check:  # type: ignore[no-untyped-def]
    return _guarded_list(name, fn)[0]
