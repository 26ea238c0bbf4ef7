"""Roles of a process and node ids."""

from __future__ import annotations

import pytest

from mailcore import ValidationError
from mailcore.node import ROLES, new_node_id, parse_roles


def test_roles() -> None:
    assert parse_roles("all") == frozenset(ROLES)
    assert parse_roles("sender") == {"sender"}
    assert parse_roles(" api , Webhooks ") == {"api", "webhooks"}
    for bad, why in (("", "no role"), ("all,api", "cannot be combined"), ("mta", "unknown")):
        with pytest.raises(ValidationError, match=why):
            parse_roles(bad)


def test_node_ids_differ_across_restarts_of_one_pid() -> None:
    # A restarted process (same pid, e.g. in a container) must not own the dead one's leases.
    assert new_node_id() != new_node_id()


def test_a_sender_process_hands_the_gil_back_to_its_event_loop_sooner() -> None:
    import sys

    from mailcore import tune_sender_process
    from mailcore.node import SENDER_SWITCH_INTERVAL

    before = sys.getswitchinterval()
    try:
        tune_sender_process()
        assert sys.getswitchinterval() == pytest.approx(SENDER_SWITCH_INTERVAL)
        assert before > SENDER_SWITCH_INTERVAL  # shorter than Python's default
    finally:
        sys.setswitchinterval(before)
