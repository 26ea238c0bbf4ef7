"""The send benchmark: ``python -m benchmarks.send [--recipients 100000] [--runs 3]
[--connections 32] [--size 10k] [--store sqlite|postgres [--database-url URL]]
[--senders 1|N,N,...] [--profile [PATH]] [--write-results]``.

Several sender processes sharing one SQLite file on this machine, throughput per count:
``python -m benchmarks.send --senders 1,2 [--write-results]`` (rows in the main section).
On PostgreSQL:
``python -m benchmarks.send --store postgres --senders 1,2,3 [--write-results]``. Without
``--database-url`` a throwaway PostgreSQL cluster is started for the run (tests/pg.py's, but
with default durability: fsync, synchronous_commit and full_page_writes on) and stopped at
the end; its processes' CPU is measured. That run writes its own section of RESULTS.md
(where the limit is on this machine, and across machines), not the SQLite one.

One run, side by side, every contender against a fresh Postfix ``smtp-sink`` on loopback
(``smtp-sink -u nobody 127.0.0.1:PORT 1000``: PIPELINING offered; it has no CHUNKING):

1. **mailcore, end to end.** Contacts are imported into the store once (a template
   database copied per run with SQLite); per run a campaign of ``--size`` bytes per
   message (multipart/alternative HTML + text, 5 merge fields, open and click tracking)
   is created, then timed from ``campaigns.send`` (audience frozen into the plan, wallet
   hold) until the send is settled (every result committed, the hold posted): the
   sender processes (``--senders``, each ``Mailcore.run_sender`` with its share of
   ``--connections``; ``python -m benchmarks.send sender``) lease, render, deliver and
   record. Checked afterwards: delivered = recipients = what the sink counted. With a
   list of sender counts, mailcore runs once per count in every run (one row each; the
   ratios to the other contenders use the fastest row).
2. **smtp-source** (Postfix): ``smtp-source -d -l SIZE -m COUNT -s CONNECTIONS``, the same
   message size and connection count, each connection reused (``-d``), no pipelining.
3. **aiosmtplib + email**: what a Python team writes by hand, in its own process on
   asyncio: each message built with the stdlib ``email`` package (``EmailMessage``,
   ``set_content`` + ``add_alternative``) and sent with ``aiosmtplib`` over
   ``--connections`` reused connections (``--aiosmtplib-messages`` of them).
4. **SmtpConnection only**: mailcore's SMTP client sending pre-rendered messages of the
   same size (what ``mailcore bench smtp`` measures): the ceiling of the send pipeline
   without the database and the engine.
5. **A minimal Trio client**: the issue's yardstick, about 60 lines of Trio pipelining one
   pre-rendered message of the same size as the senders do (content, then the next MAIL,
   RCPT and DATA in one write), its replies only split and counted: what SMTP itself
   costs in Python on Trio, against which mailcore's protocol and pipeline are measured.

Each contender runs in its own process(es); messages/s are medians of ``--runs`` runs
(contenders alternate within each run); CPU is the contender's process CPU time (all
threads) per accepted message; peak RSS its VmHWM. ``--profile`` adds one mailcore pass
with the sender under pyinstrument (sampling, event-loop thread) and writes where its
time goes to a file (``benchmarks/profiles/send.txt`` by default).

Needs Postfix's test tools (``apt-get install postfix``; the service need not run: only
``/usr/sbin/smtp-sink`` and ``/usr/sbin/smtp-source`` are used). Without smtp-source that
comparison is skipped; without smtp-sink mailcore's own sink (Python, far slower) stands
in and the section says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec
import trio

from mailcore.benchsmtp import (
    BenchOptions,
    MessageFactory,
    parse_size,
    relay_config,
    run_setting,
)
from mailcore.config import Settings
from mailcore.errors import ValidationError
from mailcore.facade import Mailcore
from mailcore.ids import utcnow
from mailcore.models import CampaignCreate
from mailcore.node import tune_sender_process
from mailcore.sending.render import BatchRenderer
from mailcore.store import RecipientWork, store_from_url
from mailcore.tokens import TokenSigner

from . import api, results, servers

RESULTS = results.RESULTS
SECTION = "## Send (`python -m benchmarks.send`)"
PG_SECTION = (
    "## Send on PostgreSQL, several sender processes "
    "(`python -m benchmarks.send --store postgres --senders 1,2,3`)"
)
PROFILE_DEFAULT = Path(__file__).with_name("profiles") / "send.txt"
INSTALL_HINT = (
    "install Postfix's test tools: `apt-get install postfix` (Debian/Ubuntu; the postfix "
    "service need not run, only /usr/sbin/smtp-sink and /usr/sbin/smtp-source are used)"
)
FROM = "sarah@acme.example"
SMTP_SOURCE_HEADER = 125  # bytes of smtp-source's own headers (From, To, Date, Message-Id)
READY_TIMEOUT = 60.0
POLL_SECONDS = 0.02
PRICE_MICROS = 300
Contender = Literal["mailcore", "smtp-source", "aiosmtplib", "smtp-client", "trio-minimal"]
CONTENDERS: tuple[Contender, ...] = (
    "mailcore",
    "smtp-source",
    "aiosmtplib",
    "smtp-client",
    "trio-minimal",
)
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Options:
    recipients: int
    runs: int
    connections: int
    size: int
    store: Literal["sqlite", "postgres"]
    database_url: str | None
    senders: tuple[int, ...]  # sender processes: mailcore runs once per count, per run
    aiosmtplib_messages: int
    contenders: tuple[Contender, ...]
    settings: dict[str, str]
    profile: Path | None
    profile_clock: str = "wall"
    server: str = ""  # the PostgreSQL server, described for the section
    server_pid: int | None = None  # its postmaster, when it is ours: its CPU is measured


@dataclass(frozen=True)
class Run:
    contender: Contender
    messages: int  # accepted by the sink, as the contender counted them
    seconds: float
    cpu: float  # the contender's processes, all threads
    peak_rss_kib: int  # summed over its processes
    sink_cpu: float
    sink_messages: int | None  # what the sink counted (None: it could not say)
    other_cpu: float  # every other process on the machine
    size: float  # mean bytes per message
    extra: dict[str, float] = field(default_factory=dict)
    senders: int = 1  # mailcore's sender processes

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_us_per_message(self) -> float:
        return 1e6 * self.cpu / self.messages if self.messages else float("nan")


@dataclass(frozen=True)
class ProfileSummary:
    path: Path
    recipients: int
    seconds: float
    loop_cpu: float
    process_cpu: float
    sampled: float  # seconds of samples on the event loop's thread
    idle: float  # of which in epoll.poll (waiting for I/O)
    clock: str  # what the samples measure: CPU time of the thread, or wall time
    own: list[tuple[str, float]]  # (function, seconds), busiest first
    cumulative: list[tuple[str, float]]
    areas: list[tuple[str, float]]


@dataclass
class Figures:
    runs: dict[Contender, list[Run]]
    import_seconds: float
    mailcore_size: float
    sink_kind: str
    sink_note: str
    skipped: dict[str, str]
    profile: ProfileSummary | None = None


# -- tools --------------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found is None and Path("/usr/sbin", name).is_file():
        found = str(Path("/usr/sbin", name))
    return found


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process, all threads."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _stat_fields(pid: int | str) -> list[str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def tree_cpu(pid: int) -> float:
    """CPU seconds of a server and its children (PostgreSQL's postmaster and backends):
    its own, its reaped children's (cutime, cstime) and its live children's. A difference
    of two readings counts a backend that exited in between in full, and once."""
    try:
        fields = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return float("nan")
    total = sum(int(f) for f in fields[11:15])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            child = _stat_fields(entry.name)
            if int(child[1]) == pid:
                total += int(child[11]) + int(child[12])
    return total / _TICKS


def vm_hwm_kib(pid: int | str = "self") -> int:
    """Peak resident memory of a process (VmHWM). Not ru_maxrss: after fork and exec that
    also counts the parent's memory at the fork."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def self_sys_cpu() -> float:
    """System (kernel) CPU seconds of this process: socket I/O, mostly."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


@dataclass
class SinkProcess:
    kind: str  # "smtp-sink" or "mailcore sink"
    proc: subprocess.Popen[bytes]
    port: int
    output: Path

    def cpu(self) -> float:
        try:
            return proc_cpu(self.proc.pid)
        except (FileNotFoundError, ProcessLookupError):
            return 0.0

    def messages(self) -> int | None:
        """Messages the sink accepted (read once it has stopped)."""
        text = self.output.read_text(errors="replace")
        pattern = r"mesg=(\d+)" if self.kind == "smtp-sink" else r"(\d+) messages,"
        counts = re.findall(pattern, text)
        return int(counts[-1]) if counts else (0 if self.kind == "smtp-sink" else None)


@contextmanager
def sink_process(workdir: Path, smtp_sink: str | None) -> Iterator[SinkProcess]:
    """A fresh sink on a free loopback port: Postfix's smtp-sink (``-c``: it prints its
    counters, which is how the messages are counted), or ``mailcore sink`` without it."""
    port = servers.free_port()
    output = workdir / f"sink-{port}.out"
    if smtp_sink is not None:
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # required when root
        argv = [smtp_sink, "-c", *user, f"127.0.0.1:{port}", "1000"]
        kind = "smtp-sink"
    else:
        argv = [sys.executable, "-m", "mailcore.cli", "sink", "--port", str(port)]
        kind = "mailcore sink"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, env=servers.child_env()
        )
    sink = SinkProcess(kind, proc, port, output)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{kind} exited: {output.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} not listening on {port}") from None
                time.sleep(0.02)
        yield sink
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM if kind == "smtp-sink" else signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def wait_measured(proc: subprocess.Popen[Any], timeout: float = 3600.0) -> tuple[float, int]:
    """Wait for ``proc``: its CPU seconds (wait4, its own and no other child's) and its
    peak RSS (VmHWM, read every 10 ms while it runs). Killed after ``timeout`` seconds."""
    peak = 0
    deadline = time.monotonic() + timeout
    while True:
        if time.monotonic() > deadline and proc.returncode is None:
            proc.kill()
            deadline = float("inf")
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime, peak
        with suppress(FileNotFoundError, ProcessLookupError, ValueError):
            peak = max(peak, vm_hwm_kib(proc.pid))
        time.sleep(0.01)


# -- the campaign -------------------------------------------------------------------------

FIRST = ("Sarah", "Amir", "Lena", "Kofi", "Mei", "Jonas", "Ana", "Ravi", "Zoë", "Olu")
LAST = ("Chen", "Haddad", "Novak", "Mensah", "Tanaka", "Berg", "Silva", "Iyer", "Dupont")
COMPANIES = ("Acme Corp", "Globex", "Initech", "Umbrella", "Stark and Sons")
PLANS = ("free", "pro", "enterprise")
_TEXT = (
    "release notes tips faster import campaign audience tracking reports webhooks wallet "
    "templates preview schedule segments deliverability inbox placement weekly digest new "
    "feature team roadmap customers stories guide setup integration export analytics"
)
WORDS = tuple(_TEXT.split())


def contacts_csv(rows: int) -> bytes:
    """``rows`` subscribed contacts tagged ``newsletter``: all of them are the audience."""
    lines = ["email,firstName,lastName,tags,company,plan\n"]
    for i in range(rows):
        lines.append(
            f"user{i}@example.com,{FIRST[i % 10]},{LAST[i % 9]},newsletter,"
            f"{COMPANIES[i % 5]},{PLANS[i % 3]}\n"
        )
    return "".join(lines).encode()


WORDS_PER_PARAGRAPH = 60


def _paragraph(i: int, words: int = WORDS_PER_PARAGRAPH) -> str:
    text = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(words))
    return (
        '<tr><td style="padding:12px 24px;font-family:Helvetica,Arial,sans-serif;'
        'font-size:15px;line-height:22px;color:#333333">'
        f'<h2 style="margin:0 0 8px;font-size:18px">Update {i + 1}: {WORDS[i % len(WORDS)]}</h2>'
        f'<p style="margin:0">{text.capitalize()}.</p>'
        f'<p style="margin:8px 0 0"><a href="https://acme.example/news/{i + 1}?utm_source='
        'newsletter&amp;utm_campaign=march" style="color:#0a66c2">Read more</a></p></td></tr>'
    )


def _paragraphs(words: int) -> list[str]:
    """``words`` words of newsletter text in paragraphs of 60, each with its link."""
    full, rest = divmod(words, WORDS_PER_PARAGRAPH)
    return [_paragraph(i) for i in range(full)] + ([_paragraph(full, rest)] if rest else [])


def campaign(words: int) -> CampaignCreate:
    html = (
        '<html><body><table width="100%" cellpadding="0" cellspacing="0">'
        '<tr><td style="padding:24px"><p>Hi {{firstName | default: "there"}} '
        "{{lastName}},</p><p>Here is what changed for {{customFields.company}} on the "
        "{{customFields.plan}} plan this month.</p></td></tr>"
        + "".join(_paragraphs(words))
        + '<tr><td style="padding:24px;font-size:12px;color:#888888">You receive this at '
        "{{email}} because you subscribed to the Acme newsletter.</td></tr></table>"
        "</body></html>"
    )
    return msgspec.convert(
        {
            "name": "Send benchmark",
            "subject": '{{firstName | default: "Hi"}}, what\'s new this month',
            "from": {"email": FROM, "name": "Sarah at Acme"},
            "audience": {"tags": ["newsletter"]},
            "content": {"html": html},
            "preheader": "Product updates, tips, and a surprise",
        },
        CampaignCreate,
    )


def closest(size: int, measure: Callable[[int], float], most: int = 20_000) -> tuple[int, float]:
    """The word count whose messages come closest to ``size`` bytes (sizes grow with the
    word count), and that size."""
    lo, hi = 0, most
    while lo < hi:  # the smallest count reaching the size
        mid = (lo + hi) // 2
        if measure(mid) >= size:
            hi = mid
        else:
            lo = mid + 1
    above = (lo, measure(lo))
    if lo == 0:
        return above
    below = (lo - 1, measure(lo - 1))
    return below if size - below[1] < above[1] - size else above


def _sample_work(n: int) -> list[RecipientWork]:
    return [
        RecipientWork(
            contact_seq=i + 1,
            attempts=0,
            email=f"user{i}@example.com",
            first_name=FIRST[i % 10],
            last_name=LAST[i % 9],
            custom_fields={"company": COMPANIES[i % 5], "plan": PLANS[i % 3]},
            contact_status="subscribed",
        )
        for i in range(n)
    ]


def rendered_size(definition: CampaignCreate, samples: int = 50) -> float:
    """Mean bytes of the messages the sender will render (as the dispatcher renders)."""
    renderer = BatchRenderer(
        definition,
        "cmp_0123456789abcdef01234567",
        1,
        public_url=Settings().public_url,
        message_id_domain="",
        signer=TokenSigner("benchmark"),
        clock=utcnow,
    )
    messages = renderer.render(_sample_work(samples))
    return statistics.fmean(len(m) for m in messages)


def calibrated_campaign(size: int) -> tuple[CampaignCreate, float]:
    """The campaign whose rendered messages come closest to ``size`` bytes."""
    words, got = closest(size, lambda n: rendered_size(campaign(n)))
    return campaign(words), got


# -- mailcore: the sender processes ------------------------------------------------------


def sender_main(argv: Sequence[str]) -> int:
    """``python -m benchmarks.send sender``: one node's sender (``Mailcore.run_sender``),
    driven over stdin: prints ``ready`` once open, starts on ``go``, stops on ``stop``,
    then prints its CPU and memory as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.send sender")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--smtp-url", required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--profile-clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--profile-title", default="")
    args = parser.parse_args(argv)
    overrides = dict(s.split("=", 1) for s in args.setting)
    settings = Settings.load(
        env={},
        database_url=args.database_url,
        smtp_url=args.smtp_url,
        smtp_connections=args.connections,
        **overrides,
    )
    tune_sender_process()  # as `mailcore serve` does in a process with the sender role
    report = trio.run(_sender, settings, args.profile, args.profile_clock, args.profile_title)
    print(json.dumps(report), flush=True)
    return 0


async def _sender(
    settings: Settings, profile: Path | None, profile_clock: str, title: str
) -> dict[str, Any]:
    async with Mailcore.open(settings) as mc:
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
        profiler, clock = make_profiler(profile_clock) if profile else (None, "")
        cpu0, loop0, wall0 = self_cpu(), time.thread_time(), time.perf_counter()
        sys0 = self_sys_cpu()
        if profiler is not None:
            profiler.start()
        async with trio.open_nursery() as nursery:
            await nursery.start(mc.run_sender)
            await trio.to_thread.run_sync(sys.stdin.readline)
            nursery.cancel_scope.cancel()
        if profiler is not None:
            profiler.stop()
        cpu, loop = self_cpu() - cpu0, time.thread_time() - loop0
        wall, kernel = time.perf_counter() - wall0, self_sys_cpu() - sys0
    report: dict[str, Any] = {
        "cpu": cpu,
        "loop_cpu": loop,
        "sys_cpu": kernel,
        "seconds": wall,
        "peak_rss_kib": vm_hwm_kib(),
    }
    if profiler is not None and profile is not None:
        report["profile"] = write_profile(profiler, clock, profile, title, wall, loop, cpu)
    return report


@dataclass
class Prepared:
    """The store with the account and contacts in it, ready for one campaign per run."""

    url: str
    account_id: str
    template: Path | None  # SQLite: copied for each run, so that each starts fresh
    workdir: Path
    import_seconds: float

    def url_for_run(self, name: str) -> str:
        if self.template is None:
            return self.url
        target = self.workdir / f"{name}.db"
        shutil.copyfile(self.template, target)
        return f"sqlite:///{target}"


async def prepare(opts: Options, workdir: Path) -> Prepared:
    template = workdir / "template.db" if opts.store == "sqlite" else None
    url = f"sqlite:///{template}" if template is not None else str(opts.database_url)
    # every mailcore pass (runs × sender counts, the profile pass) holds a full campaign
    credit = opts.recipients * PRICE_MICROS * (opts.runs * len(opts.senders) + 2)
    async with Mailcore.open(Settings.load(env={}, database_url=url)) as mc:
        account = await mc.accounts.create("send-benchmark", credit_micros=credit)
        body = contacts_csv(opts.recipients)
        started = time.perf_counter()
        imported = await mc.account(account.account_id).contacts.import_csv(body)
        seconds = time.perf_counter() - started
    if imported.created != opts.recipients:
        raise RuntimeError(f"imported {imported.created} contacts of {opts.recipients}")
    return Prepared(url, account.account_id, template, workdir, seconds)


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _start_senders(
    opts: Options,
    senders: int,
    url: str,
    smtp_url: str,
    workdir: Path,
    name: str,
    profile: Path | None,
) -> list[subprocess.Popen[str]]:
    procs = []
    for i, connections in enumerate(_shares(opts.connections, senders)):
        argv = [
            sys.executable,
            "-m",
            "benchmarks.send",
            "sender",
            "--database-url",
            url,
            "--smtp-url",
            smtp_url,
            "--connections",
            str(connections),
        ]
        for key, value in opts.settings.items():
            argv += ["--setting", f"{key}={value}"]
        if profile is not None and i == 0:
            argv += ["--profile", str(profile), "--profile-title", command()]
            argv += ["--profile-clock", opts.profile_clock]
        log = (workdir / f"{name}-sender{i}.log").open("w")
        procs.append(
            subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=servers.REPO,
                env=servers.child_env(),
            )
        )
        log.close()
    return procs


