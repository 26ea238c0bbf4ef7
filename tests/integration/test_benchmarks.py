"""The benchmark suite is a tool operators run: its smoke mode must keep working."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_api_benchmark_quick_run_measures_both_sides() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.api", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "req/s" in out and "rows/s" in out
    assert "mailcore" in out and ("baseline" in out or "hand-written" in out)


def test_send_benchmark_small_run_counts_add_up(tmp_path: Path) -> None:
    """Every contender in one small run; mailcore's run is checked inside the benchmark
    (all delivered, the send settled) and the sink's own count is reported."""
    profile = tmp_path / "send-profile.txt"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.send",
            "--recipients",
            "400",
            "--runs",
            "1",
            "--connections",
            "4",
            "--aiosmtplib-messages",
            "60",
            "--profile",
            str(profile),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert "| **mailcore** |" in out and "| aiosmtplib + `email` |" in out
    assert "| mailcore SMTP client only |" in out and "| minimal Trio client |" in out
    assert "every mailcore run delivered all 400 recipients; the sink counted 400 " in out
    assert "mailcore / aiosmtplib + `email`: **" in out
    if shutil.which("smtp-source") or Path("/usr/sbin/smtp-source").exists():
        assert "| smtp-source |" in out and "mailcore / smtp-source: **" in out
    else:
        assert "smtp-source not found" in out and "apt-get install postfix" in out
    report = profile.read_text()
    assert "## Top functions by own time" in report and "_connection_worker" in report
    assert "### Where the time goes (`--profile`)" in out
