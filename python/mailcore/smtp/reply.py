"""SMTP replies (RFC 5321 §4.2) with RFC 3463 enhanced status codes, and EHLO extensions."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_ENHANCED = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?= |\t|$)")


def parse_enhanced(text: str) -> tuple[int, int, int] | None:
    """The ``X.Y.Z`` enhanced status code at the start of ``text``, if there is one."""
    m = _ENHANCED.match(text)
    if m is None:
        return None
    return int(m[1]), int(m[2]), int(m[3])


@dataclass(frozen=True, slots=True)
class Reply:
    """One (possibly multi-line) SMTP reply.

    ``Reply(250, ("2.0.0 OK",))``; ``enhanced`` is parsed from the first line.
    """

    code: int
    enhanced: tuple[int, int, int] | None = field(init=False, compare=False)
    lines: tuple[str, ...] = ("",)

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"reply code out of range: {self.code}")
        if isinstance(self.lines, str):  # a common slip: Reply(250, "OK")
            object.__setattr__(self, "lines", tuple(self.lines.split("\n")))
        if not self.lines:
            object.__setattr__(self, "lines", ("",))
        for line in self.lines:
            if "\r" in line or "\n" in line:
                raise ValueError("reply lines must not contain CR or LF")
        object.__setattr__(self, "enhanced", parse_enhanced(self.lines[0]))

    @classmethod
    def of(cls, code: int, text: str = "") -> Reply:
        """A reply from one text; ``\\n`` separates lines."""
        return cls(code, tuple(text.split("\n")))

    @property
    def text(self) -> str:
        """The reply's text, lines joined with ``\\n`` (the enhanced code included)."""
        return "\n".join(self.lines)

    @property
    def message(self) -> str:
        """The text without the leading enhanced status code."""
        first = self.lines[0]
        if self.enhanced is not None:
            first = _ENHANCED.sub("", first, count=1).lstrip()
        return "\n".join((first, *self.lines[1:]))

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_positive_completion(self) -> bool:
        return 200 <= self.code < 300

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return 500 <= self.code < 600

    def to_bytes(self) -> bytes:
        """The reply as the server writes it (UTF-8, CRLF, ``250-``/``250 `` lines)."""
        last = len(self.lines) - 1
        out = bytearray()
        for i, line in enumerate(self.lines):
            sep = " " if i == last else "-"
            out += f"{self.code}{sep}{line}\r\n".encode()
        return bytes(out)

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


def _parse_extensions(lines: Iterable[str]) -> dict[str, str]:
    extensions: dict[str, str] = {}
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9-]*)(?:[ =](.*))?$", line)
        if m is None:
            continue
        keyword, params = m[1].upper(), (m[2] or "").strip()
        if keyword in extensions and params:
            # ``AUTH PLAIN`` and the old ``AUTH=LOGIN`` may both be present: merge.
            merged = extensions[keyword].split() + [
                p for p in params.split() if p not in extensions[keyword].split()
            ]
            extensions[keyword] = " ".join(merged)
        else:
            extensions.setdefault(keyword, params)
    return extensions


@dataclass(frozen=True, slots=True)
class EhloReply:
    """A positive EHLO (or HELO: no extensions) reply and the extensions it advertises.

    ``extensions`` maps the upper-cased keyword to its parameters (``{"SIZE": "1000"}``).
    """

    reply: Reply
    extensions: Mapping[str, str]

    @classmethod
    def parse(cls, reply: Reply, *, extended: bool = True) -> EhloReply:
        exts = _parse_extensions(reply.lines[1:]) if extended else {}
        return cls(reply, MappingProxyType(exts))

    def supports(self, name: str) -> bool:
        return name.upper() in self.extensions

    @property
    def max_size(self) -> int | None:
        """The SIZE limit in bytes, None when unlimited or not advertised."""
        value = self.extensions.get("SIZE", "").split()
        if not value or not value[0].isdigit():
            return None
        size = int(value[0])
        return size or None

    @property
    def auth_mechanisms(self) -> frozenset[str]:
        return frozenset(m.upper() for m in self.extensions.get("AUTH", "").split())

    @property
    def hostname(self) -> str:
        first = self.reply.lines[0].split()
        return first[0] if first else ""
