"""CLI commands of the data tools: `cfg new`, `data coco|voc|check|anchors|shapes`,
`map` and `valid`.  Everything here is pure Python except `map`/`valid`,
which import the engine (pydarknet.detect) when they run."""
from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .errors import DarknetError

F = TypeVar("F", bound=Callable[..., Any])

_EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_OUT_PATH = click.Path(path_type=Path)


def _friendly(fn: F) -> F:
    """Turn pydarknet errors into a one-line `error: ...` and exit status 1,
    as the main command group does (also where a command runs on its own)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DarknetError as e:
            click.secho(f"error: {e.message}", err=True, fg="red")
            raise click.exceptions.Exit(1) from None
    return wrapper  # type: ignore[return-value]


def _split_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.replace(" ", ",").split(",") if v.strip()]
    if not items:
        raise click.BadParameter("expected a comma-separated list")
    return items


def _status(progress: bool) -> Callable[[str], None] | None:
    """Status lines on stderr for long steps without a bar (terminal only)."""
    if not progress or not sys.stderr.isatty():
        return None
    return lambda line: click.echo(line + " ...", err=True)


_progress_option = click.option("--progress/--no-progress", default=True, show_default=True,
                                help="Progress bars (shown only on a terminal).")


# -- cfg -------------------------------------------------------------------------


@click.group("cfg")
def cfg_group() -> None:
    """Write darknet network descriptions (.cfg)."""


@cfg_group.command("new")
@click.argument("arch", type=click.Choice(["yolov2", "yolov2-tiny", "darknet19", "yolov3-tiny",
                                           "yolov2-voc", "yolov2-tiny-voc"]))
@click.option("--classes", type=click.IntRange(min=1), required=True, help="Number of classes.")
@click.option("--anchors", help="Anchors as 'w,h, w,h, ...': grid cells for yolov2*, pixels "
                                "for yolov3-tiny (as printed by `pydarknet data anchors`). "
                                "Default: darknet's.")
@click.option("--width", type=int, help="Network input width, a multiple of 32 "
                                        "[default: 416; darknet19: 256].")
@click.option("--height", type=int, help="Network input height [default: --width, or 416].")
@click.option("--batch", type=int, help="Images per update [default: 64; darknet19: 128].")
@click.option("--subdivisions", type=int, help="Mini-batches per batch [default: 8 for yolov2, "
                                               "2 for the others].")
@click.option("--out", "out", type=_OUT_PATH, required=True, help="The .cfg file to write.")
@_friendly
def cfg_new(arch: str, classes: int, anchors: str | None, width: int | None, height: int | None,
            batch: int | None, subdivisions: int | None, out: Path) -> None:
    """Write a darknet cfg for --classes classes, built like darknet's own
    cfg/ARCH.cfg (filters of the layers before [region]/[yolo] set from the
    class count and the number of anchors).

    \b
    Example:
      pydarknet cfg new yolov2-tiny --classes 3 --width 224 --height 224 --out shapes.cfg
    """
    from .builders import BUILDERS

    kwargs: dict[str, Any] = {"classes": classes}
    if width is not None and height is None:
        height = width
    elif height is not None and width is None:
        width = height
    for key, value in (("width", width), ("height", height), ("batch", batch),
                       ("subdivisions", subdivisions)):
        if value is not None:
            kwargs[key] = value
    if arch != "darknet19":
        if anchors is not None:
            kwargs["anchors"] = anchors
    elif anchors is not None:
        raise click.BadParameter("darknet19 is a classifier: it has no anchors", param_hint="--anchors")
    cfg = BUILDERS[arch](**kwargs)
    cfg.write(out)
    heads = cfg.find("region") + cfg.find("yolo")
    detail = f", {len(heads)} detection head(s)" if heads else ""
    click.echo(f"wrote {out}: {arch}, {classes} classes, {cfg.net.get_int('width')}x"
               f"{cfg.net.get_int('height')}{detail}")


# -- data ------------------------------------------------------------------------


@click.group("data")
def data_group() -> None:
    """Convert datasets to darknet's format and check them."""


@data_group.command("coco")
@click.argument("instances_json", type=_EXISTING_FILE)
@click.argument("images_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out_dir", type=_OUT_PATH)
@click.option("--keep-crowd", is_flag=True, help="Keep iscrowd=1 boxes (skipped by default).")
@click.option("--drop-empty", is_flag=True,
              help="Leave out images without boxes (kept by default, with an empty label file).")
@click.option("--valid-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1,
              show_default=True, help="Seeded random share of the images for valid.txt.")
@click.option("--valid-json", type=_EXISTING_FILE,
              help="A second instances JSON for valid.txt (then --valid-fraction is ignored).")
