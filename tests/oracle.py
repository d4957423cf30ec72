"""pjreddie darknet as the reference: Debian's `darknet` package
(/usr/lib/darknet/libdarknet.so and its header) driven through a C shim
(tests/oracle/darknet_oracle.c) compiled here at test time and loaded with
ctypes.  Tests that need it skip with the reason where it is missing (CI
installs it, so nothing is skipped there)."""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

DARKNET_DIR = Path(os.environ.get("PYDARKNET_ORACLE_DIR", "/usr/lib/darknet"))
SHIM_SOURCES = sorted((Path(__file__).parent / "oracle").glob("*.c"))

# our section names -> darknet's LAYER_TYPE names (values read from its header)
_LAYER_TYPE_NAMES = {
    "convolutional": "CONVOLUTIONAL", "connected": "CONNECTED", "maxpool": "MAXPOOL",
    "softmax": "SOFTMAX", "dropout": "DROPOUT", "crop": "CROP", "route": "ROUTE", "cost": "COST",
    "avgpool": "AVGPOOL", "shortcut": "SHORTCUT", "region": "REGION", "yolo": "YOLO",
    "reorg": "REORG", "upsample": "UPSAMPLE",
}


def _darknet_layer_types() -> dict[str, int]:
    header = DARKNET_DIR / "include" / "darknet.h"
    if not header.exists():
        return {}
    text = header.read_text()
    body = re.search(r"typedef enum\s*\{([^}]*)\}\s*LAYER_TYPE;", text)
    if not body:
        return {}
    names = [n.strip() for n in body.group(1).split(",") if n.strip()]
    values = {name: i for i, name in enumerate(names)}
    return {ours: values[theirs] for ours, theirs in _LAYER_TYPE_NAMES.items() if theirs in values}


DARKNET_LAYER_TYPES = _darknet_layer_types()

_FLOAT_P = ctypes.POINTER(ctypes.c_float)


def _as_float_pointer(array: np.ndarray) -> "ctypes._Pointer[ctypes.c_float]":
    return array.ctypes.data_as(_FLOAT_P)


@lru_cache(maxsize=1)
def _compile() -> Path:
    lib = DARKNET_DIR / "libdarknet.so"
    header = DARKNET_DIR / "include" / "darknet.h"
    if not lib.exists() or not header.exists():
        pytest.skip(f"needs pjreddie darknet (apt-get install darknet): {lib} not found")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in SHIM_SOURCES)).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"pydarknet-oracle-{digest}.so"
    if not out.exists():
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(tmp), *map(str, SHIM_SOURCES),
                        f"-I{header.parent}", f"-L{DARKNET_DIR}", "-ldarknet",
                        f"-Wl,-rpath,{DARKNET_DIR}"], check=True)
        tmp.rename(out)
    return out


