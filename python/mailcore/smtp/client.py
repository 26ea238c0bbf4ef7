"""The SMTP client transport: the only code here that touches sockets.

:class:`SmtpConnection` drives a :class:`~mailcore.smtp.protocol.ClientProtocol` over an
anyio byte stream: greeting, EHLO (HELO fallback), STARTTLS, AUTH, then any number of
:meth:`SmtpConnection.send` transactions, each phase under its own time limit. After a
timeout, a connection error, a protocol error or a 421 the connection is *broken* (as in
trio: the resource is unusable) and must be dropped; otherwise it stays reusable, RSET
being sent after every failed transaction.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self, TypeAlias
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio
import msgspec
from anyio.abc import ByteStream
from anyio.streams.tls import TLSStream

from .errors import (
    SmtpAuthError,
    SmtpConnectError,
    SmtpConnectionLost,
    SmtpError,
    SmtpReplyError,
    SmtpTimeout,
    SmtpTlsError,
    TlsRequiredError,
)
from .events import (
    NEED_DATA,
    AuthLogin,
    AuthPlain,
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
from .protocol import ClientProtocol, Phase, check_address, normalize_newlines
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


class RelayConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how to relay mail. Timeouts are in seconds, one per phase.

    ``port=0`` means the default of the TLS mode: 465 for ``implicit``, else 25.
    ``tls``: ``none`` never starts TLS; ``opportunistic`` uses STARTTLS when offered;
    ``required`` refuses (:class:`TlsRequiredError`) a server without STARTTLS;
    ``implicit`` speaks TLS from the first byte (SMTPS). Certificates are verified with
    the ``tls_context`` given to :meth:`SmtpConnection.open` (default: the system's).
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
    connect_timeout: float = 10.0
    greeting_timeout: float = 30.0
    ehlo_timeout: float = 30.0
    tls_timeout: float = 30.0
    auth_timeout: float = 30.0
    mail_timeout: float = 30.0
    rcpt_timeout: float = 30.0
    data_timeout: float = 30.0
    message_timeout: float = 120.0
    """Writing the message content."""
    message_end_timeout: float = 120.0
    """Waiting for the reply after the final dot."""
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
        """``smtp://[user:pass@]host[:port][?tls=...&local_hostname=...&data_timeout=...]``.

        ``smtp://`` is opportunistic STARTTLS on port 25, ``submission://`` required
        STARTTLS on 587, ``smtps://`` implicit TLS on 465. User and password are
        percent-decoded.
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
        options: dict[str, str | float] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
            if key == "tls":
                if value not in _TLS_MODES:
                    raise ValueError(f"tls must be one of {', '.join(_TLS_MODES)}")
                if scheme == "smtps" and value != "implicit":
                    raise ValueError("smtps:// is implicit TLS")
                tls = value
            elif key in ("local_hostname", "helo"):
                options["local_hostname"] = value
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


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What the server said about one message.

    ``recipients`` pairs every recipient with its RCPT reply (the MAIL reply when RCPT was
    never sent). ``data`` is the reply that ended the DATA phase: the reply after the final
    dot, or the refusal of DATA itself; None when DATA was never reached.
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
            if reply.is_permanent:
                return "bounced"
            if reply.is_transient:
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


def _refusal(recipients: Sequence[str], reply: Reply) -> SendOutcome:
    return SendOutcome(reply, tuple((r, reply) for r in recipients), None)


