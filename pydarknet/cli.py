"""The `pydarknet` command line (click)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from .cli_data import register_data_commands
from .errors import DarknetError


class DarknetCommandGroup(click.Group):
    """Turns DarknetError into a clean one-line message and exit status 1."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except DarknetError as exc:
            click.secho(f"error: {exc}", err=True, fg="red")
            ctx.exit(1)


@click.group(cls=DarknetCommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pydarknet-engine", prog_name="pydarknet")
def main() -> None:
    """pydarknet: darknet's networks, files and numbers, from Python.

    Start with `pydarknet demo` (trains a small detector on generated data),
    or `pydarknet detect CFG WEIGHTS IMAGE` with a darknet model.
    """


@main.command()
@click.argument("cfg", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--width", type=int, default=0, help="Override the cfg's input width.")
@click.option("--height", type=int, default=0, help="Override the cfg's input height.")
def summary(cfg: Path, width: int, height: int) -> None:
    """Print darknet's layer table for CFG (filters, size, input -> output,
    BFLOPs) and the total BFLOPs."""
    from .network import Network
    from .summary import summary_lines

    with Network(cfg, width=width, height=height, threads=1) as net:
        for line in summary_lines(net):
            click.echo(line)


@main.command()
@click.argument("cfg", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("weights", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--names", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Class names (.names); default COCO's for 80 classes, VOC's for 20.")
@click.option("--thresh", default=.5, show_default=True, help="Confidence threshold.")
@click.option("--hier-thresh", default=.5, show_default=True, help="darknet's hier_thresh.")
@click.option("--nms", default=.45, show_default=True, help="NMS IoU threshold (0 = off).")
@click.option("--nms-kind", type=click.Choice(["sort", "obj"]), default="sort", show_default=True,
              help="darknet's do_nms_sort (the detect command) or do_nms_obj (darknet.py).")
@click.option("--no-letterbox", is_flag=True, help="Plain resize instead of letterbox.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per image per line instead of darknet's text.")
@click.option("--save-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("predictions"), show_default=True,
              help="Where annotated images are written.")
@click.option("--no-save", is_flag=True, help="Do not write annotated images.")
@click.option("--threads", default=0, help="Worker threads (0 = all CPUs).")
def detect(cfg: Path, weights: Path, images: tuple[Path, ...], names: Path | None, thresh: float,
           hier_thresh: float, nms: float, nms_kind: str, no_letterbox: bool, as_json: bool,
           save_dir: Path, no_save: bool, threads: int) -> None:
    """Detect objects in IMAGES with a darknet model (CFG, WEIGHTS).

    Prints darknet's lines ("dog: 56%") per image, or JSON with --json:
    {"image", "detections": [{"class_id", "name", "confidence",
    "box": {"x", "y", "w", "h"}}]} with the box centre and size in pixels.
    """
    import cv2

    from .detect import Detector
    from .draw import draw_detections
    from .errors import ImageError

    with Detector(cfg, weights, names, threads=threads) as detector:
        if not no_save:
            save_dir.mkdir(parents=True, exist_ok=True)
        for image in images:
            frame = cv2.imread(str(image), cv2.IMREAD_COLOR)
            if frame is None:
                raise ImageError(f"cannot decode image '{image}'")
            start = time.perf_counter()
            found = detector.detect(frame, thresh=thresh, hier_thresh=hier_thresh, nms=nms,
                                    letterbox=not no_letterbox, nms_kind=nms_kind)  # type: ignore[arg-type]
            elapsed = time.perf_counter() - start
            if as_json:
                click.echo(json.dumps({"image": str(image),
                                       "detections": [d.to_dict() for d in found]}))
            else:
                click.echo(f"{image}: Predicted in {elapsed:f} seconds.")
                for d in found:
                    click.echo(f"{d.name}: {d.confidence * 100:.0f}%")
            if not no_save:
                out = save_dir / f"{image.stem}.jpg"
                cv2.imwrite(str(out), draw_detections(frame, found, detector.classes))


register_data_commands(main)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
