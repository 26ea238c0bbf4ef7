"""MX resolution (RFC 5321 §5.1, RFC 7505, IDNA) against a real DNS server on loopback."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import anyio
import idna
import pytest
from aiosmtpd.controller import Controller
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailcore import Settings
from mailcore.sending.mx import MxError, MxFailure, MxResolver, MxResult, to_a_label
from mailcore.smtp import RelayConfig, SmtpConnectError, SmtpConnection
from tests.dnsserver import DnsServer, dns_server
from tests.peers import RecordingHandler, free_port

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with dns_server() as server:
        yield server


def make_resolver(dns: DnsServer, **kwargs: object) -> MxResolver:
    kwargs.setdefault("timeout", 2.0)
    return MxResolver(nameservers=[dns.nameserver], **kwargs)  # type: ignore[arg-type]


def names(result: MxResult) -> list[str]:
    return [h.name for h in result.hosts]


async def expect_error(resolver: MxResolver, domain: str) -> MxError:
    with pytest.raises(MxError) as info:
        await resolver.resolve_mx(domain)
    return info.value


# -- ordering and addresses ---------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["trio", "asyncio"])
async def test_mx_hosts_in_preference_order_with_their_addresses(dns: DnsServer) -> None:
    # Run on Trio then asyncio in one process: dnspython's default backend is sniffed
    # once per process, so this fails unless each query names the running backend.
    dns.zone.update(
        {
            "example.com": ["MX 20 mx2.example.com.", "MX 10 mx1.example.com.", "MX 30 mx3.net."],
            "mx1.example.com": ["A 127.0.0.2", "AAAA ::1"],
            "mx2.example.com": ["A 127.0.0.3", "A 127.0.0.4"],
            "mx3.net": ["AAAA 2001:db8::25"],
        }
    )
    result = await make_resolver(dns).resolve_mx("example.com")
    assert result.domain == "example.com" and not result.implicit
    assert [(h.name, h.preference) for h in result.hosts] == [
        ("mx1.example.com", 10),
        ("mx2.example.com", 20),
        ("mx3.net", 30),
    ]
    assert result.hosts[0].addresses == ("127.0.0.2", "::1")  # IPv4 first
    assert sorted(result.hosts[1].addresses) == ["127.0.0.3", "127.0.0.4"]
    assert result.hosts[2].addresses == ("2001:db8::25",)
    assert result.targets()[0] == ("mx1.example.com", "127.0.0.2")
    assert len(result.targets()) == 5


async def test_ipv6_off_asks_no_aaaa(dns: DnsServer) -> None:
    dns.zone.update({"v4.test": ["MX 10 mx.v4.test."], "mx.v4.test": ["A 127.0.0.2", "AAAA ::1"]})
    result = await make_resolver(dns, ipv6=False).resolve_mx("v4.test")
    assert result.hosts[0].addresses == ("127.0.0.2",)
    assert dns.count(rdtype="AAAA") == 0


async def test_duplicate_exchanges_keep_the_best_preference_and_max_hosts_bounds(
    dns: DnsServer,
) -> None:
    dns.zone["dup.test"] = ["MX 50 a.dup.test.", "MX 5 a.dup.test.", "MX 10 b.dup.test."]
    dns.zone["many.test"] = [f"MX {i} h{i}.dup.test." for i in range(15)]
    for host in ["a", "b", *(f"h{i}" for i in range(15))]:
        dns.zone[f"{host}.dup.test"] = ["A 127.0.0.9"]
    resolver = make_resolver(dns, max_hosts=5)
    result = await resolver.resolve_mx("dup.test")
    assert [(h.name, h.preference) for h in result.hosts] == [("a.dup.test", 5), ("b.dup.test", 10)]
    many = await resolver.resolve_mx("many.test")
    assert names(many) == [f"h{i}.dup.test" for i in range(5)]
    assert dns.count("h5.dup.test") == 0  # never resolved


async def test_equal_preferences_are_shuffled_on_each_call_and_the_rng_is_seedable(
    dns: DnsServer,
) -> None:
    tied = [f"t{i}.tie.test" for i in range(4)]
    dns.zone["tie.test"] = ["MX 5 first.tie.test.", *(f"MX 10 {t}." for t in tied)]
    for host in ["first.tie.test", *tied]:
        dns.zone[host] = ["A 127.0.0.5"]

    async def orders(resolver: MxResolver) -> list[tuple[str, ...]]:
        return [tuple(names(await resolver.resolve_mx("tie.test"))) for _ in range(30)]

    seen = await orders(make_resolver(dns, rng=random.Random(7)))
    assert all(order[0] == "first.tie.test" for order in seen)  # preference 5 always first
    assert all(sorted(order[1:]) == tied for order in seen)
    assert len(set(seen)) > 1  # shuffled again on cached answers too
    assert dns.count("tie.test", "MX") == 1  # the other 29 answers came from the cache
    assert await orders(make_resolver(dns, rng=random.Random(7))) == seen


# -- implicit MX, null MX, NXDOMAIN, NoAnswer ------------------------------------------------


async def test_no_mx_records_means_the_domain_itself(dns: DnsServer) -> None:
    dns.zone["plain.test"] = ["A 127.0.0.7", "AAAA ::1"]
    result = await make_resolver(dns).resolve_mx("plain.test")
    assert result.implicit
    assert [(h.name, h.preference, h.addresses) for h in result.hosts] == [
        ("plain.test", 0, ("127.0.0.7", "::1"))
    ]


async def test_no_mx_and_no_address_is_permanent(dns: DnsServer) -> None:
    dns.zone["txtonly.test"] = ['TXT "v=spf1 -all"']
    err = await expect_error(make_resolver(dns), "txtonly.test")
    assert err.failure is MxFailure.NO_MAIL_HOSTS
    assert (err.is_permanent, err.is_transient, err.code, err.enhanced) == (
        True,
        False,
        550,
        (5, 1, 2),
    )


async def test_null_mx_is_permanent_5_1_10(dns: DnsServer) -> None:
    # The domain has an address too: the null MX still wins (RFC 7505 §3).
    dns.zone["nomail.test"] = ["MX 0 .", "A 127.0.0.8"]
    err = await expect_error(make_resolver(dns), "nomail.test")
    assert err.failure is MxFailure.NULL_MX
    assert err.is_permanent and err.code == 556 and err.enhanced == (5, 1, 10)
    assert err.reply.text.startswith("5.1.10 ") and "nomail.test" in err.text
    assert dns.count(rdtype="A") == 0


async def test_nxdomain_is_permanent_5_1_2(dns: DnsServer) -> None:
    err = await expect_error(make_resolver(dns), "nowhere.test")
    assert err.failure is MxFailure.NXDOMAIN
    assert err.is_permanent and (err.code, err.enhanced) == (550, (5, 1, 2))


async def test_servfail_is_transient_4_4_3(dns: DnsServer) -> None:
    dns.zone["broken.test"] = ["MX 10 mx.broken.test."]
    dns.servfail.add("broken.test")
    err = await expect_error(make_resolver(dns), "broken.test")
    assert err.failure is MxFailure.DNS_FAILURE
    assert err.is_transient and (err.code, err.enhanced) == (451, (4, 4, 3))


@pytest.mark.parametrize("anyio_backend", ["trio", "asyncio"])
async def test_no_answer_in_time_is_transient(dns: DnsServer) -> None:
    dns.zone["slow.test"] = ["MX 10 mx.slow.test."]
    dns.delay["slow.test"] = 3.0
    started = time.monotonic()
    err = await expect_error(make_resolver(dns, timeout=0.4), "slow.test")
    assert time.monotonic() - started < 2.0
    assert err.failure is MxFailure.TIMEOUT
    assert err.is_transient and err.enhanced == (4, 4, 3)


async def test_no_nameserver_listening_is_transient() -> None:
    with dns_server() as gone:
        address = gone.nameserver
    err = await expect_error(MxResolver(nameservers=[address], timeout=0.5), "example.com")
    assert err.is_transient and err.enhanced == (4, 4, 3)


# -- unusable MX hosts ----------------------------------------------------------------------


async def test_mx_hosts_without_addresses_or_as_ip_literals_are_skipped(dns: DnsServer) -> None:
    dns.zone.update(
        {
            "mixed.test": [
                "MX 10 missing.mixed.test.",  # NXDOMAIN
                "MX 15 192.0.2.1.",  # an IP literal, not a host name
                "MX 20 noaddr.mixed.test.",  # exists, no A/AAAA
                "MX 25 zero.mixed.test.",  # only 0.0.0.0: would reach the local host
                "MX 30 good.mixed.test.",
            ],
            "noaddr.mixed.test": ['TXT "x"'],
            "zero.mixed.test": ["A 0.0.0.0"],
            "good.mixed.test": ["A 127.0.0.30"],
        }
    )
    result = await make_resolver(dns).resolve_mx("mixed.test")
    assert [(h.name, h.addresses) for h in result.hosts] == [("good.mixed.test", ("127.0.0.30",))]
    assert dns.count("192.0.2.1") == 0


async def test_no_usable_mx_host_is_transient_4_4_4(dns: DnsServer) -> None:
    dns.zone["dead.test"] = ["MX 10 gone.dead.test.", "MX 20 203.0.113.5."]
    err = await expect_error(make_resolver(dns), "dead.test")
    assert err.failure is MxFailure.NO_USABLE_HOSTS
    assert err.is_transient and (err.code, err.enhanced) == (451, (4, 4, 4))
    dns.zone["literal.test"] = ["MX 10 198.51.100.7."]
    assert (await expect_error(make_resolver(dns), "literal.test")).enhanced == (4, 4, 4)


async def test_mx_hosts_whose_lookups_fail_are_skipped_and_all_failing_is_transient(
    dns: DnsServer,
) -> None:
    dns.zone.update(
        {
            "flaky.test": ["MX 10 bad.flaky.test.", "MX 20 ok.flaky.test."],
            "allbad.test": ["MX 10 bad.flaky.test."],
            "ok.flaky.test": ["A 127.0.0.40"],
        }
    )
    dns.servfail.add("bad.flaky.test")
    result = await make_resolver(dns).resolve_mx("flaky.test")
    assert names(result) == ["ok.flaky.test"]
    err = await expect_error(make_resolver(dns), "allbad.test")
    assert err.failure is MxFailure.DNS_FAILURE and err.enhanced == (4, 4, 3)


# -- names ----------------------------------------------------------------------------------


async def test_unicode_domain_is_looked_up_by_its_a_label(dns: DnsServer) -> None:
    dns.zone.update(
        {
            "xn--bcher-kva.example": ["MX 10 xn--mx-zia.xn--bcher-kva.example."],
            "xn--mx-zia.xn--bcher-kva.example": ["A 127.0.0.50"],
        }
    )
    resolver = make_resolver(dns)
    result = await resolver.resolve_mx("Bücher.Example.")
    assert result.domain == "xn--bcher-kva.example"
    assert names(result) == ["xn--mx-zia.xn--bcher-kva.example"]
    # Upper case, full-width letters and an ideographic full stop map to the same name
    # (UTS #46), so to the same cache entry.
    assert (await resolver.resolve_mx("ＢÜＣＨＥＲ。Example")).domain == "xn--bcher-kva.example"
    assert (await resolver.resolve_mx("BÜCHER.example")).domain == "xn--bcher-kva.example"
    assert dns.count("xn--bcher-kva.example", "MX") == 1


@pytest.mark.parametrize(
    "domain",
    [
        "",
        ".",
        "a..b.test",
        "-lead.test",
        "trail-.test",
        "under_score.test",
        "x" * 64 + ".test",
        ".".join(["a" * 60] * 5),  # 304 characters
        "[127.0.0.1]",
        "127.0.0.1",
        "::1",
        "a b.test",
        "evil\r\nRCPT.test",
        "💩.test",  # not valid in IDNA 2008
        "xn--.test",
        "a\u200db.test",  # a joiner out of context
    ],
)
async def test_bad_domains_are_permanent_and_never_asked(dns: DnsServer, domain: str) -> None:
    err = await expect_error(make_resolver(dns), domain)
    assert err.failure is MxFailure.BAD_DOMAIN
    assert err.is_permanent and (err.code, err.enhanced) == (553, (5, 1, 3))
    assert "\r" not in err.text and "\n" not in err.text and err.text.isascii()
    assert dns.count() == 0


@pytest.mark.parametrize("domain", ["r3---sn-abc.test", "xn--ls8h.test", "ab--cd.test", "1.test"])
async def test_ascii_names_idna_2008_dislikes_are_still_looked_up(
    dns: DnsServer, domain: str
) -> None:
    # Real names with hyphens in 3rd/4th place or IDNA 2003 A-labels take mail.
    dns.zone[domain] = ["MX 10 mx.ok.test."]
    dns.zone["mx.ok.test"] = ["A 127.0.0.60"]
    assert names(await make_resolver(dns).resolve_mx(domain.upper())) == ["mx.ok.test"]


# -- caching --------------------------------------------------------------------------------


async def test_answers_are_cached_for_the_smallest_ttl(dns: DnsServer) -> None:
    dns.zone.update(
        {"ttl.test": ["300 MX 10 mx.ttl.test."], "mx.ttl.test": ["60 A 127.0.0.70", "600 AAAA ::1"]}
    )
    clock = FakeClock()
    resolver = make_resolver(dns, clock=clock)
    await resolver.resolve_mx("ttl.test")
    assert dns.counts() == {
        ("ttl.test", "MX"): 1,
        ("mx.ttl.test", "A"): 1,
        ("mx.ttl.test", "AAAA"): 1,
    }
    clock.now += 59.9
    await resolver.resolve_mx("ttl.test")
    assert dns.count("ttl.test", "MX") == 1
    clock.now += 0.2  # past the A record's 60 s
    await resolver.resolve_mx("ttl.test")
    assert dns.count("ttl.test", "MX") == 2 and dns.count("mx.ttl.test", "A") == 2


async def test_cache_time_is_bounded_by_max_cache_seconds(dns: DnsServer) -> None:
    dns.zone.update(
        {"long.test": ["86400 MX 10 mx.long.test."], "mx.long.test": ["86400 A 127.0.0.71"]}
    )
    clock = FakeClock()
    resolver = make_resolver(dns, clock=clock, max_cache_seconds=10)
    await resolver.resolve_mx("long.test")
    clock.now += 9.5
    await resolver.resolve_mx("long.test")
    assert dns.count("long.test", "MX") == 1
    clock.now += 1
    await resolver.resolve_mx("long.test")
    assert dns.count("long.test", "MX") == 2


async def test_transient_failures_are_remembered_briefly(dns: DnsServer) -> None:
    dns.zone.update(
        {"recovering.test": ["MX 10 mx.recovering.test."], "mx.recovering.test": ["A 127.0.0.72"]}
    )
    dns.servfail.add("recovering.test")
    clock = FakeClock()
    resolver = make_resolver(dns, clock=clock, transient_cache_seconds=30)
    assert (await expect_error(resolver, "recovering.test")).is_transient
    dns.servfail.clear()
    clock.now += 29
    assert (await expect_error(resolver, "recovering.test")).is_transient  # from the cache
    assert dns.count("recovering.test", "MX") == 1
    clock.now += 2
    assert names(await resolver.resolve_mx("recovering.test")) == ["mx.recovering.test"]
    assert dns.count("recovering.test", "MX") == 2


async def test_partial_answers_are_cached_only_briefly(dns: DnsServer) -> None:
    # One MX host's lookup failed: the answer is used but asked again soon.
    dns.zone.update(
        {
            "part.test": ["3600 MX 10 bad.part.test.", "3600 MX 20 ok.part.test."],
            "ok.part.test": ["3600 A 127.0.0.73"],
        }
    )
    dns.servfail.add("bad.part.test")
    clock = FakeClock()
    resolver = make_resolver(dns, clock=clock, transient_cache_seconds=30)
    await resolver.resolve_mx("part.test")
    clock.now += 31
    await resolver.resolve_mx("part.test")
    assert dns.count("part.test", "MX") == 2


async def test_nxdomain_is_remembered_for_its_negative_ttl() -> None:
    with dns_server(negative_ttl=45) as dns:
        clock = FakeClock()
        resolver = make_resolver(dns, clock=clock)
        assert (await expect_error(resolver, "gone.test")).failure is MxFailure.NXDOMAIN
        clock.now += 44
        assert (await expect_error(resolver, "gone.test")).failure is MxFailure.NXDOMAIN
        assert dns.count("gone.test") == 1
        dns.zone["gone.test"] = ["MX 10 mx.back.test."]
        dns.zone["mx.back.test"] = ["A 127.0.0.74"]
        clock.now += 2
        assert names(await resolver.resolve_mx("gone.test")) == ["mx.back.test"]


async def test_the_cache_is_bounded(dns: DnsServer) -> None:
    dns.zone["*.many.test"] = ["MX 10 mx.many.test."]
    dns.zone["mx.many.test"] = ["A 127.0.0.75"]
    resolver = make_resolver(dns, max_cache_entries=3)
    for i in range(5):
        await resolver.resolve_mx(f"d{i}.many.test")
    await resolver.resolve_mx("d4.many.test")  # the newest: still cached
    await resolver.resolve_mx("d0.many.test")  # the oldest: evicted, asked again
    assert dns.count("d4.many.test", "MX") == 1 and dns.count("d0.many.test", "MX") == 2


async def test_concurrent_lookups_of_one_domain_share_one_query(dns: DnsServer) -> None:
    dns.zone.update({"busy.test": ["MX 10 mx.busy.test."], "mx.busy.test": ["A 127.0.0.76"]})
    dns.delay["busy.test"] = 0.3
    resolver = make_resolver(dns)
    results: list[MxResult] = []

    async def one() -> None:
        results.append(await resolver.resolve_mx("busy.test"))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
    assert len(results) == 20 and all(names(r) == ["mx.busy.test"] for r in results)
    assert dns.count("busy.test", "MX") == 1


async def test_a_cancelled_lookup_does_not_strand_the_others(dns: DnsServer) -> None:
    dns.zone.update({"cancel.test": ["MX 10 mx.cancel.test."], "mx.cancel.test": ["A 127.0.0.77"]})
    dns.delay["cancel.test"] = 0.3
    resolver = make_resolver(dns)
    results: list[MxResult] = []

    async def follower() -> None:
        results.append(await resolver.resolve_mx("cancel.test"))

    async with anyio.create_task_group() as tg:
        with anyio.move_on_after(0.1):  # the first caller gives up mid-query
            async with anyio.create_task_group() as inner:
                inner.start_soon(resolver.resolve_mx, "cancel.test")
                await anyio.sleep(0.02)
                tg.start_soon(follower)
                await anyio.sleep(1)
    assert names(results[0]) == ["mx.cancel.test"]


async def test_truncated_udp_answers_are_retried_over_tcp(dns: DnsServer) -> None:
    dns.zone["big.test"] = [f"MX {i} mx{i}.big.test." for i in range(3)]
    for i in range(3):
        dns.zone[f"mx{i}.big.test"] = [f"A 127.0.1.{i}"]
    dns.truncate.add("big.test")
    result = await make_resolver(dns).resolve_mx("big.test")
    assert names(result) == ["mx0.big.test", "mx1.big.test", "mx2.big.test"]
    assert [q.transport for q in dns.queries if q.name == "big.test"] == ["udp", "tcp"]


async def test_built_from_settings(dns: DnsServer) -> None:
    dns.zone.update({"cfg.test": ["MX 10 mx.cfg.test."], "mx.cfg.test": ["A 127.0.0.78"]})
    settings = Settings.load(env={}, dns_nameservers=(dns.nameserver,), dns_timeout_seconds=1.0)
    resolver = MxResolver.from_settings(settings, ipv6=False)
    assert names(await resolver.resolve_mx("cfg.test")) == ["mx.cfg.test"]


# -- properties -----------------------------------------------------------------------------

PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY
@given(
    records=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 7)), min_size=1, max_size=10),
    rng=st.randoms(use_true_random=False),
)
async def test_output_is_a_permutation_respecting_preference(
    dns: DnsServer, records: list[tuple[int, int]], rng: random.Random
) -> None:
    dns.zone["prop.test"] = [f"MX {pref} h{host}.prop.test." for pref, host in records]
    for host in range(8):
        dns.zone[f"h{host}.prop.test"] = [f"A 127.0.2.{host}"]
    best: dict[str, int] = {}
    for pref, host in records:
        name = f"h{host}.prop.test"
        best[name] = min(pref, best.get(name, pref))
    result = await make_resolver(dns, rng=rng).resolve_mx("prop.test")
    got = [(h.name, h.preference) for h in result.hosts]
    assert sorted(got) == sorted(best.items())  # every host once, at its best preference
    assert [p for _, p in got] == sorted(p for _, p in got)
    assert all(h.addresses == (f"127.0.2.{h.name[1]}",) for h in result.hosts)


LDH_LABEL = st.from_regex(r"\A[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?\Z")
# Letters of any script: mostly valid IDNA 2008 labels, so the success path gets examples.
UNICODE_WORD = st.text(st.characters(categories=["Ll", "Lo"]), min_size=1, max_size=12)


@pytest.fixture
def idn_dns(dns: DnsServer) -> DnsServer:
    dns.zone["*.idn.test"] = ["MX 10 mx.idn.test."]
    dns.zone["mx.idn.test"] = ["A 127.0.0.90"]
    return dns


@settings(PROPERTY, max_examples=200)
@given(label=st.text(max_size=70) | LDH_LABEL | UNICODE_WORD)
async def test_any_unicode_label_resolves_by_its_a_label_or_is_a_permanent_error(
    idn_dns: DnsServer, label: str
) -> None:
    idn_dns.reset_counts()
    resolver = make_resolver(idn_dns)
    domain = f"{label}.idn.test"
    try:
        result = await resolver.resolve_mx(domain)
    except MxError as err:
        assert err.failure is MxFailure.BAD_DOMAIN and err.is_permanent
        assert idn_dns.count() == 0
        return
    name = result.domain
    assert name.isascii() and name == name.lower() and name.endswith(".idn.test")
    assert len(name) <= 253 and all(0 < len(part) <= 63 for part in name.split("."))
    assert idn_dns.count(name, "MX") == 1  # the server was asked for the A-label
    if not label.isascii():
        # Decoding the A-labels gives back the UTS #46-mapped input.
        mapped = idna.uts46_remap(domain, std3_rules=True, transitional=False).rstrip(".")
        assert idna.decode(name) == mapped
    assert to_a_label(domain) == name


@PROPERTY
@given(label=LDH_LABEL)
async def test_every_ldh_label_is_looked_up_as_is(idn_dns: DnsServer, label: str) -> None:
    result = await make_resolver(idn_dns).resolve_mx(f"{label}.idn.test")
    assert result.domain == f"{label.lower()}.idn.test"


# -- the shape of direct delivery ------------------------------------------------------------


async def test_targets_reach_a_local_smtp_server_standing_in_for_the_mx(dns: DnsServer) -> None:
    # How the dispatcher uses a result: each address in order on settings.mx_port, the
    # next on failure. Here the first MX (127.0.0.2) has no server; the second
    # (127.0.0.3) runs aiosmtpd on the same free port.
    settings = Settings.load(env={}, dns_nameservers=(dns.nameserver,), mx_port=free_port())
    dns.zone.update(
        {
            "dest.test": ["MX 10 mx1.dest.test.", "MX 20 mx2.dest.test."],
            "mx1.dest.test": ["A 127.0.0.2"],
            "mx2.dest.test": ["A 127.0.0.3"],
        }
    )
    handler = RecordingHandler()
    controller = Controller(handler, hostname="127.0.0.3", port=settings.mx_port)
    controller.start()
    try:
        result = await MxResolver.from_settings(settings).resolve_mx("dest.test")
        tried: list[str] = []
        for _host, address in result.targets():
            tried.append(address)
            config = RelayConfig(host=address, port=settings.mx_port, tls="none")
            try:
                conn = await SmtpConnection.open(config)
            except SmtpConnectError:
                continue
            async with conn:
                outcome = await conn.send(
                    "a@sender.test", ["b@dest.test"], b"Subject: x\r\n\r\nhi\r\n"
                )
            assert outcome.data is not None and outcome.data.code == 250
            break
    finally:
        controller.stop()
    assert tried == ["127.0.0.2", "127.0.0.3"]
    assert [m.rcpt_tos for m in handler.messages] == [["b@dest.test"]]
