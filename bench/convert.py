"""Benchmark: COCO -> darknet conversion at the size of COCO 2017 train.

    PYTHONPATH=. python bench/convert.py [--images 118287] [--boxes 860001] [--keep]

Generates an instances JSON with COCO 2017 train's counts (118,287 images,
860,001 boxes, the 80 categories with COCO's non-contiguous ids 1..90, ~1%
crowd boxes, a few boxes partly outside the image) in a temporary folder and
times `convert_coco` on it: JSON loading, label computation, 118k label
files, the lists, .names and .data.  There are no image files, so the
converter runs with `check_images=False` (`--no-check-images` in the CLI:
no existence check; the OUT_DIR/images link is still made, to a folder that
does not exist).  Prints the times per stage; `--keep` keeps the folder;
`--baseline` also times creating as many small files in a plain Python loop,
which is what "write label files" costs on the machine's file system.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydarknet.coco import convert_coco  # noqa: E402

COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def make_instances(path: Path, n_images: int, n_boxes: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    widths = rng.choice([640, 480, 500, 427], n_images).tolist()
    heights = rng.choice([480, 640, 375, 333], n_images).tolist()
    images = [{"id": 100000 + 7 * i, "file_name": f"{100000 + 7 * i:012d}.jpg",
               "width": w, "height": h} for i, (w, h) in enumerate(zip(widths, heights))]
    img = rng.integers(0, n_images, n_boxes)
    W = np.array(widths)[img]
    H = np.array(heights)[img]
    bw = rng.uniform(0.02, 0.6, n_boxes) * W
    bh = rng.uniform(0.02, 0.6, n_boxes) * H
    x = rng.uniform(-0.02, 1.0, n_boxes) * (W - bw * 0.9)
    y = rng.uniform(-0.02, 1.0, n_boxes) * (H - bh * 0.9)
    cats = np.array(COCO_CATEGORY_IDS)[rng.integers(0, 80, n_boxes)]
    crowd = rng.random(n_boxes) < 0.01
    # Written as text: json.dump of 860k dicts takes longer than the conversion.
    ann_text = ",\n".join(
        f'{{"id": {i + 1}, "image_id": {100000 + 7 * im}, "category_id": {c}, '
        f'"bbox": [{a:.2f}, {b:.2f}, {d:.2f}, {e:.2f}], "area": {d * e:.2f}, "iscrowd": {int(cr)}}}'
        for i, (im, c, a, b, d, e, cr) in enumerate(zip(
            img.tolist(), cats.tolist(), x.tolist(), y.tolist(), bw.tolist(), bh.tolist(),
            crowd.tolist())))
    categories = [{"id": c, "name": f"class_{c}", "supercategory": "thing"} for c in COCO_CATEGORY_IDS]
    with open(path, "w") as f:
        f.write('{"info": {"description": "synthetic"}, "licenses": [],\n"images": ')
        json.dump(images, f)
        f.write(',\n"annotations": [\n' + ann_text + '],\n"categories": ')
        json.dump(categories, f)
        f.write("}\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=118287)
    ap.add_argument("--boxes", type=int, default=860001)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--baseline", action="store_true",
                    help="also time creating as many small files with a plain loop (the file "
                         "system's share of the conversion)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pydarknet-bench-"))
    try:
        js = tmp / "instances_train2017.json"
        t0 = time.perf_counter()
        make_instances(js, args.images, args.boxes)
        t1 = time.perf_counter()
        print(f"generated {js.name}: {args.images} images, {args.boxes} boxes, "
              f"{js.stat().st_size / 1e6:.0f} MB in {t1 - t0:.1f} s")
        summary = convert_coco(js, tmp / "train2017", tmp / "out", check_images=False,
                               progress=False)
        t2 = time.perf_counter()
        print(summary.format().splitlines()[0])
        print(summary.format().splitlines()[1])
        print("stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in summary.timings.items()))
        print(f"convert: {t2 - t1:.2f} s ({summary.boxes_written} boxes written into "
              f"{summary.images_train + summary.images_valid} label files)")
        if args.baseline:
            folder = tmp / "baseline"
            folder.mkdir()
            t3 = time.perf_counter()
            for i in range(args.images):
                with open(folder / f"{i:012d}.txt", "w") as f:
                    f.write("0 0.500000 0.500000 0.100000 0.100000\n" * 7)
            print(f"baseline: {args.images} small files in {time.perf_counter() - t3:.2f} s")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
