"""Direct delivery: MX lookup through a real DNS server on loopback, the preferred host
down so the next one takes the mail, per-domain outcomes for domains that take no mail
(null MX, NXDOMAIN) and for DNS failures (deferred, then failed); MX hosts are local
SMTP servers on 127.0.0.x sharing one port (``mx_port``)."""

from __future__ import annotations

import msgspec
import pytest
import trio

from mailcore import CampaignCreate, Mailcore, Settings
from tests.dnsserver import dns_server
from tests.peers import aiosmtpd_server, free_port, wait_until

pytestmark = pytest.mark.anyio


async def test_direct_delivery_follows_mx_records(database_url: str) -> None:
    port = free_port()
    zone = {
        "good.test": ["MX 10 mx1.good.test.", "MX 20 mx2.good.test."],
        "mx1.good.test": ["A 127.0.0.2"],  # nothing listens there: falls back to mx2
        "mx2.good.test": ["A 127.0.0.3"],
        "implicit.test": ["A 127.0.0.3"],  # no MX: the domain itself
        "nullmx.test": ["MX 0 ."],
        "broken.test": ["MX 10 mx2.good.test."],
    }
    with (
        dns_server(zone) as dns,
        aiosmtpd_server(port=port, hostname="127.0.0.3") as (_, mx2),
    ):
        dns.servfail.add("broken.test")
        settings = Settings.load(
            env={},
            database_url=database_url,
            secret_key="k",
            delivery="direct",
            dns_nameservers=(dns.nameserver,),
            mx_port=port,
            direct_allow_private=True,
            helo_name="sender.test",
            retry_schedule=(1, 1),
        )
        recipients = {
            **{f"u{i}@good.test": "delivered" for i in range(40)},
            **{f"u{i}@implicit.test": "delivered" for i in range(5)},
            "a@nullmx.test": "bounced",
            "a@nxdomain.test": "bounced",
            "a@broken.test": "failed",
        }
        async with Mailcore.open(settings) as mc, trio.open_nursery() as nursery:
            await nursery.start(mc.run_sender)
            acct = await mc.accounts.create("d", credit_micros=10_000_000)
            scope = mc.account(acct.account_id)
            await scope.contacts.import_rows({"email": e, "tags": ["t"]} for e in recipients)
            c = await scope.campaigns.create(
                msgspec.convert(
                    {
                        "name": "d",
                        "subject": "hi",
                        "from": {"email": "news@sender.test"},
                        "audience": {"tags": ["t"]},
                        "content": {"html": "<p>hi</p>"},
                    },
                    CampaignCreate,
                )
            )
            await scope.campaigns.send(c.id)

            async def sent() -> bool:
                return (await scope.campaigns.stats(c.id)).status == "sent"

            await wait_until(sent, 60)
            stats = await scope.campaigns.stats(c.id)
            nursery.cancel_scope.cancel()

        assert (stats.delivered, stats.bounced, stats.failed) == (45, 2, 1)
        got = mx2.count_by_recipient()
        assert set(got) == {e for e, s in recipients.items() if s == "delivered"}
        assert max(got.values()) == 1
        assert dns.count("good.test", "MX") == 1  # cached for the whole send
