"""CUDA code run on the CPU: the batch-norm kernels, the convolution's
chunked im2col + GEMM orchestration and the detection losses.

darknet_src/src/layers/batchnorm_kernels.cuh is compiled by g++ with
tests/cuda_emu/cuda_emu.hpp (CUDA's thread/block model: a block's threads
as fibers that switch at each __syncthreads) and launched as batchnorm.cu launches it; the
results are compared with darknet's batch norm computed here in float64:
training forward (batch mean, unbiased variance, darknet's sqrt(var) + 1e-6),
rolling statistics, scale and bias gradients, the input delta (darknet's
sqrt(var + 1e-5) and N, not N - 1) and inference with the rolling
statistics.  Shapes cover one part per channel, several, the 64-part cap,
a 1x1 "spatial" (connected layers) and more channels than grid rows.

darknet_src/src/layers/convolutional_layer.cu (host code only) is compiled
as C++ against tests/cuda_emu/fake_cuda (type names, nothing that runs) with
CPU versions of the device helpers it calls (GEMM, strided-batched GEMM,
im2col, col2im), and its forward and backward are compared with a direct
convolution in numpy: chunks of images that divide the batch or not, one
image per chunk, groups, 1x1 (the input is its own columns) and strided.

darknet_src/src/layers/conv_cudnn.cu is compiled with DN_CUDNN against
tests/cuda_emu/fake_cuda/cudnn.h, whose functions give scripted answers and
log the calls (tests/cuda_emu/cudnn_driver.cpp): its choice of algorithms
(measured, else cuDNN's heuristics; FP32 FMA math within the workspace
limit), one choice per input shape, kept for the shapes it has seen.

darknet_src/src/layers/detection_loss_kernels.cuh (the region and yolo
losses: a thread per anchor-cell, a thread per image for its truths, the
cost as per-block partial sums) runs under the emulation as loss_layers.cu
launches it, against the engine's host loss on the same activated output
and truths: the delta bit for bit, the cost and statistics to rounding.

The GPU itself is checked by tests/gpu (CPU vs GPU) on a machine with one."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import relative_error

ROOT = Path(__file__).resolve().parent.parent
EMU = ROOT / "tests" / "cuda_emu"
TOLERANCE = 1e-5


def _compile(source: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["g++", "-std=c++20", "-O1", "-ffp-contract=off", "-pthread", *flags, f"-I{EMU}",
                           f"-I{ROOT / 'darknet_src' / 'src'}", str(source), "-o", str(out)],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def drivers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("g++") is None:
        pytest.skip("needs g++ to compile the kernels for the CPU")
    folder = tmp_path_factory.mktemp("cuda_emu")
    built = {}
    for name, flags in (("default", ()), ("three_channel_rows", ("-DBN_MAX_CHANNEL_BLOCKS=3",))):
        exe = folder / f"batchnorm_{name}"
        result = _compile(EMU / "batchnorm_driver.cpp", exe, *flags)
        assert result.returncode == 0, result.stderr[-3000:]
        built[name] = exe
    return built


def darknet_batchnorm(x: np.ndarray, delta: np.ndarray, scales: np.ndarray,
                      biases: np.ndarray) -> dict[str, np.ndarray]:
    """darknet's batch norm in float64, rolling statistics starting at 0 and 1."""
    x, delta = x.astype(np.float64), delta.astype(np.float64)
    B, F, S = x.shape
    count = B * S
    per_channel = (slice(None), None)  # F -> 1 x F x 1
    mean = x.mean(axis=(0, 2))
    centered = x - mean[per_channel]
    variance = (centered ** 2).sum(axis=(0, 2)) / (count - 1)
    x_norm = centered / (np.sqrt(variance) + 1e-6)[per_channel]
    scaled = delta * scales[per_channel]
    mean_delta = scaled.sum(axis=(0, 2)) * -1 / np.sqrt(variance + 1e-5)
    variance_delta = (scaled * centered).sum(axis=(0, 2)) * -.5 * (variance + 1e-5) ** -1.5
    rolling_mean, rolling_variance = .01 * mean, .99 + .01 * variance
    factor = scales / (np.sqrt(rolling_variance) + 1e-6)
    return {
        "y": x_norm * scales[per_channel] + biases[per_channel],
        "dx": scaled / np.sqrt(variance + 1e-5)[per_channel]
        + variance_delta[per_channel] * 2 * centered / count + mean_delta[per_channel] / count,
        "rolling_mean": rolling_mean,
        "rolling_variance": rolling_variance,
        "bias_grads": delta.sum(axis=(0, 2)),
        "scale_grads": (delta * x_norm).sum(axis=(0, 2)),
        "y_inference": x * factor[per_channel] + (biases - rolling_mean * factor)[per_channel],
    }


