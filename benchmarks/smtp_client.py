"""The SMTP client hot path: ``python -m benchmarks.smtp_client [-n N] [--size BYTES]
[--connections C] [--repeats R]``.

1. Client CPU per message without a network: ``SmtpConnection.send`` over a stream that
   answers every write at once with canned replies (the cost of our Python per message,
   nothing else), DATA and BDAT.
2. Loopback against ``mailcore.smtp.Sink`` in its own process, C connections: messages/s
   and CPU per message of the client (this process) and of the sink (read from
   ``/proc``), DATA and BDAT.

A quick tool for the transport's own cost, not the campaign benchmark (``benchmarks.send``).
Figures are the best of R runs (CPU time is what the code costs; the best run is the one
least disturbed by other processes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import anyio
import anyio.lowlevel
from anyio.abc import ByteStream

from mailcore.smtp import RelayConfig, SmtpConnection

EHLO = b"250-sink\r\n250-PIPELINING\r\n250-SIZE 100000000\r\n250-8BITMIME\r\n"


def body(size: int) -> bytes:
    line = b"x" * 76 + b"\r\n"
    return b"Subject: bench\r\n\r\n" + line * max(1, size // len(line))


class Canned(ByteStream):
    """Answers each write with the replies a server would give, at once. It walks the
    command lines and skips BDAT chunks by their size, so that its own cost per message
    (counted in the client's CPU) stays small next to the client's."""

    def __init__(self, chunking: bool) -> None:
        self.pending = bytearray(b"220 canned ESMTP\r\n")
        self.ehlo = EHLO + (b"250-CHUNKING\r\n" if chunking else b"") + b"250 SMTPUTF8\r\n"
        self.body = False  # a 354 was given: the message comes first in the next write

    async def send(self, item: bytes) -> None:
        pos = 0
        if self.body:
            self.body = False
            pos = 3 if item.startswith(b".\r\n") else item.index(b"\r\n.\r\n") + 5
            self.pending += b"250 2.0.0 queued\r\n"
        while pos < len(item):
            eol = item.index(b"\r\n", pos)
            verb = item[pos : pos + 4]
            if verb == b"BDAT":
                eol += int(item[pos + 5 : eol].split(b" ", 1)[0])
                self.pending += b"250 2.0.0 queued\r\n"
            elif verb == b"DATA":
                self.pending += b"354 go on\r\n"
                self.body = True
            elif verb == b"EHLO":
                self.pending += self.ehlo
            elif verb == b"QUIT":
                self.pending += b"221 bye\r\n"
            else:
                self.pending += b"250 2.1.0 OK\r\n"
            pos = eol + 2

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await anyio.lowlevel.checkpoint()
        out = bytes(self.pending)
        self.pending.clear()
        return out

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def send_all(conn: SmtpConnection, n: int, content: bytes, depth: int) -> None:
    """``n`` messages: one ``send`` each (depth 1), or ``send_many`` of ``depth``."""
    if depth == 1:
        for i in range(n):
            outcome = await conn.send("from@example.com", [f"r{i}@example.com"], content)
            assert outcome.data is not None and outcome.data.code == 250
        return
    for start in range(0, n, depth):
        batch = [
            ("from@example.com", [f"r{i}@example.com"], content)
            for i in range(start, min(n, start + depth))
        ]
        for result in await conn.send_many(batch, max_messages=depth):
            assert not isinstance(result, Exception), result
            assert result.data is not None and result.data.code == 250


async def canned(chunking: bool, n: int, size: int, depth: int) -> float:
    config = RelayConfig(host="canned", tls="none", chunking=chunking)
    conn = SmtpConnection(config, Canned(chunking), tls_context=None, tls_active=False)
    await conn._setup()
    assert conn.chunking is chunking
    content = body(size)
    await send_all(conn, 200, content, depth)
    start = time.process_time()
    await send_all(conn, n, content, depth)
    return (time.process_time() - start) / n


def start_sink() -> tuple[subprocess.Popen[str], int]:
    code = (
        "import anyio\nfrom mailcore.smtp import Sink\nsink = Sink()\n"
        "async def main():\n"
        "    async with anyio.create_task_group() as tg:\n"
        "        print(await tg.start(sink.serve), flush=True)\n"
        "anyio.run(main, backend='trio')\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def loopback(
    port: int, chunking: bool, n: int, size: int, connections: int, depth: int
) -> tuple[float, float]:
    config = RelayConfig(host="127.0.0.1", port=port, tls="none", chunking=chunking)
    content = body(size)

    async def worker(count: int) -> None:
        async with await SmtpConnection.open(config) as conn:
            assert conn.chunking is chunking
            await send_all(conn, count, content, depth)

    start, cpu = time.perf_counter(), time.process_time()
    async with anyio.create_task_group() as tg:
        for _ in range(connections):
            tg.start_soon(worker, n // connections)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20_000, help="messages per run")
    parser.add_argument("--size", type=int, default=10_240, help="message size in bytes")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--depth", type=int, default=16, help="messages per send_many (compared with 1)"
    )
    args = parser.parse_args()
    depths = sorted({1, args.depth})
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    for chunking in (False, True):
        for depth in depths:
            best = min(
                anyio.run(canned, chunking, args.n, args.size, depth, backend="trio")
                for _ in range(args.repeats)
            )
            name = "BDAT" if chunking else "DATA"
            print(
                f"canned  {name} depth {depth:3}: client {best * 1e6:6.1f} us/message",
                flush=True,
            )
    sink, port = start_sink()
    try:
        for chunking in (False, True):
            for depth in depths:
                runs = []
                for _ in range(args.repeats):
                    before = cpu_of(sink.pid)
                    wall, cpu = anyio.run(
                        loopback,
                        port,
                        chunking,
                        args.n,
                        args.size,
                        args.connections,
                        depth,
                        backend="trio",
                    )
                    runs.append((wall, cpu, cpu_of(sink.pid) - before))
                wall, cpu, sink_cpu = min(runs)
                name = "BDAT" if chunking else "DATA"
                print(
                    f"loopback {name} depth {depth:3}: {args.n / wall:8,.0f} messages/s, "
                    f"client {cpu / args.n * 1e6:5.0f} us/message, sink "
                    f"{sink_cpu / args.n * 1e6:5.0f} us/message ({args.connections} "
                    f"connections, {args.size} bytes)",
                    flush=True,
                )
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    main()
