"""darknet `.cfg` files as a Python model that keeps comments and order.

    >>> cfg = Cfg.read("cfg/yolov2.cfg")
    >>> cfg.net.get_int("width"), len(cfg.layers)
    (608, 32)
    >>> region = cfg.find("region")[0]
    >>> region.get_list("anchors")[:2]
    [0.57273, 0.677385]
    >>> _ = region.set("classes", 3)
    >>> path = cfg.write("my.cfg")

Darknet's reading rules (its `read_cfg`/`read_option`), reproduced here:

- Every space and tab anywhere in a line is removed before the line is
  interpreted: `max_batches = 500200` is key `max_batches`, value `500200`,
  and `anchors = 1.08,1.19,  3.42,4.41` has the value `1.08,1.19,3.42,4.41`.
  (A carriage return is removed too, so Windows line ends work; darknet
  itself keeps it and then fails to recognise `[net]\\r`.)
- A line starting with `[` opens a section; its type is the text between
  the brackets (`[net]` -> `net`).
- Empty lines and lines starting with `#` or `;` are comments.  Only whole
  lines: `filters=255 # x` has the value `255#x` (darknet's `atoi` would
  read 255; `get_int` here rejects it with the file and line).
- `key=value` splits at the first `=`.  A key may occur several times in a
  section; darknet's lookup returns the FIRST occurrence, and so do the
  getters here (`duplicate_keys()` lists the shadowed ones).

Stricter than darknet (which prints a warning or crashes): an option before
the first section, a line without `=`, an empty key or value, and a header
without its closing `]` raise `CfgError` naming the file and line.

Writing keeps the original text of every line that was read and not changed
(spacing, comments, blank lines), so `Cfg.read(p).to_text()` reproduces the
file; options that were set in code are written as `key=value`.

Two sections compare equal when their names and option lists are equal
(comments and line numbers are not compared).
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar, Union

from .errors import CfgError, DarknetIOError
from .files import atomic_write_text

__all__ = ["Cfg", "CfgSection", "format_value", "squeeze"]

T = TypeVar("T", int, float, str)
Value = Union[str, int, float, bool, Sequence[Union[int, float, str]]]

_MISSING = object()
_WHITESPACE = str.maketrans("", "", " \t\r\n\v\f")
NET_NAMES = ("net", "network")


def squeeze(text: str) -> str:
    """The line as darknet sees it: all whitespace removed."""
    return text.translate(_WHITESPACE)


def _format_number(v: int | float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if not math.isfinite(v):
        raise CfgError(f"cannot write a non-finite number ({v}) into a cfg")
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def format_value(value: Value) -> str:
    """A Python value as darknet option text: numbers in their shortest exact
    form (`10`, `0.57273`), booleans as 1/0, sequences comma-separated."""
    if isinstance(value, str):
        text = squeeze(value)
    elif isinstance(value, (int, float)):
        text = _format_number(value)
    else:
        text = ",".join(squeeze(v) if isinstance(v, str) else _format_number(v) for v in value)
    if not text:
        raise CfgError("an option value cannot be empty")
    return text


@dataclass(eq=False)
class _LineInfo:
    text: str
    line: int


@dataclass
class CfgSection:
    """One `[name]` section: its options in file order and its comments.

    `options` holds (key, value) pairs as darknet sees them (whitespace
    removed).  `comments` holds (position, text) pairs: the text line (a `#`
    or `;` comment, or "" for a blank line) is written just before
    `options[position]` (position == len(options): after the last option).
    """

    name: str
    options: list[tuple[str, str]] = field(default_factory=list)
    comments: list[tuple[int, str]] = field(default_factory=list, compare=False)
    line: int = field(default=0, compare=False)
    source: Path | None = field(default=None, compare=False, repr=False)
    # Original text and line of parsed lines, keyed by the (key, value) they
    # normalise to: a changed option no longer matches and is written anew.
    _text: dict[tuple[str, str], _LineInfo] = field(default_factory=dict, compare=False, repr=False)
    _header: str | None = field(default=None, compare=False, repr=False)

    # -- lookups ---------------------------------------------------------------

    def where(self, key: str | None = None) -> str:
        """`file:line` of an option (or of the section header), for messages."""
        line = self.line
        if key is not None:
            value = self.get(key)
            if value is not None and (key, value) in self._text:
                line = self._text[(key, value)].line
        src = str(self.source) if self.source else "<cfg>"
        return f"{src}:{line}" if line else f"{src}: [{self.name}]"

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of the first `key` (darknet's rule), else `default`."""
        for k, v in self.options:
            if k == key:
                return v
        return default

    def __contains__(self, key: object) -> bool:
        return any(k == key for k, _ in self.options)

    def keys(self) -> list[str]:
        """Distinct keys in file order."""
        return list(dict.fromkeys(k for k, _ in self.options))

    def duplicate_keys(self) -> list[str]:
        """Keys given more than once (only the first counts in darknet)."""
        seen: set[str] = set()
        dups: list[str] = []
        for k, _ in self.options:
            if k in seen and k not in dups:
                dups.append(k)
            seen.add(k)
        return dups

    def _convert(self, key: str, default: object, kind: str, conv: Callable[[str], T]) -> T:
        value = self.get(key)
        if value is None:
            if default is _MISSING:
                raise CfgError(f"{self.where()}: [{self.name}] has no '{key}='")
            return default  # type: ignore[return-value]
        try:
            return conv(value)
        except ValueError:
            raise CfgError(f"{self.where(key)}: [{self.name}] {key}={value} is not {kind}") from None

    def get_str(self, key: str, default: object = _MISSING) -> str:
        return self._convert(key, default, "text", str)

    def get_int(self, key: str, default: object = _MISSING) -> int:
        """The value as an integer; CfgError (with file:line) when missing
        without a default, or not an integer."""
        return self._convert(key, default, "an integer", int)

    def get_float(self, key: str, default: object = _MISSING) -> float:
        return self._convert(key, default, "a number", _finite_float)

    def get_list(self, key: str, default: object = _MISSING,
                 item: Callable[[str], T] = float) -> list[T]:  # type: ignore[assignment]
        """A comma-separated value as a list (`anchors`, `steps`, `layers`...)."""
        value = self.get(key)
        if value is None:
            if default is _MISSING:
                raise CfgError(f"{self.where()}: [{self.name}] has no '{key}='")
            return list(default)  # type: ignore[call-overload]
        parts = value.split(",")
        try:
            if any(p == "" for p in parts):
                raise ValueError
            return [item(p) for p in parts]
        except ValueError:
            kind = "integers" if item is int else "numbers"
            raise CfgError(f"{self.where(key)}: [{self.name}] {key}={value} is not a "
                           f"comma-separated list of {kind}") from None

    # -- changes ---------------------------------------------------------------

    def set(self, key: str, value: Value, text: str | None = None) -> CfgSection:
        """Set the first `key` in place (darknet reads only that one), or
        append it.  `text`: the line to write (see `add`).  Returns the
        section, so calls can be chained."""
        key = squeeze(key)
        if not key or "=" in key:
            raise CfgError(f"bad option name {key!r}")
        val = format_value(value)
        self._remember(key, val, text)
        for i, (k, _) in enumerate(self.options):
            if k == key:
                self.options[i] = (key, val)
                return self
        # A new key goes after the last option, before the trailing comments
        # and blank lines (which separate this section from the next).
        end = len(self.options)
        self.comments = [(pos + 1 if pos >= end else pos, c) for pos, c in self.comments]
        self.options.append((key, val))
        return self

    def _remember(self, key: str, val: str, text: str | None) -> None:
        if text is None:
            return
        if squeeze(text) != f"{key}={val}" or "\n" in text:
            raise CfgError(f"line {text!r} does not read as {key}={val}")
        self._text[(key, val)] = _LineInfo(text, 0)

    def add(self, key: str, value: Value, text: str | None = None) -> CfgSection:
        """Append an option even if the key exists, after everything in the
        section (comments included: for building a section line by line).
        `text` is the line to write for it (e.g. `anchors = 10,14,  23,27`);
        it must mean the same."""
        key = squeeze(key)
        if not key or "=" in key:
            raise CfgError(f"bad option name {key!r}")
        val = format_value(value)
        self._remember(key, val, text)
        self.options.append((key, val))
        return self

    def comment(self, text: str) -> CfgSection:
        """Append a comment line (`# ...`) or, with "", a blank line."""
        if text and squeeze(text)[:1] not in ("#", ";"):
            text = "# " + text
        if "\n" in text:
            raise CfgError("a comment must be one line")
        self.comments.append((len(self.options), text))
        return self

    def remove(self, key: str) -> int:
        """Remove every occurrence of `key`; returns how many were removed."""
        keep: list[tuple[str, str]] = []
        removed_at: list[int] = []
        for i, opt in enumerate(self.options):
            if opt[0] == key:
                removed_at.append(i)
            else:
                keep.append(opt)
        if removed_at:
            self.options = keep
            self.comments = [(pos - sum(1 for r in removed_at if r < pos), t)
                             for pos, t in self.comments]
        return len(removed_at)

    # -- text ------------------------------------------------------------------

    def to_lines(self) -> list[str]:
        lines = [self._header if self._header is not None else f"[{self.name}]"]
        by_pos: dict[int, list[str]] = {}
        end = len(self.options)
        for pos, text in self.comments:
            by_pos.setdefault(min(max(pos, 0), end), []).append(text)
        for i, opt in enumerate(self.options):
            lines.extend(by_pos.get(i, ()))
            info = self._text.get(opt)
            lines.append(info.text if info is not None else f"{opt[0]}={opt[1]}")
        lines.extend(by_pos.get(end, ()))
        return lines


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(text)
    return v