async def _readline(proc: subprocess.Popen[str], seconds: float, what: str) -> str:
    assert proc.stdout is not None
    with trio.move_on_after(seconds):
        line: str = await trio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)
        if line:
            return line
    raise RuntimeError(f"sender {proc.pid} gave no {what} (exit code {proc.poll()})")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _tell(proc: subprocess.Popen[str], word: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(word + "\n")
    proc.stdin.flush()


async def mailcore_run(
    opts: Options,
    prepared: Prepared,
    definition: CampaignCreate,
    size: float,
    smtp_sink: str | None,
    name: str,
    senders: int,
    profile: Path | None = None,
) -> tuple[Run, dict[str, Any] | None]:
    workdir = prepared.workdir
    url = prepared.url_for_run(name)
    server = opts.server_pid
    with sink_process(workdir, smtp_sink) as sink:
        smtp_url = f"smtp://127.0.0.1:{sink.port}?tls=none"
        async with Mailcore.open(Settings.load(env={}, database_url=url)) as mc:
            scope = mc.account(prepared.account_id)
            created = await scope.campaigns.create(definition)  # builds the audience index
            procs = _start_senders(opts, senders, url, smtp_url, workdir, name, profile)
            try:
                for p in procs:
                    await _readline(p, READY_TIMEOUT, "ready")
                machine0, parent0, sink0 = servers.machine_busy_seconds(), self_cpu(), sink.cpu()
                server0 = tree_cpu(server) if server is not None else float("nan")
                started = time.perf_counter()
                await scope.campaigns.send(created.id)
                plan = time.perf_counter() - started
                for p in procs:
                    _tell(p, "go")
                await _until_settled(mc, prepared.account_id, created.id, procs, opts)
                seconds = time.perf_counter() - started
                sink_cpu = sink.cpu() - sink0
                server_cpu = tree_cpu(server) - server0 if server is not None else float("nan")
                parent_cpu = self_cpu() - parent0
                machine = servers.machine_busy_seconds() - machine0
                reports = []
                for p in procs:
                    _tell(p, "stop")
                    reports.append(json.loads(await _readline(p, 120, "report")))
            finally:
                for p in procs:
                    if p.stdin is not None:
                        p.stdin.close()
                    _stop(p)
            stats = await scope.campaigns.stats(created.id)
    if stats.delivered != opts.recipients or stats.status != "sent":
        raise RuntimeError(
            f"mailcore run {name}: {stats.status}, {stats.delivered} delivered of "
            f"{opts.recipients} (bounced {stats.bounced}, deferred {stats.deferred}, failed "
            f"{stats.failed}; last error {stats.last_error})"
        )
    cpu = sum(r["cpu"] for r in reports)
    run = Run(
        contender="mailcore",
        messages=stats.delivered,
        seconds=seconds,
        cpu=cpu,
        peak_rss_kib=sum(r["peak_rss_kib"] for r in reports),
        sink_cpu=sink_cpu,
        sink_messages=sink.messages(),
        # PostgreSQL, when measured, is part of what runs, not "other".
        other_cpu=max(0.0, machine - cpu - sink_cpu - parent_cpu - _or_zero(server_cpu)),
        size=size,
        extra={
            "plan": plan,
            "loop_cpu": sum(r["loop_cpu"] for r in reports),
            "sys_cpu": sum(r["sys_cpu"] for r in reports),
            "server_cpu": server_cpu,  # NaN: not measured (no server of ours)
            "machine_cpu": machine,
        },
        senders=senders,
    )
    return run, reports[0].get("profile")


def _or_zero(value: float) -> float:
    return 0.0 if math.isnan(value) else value


async def _until_settled(
    mc: Mailcore,
    account_id: str,
    campaign_id: str,
    procs: Sequence[subprocess.Popen[str]],
    opts: Options,
) -> None:
    limit = max(300.0, opts.recipients / 100)
    with trio.fail_after(limit):
        while True:
            send = await mc.store.get_send(account_id, campaign_id)
            if send is not None and send.status in ("sent", "cancelled"):
                return
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"sender {p.pid} exited with {p.returncode} mid-send")
            await trio.sleep(POLL_SECONDS)


