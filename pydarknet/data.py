"""darknet's dataset files: `.data`, `.names`, image lists and label files.

- A `.data` file is `key=value` lines (`#`/`;` comment lines), darknet keys
  `classes`, `train`, `valid`, `names`, `backup`, `eval`; other keys are
  kept in `DataConfig.extra` (e.g. `coco_json`, written by the COCO
  converter for `pydarknet map`).  The first occurrence of a key wins, as in
  darknet.  darknet removes ALL whitespace from a line, so a path with a
  space in it does not work in darknet; here only the ends are stripped.
- Relative paths, in a `.data` file and in an image list, are resolved as
  darknet does, against the CURRENT directory; when nothing exists there,
  against the folder of the file that names them (the `.data` file, or the
  list).  So a dataset folder with relative paths works from its own folder
  (darknet) and from anywhere (pydarknet).
- darknet finds an image's label file from the image path as written in the
  list (`label_path_for`), as pjreddie's darknet: the first `images`
  becomes `labels`, then the first `JPEGImages`, then the first `raw`
  (`/data/raw/images/a.jpg` -> `/data/labels/labels/a.txt`); then the
  first `.jpg`, `.png`, `.JPG` and `.JPEG` become `.txt`, wherever they
  occur.  Other image extensions (`.jpeg`, `.bmp`, ...), for which darknet
  would read the image itself as its labels, become `.txt` too.
- A label file has one line per object: `class x_center y_center width
  height`, the four numbers relative to the image size; x, y in [0, 1] and
  w, h in (0, 1].  pjreddie's darknet exits when a label file is missing,
  AlexeyAB's takes the image as having no objects: `check_labels` reports a
  missing one.
"""
from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from .errors import DarknetIOError, DataError
from .files import atomic_write_text

__all__ = [
    "DATA_KEYS", "IMAGE_EXTENSIONS", "DataConfig", "DatasetReport", "ListEntry", "Problem",
    "check_dataset", "check_labels", "format_label_line", "label_path_for", "label_path_str",
    "parse_labels", "progress_bar", "read_data_file", "read_image_list", "read_labels", "read_names",
    "resolve_path", "write_data_file", "write_image_list", "write_names",
]

DATA_KEYS = ("classes", "train", "valid", "names", "backup", "eval")
MAX_CLASSES = 1_000_000  # a C int holds classes * (5 + classes) per anchor well below it
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm",
                    ".webp", ".jpe", ".jp2")

T = TypeVar("T")


def progress_bar(iterable: Iterable[T], *, total: int | None = None, desc: str = "",
                 enabled: bool = True, unit: str = "it") -> Iterator[T]:
    """tqdm on stderr, shown only when `enabled` and stderr is a terminal."""
    from tqdm import tqdm

    show = enabled and sys.stderr.isatty()
    return iter(tqdm(iterable, total=total, desc=desc, disable=not show, leave=False, unit=unit,
                     dynamic_ncols=True))


# -- text files ------------------------------------------------------------------


