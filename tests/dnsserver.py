"""A real DNS server for tests: authoritative answers from an in-test zone, over UDP and
TCP on 127.0.0.1, in a background thread (so it serves Trio and asyncio tests alike and a
deliberately slow answer never blocks the test's event loop).

Messages are parsed and built with dnspython (``dns.message.from_wire`` /
``make_response``); the resolver under test talks to it over real sockets.

    with dns_server({
        "example.com": ["300 MX 10 mx1.example.com.", "MX 20 mx2.example.com."],
        "mx1.example.com": ["60 A 127.0.0.2", "AAAA ::1"],
        "*.wild.test": ["MX 10 mx1.example.com."],   # any name below wild.test
        "empty.test": [],                           # exists, no records: NoAnswer
    }) as dns:
        dns.servfail.add("broken.test")             # SERVFAIL for this name
        dns.delay["slow.test"] = 2.0                # answer after 2 s (timeouts)
        dns.truncate.add("big.test")                # TC over UDP: the client retries on TCP
        resolver = MxResolver(nameservers=[dns.nameserver])   # "127.0.0.1:PORT"
        ...
        assert dns.count("example.com", "MX") == 1

Semantics: a name in the zone answers its records of the asked type (NoAnswer, with an SOA
for the negative TTL, when it has none); a name that is not in the zone but has names
below it is an empty non-terminal (NoAnswer); ``*.parent`` entries match any name below
``parent`` not itself in the zone; every other name is NXDOMAIN. Record text is zone-file
style: ``"[TTL] TYPE RDATA"`` (TTL defaults to ``default_ttl``).
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset


@dataclass(frozen=True)
class Query:
    name: str  # lower case, no trailing dot
    rdtype: str  # "MX", "A", ...
    transport: str  # "udp" or "tcp"


@dataclass
class DnsServer:
    """See the module docstring. Mutate ``zone``, ``servfail``, ``delay`` and
    ``truncate`` freely while it runs: each query reads them under the lock."""

    zone: dict[str, list[str]] = field(default_factory=dict)
    servfail: set[str] = field(default_factory=set)
    delay: dict[str, float] = field(default_factory=dict)
    truncate: set[str] = field(default_factory=set)
    default_ttl: int = 300
    negative_ttl: int = 60  # the SOA minimum sent with NXDOMAIN and NoAnswer
    queries: list[Query] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    port: int = 0

    @property
    def nameserver(self) -> str:
        """The ``"127.0.0.1:PORT"`` entry to hand to the resolver."""
        return f"127.0.0.1:{self.port}"

    def count(self, name: str | None = None, rdtype: str | None = None) -> int:
        """Queries received, optionally only for ``name`` and/or ``rdtype``."""
        key = _key(name) if name is not None else None
        with self.lock:
            return sum(
                1
                for q in self.queries
                if (key is None or q.name == key) and (rdtype is None or q.rdtype == rdtype)
            )

    def counts(self) -> Counter[tuple[str, str]]:
        with self.lock:
            return Counter((q.name, q.rdtype) for q in self.queries)

    def reset_counts(self) -> None:
        with self.lock:
            self.queries.clear()

    # -- answering ------------------------------------------------------------------

    def answer(self, wire: bytes, transport: str) -> tuple[bytes | None, float]:
        """The response to one query in wire format (None: drop it) and the seconds to
        wait before sending it."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None, 0.0  # not DNS: a real server would drop it too
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire(), 0.0
        question = query.question[0]
        name = _key(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        with self.lock:
            self.queries.append(Query(name, rdtype, transport))
            delay = self.delay.get(name, 0.0)
            if name in self.servfail:
                response.set_rcode(dns.rcode.SERVFAIL)
                return response.to_wire(), delay
            truncate = transport == "udp" and name in self.truncate
            records = self._lookup(name)
        if records is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(self._soa())
        else:
            rrset = self._rrset(question.name, question.rdtype, records)
            if rrset is None:
                response.authority.append(self._soa())  # NOERROR, no data
            else:
                response.answer.append(rrset)
        if truncate:
            # Only the header and question, TC set: RFC 7766 clients retry over TCP.
            response.answer.clear()
            response.authority.clear()
            response.flags |= dns.flags.TC
        # UDP answers must fit the client's buffer: 512 bytes, or its EDNS payload size.
        limit = 65535 if transport == "tcp" else max(512, query.payload if query.edns >= 0 else 0)
        try:
            return response.to_wire(max_size=limit), delay
        except dns.exception.TooBig:
            response.answer.clear()
            response.authority.clear()
            response.flags |= dns.flags.TC
            return response.to_wire(), delay

    def _lookup(self, name: str) -> list[str] | None:
        """The records of ``name``; [] for an empty non-terminal; None for NXDOMAIN."""
        if name in self.zone:
            return self.zone[name]
        if any(other.endswith("." + name) for other in self.zone):
            return []
        labels = name.split(".")
        for i in range(1, len(labels)):
            wildcard = "*." + ".".join(labels[i:])
            if wildcard in self.zone:
                return self.zone[wildcard]
        return None

    def _rrset(
        self, owner: dns.name.Name, rdtype: dns.rdatatype.RdataType, records: Sequence[str]
    ) -> dns.rrset.RRset | None:
        rrset: dns.rrset.RRset | None = None
        for text in records:
            ttl, type_text, rdata_text = _split_record(text, self.default_ttl)
            if dns.rdatatype.from_text(type_text) != rdtype:
                continue
            rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, rdata_text)
            if rrset is None:
                rrset = dns.rrset.RRset(owner, dns.rdataclass.IN, rdtype)
            # An RRset has one TTL: the smallest of its records', as a server would send.
            rrset.add(rdata, ttl)
        return rrset

    def _soa(self) -> dns.rrset.RRset:
        # Owned by the root: the resolver's negative-TTL search walks up to it, whatever
        # the name asked.
        return dns.rrset.from_text(
            ".",
            self.negative_ttl,
            "IN",
            "SOA",
            f"ns.test. hostmaster.test. 1 3600 600 86400 {self.negative_ttl}",
        )


