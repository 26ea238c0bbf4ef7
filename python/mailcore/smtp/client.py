"""The SMTP client transport: with ``_plain`` (its plain TCP stream on Trio), the only
code here that touches sockets. (On that stream, the steady state of a DATA pipeline runs
in the engine, which writes and reads on the socket lent to it: see
:meth:`SmtpConnection.send_many` and ``engine/core/src/transport.rs``.)

:class:`SmtpConnection` drives a :class:`~mailcore.smtp.protocol.ClientProtocol` over an
anyio byte stream (on Trio, plain TCP goes through
:class:`~mailcore.smtp._plain.PlainTrioStream`: one system call per send and per receive):
greeting, EHLO (HELO fallback), STARTTLS, AUTH, then any number of
:meth:`SmtpConnection.send` transactions, each phase under its own time limit. When the
server offers CHUNKING and PIPELINING, a transaction is one write (MAIL, RCPT…, ``BDAT <n>
LAST`` and the message) and one round trip; else MAIL, RCPT… and DATA are pipelined, then
the message follows the 354 (two round trips). After a timeout, a connection error, a
protocol error or a 421 the connection is *broken* (as in trio: the resource is unusable)
and must be dropped; otherwise it stays reusable, a failed transaction being cleared by
RSET (with PIPELINING, in the next transaction's write rather than a round trip of its
own). :meth:`SmtpConnection.send_many` pipelines several transactions: with CHUNKING many
per write and round trip, with DATA one round trip per message instead of two.
"""

from __future__ import annotations

import functools
import math
import os
import ssl
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from itertools import repeat
from types import TracebackType
from typing import Literal, Self, TypeAlias
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio
import msgspec
import sniffio
import trio
from anyio.abc import ByteStream
from anyio.streams.tls import TLSStream

from .. import _engine
from ._plain import PlainTrioStream, plain_stream
from .errors import (
    LocalProtocolError,
    SmtpAuthError,
    SmtpConnectError,
    SmtpConnectionLost,
    SmtpError,
    SmtpReplyError,
    SmtpTimeout,
    SmtpTlsError,
    SmtpUntried,
    TlsRequiredError,
)
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
    Noop,
    Quit,
    Rcpt,
    Response,
    Rset,
    StartTls,
)
from .protocol import (
    FORBIDDEN_IN_ADDRESS,
    MAX_ADDRESS_BYTES,
    ClientProtocol,
    Phase,
    check_address,
    mail_command,
)
from .reply import EhloReply, Reply

TlsMode: TypeAlias = Literal["none", "opportunistic", "required", "implicit"]
DeliveryStatus: TypeAlias = Literal["delivered", "deferred", "bounced"]

_SCHEMES: dict[str, tuple[TlsMode, int]] = {
    "smtp": ("opportunistic", 25),
    "smtps": ("implicit", 465),
    "submission": ("required", 587),
}
_TLS_MODES: tuple[TlsMode, ...] = ("none", "opportunistic", "required", "implicit")
_RECEIVE_SIZE = 65536
_BOOLEANS = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}


class RelayConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how to relay mail. Timeouts are in seconds, one per phase.

    ``port=0`` means the default of the TLS mode: 465 for ``implicit``, else 25.
    ``tls``: ``none`` never starts TLS; ``opportunistic`` uses STARTTLS when offered;
    ``required`` refuses (:class:`TlsRequiredError`) a server without STARTTLS, having
    sent nothing but EHLO and QUIT; ``implicit`` speaks TLS from the first byte (SMTPS).
    ``opportunistic`` is no defence against an active attacker who strips STARTTLS from
    the EHLO reply: the mail then goes in plaintext (use ``required`` for that); but once
    STARTTLS is accepted, a failed handshake or certificate check ends the session, never
    falling back. Certificates are verified with the ``tls_context`` given to
    :meth:`SmtpConnection.open` (default: the system's).
    ``chunking``: send with BDAT (RFC 3030) when the server offers CHUNKING, else DATA.
    """

    host: str
    port: int = 0
    tls: TlsMode = "opportunistic"
    address: str | None = None
    """Connect to this IP address instead of resolving ``host``; ``host`` stays the name
    TLS verifies (direct delivery resolves MX hosts itself)."""
    username: str | None = None
    password: str | None = None
    local_hostname: str = "localhost"
    chunking: bool = True
    connect_timeout: float = 10.0
    greeting_timeout: float = 30.0
    ehlo_timeout: float = 30.0
    tls_timeout: float = 30.0
    auth_timeout: float = 30.0
    mail_timeout: float = 30.0
    rcpt_timeout: float = 30.0
    data_timeout: float = 30.0
    message_timeout: float = 120.0
    """Writing the message content (with BDAT pipelined: the whole transaction's write)."""
    message_end_timeout: float = 120.0
    """Waiting for the reply after the final dot or the last BDAT chunk."""
    quit_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("relay host is empty")
        if self.tls not in _TLS_MODES:
            raise ValueError(f"tls must be one of {', '.join(_TLS_MODES)}, not {self.tls!r}")
        if self.port == 0:
            msgspec.structs.force_setattr(self, "port", 465 if self.tls == "implicit" else 25)
        if not 0 < self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        for name in self.__struct_fields__:
            if name.endswith("_timeout") and not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")

    def __repr__(self) -> str:
        fields = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name == "password" and value is not None:
                value = "***"
            fields.append(f"{name}={value!r}")
        return f"RelayConfig({', '.join(fields)})"

    @property
    def has_credentials(self) -> bool:
        return self.username is not None and self.password is not None

    @classmethod
    def from_url(cls, url: str) -> RelayConfig:
        """``smtp://[user:pass@]host[:port][?tls=...&local_hostname=...&chunking=no&...]``.

        ``smtp://`` is opportunistic STARTTLS on port 25, ``submission://`` required
        STARTTLS on 587, ``smtps://`` implicit TLS on 465. User and password are
        percent-decoded. ``chunking`` takes yes/no, true/false, 1/0; ``*_timeout`` seconds.
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise ValueError(f"unsupported relay URL scheme {parts.scheme!r} in {url!r}")
        tls, port = _SCHEMES[scheme]
        if not parts.hostname:
            raise ValueError(f"no host in relay URL {url!r}")
        try:
            port = parts.port or port
        except ValueError as exc:
            raise ValueError(f"bad port in relay URL {url!r}") from exc
        options: dict[str, str | float | bool] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
            if key == "tls":
                if value not in _TLS_MODES:
                    raise ValueError(f"tls must be one of {', '.join(_TLS_MODES)}")
                if scheme == "smtps" and value != "implicit":
                    raise ValueError("smtps:// is implicit TLS")
                tls = value
            elif key in ("local_hostname", "helo"):
                options["local_hostname"] = value
            elif key == "chunking":
                if value.lower() not in _BOOLEANS:
                    raise ValueError(f"chunking must be yes or no, not {value!r}")
                options["chunking"] = _BOOLEANS[value.lower()]
            elif key.endswith("_timeout") and key in cls.__struct_fields__:
                try:
                    options[key] = float(value)
                except ValueError as exc:
                    raise ValueError(f"{key} must be a number of seconds") from exc
            else:
                raise ValueError(f"unknown relay URL option {key!r}")
        username = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        if username is not None and password is None:
            password = ""
        return msgspec.convert(
            {
                "host": parts.hostname,
                "port": port,
                "tls": tls,
                "username": username,
                "password": password,
                **options,
            },
            cls,
        )


class SendOutcome(msgspec.Struct, frozen=True):
    """What the server said about one message.

    ``recipients`` pairs every recipient with its RCPT reply (the MAIL reply when RCPT was
    never sent). ``data`` is the reply that ended the DATA phase: the reply after the final
    dot, or the refusal of DATA itself; with BDAT, the reply to the last chunk (a refusal
    such as 554 when every RCPT failed and the chunk had been pipelined); None when DATA or
    BDAT was never reached. The semantics do not depend on which of the two was used.
    """

    mail: Reply
    recipients: tuple[tuple[str, Reply], ...]
    data: Reply | None

    def reply_for(self, recipient: str) -> Reply:
        for address, reply in self.recipients:
            if address == recipient:
                return reply
        raise KeyError(recipient)

    def accepted(self, recipient: str) -> bool:
        """RCPT accepted and the message accepted after the final dot."""
        return (
            self.reply_for(recipient).is_positive_completion
            and self.data is not None
            and self.data.is_positive_completion
        )

    def status(self, recipient: str) -> DeliveryStatus:
        """``bounced`` on a 5xx to MAIL, RCPT or DATA; ``deferred`` on a 4xx (or when the
        message was never sent); else ``delivered``."""
        for reply in (self.mail, self.reply_for(recipient), self.data):
            if reply is None:
                return "deferred"
            code = reply.code  # (not the properties: this runs for every message sent)
            if code >= 500:
                return "bounced"
            if code >= 400:
                return "deferred"
        return "delivered"

    @property
    def statuses(self) -> dict[str, DeliveryStatus]:
        return {address: self.status(address) for address, _ in self.recipients}


@functools.cache
def default_tls_context() -> ssl.SSLContext:
    """``ssl.create_default_context()``, made once (loading the CA store is not free)."""
    return ssl.create_default_context()


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _event_loop_clock() -> Callable[[], float]:
    """The running event loop's clock, looked up once: ``anyio.current_time()`` looks
    the backend up on every call, which a sender does twice per message."""
    try:
        if sniffio.current_async_library() == "trio":
            return trio.current_time
    except sniffio.AsyncLibraryNotFoundError:
        pass
    return anyio.current_time


def _refusal(recipients: Sequence[str], reply: Reply) -> SendOutcome:
    return SendOutcome(reply, tuple((r, reply) for r in recipients), None)


def _delivered(outcome: SendOutcome) -> bool:
    return outcome.data is not None and outcome.data.is_positive_completion


def _recipients(recipients: Sequence[str]) -> tuple[str, ...]:
    if isinstance(recipients, str):
        raise TypeError("recipients must be a sequence of addresses, not a str")
    rcpts = tuple(recipients)
    if not rcpts:
        raise ValueError("a message needs at least one recipient")
    return rcpts


class _Prepared(msgspec.Struct, frozen=True):
    """A message checked and ready to go: its MAIL command and normalised content, and
    (``line``) the bytes of that command when :meth:`SmtpConnection._prepare_plain` made
    them, else empty."""

    mail: Mail
    rcpts: tuple[str, ...]
    content: bytes
    line: bytes = b""


class _Capabilities(msgspec.Struct, frozen=True):
    """What :meth:`SmtpConnection._prepare` asks of an EHLO reply, asked once per reply
    (every message of a campaign asks the same)."""

    ehlo: EhloReply | None
    smtputf8: bool
    size: bool
    max_size: int | None
    eight_bit: bool
    chunking: bool

    @classmethod
    def of(cls, proto: ClientProtocol, chunking: bool) -> _Capabilities:
        ehlo = proto.ehlo
        return cls(
            ehlo,
            proto.supports("SMTPUTF8"),
            proto.supports("SIZE"),
            ehlo.max_size if ehlo is not None else None,
            proto.supports("8BITMIME"),
            chunking,
        )


_Body: TypeAlias = tuple[int, _Prepared, Reply, list[Reply], bool]
"""The message whose DATA got its 354 in a DATA pipeline: its index, itself, MAIL's and
the RCPTs' replies, and whether a recipient was accepted (else only the dot goes)."""


def _os_error(errno: int | None) -> OSError:
    return OSError(errno or 0, os.strerror(errno or 0))


class SmtpConnection:
    """One SMTP session with a relay, reusable for many messages. Not for concurrent use.

    Open with ``await SmtpConnection.open(config)``; ``async with`` closes it.
    """

    engine_pipeline: bool = True
    """Let the engine run the steady state of DATA pipelines on plain TCP on Trio
    (:meth:`send_many`); False keeps every step in Python (for comparison)."""

    def __init__(
        self,
        config: RelayConfig,
        stream: ByteStream,
        *,
        tls_context: ssl.SSLContext | None,
        tls_active: bool,
    ) -> None:
        self.config = config
        self._stream = stream
        self._tls_context = tls_context
        self._proto = ClientProtocol()
        self._tls_active = tls_active
        self._closed = False
        self._broken = False
        self._busy = False
        self._in_doubt = False  # the whole message is sent, its fate not yet known
        self._rset_pending = False  # a failed transaction to clear, with the next one
        self._scope: anyio.CancelScope | None = None  # of the running _phases()
        self._deadline = math.inf  # the scope's, as last set (reading it back costs more)
        self._clock = _event_loop_clock()
        self._phase = "connect"
        self._limit = 0.0  # the time limit of the phase
        self._phase_table: dict[tuple[bool, int, str], tuple[tuple[str, float], ...]] = {}
        self._read_error: OSError | None = None  # the engine's read failed: the next read's
        self._caps: _Capabilities | None = None  # of the last EHLO reply, for _prepare
        self.greeting: Reply | None = None

    # -- state -----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """:meth:`aclose` was called."""
        return self._closed

    @property
    def broken(self) -> bool:
        """A timeout, connection error, protocol error or 421 happened: do not reuse."""
        return self._broken

    @property
    def usable(self) -> bool:
        return not (self._closed or self._broken)

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def authenticated(self) -> bool:
        return self._proto.authenticated

    @property
    def ehlo(self) -> EhloReply | None:
        return self._proto.ehlo

    @property
    def pipelining(self) -> bool:
        return self._proto.pipelining

    @property
    def chunking(self) -> bool:
        """Messages go with BDAT: the server offers CHUNKING and ``config.chunking``."""
        return self.config.chunking and self._proto.supports("CHUNKING")

    # -- opening ---------------------------------------------------------------------

    @classmethod
    async def open(
        cls, config: RelayConfig, tls_context: ssl.SSLContext | None = None
    ) -> SmtpConnection:
        """Connect, read the greeting, EHLO, STARTTLS and AUTH as configured."""
        if tls_context is None and config.tls != "none":
            tls_context = default_tls_context()
        implicit = config.tls == "implicit"
        try:
            with anyio.fail_after(config.connect_timeout):
                stream: ByteStream
                if implicit:
                    stream = await anyio.connect_tcp(
                        config.address or config.host,
                        config.port,
                        ssl_context=tls_context,
                        tls_hostname=config.host,
                        tls_standard_compatible=False,
                    )
                else:
                    stream = plain_stream(
                        await anyio.connect_tcp(config.address or config.host, config.port)
                    )
        except TimeoutError:
            raise SmtpTimeout("connect", config.connect_timeout) from None
        except ssl.SSLError as exc:
            raise SmtpTlsError(f"TLS handshake with {config.host}:{config.port}: {exc}") from exc
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            raise SmtpConnectError(
                config.host, config.port, str(exc) or type(exc).__name__
            ) from exc
        conn = cls(config, stream, tls_context=tls_context, tls_active=implicit)
        try:
            await conn._setup()
        except BaseException:
            await conn.aclose()
            raise
        return conn

    async def _setup(self) -> None:
        cfg = self.config
        with self._guard("greeting", cfg.greeting_timeout):
            event = await self._next_event()
        if isinstance(event, ConnectionClosed):
            self._broken = True
            raise SmtpConnectionLost("greeting")
        assert isinstance(event, Greeting)
        self.greeting = event.reply
        if event.reply.code != 220:
            raise SmtpReplyError("greeting", event.reply, "the server refused the session")
        await self._hello()
        if cfg.tls in ("opportunistic", "required") and not self._tls_active:
            if self._proto.supports("STARTTLS"):
                await self._starttls()
            if cfg.tls == "required" and not self._tls_active:
                raise TlsRequiredError(
                    f"{cfg.host}:{cfg.port} does not offer STARTTLS and TLS is required"
                )
        if cfg.username is not None and cfg.password is not None:
            if not self._tls_active and cfg.tls != "none":
                raise TlsRequiredError(
                    f"refusing to send credentials to {cfg.host}:{cfg.port} without TLS "
                    '(set tls="none" to allow it)'
                )
            await self._authenticate(cfg.username, cfg.password)

    async def _hello(self) -> None:
        name = self.config.local_hostname
        reply = await self._command(Ehlo(name), "ehlo", self.config.ehlo_timeout)
        if reply.is_permanent:
            reply = await self._command(Helo(name), "ehlo", self.config.ehlo_timeout)
        if not reply.is_positive_completion:
            raise SmtpReplyError("ehlo", reply)

    async def _starttls(self) -> None:
        cfg = self.config
        reply = await self._command(StartTls(), "starttls", cfg.tls_timeout)
        if reply.code != 220:
            if self._broken:
                raise SmtpReplyError("starttls", reply)
            if cfg.tls == "required":
                raise TlsRequiredError(f"{cfg.host}:{cfg.port} refused STARTTLS: {reply}")
            return  # opportunistic: go on in plaintext
        assert self._tls_context is not None
        try:
            with self._guard("starttls", cfg.tls_timeout):
                transport = self._stream
                if isinstance(transport, PlainTrioStream):
                    transport = transport.inner  # TLS goes through anyio's own stream
                self._stream = await TLSStream.wrap(
                    transport,
                    server_side=False,
                    hostname=cfg.host,
                    ssl_context=self._tls_context,
                    standard_compatible=False,
                )
        except SmtpConnectionLost as exc:
            cause = _ssl_cause(exc)
            if cause is not None:
                raise SmtpTlsError(f"TLS handshake with {cfg.host}: {cause}") from exc
            raise
        self._tls_active = True
        await self._hello()

    async def _authenticate(self, username: str, password: str) -> None:
        assert self.ehlo is not None
        mechanisms = self.ehlo.auth_mechanisms if self._proto.extended else frozenset()
        command: Command
        if "PLAIN" in mechanisms:
            command = AuthPlain(username, password)
        elif "LOGIN" in mechanisms:
            command = AuthLogin(username, password)
        else:
            offered = " ".join(sorted(mechanisms)) or "none"
            raise SmtpAuthError(
                "auth",
                Reply.of(504, f"5.7.4 no supported AUTH mechanism offered ({offered})"),
                "cannot authenticate",
            )
        reply = await self._command(command, "auth", self.config.auth_timeout)
        if reply.code != 235:
            raise SmtpAuthError("auth", reply, "authentication failed")

    # -- I/O helpers -----------------------------------------------------------------

    @contextmanager
    def _phases(self) -> Iterator[None]:
        """Run a sequence of phases under one cancel scope whose deadline :meth:`_arm`
        moves as each phase begins (one scope per transaction instead of one per phase);
        any failure in it breaks the connection."""
        outer, outer_deadline = self._scope, self._deadline
        scope = self._scope = anyio.CancelScope()
        self._deadline = scope.deadline
        try:
            with scope:
                yield
            if scope.cancelled_caught:  # only our deadline cancels this scope
                raise TimeoutError
        except SmtpError:
            self._broken = True
            raise
        except TimeoutError:
            self._broken = True
            raise SmtpTimeout(self._phase, self._limit, outcome_unknown=self._in_doubt) from None
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            self._broken = True
            raise SmtpConnectionLost(
                self._phase, str(exc) or type(exc).__name__, outcome_unknown=self._in_doubt
            ) from exc
        except BaseException:
            self._broken = True  # cancelled mid-phase: the session state is unknown
            raise
        finally:
            self._scope, self._deadline = outer, outer_deadline

    def _arm(self, phase: str, seconds: float) -> None:
        """Enter ``phase``: its time limit starts now (inside :meth:`_phases`), give or
        take 1% of it (0.5 s at most): moving a deadline is not free (trio re-registers
        it), and a pipeline's phases follow each other within microseconds, twice per
        message, each moving it by as little."""
        scope = self._scope
        assert scope is not None
        self._phase = phase
        self._limit = seconds
        deadline = self._clock() + seconds
        if abs(deadline - self._deadline) > min(0.5, seconds / 100):
            scope.deadline = self._deadline = deadline

    @contextmanager
    def _guard(self, phase: str, timeout: float) -> Iterator[None]:
        """Run one phase under its time limit; any failure in it breaks the connection."""
        with self._phases():
            self._arm(phase, timeout)
            yield

    async def _next_event(self) -> ClientEvent:
        while True:
            event = self._proto.next_event()
            if event is NEED_DATA:
                pending = self._proto.data_to_send()
                if pending:
                    await self._stream.send(pending)
                self._proto.receive_data(await self._read())
                continue
            if self._proto.phase in (Phase.CLOSING, Phase.CLOSED) and not self._closed:
                self._broken = True  # 421, or EOF: no further command will be answered
            return event

    async def _response(self) -> Reply:
        event = await self._next_event()
        if isinstance(event, Response):
            return event.reply
        raise SmtpConnectionLost(self._phase, outcome_unknown=self._in_doubt)

    async def _reply(self, phase: str, seconds: float) -> Reply:
        """The next reply, inside :meth:`_phases`; ``phase``'s time limit is armed only
        if the reply has to be waited for (pipelined replies usually come together)."""
        self._phase = phase
        event = self._proto.next_event()
        if event is NEED_DATA:
            self._arm(phase, seconds)
            event = await self._next_event()
        elif self._proto.phase is Phase.CLOSING and not self._closed:
            self._broken = True  # 421
        if isinstance(event, Response):
            return event.reply
        raise SmtpConnectionLost(phase, outcome_unknown=self._in_doubt)

    async def _replies(self, phases: Sequence[tuple[str, float]]) -> list[Reply]:
        """The replies to the next ``len(phases)`` commands, inside :meth:`_phases`, in
        bulk when they are plain (:meth:`ClientProtocol.next_replies`: one call for a
        pipelined group instead of several per reply), else one at a time; each phase's
        time limit is armed only if its reply has to be waited for."""
        proto = self._proto
        count = len(phases)
        await self._receive(*phases[0])
        while (replies := proto.next_replies(count)) is NEED_DATA:
            await self._receive(*phases[proto.ready], more=True)
        if replies is None:  # a 421, EOF, a multi-line reply…: the general path
            return [await self._reply(phase, seconds) for phase, seconds in phases]
        self._phase = phases[-1][0]
        return replies

    async def _receive(self, phase: str, seconds: float, *, more: bool = False) -> None:
        """Read the server's next bytes under ``phase``'s time limit, unless some are
        buffered and not ``more`` (after a write none usually is: nothing is parsed
        before data has come; ``more``: what is buffered is not enough)."""
        proto = self._proto
        if more or proto.idle:
            self._arm(phase, seconds)
            proto.receive_data(await self._read())

    async def _read(self) -> bytes:
        """The server's next bytes; ``b""`` at EOF."""
        if self._read_error is not None:  # where the engine's read failed (as it did)
            error, self._read_error = self._read_error, None
            raise anyio.BrokenResourceError from error
        try:
            return await self._stream.receive(_RECEIVE_SIZE)
        except anyio.EndOfStream:
            return b""

    def _group_phases(self, rset: bool, rcpts: int, last: str) -> tuple[tuple[str, float], ...]:
        """The phase and time limit of each reply to a pipelined group: RSET (when
        ``rset``), MAIL, ``rcpts`` RCPTs, then ``last`` (DATA, or the message's end)."""
        key = (rset, rcpts, last)
        phases = self._phase_table.get(key)
        if phases is None:
            cfg = self.config
            end = cfg.data_timeout if last == "data" else cfg.message_end_timeout
            phases = (
                (("rset", cfg.mail_timeout),) * rset
                + (("mail", cfg.mail_timeout),)
                + (("rcpt", cfg.rcpt_timeout),) * rcpts
                + ((last, end),)
            )
            if len(self._phase_table) < 64:
                self._phase_table[key] = phases
        return phases

    async def _command(self, command: Command, phase: str, seconds: float) -> Reply:
        with self._guard(phase, seconds):
            await self._stream.send(self._proto.send(command))
            return await self._response()

    def _claim(self) -> None:
        """Take the connection for one operation (release: ``self._busy = False``)."""
        if self._closed:
            raise anyio.ClosedResourceError
        if self._broken:
            raise anyio.BrokenResourceError("this SMTP connection is broken")
        if self._busy:
            raise anyio.BusyResourceError("using")
        self._busy = True

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        self._claim()
        try:
            yield
        finally:
            self._busy = False

    # -- mail ------------------------------------------------------------------------

    async def send(self, sender: str, recipients: Sequence[str], content: bytes) -> SendOutcome:
        """One mail transaction: MAIL, RCPT per recipient, then the message by BDAT (when
        offered, see :attr:`chunking`) or DATA.

        With PIPELINING and CHUNKING, MAIL, every RCPT and ``BDAT <n> LAST`` with the
        message go out in one write; with PIPELINING alone MAIL, every RCPT and DATA do,
        the message following the 354. Bare CR and LF in ``content`` become CRLF either
        way. Negative replies come back in the :class:`SendOutcome`; exceptions mean the
        connection failed, and ``outcome_unknown`` on :class:`SmtpConnectionLost` or
        :class:`SmtpTimeout` means the whole message had been sent when it did (the
        server may have taken it).
        """
        rcpts = _recipients(recipients)
        check_address(sender, allow_empty=True)
        for r in rcpts:
            check_address(r)
        self._claim()
        try:
            prepared = self._prepare(sender, rcpts, content)
            if isinstance(prepared, SendOutcome):
                return prepared
            return await self._one(prepared)
        finally:
            self._busy = False

    def _capabilities(self) -> _Capabilities:
        """What the last EHLO reply offers, read once per reply."""
        caps = self._caps
        if caps is None or caps.ehlo is not self._proto.ehlo:
            caps = self._caps = _Capabilities.of(self._proto, self.chunking)
        return caps

    def _prepare(
        self, sender: str, rcpts: tuple[str, ...], content: bytes
    ) -> _Prepared | SendOutcome:
        """The MAIL command and normalised content, or the local refusal of the message."""
        proto = self._proto
        caps = self._capabilities()
        utf8 = not sender.isascii() or not "".join(rcpts).isascii()
        if utf8 and not caps.smtputf8:
            return _refusal(
                rcpts,
                Reply.of(553, "5.6.7 non-ASCII address but the server lacks SMTPUTF8 (not sent)"),
            )
        sized = caps.size
        if sized or caps.chunking:
            # Once: the machine will not scan it again. (After DATA the content is framed
            # in one pass anyway: without SIZE nothing needs its length before.)
            content = proto.normalize(content)
        size = len(content)
        limit = caps.max_size
        if limit is not None and size > limit:
            return _refusal(
                rcpts,
                Reply.of(
                    552,
                    f"5.3.4 message of {size} bytes exceeds the server's "
                    f"limit of {limit} (not sent)",
                ),
            )
        mail = Mail(
            sender,
            size=size if sized else None,
            body_8bit=caps.eight_bit and not content.isascii(),
            smtputf8=utf8,
        )
        return _Prepared(mail, rcpts, content)

    async def _one(self, msg: _Prepared) -> SendOutcome:
        """One transaction, its round trips one after the other (the connection claimed)."""
        proto = self._proto
        try:
            if self.chunking:
                outcome = await self._bdat_transaction(msg.mail, msg.rcpts, msg.content)
            else:
                outcome = await self._data_transaction(msg.mail, msg.rcpts, msg.content)
        finally:
            self._in_doubt = False
        if not (_delivered(outcome) or self._broken):
            if proto.pipelining:
                self._rset_pending = True  # goes in front of the next transaction
            else:
                with suppress(SmtpError):  # the outcome stands; a failure marks us broken
                    await self._command(Rset(), "rset", self.config.mail_timeout)
        return outcome

    # -- pipelining across messages ----------------------------------------------------

    async def send_many(
        self,
        messages: Sequence[tuple[str, Sequence[str], bytes]],
        *,
        max_messages: int = 16,
        max_bytes: int = 256 * 1024,
    ) -> list[SendOutcome | SmtpError]:
        """Several transactions ``(sender, recipients, content)``, pipelined on this
        connection; one result per message, in order.

        A :class:`SendOutcome` is what :meth:`send` would have returned for that message.
        An error is what :meth:`send` would have raised, for the message the connection
        failed on and for any other whose content was written and whose final reply never
        came (``outcome_unknown``); messages not sent when the connection broke (or after
        a 421) are :class:`SmtpUntried`: nothing of them reached the server's queue.

        With CHUNKING and PIPELINING, up to ``max_messages`` transactions (and about
        ``max_bytes`` of content) go out in one write, MAIL, RCPT…, ``BDAT <n> LAST``
        each (RFC 3030 §4.2), then every reply is read. With PIPELINING alone each write
        carries the previous message's content and the next one's MAIL, RCPT… and DATA
        (RFC 2920 §3.1): one round trip per message instead of two. Without PIPELINING,
        one :meth:`send` after the other.

        On plain TCP on Trio (and :attr:`engine_pipeline`), the DATA pipeline's steady
        state runs in the engine, in a worker thread with the GIL released: it writes
        each group and takes its replies while they are plain, and hands back mid-group
        at anything else, where the Python pipeline goes on with the same effect.
        """
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("max_messages and max_bytes must be positive")
        results: list[SendOutcome | SmtpError | None] = []
        # Every message passing the checks, or None: then each is checked below.
        plain = self._prepare_plain(messages)
        checked: list[tuple[str, tuple[str, ...], bytes] | None] = []
        for sender, recipients, content in messages if plain is None else ():
            rcpts = _recipients(recipients)
            try:
                check_address(sender, allow_empty=True)
                for r in rcpts:
                    check_address(r)
            except LocalProtocolError as exc:
                results.append(exc)
                checked.append(None)
            else:
                results.append(None)
                checked.append((sender, rcpts, content))
        self._claim()
        try:
            todo: list[tuple[int, _Prepared]] = []
            if plain is not None:
                results = [None] * len(plain)
                todo = list(enumerate(plain))
            for i, item in enumerate(checked):
                if item is not None:
                    prepared = self._prepare(*item)
                    if isinstance(prepared, SendOutcome):
                        results[i] = prepared
                    else:
                        todo.append((i, prepared))
            if not self._proto.pipelining:
                await self._sequential(todo, results)
            elif self.chunking:
                await self._bdat_pipeline(todo, results, max_messages, max_bytes)
            else:
                await self._data_pipeline(todo, results)
        finally:
            self._busy = False
            self._in_doubt = False
        # None: the connection broke before this one was written.
        return [r if r is not None else SmtpUntried(self._phase) for r in results]

    def _prepare_plain(
        self, messages: Sequence[tuple[str, Sequence[str], bytes]]
    ) -> list[_Prepared] | None:
        """What :func:`check_address` and :meth:`_prepare` make of each message, made for
        the whole batch in a few calls, when every message is the plain case: one
        recipient, ASCII addresses that pass the checks, contents as ``bytes`` within the
        server's SIZE. None when one is not: then each message goes through them one by
        one, which also says what is wrong with it. (Per message, the checks cost more
        than the engine's pipeline did.)"""
        if not messages:
            return None
        caps = self._capabilities()
        try:
            if {type(m[1]) for m in messages} - {list, tuple}:
                return None  # (a str of one character would unpack as one recipient)
            rcpts = [r for _, (r,), _ in messages]
            senders = {m[0] for m in messages}
            addresses = "".join(senders) + "".join(rcpts)
            contents = [m[2] for m in messages]
            if {type(c) for c in contents} != {bytes}:
                return None
        except (TypeError, ValueError):  # not one recipient each, or not strings
            return None
        lengths = [len(r) for r in rcpts] + [len(s) for s in senders]
        if (
            not addresses.isascii()
            or FORBIDDEN_IN_ADDRESS.search(addresses) is not None
            or max(lengths) > MAX_ADDRESS_BYTES
            or not all(rcpts)
        ):
            return None
        sized = caps.size
        eight_bit: Sequence[bool] = ()
        if sized or caps.chunking or caps.eight_bit:
            normalized, eight_bit = _engine.smtp_normalize_many(contents)
            if sized or caps.chunking:  # as _prepare does
                contents = normalized
            if not caps.eight_bit:
                eight_bit = ()
        limit = caps.max_size
        if limit is not None and sized and max(map(len, contents)) > limit:
            return None
        plain: list[_Prepared] = []
        for sender, rcpt, content, high in zip(
            (m[0] for m in messages), rcpts, contents, eight_bit or repeat(False), strict=False
        ):
            size = len(content) if sized else None
            plain.append(
                _Prepared(
                    Mail(sender, size=size, body_8bit=high),
                    (rcpt,),
                    content,
                    mail_command(sender, size, high, False),
                )
            )
        return plain

    async def _sequential(
        self, todo: list[tuple[int, _Prepared]], results: list[SendOutcome | SmtpError | None]
    ) -> None:
        for i, msg in todo:
            if self._broken:
                return
            try:
                results[i] = await self._one(msg)
            except SmtpError as exc:
                results[i] = exc

    def _lost(self, exc: SmtpError) -> SmtpError:
        """The error of a message written in full whose reply the failure ``exc`` hid."""
        phase = getattr(exc, "phase", self._phase)
        if isinstance(exc, SmtpTimeout):
            # A slow server may still read and take it: in doubt, an attempt counted.
            return SmtpTimeout(phase, exc.seconds, outcome_unknown=True)
        return SmtpConnectionLost(
            phase,
            f"before this message's reply: {exc}",
            outcome_unknown=True,
            behind=isinstance(exc, SmtpConnectionLost),
        )

    async def _bdat_pipeline(
        self,
        todo: list[tuple[int, _Prepared]],
        results: list[SendOutcome | SmtpError | None],
        max_messages: int,
        max_bytes: int,
    ) -> None:
        """Rounds of one write (MAIL, RCPT…, BDAT LAST per message) and all its replies.

        Every message after the first of a write is preceded by RSET: when a message
        fails, the server may keep its transaction open (a refused MAIL or RCPT) or want
        RSET (a refused chunk, RFC 3030 §2), and the next MAIL, already on its way, would
        be refused as nested, or worse, its RCPT and chunk would join the open transaction.
        One short reply more per message buys outcomes that do not depend on the others."""
        cfg = self.config
        proto = self._proto
        queue = deque(todo)
        batch: list[tuple[int, _Prepared]] = []
        done = 0  # messages of ``batch`` whose replies are all read
        written = False  # ``batch`` went out in full
        try:
            with self._phases():  # one cancel scope for the whole pipeline
                while queue and not self._broken:
                    batch = []
                    size = 0
                    while queue and len(batch) < max_messages and (not batch or size < max_bytes):
                        item = queue.popleft()
                        batch.append(item)
                        size += len(item[1].content)
                    out = self._pending_rset()
                    rset = bool(out)
                    for j, (_, msg) in enumerate(batch):
                        if j:
                            out.append(proto.send(Rset()))
                        out.append(proto.send(msg.mail))
                        out += [proto.send(Rcpt(r)) for r in msg.rcpts]
                        out.append(proto.send(Bdat(msg.content)))
                    done = 0
                    written = False
                    self._arm("message", cfg.message_timeout)
                    await self._stream.send(b"".join(out))
                    written = self._in_doubt = True  # every message of the round is written
                    for i, msg in batch:
                        replies = await self._replies(
                            self._group_phases(rset, len(msg.rcpts), "message-end")
                        )
                        outcome = SendOutcome(
                            replies[rset],
                            tuple(zip(msg.rcpts, replies[rset + 1 : -1], strict=True)),
                            replies[-1],
                        )
                        rset = True
                        results[i] = outcome
                        done += 1
                        if self._broken:  # a 421: this message has its answer, no other
                            return
                    self._in_doubt = False
                    if not _delivered(outcome):
                        self._rset_pending = True  # the last one's transaction
        except SmtpError as exc:
            # The message whose replies were being read, and every later one of the round
            # (all written in full), may or may not have been delivered.
            if done < len(batch):
                results[batch[done][0]] = exc
                for i, _ in batch[done + 1 :] if written else ():
                    results[i] = self._lost(exc)
        finally:
            self._in_doubt = False

    async def _data_pipeline(
        self, todo: list[tuple[int, _Prepared]], results: list[SendOutcome | SmtpError | None]
    ) -> None:
        """One write per message: the previous message's content and final dot, then this
        one's MAIL, RCPT… and DATA (DATA ends the group, RFC 2920 §3.1)."""
        cfg = self.config
        proto = self._proto
        final_phase = (("message-end", cfg.message_end_timeout),)
        # The message whose DATA got its 354: (index, message, envelope replies, whether
        # it has a recipient to deliver to).
        body: _Body | None = None
        queue = deque(todo)
        handback: tuple[int, str, int | None] | None = None
        stream = self._stream
        if (
            todo
            and self.engine_pipeline
            and type(stream) is PlainTrioStream
            and proto.phase is Phase.READY
            and not proto.outstanding
            and proto.idle
        ):
            body, queue, handback = await self._engine_pipeline(stream, todo, results)
        blame: int | None = None  # the message a failure now is charged to
        try:
            with self._phases():  # one cancel scope for the whole pipeline
                while (queue or body is not None) and not self._broken:
                    # 354 with no valid recipient (RFC 2920 §3.1): send just the dot.
                    content = (
                        Message(body[1].content if body[4] else b"") if body is not None else None
                    )
                    nxt = queue.popleft() if queue else None
                    rset = False
                    if nxt is not None:
                        rset = self._rset_pending
                        self._rset_pending = False
                        out = proto.send_transaction(
                            nxt[1].mail,
                            [Rcpt(r) for r in nxt[1].rcpts],
                            body=content,
                            rset=rset,
                        )
                    else:
                        assert content is not None
                        out = proto.send(content)
                    # A failure before the previous message's reply is charged to it:
                    # this one's content never went, it stays untried.
                    blame = body[0] if body is not None else nxt[0] if nxt else None
                    self._arm("message" if body is not None else "mail", cfg.message_timeout)
                    if handback is not None:  # the engine wrote this group, or part of it
                        out = out[handback[0] :]
                        stop, errno = handback[1:]
                        handback = None
                        if stop in ("write-error", "failed"):  # (failed: an engine bug)
                            raise anyio.BrokenResourceError from _os_error(errno)
                        if stop == "read-error":
                            self._read_error = _os_error(errno)
                        elif stop == "eof":
                            proto.receive_data(b"")
                    if out:
                        await self._stream.send(out)
                    envelope: list[Reply] | None = None  # replies to this one's group
                    if body is not None:
                        i, msg, mail_reply, rcpt_replies, deliverable = body
                        self._in_doubt = deliverable
                        if nxt is not None:
                            # The final reply and the next group's usually come in one
                            # read: one call for all, else one for each (below).
                            group = self._group_phases(rset, len(nxt[1].rcpts), "data")
                            await self._receive(*final_phase[0])
                            got = proto.next_replies(1 + len(group))
                            if type(got) is list:
                                final, envelope = got[0], got[1:]
                        if envelope is None:
                            (final,) = await self._replies(final_phase)
                        self._in_doubt = False
                        results[i] = SendOutcome(
                            mail_reply,
                            tuple(zip(msg.rcpts, rcpt_replies, strict=True)),
                            final if deliverable else None,
                        )
                        body = None
                        if self._broken:
                            return
                    if nxt is None:
                        return
                    i, msg = nxt
                    blame = i
                    replies = envelope or await self._replies(
                        self._group_phases(rset, len(msg.rcpts), "data")
                    )
                    mail_reply = replies[rset]
                    rcpt_replies = replies[rset + 1 : -1]
                    data_reply = replies[-1]
                    if data_reply.code == 354:
                        deliverable = 200 <= mail_reply.code < 300 and any(
                            200 <= r.code < 300 for r in rcpt_replies
                        )
                        body = (i, msg, mail_reply, rcpt_replies, deliverable)
                    else:
                        results[i] = SendOutcome(
                            mail_reply,
                            tuple(zip(msg.rcpts, rcpt_replies, strict=True)),
                            data_reply,
                        )
                        if not self._broken:
                            self._rset_pending = True  # the transaction may still be open
        except SmtpError as exc:
            if blame is not None:
                results[blame] = exc
        finally:
            self._in_doubt = False

    async def _engine_pipeline(
        self,
        stream: PlainTrioStream,
        todo: list[tuple[int, _Prepared]],
        results: list[SendOutcome | SmtpError | None],
    ) -> tuple[_Body | None, deque[tuple[int, _Prepared]], tuple[int, str, int | None] | None]:
        """The steady state of :meth:`_data_pipeline` in the engine, GIL released: each
        group written and its replies taken there while they are plain. Returns where
        :meth:`_data_pipeline`'s loop goes on: the message whose content goes next, the
        messages not yet begun and, when the engine stopped with a group in flight, how
        much of it went and why it stopped (the loop builds that group again, writes the
        rest, and reads its replies itself, under its time limits)."""
        cfg = self.config
        proto = self._proto
        limit = min(
            cfg.mail_timeout,
            cfg.rcpt_timeout,
            cfg.data_timeout,
            cfg.message_timeout,
            cfg.message_end_timeout,
        )
        # The engine waits at most this long for anything, so that time limits stay the
        # loop's, within the 1 % they are kept to anyway (see _arm).
        patience = min(0.1, limit / 100)
        messages = [
            (msg.line or proto.mail_line(msg.mail), msg.rcpts, msg.content, msg.mail.smtputf8)
            for _, msg in todo
        ]
        try:
            (
                finished,
                lines,
                after,
                pending,
                rset,
                stop,
                errno,
                written,
                leftover,
            ) = await stream.run_pipeline(messages, self._rset_pending, patience)
        except BaseException:
            self._broken = True  # (it returns what it did even when cancelled)
            raise
        replies = proto.plain_replies(lines)
        sent: list[bytes] = []
        for index, mail, rcpts, last, ending in finished:
            i, msg = todo[index]
            results[i] = SendOutcome(
                replies[mail],
                ((msg.rcpts[0], replies[rcpts[0]]),)  # (the usual one recipient, made directly)
                if len(rcpts) == 1
                else tuple(zip(msg.rcpts, [replies[r] for r in rcpts], strict=True)),
                None if ending == 2 else replies[last],
            )
            if ending == 1 and not msg.line:  # (the batch path left no memo to clear)
                sent.append(msg.content)
        body: _Body | None = None
        if pending is not None:
            index, mail, rcpts, deliverable = pending
            i, msg = todo[index]
            body = (i, msg, replies[mail], [replies[r] for r in rcpts], deliverable)
        self._rset_pending = rset
        proto.engine_groups(body=body is not None, sent=sent)
        if leftover:
            proto.receive_data(leftover)
        return body, deque(todo[after:]), None if written is None else (written, stop, errno)

    async def _bdat_transaction(
        self, mail: Mail, rcpts: tuple[str, ...], content: bytes
    ) -> SendOutcome:
        cfg = self.config
        proto = self._proto
        rcpt_replies: list[Reply] = []
        final: Reply | None = None
        if proto.pipelining:
            # One write, one round trip. The chunk goes even if RCPTs fail: the server
            # must read and refuse it (RFC 3030 §2), so the replies still line up.
            out = self._pending_rset()
            out.append(proto.send(mail))
            out += [proto.send(Rcpt(r)) for r in rcpts]
            out.append(proto.send(Bdat(content)))
            with self._phases():
                self._arm("message", cfg.message_timeout)
                await self._stream.send(b"".join(out))
                self._in_doubt = True  # from here on, a lost reply may hide a delivery
                if len(out) > len(rcpts) + 2:
                    await self._reply("rset", cfg.mail_timeout)
                mail_reply = await self._reply("mail", cfg.mail_timeout)
                for _ in rcpts:
                    rcpt_replies.append(await self._reply("rcpt", cfg.rcpt_timeout))
                final = await self._reply("message-end", cfg.message_end_timeout)
        else:
            mail_reply, rcpt_replies = await self._envelope(mail, rcpts)
            if not self._broken and any(r.is_positive_completion for r in rcpt_replies):
                with self._phases():
                    self._arm("message", cfg.message_timeout)
                    await self._stream.send(proto.send(Bdat(content)))
                    self._in_doubt = True
                    final = await self._reply("message-end", cfg.message_end_timeout)
        self._in_doubt = False
        return SendOutcome(mail_reply, tuple(zip(rcpts, rcpt_replies, strict=True)), final)

    def _pending_rset(self) -> list[bytes]:
        """RSET for the failed transaction before, to pipeline ahead of this one."""
        if not self._rset_pending:
            return []
        self._rset_pending = False
        return [self._proto.send(Rset())]

    async def _envelope(self, mail: Mail, rcpts: tuple[str, ...]) -> tuple[Reply, list[Reply]]:
        """MAIL, then RCPT one at a time (no PIPELINING); a reply for every recipient."""
        cfg = self.config
        rcpt_replies: list[Reply] = []
        mail_reply = await self._command(mail, "mail", cfg.mail_timeout)
        if mail_reply.is_positive_completion:
            for r in rcpts:
                reply = await self._command(Rcpt(r), "rcpt", cfg.rcpt_timeout)
                rcpt_replies.append(reply)
                if self._broken:  # 421: the server is gone
                    break
        filler = rcpt_replies[-1] if self._broken and rcpt_replies else mail_reply
        rcpt_replies += [filler] * (len(rcpts) - len(rcpt_replies))
        return mail_reply, rcpt_replies

    async def _data_transaction(
        self, mail: Mail, rcpts: tuple[str, ...], content: bytes
    ) -> SendOutcome:
        cfg = self.config
        proto = self._proto
        rcpt_replies: list[Reply] = []
        data_reply: Reply | None = None
        with self._phases():
            if proto.pipelining:
                out = self._pending_rset()
                out.append(proto.send(mail))
                out += [proto.send(Rcpt(r)) for r in rcpts]
                out.append(proto.send(Data()))
                self._arm("mail", cfg.mail_timeout)
                await self._stream.send(b"".join(out))
                if len(out) > len(rcpts) + 2:
                    await self._reply("rset", cfg.mail_timeout)
                mail_reply = await self._reply("mail", cfg.mail_timeout)
                for _ in rcpts:
                    rcpt_replies.append(await self._reply("rcpt", cfg.rcpt_timeout))
                data_reply = await self._reply("data", cfg.data_timeout)
            else:
                mail_reply, rcpt_replies = await self._envelope(mail, rcpts)
                if not self._broken and any(r.is_positive_completion for r in rcpt_replies):
                    data_reply = await self._command(Data(), "data", cfg.data_timeout)
            final: Reply | None = data_reply
            if data_reply is not None and data_reply.code == 354:
                deliverable = mail_reply.is_positive_completion and any(
                    r.is_positive_completion for r in rcpt_replies
                )
                # 354 with no valid recipient (RFC 2920 §3.1): send just the dot.
                self._arm("message", cfg.message_timeout)
                await self._stream.send(proto.send(Message(content if deliverable else b"")))
                self._in_doubt = deliverable
                final = await self._reply("message-end", cfg.message_end_timeout)
                self._in_doubt = False
                if not deliverable:
                    final = None
        return SendOutcome(mail_reply, tuple(zip(rcpts, rcpt_replies, strict=True)), final)

    async def noop(self) -> Reply:
        """NOOP, e.g. to check an idle connection is still alive."""
        with self._exclusive():
            return await self._command(Noop(), "noop", self.config.mail_timeout)

    async def reset(self) -> Reply:
        """RSET."""
        with self._exclusive():
            self._rset_pending = False
            return await self._command(Rset(), "rset", self.config.mail_timeout)

    # -- closing ---------------------------------------------------------------------

    async def aclose(self) -> None:
        """QUIT (when the session is healthy), then close. Never raises an error."""
        if self._closed:
            return
        self._closed = True
        try:
            quittable = self._proto.phase in (Phase.REFUSED, Phase.GREETED, Phase.READY)
            if not self._broken and quittable and not self._proto.outstanding:
                with anyio.move_on_after(self.config.quit_timeout):
                    await self._stream.send(self._proto.send(Quit()))
                    await self._next_event()
        except Exception:
            pass
        finally:
            with suppress(Exception):
                await anyio.aclose_forcefully(self._stream)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
