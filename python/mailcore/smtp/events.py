"""Commands a client sends and events the sans-IO machines produce.

Client side: :class:`Ehlo` … :class:`Quit` are given to ``ClientProtocol.send``; the
machine yields :class:`Greeting`, :class:`Response` (one per command, in the order sent)
and :class:`ConnectionClosed`.

Server side: ``ServerProtocol.next_event`` yields :class:`Hello`, :class:`MailFrom`,
:class:`RcptTo`, :class:`DataStart`, :class:`ChunkReceived`, :class:`MessageReceived`, …
each to be answered with exactly one reply.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

from .reply import Reply

# -- client commands -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ehlo:
    hostname: str


@dataclass(frozen=True, slots=True)
class Helo:
    hostname: str


@dataclass(frozen=True, slots=True)
class StartTls:
    pass


@dataclass(frozen=True, slots=True)
class AuthPlain:
    """``AUTH PLAIN`` with an initial response (RFC 4616)."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthLogin:
    """``AUTH LOGIN``: the machine answers the two 334 challenges itself."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Mail:
    """``MAIL FROM``; ``sender=""`` is the null reverse-path ``<>``."""

    sender: str
    size: int | None = None
    body_8bit: bool = False
    smtputf8: bool = False


@dataclass(frozen=True, slots=True)
class Rcpt:
    recipient: str


@dataclass(frozen=True, slots=True)
class Data:
    pass


@dataclass(frozen=True, slots=True)
class Message:
    """The message content after a 354 reply to DATA.

    The machine normalises every bare CR and bare LF to CRLF, ensures a final CRLF,
    dot-stuffs and appends the ``.`` line.
    """

    content: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Bdat:
    """``BDAT <size> [LAST]`` and the chunk (RFC 3030 CHUNKING), in place of DATA.

    ``last=True`` ends the message (a one-chunk message is ``Bdat(content)``). The machine
    normalises every bare CR and bare LF to CRLF (across chunk boundaries too) and makes
    the message end in CRLF, exactly as :class:`Message` does, so the server receives the
    same bytes by either route; there is no dot-stuffing and no ``.`` line. ``size`` in
    the command line is the length after that normalisation.
    """

    chunk: bytes = field(repr=False)
    last: bool = True


@dataclass(frozen=True, slots=True)
class Rset:
    pass


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
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


@dataclass(frozen=True, slots=True)
class Greeting:
    """The server's opening reply (220, or 554/421 when it will not serve us)."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Response:
    """The reply to ``command``."""

    command: Command
    reply: Reply


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
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
