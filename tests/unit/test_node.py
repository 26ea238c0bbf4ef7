"""Roles of a process and node ids."""

from __future__ import annotations

import gc
import sys

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
    thresholds = gc.get_threshold()
    try:
        tune_sender_process()
        assert sys.getswitchinterval() == pytest.approx(SENDER_SWITCH_INTERVAL)
        assert before > SENDER_SWITCH_INTERVAL  # shorter than Python's default
    finally:
        sys.setswitchinterval(before)
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def test_a_sender_process_runs_the_cyclic_collector_far_less_often() -> None:
    from mailcore import tune_sender_process

    def collections_while_allocating() -> int:
        gc.collect()
        before = gc.get_stats()[0]["collections"]
        kept = [{"n": i} for i in range(20_000)]  # as a few hundred messages' objects
        assert len(kept) == 20_000
        return gc.get_stats()[0]["collections"] - before

    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    try:
        assert collections_while_allocating() >= 20  # Python's default: every 700
        tune_sender_process()
        assert gc.get_freeze_count() > 0  # what was loaded is not walked again
        assert collections_while_allocating() == 0
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def test_a_lease_owner_has_stopped_only_when_this_machine_can_tell() -> None:
    import os
    import socket
    import subprocess
    import sys

    from mailcore.node import lease_owner_stopped, sender_running

    host = new_node_id().rsplit(":", 2)[0]  # host and pid namespace
    # A node of this process: stopped unless its sender runs now.
    mine = new_node_id()
    assert lease_owner_stopped(mine)
    with sender_running(mine):
        assert not lease_owner_stopped(mine)
        assert lease_owner_stopped(new_node_id())  # another node id of this process
    assert lease_owner_stopped(mine)
    # A node of another process of this machine: stopped once the process is gone, even
    # before its parent reaps it (a zombie runs no more).
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = f"{host}:{child.pid}:abcdef"
        assert not lease_owner_stopped(owner)
        child.kill()
        for _ in range(500):  # bounded: the kill lands within milliseconds
            with open(f"/proc/{child.pid}/stat", "rb") as stat:
                if stat.read().rpartition(b")")[2].split()[0] == b"Z":
                    break
            os.sched_yield()
        assert lease_owner_stopped(owner)
    finally:
        child.kill()
        child.wait()
    assert lease_owner_stopped(f"{host}:{child.pid}:abcdef")  # reaped: no such process
    # Another machine, or an owner not named by new_node_id: only expiry tells.
    assert not lease_owner_stopped(f"elsewhere.example:{child.pid}:abcdef")
    assert not lease_owner_stopped("live")
    assert not lease_owner_stopped(f"{host}:notapid:abcdef")
    # Same host name, another pid namespace (another container): its pids are not ours.
    assert not lease_owner_stopped(f"{socket.gethostname()}~1:{child.pid}:abcdef")
