"""`Network`: a darknet network (cfg + weights) on numpy arrays."""
from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from ._ffi import check, ffi, lib, path_arg, text
from ._views import HandleViews
from .errors import ArgumentError, DarknetError

PathLike = str | os.PathLike[str]

PARAM_KINDS = {
    "biases": lib.DN_PARAM_BIASES,
    "scales": lib.DN_PARAM_SCALES,
    "rolling_mean": lib.DN_PARAM_ROLLING_MEAN,
    "rolling_variance": lib.DN_PARAM_ROLLING_VARIANCE,
    "weights": lib.DN_PARAM_WEIGHTS,
}


def parse_device(device: str) -> int:
    """"cpu" -> -1, "cuda" -> 0, "cuda:N" -> N."""
    if not isinstance(device, str):
        raise ArgumentError(f"device must be 'cpu' or 'cuda:N', got {device!r}")
    d = device.strip().lower()
    if d == "cpu":
        return -1
    if d == "cuda":
        return 0
    if d.startswith("cuda:") and d[5:].isdigit():
        return int(d[5:])
    raise ArgumentError(f"device must be 'cpu' or 'cuda:N', got {device!r}")


def _whole_number(name: str, value: object) -> int:
    """`value` as a C int (ArgumentError for bools, floats, strings)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentError(f"{name} must be an integer, got {value!r}")
    if not -2**31 <= value < 2**31:
        raise ArgumentError(f"{name} is out of range: {value}")
    return value


class CfgWarning(UserWarning):
    """An option in a cfg that no layer reads (darknet's "Unused field")."""


@dataclass(frozen=True)
class LayerInfo:
    """One layer as the engine built it (shapes are channels, height, width)."""

    index: int
    type: str
    cfg_line: int
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    outputs: int
    filters: int
    size: int
    stride: int
    pad: int
    groups: int
    batch_normalize: bool
    activation: str
    n_params: int
    bflops: float
    inputs_from: tuple[int, ...]
    n_anchors: int
    classes: int
    probability: float


@dataclass(frozen=True)
class NetworkInfo:
    width: int
    height: int
    channels: int
    batch: int
    subdivisions: int
    inputs: int
    outputs: int
    n_layers: int
    output_layer: int
    seen: int
    weights_version: tuple[int, int, int]
    n_params: int
    n_stats: int
    bflops: float
    threads: int
    device: str               # "cpu" or "cuda:N"


@dataclass(frozen=True)
class DetectionLayerStats:
    """darknet's per-layer training line: Avg IOU, Class, Obj, No Obj, Avg
    Recall (IoU > .5), recall at .75, and how many truths were matched."""

    layer: int
    avg_iou: float
    avg_class: float
    avg_obj: float
    avg_noobj: float
    recall: float
    recall75: float
    count: int


@dataclass(frozen=True)
class TrainStepResult:
    loss: float
    learning_rate: float
    batch_num: int
    seen: int
    layers: tuple[DetectionLayerStats, ...]

    @classmethod
    def from_c(cls, raw: Any) -> "TrainStepResult":
        layers = tuple(DetectionLayerStats(
            layer=s.layer, avg_iou=float(s.avg_iou), avg_class=float(s.avg_class),
            avg_obj=float(s.avg_obj), avg_noobj=float(s.avg_noobj), recall=float(s.recall),
            recall75=float(s.recall75), count=int(s.count))
            for s in (raw.layers[k] for k in range(raw.n_layers)))
        return cls(loss=float(raw.loss), learning_rate=float(raw.learning_rate),
                   batch_num=int(raw.batch_num), seen=int(raw.seen), layers=layers)


class Network:
    """A darknet network built by the C engine.

    Args:
        cfg: path to a darknet .cfg file.
        weights: optional .weights file to load (exact size check).
        batch: images per forward (default 1 for inference; 0 = the cfg's
            batch/subdivisions).
        threads: worker threads (0 = one per CPU).
        width, height: override the cfg's input size.
        train: allocate what training needs.
        device: "cpu", or "cuda:N" for CUDA device N (a CUDA build of
            pydarknet; the weights stay on the GPU, outputs come back).

    A Network is used by one thread at a time (calls are serialised with a
    lock); use one Network per thread for parallel inference.  The GIL is
    released during every C call.
    """

    def __init__(self, cfg: PathLike, weights: PathLike | None = None, *, batch: int = 1,
                 threads: int = 0, width: int = 0, height: int = 0, train: bool = False,
                 device: str = "cpu") -> None:
        self._lock = threading.RLock()
        cfg_arg = path_arg(cfg)
        self.cfg_path = Path(cfg)
        params = ffi.new("dn_network_params *", lib.dn_network_default_params())
        params.threads = _whole_number("threads", threads)
        params.batch = _whole_number("batch", batch)
        params.train = 1 if train else 0
        params.width = _whole_number("width", width)
        params.height = _whole_number("height", height)
        params.gpu = parse_device(device)
        out = ffi.new("dn_network **")
        check(lib.dn_network_create(cfg_arg, params, out))
        self._handle: Any = ffi.gc(out[0], lib.dn_network_free)
        self._views = HandleViews(self._handle)
        self._owner: Any = None
        unused = text(lib.dn_network_warnings(self._handle)).strip()
        for line in unused.splitlines():
            warnings.warn(line, CfgWarning, stacklevel=2)
        if weights is not None:
            self.load_weights(weights)

    @classmethod
    def _borrowed(cls, handle: Any, owner: object, cfg: PathLike) -> "Network":
        """A view of a network owned by something else (a trainer's replica):
        it is freed with its owner, never by this object."""
        net = cls.__new__(cls)
        net._lock = threading.RLock()
        net.cfg_path = Path(cfg)
        net._handle = handle
        net._owner = owner
        net._views = owner._views  # arrays over a replica keep the whole trainer alive
        return net

    # ---- lifetime -------------------------------------------------------------

    def close(self) -> None:
        """Free the C network now (also happens when the object is
        collected); where arrays from params(), grads() or
        predict(copy=False) are still alive, when the last of them is."""
        with self._lock:
            if self._handle is not None and self._owner is None:
                self._views.release()
            self._handle = None

    def __enter__(self) -> "Network":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def handle(self) -> Any:
        if self._handle is None:
            raise ArgumentError("the network is closed")
        if self._owner is not None and self._views.handle is None:
            raise ArgumentError("the trainer this replica belongs to is closed")
        return self._handle

    # ---- description ----------------------------------------------------------------

    @property
    def info(self) -> NetworkInfo:
        raw = ffi.new("dn_network_info *")
        check(lib.dn_network_get_info(self.handle, raw))
        return NetworkInfo(
            width=raw.width, height=raw.height, channels=raw.channels, batch=raw.batch,
            subdivisions=raw.subdivisions, inputs=raw.inputs, outputs=raw.outputs,
            n_layers=raw.n_layers, output_layer=raw.output_layer, seen=int(raw.seen),
            weights_version=(raw.weights_major, raw.weights_minor, raw.weights_revision),
            n_params=int(raw.n_params), n_stats=int(raw.n_stats), bflops=float(raw.bflops),
            threads=raw.threads, device=f"cuda:{raw.gpu}" if raw.gpu >= 0 else "cpu")

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """(batch, channels, height, width) of the input predict() takes."""
        i = self.info
        return (i.batch, i.channels, i.height, i.width)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        """(batch, channels, height, width) of the output layer."""
        i = self.info
        layer = self.layer(i.output_layer)
        return (i.batch, *layer.output_shape)

    @property
    def batch(self) -> int:
        return self.info.batch

    @property
    def seen(self) -> int:
        """Images seen in training (read from and written to .weights)."""
        return self.info.seen

    @seen.setter
    def seen(self, value: int) -> None:
        with self._lock:
            check(lib.dn_network_set_seen(self.handle, int(value)))

    def __len__(self) -> int:
        return self.info.n_layers

    def layer(self, index: int) -> LayerInfo:
        raw = ffi.new("dn_layer_info *")
        check(lib.dn_network_get_layer(self.handle, index, raw))
        return LayerInfo(
            index=raw.index, type=text(raw.type), cfg_line=raw.cfg_line,
            input_shape=(raw.in_c, raw.in_h, raw.in_w),
            output_shape=(raw.out_c, raw.out_h, raw.out_w), outputs=raw.outputs,
            filters=raw.filters, size=raw.size, stride=raw.stride, pad=raw.pad,
            groups=raw.groups, batch_normalize=bool(raw.batch_normalize),
            activation=text(raw.activation), n_params=int(raw.n_params),
            bflops=float(raw.bflops),
            inputs_from=tuple(raw.input_layers[k] for k in range(min(raw.n_inputs, 8))),
            n_anchors=raw.n_anchors, classes=raw.classes, probability=float(raw.probability))

    @property
    def layers(self) -> list[LayerInfo]:
        return [self.layer(i) for i in range(len(self))]

    # ---- configuration -----------------------------------------------------------------

    def set_batch(self, batch: int) -> None:
        with self._lock:
            self._views.check_no_outputs("change the batch")
            check(lib.dn_network_set_batch(self.handle, batch))

    def resize(self, width: int, height: int) -> None:
        """Change the input size (keeps the weights)."""
        with self._lock:
            self._views.check_no_outputs("resize the network")
            check(lib.dn_network_resize(self.handle, width, height))

    @property
    def threads(self) -> int:
        return self.info.threads

    @threads.setter
    def threads(self, value: int) -> None:
        with self._lock:
            check(lib.dn_network_set_threads(self.handle, value))

    # ---- weights --------------------------------------------------------------------------

    def load_weights(self, path: PathLike, *, partial: bool = False, cutoff: int = 0) -> int:
        """Load darknet .weights.

        With partial=False the file must fit the cfg exactly.  With
        partial=True (pretrained backbones such as darknet53.conv.74) the file
        may end at a layer boundary and the rest keep their values; `cutoff`
        limits loading to layers [0, cutoff).  Returns n: layers [0, n) hold
        the file's values or have none (len(self) for a whole file; the
        cutoff; or the first layer with weights that a short file did not
        reach).
        """
        if isinstance(cutoff, bool) or not isinstance(cutoff, int) or cutoff < 0:
            raise ArgumentError(f"cutoff must be a layer count >= 0 (0: all layers), got {cutoff!r}")
        with self._lock:
            if not partial and not cutoff:
                check(lib.dn_network_load_weights(self.handle, path_arg(path)))
                return len(self)
            loaded = ffi.new("int *")
            check(lib.dn_network_load_weights_upto(self.handle, path_arg(path), cutoff, loaded))
            return int(loaded[0])

    def save_weights(self, path: PathLike) -> None:
        """Write darknet .weights atomically (temporary file + rename)."""
        with self._lock:
            check(lib.dn_network_save_weights(self.handle, path_arg(path)))

    def randomize(self, seed: int = 0) -> None:
        """Seeded He-scaled random weights (for tests and benchmarks)."""
        with self._lock:
            check(lib.dn_network_randomize(self.handle, seed))

    def params(self, index: int) -> dict[str, np.ndarray]:
        """Writable numpy views of layer `index`'s parameters (empty dict when
        it has none): biases, scales, rolling_mean, rolling_variance, weights
        (weights shaped as darknet stores them, flat).  They keep the network's
        memory alive: readable after close(), which then frees it once they
        are gone."""
        result: dict[str, np.ndarray] = {}
        data = ffi.new("float **")
        count = ffi.new("size_t *")
        self._views_out = True  # writes may come later: see _sync_views
        for name, kind in PARAM_KINDS.items():
            check(lib.dn_network_layer_param(self.handle, index, kind, data, count))
            if count[0]:
                result[name] = self._views.array(data[0], int(count[0]), kind="params", writeable=True)
        return result

    # ---- inference -------------------------------------------------------------------------

    def _sync_views(self) -> None:
        """Parameter views handed out by params() may have been written since:
        tell the engine before it computes (it rebuilds its weight caches and
        refreshes a GPU copy)."""
        if getattr(self, "_views_out", False):
            check(lib.dn_network_params_touched(self.handle))

    def _input_pointer(self, array: np.ndarray) -> tuple[Any, np.ndarray]:
        info = self.info
        x = np.asarray(array)
        if x.dtype != np.float32:
            raise ArgumentError(f"predict() takes float32 input, got {x.dtype}")
        expected = (info.channels, info.height, info.width)
        if x.shape == expected:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != expected:
            raise ArgumentError(
                f"predict() takes input of shape (batch, {info.channels}, {info.height}, "
                f"{info.width}) or ({info.channels}, {info.height}, {info.width}); got {x.shape}")
        if x.shape[0] != info.batch:
            raise ArgumentError(
                f"input has {x.shape[0]} images but the network's batch is {info.batch} "
                f"(use set_batch)")
        x = np.ascontiguousarray(x)
        return ffi.from_buffer("float[]", x), x

    def predict(self, array: np.ndarray, *, copy: bool = True) -> np.ndarray:
        """Forward pass on float32 NCHW input; returns the output layer's
        activations shaped (batch, channels, height, width).

        copy=False returns a read-only view of the engine's buffer: the next
        predict overwrites it, and resize() / set_batch() refuse to run while
        it is alive."""
        with self._lock:
            self._sync_views()
            pointer, keep = self._input_pointer(array)
            out = ffi.new("const float **")
            check(lib.dn_network_predict(self.handle, pointer, out))
            del keep
            return self._view(out[0], self.output_shape, copy)

    def profile(self, array: np.ndarray, repeat: int = 5) -> list[float]:
        """Median wall time of each layer's forward over `repeat` runs (ms)."""
        with self._lock:
            check(lib.dn_network_set_profiling(self.handle, 1))
            try:
                runs = []
                ms = ffi.new("double *")
                for _ in range(repeat):
                    self.predict(array, copy=False)
                    times = []
                    for i in range(len(self)):
                        check(lib.dn_network_layer_time(self.handle, i, ms))
                        times.append(float(ms[0]))
                    runs.append(times)
            finally:
                check(lib.dn_network_set_profiling(self.handle, 0))
            return [float(np.median(col)) for col in zip(*runs)]

    def layer_output(self, index: int) -> np.ndarray:
        """Copy of layer `index`'s activations after the last forward,
        shaped (batch, channels, height, width)."""
        with self._lock:
            data = ffi.new("const float **")
            count = ffi.new("size_t *")
            check(lib.dn_network_layer_output(self.handle, index, data, count))
            layer = self.layer(index)
            return self._view(data[0], (self.info.batch, *layer.output_shape), True)

    def _view(self, pointer: Any, shape: tuple[int, ...], copy: bool) -> np.ndarray:
        n = int(np.prod(shape))
        if copy:
            return np.frombuffer(ffi.buffer(pointer, n * 4), dtype=np.float32).reshape(shape).copy()
        return self._views.array(pointer, n, kind="output", writeable=False).reshape(shape)

    # ---- training ---------------------------------------------------------------------------

    def _training_arrays(self, images: np.ndarray, truth: np.ndarray | None,
                         n_images: int) -> tuple[Any, Any, list[np.ndarray]]:
        info = self.info
        x = np.ascontiguousarray(images, dtype=np.float32)
        if x.size != n_images * info.inputs:
            raise ArgumentError(f"expected {n_images} images of {info.channels}x{info.height}x"
                                f"{info.width} ({n_images * info.inputs} floats), got shape {x.shape}")
        keep = [x]
        truth_ptr = ffi.NULL
        size = self.truth_size
        if size:
            if truth is None:
                raise ArgumentError("this network's loss layers need truth")
            y = np.ascontiguousarray(truth, dtype=np.float32)
            if y.size != n_images * size:
                raise ArgumentError(f"expected truth of {n_images} x {size} floats, got shape "
                                    f"{y.shape}")
            keep.append(y)
            truth_ptr = ffi.from_buffer("float[]", y)
        return ffi.from_buffer("float[]", x), truth_ptr, keep

    @property
    def truth_size(self) -> int:
        """Truth floats per image the loss layers read (5 per box: x, y, w, h, class)."""
        return int(lib.dn_network_truth_size(self.handle))

    @property
    def images_per_step(self) -> int:
        """Images one train_step consumes: batch * subdivisions."""
        return int(lib.dn_network_images_per_step(self.handle))

    @property
    def current_batch(self) -> int:
        """darknet's iteration number: seen / (batch * subdivisions)."""
        return int(lib.dn_network_current_batch(self.handle))

    def learning_rate(self, batch_num: int | None = None) -> float:
        """darknet's get_current_rate at `batch_num` (default: now)."""
        with self._lock:
            n = self.current_batch if batch_num is None else batch_num
            return float(lib.dn_network_learning_rate(self.handle, n))

    def train_params(self) -> dict[str, float | int]:
        raw = ffi.new("dn_train_params *")
        check(lib.dn_network_get_train_params(self.handle, raw))
        return {name: getattr(raw, name) for name in (
            "learning_rate", "momentum", "decay", "batch", "subdivisions", "max_batches",
            "burn_in", "power", "jitter", "hue", "saturation", "exposure", "angle", "random",
            "max_boxes")}

    def set_max_batches(self, max_batches: int) -> None:
        with self._lock:
            check(lib.dn_network_set_max_batches(self.handle, max_batches))

    def seed(self, seed: int) -> None:
        """Seed the engine's generator (initial weights, dropout, random policy)."""
        with self._lock:
            check(lib.dn_network_seed(self.handle, seed))

    def train_step(self, images: np.ndarray, truth: np.ndarray | None) -> "TrainStepResult":
        """darknet's train_network on batch * subdivisions images: one
        forward/backward per subdivision, then one SGD update."""
        with self._lock:
            self._sync_views()
            x, y, keep = self._training_arrays(images, truth, self.images_per_step)
            raw = ffi.new("dn_train_result *")
            check(lib.dn_network_train_step(self.handle, x, y, raw))
            del keep
            return TrainStepResult.from_c(raw)

    def forward_backward(self, images: np.ndarray, truth: np.ndarray | None) -> float:
        """One training-mode forward/backward on `batch` images; gradients are
        accumulated (not applied).  Returns darknet's cost."""
        with self._lock:
            self._sync_views()
            x, y, keep = self._training_arrays(images, truth, self.info.batch)
            loss = ffi.new("float *")
            check(lib.dn_network_forward_backward(self.handle, x, y, loss))
            del keep
            return float(loss[0])

    def update(self) -> float:
        """Apply the accumulated gradients (darknet's SGD); returns the rate."""
        with self._lock:
            rate = ffi.new("float *")
            check(lib.dn_network_update(self.handle, rate))
            return float(rate[0])

    def zero_grads(self) -> None:
        with self._lock:
            check(lib.dn_network_zero_grads(self.handle))

    def grads(self, index: int) -> dict[str, np.ndarray]:
        """Views of layer `index`'s accumulated gradients (negative, darknet's
        sign: what the update adds), same keys and layout as params()."""
        result: dict[str, np.ndarray] = {}
        data = ffi.new("float **")
        count = ffi.new("size_t *")
        for name in ("biases", "scales", "weights"):
            check(lib.dn_network_layer_grad(self.handle, index, PARAM_KINDS[name], data, count))
            if count[0]:
                result[name] = self._views.array(data[0], int(count[0]), kind="params", writeable=True)
        return result

    def delta(self, index: int) -> np.ndarray:
        """Copy of layer `index`'s delta (negative gradient of the loss with
        respect to its output) after the last forward/backward."""
        data = ffi.new("const float **")
        count = ffi.new("size_t *")
        check(lib.dn_network_layer_delta(self.handle, index, data, count))
        if not count[0]:
            raise ArgumentError("the network was built for inference: no deltas")
        layer = self.layer(index)
        return self._view(data[0], (self.info.batch, *layer.output_shape), True)

    def input_delta(self) -> np.ndarray:
        """Negative gradient of the loss w.r.t. the network input after the
        last backward (kept from the first call of this method on)."""
        data = ffi.new("const float **")
        count = ffi.new("size_t *")
        check(lib.dn_network_input_delta(self.handle, data, count))
        return self._view(data[0], self.input_shape, True)

    def __repr__(self) -> str:
        try:
            i = self.info
        except DarknetError:
            return "<Network (closed)>"
        return (f"<Network {self.cfg_path.name}: {i.n_layers} layers, input "
                f"{i.channels}x{i.height}x{i.width}, batch {i.batch}, {i.bflops:.3f} BFLOPs>")
