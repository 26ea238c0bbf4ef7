"""The server side of SMTP as a sans-IO state machine (for the dev sink and tests).

Feed the client's bytes with :meth:`ServerProtocol.receive_data`, take one event from
:meth:`ServerProtocol.next_event`, and answer it with exactly one reply through
:meth:`ServerProtocol.send` (``default_reply(event)`` gives the usual one) before asking
for the next event. Pipelined commands are simply already in the buffer: collect the
replies and write them out when ``next_event`` returns :data:`NEED_DATA`.

The message ends only at ``<CRLF>.<CRLF>``; a bare ``\\n.\\n`` or ``\\r.\\r`` inside is
content (with every bare CR or LF turned into CRLF), so nothing can be smuggled past the
end of the data.

With ``chunking=True`` the server offers CHUNKING (RFC 3030): ``BDAT <size> [LAST]`` is
followed by exactly ``size`` octets, which the machine always consumes, even when the
command is refused (no MAIL, no accepted recipient: the client may have pipelined the
chunk after RCPTs that failed), and only then yields one event to answer:
:class:`ChunkReceived` for a chunk without LAST, :class:`MessageReceived` (``chunked``)
for the last, or :class:`CommandRejected`. A refused chunk ends the transaction. The
content is normalised as with DATA (bare CR/LF to CRLF, a final CRLF).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping

from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .events import (
    NEED_DATA,
    ChunkReceived,
    CommandRejected,
    ConnectionClosed,
    DataStart,
    Hello,
    MailFrom,
    MessageReceived,
    NeedData,
    NoopRequested,
    QuitRequested,
    RcptTo,
    ResetRequested,
    ServerEvent,
    StartTlsRequested,
)
from .protocol import normalize_newlines, normalize_piece
from .reply import Reply

MAX_COMMAND_LINE = 2000
MAX_RECIPIENTS = 1000
DEFAULT_MAX_SIZE = 32 * 1024 * 1024
MAX_CHUNK_DIGITS = 15
"""Longest BDAT size accepted (in digits); a longer one is a syntax error."""

_BDAT = re.compile(rf"([0-9]{{1,{MAX_CHUNK_DIGITS}}})(?:[ \t]+(LAST))?[ \t]*", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f]")  # tab is allowed
_PATH = re.compile(r"\s*<([^<>]*)>(?:\s+(.*))?|\s*([^<>\s]+)(?:\s+(.*))?")


class ServerState(enum.Enum):
    GREETING = "greeting"  # the application must send the greeting first
    COMMAND = "command"
    DATA = "data"  # reading the message after 354
    CHUNK = "chunk"  # reading the octets of a BDAT chunk
    CLOSED = "closed"


def _rejected(command: str, code: int, text: str) -> CommandRejected:
    return CommandRejected(command, Reply.of(code, text))


def _params(text: str | None) -> dict[str, str | None] | None:
    params: dict[str, str | None] = {}
    for item in (text or "").split():
        key, eq, value = item.partition("=")
        if not key or (eq and not value):
            return None
        params[key.upper()] = value if eq else None
    return params


class ServerProtocol:
    """The server's SMTP state machine.

    ``starttls=True`` advertises STARTTLS (until TLS is up: after answering 220 to
    :class:`StartTlsRequested`, wrap the transport in TLS). ``chunking`` advertises
    CHUNKING and accepts BDAT (else BDAT is refused with 502, like a server that does not
    know it). ``pipelining`` only changes what EHLO advertises: pipelined commands are
    always read correctly.
    """

    def __init__(
        self,
        hostname: str = "localhost",
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        starttls: bool = False,
        chunking: bool = True,
        pipelining: bool = True,
    ) -> None:
        self.hostname = hostname
        self.max_size = max_size
        self.starttls = starttls
        self.chunking = chunking
        self.pipelining = pipelining
        self.tls_active = False
        self._state = ServerState.GREETING
        self._buf = bytearray()
        self._eof = False
        self._pending: ServerEvent | None = None
        self._error: ProtocolError | None = None
        self._hello = False
        self._extended = False
        self._mail: str | None = None
        self._utf8 = False
        self._rcpts: list[str] = []
        self._data = bytearray()
        self._bol = True
        self._oversize = False
        self._chunk_size = 0
        self._chunk_left = 0  # octets of the current BDAT chunk still to read
        self._chunk_last = False
        self._chunk_refusal: CommandRejected | None = None  # the answer once it is read
        self._chunked = False  # a BDAT chunk was accepted in this transaction
        self._close_after_reply = False

    # -- introspection ---------------------------------------------------------------

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def mail_from(self) -> str | None:
        """The sender of the open transaction."""
        return self._mail

    @property
    def recipients(self) -> tuple[str, ...]:
        """The recipients accepted (2xx) in the open transaction."""
        return tuple(self._rcpts)

    def extensions(self) -> list[str]:
        exts = ["PIPELINING"] if self.pipelining else []
        exts += [f"SIZE {self.max_size}", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"]
        if self.chunking:
            exts.append("CHUNKING")
        if self.starttls and not self.tls_active:
            exts.append("STARTTLS")
        return exts

    # -- input -----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; ``b""`` means it closed the connection."""
        if self._eof:
            if data:
                raise LocalProtocolError("data received after EOF")
            return
        if not data:
            self._eof = True
        elif self._state is not ServerState.CLOSED:
            self._buf += data

    def next_event(self) -> ServerEvent | NeedData:
        if self._error is not None:
            raise RemoteProtocolError(f"the connection is unusable after: {self._error}")
        if self._pending is not None:
            raise LocalProtocolError(f"answer {self._pending!r} before the next event")
        if self._state is ServerState.GREETING:
            raise LocalProtocolError("send the greeting first")
        if self._state is ServerState.CLOSED:
            return ConnectionClosed()
        try:
            if self._state is ServerState.COMMAND:
                event = self._command_event()
            elif self._state is ServerState.DATA:
                event = self._data_event()
            else:
                event = self._chunk_event()
        except ProtocolError as exc:
            self._error = exc
            raise
        if event is NEED_DATA:
            if self._eof:
                self._state = ServerState.CLOSED
                return ConnectionClosed()
            return NEED_DATA
        self._pending = event
        return event

    # -- message data ----------------------------------------------------------------

    def _append(self, piece: bytes) -> None:
        if self._oversize:
            return
        if len(self._data) + len(piece) > self.max_size:
            self._oversize = True
            self._data.clear()
            return
        self._data += piece

    def _data_event(self) -> ServerEvent | NeedData:
        # Whole runs of lines at a time (find/replace in C), not a line per step.
        buf = self._buf
        while buf:
            if self._bol and buf[:1] == b".":
                if buf.startswith(b".\r\n"):
                    del buf[:3]
                    return self._end_of_data()
                if len(buf) < 3 and b".\r\n".startswith(bytes(buf)):
                    return NEED_DATA  # "." or ".\r": the end, or a stuffed dot?
            end = buf.find(b"\r\n.\r\n")
            if end >= 0:
                cut = end + 2  # through the CRLF of the last line; ".\r\n" is next
            else:
                last = buf.rfind(b"\r\n")
                if last >= 0:
                    cut = last + 2
                else:
                    cut = len(buf) - (1 if buf.endswith(b"\r") else 0)  # a CRLF's CR?
                    if not cut:
                        return NEED_DATA
            part = bytes(buf[:cut])
            del buf[:cut]
            if self._bol and part[:1] == b".":
                part = part[1:]  # un-dot-stuff the first line
            self._append(normalize_piece(part.replace(b"\r\n.", b"\r\n")))
            self._bol = part.endswith(b"\r\n") or (not part and self._bol)
        return NEED_DATA

    def _chunk_event(self) -> ServerEvent | NeedData:
        buf = self._buf
        take = min(self._chunk_left, len(buf))
        if take:
            if self._chunk_refusal is None:
                self._append(bytes(buf[:take]))
            del buf[:take]
            self._chunk_left -= take
        if self._chunk_left:
            return NEED_DATA
        self._state = ServerState.COMMAND
        refusal = self._chunk_refusal
        if refusal is not None:
            self._chunk_refusal = None
            return refusal
        if self._oversize:
            self._reset_transaction()
            return _rejected("BDAT", 552, "5.3.4 Message size exceeds fixed maximum message size")
        if not self._chunk_last:
            return ChunkReceived(self._chunk_size)
        content = normalize_newlines(bytes(self._data))
        envelope = (self._mail or "", tuple(self._rcpts))
        self._reset_transaction()
        return MessageReceived(content, *envelope, chunked=True)

    def _end_of_data(self) -> ServerEvent:
        content, oversize = bytes(self._data), self._oversize
        envelope = (self._mail or "", tuple(self._rcpts))
        self._state = ServerState.COMMAND
        self._reset_transaction()
        if oversize:
            return _rejected("DATA", 552, "5.3.4 Message size exceeds fixed maximum message size")
        return MessageReceived(content, *envelope)

    def _reset_transaction(self) -> None:
        self._mail = None
        self._utf8 = False
        self._rcpts = []
        self._data = bytearray()
        self._oversize = False
        self._bol = True
        self._chunked = False

    # -- commands --------------------------------------------------------------------

    def _command_event(self) -> ServerEvent | NeedData:
        nl = self._buf.find(b"\n")
        if nl < 0:
            if len(self._buf) > MAX_COMMAND_LINE + 1:
                raise RemoteProtocolError(f"command line longer than {MAX_COMMAND_LINE} bytes")
            return NEED_DATA
        raw = bytes(self._buf[:nl])
        del self._buf[: nl + 1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > MAX_COMMAND_LINE:
            return _rejected("", 500, "5.5.6 Line too long")
        try:
            line = raw.decode()
        except UnicodeDecodeError:
            return _rejected("", 500, "5.5.2 Invalid UTF-8 in command")
        if _CONTROL.search(line) is not None:
            return _rejected("", 500, "5.5.2 Control character in command")
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        arg = arg.strip()
        handler = _HANDLERS.get(verb)
        if handler is None:
            return _rejected(verb, 500, "5.5.2 Command unrecognized")
        return handler(self, verb, arg)

    def _on_hello(self, verb: str, arg: str) -> ServerEvent:
        if not arg or " " in arg:
            return _rejected(verb, 501, f"5.5.4 Syntax: {verb} hostname")
        return Hello(arg, extended=verb == "EHLO")

    def _on_starttls(self, verb: str, arg: str) -> ServerEvent:
        if arg:
            return _rejected(verb, 501, "5.5.4 Syntax: STARTTLS")
        if not self.starttls or self.tls_active:
            return _rejected(verb, 503, "5.5.1 TLS not available")
        if not self._extended:
            return _rejected(verb, 503, "5.5.1 Send EHLO first")
        return StartTlsRequested()

    def _on_mail(self, verb: str, arg: str) -> ServerEvent:
        if not self._hello:
            return _rejected(verb, 503, "5.5.1 Send EHLO or HELO first")
        if self._mail is not None:
            return _rejected(verb, 503, "5.5.1 Nested MAIL command")
        if arg[:5].upper() != "FROM:":
            return _rejected(verb, 501, "5.5.4 Syntax: MAIL FROM:<address>")
        m = _PATH.fullmatch(arg[5:])
        if m is None:
            return _rejected(verb, 501, "5.1.7 Bad sender address syntax")
        address = m[1] if m[1] is not None else m[3]
        params = _params(m[2] if m[1] is not None else m[4])
        if params is None:
            return _rejected(verb, 501, "5.5.4 Bad MAIL parameters")
        if params and not self._extended:
            return _rejected(verb, 555, "5.5.4 Parameters need EHLO")
        for key, value in params.items():
            if key == "SIZE":
                if value is None or not value.isdigit():
                    return _rejected(verb, 501, "5.5.4 Bad SIZE parameter")
                if int(value) > self.max_size:
                    return _rejected(verb, 552, "5.3.4 Message size exceeds fixed limit")
            elif key == "BODY":
                if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                    return _rejected(verb, 501, "5.5.4 Bad BODY parameter")
            elif key == "SMTPUTF8":
                if value is not None:
                    return _rejected(verb, 501, "5.5.4 SMTPUTF8 takes no value")
            else:
                return _rejected(verb, 555, f"5.5.4 Unsupported parameter {key}")
        if not address.isascii() and "SMTPUTF8" not in params:
            return _rejected(verb, 553, "5.6.7 Non-ASCII address needs SMTPUTF8")
        return MailFrom(address, params)

    def _on_rcpt(self, verb: str, arg: str) -> ServerEvent:
        if self._mail is None:
            return _rejected(verb, 503, "5.5.1 Need MAIL before RCPT")
        if arg[:3].upper() != "TO:":
            return _rejected(verb, 501, "5.5.4 Syntax: RCPT TO:<address>")
        m = _PATH.fullmatch(arg[3:])
        address = None if m is None else (m[1] if m[1] is not None else m[3])
        if m is None or not address:
            return _rejected(verb, 501, "5.1.3 Bad recipient address syntax")
        if m[2] or m[4]:
            return _rejected(verb, 555, "5.5.4 RCPT parameters not supported")
        if not address.isascii() and not self._utf8:
            return _rejected(verb, 553, "5.6.7 Non-ASCII address needs SMTPUTF8")
        if len(self._rcpts) >= MAX_RECIPIENTS:
            return _rejected(verb, 452, "4.5.3 Too many recipients")
        return RcptTo(address, {})

    def _on_data(self, verb: str, arg: str) -> ServerEvent:
        if arg:
            return _rejected(verb, 501, "5.5.4 Syntax: DATA")
        if self._mail is None:
            return _rejected(verb, 503, "5.5.1 Need MAIL before DATA")
        if not self._rcpts:
            return _rejected(verb, 554, "5.5.1 No valid recipients")
        if self._chunked:
            return _rejected(verb, 503, "5.5.1 DATA and BDAT cannot be mixed; send RSET")
        return DataStart()

    def _on_bdat(self, verb: str, arg: str) -> ServerEvent | NeedData:
        if not self.chunking:
            return self._on_unsupported(verb, arg)
        m = _BDAT.fullmatch(arg)
        if m is None:
            # Where the chunk ends is unknown, so the session cannot go on.
            self._close_after_reply = True
            return _rejected(verb, 501, "5.5.4 Syntax: BDAT size [LAST]; closing")
        size = int(m[1])
        self._chunk_size = size
        self._chunk_left = size
        self._chunk_last = m[2] is not None
        if not self._hello:
            self._chunk_refusal = _rejected(verb, 503, "5.5.1 Send EHLO or HELO first")
        elif self._mail is None:
            self._chunk_refusal = _rejected(verb, 503, "5.5.1 Need MAIL before BDAT")
        elif not self._rcpts:
            self._chunk_refusal = _rejected(verb, 554, "5.5.1 No valid recipients")
        else:
            self._chunked = True
        self._state = ServerState.CHUNK
        return self._chunk_event()

    def _on_simple(self, verb: str, arg: str) -> ServerEvent:
        if verb == "RSET":
            return ResetRequested()
        if verb == "NOOP":
            return NoopRequested()
        return QuitRequested()

    def _on_unsupported(self, verb: str, arg: str) -> ServerEvent:
        return _rejected(verb, 502, "5.5.1 Command not implemented")

    # -- output ----------------------------------------------------------------------

    def send(self, reply: Reply) -> bytes:
        """The bytes of ``reply`` to the pending event (or the greeting)."""
        if self._state is ServerState.CLOSED:
            raise LocalProtocolError("the connection is closed")
        if self._state is ServerState.GREETING:
            self._state = ServerState.CLOSED if reply.code == 421 else ServerState.COMMAND
            return reply.to_bytes()
        event = self._pending
        if reply.code == 421:  # the server may give up at any time
            self._state = ServerState.CLOSED
            self._pending = None
            return reply.to_bytes()
        if event is None:
            raise LocalProtocolError("no command to answer")
        if self._close_after_reply:
            self._state = ServerState.CLOSED
            self._pending = None
            return reply.to_bytes()
        if reply.code == 354 and not isinstance(event, DataStart):
            raise LocalProtocolError("354 answers DATA only")
        self._pending = None
        ok = 200 <= reply.code < 300
        match event:
            case Hello(extended=extended) if ok:
                self._hello = True
                self._extended = extended
                self._reset_transaction()
            case MailFrom(address=address, params=params) if ok:
                self._mail = address
                self._utf8 = "SMTPUTF8" in params
            case RcptTo(address=address) if ok:
                self._rcpts.append(address)
            case ChunkReceived() if not ok:
                self._reset_transaction()  # a refused chunk fails the transaction
            case CommandRejected(command="BDAT"):
                self._reset_transaction()
            case DataStart() if reply.code == 354:
                self._state = ServerState.DATA
                self._data = bytearray()
                self._bol = True
            case ResetRequested() if ok:
                self._reset_transaction()
            case QuitRequested():
                self._state = ServerState.CLOSED
            case StartTlsRequested() if reply.code == 220:
                self.tls_active = True
                self._hello = False
                self._extended = False
                self._reset_transaction()
                self._buf.clear()  # anything pipelined after STARTTLS is an injection
            case _:
                pass
        return reply.to_bytes()

    def default_reply(self, event: ServerEvent) -> Reply:
        """The usual answer to ``event``."""
        match event:
            case Hello(hostname=name, extended=True):
                return Reply(250, (f"{self.hostname} greets {name}", *self.extensions()))
            case Hello():
                return Reply(250, (self.hostname,))
            case MailFrom():
                return _SENDER_OK
            case RcptTo():
                return _RECIPIENT_OK
            case DataStart():
                return _START_DATA
            case ChunkReceived(size=size):
                return Reply.of(250, f"2.0.0 {size} octets received")
            case MessageReceived():
                return _QUEUED
            case ResetRequested() | NoopRequested():
                return _OK
            case QuitRequested():
                return _BYE
            case StartTlsRequested():
                return _START_TLS
            case CommandRejected(reply=reply):
                return reply
            case ConnectionClosed():
                raise LocalProtocolError("a closed connection takes no reply")


# The usual replies, made once (a Reply is immutable).
_SENDER_OK = Reply.of(250, "2.1.0 OK")
_RECIPIENT_OK = Reply.of(250, "2.1.5 OK")
_START_DATA = Reply.of(354, "End data with <CR><LF>.<CR><LF>")
_QUEUED = Reply.of(250, "2.0.0 OK: queued")
_OK = Reply.of(250, "2.0.0 OK")
_BYE = Reply.of(221, "2.0.0 Bye")
_START_TLS = Reply.of(220, "2.0.0 Ready to start TLS")

_HANDLERS: Mapping[str, Callable[[ServerProtocol, str, str], ServerEvent | NeedData]] = {
    "EHLO": ServerProtocol._on_hello,
    "HELO": ServerProtocol._on_hello,
    "STARTTLS": ServerProtocol._on_starttls,
    "MAIL": ServerProtocol._on_mail,
    "RCPT": ServerProtocol._on_rcpt,
    "DATA": ServerProtocol._on_data,
    "RSET": ServerProtocol._on_simple,
    "NOOP": ServerProtocol._on_simple,
    "QUIT": ServerProtocol._on_simple,
    "VRFY": ServerProtocol._on_unsupported,
    "EXPN": ServerProtocol._on_unsupported,
    "AUTH": ServerProtocol._on_unsupported,
    "BDAT": ServerProtocol._on_bdat,
}
