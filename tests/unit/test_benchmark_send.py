"""The send benchmark: its command line (``--senders`` takes one count or a list of them)
and the computed "where the limit is" paragraph. Nothing is started."""

from __future__ import annotations

import pytest
from benchmarks.send import Run, limit_paragraph, parse_args


@pytest.mark.parametrize(
    ("argv", "senders"),
    [
        ([], (1,)),
        (["--senders", "1"], (1,)),
        (["--senders", "1,2"], (1, 2)),  # SQLite: processes of one machine share the file
        (["--store", "postgres", "--senders", "3"], (3,)),
        (["--store", "postgres", "--senders", "1,2,3"], (1, 2, 3)),
        (["--store", "postgres", "--senders", " 2, 1 "], (2, 1)),
        (["--store", "postgres", "--senders", "1,4", "--connections", "4"], (1, 4)),
    ],
)
def test_senders_one_count_or_a_list(argv: list[str], senders: tuple[int, ...]) -> None:
    opts, write = parse_args(argv)
    assert opts.senders == senders
    assert not write


def test_postgres_needs_no_database_url() -> None:
    # Without one, the benchmark starts its own cluster when it runs, not when it parses.
    opts, _ = parse_args(["--store", "postgres", "--senders", "1,2"])
    assert opts.database_url is None and opts.server_pid is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--store", "postgres", "--senders", "0"], "--senders must be between 1 and"),
        (["--store", "postgres", "--senders", "1,0"], "--senders must be between 1 and"),
        (
            ["--store", "postgres", "--senders", "1,5", "--connections", "4"],
            "--senders must be between 1 and --connections",
        ),
        (["--store", "postgres", "--senders", "a"], "'a' is not a number of sender processes"),
        (["--store", "postgres", "--senders", "1,,2"], "'' is not a number of sender"),
        (["--store", "postgres", "--senders", "2,2"], "each sender count once"),
        (["--senders", "1,5", "--connections", "4"], "--senders must be between 1 and"),
    ],
)
def test_bad_senders_is_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def _run(senders: int, seconds: float, cpu: float, server: float, machine: float) -> Run:
    return Run(
        contender="mailcore",
        messages=20_000,
        seconds=seconds,
        cpu=cpu,
        peak_rss_kib=80_000 * senders,
        sink_cpu=0.25 * seconds,
        sink_messages=20_000,
        other_cpu=0.0,
        size=10_245.0,
        extra={"server_cpu": server, "machine_cpu": machine},
        senders=senders,
    )


def test_where_the_limit_is_is_computed_from_the_figures() -> None:
    groups = {
        1: [_run(1, 5.0, 4.8, 0.6, 6.5)],
        2: [_run(2, 3.3, 4.2, 0.7, 6.4)],
        3: [_run(3, 3.6, 4.5, 0.7, 7.1)],
    }
    text = limit_paragraph(groups, cpus=2)
    assert "2 senders are fastest: 6,061 msg/s, 1.52× 1 sender." in text
    assert "1.94 of its 2 cores busy" in text and "The machine's cores are the limit." in text
    assert "With 3 senders, 0.92× the fastest: the senders, PostgreSQL and smtp-sink" in text


def test_idle_cores_mean_the_limit_is_waiting() -> None:
    text = limit_paragraph({2: [_run(2, 3.3, 3.0, float("nan"), 4.4)]}, cpus=2)
    assert "One sender count only (2 senders)" in text
    assert "PostgreSQL" not in text.split("busy:", 1)[1].split(".", 1)[0]  # not measured
    assert "Cores were left idle" in text


def test_several_senders_on_sqlite_wait_for_its_write_lock_not_for_postgresql() -> None:
    groups = {1: [_run(1, 5.0, 4.8, float("nan"), 6.0)], 2: [_run(2, 3.3, 4.2, float("nan"), 5.2)]}
    text = limit_paragraph(groups, cpus=2, store="sqlite")
    assert "2 senders are fastest: 6,061 msg/s, 1.52× 1 sender." in text
    assert "SQLite's one write lock" in text and "PostgreSQL" not in text
