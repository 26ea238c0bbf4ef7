"""The dispatcher's batches pipelined on each connection (pipeline_depth), against the
fault-injecting sink: connections dropped after a stored message, bounces, 421 at connect.
Every recipient ends as the plan says, and a message arrives twice only when its outcome
was unknown (the drop hid the reply)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailcore import Settings
from mailcore.smtp.faults import FaultPlan, fault_sink

from .test_send_errors import CAMPAIGN, running, wait_status

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("chunking", ["yes", "no"])
async def test_pipelined_batches_through_faults(tmp_path: Path, chunking: str) -> None:
    plan = FaultPlan(seed=3, rcpt_bounce=0.1, disconnect=0.05, connect_421=0.1)
    contacts = 120
    async with fault_sink(plan, keep=True) as sink:
        settings = Settings.load(
            env={},
            database_url=f"sqlite:///{tmp_path}/p.db",
            smtp_url=f"smtp://127.0.0.1:{sink.port}?tls=none&chunking={chunking}",
            secret_key="k",
            retry_schedule=(1, 1, 1, 1, 1, 1),
            smtp_connections=2,
            pipeline_depth=8,
        )
        async with running(settings) as api, api.tenant(1_000_000, contacts) as http:
            c = (await http.post("/v1/mail/campaigns", json=CAMPAIGN)).json()
            assert (await http.post(f"/v1/mail/campaigns/{c['id']}/send")).status_code == 200
            stats = await wait_status(http, c["id"], "sent")
    rcpts = [f"u{i}@example.com" for i in range(contacts)]
    bounced = [r for r in rcpts if plan.kind(r) == "bounce"]
    assert (stats["delivered"], stats["bounced"]) == (contacts - len(bounced), len(bounced))
    log = sink.log
    assert log.dropped > 0
    for r in rcpts:
        if r in bounced:
            assert log.received[r] == 0
        else:
            assert log.received[r] >= 1
    # duplicates: at most one per drop for each message that was in flight then
    assert sum(log.received.values()) - (contacts - len(bounced)) <= 8 * log.dropped
