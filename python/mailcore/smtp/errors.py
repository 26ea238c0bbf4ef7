"""Errors of the SMTP layer.

Two families, as in h11: the sans-IO machines raise :class:`LocalProtocolError` (we asked
for something SMTP does not allow) and :class:`RemoteProtocolError` (the peer sent
something that is not SMTP); the transport adds connection failures, each naming the
*phase* of the session it happened in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .reply import Reply


class SmtpError(Exception):
    """Base of every error raised by :mod:`mailcore.smtp`."""


class ProtocolError(SmtpError):
    """The SMTP conversation cannot go on as asked."""


class LocalProtocolError(ProtocolError):
    """Our side tried something the protocol (or the current state) does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not valid SMTP (bad reply code, overlong line…)."""


class SmtpConnectError(SmtpError):
    """The TCP (or implicit TLS) connection could not be established."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot connect to {host}:{port}: {reason}")
        self.host = host
        self.port = port
        self.reason = reason


class SmtpTimeout(SmtpError, TimeoutError):
    """The server did not answer (or accept our bytes) within the phase's time limit.

    The connection is broken afterwards.
    """

    def __init__(self, phase: str, seconds: float | None = None) -> None:
        after = f" after {seconds:g}s" if seconds is not None else ""
        super().__init__(f"timed out in phase {phase!r}{after}")
        self.phase = phase
        self.seconds = seconds


class SmtpConnectionLost(SmtpError):
    """The connection closed or failed in the middle of ``phase``.

    When ``phase == "message-end"`` the final dot was sent and no reply came back: the
    server may or may not have taken the message (:attr:`outcome_unknown`).
    """

    def __init__(self, phase: str, reason: str = "connection closed by the server") -> None:
        super().__init__(f"connection lost in phase {phase!r}: {reason}")
        self.phase = phase
        self.reason = reason

    @property
    def outcome_unknown(self) -> bool:
        return self.phase == "message-end"


class SmtpReplyError(SmtpError):
    """The server refused a step of the session set-up (greeting, HELO, STARTTLS, AUTH)."""

    def __init__(self, phase: str, reply: Reply, message: str | None = None) -> None:
        text = message or "refused"
        super().__init__(f"{phase}: {text}: {reply.code} {reply.text}")
        self.phase = phase
        self.reply = reply

    @property
    def is_transient(self) -> bool:
        return self.reply.is_transient


class SmtpAuthError(SmtpReplyError):
    """Authentication was refused, or no mechanism we speak is offered."""


class TlsRequiredError(SmtpError):
    """TLS is required (by the configuration, or to protect credentials) but not available.

    Nothing but EHLO/HELO, STARTTLS and QUIT was sent in plaintext.
    """


class SmtpTlsError(SmtpError):
    """The TLS handshake failed (certificate not trusted, protocol mismatch…)."""
