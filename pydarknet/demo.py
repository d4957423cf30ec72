"""`pydarknet demo`: the whole workflow on the CPU with nothing to download.

1. generate a seeded dataset of coloured shapes (COCO JSON + PNG images);
2. convert it with the COCO converter (labels, lists, .names, .data);
3. compute anchors with k-means and write a small YOLOv2-style cfg;
4. train it on the CPU with the progress bar (darknet's loop);
5. evaluate mAP@0.5 on the held-out images and save annotated detections
   and the loss chart.

The last line printed is `mAP@0.5 = <value>`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .anchors import compute_anchors, set_anchors
from .cfg import Cfg

# The demo network: a YOLOv2-tiny in miniature for 128x128 inputs (stride 16,
# an 8x8 grid), big enough to learn the shapes in minutes on two cores.
DEMO_LAYERS = [("conv", 16, 3), ("max",), ("conv", 32, 3), ("max",), ("conv", 64, 3), ("max",),
               ("conv", 128, 3), ("max",), ("conv", 128, 3), ("conv", 128, 1)]
DEMO_STRIDE = 16


@dataclass(frozen=True)
class DemoSettings:
    images: int
    max_batches: int
    batch: int
    learning_rate: float
    burn_in: int
    anchors: int = 4


# measured: mAP@0.5 0.87 after 600 iterations (about 4 minutes on 2 cores)
FULL = DemoSettings(images=1500, max_batches=600, batch=32, learning_rate=.01, burn_in=100)
QUICK = DemoSettings(images=400, max_batches=300, batch=16, learning_rate=.01, burn_in=50)


@dataclass
class DemoResult:
    out: Path
    cfg: Path
    data: Path
    weights: Path
    map50: float
    chart: Path
    predictions: Path
    metrics: Path


def demo_cfg(classes: int, settings: DemoSettings, width: int = 128, height: int = 128) -> Cfg:
    """The demo's cfg (anchors are set afterwards from the data)."""
    cfg = Cfg()
    steps = [int(settings.max_batches * .7), int(settings.max_batches * .9)]
    net = cfg.add_section("net")
    for key, value in [("batch", settings.batch), ("subdivisions", 1), ("width", width),
                       ("height", height), ("channels", 3), ("momentum", "0.9"),
                       ("decay", "0.0005"), ("angle", 0), ("saturation", "1.5"),
                       ("exposure", "1.5"), ("hue", ".1"),
                       ("learning_rate", settings.learning_rate),
                       ("burn_in", settings.burn_in), ("power", 2),
                       ("max_batches", settings.max_batches), ("policy", "steps"),
                       ("steps", ",".join(map(str, steps))), ("scales", ".1,.1")]:
        net.add(key, value)
    for layer in DEMO_LAYERS:
        if layer[0] == "max":
            cfg.add_section("maxpool").add("size", 2).add("stride", 2)
            continue
        _, filters, size = layer
        (cfg.add_section("convolutional").add("batch_normalize", 1).add("filters", filters)
         .add("size", size).add("stride", 1).add("pad", 1).add("activation", "leaky"))
    num = settings.anchors
    (cfg.add_section("convolutional").add("filters", (classes + 5) * num).add("size", 1)
     .add("stride", 1).add("pad", 1).add("activation", "linear"))
    region = cfg.add_section("region")
    for key, value in [("anchors", ",".join(["1,1"] * num)), ("bias_match", 1),
                       ("classes", classes), ("coords", 4), ("num", num), ("softmax", 1),
                       ("jitter", ".2"), ("rescore", 1), ("object_scale", 5),
                       ("noobject_scale", 1), ("class_scale", 1), ("coord_scale", 1),
                       ("absolute", 1), ("thresh", ".6"), ("random", 0)]:
        region.add(key, value)
    return cfg


def run_demo(out: Path, *, quick: bool = False, seed: int = 0, threads: int = 0,
             progress: bool = True, say: Callable[[str], None] = print) -> DemoResult:
    """Run the demo into `out` (see the module docstring)."""
    import cv2

    from .coco import convert_coco
    from .data import read_data_file, read_image_list
    from .datasets import generate_shapes
    from .detect import Detector
    from .draw import draw_detections
    from .evaluate import validate
    from .train import TrainOptions, train

    settings = QUICK if quick else FULL
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    say(f"1/5 generating {settings.images} images of shapes (seed {seed}) ...")
    shapes = generate_shapes(out / "shapes", count=settings.images, seed=seed, progress=progress)

    say("2/5 converting the COCO annotations to darknet's format ...")
    dataset_dir = out / "dataset"
    conversion = convert_coco(shapes.instances_json, shapes.images_dir, dataset_dir,
                              valid_fraction=.15, seed=seed, name="shapes", progress=progress)
    data_file = conversion.data_file
    data = read_data_file(data_file)
    names = data.read_names()

    say("3/5 computing anchors (k-means, 1 - IoU) and writing the cfg ...")
    cfg = demo_cfg(len(names), settings)
    anchors = compute_anchors(data_file, settings.anchors, 128, 128, seed=seed, progress=False)
    set_anchors(cfg, anchors.anchors, stride=DEMO_STRIDE)
    cfg_path = cfg.write(out / "shapes-yolov2.cfg")
    say(f"    anchors (pixels) {anchors.anchors.round(1).tolist()}, avg IoU "
        f"{anchors.avg_iou:.3f}")

    say(f"4/5 training for {settings.max_batches} iterations of {settings.batch} images ...")
    backup = out / "backup"
    result = train(TrainOptions(cfg=cfg_path, data=data_file, backup=backup, seed=seed,
                                threads=threads, progress=progress, early_saves=False,
                                backup_every=100, save_every=10**9, chart_every=15))
    assert result.final_weights is not None
    say(f"    final average loss {result.avg_loss:.4f}")

    say("5/5 evaluating on the held-out images ...")
    run = validate(data_file, lambda names_file: Detector(cfg_path, result.final_weights,
                                                          names_file, threads=threads),
                   progress=progress)
    summary = run.map(.5)
    predictions = out / "predictions"
    predictions.mkdir(exist_ok=True)
    valid_list = data.path_of("valid")
    assert valid_list is not None
    with Detector(cfg_path, result.final_weights, names, threads=threads) as detector:
        for entry in read_image_list(valid_list)[:12]:
            frame = cv2.imread(str(entry.image))
            found = detector.detect(frame, thresh=.3)
            cv2.imwrite(str(predictions / (entry.image.stem + ".png")),
                        cv2.resize(draw_detections(frame, found, len(names)), (256, 256),
                                   interpolation=cv2.INTER_NEAREST))
    (out / "map.json").write_text(json.dumps(summary.to_dict(), indent=1) + "\n")
    return DemoResult(out=out, cfg=cfg_path, data=data_file, weights=result.final_weights,
                      map50=summary.map, chart=backup / f"{cfg_path.stem}.loss.png",
                      predictions=predictions,
                      metrics=backup / f"{cfg_path.stem}.metrics.jsonl")
