"""The cfg model: darknet's reading rules, exact round trips, edits, errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pydarknet.cfg import Cfg, CfgSection, format_value
from pydarknet.errors import CfgError, DarknetIOError
from shared import darknet_cfg, reference_cfgs, shared_path

REFERENCE = reference_cfgs() or [None]


@pytest.mark.parametrize("path", REFERENCE, ids=lambda p: p.name if p else "missing")
def test_reference_cfg_round_trip(path: Path | None, tmp_path: Path) -> None:
    if path is None:
        shared_path("darknet/cfg")  # skips with the reason
        return
    cfg = Cfg.read(path)
    original = path.read_text()
    text = cfg.to_text()
    # byte-exact (a missing final newline is added)
    assert text == (original if original.endswith("\n") else original + "\n")
    written = cfg.write(tmp_path / path.name)
    again = Cfg.read(written)
    assert [(s.name, s.options) for s in again] == [(s.name, s.options) for s in cfg]
    assert again == cfg
    assert len(cfg.sections) > 1 and cfg.net.name in ("net", "network")


def test_reference_values_read_the_darknet_way() -> None:
    cfg = Cfg.read(darknet_cfg("yolov2.cfg"))
    net = cfg.net
    assert net.get_int("width") == 608
    assert net.get("max_batches") == "500200"          # "max_batches = 500200"
    assert net.get_float("saturation") == 1.5          # "saturation = 1.5"
    assert net.get_list("steps", item=int) == [400000, 450000]
    region = cfg.find("region")[0]
    assert region.get("anchors") == ("0.57273,0.677385,1.87446,2.06253,3.33843,5.47434,"
                                     "7.88282,3.52778,9.77052,9.16828")
    assert region.get_float("thresh") == 0.6
    assert len(cfg.layers) == 32
    assert [s.name for s in cfg.layers].count("convolutional") == 23
    tiny = Cfg.read(darknet_cfg("yolov3-tiny.cfg"))
    assert tiny.find("route")[1].get_list("layers", item=int) == [-1, 8]  # "layers = -1, 8"
    assert tiny.find("yolo")[0].get_list("mask", item=int) == [3, 4, 5]
    d19 = Cfg.read(darknet_cfg("darknet19.cfg"))
    assert d19.net.get_int("batch") == 1                # " batch=1" (leading space)


def test_first_occurrence_wins_like_darknet() -> None:
    cfg = Cfg.read(darknet_cfg("yolo9000.cfg"))
    assert cfg.net.duplicate_keys() == ["batch", "subdivisions"]
    assert cfg.net.get_int("batch") == 1
    cfg = Cfg.parse("[net]\nbatch=64\nbatch=1\n")
    assert cfg.net.get_int("batch") == 64
    cfg.net.set("batch", 8)  # changes the first, the one darknet reads
    assert cfg.net.options == [("batch", "8"), ("batch", "1")]


def test_whitespace_and_comments() -> None:
    text = ("# header comment\n"
            "\n"
            " [ net ] \n"
            "\twidth = 4 16\n"
            "; semicolon comment\n"
            "  # indented comment\n"
            "anchors = 1.5, 2 ,  3,4\n"
            "[conv]\n"
            "filters=255 #not a comment\n")
    cfg = Cfg.parse(text)
    assert cfg.header_comments == ["# header comment", ""]
    assert [s.name for s in cfg] == ["net", "conv"]
    assert cfg.net.options == [("width", "416"), ("anchors", "1.5,2,3,4")]
    assert cfg.net.comments == [(1, "; semicolon comment"), (1, "  # indented comment")]
    assert cfg.net.get_list("anchors") == [1.5, 2.0, 3.0, 4.0]
    assert cfg[1].get("filters") == "255#notacomment"
    with pytest.raises(CfgError, match=r"<cfg>:9: \[conv\] filters=255#notacomment is not an integer"):
        cfg[1].get_int("filters")
    assert cfg.to_text() == text
    assert cfg.net.line == 3 and cfg[1].line == 8


def test_windows_line_endings() -> None:
    cfg = Cfg.parse("[net]\r\nwidth=32\r\n\r\n[maxpool]\r\nsize=2\r\n")
    assert [s.name for s in cfg] == ["net", "maxpool"]
    assert cfg.net.get_int("width") == 32
    assert cfg.to_text() == "[net]\nwidth=32\n\n[maxpool]\nsize=2\n"


def test_edits_keep_the_rest_of_the_text() -> None:
    text = "[net]\n# size\nwidth = 416\nheight = 416\n\n[region]\nclasses = 80\nnum=5\n"
    cfg = Cfg.parse(text)
    region = cfg.find("region")[0]
    region.set("classes", 3)
    cfg.net.set("width", 224)
    cfg.net.set("channels", 3)
    assert cfg.to_text() == ("[net]\n# size\nwidth=224\nheight = 416\nchannels=3\n\n"
                             "[region]\nclasses=3\nnum=5\n")
    assert cfg.net.remove("width") == 1
    assert cfg.net.comments[0] == (0, "# size")
    region.set("anchors", [1, 2.5, 0.57273, 10])
    assert region.get("anchors") == "1,2.5,0.57273,10"
    region.set("anchors", [1, 2], text="anchors = 1, 2")
    assert "anchors = 1, 2\n" in cfg.to_text()
    with pytest.raises(CfgError, match="does not read as"):
        region.set("anchors", [1, 2], text="anchors = 3, 4")


def test_built_cfg_text_and_equality() -> None:
    cfg = Cfg(header_comments=["# made in code"])
    cfg.add_section("net", [("width", 64), ("height", 64)])
    conv = cfg.add_section("convolutional").add("filters", 16).comment("tail comment")
    assert cfg.to_text() == ("# made in code\n\n[net]\nwidth=64\nheight=64\n\n"
                             "[convolutional]\nfilters=16\n# tail comment\n")
    again = Cfg.parse(cfg.to_text())
    assert again == cfg  # names and options; comments and lines are not compared
    assert conv == CfgSection("convolutional", [("filters", "16")])
    assert format_value(True) == "1" and format_value(0.1) == "0.1" and format_value(10.0) == "10"
    assert format_value([1, 2.5]) == "1,2.5"


@pytest.mark.parametrize("text, message", [
    ("width=3\n[net]\n", r"<cfg>:1: option 'width=3' before the first \[section\]"),
    ("[net]\nwidth\n", r"<cfg>:2: expected key=value, found 'width'"),
    ("[net]\nwidth=\n", r"<cfg>:2: empty value in 'width='"),
    ("[net]\n=3\n", r"<cfg>:2: empty key"),
    ("[net\nwidth=3\n", r"<cfg>:1: bad section header '\[net'"),
    ("[]\n", r"<cfg>:1: bad section header"),
])
def test_parse_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(CfgError, match=message):
        Cfg.parse(text)


def test_lookup_errors(tmp_path: Path) -> None:
    p = tmp_path / "x.cfg"
    p.write_text("[net]\nwidth=abc\nsteps=1,,2\n[conv]\n")
    cfg = Cfg.read(p)
    with pytest.raises(CfgError, match=rf"{p}:2: \[net\] width=abc is not an integer"):
        cfg.net.get_int("width")
    with pytest.raises(CfgError, match=rf"{p}:3: .*not a comma-separated list"):
        cfg.net.get_list("steps")
    with pytest.raises(CfgError, match=rf"{p}:1: \[net\] has no 'height='"):
        cfg.net.get_int("height")
    assert cfg.net.get_int("height", 416) == 416
    assert cfg.net.get_list("scales", [0.1]) == [0.1]
    with pytest.raises(CfgError, match=r"first section must be \[net\]"):
        Cfg.parse("[conv]\nfilters=1\n").net
    with pytest.raises(DarknetIOError, match="cannot read cfg"):
        Cfg.read(tmp_path / "missing.cfg")
    (tmp_path / "bin.cfg").write_bytes(b"[net]\nwidth=\xff\n")
    with pytest.raises(CfgError, match=r"bin.cfg:2: not a text file"):
        Cfg.read(tmp_path / "bin.cfg")
    with pytest.raises(CfgError, match="non-finite"):
        cfg.net.set("x", float("nan"))
    with pytest.raises(CfgError, match="bad option name"):
        cfg.net.set("a=b", 1)


def test_random_text_gives_cfg_errors_only() -> None:
    """Seeded fuzz: any text parses or raises CfgError (nothing else), and
    what parses writes back to the same sections."""
    rng = np.random.default_rng(0)
    alphabet = list("[]=#; \t\n\rabc0123.,-") + ["[net]\n", "width=", "\n[conv]\n", "\u00e9"]
    parsed = 0
    for _ in range(3000):
        text = "".join(rng.choice(alphabet, int(rng.integers(0, 40))))
        try:
            cfg = Cfg.parse(text)
        except CfgError:
            continue
        parsed += 1
        assert Cfg.parse(cfg.to_text()) == cfg
        for section in cfg:
            for key in section.keys():
                for getter in (section.get_int, section.get_float, section.get_list):
                    try:
                        getter(key)
                    except CfgError:
                        pass
    assert parsed > 100


def test_atomic_writes_keep_permissions_and_refuse_read_only(tmp_path: Path) -> None:
    """A rewritten file keeps its mode (mkstemp's 0600 would hide a shared
    cfg from its group); a new one gets what open() gives; a read-only one
    is left alone with an error."""
    import os
    import stat

    from pydarknet.errors import DarknetIOError
    from pydarknet.files import atomic_write_text

    shared = tmp_path / "shared.cfg"
    shared.write_text("[net]\n")
    shared.chmod(0o640)
    atomic_write_text(shared, "[net]\nwidth=32\n")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640 and "width" in shared.read_text()
    fresh = atomic_write_text(tmp_path / "fresh.cfg", "[net]\n")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask
    locked = tmp_path / "locked.cfg"
    locked.write_text("[net]\n")
    locked.chmod(0o444)
    with pytest.raises(DarknetIOError, match="read-only"):
        atomic_write_text(locked, "changed")
    assert locked.read_text() == "[net]\n" and stat.S_IMODE(locked.stat().st_mode) == 0o444
