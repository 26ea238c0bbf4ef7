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
