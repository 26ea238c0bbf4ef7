"""Commands a client sends and events the sans-IO machines produce.

Client side: :class:`Ehlo` … :class:`Quit` are given to ``ClientProtocol.send``; the
machine yields :class:`Greeting`, :class:`Response` (one per command, in the order sent)
and :class:`ConnectionClosed`.

The client's commands and events are frozen msgspec Structs: a pipelining sender makes
several per message, and a Struct is built about five times faster than a frozen
dataclass.

Server side: ``ServerProtocol.next_event`` yields :class:`Hello`, :class:`MailFrom`,
:class:`RcptTo`, :class:`DataStart`, :class:`ChunkReceived`, :class:`MessageReceived`, …
each to be answered with exactly one reply.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

import msgspec

from .reply import Reply

# -- client commands -------------------------------------------------------------------


class Ehlo(msgspec.Struct, frozen=True):
    hostname: str


class Helo(msgspec.Struct, frozen=True):
    hostname: str


class StartTls(msgspec.Struct, frozen=True):
    pass


class AuthPlain(msgspec.Struct, frozen=True):
    """``AUTH PLAIN`` with an initial response (RFC 4616)."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"{type(self).__name__}(username={self.username!r}, password=...)"


class AuthLogin(msgspec.Struct, frozen=True):
    """``AUTH LOGIN``: the machine answers the two 334 challenges itself."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"{type(self).__name__}(username={self.username!r}, password=...)"


class Mail(msgspec.Struct, frozen=True):
    """``MAIL FROM``; ``sender=""`` is the null reverse-path ``<>``."""

    sender: str
    size: int | None = None
    body_8bit: bool = False
    smtputf8: bool = False


class Rcpt(msgspec.Struct, frozen=True):
    recipient: str


class Data(msgspec.Struct, frozen=True):
    pass


class Message(msgspec.Struct, frozen=True):
    """The message content after a 354 reply to DATA.

    The machine normalises every bare CR and bare LF to CRLF, ensures a final CRLF,
    dot-stuffs and appends the ``.`` line.
    """

    content: bytes

    def __repr__(self) -> str:
        return f"Message(<{len(self.content)} bytes>)"


class Bdat(msgspec.Struct, frozen=True):
    """``BDAT <size> [LAST]`` and the chunk (RFC 3030 CHUNKING), in place of DATA.

    ``last=True`` ends the message (a one-chunk message is ``Bdat(content)``). The machine
    normalises every bare CR and bare LF to CRLF (across chunk boundaries too) and makes
    the message end in CRLF, exactly as :class:`Message` does, so the server receives the
    same bytes by either route; there is no dot-stuffing and no ``.`` line. ``size`` in
    the command line is the length after that normalisation.
    """

    chunk: bytes
    last: bool = True

    def __repr__(self) -> str:
        return f"Bdat(<{len(self.chunk)} bytes>, last={self.last})"


class Rset(msgspec.Struct, frozen=True):
    pass


class Noop(msgspec.Struct, frozen=True):
    pass


class Quit(msgspec.Struct, frozen=True):
    pass


Command: TypeAlias = (
    Ehlo
    | Helo
    | StartTls
    | AuthPlain
    | AuthLogin
    | Mail
    | Rcpt
    | Data
    | Message
    | Bdat
    | Rset
    | Noop
    | Quit
)

# -- client events ---------------------------------------------------------------------


class Greeting(msgspec.Struct, frozen=True):
    """The server's opening reply (220, or 554/421 when it will not serve us)."""

    reply: Reply


class Response(msgspec.Struct, frozen=True):
    """The reply to ``command``."""

    command: Command
    reply: Reply


class ConnectionClosed(msgspec.Struct, frozen=True):
    """The peer closed the connection (EOF)."""


ClientEvent: TypeAlias = Greeting | Response | ConnectionClosed

# -- server events ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """EHLO (``extended``) or HELO."""

    hostname: str
    extended: bool = True


@dataclass(frozen=True, slots=True)
class MailFrom:
    """``MAIL FROM:<address> PARAMS``; params keys upper-cased, value None for flags."""

    address: str
    params: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RcptTo:
    address: str
    params: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DataStart:
    """DATA with a sender and at least one accepted recipient: answer 354 to go on."""


@dataclass(frozen=True, slots=True)
class ChunkReceived:
    """A whole ``BDAT <size>`` chunk without ``LAST`` arrived: answer 250 to go on (any
    other reply fails the transaction; the client must then send RSET)."""

    size: int


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """The content up to ``CRLF.CRLF`` (un-dot-stuffed), or of every BDAT chunk up to the
    one with ``LAST`` (``chunked=True``); every line ending in CRLF either way; with the
    transaction's envelope (the sender and the recipients accepted)."""

    content: bytes = field(repr=False)
    mail_from: str = ""
    recipients: tuple[str, ...] = ()
    chunked: bool = False


@dataclass(frozen=True, slots=True)
class ResetRequested:
    pass


@dataclass(frozen=True, slots=True)
class NoopRequested:
    pass


@dataclass(frozen=True, slots=True)
class QuitRequested:
    pass


@dataclass(frozen=True, slots=True)
class StartTlsRequested:
    """Answer 220, then start TLS on the transport."""


@dataclass(frozen=True, slots=True)
class CommandRejected:
    """A command the protocol refuses by itself (syntax, sequence, unknown verb).

    Send ``reply`` (it is also what ``ServerProtocol.default_reply`` gives).
    """

    command: str
    reply: Reply


ServerEvent: TypeAlias = (
    Hello
    | MailFrom
    | RcptTo
    | DataStart
    | ChunkReceived
    | MessageReceived
    | ResetRequested
    | NoopRequested
    | QuitRequested
    | StartTlsRequested
    | CommandRejected
    | ConnectionClosed
)


class NeedData(enum.Enum):
    """Sentinel type of :data:`NEED_DATA`."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final[Literal[NeedData.NEED_DATA]] = NeedData.NEED_DATA
"""``next_event()`` returns this when it needs more bytes from the peer."""