@click.option("--valid-images", type=click.Path(file_okay=False, path_type=Path),
              help="Image folder of --valid-json [default: IMAGES_DIR].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split.")
@click.option("--copy-images", is_flag=True,
              help="Copy the listed images into OUT_DIR/images/ instead of linking the folder.")
@click.option("--no-check-images", is_flag=True,
              help="Do not check that the image files exist (annotation-only runs, benchmarks).")
@click.option("--name", default="coco", show_default=True, help="Base name of the .data/.names files.")
@_progress_option
@_friendly
def data_coco(instances_json: Path, images_dir: Path, out_dir: Path, keep_crowd: bool,
              drop_empty: bool, valid_fraction: float, valid_json: Path | None,
              valid_images: Path | None, seed: int, copy_images: bool, no_check_images: bool,
              name: str, progress: bool) -> None:
    """Convert a COCO instances JSON into a darknet dataset in OUT_DIR.

    \b
    Writes (darknet finds labels by replacing `images` with `labels` in
    the image path, so the images are reached through OUT_DIR/images/):
      OUT_DIR/images/<IMAGES_DIR name>   a link to IMAGES_DIR (or copies, with
                                         --copy-images; nothing when IMAGES_DIR
                                         is already inside OUT_DIR/images)
      OUT_DIR/labels/.../<image>.txt     `class xc yc w h`, relative to the image
      OUT_DIR/train.txt, valid.txt       absolute image paths
      OUT_DIR/coco.names, coco.data      (eval=coco, coco_json= for `pydarknet map`)

    Category ids become classes 0..N-1 in sorted id order; boxes are clipped
    to the image; zero-area boxes, boxes outside the image and annotations of
    unknown images or categories are dropped and counted; images whose file
    is missing are left out.  Prints a summary.  The path of OUT_DIR itself
    must not contain `images`, `JPEGImages` or `raw` (darknet would then look
    for the labels elsewhere).

    \b
    Example:
      pydarknet data coco annotations/instances_train2017.json train2017 coco-dn \\
          --valid-json annotations/instances_val2017.json --valid-images val2017
    """
    from .coco import convert_coco

    summary = convert_coco(instances_json, images_dir, out_dir, keep_crowd=keep_crowd,
                           drop_empty=drop_empty, valid_fraction=valid_fraction,
                           valid_json=valid_json, valid_images_dir=valid_images, seed=seed,
                           copy_images=copy_images, check_images=not no_check_images,
                           name=name, progress=progress, status=_status(progress))
    click.echo(summary.format())


@data_group.command("voc")
@click.argument("voc_root", type=_EXISTING_DIR)
@click.argument("out_dir", type=_OUT_PATH)
@click.option("--years", help="Comma-separated years, e.g. 2007,2012 [default: every VOC<year> "
                              "folder found].")
@click.option("--sets", default="train,val", show_default=True,
              help="Image sets (ImageSets/Main/<set>.txt) for train.txt.")
@click.option("--valid-sets", default="test", show_default=True,
              help="Image sets for valid.txt, where a year has them (VOC2007 test).")
@click.option("--keep-difficult", is_flag=True,
              help="Keep objects marked difficult (skipped by default, as darknet's voc_label.py).")
@click.option("--names", "names_file", type=_EXISTING_FILE,
              help="Class names, one per line [default: darknet's voc.names, 20 classes].")
@click.option("--valid-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1,
              show_default=True, help="Used when no valid set exists: seeded share of train.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--copy-images", is_flag=True, help="Copy the images instead of linking the folders.")
@click.option("--name", default="voc", show_default=True, help="Base name of the .data/.names files.")
@_progress_option
@_friendly
def data_voc(voc_root: Path, out_dir: Path, years: str | None, sets: str, valid_sets: str,
             keep_difficult: bool, names_file: Path | None, valid_fraction: float, seed: int,
             copy_images: bool, name: str, progress: bool) -> None:
    """Convert Pascal VOC (VOCdevkit: VOC2007/, VOC2012/ with Annotations/,
    JPEGImages/, ImageSets/Main/) into a darknet dataset in OUT_DIR, laid out
    like `data coco`'s (OUT_DIR/images/VOC2007 -> .../JPEGImages, labels in
    OUT_DIR/labels/VOC2007/).  Boxes are converted as darknet's
    voc_label.py does.

    \b
    Example (darknet's recipe: train on 07+12 train/val, validate on 07 test):
      pydarknet data voc VOCdevkit voc-dn --years 2007,2012
    """
    from .data import read_names
    from .voc import VOC_NAMES, convert_voc

    names = read_names(names_file) if names_file is not None else VOC_NAMES
    summary = convert_voc(voc_root, out_dir, years=_split_list(years), sets=_split_list(sets) or [],
                          valid_sets=_split_list(valid_sets) or [], keep_difficult=keep_difficult,
                          names=names, valid_fraction=valid_fraction, seed=seed,
                          copy_images=copy_images, name=name, progress=progress)
    click.echo(summary.format())


