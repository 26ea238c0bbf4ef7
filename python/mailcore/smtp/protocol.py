"""The client side of SMTP as a sans-IO state machine (in the style of h11).

No sockets and no clocks: feed the server's bytes with :meth:`ClientProtocol.receive_data`
(``b""`` for EOF), take events from :meth:`ClientProtocol.next_event` until it returns
:data:`NEED_DATA`, and write what :meth:`ClientProtocol.send` and
:meth:`ClientProtocol.data_to_send` return::

    proto = ClientProtocol()
    proto.receive_data(b"220 mx.example ESMTP\\r\\n")
    proto.next_event()                       # Greeting(reply=Reply(220, ...))
    sock.sendall(proto.send(Ehlo("me.example")))

Replies are matched to commands in the order sent, so PIPELINING (RFC 2920) is just
several ``send`` calls before reading; :meth:`ClientProtocol.send_transaction` is one call
for a pipelined message's whole group (the previous message's content, MAIL, RCPT…, DATA),
and :meth:`ClientProtocol.next_replies` takes that group's replies in one call when they are
plain (one line each, no 421), with the same effect as taking them one event at a time.
CHUNKING (RFC 3030) is :class:`Bdat`: with
PIPELINING, ``MAIL``, every ``RCPT`` and ``BDAT <n> LAST`` with the message go out in one
write and the whole transaction costs one round trip. The state table refuses, with
:class:`LocalProtocolError`, any command SMTP does not allow at that point (MAIL before
EHLO/HELO, RCPT outside a transaction, DATA before RCPT, the message before the 354, DATA
and BDAT in one transaction, anything but RSET after a refused BDAT chunk…, or a second
command while a group-ending one such as DATA or EHLO awaits its reply). A reply
that is not SMTP raises :class:`RemoteProtocolError`; after any error the machine is dead.
"""

from __future__ import annotations

import base64
import enum
import re
from collections import deque
from collections.abc import Sequence

from .. import _engine
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .events import (
    NEED_DATA,
    AuthLogin,
    AuthPlain,
    Bdat,
    ClientEvent,
    Command,
    ConnectionClosed,
    Data,
    Ehlo,
    Greeting,
    Helo,
    Mail,
    Message,
    NeedData,
    Noop,
    Quit,
    Rcpt,
    Response,
    Rset,
    StartTls,
)
from .reply import EhloReply, Reply

MAX_REPLY_LINE = 2000
"""Longest reply line accepted, in bytes without the line ending (RFC 5321 says 512)."""
MAX_REPLY_LINES = 1000
MAX_IDLE_BUFFER = 64 * 1024
"""Bytes a server may send while no reply is expected before it is a protocol error."""

_CODE = re.compile(rb"[2-5][0-9][0-9]")
FORBIDDEN_IN_ADDRESS = re.compile(r"[\x00-\x1f\x7f<>]")
MAX_ADDRESS_BYTES = 512  # the longest address check_address lets through, in UTF-8 bytes

# -- message content ---------------------------------------------------------------------


# The framing runs in the engine, one pass each (engine/core/src/smtp.rs): these used to
# be a regular expression and several scans of every message.


def normalize_newlines(content: bytes) -> bytes:
    """Every bare CR and bare LF becomes CRLF, and a non-empty content ends in CRLF
    (``content`` itself when it already is so)."""
    return _engine.smtp_normalize_newlines(_as_bytes(content))


def normalize_piece(piece: bytes) -> bytes:
    """Bare CR and bare LF to CRLF, nothing appended (a piece of a longer content)."""
    return _engine.smtp_normalize_piece(_as_bytes(piece))


def encode_message(content: bytes) -> bytes:
    """``content`` as sent after 354: newlines normalised, dot-stuffed, ``.`` line added.

    Because no bare CR or LF survives, the only ``<CRLF>.<CRLF>`` in the output is the
    terminator we add, whatever the input holds: SMTP smuggling is impossible through us.
    """
    return _engine.smtp_data_content(_as_bytes(content))


def _as_bytes(content: bytes) -> bytes:
    return content if type(content) is bytes else bytes(content)


# -- reply parsing -----------------------------------------------------------------------


_CACHE_SIZE = 256


