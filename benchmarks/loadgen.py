"""The load generators: httpx.AsyncClient on Trio, and a lean HTTP/1.1 client.

Both keep ``concurrency`` connections alive over loopback and send each body once. The
lean client exists because httpx spends about 1 ms of CPU per request on a 2-core
machine: it then needs as much CPU as the server it measures, and on two cores the
figure becomes the client's. The lean client writes pre-encoded requests to Trio
sockets and reads responses by Content-Length, for about a tenth of that CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import httpx
import trio

CONTACTS = "/v1/mail/contacts"
IMPORT = "/v1/mail/contacts/import"
ClientKind = Literal["lean", "httpx"]
REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class PostRun:
    """One timed batch of POSTs: wall time, per-request latencies and CPU on both sides."""

    seconds: float
    latencies: list[float]
    server_cpu: float
    client_cpu: float
    other_cpu: float  # CPU seconds of every other process on the machine meanwhile

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 0.50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 0.99) * 1000


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: a latency some request actually had."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class Poster(Protocol):
    """Sends one body on one of its connections; returns the response status."""

    async def post(self, worker: int, body: bytes) -> int: ...


class HttpxPoster:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client
        self._headers = {"Content-Type": "application/json"}

    async def post(self, worker: int, body: bytes) -> int:
        response = await self._client.post(CONTACTS, content=body, headers=self._headers)
        return response.status_code


class LeanPoster:
    """One Trio socket per worker; HTTP/1.1 keep-alive, responses framed by
    Content-Length (every response of both servers carries one). Hypercorn closes a
    connection after ``keep_alive_max_requests`` (1,000); the worker then reconnects."""

    def __init__(self, host: str, port: int, api_key: str, concurrency: int) -> None:
        self._host, self._port = host, port
        self._streams: list[trio.SocketStream | None] = [None] * concurrency
        self._buffers = [bytearray() for _ in range(concurrency)]
        self._head = (
            f"POST {CONTACTS} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {api_key}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()

    async def post(self, worker: int, body: bytes) -> int:
        stream = self._streams[worker]
        if stream is None:
            stream = self._streams[worker] = await trio.open_tcp_stream(self._host, self._port)
            self._buffers[worker].clear()
        with trio.fail_after(REQUEST_TIMEOUT):  # as httpx's timeout: a stuck server fails the run
            await stream.send_all(b"%s%d\r\n\r\n%s" % (self._head, len(body), body))
            status, keep_alive = await _read_response(stream, self._buffers[worker])
        if not keep_alive:
            await self._close(worker)
        return status

    async def _close(self, worker: int) -> None:
        stream, self._streams[worker] = self._streams[worker], None
        if stream is not None:
            await stream.aclose()

    async def aclose(self) -> None:
        for worker in range(len(self._streams)):
            await self._close(worker)


async def _read_response(stream: trio.SocketStream, buffer: bytearray) -> tuple[int, bool]:
    """Read one response off ``buffer``/``stream``: (status, whether the connection
    stays open)."""
    while (end := buffer.find(b"\r\n\r\n")) == -1:
        await _fill(stream, buffer)
    head = bytes(buffer[:end]).lower() + b"\r\n"
    at = head.find(b"\r\ncontent-length:")
    if at == -1:
        raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
    length = int(head[at + 17 : head.find(b"\r\n", at + 2)])
    total = end + 4 + length
    while len(buffer) < total:
        await _fill(stream, buffer)
    del buffer[:total]
    return int(head[9:12]), b"\r\nconnection: close\r\n" not in head


async def _fill(stream: trio.SocketStream, buffer: bytearray) -> None:
    chunk = await stream.receive_some(65536)
    if not chunk:
        raise RuntimeError("the server closed the connection")
    buffer += chunk


@asynccontextmanager
async def open_poster(
    kind: ClientKind, base_url: str, api_key: str, concurrency: int
) -> AsyncIterator[Poster]:
    if kind == "httpx":
        async with _httpx_client(base_url, api_key, concurrency, REQUEST_TIMEOUT) as client:
            yield HttpxPoster(client)
        return
    url = urlsplit(base_url)
    assert url.hostname is not None and url.port is not None
    poster = LeanPoster(url.hostname, url.port, api_key, concurrency)
    try:
        yield poster
    finally:
        await poster.aclose()


def _httpx_client(
    base_url: str, api_key: str, concurrency: int, timeout: float
) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}"},
        limits=limits,
        timeout=timeout,
    )


async def _post_all(poster: Poster, bodies: Sequence[bytes], concurrency: int) -> list[float]:
    """POST every body once with ``concurrency`` workers; each must answer 201."""
    latencies = [0.0] * len(bodies)
    failures: list[int] = []
    indexes = iter(range(len(bodies)))  # shared: each index goes to exactly one worker

    async def worker(n: int) -> None:
        for i in indexes:
            start = time.perf_counter()
            status = await poster.post(n, bodies[i])
            latencies[i] = time.perf_counter() - start
            if status != 201:
                failures.append(status)

    async with trio.open_nursery() as nursery:
        for n in range(concurrency):
            nursery.start_soon(worker, n)
    if failures:
        raise RuntimeError(f"{len(failures)} POST {CONTACTS} failed, e.g. {failures[:5]}")
    return latencies


async def _measure_posts(
    kind: ClientKind,
    base_url: str,
    api_key: str,
    warmup: Sequence[bytes],
    bodies: Sequence[bytes],
    concurrency: int,
    server_cpu: Callable[[], float],
    machine_cpu: Callable[[], float],
) -> PostRun:
    async with open_poster(kind, base_url, api_key, concurrency) as poster:
        # The warm-up opens every connection and warms the server before the clock runs.
        await _post_all(poster, warmup, concurrency)
        machine0, cpu0, client0 = machine_cpu(), server_cpu(), time.process_time()
        start = time.perf_counter()
        latencies = await _post_all(poster, bodies, concurrency)
        seconds = time.perf_counter() - start
        server, client = server_cpu() - cpu0, time.process_time() - client0
        return PostRun(
            seconds=seconds,
            latencies=latencies,
            server_cpu=server,
            client_cpu=client,
            other_cpu=max(0.0, machine_cpu() - machine0 - server - client),
        )


def measure_posts(
    kind: ClientKind,
    base_url: str,
    api_key: str,
    warmup: Sequence[bytes],
    bodies: Sequence[bytes],
    concurrency: int,
    server_cpu: Callable[[], float],
    machine_cpu: Callable[[], float],
) -> PostRun:
    """Warm up, then time ``bodies``; ``server_cpu()`` and ``machine_cpu()`` read the CPU
    seconds used by the server and by the whole machine."""
    return trio.run(
        _measure_posts,
        kind,
        base_url,
        api_key,
        warmup,
        bodies,
        concurrency,
        server_cpu,
        machine_cpu,
    )


async def _post_csv(base_url: str, api_key: str, body: bytes) -> tuple[float, dict[str, Any]]:
    async with _httpx_client(base_url, api_key, 1, timeout=900) as client:
        start = time.perf_counter()
        response = await client.post(IMPORT, content=body, headers={"Content-Type": "text/csv"})
        seconds = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"POST {IMPORT}: {response.status_code} {response.text[:500]}")
    result: dict[str, Any] = response.json()
    return seconds, result


def post_csv(base_url: str, api_key: str, body: bytes) -> tuple[float, dict[str, Any]]:
    """One CSV import over HTTP (httpx): (seconds from sending to the full response,
    the import result)."""
    return trio.run(_post_csv, base_url, api_key, body)
