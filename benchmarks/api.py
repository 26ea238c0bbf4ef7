"""The API benchmark: ``python -m benchmarks.api [--quick] [--write-results]``.

1. ``POST /v1/mail/contacts``: requests/s and latency p50/p99 against one ``mailcore
   serve`` process over loopback, side by side with a hand-written Starlette + sqlite3
   endpoint (``benchmarks.baseline``) behind the same hypercorn/Trio worker. The load
   generator (this process) keeps keep-alive connections open, with httpx on Trio and
   with a lean HTTP/1.1 client (see ``benchmarks.loadgen`` for why both); every request
   creates a distinct contact. Repetitions alternate between servers and clients.
2. A CSV import end to end over HTTP (``POST /v1/mail/contacts/import``) on a fresh
   database: rows/s and the server's peak RSS, side by side with a naive
   ``csv.DictReader`` + ``executemany`` upsert run in its own process without HTTP.

Servers and the naive import run in child processes started and stopped here; nothing
outlives the run. Figures are medians of ``--repeats`` runs, except the single large
import (one run; its repeated companion is the ``--small-rows`` import).
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import data, loadgen, results, servers

RESULTS = results.RESULTS
SECTION = "## API (`python -m benchmarks.api`)"
TARGET_RPS = 1_500
TARGET_ROWS_PER_S = 50_000
SERVER_NAMES = {"mailcore": "mailcore", "baseline": "hand-written Starlette + sqlite3"}
CLIENT_NAMES = {"lean": "lean HTTP/1.1 client", "httpx": "httpx.AsyncClient"}

PostKey = tuple[str, loadgen.ClientKind]  # (server name, client kind)


@dataclass(frozen=True)
class Options:
    requests: int
    repeats: int
    concurrency: int
    clients: tuple[loadgen.ClientKind, ...]
    rows: int
    small_rows: int
    quick: bool
    profile_dir: Path | None


@dataclass(frozen=True)
class ImportRun:
    rows: int
    seconds: float
    peak_rss_kib: int
    idle_rss_kib: int | None = None  # the server's RSS before the import

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


@dataclass(frozen=True)
class Figures:
    posts: dict[PostKey, list[loadgen.PostRun]]  # one run per repetition
    mailcore_big: ImportRun
    mailcore_small: list[ImportRun]
    naive_big: ImportRun
    naive_small: list[ImportRun]


# -- 1. POST /v1/mail/contacts ------------------------------------------------------


def bench_posts(opts: Options, workdir: Path) -> dict[PostKey, list[loadgen.PostRun]]:
    runs: dict[PostKey, list[loadgen.PostRun]] = {}
    profile = opts.profile_dir / "mailcore-posts.prof" if opts.profile_dir else None
    with (
        servers.mailcore_server(workdir / "posts-mailcore", profile) as mailcore,
        servers.baseline_server(workdir / "posts-baseline") as baseline,
    ):
        for rep in range(opts.repeats):
            # Alternate servers and clients, so that drift on the machine hits all alike.
            for client in opts.clients:
                for server in (mailcore, baseline):
                    run = post_run(opts, server, client, f"{client}{rep}")
                    runs.setdefault((server.name, client), []).append(run)
                    print(
                        f"  {server.name:<9} {client:<6} rep {rep + 1}: {run.rps:>7,.0f} req/s  "
                        f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms",
                        flush=True,
                    )
    return runs


def post_run(
    opts: Options, server: servers.Server, client: loadgen.ClientKind, tag: str
) -> loadgen.PostRun:
    """A warm-up and one timed batch; emails are distinct across all batches."""
    warmup = data.contact_bodies(f"warm-{tag}", max(4 * opts.concurrency, 200))
    bodies = data.contact_bodies(f"bench-{tag}", opts.requests)
    return loadgen.measure_posts(
        client,
        server.base_url,
        server.api_key,
        warmup,
        bodies,
        opts.concurrency,
        server.cpu_seconds,
        servers.machine_busy_seconds,
    )


# -- 2. CSV import ------------------------------------------------------------------


def mailcore_import(body: bytes, rows: int, workdir: Path, profile: Path | None) -> ImportRun:
    with servers.mailcore_server(workdir, profile) as server:
        idle = server.rss_kib()
        seconds, result = loadgen.post_csv(server.base_url, server.api_key, body)
        peak = server.peak_rss_kib()
    if result["created"] != rows or result["errors"]:
        raise RuntimeError(f"import created {result['created']} of {rows}: {result['errors'][:3]}")
    return ImportRun(rows, seconds, peak, idle)


def naive_import(csv_path: Path, rows: int, workdir: Path) -> ImportRun:
    result = servers.baseline_import(workdir, csv_path)
    if result["rows"] != rows:
        raise RuntimeError(f"naive import wrote {result['rows']} of {rows} rows")
    return ImportRun(rows, result["seconds"], result["peakRssKib"])


def _say(label: str, run: ImportRun) -> ImportRun:
    print(f"  {label:<22} {run.rows:>9,} rows  {run.rows_per_s:>9,.0f} rows/s", flush=True)
    return run


def bench_imports(
    opts: Options, workdir: Path
) -> tuple[ImportRun, list[ImportRun], ImportRun, list[ImportRun]]:
    big, small = data.contacts_csv(opts.rows), data.contacts_csv(opts.small_rows)
    big_path, small_path = workdir / "big.csv", workdir / "small.csv"
    big_path.write_bytes(big)
    small_path.write_bytes(small)
    profile = opts.profile_dir / "mailcore-import.prof" if opts.profile_dir else None
    mc_big = _say("mailcore (1 run)", mailcore_import(big, opts.rows, workdir / "imp-big", profile))
    naive_big = _say("naive (1 run)", naive_import(big_path, opts.rows, workdir / "naive-big"))
    mc_small: list[ImportRun] = []
    naive_small: list[ImportRun] = []
    for rep in range(opts.repeats):
        mc_run = mailcore_import(small, opts.small_rows, workdir / f"imp-small{rep}", None)
        mc_small.append(_say(f"mailcore (rep {rep + 1})", mc_run))
        naive_run = naive_import(small_path, opts.small_rows, workdir / f"naive-small{rep}")
        naive_small.append(_say(f"naive (rep {rep + 1})", naive_run))
    return mc_big, mc_small, naive_big, naive_small


# -- report -------------------------------------------------------------------------


def _median(runs: Sequence[Any], key: Callable[[Any], float]) -> float:
    return statistics.median(key(r) for r in runs)


def _median_import(runs: Sequence[ImportRun]) -> ImportRun:
    """The run with the median rate (odd counts) so its seconds and RSS belong together."""
    ordered = sorted(runs, key=lambda r: r.rows_per_s)
    return ordered[len(ordered) // 2]


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _mib(kib: int | None) -> str:
    return "–" if kib is None else f"{kib / 1024:,.0f} MiB"


def posts_table(opts: Options, posts: dict[PostKey, list[loadgen.PostRun]]) -> list[str]:
    lines = [
        f"### `POST /v1/mail/contacts`: {opts.requests:,} requests × {opts.repeats} "
        f"repetitions, {opts.concurrency} keep-alive connections (medians)",
        "",
        "| server | load generator | req/s | p50 ms | p99 ms | server CPU | client CPU "
        "| other CPU |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for (server, client), runs in sorted(posts.items(), key=lambda kv: kv[0][1]):
        lines.append(
            f"| {SERVER_NAMES[server]} | {CLIENT_NAMES[client]} "
            f"| {_median(runs, lambda r: r.rps):,.0f} "
            f"| {_median(runs, lambda r: r.p50_ms):.2f} | {_median(runs, lambda r: r.p99_ms):.2f} "
            f"| {_median(runs, lambda r: r.server_cpu / r.seconds):.0%} "
            f"| {_median(runs, lambda r: r.client_cpu / r.seconds):.0%} "
            f"| {_median(runs, lambda r: r.other_cpu / r.seconds):.0%} |"
        )
    lines.append("")
    for client in opts.clients:
        mc = _median(posts[("mailcore", client)], lambda r: r.rps)
        base = _median(posts[("baseline", client)], lambda r: r.rps)
        lines.append(
            f"- {CLIENT_NAMES[client]}: mailcore / hand-written **{mc / base:.2f}×** req/s; "
            f"target ≥ {TARGET_RPS:,} req/s {_met(mc >= TARGET_RPS)}."
        )
    lines += [
        "",
        "CPU is the share of one core over the timed run (100% = one core busy "
        "throughout; the server's includes its SQLite threads). A client near 100% means "
        "the figure is the client's limit, not the server's; other CPU is every other "
        "process on the machine, which should be near 0%.",
    ]
    return lines


def imports_table(opts: Options, fig: Figures) -> list[str]:
    rows = [
        ("mailcore over HTTP, 1 run", fig.mailcore_big),
        (f"mailcore over HTTP, median of {opts.repeats}", _median_import(fig.mailcore_small)),
        ("naive sqlite3 in-process, 1 run", fig.naive_big),
        (f"naive sqlite3 in-process, median of {opts.repeats}", _median_import(fig.naive_small)),
    ]
    lines = [
        "### CSV import: `POST /v1/mail/contacts/import`, `text/csv`, fresh database",
        "",
        "| run | rows | seconds | rows/s | peak RSS | idle RSS |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for label, run in rows:
        lines.append(
            f"| {label} | {run.rows:,} | {run.seconds:.2f} | {run.rows_per_s:,.0f} "
            f"| {_mib(run.peak_rss_kib)} | {_mib(run.idle_rss_kib)} |"
        )
    big = fig.mailcore_big.rows_per_s
    lines += [
        "",
        f"mailcore / naive: **{big / fig.naive_big.rows_per_s:.2f}×** rows/s at "
        f"{opts.rows:,} rows, **{rows[1][1].rows_per_s / rows[3][1].rows_per_s:.2f}×** at "
        f"{opts.small_rows:,}. Target ≥ {TARGET_ROWS_PER_S:,} rows/s "
        f"({opts.rows:,}-row run): {_met(big >= TARGET_ROWS_PER_S)}.",
        "",
        "mailcore's time runs from sending the request to the complete response; its RSS "
        "is the server process's (VmHWM; idle = VmRSS before the import). The naive "
        "import runs in its own process without HTTP, timed from the CSV bytes in memory "
        "to the commit.",
    ]
    return lines


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (
        f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )


def command() -> str:
    return " ".join(["python -m benchmarks.api", *sys.argv[1:]])


@dataclass(frozen=True)
class Wall:
    """The whole run: wall seconds, and the CPU every process not ours used meanwhile."""

    seconds: float
    other_cpu: float

    @property
    def other_share(self) -> float:
        return self.other_cpu / self.seconds


def measure_wall(fn: Callable[[], Figures]) -> tuple[Figures, Wall]:
    machine0, ours0, start = servers.machine_busy_seconds(), _our_cpu(), time.perf_counter()
    figures = fn()
    seconds = time.perf_counter() - start
    ours = _our_cpu() - ours0
    other = max(0.0, servers.machine_busy_seconds() - machine0 - ours)
    return figures, Wall(seconds, other)


def _our_cpu() -> float:
    """This process and its children; every child has been waited for by the time the
    run ends, so all their CPU is counted."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def section(opts: Options, fig: Figures, wall: Wall) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        SECTION + (" — quick smoke run, not representative" if opts.quick else ""),
        "",
        f"{when}, {machine()}. Command: `{command()}` ({wall.seconds:.0f} s in all; other "
        f"processes used {wall.other_share:.0%} of a core meanwhile).",
        "Each server is its own process (hypercorn, Trio worker); the load generators "
        "and the CSV upload run in the benchmark's process, over loopback.",
        *_busy_warning(wall),
        "",
        *posts_table(opts, fig.posts),
        "",
        *imports_table(opts, fig),
    ]
    return "\n".join(lines) + "\n"