# -- smtp-source ---------------------------------------------------------------------------


def smtp_source_payload(size: int) -> int:
    """``-l`` for messages of ``size`` bytes on the wire: smtp-source adds its headers and
    a CRLF per 80 payload bytes."""
    return max(1, round((size - SMTP_SOURCE_HEADER) * 80 / 82))


def smtp_source_run(opts: Options, tool: str, smtp_sink: str | None, workdir: Path) -> Run:
    payload = smtp_source_payload(opts.size)
    with sink_process(workdir, smtp_sink) as sink:
        argv = [
            tool,
            "-d",
            "-l",
            str(payload),
            "-m",
            str(opts.recipients),
            "-s",
            str(opts.connections),
            "-f",
            FROM,
            "-t",
            "user@example.com",
            "-M",
            "bench.example",
            f"127.0.0.1:{sink.port}",
        ]
        machine0, sink0 = servers.machine_busy_seconds(), sink.cpu()
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        cpu, peak_rss = wait_measured(proc)
        seconds = time.perf_counter() - started
        sink_cpu = sink.cpu() - sink0
        machine = servers.machine_busy_seconds() - machine0
        err = proc.stderr.read().decode(errors="replace") if proc.stderr is not None else ""
    if proc.returncode != 0:
        raise RuntimeError(f"smtp-source exited with {proc.returncode}: {err[-500:]}")
    counted = sink.messages()
    return Run(
        contender="smtp-source",
        messages=opts.recipients,
        seconds=seconds,
        cpu=cpu,
        peak_rss_kib=peak_rss,
        sink_cpu=sink_cpu,
        sink_messages=counted,
        other_cpu=max(0.0, machine - cpu - sink_cpu),
        size=SMTP_SOURCE_HEADER + payload * 82 / 80,
    )


# -- workers in their own process: aiosmtplib, SmtpConnection --------------------------------


