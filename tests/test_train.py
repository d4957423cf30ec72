"""The training loop: checkpoints as darknet names them, resume, seeded
repeatability, Ctrl-C, NaN handling, and the `train` command."""
from __future__ import annotations

import json
import os
import re
import signal
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pydarknet import ArgumentError, Network, NumericError
from pydarknet.cli import main
from pydarknet.train import TrainOptions, train

CFG = """[net]
batch=4
subdivisions=2
width=64
height=64
channels=3
momentum=0.9
decay=0.0005
learning_rate={lr}
burn_in=2
max_batches={max_batches}
policy=steps
steps=4
scales=.5
hue=.1
saturation=1.5
exposure=1.5

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=4
stride=4

[convolutional]
size=1
stride=1
pad=1
filters=24
activation=linear

[region]
anchors=1,1,2,2,3,3
bias_match=1
classes=3
coords=4
num=3
softmax=1
jitter=.2
rescore=1
object_scale=5
noobject_scale=1
class_scale=1
coord_scale=1
thresh=.6
random=0
"""


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny shapes dataset through the real COCO converter."""
    from pydarknet.coco import convert_coco
    from pydarknet.datasets import generate_shapes

    root = tmp_path_factory.mktemp("shapes")
    shapes = generate_shapes(root / "gen", count=16, width=64, height=64, seed=1, progress=False)
    return convert_coco(shapes.instances_json, shapes.images_dir, root / "darknet",
                        valid_fraction=.25, seed=1, name="shapes", progress=False).data_file


def write_cfg(folder: Path, lr: float = .01, max_batches: int = 6) -> Path:
    path = folder / "tiny-yolo.cfg"
    path.write_text(CFG.format(lr=lr, max_batches=max_batches))
    return path


def options(cfg: Path, data: Path, backup: Path, **kw) -> TrainOptions:
    base = dict(cfg=cfg, data=data, backup=backup, seed=5, threads=2, progress=False,
                backup_every=2, save_every=3, early_saves=False, chart_every=0)
    base.update(kw)
    return TrainOptions(**base)  # type: ignore[arg-type]


def header_seen(path: Path) -> int:
    return struct.unpack("<iiiq", path.read_bytes()[:20])[3]


def test_checkpoints_metrics_and_chart(tmp_path: Path, shapes_data: Path) -> None:
    cfg = write_cfg(tmp_path)
    backup = tmp_path / "backup"
    seen_lines: list[str] = []
    result = train(options(cfg, shapes_data, backup),
                   on_iteration=lambda s: seen_lines.append(s.darknet_line()))
    assert result.iterations == 6 and not result.interrupted
    names = sorted(p.name for p in backup.iterdir())
    assert names == ["tiny-yolo.backup", "tiny-yolo.loss.png", "tiny-yolo.metrics.jsonl",
                     "tiny-yolo_3.weights", "tiny-yolo_6.weights", "tiny-yolo_final.weights"]
    assert header_seen(backup / "tiny-yolo_final.weights") == 6 * 4
    assert header_seen(backup / "tiny-yolo_3.weights") == 3 * 4
    records = [json.loads(line) for line in (backup / "tiny-yolo.metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3, 4, 5, 6]
    # darknet's schedule: burn_in (batch/burn_in)^4, then steps at 4 scale .5
    assert [r["learning_rate"] for r in records] == pytest.approx(
        [.01 * .5 ** 4, .01, .01, .005, .005, .005], rel=1e-5)
    assert records[0]["layers"][0]["count"] > 0
    assert seen_lines[0].startswith("1: ") and " avg, " in seen_lines[0]
    assert (backup / "tiny-yolo.loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_continues_the_schedule(tmp_path: Path, shapes_data: Path) -> None:
    cfg = write_cfg(tmp_path)
    full_losses: list[float] = []
    full = train(options(cfg, shapes_data, tmp_path / "full"), on_iteration=lambda s: full_losses.append(s.loss))
    # "interrupted" at iteration 2 (the .backup of a run that stopped there)
    first = train(options(cfg, shapes_data, tmp_path / "a", max_batches=2))
    assert first.iterations == 2
    resumed: list[tuple[float, float]] = []
    second = train(options(cfg, shapes_data, tmp_path / "b",
                           weights=tmp_path / "a" / "tiny-yolo.backup"),
                   on_iteration=lambda s: resumed.append((s.learning_rate, s.loss)))
    assert second.iterations == 6
    assert [lr for lr, _ in resumed] == pytest.approx([.01, .005, .005, .005], rel=1e-5)
    # the same seed goes on with iteration 3's images, not iteration 1's again:
    # its loss (the weights after 2 updates, saved exactly) is the full run's
    assert resumed[0][1] == pytest.approx(full_losses[2], rel=1e-6)
    assert resumed[0][1] != pytest.approx(full_losses[0], rel=1e-3)
    assert header_seen(tmp_path / "b" / "tiny-yolo_final.weights") == 24
    assert full.final_weights is not None
    # a checkpoint already at max_batches: an error, not an empty "done" that rewrites the weights
    done = tmp_path / "b" / "tiny-yolo_final.weights"
    before = done.read_bytes()
    with pytest.raises(ArgumentError, match="already trained to iteration 6, and max_batches is 6"):
        train(options(cfg, shapes_data, tmp_path / "b", weights=done))
    assert done.read_bytes() == before


def test_seeded_runs_are_repeatable(tmp_path: Path, shapes_data: Path) -> None:
    cfg = write_cfg(tmp_path, max_batches=3)
    a = train(options(cfg, shapes_data, tmp_path / "a", threads=1))
    b = train(options(cfg, shapes_data, tmp_path / "b", threads=2))
    c = train(options(cfg, shapes_data, tmp_path / "c", seed=6))
    assert a.final_weights.read_bytes() == b.final_weights.read_bytes()
    assert a.final_weights.read_bytes() != c.final_weights.read_bytes()


def test_ctrl_c_saves_and_stops(tmp_path: Path, shapes_data: Path) -> None:
    cfg = write_cfg(tmp_path, max_batches=50)

    def interrupt(stats) -> None:  # type: ignore[no-untyped-def]
        if stats.iteration == 3:
            os.kill(os.getpid(), signal.SIGINT)

    result = train(options(cfg, shapes_data, tmp_path / "bk", backup_every=1000), interrupt)
    assert result.interrupted and result.iterations == 3
    assert result.final_weights is None
    assert header_seen(tmp_path / "bk" / "tiny-yolo.backup") == 3 * 4


def test_divergence_stops_and_keeps_the_good_checkpoint(tmp_path: Path, shapes_data: Path) -> None:
    cfg = write_cfg(tmp_path, lr=1e9, max_batches=20)
    backup = tmp_path / "bk"
    with pytest.raises(NumericError) as info:
        train(options(cfg, shapes_data, backup, backup_every=1))
    message = str(info.value)
    assert "iteration" in message and "layer" in message
    saved = backup / "tiny-yolo.backup"
    if saved.exists():  # the last good state, loadable and finite
        with Network(cfg, saved) as net:
            for i in range(len(net)):
                for values in net.params(i).values():
                    assert np.isfinite(values).all()
    assert not (backup / "tiny-yolo_final.weights").exists()


def test_train_command(tmp_path: Path, shapes_data: Path) -> None:
    cfg = write_cfg(tmp_path, max_batches=2)
    result = CliRunner().invoke(main, ["train", str(cfg), "--data", str(shapes_data),
                                       "--backup", str(tmp_path / "bk"), "--seed", "1",
                                       "--no-progress", "--threads", "2", "--loader-threads", "3"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # darknet's lines: the wait for the batch, the iteration, the region layer
    assert re.fullmatch(r"Loaded: \d+\.\d{6} seconds", lines[0])
    # darknet's order: the loss layer's line (printed during the forward), then the iteration's
    assert lines[1].startswith("Region Avg IOU: ")
    assert lines[2].startswith("1: ") and "rate" in lines[2] and "images" in lines[2]
    assert "done: 2 iterations" in lines[-1]
    # no .data beside the cfg and none given: a clear error
    missing = CliRunner().invoke(main, ["train", str(cfg), "--no-progress"])
    assert missing.exit_code == 1 and "tiny-yolo.data" in missing.output


def test_train_command_prints_darknets_resizing_lines(tmp_path: Path, shapes_data: Path) -> None:
    """random=1: darknet prints "Resizing" and the drawn size before the
    batch's "Loaded" line, at the first iteration of a run and every 10th
    (test_loader checks which; here 608: the last 200 batches train at 608)."""
    cfg = tmp_path / "tiny-yolo.cfg"
    cfg.write_text(CFG.format(lr=.001, max_batches=2).replace("random=0", "random=1"))
    result = CliRunner().invoke(main, ["train", str(cfg), "--data", str(shapes_data),
                                       "--backup", str(tmp_path / "bk"), "--seed", "1",
                                       "--no-progress", "--threads", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:3] == ["Resizing", "608", lines[2]] and lines[2].startswith("Loaded: ")
    assert lines[4].startswith("1: ") and lines[5].startswith("Loaded: ")  # none at iteration 2
    assert lines.count("Resizing") == 1


def test_loader_threads_default_to_the_cpus_only_for_gpus(tmp_path: Path) -> None:
    from pydarknet.loader import default_workers
    from pydarknet.train import TrainOptions, loader_threads

    cfg = tmp_path / "x.cfg"
    assert loader_threads(TrainOptions(cfg=cfg)) == 1  # the CPU: the network's threads use the cores
    assert loader_threads(TrainOptions(cfg=cfg, gpus=(0,))) == default_workers()
    assert loader_threads(TrainOptions(cfg=cfg, gpus=(0,), loader_threads=3)) == 3
    assert loader_threads(TrainOptions(cfg=cfg, loader_threads=5)) == 5
    assert 1 <= default_workers() <= 16