@dataclass
class Cfg:
    """A darknet network description: ordered sections plus the comment
    lines before the first section."""

    sections: list[CfgSection] = field(default_factory=list)
    header_comments: list[str] = field(default_factory=list, compare=False)
    source: Path | None = field(default=None, compare=False, repr=False)

    # -- reading ---------------------------------------------------------------

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Cfg:
        """Read a cfg file (DarknetIOError if unreadable, CfgError if bad)."""
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise DarknetIOError(f"{p}: cannot read cfg: {e.strerror or e}") from None
        try:
            text = raw.decode("utf-8-sig")  # a byte-order mark is skipped
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise CfgError(f"{p}:{line}: not a text file (bad UTF-8 byte)") from None
        return cls.parse(text, source=p)

    @classmethod
    def parse(cls, text: str, source: str | os.PathLike[str] | None = None) -> Cfg:
        """Parse cfg text with darknet's rules (see the module docstring)."""
        src = Path(source) if source is not None else None
        where = str(src) if src else "<cfg>"
        cfg = cls(source=src)
        current: CfgSection | None = None
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for lineno, raw in enumerate(lines, 1):
            raw = raw.rstrip("\r")
            s = squeeze(raw)
            if not s or s[0] in "#;":
                if current is None:
                    cfg.header_comments.append(raw)
                else:
                    current.comments.append((len(current.options), raw))
                continue
            if s[0] == "[":
                if not s.endswith("]") or len(s) < 3 or "]" in s[1:-1]:
                    raise CfgError(f"{where}:{lineno}: bad section header {raw.strip()!r} "
                                   "(expected [name])")
                current = CfgSection(s[1:-1], line=lineno, source=src, _header=raw)
                cfg.sections.append(current)
                continue
            if current is None:
                raise CfgError(f"{where}:{lineno}: option {raw.strip()!r} before the first "
                               "[section]")
            key, eq, value = s.partition("=")
            if not eq:
                raise CfgError(f"{where}:{lineno}: expected key=value, found {raw.strip()!r}")
            if not key or not value:
                raise CfgError(f"{where}:{lineno}: empty {'key' if not key else 'value'} "
                               f"in {raw.strip()!r}")
            current.options.append((key, value))
            current._text.setdefault((key, value), _LineInfo(raw, lineno))
        return cfg

    # -- lookups ---------------------------------------------------------------

    @property
    def net(self) -> CfgSection:
        """The first section, which darknet requires to be [net] or [network]."""
        if not self.sections or self.sections[0].name not in NET_NAMES:
            where = str(self.source) if self.source else "<cfg>"
            raise CfgError(f"{where}: the first section must be [net] or [network]")
        return self.sections[0]

    @property
    def layers(self) -> list[CfgSection]:
        """The layer sections (everything after [net])."""
        self.net  # noqa: B018  (validates)
        return self.sections[1:]

    def find(self, name: str) -> list[CfgSection]:
        """All sections of one type, in order (`find("yolo")`)."""
        return [s for s in self.sections if s.name == name]

    def index(self, section: CfgSection) -> int:
        for i, s in enumerate(self.sections):
            if s is section:
                return i
        raise ValueError("section not in this cfg")

    def __iter__(self) -> Iterator[CfgSection]:
        return iter(self.sections)

    def __len__(self) -> int:
        return len(self.sections)

    def __getitem__(self, i: int) -> CfgSection:
        return self.sections[i]

    def add_section(self, name: str, options: Sequence[tuple[str, Value]] = ()) -> CfgSection:
        """Append a new section (written after a blank line)."""
        name = squeeze(name)
        if not name or any(c in name for c in "[]="):
            raise CfgError(f"bad section name {name!r}")
        section = CfgSection(name, source=None)
        for k, v in options:
            section.add(k, v)
        self.sections.append(section)
        return section

    # -- writing ---------------------------------------------------------------

    def to_lines(self) -> list[str]:
        out = list(self.header_comments)
        for section in self.sections:
            # Sections made in code get a blank line before them; parsed ones
            # keep exactly the lines they had.
            if section.line == 0 and out and squeeze(out[-1]) != "":
                out.append("")
            out.extend(section.to_lines())
        return out

    def to_text(self) -> str:
        return "\n".join(self.to_lines()) + "\n"

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp file + rename); returns the path."""
        return atomic_write_text(path, self.to_text())
