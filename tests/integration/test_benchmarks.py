"""The benchmark suite is a tool operators run: its smoke mode must keep working."""

from __future__ import annotations

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
