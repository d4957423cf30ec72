"""`pydarknet summary` and `pydarknet detect` through click's CliRunner."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pydarknet.cli import main
from shared import darknet_cfg, shared_path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_summary_prints_darknets_table() -> None:
    code, out = run("summary", str(darknet_cfg("yolov3-tiny.cfg")))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("layer     filters    size")
    assert lines[1] == ("    0 conv     16  3 x 3 / 1   416 x 416 x   3   ->   416 x 416 x  16  "
                        "0.150 BFLOPs")
    assert "   11 max          2 x 2 / 1    13 x  13 x 512   ->    13 x  13 x 512" in lines
    assert "   20 route  19 8" in lines
    assert lines[-1] == "Total BFLOPs 5.565"


def test_summary_with_a_bad_cfg_is_one_clean_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text("[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nfilters=x\n")
    code, out = run("summary", str(bad))
    assert code == 1
    assert "error:" in out and "bad.cfg:6" in out and "'filters'" in out
    assert "Traceback" not in out


@pytest.fixture(scope="module")
def yolo() -> tuple[str, str]:
    return (str(shared_path("models/yolov3-tiny.cfg")),
            str(shared_path("models/yolov3-tiny.weights")))


def test_detect_prints_like_darknet_and_saves(yolo, tmp_path: Path) -> None:
    dog = str(shared_path("darknet/data/dog.jpg"))
    code, out = run("detect", *yolo, dog, "--save-dir", str(tmp_path / "out"), "--threads", "2")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith(f"{dog}: Predicted in ") and lines[0].endswith(" seconds.")
    assert sorted(lines[1:]) == sorted(["dog: 56%", "car: 52%", "truck: 55%", "car: 62%",
                                        "bicycle: 59%"])
    import cv2

    saved = cv2.imread(str(tmp_path / "out" / "dog.jpg"))
    original = cv2.imread(dog)
    assert saved.shape == original.shape
    assert np.abs(saved.astype(int) - original).mean() > 1  # boxes were drawn


def test_detect_json(yolo, tmp_path: Path) -> None:
    images = [str(shared_path(f"darknet/data/{n}")) for n in ("dog.jpg", "person.jpg")]
    code, out = run("detect", *yolo, *images, "--json", "--no-save", "--thresh", ".3")
    assert code == 0, out
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["image"] for r in records] == images
    for record in records:
        assert record["detections"]
        for d in record["detections"]:
            assert set(d) == {"class_id", "name", "confidence", "box"}
            assert set(d["box"]) == {"x", "y", "w", "h"} and d["confidence"] > .3
    dog = {d["name"] for d in records[0]["detections"]}
    assert {"dog", "bicycle"} <= dog


def test_detect_unreadable_image(yolo, tmp_path: Path) -> None:
    fake = tmp_path / "fake.jpg"
    fake.write_text("not an image")
    code, out = run("detect", *yolo, str(fake), "--no-save")
    assert code == 1 and "cannot decode image" in out


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10) -> None:
    import cv2

    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()


def test_detect_video_frame_by_frame(yolo, tmp_path: Path) -> None:
    import cv2

    dog = cv2.imread(str(shared_path("darknet/data/dog.jpg")))
    video = tmp_path / "clip.avi"
    write_video(video, [dog, np.roll(dog, 8, axis=1), np.roll(dog, 16, axis=1)])
    code, out = run("detect", *yolo, str(video), "--json", "--save-dir", str(tmp_path / "out"),
                    "--threads", "2")
    assert code == 0, out
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["image"], r["frame"]) for r in records] == [(str(video), k) for k in range(3)]
    for record in records:  # the dog is found in every frame, a little further right each time
        assert "dog" in {d["name"] for d in record["detections"]}
    dog_x = [next(d["box"]["x"] for d in r["detections"] if d["name"] == "dog") for r in records]
    assert dog_x[0] < dog_x[1] < dog_x[2]
    saved = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    frames = []
    while True:
        ok, frame = saved.read()
        if not ok:
            break
        frames.append(frame)
    saved.release()
    assert len(frames) == 3 and frames[0].shape == dog.shape
    assert not list((tmp_path / "out").glob(".*partial*"))  # written under a temporary name, renamed

    code, out = run("detect", *yolo, str(video), "--no-save", "--threads", "2")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith(f"{video} frame 0: Predicted in ")
    assert "dog: " in "\n".join(lines) and lines[-1].startswith(f"{video}: 3 frames, ")


def test_detect_unreadable_video(yolo, tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"not a video" * 10)
    code, out = run("detect", *yolo, str(fake), "--save-dir", str(tmp_path / "out"))
    assert code == 1 and "fake.mp4" in out and "Traceback" not in out
    assert not list((tmp_path / "out").glob("*"))  # nothing half-written


def test_detect_writes_every_image_and_reports_what_it_cannot(yolo, tmp_path: Path) -> None:
    """Images of one name from two folders both get written (dog.jpg,
    dog-2.jpg); an undecodable image is reported and the rest still run (exit
    1 at the end); a save folder that cannot be made, or an annotated image
    that cannot be written, is a one-line error, not a traceback."""
    import shutil

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(shared_path("darknet/data/dog.jpg"), tmp_path / folder / "dog.jpg")
    (tmp_path / "broken.jpg").write_text("not a jpeg")
    images = [str(tmp_path / "a" / "dog.jpg"), str(tmp_path / "broken.jpg"), str(tmp_path / "b" / "dog.jpg")]
    result = CliRunner().invoke(main, ["detect", *yolo, *images, "--save-dir", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.stdout.count("Predicted in") == 2  # the image after the broken one ran too
    assert f"error: cannot decode image '{images[1]}'" in result.stderr
    assert "1 of 3 images could not be decoded" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dog-2.jpg", "dog.jpg"]

    (tmp_path / "file").write_text("")
    code, out = run("detect", *yolo, images[0], "--save-dir", str(tmp_path / "file" / "sub"))
    assert code == 1 and "error: Not a directory" in out and "Traceback" not in out
    (tmp_path / "taken" / "dog.jpg").mkdir(parents=True)  # the annotated image's name is a folder
    code, out = run("detect", *yolo, images[0], "--save-dir", str(tmp_path / "taken"))
    assert code == 1 and "cannot write the annotated image" in out and "Traceback" not in out


def test_cfg_warnings_are_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "typo.cfg"
    cfg.write_text("[net]\nwidth=32\nheight=32\nchannels=3\n[maxpool]\nsize=2\nstirde=2\n")
    result = CliRunner().invoke(main, ["summary", str(cfg)])
    assert result.exit_code == 0
    assert result.stderr == f"warning: {cfg}:7: [maxpool]: unused option 'stirde=2'\n"