def _busy_warning(wall: Wall) -> list[str]:
    if wall.other_share < 0.15:
        return []
    return [
        "",
        f"**Warning: other processes used {wall.other_share:.0%} of a core during this run; "
        "on 2 cores that depresses every figure. Re-run on a quiet machine.**",
    ]


def write_results(text: str, path: Path = RESULTS) -> None:
    results.write_section(SECTION, text, path)


# -- main ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Options, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.api",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run (< 30 s)")
    parser.add_argument("--rows", type=int, help="rows in the single large import (1,000,000)")
    parser.add_argument("--small-rows", type=int, help="rows in the repeated import (100,000)")
    parser.add_argument(
        "--requests", type=int, help="timed POSTs per repetition and client (6,000)"
    )
    parser.add_argument("--repeats", type=int, help="repetitions of the short runs (3)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections (16)")
    parser.add_argument(
        "--client", choices=("both", "lean", "httpx"), default="both", help="load generator"
    )
    parser.add_argument(
        "--profile-dir",
        type=Path,
        help="run mailcore under cProfile, "
        "writing mailcore-posts.prof and mailcore-import.prof here",
    )
    parser.add_argument("--write-results", action="store_true", help=f"update {RESULTS.name}")
    args = parser.parse_args(argv)
    quick = bool(args.quick)

    def pick(value: int | None, full: int, small: int) -> int:
        return value if value is not None else (small if quick else full)

    opts = Options(
        requests=pick(args.requests, 6_000, 300),
        repeats=pick(args.repeats, 3, 1),
        concurrency=args.concurrency,
        clients=("lean", "httpx") if args.client == "both" else (args.client,),
        rows=pick(args.rows, 1_000_000, 20_000),
        small_rows=pick(args.small_rows, 100_000, 5_000),
        quick=quick,
        profile_dir=args.profile_dir,
    )
    return opts, bool(args.write_results)


def run(opts: Options) -> Figures:
    if opts.profile_dir is not None:
        opts.profile_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mailcore-bench-") as tmp:
        workdir = Path(tmp)
        print(f"POST /v1/mail/contacts ({opts.requests:,} requests × {opts.repeats})", flush=True)
        posts = bench_posts(opts, workdir)
        print(f"CSV import ({opts.rows:,} rows once, {opts.small_rows:,} × {opts.repeats})")
        mc_big, mc_small, naive_big, naive_small = bench_imports(opts, workdir)
    return Figures(posts, mc_big, mc_small, naive_big, naive_small)


def main(argv: Sequence[str] | None = None) -> int:
    opts, write = parse_args(argv)
    figures, wall = measure_wall(lambda: run(opts))
    text = section(opts, figures, wall)
    print()
    print(text)
    if write:
        write_results(text)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