@data_group.command("check")
@click.argument("data_file", type=_EXISTING_FILE)
@click.option("--decode", is_flag=True, help="Decode every image with OpenCV (slow); by default "
                                             "only its first bytes are checked.")
@click.option("--max-problems", type=int, default=50, show_default=True,
              help="How many problems to print.")
@_progress_option
@_friendly
def data_check(data_file: Path, decode: bool, max_problems: int, progress: bool) -> None:
    """Validate a dataset before training: the .data file, the names (one
    per class), the train and valid lists, every image (exists, is an
    image) and its label file (exists; each line `class x y w h` with the
    class in range, x, y in [0, 1], w, h in (0, 1]).  Every problem is
    printed with its file and line; exit status 1 when there are errors.
    """
    from .data import check_dataset

    report = check_dataset(data_file, decode_images=decode, progress=progress)
    click.echo(report.format(max_problems))
    if not report.ok:
        sys.exit(1)


@data_group.command("anchors")
@click.argument("data_file", type=_EXISTING_FILE)
@click.option("--num", type=click.IntRange(min=1), required=True, help="Number of anchors.")
@click.option("--width", type=click.IntRange(min=1), help="Network input width [default: the "
                                                         "--cfg's].")
@click.option("--height", type=click.IntRange(min=1), help="Network input height [default: the "
                                                           "--cfg's].")
@click.option("--cfg", "cfg_path", type=_EXISTING_FILE,
              help="A cfg to update: anchors, num and filters of every [region]/[yolo].")
@click.option("--out", type=_OUT_PATH, help="Write the updated cfg here instead of over --cfg.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--init", type=click.Choice(["kmeans++", "random"]), default="kmeans++",
              show_default=True, help="k-means initialisation (random: darknet-like).")
@_progress_option
@_friendly
def data_anchors(data_file: Path, num: int, width: int | None, height: int | None,
                 cfg_path: Path | None, out: Path | None, seed: int, init: str,
                 progress: bool) -> None:
    """Compute anchors by k-means (1 - IoU) on the train list's label boxes
    scaled to the network size, as AlexeyAB's calc_anchors; print them in
    pixels ([yolo]) and grid cells ([region], pixels / 32) with the average
    IoU of the boxes with their best anchor; with --cfg, write them in.

    \b
    Example:
      pydarknet data anchors shapes/coco.data --num 5 --cfg shapes.cfg
    """
    from .anchors import compute_anchors, update_cfg_file
    from .cfg import Cfg

    if cfg_path is not None and (width is None or height is None):
        net = Cfg.read(cfg_path).net
        width = width if width is not None else net.get_int("width")
        height = height if height is not None else net.get_int("height")
    if width is None or height is None:
        raise click.UsageError("give --width and --height (or --cfg to take them from)")
    if out is not None and cfg_path is None:
        raise click.UsageError("--out needs --cfg")
    result = compute_anchors(data_file, num, width, height, seed=seed, init=init,
                             progress=progress)
    click.echo(result.format())
    if cfg_path is not None:
        written = update_cfg_file(cfg_path, result.anchors, out)
        click.echo(f"updated {written}")


@data_group.command("shapes")
@click.argument("out_dir", type=_OUT_PATH)
@click.option("--count", type=click.IntRange(min=1), default=500, show_default=True,
              help="Number of images.")
@click.option("--width", type=click.IntRange(min=16), default=128, show_default=True)
@click.option("--height", type=click.IntRange(min=16), default=128, show_default=True)
@click.option("--min-objects", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--max-objects", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--min-size", type=float, default=0.1, show_default=True,
              help="Smallest shape side, as a share of the image's smaller side.")
@click.option("--max-size", type=float, default=0.4, show_default=True)
@click.option("--noise", type=click.FloatRange(min=0), default=12.0, show_default=True,
              help="Standard deviation of the background noise (grey levels).")
@click.option("--max-iou", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Largest IoU between two boxes of an image (0: no overlap).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--format", "image_format", type=click.Choice(["png", "jpg"]), default="png",
              show_default=True)
