"""benchmarks/RESULTS.md: each benchmark rewrites only its own ``## `` section."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "Each section is rewritten by its own benchmark's `--write-results` (`make bench` runs "
    "them all); every section names the machine and the command.\n"
)


def write_section(heading: str, text: str, path: Path = RESULTS) -> None:
    """Replace the section that starts with ``heading`` (up to the next ``## ``), or append
    it; the rest of the file is kept as it is."""
    old = path.read_text() if path.exists() else HEADER
    start = old.find(heading)
    if start == -1:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(heading))
        rest = old[end + 1 :] if end != -1 else ""
        new = old[:start] + text + ("\n" + rest if rest else "")
    path.write_text(new)
