"""`pydarknet convert`: darknet <-> PyTorch (.pt) and ONNX.

Registered on the main group by `register_convert_command(group)`.  This
module imports neither torch nor the engine: the command loads
pydarknet.torch when it runs, and without PyTorch it says which extra to
install and exits with status 1.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .errors import DarknetError

__all__ = ["convert", "register_convert_command"]

TARGETS = ("pytorch", "darknet", "onnx")
_INSTALL_HINT = ('pip install "pydarknet-engine[torch]" (or pip install ".[torch]" from a '
                 "pydarknet checkout)")


def _fail(message: str) -> None:
    click.secho(f"error: {message}", err=True, fg="red")
    sys.exit(1)


def _import_torch_support(target: str) -> None:
    """Import what `target` needs, or exit 1 naming the extra to install."""
    needed = ["torch"] + (["onnx", "onnxscript"] if target == "onnx" else [])
    missing = []
    for name in needed:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        what = "ONNX export" if target == "onnx" else "converting to and from PyTorch"
        _fail(f"{what} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
              f"not installed: {_INSTALL_HINT}")


def _is_pt(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
    except OSError:
        return False


def _split_paths(paths: tuple[Path, ...]) -> tuple[Path, Path | None, Path]:
    if len(paths) not in (2, 3):
        raise click.UsageError("expected SOURCE [WEIGHTS] OUT: a .pt file and OUT, or a cfg, "
                               "its .weights and OUT")
    source, out = paths[0], paths[-1]
    weights = paths[1] if len(paths) == 3 else None
    if not source.is_file():
        raise click.BadParameter(f"'{source}' does not exist", param_hint="SOURCE")
    if weights is not None and not weights.is_file():
        raise click.BadParameter(f"'{weights}' does not exist", param_hint="WEIGHTS")
    if _is_pt(source) and weights is not None:
        raise click.UsageError(f"{source} is a .pt file (it holds the weights): give SOURCE OUT "
                               "without WEIGHTS")
    return source, weights, out


@click.command("convert")
@click.argument("paths", nargs=-1, required=True, metavar="SOURCE [WEIGHTS] OUT",
                type=click.Path(path_type=Path))
@click.option("--to", "target", type=click.Choice(TARGETS), required=True,
              help="What to write: pytorch (.pt), darknet (.weights) or onnx (.onnx).")
@click.option("--cfg-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the cfg text (useful with --to darknet from a .pt file).")
@click.option("--opset", type=click.IntRange(min=18), default=18, show_default=True,
              help="ONNX opset (--to onnx): 18 or newer.")
@click.option("--decode", is_flag=True,
              help="--to onnx: export decoded boxes (B, N, 5 + classes) instead of the raw "
                   "outputs.")
@click.option("--width", type=click.IntRange(min=0), default=0,
              help="--to onnx: input width of the graph (default: the cfg's).")
@click.option("--height", type=click.IntRange(min=0), default=0,
              help="--to onnx: input height of the graph (default: the cfg's).")
def convert(paths: tuple[Path, ...], target: str, cfg_out: Path | None, opset: int,
            decode: bool, width: int, height: int) -> None:
    """Convert a darknet model to PyTorch, back to darknet, or to ONNX.

    \b
    SOURCE is either a darknet cfg followed by its WEIGHTS, or a .pt file
    written by `--to pytorch` (it holds the cfg and the weights):
      pydarknet convert yolov3-tiny.cfg yolov3-tiny.weights --to pytorch m.pt
      pydarknet convert m.pt --to darknet m.weights --cfg-out m.cfg
      pydarknet convert m.pt --to onnx m.onnx
      pydarknet convert yolov3-tiny.cfg yolov3-tiny.weights --to onnx m.onnx
    A cfg without WEIGHTS gives darknet's initial random weights.

    \b
    --to pytorch: a .pt file with the state dict, the cfg text, and the
      .weights header version and images-seen counter; load it with
      pydarknet.torch.DarknetModel.from_file.
    --to darknet: a .weights file; darknet -> pytorch -> darknet gives back
      the same bytes (header and seen included).
    --to onnx: the raw network outputs (what darknet's predict returns; one
      output per [yolo] layer), input "input" (batch, C, H, W) with a
      dynamic batch; --decode exports the decoded boxes instead.

    Needs the torch extra: pip install "pydarknet-engine[torch]".
    """
    source, weights, out = _split_paths(paths)
    _import_torch_support(target)
    try:
        _run(source, weights, out, target, cfg_out, opset, decode, width, height)
    except DarknetError as e:
        _fail(str(e))


def _run(source: Path, weights: Path | None, out: Path, target: str, cfg_out: Path | None,
         opset: int, decode: bool, width: int, height: int) -> None:
    from .torch import DarknetModel

    if _is_pt(source):
        model = DarknetModel.from_file(source)
    else:
        model = DarknetModel(source).eval()
        if weights is not None:
            model.load_darknet_weights(weights)
        else:
            click.echo(f"note: no WEIGHTS given: {source.name} gets darknet's initial random "
                       "weights", err=True)
    if target == "pytorch":
        model.save(out)
    elif target == "darknet":
        model.save_darknet_weights(out)
    else:
        from .torch.onnx import export_onnx

        export_onnx(model, out, opset=opset, decode=decode, width=width, height=height)
    if cfg_out is not None:
        model.cfg.write(cfg_out)
    major, minor, revision = model.weights_version
    click.echo(f"wrote {out} ({target}; {len(model.layers)} layers, weights version "
               f"{major}.{minor}.{revision}, seen {model.seen})")


def register_convert_command(group: click.Group) -> None:
    """Add `convert` to the CLI group (pydarknet.cli.main)."""
    group.add_command(convert)