@pytest.mark.parametrize("B,F,S,threads,build,parts", [
    (4, 3, 169, 256, "default", 1),          # one part per channel (a 13x13 layer)
    (3, 5, 700, 64, "default", 3),           # several parts, blocks smaller than the grid assumes
    (1, 2, 17000, 32, "default", 64),        # the 64-part cap: parts cover more than one stride
    (9, 6, 1, 32, "default", 1),             # connected + batch norm: spatial 1
    (2, 7, 300, 32, "three_channel_rows", 2),  # 7 channels on 3 grid rows: the channel loop
])
def test_batchnorm_kernels_match_darknet(drivers: dict[str, Path], tmp_path: Path, B: int, F: int, S: int,
                                         threads: int, build: str, parts: int) -> None:
    rng = np.random.default_rng(B * 1000 + F * 10 + S)
    x = (rng.standard_normal((B, F, S)) * 2 + 1).astype(np.float32)
    delta = rng.standard_normal((B, F, S)).astype(np.float32)
    scales = rng.uniform(.5, 1.5, F).astype(np.float32)
    biases = rng.standard_normal(F).astype(np.float32)
    for name, array in (("x", x), ("delta", delta), ("scales", scales), ("biases", biases)):
        array.tofile(tmp_path / f"{name}.bin")
    run = subprocess.run([str(drivers[build]), str(tmp_path), str(B), str(F), str(S), str(threads)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    used_parts, grid_x, grid_y = map(int, run.stdout.split())
    assert used_parts == grid_x == parts
    assert grid_y == (3 if build == "three_channel_rows" else F)
    expected = darknet_batchnorm(x, delta, scales, biases)
    for name, reference in expected.items():
        got = np.fromfile(tmp_path / f"{name}.bin", np.float32).reshape(reference.shape)
        assert relative_error(got, reference) < TOLERANCE, name


def test_emulation_catches_a_wrong_partition(drivers: dict[str, Path], tmp_path: Path) -> None:
    """The harness can fail: with the reductions' row stride broken (each
    part walking the rest of the row instead of every parts-th stretch),
    values are counted more than once and the outputs come out wrong."""
    source = (ROOT / "darknet_src" / "src" / "layers" / "batchnorm_kernels.cuh").read_text()
    stride = "s += parts * blockDim.x"
    assert source.count(stride) == 3
    broken_dir = tmp_path / "layers"
    broken_dir.mkdir()
    (broken_dir / "batchnorm_kernels.cuh").write_text(
        source.replace('#include "../cuda_device.cuh"', f'#include "{ROOT}/darknet_src/src/cuda_device.cuh"')
        .replace(stride, "s += blockDim.x"))
    exe = tmp_path / "broken"
    result = subprocess.run(["g++", "-std=c++20", "-O1", "-pthread", f"-I{tmp_path}", f"-I{EMU}",
                             str(EMU / "batchnorm_driver.cpp"), "-o", str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    B, F, S = 2, 4, 700  # 3 parts per channel
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((B, F, S)) + 1).astype(np.float32)
    delta = rng.standard_normal((B, F, S)).astype(np.float32)
    scales, biases = np.ones(F, np.float32), np.zeros(F, np.float32)
    for name, array in (("x", x), ("delta", delta), ("scales", scales), ("biases", biases)):
        array.tofile(tmp_path / f"{name}.bin")
    subprocess.run([str(exe), str(tmp_path), str(B), str(F), str(S), "32"], check=True, capture_output=True,
                   timeout=120)
    expected = darknet_batchnorm(x, delta, scales, biases)
    for name in ("y", "bias_grads"):
        got = np.fromfile(tmp_path / f"{name}.bin", np.float32).reshape(expected[name].shape)
        assert relative_error(got, expected[name]) > 1e-2, name


# ---- the convolution's orchestration -------------------------------------------------------

# pixels per weight-gradient range at least: 256 in the library, 16 here so
# that small test layers take the split path
MIN_SEGMENT = 16


def grad_segments(filters: int, kernel_len: int, spatial: int) -> int:
    """The split of a weight gradient's pixels, as convolutional_layer.cu
    chooses it: enough GEMM tiles for 256, ranges of MIN_SEGMENT pixels or
    more, at most 16 Mi floats of partials, 4 ranges or none."""
    tiles = -(-filters // 128) * -(-kernel_len // 128)
    segments = min(256 // tiles, spatial // MIN_SEGMENT, (16 << 20) // (filters * kernel_len))
    return segments if segments >= 4 else 1


@pytest.fixture(scope="module")
def conv_driver(drivers: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = ROOT / "darknet_src" / "src"
    exe = tmp_path_factory.mktemp("conv_emu") / "conv_driver"
    result = subprocess.run(
        ["g++", "-std=c++20", "-O1", "-pthread", f"-I{EMU / 'fake_cuda'}", f"-I{EMU}", f"-I{src}",
         f"-I{ROOT / 'darknet_src' / 'include'}", "-include", "cuda_emu.hpp",
         f"-DDN_GRAD_MIN_SEGMENT={MIN_SEGMENT}", str(EMU / "conv_driver.cpp"),
         "-x", "c++", str(src / "layers" / "convolutional_layer.cu"), str(src / "layers" / "conv_cudnn.cu"),
         "-o", str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return exe


def direct_convolution(x: np.ndarray, w: np.ndarray, bias: np.ndarray, delta: np.ndarray, stride: int,
                       pad: int, groups: int) -> dict[str, np.ndarray]:
    """darknet's convolution (cross-correlation) and its gradients, in float64."""
    x, w, delta = x.astype(np.float64), w.astype(np.float64), delta.astype(np.float64)
    B, C, H, W = x.shape
    F, per_group_c, k, _ = w.shape
    per_group_f = F // groups
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out_h, out_w = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride][:, :, :out_h, :out_w]  # B C oh ow k k
    out = np.zeros((B, F, out_h, out_w))
    weight_grads = np.zeros_like(w)
    padded_delta = np.zeros_like(padded)
    for g in range(groups):
        cs, fs = slice(g * per_group_c, (g + 1) * per_group_c), slice(g * per_group_f, (g + 1) * per_group_f)
        out[:, fs] = np.einsum("bchwij,fcij->bfhw", windows[:, cs], w[fs])
        weight_grads[fs] = np.einsum("bchwij,bfhw->fcij", windows[:, cs], delta[:, fs])
        for i in range(k):
            for j in range(k):
                padded_delta[:, cs, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride] += \
                    np.einsum("bfhw,fc->bchw", delta[:, fs], w[fs][:, :, i, j])
    return {"output": out + bias[None, :, None, None], "weight_grads": weight_grads,
            "bias_grads": delta.sum(axis=(0, 2, 3)), "input_delta": padded_delta[:, :, pad:pad + H, pad:pad + W]}


def wide_images(count: int, filters: int, columns: int, spatial: int, segments: int, scratch_floats: int,
                workspace_floats: int) -> int:
    """Images per weight-gradient GEMM over side-by-side columns in a chunk of
    `count`, as convolutional_layer.cu chooses it (0: per image, or split)."""
    if count < 2 or segments > 1:
        return 0
    images = min(count, scratch_floats // (filters * spatial), workspace_floats // columns)
    return images if images >= 2 else 0


@pytest.mark.parametrize("B,C,H,F,size,stride,pad,groups,chunk,scratch_images", [
    (5, 3, 7, 4, 3, 1, 1, 1, 2, None),    # chunks of 2, 2, 1 (one wide GEMM per chunk of 2)
    (5, 3, 7, 4, 3, 1, 1, 1, 1, None),    # one image per chunk (darknet's loop)
    (5, 3, 7, 4, 3, 1, 1, 1, 5, None),    # the whole batch at once
    (5, 3, 7, 4, 3, 1, 1, 1, 5, 2),       # wide GEMMs over 2, 2 and 1 image (scratch for 2)
    (5, 3, 7, 4, 3, 1, 1, 1, 5, 1),       # scratch for 1 image only: per image
    (4, 6, 5, 5, 1, 1, 0, 1, 0, None),    # 1x1: the input is its own columns, no scratch: per image
    (4, 6, 5, 5, 1, 1, 0, 1, 4, None),    # 1x1, columns scratch for 4: one wide GEMM
    (5, 6, 5, 5, 1, 1, 0, 1, 2, None),    # 1x1, columns scratch for 2: wide GEMMs over 2, 2 and 1
    (3, 4, 6, 6, 3, 1, 1, 2, 2, None),    # groups, chunks of 2 and 1
    (4, 4, 6, 6, 3, 1, 1, 2, 4, 3),       # groups, wide GEMMs over 3 and 1 image
    (3, 4, 5, 4, 1, 1, 0, 2, 0, None),    # grouped 1x1
    (3, 4, 5, 4, 1, 1, 0, 2, 3, None),    # grouped 1x1, wide
    (3, 2, 8, 3, 3, 2, 1, 1, 2, None),    # stride 2
    (2, 3, 6, 4, 1, 2, 0, 1, 2, None),    # 1x1 with stride 2: im2col after all
    (3, 3, 12, 4, 3, 1, 1, 1, 2, None),   # weight gradients split: 144 pixels in 9 ranges of 16
    (2, 3, 13, 4, 3, 1, 1, 1, 2, None),   # 169 pixels: 10 ranges of 16 and 9 left over
    (2, 4, 13, 4, 3, 1, 1, 2, 1, None),   # split, per group
    (2, 6, 11, 5, 1, 1, 0, 1, 0, None),   # split 1x1 (121 pixels: 7 ranges of 17, 2 left over)
])
def test_convolution_chunks_match_direct_convolution(conv_driver: Path, tmp_path: Path, B: int, C: int, H: int,
                                                     F: int, size: int, stride: int, pad: int, groups: int,
                                                     chunk: int, scratch_images: int | None) -> None:
    rng = np.random.default_rng(B + 10 * C + 100 * H + 1000 * F + size + groups)
    out_h = (H + 2 * pad - size) // stride + 1
    x = rng.standard_normal((B, C, H, H)).astype(np.float32)
    w = rng.standard_normal((F, C // groups, size, size)).astype(np.float32)
    bias = rng.standard_normal(F).astype(np.float32)
    delta = rng.standard_normal((B, F, out_h, out_h)).astype(np.float32)
    for name, array in (("input", x), ("weights", w), ("biases", bias), ("delta", delta)):
        array.tofile(tmp_path / f"{name}.bin")
    columns = size * size * (C // groups) * out_h * out_h
    one_by_one = size == 1 and stride == 1 and pad == 0
    # scratch for `chunk` images' columns plus a little (never a whole extra image);
    # a 1x1 layer's chunk is the whole batch, its scratch only for the wide GEMMs
    workspace = chunk * columns + columns // 2 if chunk else 1
    spatial, group_filters = out_h * out_h, F // groups
    segments = grad_segments(group_filters, size * size * C // groups, spatial)
    # the weight gradients' scratch: the library's sizing (the split's partials, or
    # the whole batch's deltas), or `scratch_images` images' deltas and a little
    scratch = (segments * group_filters * size * size * C // groups if segments > 1 else
               B * group_filters * spatial if B >= 2 else 0) if scratch_images is None else \
        scratch_images * group_filters * spatial + spatial // 2
    run = subprocess.run([str(conv_driver), str(tmp_path), str(B), str(C), str(H), str(H), str(F), str(size),
                          str(stride), str(pad), str(groups), str(workspace),
                          *([] if scratch_images is None else [str(scratch)])],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    forward_gemms, forward_batched, backward_gemms, backward_batched, used_segments, im2cols, col2ims = \
        map(int, run.stdout.split())
    chunk_sizes = [B] if not chunk or one_by_one else [min(chunk, B - first) for first in range(0, B, chunk)]
    chunks = len(chunk_sizes)
    assert used_segments == segments
    wide = [wide_images(n, group_filters, columns, spatial, segments, scratch, workspace) for n in chunk_sizes]
    # one batched GEMM per chunk and group each way; weight gradients per chunk and
    # group: one GEMM per `wide` images (after one im2col of them), or per image one
    # GEMM or one batched GEMM over the pixel ranges (+ one for the rest) after one
    # im2col of the chunk
    assert (forward_gemms, forward_batched) == (0, chunks * groups)
    wide_gemms = groups * sum(-(-n // w) for n, w in zip(chunk_sizes, wide) if w)
    per_image = [n for n, w in zip(chunk_sizes, wide) if not w]
    im2col_forward = 0 if one_by_one else chunks * groups
    im2col_backward = 0 if one_by_one else wide_gemms + groups * len(per_image)
    assert im2cols == im2col_forward + im2col_backward
    assert col2ims == (0 if one_by_one else chunks * groups)
    assert backward_batched == chunks * groups + (sum(per_image) * groups if segments > 1 else 0)
    if segments == 1:
        assert backward_gemms == wide_gemms + sum(per_image) * groups
    else:
        assert not any(wide)
        assert backward_gemms == B * groups * (spatial % segments > 0)
    expected = direct_convolution(x, w, bias, delta, stride, pad, groups)
    for name, reference in expected.items():
        got = np.fromfile(tmp_path / f"{name}.bin", np.float32).reshape(reference.shape)
        assert relative_error(got, reference) < TOLERANCE, name


# ---- cuDNN's algorithm choice -----------------------------------------------------------------

@pytest.fixture(scope="module")
def cudnn_driver(drivers: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = ROOT / "darknet_src" / "src"
    exe = tmp_path_factory.mktemp("cudnn_emu") / "cudnn_driver"
    result = subprocess.run(
        ["g++", "-std=c++20", "-O1", "-pthread", "-DDN_CUDNN", f"-I{EMU / 'fake_cuda'}", f"-I{EMU}", f"-I{src}",
         f"-I{ROOT / 'darknet_src' / 'include'}", "-include", "cuda_emu.hpp", str(EMU / "cudnn_driver.cpp"),
         "-x", "c++", str(src / "layers" / "conv_cudnn.cu"), "-o", str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return exe


def run_cudnn(driver: Path, steps: list[str], **env: str) -> list[str]:
    """The driver's log: "find|guess KIND h=H" per query, "run KIND algo=A
    workspace=BYTES pending=0|1 n=N h=H" per convolution, "error ..." per failure."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DN_FAKE_", "PYDARKNET_CUDNN"))}
    run = subprocess.run([str(driver), *steps], capture_output=True, text=True, timeout=60, env={**clean, **env})
    assert run.returncode == 0, run.stderr
    return [line for line in run.stdout.splitlines() if not line.startswith("workspace allocated")]


def queries(log: list[str]) -> list[str]:
    return [line for line in log if line.startswith(("find", "guess"))]


def runs(log: list[str]) -> list[tuple[str, int, int]]:
    """(kind, algorithm, workspace bytes) of each convolution run"""
    out = []
    for line in log:
        if line.startswith("run "):
            fields = dict(f.split("=") for f in line.split()[2:])
            assert fields["pending"] == "0", line  # no stale CUDA error left for the next launch
            out.append((line.split()[1], int(fields["algo"]), int(fields["workspace"])))
    return out


def test_cudnn_measures_each_shape_once(cudnn_driver: Path) -> None:
    # measured lists (fastest first): a tensor-core algorithm, one over the 1 GiB
    # limit, 9 (backward 19) in default math, then the FMA one: H % 5 forward,
    # 10 + H % 4 backward, H * 100 bytes measured, H * 100 + algorithm under the
    # layer's descriptors (the larger is allocated)
    log = run_cudnn(cudnn_driver, ["fwd:2:33:33", "fwd:2:33:33", "fwd:2:50:50", "fwd:2:33:33",
                                   "bwd:2:33:33", "bwd:2:33:33", "bwd-first:4:50:50", "bwd:4:50:50",
                                   "fwd:2:33:40"])
    assert queries(log) == ["find forward h=33", "find forward h=50",
                            "find filter h=33", "find data h=33",
                            "find forward h=50", "find filter h=50",  # batch 4: a shape of its own
                            "find data h=50",  # the first layer's backward needs no data algorithm
                            "find forward h=33"]  # another width
    assert runs(log) == [("forward", 3, 3303), ("forward", 3, 3303), ("forward", 0, 5000), ("forward", 3, 3303),
                         ("filter", 11, 3311), ("data", 11, 3311), ("filter", 11, 3311), ("data", 11, 3311),
                         ("filter", 12, 5012), ("filter", 12, 5012), ("data", 12, 5012), ("forward", 3, 3303)]


def test_cudnn_forgets_the_oldest_of_17_shapes(cudnn_driver: Path) -> None:
    sizes = list(range(20, 37))  # 17 input sizes; 16 are kept
    log = run_cudnn(cudnn_driver, [f"fwd:1:{h}:{h}" for h in sizes] + ["fwd:1:36:36", "fwd:1:21:21", "fwd:1:20:20"])
    assert queries(log) == [f"find forward h={h}" for h in sizes] + ["find forward h=20"]
    assert [algo for _, algo, _ in runs(log)[-3:]] == [36 % 5, 21 % 5, 20 % 5]


def test_cudnn_falls_back_to_heuristics(cudnn_driver: Path) -> None:
    # heuristics lists: one NOT_SUPPORTED, then algorithm 4 (backward 14) in default
    # math, H * 10 bytes (H * 100 + 4 or + 14 under the layer's descriptors)
    steps = ["fwd:1:16:16", "bwd:1:16:16", "fwd:1:16:16"]
    failed = run_cudnn(cudnn_driver, steps, DN_FAKE_FIND_FAILS="1")  # measuring runs out of memory
    assert queries(failed) == ["find forward h=16", "guess forward h=16", "find filter h=16", "guess filter h=16",
                               "find data h=16", "guess data h=16"]
    assert runs(failed) == [("forward", 4, 1604), ("filter", 14, 1614), ("data", 14, 1614), ("forward", 4, 1604)]
    heuristics_only = run_cudnn(cudnn_driver, steps, PYDARKNET_CUDNN_FIND="0")
    assert queries(heuristics_only) == ["guess forward h=16", "guess filter h=16", "guess data h=16"]
    assert runs(heuristics_only) == runs(failed)


def test_cudnn_takes_default_math_where_no_fma_entry(cudnn_driver: Path) -> None:
    log = run_cudnn(cudnn_driver, ["fwd:1:16:16", "bwd:1:16:16"], DN_FAKE_NO_FMA="1")
    assert queries(log) == ["find forward h=16", "find filter h=16", "find data h=16"]
    assert runs(log) == [("forward", 9, 1609), ("filter", 19, 1619), ("data", 19, 1619)]


def test_cudnn_without_an_fp32_algorithm_is_an_error(cudnn_driver: Path) -> None:
    log = run_cudnn(cudnn_driver, ["fwd:1:16:16", "fwd:1:16:16"], DN_FAKE_NO_FP32="1")
    assert runs(log) == []
    errors = [line for line in log if line.startswith("error")]
    assert len(errors) == 2 and all("no FP32 forward algorithm" in e for e in errors)
    assert queries(log) == ["find forward h=16", "guess forward h=16"] * 2  # nothing half-made is kept


# ---- the region and yolo losses --------------------------------------------------------------

@pytest.fixture(scope="module")
def loss_driver(drivers: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    exe = tmp_path_factory.mktemp("loss_emu") / "loss_driver"
    result = _compile(EMU / "loss_driver.cpp", exe)
    assert result.returncode == 0, result.stderr[-3000:]
    return exe


def edge_truths(truth: np.ndarray, classes: int) -> np.ndarray:
    """random_truths' images, then: the second image without truths, and a
    box at x = 1.0 in the last (its cell index is clamped into the grid)."""
    truth = truth.copy().reshape(truth.shape[0], -1, 5)
    truth[1] = 0
    last = truth[-1]
    free = int(np.argmax(last[:, 0] == 0))
    last[free] = (1.0, .5, .3, .4, classes - 1)
    return truth.reshape(truth.shape[0], -1)


def run_loss_driver(driver: Path, folder: Path, params: list[object], arrays: dict[str, np.ndarray]
                    ) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(exist_ok=True)
    (folder / "params.txt").write_text(" ".join(f"{p:.9g}" if isinstance(p, float) else str(p) for p in params))
    for name, array in arrays.items():
        np.ascontiguousarray(array, np.float32).tofile(folder / f"{name}.bin")
    run = subprocess.run([str(driver), str(folder)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return np.fromfile(folder / "delta.bin", np.float32), np.fromfile(folder / "results.bin", np.float32)


def assert_loss_matches(delta: np.ndarray, results: np.ndarray, cpu_delta: np.ndarray, step: object,
                        batch: int, predictions: int) -> int:
    """The kernels' delta against the engine's host loss: bit for bit (the
    same code, layers/detection_loss.h, with no FMA contraction on either
    side); the cost and statistics to float rounding (they add up in
    another order: per block and per image)."""
    np.testing.assert_array_equal(delta, cpu_delta.ravel())
    cost, objectness, sums = float(results[0]), float(results[1]), results[2:]
    assert cost == pytest.approx(step.loss * batch, rel=1e-5)
    stats = step.layers[0]
    count = int(sums[5])
    assert count == stats.count and count > 0
    for value, expected in ((sums[0] / count, stats.avg_iou), (sums[3] / count, stats.avg_class),
                            (sums[4] / count, stats.avg_obj), (sums[1] / count, stats.recall),
                            (sums[2] / count, stats.recall75), (objectness / predictions, stats.avg_noobj)):
        assert float(value) == pytest.approx(expected, rel=1e-5, abs=1e-7)
    return count


@pytest.mark.parametrize("softmax,rescore,bias_match,seen", [
    (1, 1, 1, 0),        # YOLOv2's settings, with the prior term (seen < 12800)
    (0, 0, 0, 20000),    # logistic classes (darknet's tag rule), no prior term
])
def test_region_loss_kernels_match_host_loss(loss_driver: Path, tmp_path: Path, softmax: int, rescore: int,
                                             bias_match: int, seen: int) -> None:
    from test_region_loss import REGION_ANCHORS, REGION_OPTIONS, options_text, random_truths, region_net
    B, W, H, classes = 3, 6, 4, 4  # 24 cells, 3 anchors: a wrong (cell, anchor) split shows
    net = region_net(tmp_path, batch=B, w=W, h=H, anchors=REGION_ANCHORS, classes=classes, softmax=softmax,
                     options=options_text(rescore=rescore, bias_match=bias_match, **REGION_OPTIONS))
    rng = np.random.default_rng(7 + softmax)
    x = rng.normal(0, 1.5, net.input_shape).astype(np.float32)
    truth = edge_truths(random_truths(rng, B, 5, 30, classes, (W, H)), classes)
    net.seen = seen
    step = net.train_step(x, truth)
    o = REGION_OPTIONS
    params = ["region", B, W, H, len(REGION_ANCHORS), 4, classes, softmax, 0, rescore, bias_match,
              int(seen + B < 12800), float(o["thresh"]), float(o["coord_scale"]), float(o["object_scale"]),
              float(o["noobject_scale"]), float(o["class_scale"]), net.truth_size]
    delta, results = run_loss_driver(loss_driver, tmp_path / "emu", params, {
        "output": net.layer_output(0), "truth": truth, "anchors": REGION_ANCHORS})
    assert_loss_matches(delta, results, net.delta(0), step, B, W * H * len(REGION_ANCHORS) * B)


@pytest.mark.parametrize("ignore_thresh,truth_thresh", [
    (.5, 1.0),   # darknet's yolov3 settings
    (.2, .3),    # predictions that overlap a truth by > .3 take it themselves
])
def test_yolo_loss_kernels_match_host_loss(loss_driver: Path, tmp_path: Path, ignore_thresh: float,
                                           truth_thresh: float) -> None:
    from test_region_loss import options_text, random_truths, yolo_net
    B, W, H, classes, mask = 3, 6, 5, 3, [1, 2]
    anchors = np.array([[1.5, 1.2], [3.0, 3.0], [6.0, 5.0], [10.0, 9.0]])  # pixels of the 12 x 10 input
    net = yolo_net(tmp_path, batch=B, w=W, h=H, anchors=anchors, mask=mask, classes=classes,
                   options=options_text(ignore_thresh=ignore_thresh, truth_thresh=truth_thresh))
    rng = np.random.default_rng(11)
    x = rng.normal(0, 1.5, net.input_shape).astype(np.float32)
    truth = edge_truths(random_truths(rng, B, 6, 90, classes, (W, H)), classes)
    step = net.train_step(x, truth)
    params = ["yolo", B, W, H, len(mask), len(anchors), classes, 90, 2 * W, 2 * H, ignore_thresh, truth_thresh,
              net.truth_size]
    delta, results = run_loss_driver(loss_driver, tmp_path / "emu", params, {
        "output": net.layer_output(1), "truth": truth, "anchors": anchors, "mask": np.array(mask)})
    matched = assert_loss_matches(delta, results, net.delta(1), step, B, W * H * len(mask) * B)
    # the case covers what it is meant to: anchor-cells that took a truth by
    # IoU above truth_thresh have class deltas beyond the truths' own
    with_class = np.count_nonzero(np.any(delta.reshape(B, len(mask), 5 + classes, H, W)[:, :, 5:] != 0, axis=2))
    assert (with_class > matched) == (truth_thresh < 1)