class SmtpConnection:
    """One SMTP session with a relay, reusable for many messages. Not for concurrent use.

    Open with ``await SmtpConnection.open(config)``; ``async with`` closes it.
    """

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
        self._phase = "connect"
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
                    stream = await anyio.connect_tcp(config.address or config.host, config.port)
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
                self._stream = await TLSStream.wrap(
                    self._stream,
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
    def _guard(self, phase: str, timeout: float) -> Iterator[None]:
        """Run a phase under its time limit; any failure in it breaks the connection."""
        self._phase = phase
        try:
            with anyio.fail_after(timeout):
                yield
        except SmtpError:
            self._broken = True
            raise
        except TimeoutError:
            self._broken = True
            raise SmtpTimeout(phase, timeout) from None
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            self._broken = True
            raise SmtpConnectionLost(phase, str(exc) or type(exc).__name__) from exc
        except BaseException:
            self._broken = True  # cancelled mid-phase: the session state is unknown
            raise

    async def _next_event(self) -> ClientEvent:
        while True:
            event = self._proto.next_event()
            if event is NEED_DATA:
                pending = self._proto.data_to_send()
                if pending:
                    await self._stream.send(pending)
                try:
                    data = await self._stream.receive(_RECEIVE_SIZE)
                except anyio.EndOfStream:
                    data = b""
                self._proto.receive_data(data)
                continue
            if self._proto.phase in (Phase.CLOSING, Phase.CLOSED) and not self._closed:
                self._broken = True  # 421, or EOF: no further command will be answered
            return event

    async def _response(self) -> Reply:
        event = await self._next_event()
        if isinstance(event, Response):
            return event.reply
        raise SmtpConnectionLost(self._phase)

    async def _command(self, command: Command, phase: str, seconds: float) -> Reply:
        with self._guard(phase, seconds):
            await self._stream.send(self._proto.send(command))
            return await self._response()

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._broken:
            raise anyio.BrokenResourceError("this SMTP connection is broken")
        if self._busy:
            raise anyio.BusyResourceError("using")
        self._busy = True
        try:
            yield
        finally:
            self._busy = False

    # -- mail ------------------------------------------------------------------------

    async def send(self, sender: str, recipients: Sequence[str], content: bytes) -> SendOutcome:
        """One mail transaction: MAIL, RCPT per recipient, DATA, the message.

        With PIPELINING, MAIL, every RCPT and DATA go out in one write. Negative replies
        come back in the :class:`SendOutcome`; exceptions mean the connection failed:
        :class:`SmtpConnectionLost` with ``phase == "message-end"`` means the outcome is
        unknown (the final dot was sent).
        """
        if isinstance(recipients, str):
            raise TypeError("recipients must be a sequence of addresses, not a str")
        rcpts = tuple(recipients)
        if not rcpts:
            raise ValueError("a message needs at least one recipient")
        check_address(sender, allow_empty=True)
        for r in rcpts:
            check_address(r)
        with self._exclusive():
            utf8 = not sender.isascii() or not all(r.isascii() for r in rcpts)
            if utf8 and not self._proto.supports("SMTPUTF8"):
                return _refusal(
                    rcpts,
                    Reply.of(
                        553, "5.6.7 non-ASCII address but the server lacks SMTPUTF8 (not sent)"
                    ),
                )
            size = len(normalize_newlines(content))
            limit = self.ehlo.max_size if self.ehlo is not None else None
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
                size=size if self._proto.supports("SIZE") else None,
                body_8bit=not content.isascii() and self._proto.supports("8BITMIME"),
                smtputf8=utf8,
            )
            return await self._transaction(mail, rcpts, content)

    async def _transaction(self, mail: Mail, rcpts: tuple[str, ...], content: bytes) -> SendOutcome:
        cfg = self.config
        rcpt_replies: list[Reply] = []
        data_reply: Reply | None = None
        if self._proto.pipelining:
            with self._guard("mail", cfg.mail_timeout):
                out = self._proto.send(mail)
                out += b"".join(self._proto.send(Rcpt(r)) for r in rcpts)
                out += self._proto.send(Data())
                await self._stream.send(out)
                mail_reply = await self._response()
            for _ in rcpts:
                with self._guard("rcpt", cfg.rcpt_timeout):
                    rcpt_replies.append(await self._response())
            with self._guard("data", cfg.data_timeout):
                data_reply = await self._response()
        else:
            mail_reply = await self._command(mail, "mail", cfg.mail_timeout)
            if mail_reply.is_positive_completion:
                for r in rcpts:
                    reply = await self._command(Rcpt(r), "rcpt", cfg.rcpt_timeout)
                    rcpt_replies.append(reply)
                    if self._broken:  # 421: the server is gone
                        break
                if not self._broken and any(r.is_positive_completion for r in rcpt_replies):
                    data_reply = await self._command(Data(), "data", cfg.data_timeout)
            filler = rcpt_replies[-1] if self._broken and rcpt_replies else mail_reply
            rcpt_replies += [filler] * (len(rcpts) - len(rcpt_replies))
        final: Reply | None = data_reply
        if data_reply is not None and data_reply.code == 354:
            deliverable = mail_reply.is_positive_completion and any(
                r.is_positive_completion for r in rcpt_replies
            )
            # 354 with no valid recipient (RFC 2920 §3.1): send just the dot.
            with self._guard("message", cfg.message_timeout):
                await self._stream.send(self._proto.send(Message(content if deliverable else b"")))
            with self._guard("message-end", cfg.message_end_timeout):
                final = await self._response()
            if not deliverable:
                final = None
        outcome = SendOutcome(mail_reply, tuple(zip(rcpts, rcpt_replies, strict=True)), final)
        if (final is None or not final.is_positive_completion) and not self._broken:
            with suppress(SmtpError):  # the outcome stands; a failure marks us broken
                await self._command(Rset(), "rset", cfg.mail_timeout)
        return outcome

    async def noop(self) -> Reply:
        """NOOP, e.g. to check an idle connection is still alive."""
        with self._exclusive():
            return await self._command(Noop(), "noop", self.config.mail_timeout)

    async def reset(self) -> Reply:
        """RSET."""
        with self._exclusive():
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
