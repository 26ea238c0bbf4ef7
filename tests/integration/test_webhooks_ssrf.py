"""SSRF: webhook URLs that reach loopback, private, link-local or metadata addresses are
refused (in every spelling), and no connection is made."""

from __future__ import annotations

import ipaddress

import pytest

from mailcore.webhooks.ssrf import TargetRefused, is_public, literal_ip, resolve
from tests.conftest import Tenant

pytestmark = pytest.mark.anyio

REFUSED = [
    "http://127.0.0.1/hook",
    "http://localhost:8080/hook",
    "http://10.0.0.5/hook",
    "http://172.16.3.4/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:a9fe:a9fe]/hook",
    "http://[fe80::1]/hook",
    "http://[fc00::1]/hook",
    "http://2130706433/hook",  # 127.0.0.1 as a decimal number
    "http://0177.0.0.1/hook",  # octal
    "http://0x7f.1/hook",  # hex, short form
    "http://127.1/hook",
    "http://0.0.0.0/hook",
    "http://user@127.0.0.1/hook",
    "http://example.com@127.0.0.1/hook",
    "http://127.0.0.1#@example.com/hook",
    "http://[::]/hook",
    "http://224.0.0.1/hook",
    "ftp://example.com/hook",
    "file:///etc/passwd",
    "http://exa mple.com/hook",
]


@pytest.mark.parametrize("url", REFUSED)
async def test_private_and_malformed_targets_are_refused(tenant: Tenant, url: str) -> None:
    r = await tenant.http.post("/v1/mail/webhooks", json={"url": url})
    assert r.status_code == 400, (url, r.text)
    assert r.json()["error"]["field"] == "url"
    assert (await tenant.http.get("/v1/mail/webhooks")).json()["data"] == []


def test_every_spelling_of_loopback_parses_to_loopback() -> None:
    for host in ("2130706433", "0177.0.0.1", "0x7f.1", "127.1", "0x7f000001"):
        ip = literal_ip(host)
        assert ip == ipaddress.IPv4Address("127.0.0.1"), host


def test_public_addresses_pass_and_mapped_private_ones_do_not() -> None:
    assert is_public(ipaddress.ip_address("93.184.216.34"))
    assert is_public(ipaddress.ip_address("2606:2800:220:1:248:1893:25c8:1946"))
    assert not is_public(ipaddress.ip_address("::ffff:10.0.0.1"))
    assert not is_public(ipaddress.ip_address("2002:7f00:1::"))  # 6to4 of 127.0.0.1
    assert not is_public(ipaddress.ip_address("100.64.0.1"))  # carrier-grade NAT


async def test_a_name_resolving_to_loopback_is_refused_at_connect_time_too() -> None:
    with pytest.raises(TargetRefused):
        await resolve("localhost", 80, allow_private=False)
    assert await resolve("localhost", 80, allow_private=True)
