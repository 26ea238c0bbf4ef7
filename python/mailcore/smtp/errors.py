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


def _doubt(phase: str, outcome_unknown: bool | None) -> bool:
    return phase == "message-end" if outcome_unknown is None else outcome_unknown


class SmtpTimeout(SmtpError, TimeoutError):
    """The server did not answer (or accept our bytes) within the phase's time limit.

    The connection is broken afterwards. :attr:`outcome_unknown` as for
    :class:`SmtpConnectionLost`.
    """

    def __init__(
        self, phase: str, seconds: float | None = None, *, outcome_unknown: bool | None = None
    ) -> None:
        after = f" after {seconds:g}s" if seconds is not None else ""
        self.outcome_unknown = _doubt(phase, outcome_unknown)
        doubt = " (the message may have been delivered)" if self.outcome_unknown else ""
        super().__init__(f"timed out in phase {phase!r}{after}{doubt}")
        self.phase = phase
        self.seconds = seconds


class SmtpConnectionLost(SmtpError):
    """The connection closed or failed in the middle of ``phase``.

    :attr:`outcome_unknown` is True when the whole message had been sent (the final dot,
    or the last BDAT chunk) and the reply that would say what became of it never came:
    the server may or may not have taken the message. That is the ``message-end`` phase;
    with BDAT pipelined after MAIL and RCPT, also the ``mail`` and ``rcpt`` phases that
    follow the single write.

    :attr:`behind` is True for a message of a pipeline written in full behind an earlier
    one whose reply never came either. A server stops reading when it closes, so it most
    likely never read this one: send it again without counting an attempt. (A server that
    took it, held back its replies and then closed would get it twice: a duplicate per
    such message at most, as for any unknown outcome.)
    """

    def __init__(
        self,
        phase: str,
        reason: str = "connection closed by the server",
        *,
        outcome_unknown: bool | None = None,
        behind: bool = False,
    ) -> None:
        self.outcome_unknown = _doubt(phase, outcome_unknown)
        self.behind = behind
        doubt = " (the message may have been delivered)" if self.outcome_unknown else ""
        super().__init__(f"connection lost in phase {phase!r}: {reason}{doubt}")
        self.phase = phase
        self.reason = reason


class SmtpUntried(SmtpError):
    """A message of a pipelined batch that was never sent: the connection broke (or the
    server said 421) before its content went out. Nothing of it can have been delivered;
    send it again, on another connection, without counting an attempt."""

    def __init__(self, phase: str) -> None:
        super().__init__(f"not sent: the connection failed (in phase {phase!r}) before it")
        self.phase = phase


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
