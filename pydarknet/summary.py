"""darknet's layer table (what `darknet detector test` prints while it
loads a network), built from the engine's layer information."""
from __future__ import annotations

from .network import LayerInfo, Network

HEADER = "layer     filters    size              input                output"


def _shape(c: int, h: int, w: int) -> str:
    return f"{w:4d} x{h:4d} x{c:4d}"


def layer_line(layer: LayerInfo, layers: list[LayerInfo]) -> str:
    """One line of darknet's table, without the index column."""
    in_c, in_h, in_w = layer.input_shape
    out_c, out_h, out_w = layer.output_shape
    t = layer.type
    if t == "convolutional":
        return (f"conv  {layer.filters:5d} {layer.size:2d} x{layer.size:2d} /{layer.stride:2d}  "
                f"{_shape(in_c, in_h, in_w)}   ->  {_shape(out_c, out_h, out_w)}  "
                f"{layer.bflops:5.3f} BFLOPs")
    if t == "maxpool":
        return (f"max          {layer.size} x {layer.size} / {layer.stride}  "
                f"{_shape(in_c, in_h, in_w)}   ->  {_shape(out_c, out_h, out_w)}")
    if t == "avgpool":
        return f"avg                     {_shape(in_c, in_h, in_w)}   ->  {out_c:4d}"
    if t == "route":
        return "route " + "".join(f" {i}" for i in layer.inputs_from)
    if t == "reorg":
        return (f"reorg              /{layer.stride:2d}  {_shape(in_c, in_h, in_w)}   ->  "
                f"{_shape(out_c, out_h, out_w)}")
    if t == "shortcut":
        src = layers[layer.inputs_from[0]]
        c2, h2, w2 = src.output_shape
        return (f"res  {src.index:3d}                {_shape(c2, h2, w2)}   ->  "
                f"{_shape(out_c, out_h, out_w)}")
    if t == "upsample":
        word = "upsample" if layer.stride > 0 else "downsample"
        pad = " " * (19 - len(word))
        return (f"{word}{pad}{abs(layer.stride):2d}x  {_shape(in_c, in_h, in_w)}   ->  "
                f"{_shape(out_c, out_h, out_w)}")
    if t == "region":
        return "detection"
    if t == "yolo":
        return "yolo"
    if t == "softmax":
        return f"softmax                                        {layer.outputs:4d}"
    if t == "connected":
        inputs = in_c * in_h * in_w
        return f"connected                            {inputs:4d}  ->  {layer.outputs:4d}"
    if t == "dropout":
        return (f"dropout       p = {layer.probability:.2f}               "
                f"{layer.outputs:4d}  ->  {layer.outputs:4d}")
    if t == "cost":
        return f"cost                                           {layer.outputs:4d}"
    if t == "crop":
        return f"Crop Layer: {in_h} x {in_w} -> {out_h} x {out_w} x {out_c} image"
    return t


def summary_lines(network: Network) -> list[str]:
    """darknet's table, one string per line, and a total BFLOPs line."""
    layers = network.layers
    lines = [HEADER]
    lines += [f"{layer.index:5d} {layer_line(layer, layers)}" for layer in layers]
    lines.append(f"Total BFLOPs {network.info.bflops:.3f}")
    return lines