def _read_text(path: Path, what: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DarknetIOError(f"{path}: {what} not found") from None
    except OSError as e:
        raise DarknetIOError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark is skipped
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: {what} is not UTF-8 text") from None


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def resolve_path(value: str | os.PathLike[str], relative_to: Path | None) -> Path:
    """A path from a dataset file, resolved the darknet way (current
    directory) or, when nothing exists there, against `relative_to` (the
    folder of the file naming it).  Neither exists: the darknet path."""
    p = Path(value).expanduser()
    if p.is_absolute() or p.exists() or relative_to is None:
        return p
    other = relative_to / p
    return other if other.exists() else p


# -- .data -----------------------------------------------------------------------


@dataclass
class DataConfig:
    """The contents of a darknet `.data` file.  Paths are kept as written;
    `path_of(key)` resolves one (see the module docstring)."""

    classes: int
    train: str | None = None
    valid: str | None = None
    names: str | None = None
    backup: str | None = None
    eval: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    source: Path | None = field(default=None, compare=False)
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def get(self, key: str) -> str | None:
        if key in DATA_KEYS:
            value = getattr(self, key)
            return None if value is None else str(value)
        return self.extra.get(key)

    def where(self, key: str | None = None) -> str:
        src = str(self.source) if self.source else "<data>"
        line = self.lines.get(key or "", 0)
        return f"{src}:{line}" if line else src

    def path_of(self, key: str, required: bool = True) -> Path | None:
        """The resolved path of `train`, `valid`, `names`, `backup` or an
        extra path key.  Missing key: DataError if `required`, else None."""
        value = self.get(key)
        if value is None:
            if required:
                raise DataError(f"{self.where()}: no '{key}=' line")
            return None
        return resolve_path(value, self.source.parent if self.source else None)

    def read_names(self) -> list[str]:
        """The class names, checked against `classes`."""
        names_path = self.path_of("names")
        assert names_path is not None
        names = read_names(names_path)
        if len(names) != self.classes:
            raise DataError(f"{self.where('names')}: {names_path} has {len(names)} names but "
                            f"classes={self.classes}")
        return names


def read_data_file(path: str | os.PathLike[str]) -> DataConfig:
    """Read a darknet `.data` file (DataError with file:line when bad)."""
    p = Path(path)
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    for lineno, raw in enumerate(_lines(_read_text(p, ".data file")), 1):
        s = raw.strip()
        if not s or s[0] in "#;":
            continue
        key, eq, value = s.partition("=")
        key = "".join(key.split())
        value = value.strip()
        if not eq or not key:
            raise DataError(f"{p}:{lineno}: expected key=value, found {s!r}")
        if not value:
            raise DataError(f"{p}:{lineno}: '{key}=' has no value")
        if key not in values:  # darknet's option_find: the first one counts
            values[key] = value
            lines[key] = lineno
    if "classes" not in values:
        raise DataError(f"{p}: no 'classes=' line (darknet would silently use 20)")
    try:
        classes = int(values.pop("classes"))
    except ValueError:
        raise DataError(f"{p}:{lines['classes']}: classes must be an integer") from None
    if not 1 <= classes <= MAX_CLASSES:
        raise DataError(f"{p}:{lines['classes']}: classes must be in 1..{MAX_CLASSES}, got {classes}")
    known = {k: values.pop(k) for k in DATA_KEYS[1:] if k in values}
    return DataConfig(classes=classes, extra=values, source=p, lines=lines, **known)


def write_data_file(path: str | os.PathLike[str], config: DataConfig) -> Path:
    """Write `config` as a `.data` file (darknet keys first, then extras)."""
    p = Path(path)
    out = [f"classes={config.classes}"]
    for key in DATA_KEYS[1:]:
        value = getattr(config, key)
        if value is not None:
            out.append(f"{key}={value}")
    for key, value in config.extra.items():
        if key in DATA_KEYS or not key or "=" in key or any(c.isspace() for c in key):
            raise DataError(f"bad extra .data key {key!r}")
        out.append(f"{key}={value}")
    for line in out:
        if "\n" in line or "\r" in line:
            raise DataError(f"a .data value cannot contain a line break: {line!r}")
    atomic_write_text(p, "\n".join(out) + "\n")
    return p


# -- .names ----------------------------------------------------------------------


def read_names(path: str | os.PathLike[str]) -> list[str]:
    """Class names, one per line (trailing blank lines ignored; a blank
    line among the names is an error: darknet would make it a class)."""
    p = Path(path)
    lines = [line.strip() for line in _lines(_read_text(p, "names file"))]
    while lines and not lines[-1]:
        lines.pop()
    for i, name in enumerate(lines, 1):
        if not name:
            raise DataError(f"{p}:{i}: empty class name")
    if not lines:
        raise DataError(f"{p}: no class names")
    return lines


def write_names(path: str | os.PathLike[str], names: Sequence[str]) -> Path:
    p = Path(path)
    for i, name in enumerate(names):
        if not name.strip() or "\n" in name or "\r" in name:
            raise DataError(f"class {i}: bad name {name!r} (empty or with a line break)")
    atomic_write_text(p, "".join(f"{n.strip()}\n" for n in names))
    return p


# -- image lists and label paths -------------------------------------------------


# the extensions pjreddie's darknet turns into .txt, in its order
DARKNET_LABEL_EXTENSIONS = (".jpg", ".png", ".JPG", ".JPEG")


def label_path_for(image_path: str | os.PathLike[str]) -> Path:
    """darknet's label file for an image (see the module's notes): the first
    `images`, `JPEGImages` and `raw` -> `labels`, then `.jpg`, `.png`,
    `.JPG`, `.JPEG` -> `.txt` each where it first occurs.  Applied to the
    path as written (not resolved), as darknet does."""
    return Path(label_path_str(os.fspath(image_path)))


def label_path_str(image_path: str) -> str:
    """`label_path_for` on a string, returning a string (fast path for
    converters handling 100k images)."""
    # darknet's quirk, reproduced: first occurrences anywhere in the path,
    # so /data/raw/... and drawing.jpg are rewritten too
    s = image_path.replace("images", "labels", 1).replace("JPEGImages", "labels", 1)
    s = s.replace("raw", "labels", 1)
    slash = max(s.rfind("/"), s.rfind(os.sep))
    dot = s.rfind(".")
    ext = s[dot:] if dot > slash + 1 else ""
    if ext.lower() not in IMAGE_EXTENSIONS:
        raise DataError(f"{image_path}: not an image file name (darknet derives the label path "
                        f"by replacing the image extension: {', '.join(IMAGE_EXTENSIONS[:5])}...)")
    if ext not in DARKNET_LABEL_EXTENSIONS:
        return s[:dot] + ".txt"
    for darknet_ext in DARKNET_LABEL_EXTENSIONS:
        s = s.replace(darknet_ext, ".txt", 1)
    if not s.endswith(".txt"):
        raise DataError(f"{image_path}: darknet would read the image itself as its label file "
                        f"({s}): an earlier '.jpg' or '.png' in the path takes the extension's "
                        f"place; rename that folder")
    return s


@dataclass(frozen=True)
class ListEntry:
    """One line of an image list: the text, the resolved image path and its
    label path (darknet's rule on the text, resolved the same way)."""

    line: int
    text: str
    image: Path
    label: Path | None  # None when the name has no image extension


def _exists(path: Path) -> bool:
    """Path.exists() that says False where the OS cannot even look (a name
    too long for it) instead of raising."""
    try:
        return path.exists()
    except OSError:
        return False


def read_image_list(path: str | os.PathLike[str], *, skip_blank: bool = True) -> list[ListEntry]:
    """Read a darknet image list (train.txt).  Blank lines are skipped
    (darknet would try to load an image named "")."""
    p = Path(path)
    base = p.parent
    cwd = Path.cwd()
    entries: list[ListEntry] = []
    for lineno, raw in enumerate(_lines(_read_text(p, "image list")), 1):
        text = raw.strip()
        if not text:
            if skip_blank:
                continue
            raise DataError(f"{p}:{lineno}: empty line in the image list")
        img = Path(text).expanduser()
        root: Path | None = None
        if not img.is_absolute():
            root = cwd if _exists(cwd / img) or not _exists(base / img) else base
            img = img if root is cwd else root / img
        try:
            label: Path | None = label_path_for(text)
            if root is base and label is not None:
                label = base / label
        except DataError:
            label = None
        entries.append(ListEntry(lineno, text, img, label))
    return entries


def write_image_list(path: str | os.PathLike[str], images: Iterable[str | os.PathLike[str]]) -> Path:
    p = Path(path)
    atomic_write_text(p, "".join(f"{os.fspath(i)}\n" for i in images))
    return p


# -- label files -----------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """Something wrong with a dataset file; line 0 means the whole file."""

    file: Path
    line: int
    message: str
    level: str = "error"  # or "warning"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else f"{self.file}"
        return f"{where}: {self.level}: {self.message}"


def format_label_line(class_id: int, x: float, y: float, w: float, h: float) -> str:
    """One label line with 6 decimals (as the converters write them)."""
    return f"{class_id} {x:.6f} {y:.6f} {w:.6f} {h:.6f}"


def parse_labels(text: str, path: Path, classes: int) -> tuple[np.ndarray, list[Problem]]:
    """Parse label text; returns the valid rows (n, 5) float32 and the
    problems (each bad line is reported and left out)."""
    rows: list[tuple[float, float, float, float, float]] = []
    row_lines: list[int] = []
    problems: list[Problem] = []
    for lineno, raw in enumerate(_lines(text), 1):
        fields = raw.split()
        if not fields:
            continue
        if len(fields) != 5:
            problems.append(Problem(path, lineno, f"expected 5 fields (class x y w h), "
                                                  f"found {len(fields)}: {raw.strip()!r}"))
            continue
        if not all(f.isascii() and "_" not in f for f in fields):  # Python's int/float take "٣" and "1_0"
            problems.append(Problem(path, lineno, f"not plain ASCII numbers (as C reads them): "
                                                  f"{raw.strip()!r}"))
            continue
        try:
            cls = int(fields[0])
        except ValueError:
            problems.append(Problem(path, lineno, f"class {fields[0]!r} is not an integer"))
            continue
        try:
            x, y, w, h = (float(f) for f in fields[1:])
        except ValueError:
            problems.append(Problem(path, lineno, f"unparsable numbers: {raw.strip()!r}"))
            continue
        if not 0 <= cls < classes:
            problems.append(Problem(path, lineno, f"class {cls} out of range 0..{classes - 1}"))
            continue
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            problems.append(Problem(path, lineno, f"non-finite coordinate: {raw.strip()!r}"))
            continue
        bad = [f"{n}={v:g} outside [0, 1]" for n, v in (("x", x), ("y", y)) if not 0 <= v <= 1]
        bad += [f"{n}={v:g} outside (0, 1]" for n, v in (("w", w), ("h", h)) if not 0 < v <= 1]
        if bad:
            problems.append(Problem(path, lineno, ", ".join(bad)))
            continue
        rows.append((cls, x, y, w, h))
        row_lines.append(lineno)
    array = np.array(rows, dtype=np.float32).reshape(-1, 5)
    tiny = np.flatnonzero((array[:, 3:] <= 0).any(axis=1))  # > 0 in float64, 0 in float32
    if len(tiny):
        problems.extend(Problem(path, row_lines[i], "w or h too small (0 as a float)") for i in tiny)
        problems.sort(key=lambda q: q.line)
        array = np.delete(array, tiny, axis=0)
    return array, problems


def read_labels(path: str | os.PathLike[str], classes: int, *, missing_ok: bool = False) -> np.ndarray:
    """A label file as an (n, 5) float32 array `class x y w h`.  DataError
    (file:line) on the first bad line; a missing file is DataError unless
    `missing_ok` (then no objects, as AlexeyAB's darknet does)."""
    p = Path(path)
    try:
        text = _read_text(p, "label file")
    except DarknetIOError:
        if missing_ok and not p.exists():
            return np.zeros((0, 5), dtype=np.float32)
        raise DataError(f"{p}: label file not found or unreadable") from None
    array, problems = parse_labels(text, p, classes)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(f"{problems[0].file}:{problems[0].line}: {problems[0].message}{more}")
    return array


def check_labels(path: str | os.PathLike[str], classes: int) -> list[Problem]:
    """Every problem of one label file (empty list: fine)."""
    p = Path(path)
    try:
        text = _read_text(p, "label file")
    except DarknetIOError:
        return [Problem(p, 0, "label file missing or unreadable (pjreddie's darknet exits "
                              "on it, AlexeyAB's takes the image as empty)")]
    except DataError as e:
        return [Problem(p, 0, str(e).split(": ", 1)[-1])]
    return parse_labels(text, p, classes)[1]


# -- whole dataset ---------------------------------------------------------------

_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*", b"P5", b"P6",
          b"P4", b"P3", b"P2")