def _key(name: str) -> str:
    return name.rstrip(".").lower()


def _split_record(text: str, default_ttl: int) -> tuple[int, str, str]:
    first, rest = text.split(None, 1)
    if first.isdigit():
        type_text, rdata = rest.split(None, 1)
        return int(first), type_text, rdata
    return default_ttl, first, rest


# -- the sockets ------------------------------------------------------------------------


def _bind_pair() -> tuple[socket.socket, socket.socket, int]:
    """A UDP and a TCP socket on the same free port of 127.0.0.1 (DNS clients fall back
    from UDP to TCP on the same address and port)."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port: int = udp.getsockname()[1]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", port))
        except OSError:  # taken for TCP by someone else: try another port
            udp.close()
            tcp.close()
            continue
        tcp.listen(16)
        return udp, tcp, port
    raise RuntimeError("no port free for both UDP and TCP")


def _serve_tcp(server: DnsServer, conn: socket.socket) -> None:
    """One TCP connection: 2-byte length-prefixed messages (RFC 1035 §4.2.2)."""
    with conn:
        conn.settimeout(10)
        try:
            while True:
                header = _recv_exactly(conn, 2)
                if header is None:
                    return
                wire = _recv_exactly(conn, struct.unpack("!H", header)[0])
                if wire is None:
                    return
                reply, delay = server.answer(wire, "tcp")
                if reply is None:
                    return
                if delay:
                    threading.Event().wait(delay)
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            return


def _recv_exactly(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


@contextmanager
def dns_server(
    zone: Mapping[str, Sequence[str]] | None = None,
    *,
    default_ttl: int = 300,
    negative_ttl: int = 60,
) -> Iterator[DnsServer]:
    """Run a :class:`DnsServer` on 127.0.0.1 (UDP and TCP, one free port) for the block."""
    server = DnsServer(
        zone={_key(k): list(v) for k, v in (zone or {}).items()},
        default_ttl=default_ttl,
        negative_ttl=negative_ttl,
    )
    udp, tcp, server.port = _bind_pair()
    stop_r, stop_w = socket.socketpair()
    selector = selectors.DefaultSelector()
    selector.register(udp, selectors.EVENT_READ)
    selector.register(tcp, selectors.EVENT_READ)
    selector.register(stop_r, selectors.EVENT_READ)

    def send_later(reply: bytes, addr: tuple[str, int], delay: float) -> None:
        threading.Event().wait(delay)
        with suppress(OSError):  # closed meanwhile: the test is over
            udp.sendto(reply, addr)

    def loop() -> None:
        while True:
            for key, _ in selector.select():
                if key.fileobj is stop_r:
                    return
                if key.fileobj is tcp:
                    conn, _addr = tcp.accept()
                    threading.Thread(target=_serve_tcp, args=(server, conn), daemon=True).start()
                    continue
                try:
                    wire, addr = udp.recvfrom(65535)
                except OSError:
                    continue
                reply, delay = server.answer(wire, "udp")
                if reply is None:
                    continue
                if delay:
                    # Later, from another thread: other names keep being answered at once.
                    threading.Thread(
                        target=send_later, args=(reply, addr, delay), daemon=True
                    ).start()
                else:
                    with suppress(OSError):
                        udp.sendto(reply, addr)

    thread = threading.Thread(target=loop, name="test-dns-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop_w.send(b"x")
        thread.join(5)
        selector.close()
        for s in (udp, tcp, stop_r, stop_w):
            s.close()