def _line_text(raw: bytes) -> str:
    """The text of a reply line (after ``DDD`` and the separator). NUL becomes U+FFFD like
    undecodable bytes: no store keeps it in text (it broke recording on PostgreSQL, and
    SQLite's JSON cut the text short)."""
    return raw[4:].decode("utf-8", "replace").replace("\x00", "\ufffd")


class ReplyReader:
    """Incremental parser of server replies, bytes in, :class:`Reply` out.

    Single-line replies are remembered by their bytes (a :class:`Reply` is immutable):
    most of a session's replies are the same few lines ("250 2.1.0 Ok"), and a pipelined
    batch brings dozens of them at a time."""

    def __init__(self) -> None:
        self._cache: dict[bytes, Reply] = {}
        self._buf = bytearray()
        self._lines: list[str] = []
        self._code: bytes | None = None
        self.ready = 0
        """Complete replies buffered when :meth:`take` last returned NEED_DATA."""

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> bool:
        """Whether any byte received is not yet part of a reply returned."""
        return bool(self._buf or self._lines)

    @property
    def pending(self) -> int:
        """Bytes buffered and not yet part of a complete reply."""
        return len(self._buf) + sum(len(line) for line in self._lines) + len(self._lines)

    def clear(self) -> None:
        self._buf.clear()
        self._lines.clear()
        self._code = None

    def take(self, count: int) -> list[Reply] | NeedData | None:
        """The next ``count`` replies in one call, when each is a single line and none
        is a 421 (a pipelined group's usual answer); nothing is consumed otherwise.

        :data:`NEED_DATA` when fewer than ``count`` are complete (:attr:`ready` of them,
        all ordinary so far); None when one of them is multi-line, malformed or a 421:
        :meth:`next_reply` takes them one at a time (and raises what it must)."""
        buf = self._buf
        if self._lines:  # in the middle of a multi-line reply
            return None
        cache = self._cache
        replies: list[Reply] = []
        start = 0
        for _ in range(count):
            nl = buf.find(b"\n", start)
            if nl < 0:
                self.ready = len(replies)
                return NEED_DATA if len(buf) - start <= MAX_REPLY_LINE + 1 else None
            line = bytes(buf[start:nl])
            reply = cache.get(line)
            if reply is None:
                reply = self._single_line(line)
                if reply is None:
                    return None
            replies.append(reply)
            start = nl + 1
        del buf[:start]
        self.ready = 0
        return replies

    def _single_line(self, line: bytes) -> Reply | None:
        """``line`` (without its LF) as a one-line reply other than 421; None when it is
        not one (the first line of several, malformed, too long, a 421)."""
        raw = line[:-1] if line.endswith(b"\r") else line
        if (
            len(raw) > MAX_REPLY_LINE
            or raw[3:4] not in (b"", b" ")
            or not _CODE.fullmatch(raw[:3])
            or b"\r" in raw
            or raw[:3] == b"421"
        ):
            return None
        reply = Reply(int(raw[:3]), (_line_text(raw),))
        if len(self._cache) < _CACHE_SIZE:
            self._cache[line] = reply
        return reply

    def plain(self, lines: Sequence[bytes]) -> list[Reply]:
        """The replies of ``lines`` (each without its LF), every one a single-line reply
        other than 421 (checked by the engine as :meth:`take` checks them)."""
        cache = self._cache
        replies = []
        for line in lines:
            reply = cache.get(line) or self._single_line(line)
            if reply is None:
                raise RemoteProtocolError(f"not a plain reply line: {line[:80]!r}")
            replies.append(reply)
        return replies

    def next_reply(self) -> Reply | None:
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > MAX_REPLY_LINE + 1:
                    raise RemoteProtocolError(f"reply line longer than {MAX_REPLY_LINE} bytes")
                return None
            raw = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            if self._code is None:
                cached = self._cache.get(raw)
                if cached is not None:
                    return cached
            line = raw
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > MAX_REPLY_LINE:
                raise RemoteProtocolError(f"reply line longer than {MAX_REPLY_LINE} bytes")
            code, sep = raw[:3], raw[3:4]
            if not _CODE.fullmatch(code) or sep not in (b"", b" ", b"-"):
                raise RemoteProtocolError(f"malformed reply line: {raw[:80]!r}")
            if self._code is not None and code != self._code:
                raise RemoteProtocolError(
                    f"inconsistent codes in a multi-line reply: {self._code!r} then {code!r}"
                )
            if b"\r" in raw:
                raise RemoteProtocolError(f"bare CR in reply line: {raw[:80]!r}")
            self._lines.append(_line_text(raw))
            if sep == b"-":
                self._code = code
                if len(self._lines) > MAX_REPLY_LINES:
                    raise RemoteProtocolError("multi-line reply has too many lines")
                continue
            reply = Reply(int(code), tuple(self._lines))
            # (Not a 421: take() leaves those to this method, cached or not.)
            if len(self._lines) == 1 and len(self._cache) < _CACHE_SIZE and code != b"421":
                self._cache[line] = reply
            self._lines = []
            self._code = None
            return reply