def _looks_like_image(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return True
    return any(head.startswith(m) for m in _MAGIC)


@dataclass
class DatasetReport:
    """What `check_dataset` found."""

    data_file: Path
    problems: list[Problem] = field(default_factory=list)
    images: dict[str, int] = field(default_factory=dict)  # per list: train/valid
    boxes_per_class: list[int] = field(default_factory=list)
    empty_images: int = 0
    names: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self, max_problems: int = 50) -> str:
        out = [str(p) for p in self.problems[:max_problems]]
        if len(self.problems) > max_problems:
            out.append(f"... and {len(self.problems) - max_problems} more problems")
        lists = ", ".join(f"{k}: {v} images" for k, v in self.images.items())
        out.append(f"{self.data_file}: {lists or 'no lists'}; {sum(self.boxes_per_class)} boxes, "
                   f"{self.empty_images} images without objects")
        if self.boxes_per_class and self.names:
            width = max(len(n) for n in self.names)
            out.extend(f"  {i:3d} {n:<{width}} {c:8d}"
                       for i, (n, c) in enumerate(zip(self.names, self.boxes_per_class)))
        n_err, n_warn = len(self.errors), len(self.problems) - len(self.errors)
        out.append("OK" if self.ok and not n_warn else
                   f"{n_err} errors, {n_warn} warnings" + ("" if n_err else " (usable)"))
        return "\n".join(out)


