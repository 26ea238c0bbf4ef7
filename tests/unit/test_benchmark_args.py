"""The send benchmark's command line: ``--senders`` takes one count or a list of them.
Parsing only: nothing is started."""

from __future__ import annotations

import pytest
from benchmarks.send import parse_args


@pytest.mark.parametrize(
    ("argv", "senders"),
    [
        ([], (1,)),
        (["--senders", "1"], (1,)),
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
        (["--senders", "2"], "--senders > 1 needs --store postgres"),
        (["--senders", "1,2"], "only 1 sender is allowed"),
    ],
)
def test_bad_senders_is_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