# -- commands ----------------------------------------------------------------------------


def check_address(address: str, *, allow_empty: bool = False, utf8: bool = True) -> None:
    """Raise :class:`LocalProtocolError` for an address that cannot go on a command line."""
    if not address and not allow_empty:
        raise LocalProtocolError("empty address")
    bad = FORBIDDEN_IN_ADDRESS.search(address)
    if bad is not None:
        raise LocalProtocolError(f"forbidden character {bad[0]!r} in address {address!r}")
    if not utf8 and not address.isascii():
        raise LocalProtocolError(f"non-ASCII address {address!r} needs SMTPUTF8")
    # (An ASCII address is its length in bytes: no need to encode it to tell.)
    if (len(address) if address.isascii() else len(address.encode())) > MAX_ADDRESS_BYTES:
        raise LocalProtocolError("address too long")


def mail_command(sender: str, size: int | None, body_8bit: bool, smtputf8: bool) -> bytes:
    """The bytes of ``MAIL FROM`` with its parameters, unchecked: for a caller that has
    checked the sender and the server's extensions already (as :meth:`ClientProtocol.send`
    does, and ``SmtpConnection``'s batch path for a whole batch)."""
    line = f"MAIL FROM:<{sender}>"
    if size is not None:
        line += f" SIZE={size}"
    if body_8bit:
        line += " BODY=8BITMIME"
    if smtputf8:
        line += " SMTPUTF8"
    return f"{line}\r\n".encode()


def _check_hostname(hostname: str) -> None:
    if (
        not hostname
        or not hostname.isascii()
        or any(c.isspace() or ord(c) < 0x21 for c in hostname)
    ):
        raise LocalProtocolError(f"invalid EHLO/HELO hostname {hostname!r}")


def _b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


class Phase(enum.Enum):
    """Where the session is, counting commands sent but not yet answered."""

    AWAIT_GREETING = "await-greeting"
    REFUSED = "refused"  # the greeting was not 220: only QUIT
    GREETED = "greeted"  # EHLO/HELO needed (also after STARTTLS)
    READY = "ready"  # no mail transaction open
    MAIL = "mail"  # MAIL sent
    RCPT = "rcpt"  # at least one RCPT sent
    DATA = "data"  # DATA sent, its reply awaited
    BODY = "body"  # 354 received: the message must be sent now
    CHUNKS = "chunks"  # BDAT without LAST sent: more chunks (or RSET) to come
    CLOSING = "closing"  # QUIT sent, or 421 received: nothing more may be sent
    CLOSED = "closed"  # EOF seen


# Commands that may be followed by others before their reply (RFC 2920 §3.1).
# The message content (after 354) and BDAT may be followed by the next transaction's MAIL
# (RFC 2920 §3.1, RFC 3030 §4.2): that is pipelining across messages.
_PIPELINABLE = (Mail, Rcpt, Rset, Message, Bdat)
# The commands of mail transactions, whose replies :meth:`ClientProtocol.next_replies`
# takes in bulk: none of them needs more than a state change.
_GROUP = frozenset((Mail, Rcpt, Data, Message, Bdat, Rset))
_RSET = Rset()
_DATA = Data()
_MAX_CLEAN = 1024