def _problem_from(error: DataError | DarknetIOError, file: Path) -> Problem:
    """A Problem from an error whose message starts with `file:line: `."""
    m = re.match(r"^(.*?):(\d+): (.*)$", error.message, re.S)
    if m and m.group(1) == str(file):
        return Problem(file, int(m.group(2)), m.group(3))
    prefix = f"{file}: "
    msg = error.message[len(prefix):] if error.message.startswith(prefix) else error.message
    return Problem(file, 0, msg)


def check_dataset(data_file: str | os.PathLike[str], *, lists: Sequence[str] = ("train", "valid"),
                  decode_images: bool = False, progress: bool = True) -> DatasetReport:
    """Validate a `.data` file, its names, lists, images and label files.

    Every listed image must exist and look like an image (its first bytes;
    `decode_images` decodes it with OpenCV, slow); its label file (darknet's
    rule) must exist and every line be valid.  Problems carry file and line.
    A missing `valid=` list is a warning (training works, `map` does not).
    """
    p = Path(data_file)
    report = DatasetReport(p)
    try:
        config = read_data_file(p)
    except (DataError, DarknetIOError) as e:
        report.problems.append(_problem_from(e, p))
        return report
    classes = config.classes
    report.boxes_per_class = [0] * classes
    try:
        report.names = config.read_names()
    except (DataError, DarknetIOError) as e:  # the problem gives the place: not twice
        message = e.message.removeprefix(f"{config.where('names')}: ")
        report.problems.append(Problem(p, config.lines.get("names", 0), message))
    for key in lists:
        if config.get(key) is None:
            level = "error" if key == "train" else "warning"
            report.problems.append(Problem(p, 0, f"no '{key}=' list", level))
            continue
        list_path = config.path_of(key)
        assert list_path is not None
        try:
            text = _read_text(list_path, "image list")
            entries = read_image_list(list_path)
        except (DataError, DarknetIOError) as e:
            report.problems.append(Problem(p, config.lines.get(key, 0), e.message))
            continue
        for lineno, raw in enumerate(_lines(text), 1):
            if not raw.strip():
                report.problems.append(Problem(list_path, lineno, "empty line (darknet would try "
                                                                  "to load an image named \"\")"))
        report.images[key] = len(entries)
        if not entries:
            report.problems.append(Problem(list_path, 0, "the list is empty",
                                           "error" if key == "train" else "warning"))
        for entry in progress_bar(entries, total=len(entries), desc=f"check {key}",
                                  enabled=progress, unit="img"):
            _check_entry(entry, list_path, classes, decode_images, report)
    return report