def _email_message(i: int, words: int) -> Any:
    from email.message import EmailMessage
    from email.utils import formataddr, formatdate, make_msgid

    first, last, company = FIRST[i % 10], LAST[i % 9], COMPANIES[i % 5]
    msg = EmailMessage()
    msg["Subject"] = f"{first}, what's new this month"
    msg["From"] = formataddr(("Sarah at Acme", FROM))
    msg["To"] = formataddr((f"{first} {last}", f"user{i}@example.com"))
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="acme.example")
    msg["List-Unsubscribe"] = f"<https://mail.example.test/u/{i:012x}>"
    body = _paragraphs(words)
    text = "\n\n".join(re.sub(r"<[^>]+>", " ", p).strip() for p in body)
    msg.set_content(f"Hi {first} {last},\n\nHere is what changed for {company}.\n\n{text}\n")
    msg.add_alternative(
        f"<html><body><p>Hi {first} {last},</p><p>Here is what changed for {company}.</p>"
        f"<table>{''.join(body)}</table></body></html>",
        subtype="html",
    )
    return msg


def email_words(size: int) -> tuple[int, float]:
    """Words for ``email``-built messages of about ``size`` bytes, and their size."""
    from email.policy import SMTP

    return closest(size, lambda n: float(len(_email_message(0, n).as_bytes(policy=SMTP))))


def worker_parser(contender: str) -> argparse.ArgumentParser:
    """The arguments every contender's worker process takes (see :func:`worker_run`)."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.send {contender}")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    return parser


def aiosmtplib_main(argv: Sequence[str]) -> int:
    """``python -m benchmarks.send aiosmtplib --port P --messages N --connections C
    --size S``: build and send, print JSON."""
    args = worker_parser("aiosmtplib").parse_args(argv)
    words, size = email_words(args.size)
    cpu0, started = self_cpu(), time.perf_counter()
    sent = asyncio.run(_aiosmtplib(args.port, args.messages, args.connections, words))
    report = {
        "messages": sent,
        "seconds": time.perf_counter() - started,
        "cpu": self_cpu() - cpu0,
        "peak_rss_kib": vm_hwm_kib(),
        "size": size,
    }
    print(json.dumps(report), flush=True)
    return 0


async def _aiosmtplib(port: int, messages: int, connections: int, words: int) -> int:
    import aiosmtplib

    counter = iter(range(messages))
    sent = 0

    async def worker() -> None:
        nonlocal sent
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=60)
        await smtp.connect()
        try:
            for i in counter:
                msg = _email_message(i, words)
                errors, _reply = await smtp.send_message(msg)
                if not errors:
                    sent += 1
        finally:
            await smtp.quit()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return sent


def smtp_client_main(argv: Sequence[str]) -> int:
    """``python -m benchmarks.send smtp-client --port P --messages N --connections C
    --size S``: pre-rendered messages through SmtpConnection (``mailcore bench smtp``)."""
    parser = worker_parser("smtp-client")
    parser.add_argument("--pipeline-depth", type=int, default=Settings().pipeline_depth)
    args = parser.parse_args(argv)
    options = BenchOptions(
        url=f"smtp://127.0.0.1:{args.port}?tls=none",
        connections=(args.connections,),
        size=args.size,
        messages=args.messages,
        rcpt_to="user@example.com",
        pipeline_depth=args.pipeline_depth,
    )
    config = relay_config(options.url)
    cpu0 = self_cpu()
    result = trio.run(run_setting, options, config, args.connections, "user@example.com")
    report = {
        "messages": result.delivered,
        "seconds": result.seconds + result.connect_seconds,
        "cpu": self_cpu() - cpu0,
        "peak_rss_kib": vm_hwm_kib(),
        "size": args.size,
        "errors": result.errors_by_code,
    }
    print(json.dumps(report), flush=True)
    return 0


def minimal_main(argv: Sequence[str]) -> int:
    """``python -m benchmarks.send trio-minimal --port P --messages N --connections C
    --size S``: the issue's yardstick, a minimal Trio client with pipelining sending
    pre-rendered bytes (:func:`_minimal`); prints JSON."""
    args = worker_parser("trio-minimal").parse_args(argv)
    content = MessageFactory(args.size, "bench@example.com", "user@example.com")()
    cpu0, started = self_cpu(), time.perf_counter()
    sent = trio.run(_minimal, args.port, args.messages, args.connections, content)
    report = {
        "messages": sent,
        "seconds": time.perf_counter() - started,
        "cpu": self_cpu() - cpu0,
        "peak_rss_kib": vm_hwm_kib(),
        "size": len(content),
    }
    print(json.dumps(report), flush=True)
    return 0


async def _minimal(port: int, messages: int, connections: int, content: bytes) -> int:
    """Each write carries the last message's content and dot, then the next one's MAIL,
    RCPT and DATA (RFC 2920), as mailcore's sender does; replies are only split into lines
    and counted, no state machine, no checks beyond the final 250: the cost of SMTP itself
    in Python on Trio, against which mailcore's own protocol and pipeline are measured."""
    framed = content + b".\r\n"
    envelope = b"MAIL FROM:<bench@example.com>\r\nRCPT TO:<user@example.com>\r\nDATA\r\n"
    left = messages
    sent = 0

    async def connection() -> None:
        nonlocal left, sent
        sock = trio.socket.socket()
        await sock.connect(("127.0.0.1", port))
        buffer = b""

        async def replies(count: int) -> list[bytes]:
            nonlocal buffer
            got: list[bytes] = []
            while len(got) < count:
                while b"\r\n" not in buffer:
                    data = await sock.recv(65536)
                    if not data:
                        raise ConnectionError("the sink closed the connection")
                    buffer += data
                line, buffer = buffer.split(b"\r\n", 1)
                if line[3:4] != b"-":
                    got.append(line)
            return got

        async def write(data: bytes) -> None:
            view = memoryview(data)
            while view:
                view = view[await sock.send(view) :]

        with sock:
            await replies(1)  # greeting
            await write(b"EHLO bench.example.com\r\n")
            await replies(1)
            pending = False  # a 354 came: this connection owes a message's content
            while pending or left > 0:
                out = framed if pending else b""
                more = left > 0
                if more:
                    left -= 1
                    out += envelope
                await write(out)
                got = await replies((1 if pending else 0) + (3 if more else 0))
                if pending and got[0].startswith(b"250"):
                    sent += 1
                pending = more
            await write(b"QUIT\r\n")

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(connection)
    return sent


def worker_run(contender: Contender, opts: Options, smtp_sink: str | None, workdir: Path) -> Run:
    """aiosmtplib or SmtpConnection in a process of their own."""
    messages = opts.aiosmtplib_messages if contender == "aiosmtplib" else opts.recipients
    with sink_process(workdir, smtp_sink) as sink:
        argv = [
            sys.executable,
            "-m",
            "benchmarks.send",
            contender,
            "--port",
            str(sink.port),
            "--messages",
            str(messages),
            "--connections",
            str(opts.connections),
            "--size",
            str(opts.size),
        ]
        if contender == "smtp-client" and "pipeline_depth" in opts.settings:
            argv += ["--pipeline-depth", opts.settings["pipeline_depth"]]  # as the senders
        machine0, sink0 = servers.machine_busy_seconds(), sink.cpu()
        started = time.perf_counter()
        out_path, err_path = workdir / f"{contender}.out", workdir / f"{contender}.err"
        with out_path.open("w") as out, err_path.open("w") as err:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=err, cwd=servers.REPO, env=servers.child_env()
            )
            process_cpu, _ = wait_measured(proc, timeout=max(600, messages / 50))
        window = time.perf_counter() - started
        sink_cpu = sink.cpu() - sink0
        machine = servers.machine_busy_seconds() - machine0
    if proc.returncode != 0:
        raise RuntimeError(f"{contender} worker failed: {err_path.read_text()[-2000:]}")
    report = json.loads(out_path.read_text().strip().splitlines()[-1])
    if report["messages"] != messages:
        raise RuntimeError(f"{contender}: {report['messages']} of {messages} accepted: {report}")
    # The window includes the worker's start (imports): all of its CPU comes off the
    # machine's, and what is left is scaled to the timed part.
    other_share = max(0.0, machine - process_cpu - sink_cpu) / window
    return Run(
        contender=contender,
        messages=report["messages"],
        seconds=report["seconds"],
        cpu=report["cpu"],
        peak_rss_kib=report["peak_rss_kib"],
        sink_cpu=sink_cpu,
        sink_messages=sink.messages(),
        other_cpu=other_share * report["seconds"],
        size=report["size"],
    )


# -- profile ---------------------------------------------------------------------------------

IDLE_FUNCTIONS = {"epoll.poll", "select.epoll.poll"}


