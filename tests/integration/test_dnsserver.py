"""The test DNS server answers like an authoritative server: checked with dnspython's
plain query functions, so MX tests rest on a peer that behaves."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from tests.dnsserver import dns_server


def ask(port: int, name: str, rdtype: str, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, "127.0.0.1", timeout=2, port=port)


def test_answers_nxdomain_nodata_wildcards_servfail_and_truncation() -> None:
    zone = {
        "a.test": ["120 MX 10 mx.a.test.", "A 127.0.0.1"],
        "deep.below.b.test": ["A 127.0.0.2"],
        "*.w.test": ["MX 5 mx.w.test."],
    }
    with dns_server(zone, negative_ttl=42) as server:
        r = ask(server.port, "A.test.", "MX")  # names are case-insensitive
        assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
        # (Name compression may carry the question's case into the exchange: compare
        # names case-insensitively, as DNS does.)
        assert [(rr.ttl, rr.to_text().lower().split()[-2:]) for rr in r.answer] == [
            (120, ["10", "mx.a.test."])
        ]
        nodata = ask(server.port, "a.test", "AAAA")
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
        assert nodata.authority[0].rdtype == dns.rdatatype.SOA
        assert nodata.authority[0][0].minimum == 42
        assert ask(server.port, "below.b.test", "A").rcode() == dns.rcode.NOERROR  # ENT
        assert ask(server.port, "nope.test", "MX").rcode() == dns.rcode.NXDOMAIN
        assert ask(server.port, "x.y.w.test", "MX").answer[0][0].preference == 5
        server.servfail.add("a.test")
        assert ask(server.port, "a.test", "MX").rcode() == dns.rcode.SERVFAIL
        server.servfail.clear()
        server.truncate.add("a.test")
        udp = ask(server.port, "a.test", "MX")
        assert udp.flags & dns.flags.TC and not udp.answer
        assert ask(server.port, "a.test", "MX", tcp=True).answer
        assert server.count("a.test", "MX") == 4 and server.count("a.test") == 5
        assert [q.transport for q in server.queries][-2:] == ["udp", "tcp"]