class ClientProtocol:
    """The client's SMTP state machine."""

    def __init__(self) -> None:
        self._reader = ReplyReader()
        self._outstanding: deque[Command] = deque()
        self._events: deque[ClientEvent] = deque()
        self._outbox = bytearray()
        self._phase = Phase.AWAIT_GREETING
        self._eof = False
        self._error: ProtocolError | None = None
        self._auth_step = 0
        self._txn_failed = False
        self._txn_utf8 = False
        self._need_rset = False  # a BDAT chunk was refused (RFC 3030 §2)
        self._chunk_cr = False  # the last BDAT chunk ended in CR: a leading LF pairs with it
        self._chunk_crlf = True  # the chunks so far end in CRLF (or are empty)
        # Contents normalize() returned, by identity, until sent: with pipelining across
        # messages several are prepared before the first goes out.
        # (the same object may be several messages' content: counted).
        self._clean: dict[int, tuple[bytes, int]] = {}
        self.ehlo: EhloReply | None = None
        """The server's answer to our last successful EHLO/HELO (HELO: no extensions)."""
        self.extended = False
        """True after a successful EHLO (as opposed to HELO)."""
        self.starttls_done = False
        self.authenticated = False

    # -- introspection ---------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def outstanding(self) -> tuple[Command, ...]:
        """Commands sent whose replies have not arrived, oldest first."""
        return tuple(self._outstanding)

    @property
    def pipelining(self) -> bool:
        return self.ehlo is not None and self.ehlo.supports("PIPELINING")

    def supports(self, extension: str) -> bool:
        return self.ehlo is not None and self.ehlo.supports(extension)

    def normalize(self, content: bytes) -> bytes:
        """:func:`normalize_newlines` of ``content``, remembered: a :class:`Message`, or a
        first and last :class:`Bdat`, carrying that very object is not scanned again (for
        a caller that needs the size before sending, e.g. for ``MAIL … SIZE=``)."""
        clean = normalize_newlines(content)
        if len(self._clean) >= _MAX_CLEAN:  # prepared and never sent (refused locally)
            del self._clean[next(iter(self._clean))]
        seen = self._clean.get(id(clean))
        self._clean[id(clean)] = (clean, seen[1] + 1 if seen is not None else 1)
        return clean

    def _is_clean(self, content: bytes) -> bool:
        seen = self._clean.get(id(content))
        return seen is not None and seen[0] is content

    def _sent(self, content: bytes) -> None:
        seen = self._clean.get(id(content))
        if seen is not None and seen[0] is content:
            if seen[1] > 1:
                self._clean[id(content)] = (content, seen[1] - 1)
            else:
                del self._clean[id(content)]

    # -- input -----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the server; ``b""`` means the server closed the connection."""
        if self._eof:
            if data:
                raise LocalProtocolError("data received after EOF")
            return
        if not data:
            self._eof = True
            return
        if self._phase is Phase.CLOSING and not self._outstanding:
            return  # the server said it is closing: ignore the rest
        self._reader.feed(data)

    def next_event(self) -> ClientEvent | NeedData:
        if self._error is not None:
            raise RemoteProtocolError(f"the connection is unusable after: {self._error}")
        try:
            return self._next_event()
        except ProtocolError as exc:
            self._error = exc
            raise

    def _next_event(self) -> ClientEvent | NeedData:
        while True:
            if self._events:
                return self._events.popleft()
            if self._phase is Phase.AWAIT_GREETING or self._outstanding:
                reply = self._reader.next_reply()
                if reply is not None:
                    event = self._on_reply(reply)
                    if event is None:
                        continue  # an AUTH challenge answered internally
                    return event
            elif self._phase is Phase.CLOSING:
                self._reader.clear()
            elif self._reader.pending > MAX_IDLE_BUFFER:
                raise RemoteProtocolError("the server sent too much without being asked")
            if self._eof:
                if self._reader.pending and (
                    self._phase is Phase.AWAIT_GREETING or self._outstanding
                ):
                    raise RemoteProtocolError("connection closed in the middle of a reply")
                self._phase = Phase.CLOSED
                return ConnectionClosed()
            return NEED_DATA

    def next_replies(self, count: int) -> list[Reply] | NeedData | None:
        """The replies to the next ``count`` commands sent, in one call, when all of
        them are commands of mail transactions (MAIL, RCPT, DATA, RSET, the message,
        BDAT) and every reply is a single line other than 421: what :meth:`next_event`
        would return as ``count`` :class:`Response` events, with the same effect on the
        machine, at a fraction of the cost (a pipelined group's replies come together).

        :data:`NEED_DATA` when fewer than ``count`` of them have arrived (``ready`` says
        how many); None when :meth:`next_event` must take them one at a time: a reply
        that is multi-line, malformed or a 421 (or the session closing since one), EOF,
        or another command among them. Nothing is consumed unless all ``count`` are
        returned.
        """
        outstanding = self._outstanding
        if (
            self._error is not None
            or self._eof
            or not 0 < count <= len(outstanding)
            or self._phase is Phase.CLOSING
            # Only the last command sent can be one that is not pipelinable (EHLO, QUIT,
            # AUTH's challenges…), since nothing may follow it before its reply.
            or (count == len(outstanding) and type(outstanding[-1]) not in _GROUP)
        ):
            return None
        replies = self._reader.take(count)
        if type(replies) is not list:
            return replies
        for reply in replies:
            command = outstanding.popleft()
            kind = type(command)
            if kind is Mail:
                if not 200 <= reply.code < 300:
                    self._txn_failed = True
            elif kind is Data:
                self._phase = Phase.BODY if reply.code == 354 else Phase.READY
            elif (
                kind is Bdat
                and not 200 <= reply.code < 300
                and not any(isinstance(c, Mail | Rset) for c in outstanding)
            ):
                self._need_rset = True  # as in _on_reply
        if self._txn_failed and not outstanding and self._phase in (Phase.MAIL, Phase.RCPT):
            self._phase = Phase.READY  # MAIL was refused: there is no transaction
        return replies

    def engine_groups(self, *, body: bool, sent: Sequence[bytes]) -> None:
        """Record that whole DATA groups, the kind :meth:`send_transaction` builds, went
        out and were answered through the engine's pipeline (``_engine.SmtpPipelineRunner``,
        driven by the client on this machine's connection), every reply plain: the machine
        is where :meth:`send_transaction` and :meth:`next_replies` would have left it, in
        BODY when ``body`` (the last DATA got 354, its content not sent) else READY.
        ``sent``: the contents that went (as :class:`Message`), for :meth:`normalize`'s
        memo. Only from READY with nothing outstanding and pipelining on."""
        if self._outstanding or self._phase is not Phase.READY or not self.pipelining:
            raise LocalProtocolError(f"engine groups not allowed in phase {self._phase.value}")
        for content in sent:
            self._sent(content)
        if body:
            self._phase = Phase.BODY

    def mail_line(self, mail: Mail) -> bytes:
        """The bytes :meth:`send` writes for ``mail`` (checked), state unchanged."""
        return self._encode(mail)

    def plain_replies(self, lines: Sequence[bytes]) -> list[Reply]:
        """:class:`Reply` objects of plain reply lines the engine took (each without its
        LF), sharing the reader's cache."""
        return self._reader.plain(lines)

    @property
    def idle(self) -> bool:
        """Nothing received is waiting to be read (no bytes, no event, no EOF): the
        next event needs data from the server."""
        return not (self._reader.buffered or self._events or self._eof or self._error)

    @property
    def ready(self) -> int:
        """How many replies had arrived when :meth:`next_replies` last needed data."""
        return self._reader.ready

    def data_to_send(self) -> bytes:
        """Bytes the machine produced by itself (answers to AUTH challenges): write them
        before reading again."""
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    # -- replies ---------------------------------------------------------------------

    def _on_reply(self, reply: Reply) -> ClientEvent | None:
        if self._phase is Phase.AWAIT_GREETING:
            if reply.code == 220:
                self._phase = Phase.GREETED
            elif reply.code == 421:
                self._phase = Phase.CLOSING
            else:
                self._phase = Phase.REFUSED
            return Greeting(reply)
        command = self._outstanding[0]
        if reply.code == 334 and isinstance(command, AuthPlain | AuthLogin):
            self._answer_challenge(command)
            return None
        self._outstanding.popleft()
        if reply.code == 421:
            # The server is shutting the channel: every command still in flight gets the
            # same answer now, as it will never get another.
            self._phase = Phase.CLOSING
            self._events.extend(Response(c, reply) for c in self._outstanding)
            self._outstanding.clear()
            self._reader.clear()
            return Response(command, reply)
        ok = reply.is_positive_completion
        match command:  # the commands of a mail transaction first: they are most replies
            case Rcpt() | Message() | Rset():
                pass
            case Mail():
                if not ok:
                    self._txn_failed = True
            case Data():
                self._phase = Phase.BODY if reply.code == 354 else Phase.READY
            case Bdat():
                # A refused chunk fails the transaction; the server's state is then
                # undefined until RSET (RFC 3030 §2), unless the client already moved on.
                if not ok and not any(isinstance(c, Mail | Rset) for c in self._outstanding):
                    self._need_rset = True
            case Ehlo() | Helo():
                if ok:
                    self.extended = isinstance(command, Ehlo)
                    self.ehlo = EhloReply.parse(reply, extended=self.extended)
                    self._phase = Phase.READY
                    self._need_rset = False
            case StartTls():
                if reply.code == 220:
                    if self._reader.pending:
                        raise RemoteProtocolError(
                            "data after the STARTTLS reply (possible command injection)"
                        )
                    self.starttls_done = True
                    self.ehlo = None
                    self.extended = False
                    self._phase = Phase.GREETED
            case AuthPlain() | AuthLogin():
                if reply.code == 235:
                    self.authenticated = True
            case Quit():
                self._phase = Phase.CLOSING
            case _:
                pass
        if self._txn_failed and not self._outstanding and self._phase in (Phase.MAIL, Phase.RCPT):
            self._phase = Phase.READY  # MAIL was refused: there is no transaction
        return Response(command, reply)

    def _answer_challenge(self, command: AuthPlain | AuthLogin) -> None:
        step = self._auth_step
        self._auth_step += 1
        if isinstance(command, AuthPlain) and step == 0:
            answer = base64.b64encode(f"\0{command.username}\0{command.password}".encode())
        elif isinstance(command, AuthLogin) and step < 2:
            answer = _b64(command.username if step == 0 else command.password)
        else:
            answer = b"*"  # cancel the exchange (RFC 4954 §4): the server answers 501
        self._outbox += answer + b"\r\n"

    # -- output ----------------------------------------------------------------------

    def send(self, command: Command) -> bytes:
        """The bytes of ``command``, if the state allows it (else LocalProtocolError)."""
        if self._error is not None:
            raise LocalProtocolError(f"the connection is unusable after: {self._error}")
        self._check_turn(command)
        data = self._encode(command)  # validates before any state change
        self._advance(command)
        self._outstanding.append(command)
        return data

    def send_transaction(
        self,
        mail: Mail,
        rcpts: Sequence[Rcpt],
        *,
        body: Message | None = None,
        rset: bool = False,
    ) -> bytes:
        """One pipelined group, the bytes of ``body`` (the content of the transaction whose
        DATA got its 354), RSET when ``rset``, then ``mail``, ``rcpts`` and DATA: what
        :meth:`send` gives for each in turn, in one call (RFC 2920 §3.1: DATA ends the
        group). A sender pipelining across messages writes one such group per message.

        Every command is checked before any is taken: a :class:`LocalProtocolError`
        leaves the machine as it was.
        """
        if self._error is not None:
            raise LocalProtocolError(f"the connection is unusable after: {self._error}")
        commands: list[Command] = []
        if body is not None:
            commands.append(body)
        if rset:
            commands.append(_RSET)
        commands.append(mail)
        commands += rcpts
        commands.append(_DATA)
        outstanding = self._outstanding
        if not (
            rcpts
            and self._phase is (Phase.BODY if body is not None else Phase.READY)
            and not self._need_rset
            and self.pipelining
            and (not outstanding or isinstance(outstanding[-1], _PIPELINABLE))
        ):
            # Not the plain case: the state table decides command by command, on a copy,
            # so that a refusal changes nothing.
            trial = self._copy()
            for command in commands:
                trial.send(command)
            return b"".join([self.send(command) for command in commands])
        # Ready (after the body: ready again), pipelining on, nothing refused to reset:
        # the table allows body, RSET, MAIL, RCPT… and DATA; what is left to check is the
        # commands themselves.
        utf8 = mail.smtputf8
        content = _as_bytes(body.content) if body is not None else None
        # One buffer, one copy of the content (the engine frames it in place).
        out = _engine.smtp_data_group(
            content, rset, self._encode(mail), [r.recipient for r in rcpts], utf8
        )
        if out is None:  # a recipient that cannot be sent: say which and why
            for rcpt in rcpts:
                check_address(rcpt.recipient, utf8=utf8)
            raise LocalProtocolError("a recipient cannot go on a command line")
        if rset:
            self._chunk_cr, self._chunk_crlf = False, True
        if body is not None:
            self._sent(body.content)
        self._phase = Phase.DATA
        self._txn_failed = False
        self._txn_utf8 = utf8
        outstanding += commands
        return out

    def _copy(self) -> ClientProtocol:
        """A machine in this one's state for trying commands on (no reader, no events)."""
        trial = ClientProtocol()
        trial.__dict__.update(self.__dict__)
        trial._outstanding = deque(self._outstanding)
        trial._clean = dict(self._clean)
        return trial

    def _refuse(self, command: Command, why: str) -> LocalProtocolError:
        name = type(command).__name__
        return LocalProtocolError(f"{name} not allowed in phase {self._phase.value}: {why}")

    def _check_turn(self, command: Command) -> None:
        phase = self._phase
        if phase is Phase.CLOSED:
            raise self._refuse(command, "the connection is closed")
        if phase is Phase.CLOSING:
            raise self._refuse(command, "the connection is closing")
        if phase is Phase.AWAIT_GREETING:
            raise self._refuse(command, "wait for the server's greeting")
        if self._outstanding:
            last = self._outstanding[-1]
            if not self.pipelining:
                raise self._refuse(command, "no PIPELINING: wait for the previous reply")
            if not isinstance(last, _PIPELINABLE):
                raise self._refuse(command, f"wait for the reply to {type(last).__name__}")
        if phase is Phase.REFUSED and not isinstance(command, Quit):
            raise self._refuse(command, "the server refused the session: only QUIT")
        in_txn = phase in (Phase.MAIL, Phase.RCPT)
        match command:
            case Ehlo() | Helo():
                if self._outstanding or phase not in (Phase.GREETED, Phase.READY):
                    raise self._refuse(command, "only outside a mail transaction")
            case StartTls():
                if self._outstanding or phase is not Phase.READY:
                    raise self._refuse(command, "only after EHLO, outside a transaction")
                if self.starttls_done:
                    raise self._refuse(command, "TLS is already started")
                if not self.supports("STARTTLS"):
                    raise self._refuse(command, "the server does not offer STARTTLS")
            case AuthPlain() | AuthLogin():
                mech = "PLAIN" if isinstance(command, AuthPlain) else "LOGIN"
                if self._outstanding or phase is not Phase.READY:
                    raise self._refuse(command, "only after EHLO, outside a transaction")
                if self.authenticated:
                    raise self._refuse(command, "already authenticated")
                if self.ehlo is None or mech not in self.ehlo.auth_mechanisms:
                    raise self._refuse(command, f"the server does not offer AUTH {mech}")
            case Mail():
                if phase is not Phase.READY:
                    busy = in_txn or phase is Phase.CHUNKS
                    why = "a transaction is open" if busy else "send EHLO or HELO first"
                    raise self._refuse(command, why)
                if self._need_rset:
                    raise self._refuse(command, "a BDAT chunk was refused: send RSET first")
            case Rcpt():
                if not in_txn:
                    raise self._refuse(command, "send MAIL first")
            case Data():
                if phase is not Phase.RCPT:
                    raise self._refuse(command, "send MAIL and at least one RCPT first")
            case Message():
                if phase is not Phase.BODY:
                    raise self._refuse(command, "only after a 354 reply to DATA")
            case Bdat():
                if phase not in (Phase.RCPT, Phase.CHUNKS):
                    raise self._refuse(command, "send MAIL and at least one RCPT first")
                if not self.supports("CHUNKING"):
                    raise self._refuse(command, "the server does not offer CHUNKING")
                if self._need_rset:
                    raise self._refuse(command, "a BDAT chunk was refused: send RSET first")
            case Rset() | Noop():
                if phase in (Phase.DATA, Phase.BODY, Phase.REFUSED):
                    raise self._refuse(command, "not during DATA")
            case Quit():
                if phase in (Phase.DATA, Phase.BODY):
                    raise self._refuse(command, "not during DATA")

    def _encode(self, command: Command) -> bytes:
        match command:
            # The commands of a mail transaction first: most commands are.
            case Mail(sender, size, body_8bit, smtputf8):
                check_address(sender, allow_empty=True, utf8=smtputf8)
                if size is not None:
                    if not self.supports("SIZE"):
                        raise LocalProtocolError("SIZE= needs the SIZE extension")
                    if size < 0:
                        raise LocalProtocolError("negative SIZE")
                if body_8bit and not self.supports("8BITMIME"):
                    raise LocalProtocolError("BODY=8BITMIME needs the 8BITMIME extension")
                if smtputf8 and not self.supports("SMTPUTF8"):
                    raise LocalProtocolError("SMTPUTF8 needs the SMTPUTF8 extension")
                return mail_command(sender, size, body_8bit, smtputf8)
            case Rcpt(recipient):
                check_address(recipient, utf8=self._txn_utf8)
                return f"RCPT TO:<{recipient}>\r\n".encode()
            case Data():
                return b"DATA\r\n"
            case Message(content):
                return encode_message(content)  # one pass, clean or not
            case Bdat(chunk, last):
                payload = self._chunk_payload(chunk, last)
                head = f"BDAT {len(payload)} LAST\r\n" if last else f"BDAT {len(payload)}\r\n"
                return b"".join((head.encode(), payload))
            case Ehlo(hostname) | Helo(hostname):
                _check_hostname(hostname)
                verb = "EHLO" if isinstance(command, Ehlo) else "HELO"
                return f"{verb} {hostname}\r\n".encode()
            case StartTls():
                return b"STARTTLS\r\n"
            case AuthPlain(username, password):
                for part in (username, password):
                    if "\0" in part:
                        raise LocalProtocolError("NUL in AUTH PLAIN credentials")
                return b"AUTH PLAIN " + _b64(f"\0{username}\0{password}") + b"\r\n"
            case AuthLogin():
                return b"AUTH LOGIN\r\n"
            case Rset():
                return b"RSET\r\n"
            case Noop():
                return b"NOOP\r\n"
            case Quit():
                return b"QUIT\r\n"
        raise LocalProtocolError(f"not a command: {command!r}")  # pragma: no cover

    def _chunk_payload(self, chunk: bytes, last: bool) -> bytes:
        """``chunk`` normalised as part of the message begun by the earlier chunks."""
        if last and self._is_clean(chunk) and self._chunk_crlf and not self._chunk_cr:
            return chunk  # the whole message, normalised by normalize()
        if self._chunk_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]  # the LF of a CRLF split between two chunks
        payload = normalize_piece(chunk)
        if last:
            ends_crlf = payload.endswith(b"\r\n") if payload else self._chunk_crlf
            if not ends_crlf:
                payload += b"\r\n"
        return payload

    def _advance(self, command: Command) -> None:
        match command:
            case Mail():
                self._phase = Phase.MAIL
                self._txn_failed = False
                self._txn_utf8 = command.smtputf8
            case Rcpt():
                self._phase = Phase.RCPT
            case Data():
                self._phase = Phase.DATA
            case Message(content):
                self._phase = Phase.READY
                self._sent(content)
            case Bdat(chunk, last):
                self._sent(chunk)
                if last:
                    self._phase = Phase.READY
                    self._chunk_cr, self._chunk_crlf = False, True
                else:
                    self._phase = Phase.CHUNKS
                    if chunk:
                        payload = chunk[1:] if self._chunk_cr and chunk[:1] == b"\n" else chunk
                        self._chunk_cr = payload[-1:] == b"\r"
                        if payload:
                            self._chunk_crlf = payload[-1:] in (b"\r", b"\n")
            case Rset():
                self._need_rset = False
                self._chunk_cr, self._chunk_crlf = False, True
                if self._phase in (Phase.MAIL, Phase.RCPT, Phase.CHUNKS):
                    self._phase = Phase.READY
            case Quit():
                self._phase = Phase.CLOSING
            case AuthPlain() | AuthLogin():
                self._auth_step = 0
            case _:
                pass