def _short(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    if "/python/mailcore/" in path:
        return "mailcore/" + path.split("/python/mailcore/", 1)[1]
    stdlib = re.search(r"/lib/python3\.\d+/(.*)$", path)
    return stdlib[1] if stdlib else path


# Own time grouped by where the code lives, first match wins.
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("waiting for I/O (epoll.poll)", ("epoll.poll (",)),
    ("socket syscalls (send, recv)", ("socket.send (", "socket.recv (")),
    ("mailcore/smtp (client, protocol)", ("(mailcore/smtp/",)),
    ("mailcore/sending (dispatcher, render glue)", ("(mailcore/sending/",)),
    ("mailcore/store", ("(mailcore/store/",)),
    ("mailcore, other", ("(mailcore/",)),
    ("trio", ("(trio/",)),
    ("anyio", ("(anyio/",)),
    ("contextlib (the @contextmanager machinery)", ("(contextlib.py",)),
    ("other built-ins (bytes, str, ...)", ("(built-in)",)),
)


def area(key: str) -> str:
    for name, needles in AREAS:
        if any(needle in key for needle in needles):
            return name
    return "other Python (stdlib, outcome, sniffio, ...)"


def by_area(own: dict[str, float]) -> list[tuple[str, float]]:
    areas: dict[str, float] = {}
    for key, seconds in own.items():
        areas[area(key)] = areas.get(area(key), 0.0) + seconds
    return sorted(areas.items(), key=lambda kv: -kv[1])


def _key(frame: Any) -> str:
    path = frame.file_path or ""
    where = f"{_short(path)}:{frame.line_no}" if path and path != "<built-in>" else "built-in"
    return f"{frame.function} ({where})"


def profile_tables(root: Any) -> tuple[float, float, dict[str, float], dict[str, float]]:
    """(sampled seconds, idle seconds, own seconds by function, cumulative by function)
    from a pyinstrument frame tree; a function's cumulative time counts each stack once,
    however often it recurses."""
    own: dict[str, float] = {}
    cumulative: dict[str, float] = {}
    idle = 0.0

    def walk(frame: Any, path: frozenset[str]) -> None:
        nonlocal idle
        if frame.is_synthetic:
            return
        key = _key(frame)
        if frame.function in IDLE_FUNCTIONS:
            idle += frame.time
        own[key] = own.get(key, 0.0) + frame.total_self_time
        if key not in path:
            cumulative[key] = cumulative.get(key, 0.0) + frame.time
        for child in frame.children:
            walk(child, path | {key})

    walk(root, frozenset())
    return float(root.time), idle, own, cumulative


def _scaffolding(key: str) -> bool:
    """The event loop and task wrappers every stack runs under."""
    return (
        "(trio/_core/_run.py:" in key
        or key.startswith(("_run_coro (anyio/", "Context.run ("))
        or key.startswith("<module>")
    )


def make_profiler(clock: str) -> tuple[Any, str]:
    """A pyinstrument profiler of this thread. ``wall``: pyinstrument's own clock, cheap;
    time the thread spends waiting for a core (a busy machine) lands on whatever it was
    preempted in, often a socket syscall. ``cpu``: the thread's CPU time
    (time.thread_time, through pyinstrument's custom-timer hook): no such waiting, but a
    clock syscall per Python call and return, which inflates functions called often."""
    from pyinstrument import Profiler
    from pyinstrument.stack_sampler import get_stack_sampler

    described = "wall time"
    if clock == "cpu":
        sampler = get_stack_sampler()
        if hasattr(sampler, "timer_func"):
            sampler.timer_func = time.thread_time
            described = "CPU time (time.thread_time)"
    return Profiler(interval=0.001, async_mode="disabled"), described