class Darknet:
    """The reference implementation (one loaded library per process)."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL(str(_compile()))
        lib = self.lib
        lib.oracle_fpu_default()  # undo libdarknet's -Ofast flush-to-zero (see the shim)
        lib.oracle_load.restype = ctypes.c_void_p
        lib.oracle_load.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
                                    ctypes.c_char_p]
        lib.oracle_free.argtypes = [ctypes.c_void_p]
        for name in ("oracle_n_layers", "oracle_net_w", "oracle_net_h"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_int
        lib.oracle_layer_info.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                          ctypes.POINTER(ctypes.c_int)]
        lib.oracle_predict.restype = _FLOAT_P
        lib.oracle_predict.argtypes = [ctypes.c_void_p, _FLOAT_P]
        lib.oracle_layer_output.restype = _FLOAT_P
        lib.oracle_layer_output.argtypes = [ctypes.c_void_p, ctypes.c_int]
        for name in ("oracle_resize", "oracle_letterbox"):
            getattr(lib, name).argtypes = [_FLOAT_P] + [ctypes.c_int] * 5 + [_FLOAT_P]
        lib.oracle_train_forward.restype = ctypes.c_float
        lib.oracle_train_forward.argtypes = [ctypes.c_void_p, _FLOAT_P, _FLOAT_P, ctypes.c_longlong]
        lib.oracle_backward.argtypes = [ctypes.c_void_p, _FLOAT_P]
        lib.oracle_train_network.restype = ctypes.c_float
        lib.oracle_train_network.argtypes = [ctypes.c_void_p, _FLOAT_P, _FLOAT_P, ctypes.c_int]
        lib.oracle_update.argtypes = [ctypes.c_void_p]
        lib.oracle_current_rate.restype = ctypes.c_float
        lib.oracle_current_rate.argtypes = [ctypes.c_void_p]
        lib.oracle_set_seen.argtypes = [ctypes.c_void_p, ctypes.c_longlong]
        lib.oracle_seen.restype = ctypes.c_longlong
        lib.oracle_seen.argtypes = [ctypes.c_void_p]
        lib.oracle_truths.restype = ctypes.c_int
        lib.oracle_truths.argtypes = [ctypes.c_void_p]
        lib.oracle_layer_array.restype = ctypes.c_int
        lib.oracle_layer_array.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, _FLOAT_P,
                                           ctypes.c_int]
        lib.oracle_layer_cost.restype = ctypes.c_float
        lib.oracle_layer_cost.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.oracle_use_gpu_region_backward.restype = ctypes.c_int
        lib.oracle_use_gpu_region_backward.argtypes = [ctypes.c_void_p]
        lib.oracle_detect.restype = ctypes.c_int
        lib.oracle_detect.argtypes = [ctypes.c_void_p, _FLOAT_P, ctypes.c_int, ctypes.c_int,
                                      ctypes.c_float, ctypes.c_float, ctypes.c_float,
                                      ctypes.c_int, ctypes.c_int, _FLOAT_P, ctypes.c_int]

    def load(self, cfg: Path, weights: Path | None = None, batch: int = 1) -> "DarknetNet":
        with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
            handle = self.lib.oracle_load(os.fsencode(cfg),
                                          os.fsencode(weights) if weights else b"", batch,
                                          os.fsencode(log.name))
            printed = Path(log.name).read_text(errors="replace")
        return DarknetNet(self, handle, printed)

    def resize(self, chw: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
        c, h, w = chw.shape
        src = np.ascontiguousarray(chw, dtype=np.float32)
        out = np.empty((c, out_h, out_w), np.float32)
        self.lib.oracle_resize(_as_float_pointer(src), w, h, c, out_w, out_h, _as_float_pointer(out))
        return out

    def letterbox(self, chw: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
        c, h, w = chw.shape
        src = np.ascontiguousarray(chw, dtype=np.float32)
        out = np.empty((c, out_h, out_w), np.float32)
        self.lib.oracle_letterbox(_as_float_pointer(src), w, h, c, out_w, out_h,
                                  _as_float_pointer(out))
        return out


class DarknetNet:
    def __init__(self, darknet: Darknet, handle: int, printed: str) -> None:
        self.darknet = darknet
        self.lib = darknet.lib
        self.handle = handle
        self.printed = printed  # darknet's layer table as it printed it

    def printed_bflops(self) -> list[float]:
        """The BFLOPs darknet printed for each convolutional layer, in order."""
        return [float(line.split()[-2]) for line in self.printed.splitlines()
                if line.rstrip().endswith("BFLOPs")]

    def close(self) -> None:
        if self.handle:
            self.lib.oracle_free(self.handle)
            self.handle = 0

    def __enter__(self) -> "DarknetNet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def n_layers(self) -> int:
        return self.lib.oracle_n_layers(self.handle)

    def layer_info(self, i: int) -> dict[str, int]:
        info = (ctypes.c_int * 6)()
        self.lib.oracle_layer_info(self.handle, i, info)
        return {"type": info[0], "out_w": info[1], "out_h": info[2], "out_c": info[3],
                "outputs": info[4], "inputs": info[5]}

    def predict(self, x: np.ndarray) -> np.ndarray:
        src = np.ascontiguousarray(x, dtype=np.float32)
        out = self.lib.oracle_predict(self.handle, _as_float_pointer(src))
        last = self.n_layers - 1
        while last > 0 and self.layer_info(last)["type"] == DARKNET_LAYER_TYPES["cost"]:
            last -= 1
        return np.ctypeslib.as_array(out, (self.layer_info(last)["outputs"],)).copy()

    def layer_output(self, i: int) -> np.ndarray:
        n = self.layer_info(i)["outputs"]
        return np.ctypeslib.as_array(self.lib.oracle_layer_output(self.handle, i), (n,)).copy()

    # ---- training ---------------------------------------------------------------------

    LAYER_ARRAYS = ("output", "delta", "biases", "scales", "weights", "bias_updates",
                    "scale_updates", "weight_updates", "rolling_mean", "rolling_variance")

    def train_forward(self, x: np.ndarray, truth: np.ndarray | None, seen_before: int) -> float:
        """darknet's training forward (seen += batch first); returns net->cost."""
        src = np.ascontiguousarray(x, dtype=np.float32)
        if truth is None:
            return float(self.lib.oracle_train_forward(self.handle, _as_float_pointer(src), None,
                                                       seen_before))
        y = np.zeros(self.truths * (src.size // self.inputs), np.float32)
        y[:np.asarray(truth).size] = np.asarray(truth, np.float32).ravel()
        return float(self.lib.oracle_train_forward(self.handle, _as_float_pointer(src),
                                                   _as_float_pointer(y), seen_before))

    def backward(self, input_delta_size: int = 0) -> np.ndarray | None:
        """darknet's backward_network; with input_delta_size, the first layer
        is given a zeroed input delta of that many floats, returned."""
        if not input_delta_size:
            self.lib.oracle_backward(self.handle, None)
            return None
        delta = np.zeros(input_delta_size, np.float32)
        self.lib.oracle_backward(self.handle, _as_float_pointer(delta))
        return delta

    def train_network(self, images: np.ndarray, truths: np.ndarray) -> float:
        """darknet's train_network on len(images) images (updates included)."""
        x = np.ascontiguousarray(images, dtype=np.float32).reshape(len(images), -1)
        y = np.ascontiguousarray(truths, dtype=np.float32).reshape(len(images), -1)
        assert y.shape[1] == self.truths, (y.shape, self.truths)
        return float(self.lib.oracle_train_network(self.handle, _as_float_pointer(x),
                                                   _as_float_pointer(y), len(x)))

    def update(self) -> None:
        self.lib.oracle_update(self.handle)

    def current_rate(self) -> float:
        return float(self.lib.oracle_current_rate(self.handle))

    @property
    def seen(self) -> int:
        return int(self.lib.oracle_seen(self.handle))

    @seen.setter
    def seen(self, value: int) -> None:
        self.lib.oracle_set_seen(self.handle, value)

    @property
    def truths(self) -> int:
        """Truth floats per image (net->truths)."""
        return int(self.lib.oracle_truths(self.handle))

    @property
    def inputs(self) -> int:
        return int(self.layer_info(0)["inputs"])

    def layer_array(self, i: int, name: str, n: int) -> np.ndarray | None:
        """n floats of one of layer i's arrays (LAYER_ARRAYS), None if it has none."""
        out = np.zeros(n, np.float32)
        status = self.lib.oracle_layer_array(self.handle, i, self.LAYER_ARRAYS.index(name),
                                             _as_float_pointer(out), n)
        return None if status else out

    def layer_cost(self, i: int) -> float:
        return float(self.lib.oracle_layer_cost(self.handle, i))

    def use_gpu_region_backward(self) -> int:
        """Give every [region] layer darknet's GPU backward (see the shim)."""
        return int(self.lib.oracle_use_gpu_region_backward(self.handle))

    def detect(self, rgb_chw: np.ndarray, thresh: float = .5, hier: float = .5, nms: float = .45,
               nms_kind: int = 0, letterbox: bool = True) -> np.ndarray:
        """Rows (class, prob, x, y, w, h, objectness) in pixels."""
        c, h, w = rgb_chw.shape
        src = np.ascontiguousarray(rgb_chw, dtype=np.float32)
        rows = np.zeros((4096, 7), np.float32)
        n = self.lib.oracle_detect(self.handle, _as_float_pointer(src), w, h, thresh, hier, nms,
                                   nms_kind, int(letterbox), _as_float_pointer(rows), len(rows))
        return rows[:n].copy()


@lru_cache(maxsize=1)
def darknet() -> Darknet:
    """The reference, or skip the test."""
    return Darknet()


def with_batch_one(cfg_text: str) -> str:
    """A cfg's text with batch=1 and subdivisions=1 in [net] (cheap to run)."""
    out, in_net = [], False
    for line in cfg_text.splitlines():
        stripped = line.replace(" ", "").replace("\t", "")
        if stripped.startswith("["):
            in_net = stripped in ("[net]", "[network]")
        elif in_net and (stripped.startswith("batch=") or stripped.startswith("subdivisions=")):
            line = stripped.split("=")[0] + "=1"
        out.append(line)
    return "\n".join(out) + "\n"
