"""Server processes for the benchmarks: spawned, waited for, measured and always stopped.

Every process here is started by this module, tracked by its Popen object and stopped by
its own pid (SIGINT, then SIGKILL after a grace period), whatever happens in between.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0  # a server under cProfile writes its profile on the way out
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    base_url: str
    api_key: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """User + system CPU of the process, all threads (SQLite runs in worker threads)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # the name may contain spaces
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def peak_rss_kib(self) -> int:
        return _status_kib(self.pid, "VmHWM")

    def rss_kib(self) -> int:
        return _status_kib(self.pid, "VmRSS")


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used (the first line of /proc/stat):
    with our own processes' CPU subtracted, what else ran during a measurement."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / _TICKS


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} missing from /proc/{pid}/status")


def child_env(database_url: str | None = None) -> dict[str, str]:
    """The environment for a child: the repository importable, no stray MAILCORE_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCORE_")}
    paths = [str(REPO / "python"), str(REPO), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    if database_url is not None:
        env["MAILCORE_DATABASE_URL"] = database_url
    return env


def free_port() -> int:
    """A port the kernel just handed out; the tiny race until the server binds it is
    acceptable on a benchmark machine."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def create_mailcore_account(database_url: str, workdir: Path) -> str:
    """``mailcore accounts create --json`` against the database; returns the API key."""
    done = subprocess.run(
        [sys.executable, "-m", "mailcore.cli", "accounts", "create", "--name", "bench", "--json"],
        env=child_env(database_url),
        cwd=workdir,  # no ./mailcore.toml from the caller's directory
        capture_output=True,
        timeout=60,
        check=True,
    )
    created: dict[str, Any] = json.loads(done.stdout)
    return str(created["apiKey"])


def _wait_until_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server not listening on {port} after {START_TIMEOUT}s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (a clean exit: hypercorn closes, cProfile writes), SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


@contextmanager
def _running(
    name: str, argv: Sequence[str], env: dict[str, str], workdir: Path, port: int, api_key: str
) -> Iterator[Server]:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_until_listening(proc, port, log)
        yield Server(name, proc, f"http://127.0.0.1:{port}", api_key, log)
    finally:
        stop(proc)


@contextmanager
def mailcore_server(workdir: Path, profile: Path | None = None) -> Iterator[Server]:
    """``mailcore serve`` on a fresh database in ``workdir`` with one account; under
    cProfile (main thread only) when ``profile`` is given."""
    workdir.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite:///{workdir / 'bench.db'}"
    api_key = create_mailcore_account(database_url, workdir)
    port = free_port()
    wrapper = ["-m", "cProfile", "-o", str(profile)] if profile is not None else []
    argv = [
        sys.executable,
        *wrapper,
        "-m",
        "mailcore.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with _running("mailcore", argv, child_env(database_url), workdir, port, api_key) as server:
        yield server


@contextmanager
def baseline_server(workdir: Path) -> Iterator[Server]:
    """The hand-written Starlette + sqlite3 endpoint on a fresh database in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    api_key = "bl_" + os.urandom(18).hex()
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "benchmarks.baseline",
        "serve",
        "--db",
        str(workdir / "bench.db"),
        "--port",
        str(port),
        "--api-key",
        api_key,
    ]
    with _running("baseline", argv, child_env(), workdir, port, api_key) as server:
        yield server


def baseline_import(workdir: Path, csv_path: Path) -> dict[str, Any]:
    """The naive import in its own process on a fresh database: its own timing and peak
    RSS, untouched by the load generator's memory."""
    workdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.baseline",
            "import-csv",
            "--db",
            str(workdir / "naive.db"),
            "--csv",
            str(csv_path),
        ],
        env=child_env(),
        cwd=workdir,
        capture_output=True,
        timeout=600,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result