def write_profile(
    profiler: Any,
    clock: str,
    path: Path,
    title: str,
    wall: float,
    loop_cpu: float,
    cpu: float,
) -> dict[str, Any]:
    """Write where the sender's event-loop thread spent its time; return the top entries."""
    import pyinstrument

    sampled, idle, own, cumulative = profile_tables(profiler.last_session.root_frame())
    total = max(sampled, 1e-9)
    top_own = sorted(((k, v) for k, v in own.items() if v > 0), key=lambda kv: -kv[1])[:40]
    top_cum = sorted(cumulative.items(), key=lambda kv: -kv[1])[:50]
    areas = by_area(own)
    off_cpu = ""
    if clock == "wall time":
        waiting = max(0.0, sampled - idle - loop_cpu)
        off_cpu = (
            f" The thread was on a CPU for {loop_cpu:.2f} s of them: about {waiting:.2f} s of "
            "samples outside epoll are time it waited for a core, counted in whatever it "
            "was preempted in (on loopback, socket.send wakes the sink, which often takes "
            "the core)."
        )
    lines = [
        f"# Where a send's time goes: {title}",
        "",
        f"pyinstrument {pyinstrument.__version__}, sampling the {clock} of the sender's "
        "event-loop thread every 1 ms. The engine's render, its SMTP pipelines and the "
        "SQLite writer run in worker threads and are not sampled: their CPU is the "
        "process's minus the loop thread's.",
        f"Wall {wall:.2f} s; process CPU {cpu:.2f} s, of which the event-loop thread "
        f"{loop_cpu:.2f} s and worker threads {max(0.0, cpu - loop_cpu):.2f} s.",
        f"Samples: {sampled:.2f} s, {idle:.2f} s of it in epoll.poll (waiting for I/O). "
        "Shares are of the samples; cumulative time counts a function once per stack." + off_cpu,
        "",
        "## Own time by area",
        "",
        *(f"{v / total:6.1%}  {v:7.3f} s  {k}" for k, v in areas),
        "",
        "## Top functions by own time",
        "",
        *(f"{v / total:6.1%}  {v:7.3f} s  {k}" for k, v in top_own),
        "",
        "## Top functions by cumulative time",
        "",
        *(f"{v / total:6.1%}  {v:7.3f} s  {k}" for k, v in top_cum),
        "",
        "## Call tree (pyinstrument; frames under 1 % hidden)",
        "",
        profiler.output_text(unicode=False, color=False, show_all=False),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    inner = [(k, v) for k, v in top_cum if not _scaffolding(k)]
    return {
        "path": str(path),
        "clock": clock,
        "seconds": wall,
        "loop_cpu": loop_cpu,
        "cpu": cpu,
        "sampled": sampled,
        "idle": idle,
        "own": top_own[:15],
        "cumulative": inner[:10],
        "areas": areas,
    }


# -- the whole benchmark -------------------------------------------------------------------


def say(run: Run, rep: int) -> None:
    counted = "" if run.sink_messages is None else f", sink counted {run.sink_messages:,}"
    name: str = run.contender
    if run.contender == "mailcore" and run.senders > 1:
        name += f" ×{run.senders}"
    server = run.extra.get("server_cpu", float("nan"))
    if not math.isnan(server):
        counted += f", PostgreSQL CPU {server / run.seconds:4.0%}"
    print(
        f"  run {rep + 1} {name:<12} {run.messages:>8,} messages in "
        f"{run.seconds:7.2f} s = {run.rate:>8,.0f} msg/s, CPU {run.cpu_us_per_message:7.1f} "
        f"µs/msg, peak RSS {run.peak_rss_kib / 1024:6.1f} MiB, sink CPU "
        f"{run.sink_cpu / run.seconds:4.0%}, other CPU {run.other_cpu / run.seconds:4.0%}"
        f"{counted}",
        flush=True,
    )


def run_all(opts: Options) -> Figures:
    smtp_sink, smtp_source = find_tool("smtp-sink"), find_tool("smtp-source")
    skipped: dict[str, str] = {}
    contenders = list(opts.contenders)
    sink_note = "Postfix smtp-sink"
    if smtp_sink is None:
        sink_note = (
            "**smtp-sink not found: mailcore's own sink (Python) stands in, and it is the "
            f"limit of every figure below**; {INSTALL_HINT}"
        )
        print(f"WARNING: smtp-sink not found; {INSTALL_HINT}", file=sys.stderr)
    if "smtp-source" in contenders and smtp_source is None:
        contenders.remove("smtp-source")
        skipped["smtp-source"] = (
            f"smtp-source not found: that comparison is skipped; {INSTALL_HINT}"
        )
        print(f"WARNING: {skipped['smtp-source']}", file=sys.stderr)
    definition, size = calibrated_campaign(opts.size)
    print(
        f"send: {opts.recipients:,} recipients, {opts.connections} connections, messages of "
        f"{size:,.0f} bytes (target {opts.size:,}), {opts.runs} run(s), store {opts.store}, "
        f"{senders_text(opts.senders)} sender process(es); sink {smtp_sink or 'mailcore sink'}",
        flush=True,
    )
    runs: dict[Contender, list[Run]] = {c: [] for c in contenders}
    with tempfile.TemporaryDirectory(prefix="mailcore-bench-send-") as tmp:
        workdir = Path(tmp)
        prepared = trio.run(prepare, opts, workdir)
        print(
            f"  {opts.recipients:,} contacts imported in {prepared.import_seconds:.2f} s",
            flush=True,
        )

        def mailcore(
            name: str, senders: int, profile: Path | None = None
        ) -> tuple[Run, dict[str, Any] | None]:
            return trio.run(
                mailcore_run, opts, prepared, definition, size, smtp_sink, name, senders, profile
            )

        for rep in range(opts.runs):
            for contender in contenders:
                if contender == "mailcore":
                    for n in opts.senders:  # each sender count in turn, every run
                        run, _ = mailcore(f"run{rep}-{n}", n)
                        runs[contender].append(run)
                        say(run, rep)
                    continue
                if contender == "smtp-source":
                    assert smtp_source is not None
                    run = smtp_source_run(opts, smtp_source, smtp_sink, workdir)
                else:
                    run = worker_run(contender, opts, smtp_sink, workdir)
                runs[contender].append(run)
                say(run, rep)
        profile = None
        if opts.profile is not None:
            print(f"  profiling one mailcore pass into {opts.profile}", flush=True)
            run, report = mailcore("profile", opts.senders[0], opts.profile.resolve())
            assert report is not None
            profile = ProfileSummary(
                path=opts.profile,
                recipients=opts.recipients,
                seconds=run.seconds,
                loop_cpu=report["loop_cpu"],
                process_cpu=report["cpu"],
                sampled=report["sampled"],
                idle=report["idle"],
                clock=report["clock"],
                own=[(k, v) for k, v in report["own"]],
                cumulative=[(k, v) for k, v in report["cumulative"]],
                areas=[(k, v) for k, v in report["areas"]],
            )
    return Figures(
        runs=runs,
        import_seconds=prepared.import_seconds,
        mailcore_size=size,
        sink_kind="smtp-sink" if smtp_sink else "mailcore sink",
        sink_note=sink_note,
        skipped=skipped,
        profile=profile,
    )


# -- report ----------------------------------------------------------------------------------


def median_run(runs: Sequence[Run]) -> Run:
    """The run with the median rate (the lower middle for even counts), so that its CPU
    and memory figures belong to it."""
    return sorted(runs, key=lambda r: r.rate)[(len(runs) - 1) // 2]


DESCRIPTIONS: dict[Contender, str] = {
    "mailcore": "end to end: plan, lease, render (engine), SMTP, results committed, settled",
    "smtp-source": "Postfix's generator: fixed body, reused connections (`-d`), no pipelining",
    "aiosmtplib": "each message built with `email` (HTML + text), sent with aiosmtplib",
    "smtp-client": "mailcore's `SmtpConnection` alone, pre-rendered bytes, pipelined as the "
    "senders are (`mailcore bench smtp`)",
    "trio-minimal": "the floor in Python: ~60 lines of Trio, one pre-rendered message, "
    "pipelined as the senders are, replies only counted",
}
LABELS: dict[Contender, str] = {
    "mailcore": "**mailcore**",
    "smtp-source": "smtp-source",
    "aiosmtplib": "aiosmtplib + `email`",
    "smtp-client": "mailcore SMTP client only",
    "trio-minimal": "minimal Trio client",
}


def senders_text(counts: Sequence[int]) -> str:
    return ", ".join(str(n) for n in counts)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def median_rate(runs: Sequence[Run]) -> float:
    return statistics.median(r.rate for r in runs)


def mailcore_groups(fig: Figures) -> dict[int, list[Run]]:
    """mailcore's runs by sender count, fewest senders first."""
    groups: dict[int, list[Run]] = {}
    for run in fig.runs.get("mailcore", []):
        groups.setdefault(run.senders, []).append(run)
    return dict(sorted(groups.items()))


def best_mailcore(fig: Figures) -> tuple[int, list[Run]] | None:
    """The sender count with the highest median rate, and its runs."""
    groups = mailcore_groups(fig)
    return max(groups.items(), key=lambda kv: median_rate(kv[1])) if groups else None


def row_label(opts: Options, contender: Contender, senders: int) -> str:
    if contender != "mailcore" or opts.senders == (1,):
        return LABELS[contender]
    return f"{LABELS[contender]} ({plural(senders, 'sender')})"


def _ratio(opts: Options, fig: Figures, other: Contender, target: float) -> str | None:
    best = best_mailcore(fig)
    if best is None or other not in fig.runs:
        return None
    senders, mc_runs = best
    ratio = median_rate(mc_runs) / median_rate(fig.runs[other])
    met = "met" if ratio >= target else "**not met**"
    cpu = median_run(fig.runs[other]).cpu_us_per_message / median_run(mc_runs).cpu_us_per_message
    # With several sender counts, mailcore's fastest row is the one compared.
    which = (
        "mailcore"
        if len(opts.senders) == 1
        else f"mailcore (best row: {plural(senders, 'sender')})"
    )
    return (
        f"{which} / {LABELS[other]}: **{ratio:.2f}×** messages/s (target ≥ {target:g}×: "
        f"{met}); CPU per message, theirs / mailcore's: {cpu:.2f}×"
    )


def _table_rows(opts: Options, fig: Figures) -> Iterator[tuple[Contender, int, list[Run]]]:
    """(contender, sender count, runs) per row: mailcore one per sender count."""
    for contender, runs in fig.runs.items():
        if contender == "mailcore":
            for senders, group in mailcore_groups(fig).items():
                yield contender, senders, group
        elif runs:
            yield contender, 1, runs


def results_table(opts: Options, fig: Figures) -> list[str]:
    lines = [
        f"### {opts.recipients:,} recipients, {opts.connections} connections, "
        f"median of {opts.runs} run(s)",
        "",
        "| sender | what runs | bytes/msg | messages | msg/s | CPU µs/msg | CPU (cores) "
        "| peak RSS | sink CPU | other CPU |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for contender, senders, runs in _table_rows(opts, fig):
        m = median_run(runs)
        rate = median_rate(runs)
        rss = f"{m.peak_rss_kib / 1024:,.0f} MiB" + (
            f" ({senders} processes)" if senders > 1 else ""
        )
        lines.append(
            f"| {row_label(opts, contender, senders)} | {DESCRIPTIONS[contender]} "
            f"| {m.size:,.0f} | {m.messages:,} "
            f"| {rate:,.0f} | {m.cpu_us_per_message:,.0f} | {m.cpu / m.seconds:.2f} | {rss} "
            f"| {m.sink_cpu / m.seconds:.0%} | {m.other_cpu / m.seconds:.0%} |"
        )
    lines.append("")
    for other, target in (("smtp-source", 1.0), ("aiosmtplib", 10.0)):
        text = _ratio(opts, fig, other, target)  # type: ignore[arg-type]
        if text is not None:
            lines.append(f"- {text}.")
    mc = fig.runs.get("mailcore")
    if mc:
        plan = statistics.median(r.extra["plan"] for r in mc)
        loop = statistics.median(r.extra["loop_cpu"] / r.cpu for r in mc if r.cpu)
        kernel = statistics.median(r.extra["sys_cpu"] / r.cpu for r in mc if r.cpu)
        counted = sorted({r.sink_messages for r in mc if r.sink_messages is not None})
        counts = ", ".join(f"{c:,}" for c in counted) or "n/a"
        lines += [
            f"- mailcore's time runs from `campaigns.send` (audience frozen into the plan, "
            f"hold placed: median {plan:.2f} s) to the send settled. The sender's event-loop "
            f"thread did {loop:.0%} of its CPU, the engine's render and SMTP pipeline "
            f"threads and the "
            f"{'SQLite writer' if opts.store == 'sqlite' else 'PostgreSQL client'} threads "
            f"the rest; {kernel:.0%} of its CPU was in the kernel (system time: socket I/O, "
            "mostly).",
            f"- Counts: every mailcore run delivered all {opts.recipients:,} recipients; the "
            f"sink counted {counts} "
            "(more than delivered would be duplicates).",
        ]
    for why in fig.skipped.values():
        lines.append(f"- {why}")
    lines += [
        "",
        "msg/s is the median over runs; the other columns are from the run with the median "
        "rate. CPU is the contender's own processes (user + system, all threads); "
        "CPU (cores) is that over the run's wall time (1.00 = one core busy throughout); "
        "sink CPU is smtp-sink's share of a core (near 100% means the sink is the limit); "
        "other CPU is every other process on the machine, which should be near 0%. Peak RSS "
        "is the contender's VmHWM (summed over its processes; not ru_maxrss, which after fork "
        "and exec also counts the parent's memory at the fork).",
    ]
    return lines


def profile_lines(fig: Figures) -> list[str]:
    p = fig.profile
    if p is None:
        return []
    total = max(p.sampled, 1e-9)
    waiting = max(0.0, p.sampled - p.idle - p.loop_cpu)

    def rows(entries: list[tuple[str, float]]) -> list[str]:
        return [
            f"| {i + 1} | `{name}` | {sec / total:.1%} |" for i, (name, sec) in enumerate(entries)
        ]

    return [
        "### Where the time goes (`--profile`)",
        "",
        f"One more mailcore pass of {p.recipients:,} recipients with the sender under "
        f"pyinstrument, sampling the {p.clock} of its event-loop thread every 1 ms "
        f"({p.seconds:.2f} s with the profiler on): process CPU {p.process_cpu:.2f} s, of "
        f"which the event-loop thread {p.loop_cpu:.2f} s and the worker threads (engine "
        f"render and SMTP pipelines, SQLite writer) "
        f"{max(0.0, p.process_cpu - p.loop_cpu):.2f} s; "
        f"{p.idle / total:.0%} of the loop's samples are in epoll.poll. Shares are of the "
        f"loop's samples. Full report with the call tree: `{_rel(p.path)}`."
        + (
            f" With wall-time samples, about {waiting / total:.0%} "
            "of them are the loop waiting for a core (the machine's other processes, the sink "
            "and the worker threads), counted in whatever it was preempted in: mostly "
            "`socket.send`, whose real cost is bounded by the process's system time."
            if p.clock == "wall time"
            else ""
        ),
        "",
        "Own time by area: "
        + ", ".join(f"{name} {sec / total:.0%}" for name, sec in p.areas)
        + ".",
        "",
        "| # | top by own time | share |",
        "|--:|---|--:|",
        *rows(p.own),
        "",
        "| # | top by cumulative time (below the event loop) | share |",
        "|--:|---|--:|",
        *rows(p.cumulative),
    ]


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(servers.REPO))
    except ValueError:
        return str(path)


def _preamble(opts: Options, fig: Figures, wall: api.Wall, heading: str, store: str) -> list[str]:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    short = opts.recipients < 100_000 or opts.runs < 3
    senders = f"{senders_text(opts.senders)} sender process(es)"
    if len(opts.senders) > 1:
        senders = f"{senders_text(opts.senders)} sender processes (each count in turn every run)"
    return [
        heading + (" — short validation run, not representative" if short else ""),
        "",
        f"{when}, {api.machine()}. Command: `{command()}` ({wall.seconds:.0f} s in all; other "
        f"processes used {wall.other_share:.0%} of a core meanwhile).",
        f"Receiving side: {fig.sink_note} on loopback, a fresh one per run (PIPELINING "
        f"offered; smtp-sink has no CHUNKING). mailcore: store {store}, {senders} sharing "
        f"{opts.connections} connections"
        + (f", settings {opts.settings}" if opts.settings else "")
        + f"; {opts.recipients:,} contacts imported beforehand in {fig.import_seconds:.1f} s. "
        f"Messages: mailcore {fig.mailcore_size:,.0f} bytes on average (multipart/alternative "
        "HTML + text, quoted-printable, 5 merge fields, open + click tracking), the others "
        f"about {opts.size:,} bytes (`--size`).",
        *([f"Database: {opts.server}."] if opts.server else []),
        *api._busy_warning(wall),
    ]


def section(opts: Options, fig: Figures, wall: api.Wall) -> str:
    if opts.store == "postgres":
        lines = _preamble(opts, fig, wall, PG_SECTION, "PostgreSQL")
        lines += ["", *scaling_lines(opts, fig)]
    else:
        lines = _preamble(opts, fig, wall, SECTION, "SQLite (fresh copy per run)")
    lines += ["", *results_table(opts, fig)]
    groups = mailcore_groups(fig)
    if opts.store == "sqlite" and len(groups) > 1:
        lines += ["", limit_paragraph(groups, os.cpu_count() or 1, store="sqlite")]
    prof = profile_lines(fig)
    if prof:
        lines += ["", *prof]
    return "\n".join(lines) + "\n"


# -- several sender processes on PostgreSQL ---------------------------------------------------

ACROSS_MACHINES = (
    "**Across machines.** Sender processes on any number of machines share the work through "
    "the database alone: a sender claims a batch of recipients (`send_batch_size`, 500) in "
    "one statement with `FOR UPDATE SKIP LOCKED`, so no two claim the same row and none "
    "waits for another; it writes the results back grouped (`result_group_size`, 500 per "
    "transaction); and an outbox event per message is written only for accounts with a "
    "webhook endpoint listening (none in this benchmark). PostgreSQL therefore does a few "
    "row writes per message and a commit (an fsync with default durability) per batch, not "
    "per message. Throughput grows with the senders' cores (one sender process keeps about "
    "one core busy) until PostgreSQL's CPU or its WAL disk is the limit; the PostgreSQL CPU "
    "per message measured here says how many messages a second a database core carries. "
    "Past that, larger batches, faster WAL storage or one database per group of accounts "
    "help; in practice the receiving side's limits (per-domain rates, 421 throttling) "
    "usually bind far earlier."
)


def _cores(run: Run, key: str) -> float:
    return run.extra.get(key, float("nan")) / run.seconds


def _fmt(value: float, spec: str = ".2f") -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def scaling_lines(opts: Options, fig: Figures) -> list[str]:
    """Throughput per number of sender processes, and where the limit is."""
    groups = mailcore_groups(fig)
    if not groups:
        return []
    cpus = os.cpu_count() or 1
    base_n, base_runs = next(iter(groups.items()))
    base = median_rate(base_runs)
    lines = [
        f"### Throughput per number of sender processes (median of {opts.runs} run(s))",
        "",
        f"| sender processes | msg/s | vs {plural(base_n, 'sender')} | CPU µs/msg (all "
        "senders) | senders' CPU (cores) | peak RSS (summed) | sink CPU (cores) | PostgreSQL "
        f"CPU (cores) | PostgreSQL CPU µs/msg | machine busy (of {cpus} cores) |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for n, runs in groups.items():
        m, rate = median_run(runs), median_rate(runs)
        server = m.extra.get("server_cpu", float("nan"))
        lines.append(
            f"| {n} | {rate:,.0f} | {rate / base:.2f}× | {m.cpu_us_per_message:,.0f} "
            f"| {m.cpu / m.seconds:.2f} | {m.peak_rss_kib / 1024:,.0f} MiB "
            f"| {m.sink_cpu / m.seconds:.2f} | {_fmt(server / m.seconds)} "
            f"| {_fmt(1e6 * server / m.messages, ',.0f')} | {_cores(m, 'machine_cpu'):.2f} |"
        )
    lines += [
        "",
        "msg/s is the median over runs, the other columns are from the run with the median "
        "rate. CPU in cores is CPU seconds over the run's wall time (1.00 = one core busy "
        "throughout); PostgreSQL's is the server's processes (postmaster and backends, the "
        "benchmark's own polling connection included; n/a when the server is not one this "
        "benchmark started); machine busy is every process on the machine (/proc/stat).",
        "",
        limit_paragraph(groups, cpus),
        "",
        ACROSS_MACHINES,
    ]
    return lines


def limit_paragraph(groups: dict[int, list[Run]], cpus: int, store: str = "postgres") -> str:
    """Where the limit is on this machine, computed from the figures."""
    rates = {n: median_rate(runs) for n, runs in groups.items()}
    best = max(rates, key=lambda n: rates[n])
    base_n = next(iter(groups))
    m = median_run(groups[best])
    senders, sink = m.cpu / m.seconds, m.sink_cpu / m.seconds
    server, machine = _cores(m, "server_cpu"), _cores(m, "machine_cpu")
    rest = max(0.0, machine - senders - sink - _or_zero(server))
    parts = (
        f"{'the sender' if best == 1 else 'the senders'} {senders:.2f}, smtp-sink {sink:.2f}"
        + ("" if math.isnan(server) else f", PostgreSQL {server:.2f}")
    )
    text = [f"**Where the limit is on this machine** ({cpus} cores)."]
    if len(groups) == 1:
        text.append(f"One sender count only ({plural(best, 'sender')}): {rates[best]:,.0f} msg/s.")
    else:
        than = (
            f", {rates[best] / rates[base_n]:.2f}× {plural(base_n, 'sender')}"
            if best != base_n
            else ""
        )
        text.append(
            f"{plural(best, 'sender')} {'is' if best == 1 else 'are'} fastest: "
            f"{rates[best]:,.0f} msg/s{than}."
        )
    text.append(
        f"With {plural(best, 'sender')} the machine had {machine:.2f} of its {cpus} cores "
        f"busy: {parts}, everything else {rest:.2f}."
    )
    if rest >= 0.3:  # the run shared the machine: the verdict below is the shared one's
        text.append("Other processes took a share of the cores: re-run on a quiet machine.")
    if machine >= 0.9 * cpus:
        text.append("The machine's cores are the limit.")
    elif sink >= 0.9:
        text.append("smtp-sink, one process on one core, is the limit.")
    elif machine >= 0.85 * cpus:
        text.append(
            "The cores are nearly all busy, so CPU per message is what limits the rate; "
            "what is left idle is gaps between the senders' threads, the sink and the "
            "kernel's loopback work."
        )
    else:
        waits = (
            "the connections waiting for the next batch, each sender claiming, rendering "
            "and handing out its recipients a batch at a time (claims and results take "
            "SQLite's one write lock in turn), and the engine's pipelines waiting for the "
            "sink's replies"
            if store == "sqlite"
            else "the senders' round trips to PostgreSQL and its commits"
        )
        text.append(
            f"Cores were left idle, so the limit is waiting rather than CPU: {waits}, "
            "or too few senders."
        )
    for n, runs in groups.items():
        if n <= best:
            continue
        r = median_run(runs)
        busy = _cores(r, "machine_cpu")
        sharing = (
            "the senders and smtp-sink"
            if store == "sqlite"
            else ("the senders, PostgreSQL and smtp-sink")
        )
        why = (
            f": {sharing} time-share the {cpus} cores "
            f"({busy:.2f} busy) and each process waits for its turn"
            if busy >= 0.9 * cpus
            else f" ({busy:.2f} of {cpus} cores busy)"
        )
        text.append(f"With {n} senders, {rates[n] / rates[best]:.2f}× the fastest{why}.")
    first = median_run(groups[base_n])
    if best != base_n:
        text.append(
            f"CPU per message over all senders: {first.cpu_us_per_message:,.0f} µs with "
            f"{plural(base_n, 'sender')}, {m.cpu_us_per_message:,.0f} µs with {best}."
        )
    return " ".join(text)


def command() -> str:
    return " ".join(["python -m benchmarks.send", *sys.argv[1:]])


def write_section(text: str, path: Path = RESULTS, heading: str = SECTION) -> None:
    results.write_section(heading, text, path)


# -- main ------------------------------------------------------------------------------------


def sender_counts(text: str) -> tuple[int, ...]:
    """``--senders``: ``2`` or ``1,2,3``."""
    counts = []
    for item in text.split(","):
        try:
            counts.append(int(item.strip()))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{item.strip()!r} is not a number of sender processes (e.g. 2 or 1,2,3)"
            ) from None
    if len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"{text!r}: each sender count once")
    return tuple(counts)


def parse_args(argv: Sequence[str] | None) -> tuple[Options, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.send",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--recipients", type=int, default=100_000, help="campaign size (100,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per contender (3)")
    parser.add_argument("--connections", type=int, default=32, help="SMTP connections (32)")
    parser.add_argument("--size", default="10k", help="message size, k = 1024 (10k)")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--database-url",
        help="postgresql://… (with --store postgres; without it a throwaway cluster with "
        "default durability is started and stopped)",
    )
    parser.add_argument(
        "--senders",
        type=sender_counts,
        default=(1,),
        help="sender processes sharing the database and the connections, or a "
        "comma-separated list of counts, each run in turn (1)",
    )
    parser.add_argument(
        "--aiosmtplib-messages",
        type=int,
        help="messages for the aiosmtplib sender (min(recipients, 20,000): it is slow)",
    )
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"which to run, comma-separated ({','.join(CONTENDERS)})",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a mailcore setting for the senders (e.g. send_batch_size=1000); repeatable",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        type=Path,
        const=PROFILE_DEFAULT,
        help="one more mailcore pass under pyinstrument, its report written to PATH "
        f"({_rel(PROFILE_DEFAULT)})",
    )
    parser.add_argument(
        "--profile-clock",
        choices=("wall", "cpu"),
        default="wall",
        help="what the profile samples: wall time (default, low overhead) or the loop "
        "thread's CPU time (no waiting for a core counted, but a clock call per Python call)",
    )
    parser.add_argument("--write-results", action="store_true", help=f"update {RESULTS.name}")
    args = parser.parse_args(argv)
    named = [c.strip() for c in args.contenders.split(",") if c.strip()]
    for c in named:
        if c not in CONTENDERS:
            parser.error(f"unknown contender {c!r} (choose from {', '.join(CONTENDERS)})")
    contenders = tuple(c for c in CONTENDERS if c in named)
    if args.recipients < 1 or args.runs < 1 or args.connections < 1:
        parser.error("--recipients, --runs and --connections must be positive")
    if any(n < 1 or n > args.connections for n in args.senders):
        parser.error("--senders must be between 1 and --connections")
    if args.store == "sqlite":
        if args.database_url:
            parser.error("--database-url is for --store postgres (SQLite runs in a temp dir)")
    elif args.database_url:
        try:
            store_from_url(args.database_url)
        except ValidationError as exc:
            parser.error(
                f"{exc.message}: this build of mailcore has no PostgreSQL store yet (issue 7)"
            )
    try:
        size = parse_size(args.size)
    except ValueError as exc:
        parser.error(str(exc))
    settings: dict[str, str] = {}
    for item in args.setting:
        key, eq, value = item.partition("=")
        if not eq or key not in Settings.__struct_fields__:
            parser.error(f"--setting {item!r}: expected KEY=VALUE with a mailcore setting")
        settings[key] = value
    opts = Options(
        recipients=args.recipients,
        runs=args.runs,
        connections=args.connections,
        size=size,
        store=args.store,
        database_url=args.database_url,
        senders=args.senders,
        aiosmtplib_messages=args.aiosmtplib_messages or min(args.recipients, 20_000),
        contenders=contenders,
        settings=settings,
        profile=args.profile,
        profile_clock=args.profile_clock,
    )
    return opts, bool(args.write_results)


