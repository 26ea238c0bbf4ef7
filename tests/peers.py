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
    keep_content: bool = True  # False: record envelopes only (big sends, little memory)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        for pattern, reply in self.reject:
            if fnmatch.fnmatch(address, pattern):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = (envelope.original_content or b"") if self.keep_content else b""
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
    reject: Sequence[tuple[str, str]] = (),
    port: int | None = None,
    keep_content: bool = True,
    hostname: str = "127.0.0.1",
    **kwargs: Any,
) -> Iterator[tuple[int, RecordingHandler]]:
    handler = RecordingHandler(reject=reject, keep_content=keep_content)
    port = port or free_port()
    controller = Controller(
        handler, hostname=hostname, port=port, data_size_limit=10_000_000, **kwargs
    )
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()


@dataclass
class WebhookReceiver:
    """A real HTTP server that records what it receives. ``fail_first`` answers that many
    requests with 503 (and Retry-After: 0) before accepting."""

    fail_first: int = 0
    fail_rate: float = 0.0  # and then this share at random (seeded)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    calls: int = 0
    rng: Any = field(default_factory=lambda: __import__("random").Random(5))

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def hook(request: Request) -> Response:
            self.calls += 1
            number = self.calls  # before any await: concurrent requests each get their own
            body = await request.body()
            if number <= self.fail_first or self.rng.random() < self.fail_rate:
                return Response("busy", status_code=503, headers={"Retry-After": "0"})
            self.requests.append((dict(request.headers), body))
            return Response("ok")

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    async def serve(self, *, task_status: Any) -> None:
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        await serve(self.app(), config, task_status=task_status)


async def wait_until(check: Any, seconds: float = 60.0, interval: float = 0.05) -> None:
    """Poll ``check`` (sync or async, returning truthy) until it holds; bounded in time."""
    import inspect

    import trio

    with trio.fail_after(seconds):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await trio.sleep(interval)
