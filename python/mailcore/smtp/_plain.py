"""A plain TCP byte stream for the SMTP client on Trio: one system call per send and per
receive, for the hot path of a pipelining sender.

anyio's socket stream on Trio goes through trio's socket wrapper: a receive first tries
``recv`` (which, right after a write, almost always fails with EAGAIN), then waits, then
calls ``recv`` again; a send ends with a yield to the scheduler even when the kernel took
every byte at once. On one loopback connection, a 10 KB write and its four replies cost
the event loop 55–72 µs that way against 43–48 µs with this stream; across 32 connections
to smtp-sink the whole client spends about 5 % less CPU per message. This stream waits for
readability first and yields only when it has to wait (every message's receive waits, so
no task starves).

Only for plain TCP on Trio: TLS (implicit, or after STARTTLS) and asyncio keep anyio's
streams.

:meth:`PlainTrioStream.run_pipeline` lends the socket to the engine for the steady state
of a DATA pipeline: the engine's driver thread writes the groups and reads their replies
with the GIL released (``engine/core/src/transport.rs``), one call per batch of messages
instead of several Python steps per message, and hands back at the first thing that is
not the steady state. One driver thread serves every connection from one epoll loop; the
stream awaits its run's end on the runner's notification fd, in the event loop.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import sniffio
import trio
from anyio.abc import ByteStream, SocketAttribute

from .. import _engine

if TYPE_CHECKING:
    from .._engine import SmtpPipelineResult as PipelineResult


class PlainTrioStream(ByteStream):
    """Wraps a connected anyio socket stream (``inner``, which keeps owning the socket)."""

    def __init__(self, inner: ByteStream) -> None:
        self.inner = inner
        self._socket: socket.socket = inner.extra(SocketAttribute.raw_socket)
        self._closed = False
        self._runner: _engine.SmtpPipelineRunner | None = None  # made on first use
        self._running = False

    async def run_pipeline(
        self,
        messages: Sequence[tuple[bytes, Sequence[str], bytes, bool]],
        rset: bool,
        patience: float,
    ) -> PipelineResult:
        """A run of the engine's pipeline on this socket (``SmtpPipelineRunner``). A
        cancellation waits for it: the engine gives up within ``patience`` of any wait,
        and what it did is returned, so the caller's machine stays in step with the
        server (the cancellation takes effect at the caller's next checkpoint)."""
        if self._closed:
            raise anyio.ClosedResourceError
        if self._running:
            raise anyio.BusyResourceError("running a pipeline on")
        runner = self._runner
        if runner is None:
            runner = self._runner = _engine.SmtpPipelineRunner()
        runner.start(self._socket.fileno(), messages, rset, patience)
        self._running = True
        try:
            with trio.CancelScope(shield=True):
                result = await _ended(runner)
        finally:
            self._running = False
        return result

    async def send(self, item: bytes) -> None:
        sock = self._socket
        view = memoryview(item)
        while view:
            if self._closed:
                raise anyio.ClosedResourceError
            try:
                sent = sock.send(view)
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_writable(sock)
                except trio.ClosedResourceError:
                    raise anyio.ClosedResourceError from None
                except trio.BusyResourceError:
                    raise anyio.BusyResourceError("sending to") from None
                continue
            except OSError as exc:
                raise anyio.BrokenResourceError from exc
            view = view[sent:]

    async def receive(self, max_bytes: int = 65536) -> bytes:
        sock = self._socket
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            # Wait first: after a write, the replies are not there yet. (A checkpoint
            # each time, so cancellation and the other tasks get their turn.)
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:  # as anyio's stream says it
                raise anyio.ClosedResourceError from None
            except trio.BusyResourceError:
                raise anyio.BusyResourceError("receiving from") from None
            try:
                data = sock.recv(max_bytes)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise anyio.BrokenResourceError from exc
            if not data:
                raise anyio.EndOfStream
            return data

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        self._closed = True
        if not self._running:
            self._runner = None  # its notification pair's two descriptors go now
        await self.inner.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self.inner.extra_attributes


async def _ended(runner: _engine.SmtpPipelineRunner) -> PipelineResult:
    """What the run did, once its runner's fd says it has ended."""
    while True:
        result = runner.finish()
        if result is not None:
            return result
        await trio.lowlevel.wait_readable(runner)


def plain_stream(stream: ByteStream) -> ByteStream:
    """``stream`` wrapped in a :class:`PlainTrioStream` when running on Trio, else itself."""
    if sniffio.current_async_library() == "trio":
        return PlainTrioStream(stream)
    return stream