@contextmanager
def postgres_server(opts: Options) -> Iterator[Options]:
    """``opts`` with the PostgreSQL server to use: ``--database-url``'s, or (none given) a
    throwaway cluster with default durability, stopped on the way out whatever happens."""
    if opts.store != "postgres":
        yield opts
        return
    if opts.database_url is not None:
        yield replace(
            opts, server=describe_server(opts.database_url, "the server at --database-url")
        )
        return
    # The tests' cluster, with durability on: a benchmark must pay for its commits.
    from tests.pg import Cluster

    print("send: starting a throwaway PostgreSQL cluster (default durability)", flush=True)
    cluster = Cluster.start(durable=True)
    try:
        url = cluster.create_database()
        described = describe_server(url, "a throwaway cluster on loopback started for the run")
        yield replace(opts, database_url=url, server=described, server_pid=cluster.server_pid())
    finally:
        cluster.stop()
        print("send: PostgreSQL cluster stopped", flush=True)


def describe_server(url: str, what: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        got = {
            name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
            for name in ("server_version", "fsync", "synchronous_commit", "full_page_writes")
        }
    version = got["server_version"].split()[0]
    return (
        f"{what} (PostgreSQL {version}; fsync {got['fsync']}, synchronous_commit "
        f"{got['synchronous_commit']}, full_page_writes {got['full_page_writes']})"
    )


def measure_wall(
    fn: Callable[[], Figures], server_pid: int | None = None
) -> tuple[Figures, api.Wall]:
    """``server_pid``: our PostgreSQL cluster, not a child of ours, but no "other" process."""

    def ours() -> float:
        return api._our_cpu() + (_or_zero(tree_cpu(server_pid)) if server_pid else 0.0)

    machine0, ours0, start = servers.machine_busy_seconds(), ours(), time.perf_counter()
    figures = fn()
    seconds = time.perf_counter() - start
    other = max(0.0, servers.machine_busy_seconds() - machine0 - (ours() - ours0))
    return figures, api.Wall(seconds, other)


WORKERS: dict[str, Callable[[Sequence[str]], int]] = {
    "sender": sender_main,
    "aiosmtplib": aiosmtplib_main,
    "smtp-client": smtp_client_main,
    "trio-minimal": minimal_main,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in WORKERS:
        return WORKERS[argv[0]](argv[1:])
    opts, write = parse_args(argv)
    with postgres_server(opts) as ready:
        figures, wall = measure_wall(lambda: run_all(ready), ready.server_pid)
        text = section(ready, figures, wall)
    print()
    print(text)
    if write:
        write_section(text, heading=PG_SECTION if opts.store == "postgres" else SECTION)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
