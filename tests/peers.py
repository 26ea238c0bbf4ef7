"""Real peers for tests: an SMTP server that no line of ours wrote (aiosmtpd), run on
loopback in its own thread, recording what it accepts."""

from __future__ import annotations

import fnmatch
import socket
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes


@dataclass
class RecordingHandler:
    """Accepts everything except recipients matching ``reject`` (pattern -> reply)."""

    reject: Sequence[tuple[str, str]] = ()
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        for pattern, reply in self.reject:
            if fnmatch.fnmatch(address, pattern):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        with self.lock:
            self.messages.append(
                Received(str(envelope.mail_from), list(envelope.rcpt_tos), bytes(content))
            )
        return "250 2.0.0 queued"

    def count_by_recipient(self) -> Counter[str]:
        with self.lock:
            return Counter(r for m in self.messages for r in m.rcpt_tos)


@contextmanager
def aiosmtpd_server(
    reject: Sequence[tuple[str, str]] = (), port: int | None = None, **kwargs: Any
) -> Iterator[tuple[int, RecordingHandler]]:
    handler = RecordingHandler(reject=reject)
    port = port or free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, data_size_limit=10_000_000, **kwargs
    )
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()