def _check_entry(entry: ListEntry, list_path: Path, classes: int, decode: bool,
                 report: DatasetReport) -> None:
    if not entry.image.is_file():
        report.problems.append(Problem(list_path, entry.line, f"image not found: {entry.text}"))
        return
    if decode:
        import cv2

        if cv2.imread(str(entry.image), cv2.IMREAD_UNCHANGED) is None:
            report.problems.append(Problem(list_path, entry.line, f"cannot decode image {entry.text}"))
            return
    elif not _looks_like_image(entry.image):
        report.problems.append(Problem(list_path, entry.line,
                                       f"not a JPEG/PNG/BMP/TIFF/PPM/WebP file: {entry.text}"))
        return
    if entry.label is None:
        report.problems.append(Problem(list_path, entry.line,
                                       f"no image extension, darknet cannot derive a label path: "
                                       f"{entry.text}"))
        return
    if entry.label == entry.image:
        report.problems.append(Problem(list_path, entry.line, "label path equals image path"))
        return
    try:
        text = entry.label.read_text(encoding="utf-8")
    except FileNotFoundError:
        report.problems.append(Problem(entry.label, 0, f"label file missing for {entry.text} "
                                       f"({list_path}:{entry.line})"))
        return
    except (OSError, UnicodeDecodeError) as e:
        report.problems.append(Problem(entry.label, 0, f"cannot read label file: {e}"))
        return
    array, problems = parse_labels(text, entry.label, classes)
    report.problems.extend(problems)
    if len(array) == 0:
        report.empty_images += 1
    for c in array[:, 0].astype(np.int64):
        report.boxes_per_class[c] += 1