@_progress_option
@_friendly
def data_shapes(out_dir: Path, count: int, width: int, height: int, min_objects: int,
                max_objects: int, min_size: float, max_size: float, noise: float,
                max_iou: float, seed: int, image_format: str, progress: bool) -> None:
    """Generate the shapes dataset: images of coloured circles, squares and
    triangles on noisy backgrounds, with exact boxes, as OUT_DIR/images/ and
    a COCO instances JSON OUT_DIR/instances.json (seeded: the same seed gives
    the same files).

    \b
    Then:
      pydarknet data coco OUT_DIR/instances.json OUT_DIR/images OUT_DIR
    """
    from .datasets.shapes import generate_shapes

    result = generate_shapes(out_dir, count, width=width, height=height, min_objects=min_objects,
                             max_objects=max_objects, min_size=min_size, max_size=max_size,
                             noise=noise, max_iou=max_iou, seed=seed, image_format=image_format,
                             progress=progress)
    click.echo(result.format())
    click.echo(f"next: pydarknet data coco {result.instances_json} {result.images_dir} {out_dir}")


# -- map / valid -----------------------------------------------------------------


def _detector_factory(cfg: Path, weights: Path, threads: int) -> Callable[[Path], Any]:
    def make(names_file: Path) -> Any:
        from pydarknet.detect import Detector  # the engine: imported only when needed

        return Detector(str(cfg), str(weights), str(names_file), threads=threads)
    return make


_detection_options = [
    click.option("--data", "data_file", type=_EXISTING_FILE, required=True,
                 help="The dataset's .data file (its valid= list is used)."),
    click.argument("cfg", type=_EXISTING_FILE),
    click.argument("weights", type=_EXISTING_FILE),
    click.option("--thresh", type=click.FloatRange(0, 1), default=0.005, show_default=True,
                 help="Confidence threshold (darknet validates at .005)."),
    click.option("--nms", type=click.FloatRange(0, 1), default=0.45, show_default=True),
    click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
                 help="CPU threads of the engine (0: all)."),
    click.option("--limit", type=click.IntRange(min=1), help="Only the first N images."),
]


def _with(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)
        return fn
    return decorate


@click.command("map")
@_with(_detection_options)
@click.option("--iou", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5,
              show_default=True, help="IoU threshold of a true positive.")
@click.option("--voc07", is_flag=True,
              help="VOC2007's 11-point AP (pjreddie's reval_voc.py) instead of all-point.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@_progress_option
@_friendly
def map_command(data_file: Path, cfg: Path, weights: Path, thresh: float, nms: float,
                threads: int, limit: int | None, iou: float, voc07: bool, as_json: bool,
                progress: bool) -> None:
    """Mean average precision of a model on the dataset's valid list.

    Runs the detector with darknet's validation settings (thresh .005, NMS
    .45, letterbox), compares with the label files and prints per-class AP
    and mAP at --iou (VOC all-point interpolation and the devkit's matching,
    as AlexeyAB's `detector map`; --voc07 for VOC2007's 11 points).
    When the .data has coco_json= (written by `pydarknet data coco`), also
    prints COCO mAP@[.5:.95] from pycocotools.

    \b
    Example:
      pydarknet map --data coco-dn/coco.data cfg/yolov3-tiny.cfg yolov3-tiny.weights
    """
    from .evaluate import validate

    run = validate(data_file, _detector_factory(cfg, weights, threads), limit=limit,
                   progress=progress, thresh=thresh, nms=nms)
    result = run.map(iou, method="voc07" if voc07 else "voc")
    coco = run.coco()
    if as_json:
        doc: dict[str, Any] = {"images": len(run.entries), **result.to_dict()}
        if coco is not None:
            doc["coco"] = coco.to_dict()
        click.echo(json.dumps(doc, indent=1))
        return
    click.echo(f"{len(run.entries)} images")
    click.echo(result.format())
    if coco is not None:
        click.echo("COCO (pycocotools, bbox):")
        click.echo(coco.text)


@click.command("valid")
@_with(_detection_options)
@click.option("--out", type=_OUT_PATH, required=True, help="The results JSON to write.")
@_progress_option
@_friendly
def valid_command(data_file: Path, cfg: Path, weights: Path, thresh: float, nms: float,
                  threads: int, limit: int | None, out: Path, progress: bool) -> None:
    """Write COCO-format detection results for the dataset's valid list:
    [{image_id, category_id, bbox: [x, y, w, h] (top-left, pixels), score}].

    Image and category ids are the original COCO ids when the .data has
    coco_json= (from `pydarknet data coco`); otherwise the image id is the
    number at the end of the file name (or its stem) and the category id is
    the class index.  Same detector settings as `map`.
    """
    from .evaluate import validate, write_coco_results

    run = validate(data_file, _detector_factory(cfg, weights, threads), limit=limit,
                   progress=progress, thresh=thresh, nms=nms, need_truth=False)
    results = run.results()
    write_coco_results(out, results)
    click.echo(f"wrote {len(results)} detections on {len(run.entries)} images to {out}")


def register_data_commands(group: click.Group) -> None:
    """Add the data-tool commands to the top-level group."""
    group.add_command(cfg_group)
    group.add_command(data_group)
    group.add_command(map_command)
    group.add_command(valid_command)
