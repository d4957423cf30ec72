"""darknet .weights <-> a `DarknetModel`'s tensors, and .pt files.

The .weights format (darknet_src/src/weights.c, ../shared/DARKNET-NOTES.md):

    int32 major, minor, revision
    seen: uint64 when major*10 + minor >= 2 and both < 1000, else uint32
    per layer with parameters, in order:
      [convolutional] biases[n], (BN: scales[n], rolling_mean[n],
                      rolling_variance[n]), weights[n][c/groups][k][k]
                      (stored transposed, [c/groups*k*k][n], with flipped=1)
      [connected]     biases[n], weights[n][inputs] (stored transposed,
                      [inputs][n], when major > 1000 or minor > 1000),
                      (BN triple)

The engine's per-layer flags are honoured the same way: dontload=1 layers
are skipped when reading, dontsave=1 layers when writing, and
dontloadscales=1 leaves the BN triple out of both.  The header is kept
(model.weights_version, model.seen) so that darknet -> PyTorch -> darknet
writes the same bytes.

Mapping to the modules' tensors: biases -> conv.bias / linear.bias, or
bn.bias with batch_normalize=1; scales -> bn.weight; rolling_mean ->
bn.running_mean; rolling_variance -> bn.running_var; weights ->
conv.weight (filters, c/groups, k, k: darknet's order) / linear.weight
(outputs, inputs).

A .pt file (`save_pt`) is a `torch.save`d dict:

    format          "pydarknet.torch"
    format_version  1
    cfg             the cfg text (as read, comments kept)
    cfg_name        the cfg's file name, for messages
    state_dict      the model's state dict
    weights_version [major, minor, revision]
    seen            int
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ..cfg import Cfg
from ..errors import DarknetIOError, WeightsError
from ..files import atomic_write
from .layers import Connected, Convolutional

if TYPE_CHECKING:
    from .model import DarknetModel

__all__ = ["PT_FORMAT", "WeightsHeader", "load_darknet_weights", "load_pt", "read_header",
           "save_darknet_weights", "save_pt"]

PT_FORMAT = "pydarknet.torch"
PT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class WeightsHeader:
    major: int
    minor: int
    revision: int
    seen: int

    @property
    def seen_is_64bit(self) -> bool:
        return seen_is_64bit(self.major, self.minor)

    @property
    def size(self) -> int:
        """Bytes the header takes in the file."""
        return 20 if self.seen_is_64bit else 16

    @property
    def connected_transposed(self) -> bool:
        return self.major > 1000 or self.minor > 1000

    def to_bytes(self) -> bytes:
        head = struct.pack("<iii", self.major, self.minor, self.revision)
        if self.seen_is_64bit:
            return head + struct.pack("<Q", self.seen & 0xFFFFFFFFFFFFFFFF)
        return head + struct.pack("<I", self.seen & 0xFFFFFFFF)


def seen_is_64bit(major: int, minor: int) -> bool:
    return major * 10 + minor >= 2 and major < 1000 and minor < 1000


def read_header(path: str | os.PathLike[str]) -> WeightsHeader:
    """The header of a .weights file (WeightsError if it is too short)."""
    data = _read_bytes(Path(path))
    return _parse_header(Path(path), data)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DarknetIOError(f"cannot open weights '{path}': {e.strerror or e}") from None


def _parse_header(path: Path, data: bytes) -> WeightsHeader:
    if len(data) < 12:
        raise WeightsError(f"{path}: too short for a weights header ({len(data)} bytes, need at "
                           "least 16)")
    major, minor, revision = struct.unpack_from("<iii", data, 0)
    if seen_is_64bit(major, minor):
        if len(data) < 20:
            raise WeightsError(f"{path}: too short for a version {major}.{minor} weights header "
                               f"({len(data)} bytes, need 20)")
        (seen,) = struct.unpack_from("<Q", data, 12)
    else:
        if len(data) < 16:
            raise WeightsError(f"{path}: too short for a version {major}.{minor} weights header "
                               f"({len(data)} bytes, need 16)")
        (seen,) = struct.unpack_from("<I", data, 12)
    return WeightsHeader(major, minor, revision, seen)


# ---- the payload of one layer ----------------------------------------------------------------


@dataclass
class _Block:
    """One array of a layer's payload: the tensor it fills, and the 2-D
    shape it has in the file when stored transposed (rows, cols of the
    file's matrix; the tensor holds its transpose)."""

    what: str
    tensor: Tensor
    transposed_from: tuple[int, int] | None = None


def _blocks(module: torch.nn.Module, header: WeightsHeader, skip_bn: bool) -> list[_Block]:
    bn = getattr(module, "bn", None)
    bn_blocks = [] if bn is None or skip_bn else [
        _Block("batch-norm scales", bn.weight), _Block("rolling mean", bn.running_mean),
        _Block("rolling variance", bn.running_var)]
    if isinstance(module, Convolutional):
        biases = bn.bias if bn is not None else module.conv.bias
        weight = module.conv.weight
        filters = weight.shape[0]
        flipped = (weight[0].numel(), filters) if module.flipped else None
        return [_Block("biases", biases), *bn_blocks, _Block("weights", weight, flipped)]
    if isinstance(module, Connected):
        biases = bn.bias if bn is not None else module.linear.bias
        weight = module.linear.weight
        transposed = ((weight.shape[1], weight.shape[0]) if header.connected_transposed
                      else None)
        return [_Block("biases", biases), _Block("weights", weight, transposed), *bn_blocks]
    return []


def _payload_layers(model: "DarknetModel", header: WeightsHeader, flag: str, cutoff: int
                    ) -> list[tuple[int, list[_Block]]]:
    """(index, blocks) of each layer with parameters in [0, cutoff) that the
    file holds (layers with `flag`=1 -- dontload or dontsave -- are left out)."""
    out = []
    for i, module in enumerate(model.layers[:cutoff]):
        options = model.section_options[i]
        if options[flag]:
            continue
        blocks = _blocks(module, header, bool(options["dontloadscales"]))
        if blocks:
            out.append((i, blocks))
    return out


def _layer_bytes(blocks: list[_Block]) -> int:
    return 4 * sum(b.tensor.numel() for b in blocks)


def _where(model: "DarknetModel", index: int) -> str:
    section = model.shapes[index].section
    return f"layer {index} ([{section.name}] at cfg line {section.line})"


# ---- read -----------------------------------------------------------------------------------


def load_darknet_weights(model: "DarknetModel", path: str | os.PathLike[str], *,
                         partial: bool = False, cutoff: int = 0) -> int:
    """Load a .weights file into `model`.

    As the engine: with partial=False the file must fit the cfg exactly
    (WeightsError naming the layer where a short file runs out, or how many
    bytes are left over); partial=True accepts a file that ends at a layer
    boundary (pretrained backbones such as darknet53.conv.74), and `cutoff`
    limits loading to layers [0, cutoff).  The header's version and seen
    are kept on the model.  Returns n, as the engine: layers [0, n) hold the
    file's values or have none (all layers for a whole file; the cutoff; or
    the first layer with weights that a short file did not reach).
    """
    p = Path(path)
    data = _read_bytes(p)
    header = _parse_header(p, data)
    n_layers = len(model.layers)
    end = cutoff if 0 < cutoff <= n_layers else n_layers
    layers = _payload_layers(model, header, "dontload", end)
    expected = header.size + sum(_layer_bytes(b) for _, b in layers)
    cfg_name = model.cfg.source or "<cfg>"
    if not partial and len(data) != expected:
        at = header.size
        for index, blocks in layers:
            at += _layer_bytes(blocks)
            if at > len(data):
                raise WeightsError(f"{p}: the cfg '{cfg_name}' needs {expected} bytes of weights, "
                                   f"the file has {len(data)}: it runs out in "
                                   f"{_where(model, index)}")
        raise WeightsError(f"{p}: the cfg '{cfg_name}' needs {expected} bytes of weights, the "
                           f"file has {len(data)} ({len(data) - expected} bytes too many: a "
                           "different cfg, or a different filters= count?)")
    offset = header.size
    covered = end
    # read everything first, then copy: a failure leaves the model unchanged
    arrays: list[tuple[_Block, np.ndarray]] = []
    for index, blocks in layers:
        if partial and offset == len(data):
            covered = index  # the file ends at a layer boundary
            break
        for block in blocks:
            count = block.tensor.numel()
            if offset + 4 * count > len(data):
                raise WeightsError(f"{p}: truncated in {_where(model, index)} while reading its "
                                   f"{block.what}: the cfg needs {expected} bytes, the file has "
                                   f"{len(data)}")
            values = np.frombuffer(data, dtype="<f4", count=count, offset=offset)
            offset += 4 * count
            if block.transposed_from is not None:
                values = values.reshape(block.transposed_from).T
            arrays.append((block, values.reshape(tuple(block.tensor.shape))))
    with torch.no_grad():
        for block, values in arrays:
            block.tensor.copy_(torch.from_numpy(np.array(values, dtype=np.float32)))
    model.weights_version = (header.major, header.minor, header.revision)
    model.seen = header.seen
    return covered


# ---- write ----------------------------------------------------------------------------------


def darknet_weights_bytes(model: "DarknetModel") -> bytes:
    """The .weights file of `model` (header from model.weights_version and
    model.seen) as bytes."""
    major, minor, revision = model.weights_version
    header = WeightsHeader(int(major), int(minor), int(revision), int(model.seen))
    parts = [header.to_bytes()]
    for _, blocks in _payload_layers(model, header, "dontsave", len(model.layers)):
        for block in blocks:
            values = block.tensor.detach().to("cpu", torch.float32).numpy()
            if block.transposed_from is not None:
                rows, cols = block.transposed_from
                values = values.reshape(cols, rows).T
            parts.append(np.ascontiguousarray(values, dtype="<f4").tobytes())
    return b"".join(parts)


def save_darknet_weights(model: "DarknetModel", path: str | os.PathLike[str]) -> Path:
    """Write `model` as darknet .weights (atomically: temporary file +
    rename), keeping its header version and seen."""
    data = darknet_weights_bytes(model)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


# ---- .pt files ------------------------------------------------------------------------------


def save_pt(model: "DarknetModel", path: str | os.PathLike[str]) -> Path:
    """Write a .pt file: the state dict, the cfg text, the .weights header
    version and seen (see the module doc)."""
    source = model.cfg.source
    payload = {
        "format": PT_FORMAT,
        "format_version": PT_FORMAT_VERSION,
        "cfg": model.cfg.to_text(),
        "cfg_name": source.name if source else "",
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "weights_version": [int(v) for v in model.weights_version],
        "seen": int(model.seen),
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def is_pt_file(path: str | os.PathLike[str]) -> bool:
    """Whether `path` looks like a torch.save file (a zip archive)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def load_pt(path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
            ) -> "DarknetModel":
    """The model saved in a .pt file by `save_pt`, in eval mode."""
    from .model import DarknetModel

    p = Path(path)
    if not p.is_file():
        raise DarknetIOError(f"cannot open '{p}': no such file")
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch raises many kinds)
        raise WeightsError(f"{p}: not a pydarknet .pt file ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != PT_FORMAT:
        raise WeightsError(f"{p}: not a pydarknet .pt file (write one with `pydarknet convert "
                           "CFG WEIGHTS --to pytorch OUT.pt` or DarknetModel.save)")
    if payload.get("format_version", 0) > PT_FORMAT_VERSION:
        raise WeightsError(f"{p}: written by a newer pydarknet (format version "
                           f"{payload['format_version']})")
    name = payload.get("cfg_name") or p.with_suffix(".cfg").name
    cfg = Cfg.parse(payload["cfg"], source=f"{p.name}:{name}")
    model = DarknetModel(cfg)
    model.load_state_dict(payload["state_dict"], strict=True)
    major, minor, revision = (int(v) for v in payload["weights_version"])
    model.weights_version = (major, minor, revision)
    model.seen = int(payload["seen"])
    return model.eval()
