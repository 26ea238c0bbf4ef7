"""Direct delivery's DNS side: which hosts take mail for a domain, in which order.

    resolver = MxResolver.from_settings(settings)      # built once, shared by all tasks
    try:
        result = await resolver.resolve_mx("bücher.example")
    except MxError as exc:                              # exc.reply: Reply(556, "5.1.10 …")
        ...  # exc.is_transient: defer the domain's recipients; else bounce them
    for host in result.hosts:                           # preference order, ties shuffled
        for address in host.addresses:                  # IPv4 first, then IPv6
            ...  # connect to (address, settings.mx_port)

The rules (RFC 5321 §5.1, RFC 7505 null MX, RFC 6531/5890 for internationalised names):

- MX records are sorted by preference; hosts of equal preference are shuffled on every
  call (RFC 5321: "MUST randomize them to spread the load"); each host comes with its
  A and AAAA addresses.
- No MX records (NOERROR, no data): the implicit MX, the domain itself.
- A null MX (the only MX is ``0 .``): permanent, 556 5.1.10.
- NXDOMAIN: permanent, 550 5.1.2. A domain with neither MX nor address records: permanent,
  550 5.1.2 as well (RFC 5321: the implicit MX is unusable).
- SERVFAIL, REFUSED, timeouts: transient, 451 4.4.3, so the dispatcher defers.
- MX hosts that are IP literals or have no addresses are skipped; none left: transient,
  451 4.4.4.
- Unicode domains are looked up by their A-labels (UTS #46, IDNA 2008); a domain that is
  not a valid host name: permanent, 553 5.1.3.

Answers are cached for min(TTL, ``max_cache_seconds``) (the smallest TTL of every record
used: the MX set, each host's addresses, negative answers); transient failures for
``transient_cache_seconds``, so a broken domain is not asked again for each recipient.
Concurrent lookups of one domain share a single query.

dnspython's async resolver runs on both of anyio's backends, but picks its I/O library
once per process (``dns.asyncbackend.get_default_backend`` remembers the first one it
sniffed): a process that ran Trio first then fails on asyncio. Each query here names the
backend of the running loop explicitly instead.
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

import anyio
import dns.asyncbackend
import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import idna
import sniffio

from ..config import parse_nameserver
from ..smtp.reply import Reply

if TYPE_CHECKING:
    from dns.rdtypes.ANY.MX import MX
    from dns.rdtypes.IN.A import A
    from dns.rdtypes.IN.AAAA import AAAA

    from ..config import Settings


class MxFailure(enum.StrEnum):
    """Why a domain has no usable mail host. The value is a stable machine-readable tag."""

    NULL_MX = "null-mx"  # RFC 7505: the domain says it takes no mail
    NXDOMAIN = "nxdomain"  # the domain does not exist
    NO_MAIL_HOSTS = "no-mail-hosts"  # exists, but no MX and no A/AAAA
    BAD_DOMAIN = "bad-domain"  # not a valid host name (or an address literal)
    DNS_FAILURE = "dns-failure"  # SERVFAIL, REFUSED, no name server answered
    TIMEOUT = "timeout"  # no answer within the lookup's lifetime
    NO_USABLE_HOSTS = "no-usable-hosts"  # MX hosts, none with an address


# The reply code and RFC 3463 enhanced code each failure is reported with, as if an SMTP
# server had said it: the dispatcher records one reply per recipient either way.
_REPLIES: dict[MxFailure, tuple[int, str]] = {
    MxFailure.NULL_MX: (556, "5.1.10"),  # RFC 7505 §4.2 / RFC 7504
    MxFailure.NXDOMAIN: (550, "5.1.2"),  # bad destination system address
    MxFailure.NO_MAIL_HOSTS: (550, "5.1.2"),
    MxFailure.BAD_DOMAIN: (553, "5.1.3"),  # bad destination address syntax
    MxFailure.DNS_FAILURE: (451, "4.4.3"),  # directory server failure
    MxFailure.TIMEOUT: (451, "4.4.3"),
    MxFailure.NO_USABLE_HOSTS: (451, "4.4.4"),  # unable to route
}


class MxError(Exception):
    """The domain cannot be delivered to now (transient) or ever (permanent).

    ``reply`` is the equivalent SMTP reply (code, enhanced code, text) to record for each
    recipient of the domain.
    """

    def __init__(self, domain: str, failure: MxFailure, detail: str) -> None:
        code, enhanced = _REPLIES[failure]
        self.domain = domain
        self.failure = failure
        self.reply = Reply(code, (f"{enhanced} {detail}",))
        super().__init__(str(self.reply))

    @property
    def is_transient(self) -> bool:
        return self.reply.is_transient

    @property
    def is_permanent(self) -> bool:
        return self.reply.is_permanent

    @property
    def code(self) -> int:
        return self.reply.code

    @property
    def enhanced(self) -> tuple[int, int, int]:
        enhanced = self.reply.enhanced
        assert enhanced is not None  # every _REPLIES text starts with one
        return enhanced

    @property
    def text(self) -> str:
        return self.reply.text


@dataclass(frozen=True, slots=True)
class MxHost:
    """A mail exchanger: its name (A-label form, no trailing dot), its MX preference (0
    for the implicit MX) and its addresses, IPv4 then IPv6, in the order DNS gave them."""

    name: str
    preference: int
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MxResult:
    """Where mail for ``domain`` (A-label form) goes: ``hosts`` in the order to try.

    ``implicit``: the domain has no MX records; its one host is the domain itself."""

    domain: str
    hosts: tuple[MxHost, ...]
    implicit: bool = False

    def targets(self) -> tuple[tuple[str, str], ...]:
        """Every ``(host name, address)`` in the order to try them."""
        return tuple((host.name, address) for host in self.hosts for address in host.addresses)


# -- domain names -------------------------------------------------------------------------

_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


def to_a_label(domain: str) -> str:
    """``domain`` as the ASCII name to look up: lower case, A-labels for Unicode labels
    (UTS #46 mapping, IDNA 2008), no trailing dot. Raises :class:`MxError`
    (``BAD_DOMAIN``, permanent) when it is not a valid host name.

    ASCII labels are only checked for letters, digits and hyphens, not run through IDNA:
    IDNA 2008 refuses names that exist and take mail (``r3---sn-x.example`` has hyphens
    in the 3rd and 4th positions; ``xn--ls8h.la`` is an IDNA 2003 emoji name).
    """
    text = domain[:-1] if domain.endswith(".") else domain
    try:
        if text.isascii():
            text = text.lower()
        else:
            # The mapping folds case, full-width letters and ideographic full stops.
            text = idna.uts46_remap(text, std3_rules=True, transitional=False)
            text = text[:-1] if text.endswith(".") else text
        labels = [
            label if label.isascii() else idna.alabel(label).decode("ascii")
            for label in text.split(".")
        ]
    except ValueError as exc:  # idna.IDNAError is a UnicodeError, a ValueError
        reason = _quote(str(exc))[1:-1]  # idna's message quotes the label as given
        raise MxError(
            domain, MxFailure.BAD_DOMAIN, f"bad domain {_quote(domain)}: {reason}"
        ) from None
    name = ".".join(labels)
    if not all(_LDH_LABEL.match(label) for label in labels) or len(name) > 253:
        raise MxError(domain, MxFailure.BAD_DOMAIN, f"bad domain {_quote(domain)}")
    if _is_ip_literal(name):
        # "user@1.2.3.4" is not an address literal ("[1.2.3.4]" is); neither is looked up.
        raise MxError(
            domain, MxFailure.BAD_DOMAIN, f"{_quote(domain)} is an IP address, not a domain"
        )
    return name


def _quote(text: str) -> str:
    # The text goes into an SMTP-style reply and a bounce: ASCII, no CR/LF, bounded.
    quoted = ascii(text)
    return quoted if len(quoted) <= 100 else quoted[:97] + "..."


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def _deliverable(address: str) -> bool:
    # 0.0.0.0 and :: connect to the local host on Linux; multicast is never a mail host.
    # Policy on private ranges (an MX pointing at 10.0.0.1) is the caller's to decide.
    ip = ipaddress.ip_address(address)
    return not (ip.is_unspecified or ip.is_multicast or address == "255.255.255.255")


# -- the resolver -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Lookup:
    """One query's outcome: ``ok`` (records), ``nodata``, ``nxdomain`` or ``error``."""

    status: str
    records: tuple[object, ...] = ()
    ttl: float = 0.0
    detail: str = ""
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class _Addresses:
    """A host's addresses; ``error`` when a lookup failed (the list may be partial)."""

    addresses: tuple[str, ...]
    ttl: float
    error: str = ""
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class _Entry:
    """A cached outcome: a result, or a failure to raise again."""

    expires: float
    result: MxResult | None = None
    failure: MxFailure | None = None
    detail: str = ""


class _Pending:
    """A lookup in progress that other callers for the same domain wait for."""

    __slots__ = ("done", "entry")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.entry: _Entry | None = None  # stays None when the looking task was cancelled


_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)


class MxResolver:
    """Resolves domains to mail hosts; build one and share it (it holds the cache).

    ``nameservers``: ``"IP"``, ``"IP:port"`` or ``"[IPv6]:port"`` entries (``port`` is
    the default port; a bad entry raises :class:`~mailcore.errors.ValidationError`);
    empty: the system's configuration (/etc/resolv.conf; dnspython raises
    ``NoResolverConfiguration`` when there is none). ``timeout`` bounds each name's
    lookup, every retry included: a domain takes at most twice that (its MX, then its
    hosts' addresses, all at once). ``clock`` (monotonic seconds) and ``rng`` are
    injectable for tests. ``max_hosts`` bounds the MX hosts resolved per domain: a
    domain could list hundreds.
    """

    def __init__(
        self,
        *,
        nameservers: Sequence[str] = (),
        port: int = 53,
        timeout: float = 5.0,
        max_cache_seconds: float = 3600.0,
        transient_cache_seconds: float = 30.0,
        max_cache_entries: int = 10_000,
        max_hosts: int = 10,
        ipv6: bool = True,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(*parse_nameserver(entry, port))
                for entry in nameservers
            ]
        else:
            resolver = dns.asyncresolver.Resolver()  # /etc/resolv.conf
            resolver.port = port
        resolver.lifetime = timeout
        # Per attempt: a lost UDP packet is retried well before the lifetime runs out.
        resolver.timeout = min(timeout, 2.0)
        # 1232 bytes (DNS flag day 2020): large MX sets fit in UDP without fragmentation.
        resolver.use_edns(0, 0, 1232)
        self._resolver = resolver
        self.max_cache_seconds = max_cache_seconds
        self.transient_cache_seconds = transient_cache_seconds
        self.max_cache_entries = max_cache_entries
        self.max_hosts = max_hosts
        self.ipv6 = ipv6
        self._clock = clock
        self._rng = rng or random.Random()
        self._cache: dict[str, _Entry] = {}
        self._pending: dict[str, _Pending] = {}

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> MxResolver:
        """The resolver the settings describe (``dns_nameservers``, ``dns_timeout_seconds``);
        ``kwargs`` override the other constructor arguments."""
        return cls(
            nameservers=settings.dns_nameservers,
            timeout=settings.dns_timeout_seconds,
            **kwargs,
        )

    def clear_cache(self) -> None:
        self._cache.clear()

    async def resolve_mx(self, domain: str) -> MxResult:
        """The hosts that take mail for ``domain``, in the order to try them.

        Raises :class:`MxError`: permanent (bounce) or transient (defer)."""
        name = to_a_label(domain)
        while True:
            entry = self._cache.get(name)
            if entry is not None and entry.expires > self._clock():
                return self._outcome(name, entry)
            pending = self._pending.get(name)
            if pending is None:
                break
            await pending.done.wait()
            if pending.entry is not None:
                return self._outcome(name, pending.entry)
            # The task that was looking was cancelled: look again (maybe as the leader).
        pending = self._pending[name] = _Pending()
        try:
            entry = await self._lookup(name)
            pending.entry = entry
            self._store(name, entry)
        finally:
            del self._pending[name]
            pending.done.set()
        return self._outcome(name, entry)

    # -- cache --------------------------------------------------------------------------

    def _store(self, name: str, entry: _Entry) -> None:
        if entry.expires <= self._clock():
            return
        self._cache.pop(name, None)  # re-inserted last: the dict's order is the age order
        if len(self._cache) >= self.max_cache_entries:
            now = self._clock()
            for key in [k for k, e in self._cache.items() if e.expires <= now]:
                del self._cache[key]
            while len(self._cache) >= self.max_cache_entries:
                del self._cache[next(iter(self._cache))]
        self._cache[name] = entry

    def _outcome(self, name: str, entry: _Entry) -> MxResult:
        if entry.result is None:
            assert entry.failure is not None
            raise MxError(name, entry.failure, entry.detail)
        return self._shuffle_ties(entry.result)

    def _shuffle_ties(self, result: MxResult) -> MxResult:
        hosts: list[MxHost] = []
        for _, group in itertools.groupby(result.hosts, key=lambda h: h.preference):
            tied = list(group)
            self._rng.shuffle(tied)
            hosts.extend(tied)
        return replace(result, hosts=tuple(hosts)) if len(hosts) > 1 else result

    def _expires(self, ttl: float, *, partial: bool = False) -> float:
        bound = self.transient_cache_seconds if partial else self.max_cache_seconds
        return self._clock() + max(0.0, min(ttl, bound))

    def _failed(self, failure: MxFailure, detail: str, ttl: float | None = None) -> _Entry:
        """A failure to remember: a permanent one as long as its DNS answer (``ttl``), a
        transient one briefly (the next recipients of the domain are deferred without a
        query; the retry after backoff asks again)."""
        if ttl is None or _REPLIES[failure][0] < 500:
            expires = self._clock() + self.transient_cache_seconds
        else:
            expires = self._expires(ttl)
        return _Entry(expires, failure=failure, detail=detail)

    # -- lookups ------------------------------------------------------------------------

    async def _lookup(self, name: str) -> _Entry:
        qname = dns.name.from_text(name, origin=dns.name.root)
        mx = await self._query(qname, dns.rdatatype.MX)
        if mx.status == "nxdomain":
            return self._failed(MxFailure.NXDOMAIN, f"domain {name} does not exist", mx.ttl)
        if mx.status == "error":
            return self._transient(name, f"MX lookup for {name}", mx.detail, mx.timed_out)
        if mx.status == "nodata":
            return await self._implicit(name, qname, mx.ttl)

        records = cast("tuple[MX, ...]", mx.records)
        preferences: dict[str, int] = {}
        literals: list[str] = []
        for record in records:
            if record.exchange == dns.name.root:
                continue  # the null MX target: never a host
            host = record.exchange.to_text(omit_final_dot=True).lower()
            if _is_ip_literal(host):
                literals.append(host)  # RFC 5321 §5.1: MX names a host, not an address
                continue
            preferences[host] = min(record.preference, preferences.get(host, record.preference))
        if not preferences:
            if not literals:
                return self._failed(
                    MxFailure.NULL_MX,
                    f"recipient domain {name} has null MX: it does not accept mail",
                    mx.ttl,
                )
            return self._failed(
                MxFailure.NO_USABLE_HOSTS,
                f"MX of {name} names IP addresses, not hosts: {', '.join(literals[:3])}",
            )

        # Shuffled, then sorted (stable): which tied hosts fall past max_hosts is random.
        # Sorted by name first: servers rotate record order, and a seeded rng should give
        # the same choice for the same records.
        candidates = sorted(preferences.items())
        self._rng.shuffle(candidates)
        candidates.sort(key=lambda item: item[1])
        candidates = candidates[: self.max_hosts]
        found: list[_Addresses | None] = [None] * len(candidates)

        async def resolve_host(i: int, host: str) -> None:
            found[i] = await self._addresses(dns.name.from_text(host, origin=dns.name.root))

        async with anyio.create_task_group() as tg:
            for i, (host, _) in enumerate(candidates):
                tg.start_soon(resolve_host, i, host)

        hosts: list[MxHost] = []
        ttl = mx.ttl
        problems: list[str] = []
        partial = timed_out = False  # partial: some host's lookup failed
        for (host, preference), addresses in zip(candidates, found, strict=True):
            assert addresses is not None
            ttl = min(ttl, addresses.ttl)
            if addresses.error:
                partial = True
                timed_out = timed_out or addresses.timed_out
                problems.append(f"{host}: {addresses.error}")
            if addresses.addresses:
                hosts.append(MxHost(host, preference, addresses.addresses))
            elif not addresses.error:
                problems.append(f"{host}: no address")
        if not hosts:
            # 4.4.3 when lookups failed (they may work next time), 4.4.4 when every host
            # answered with no address; both transient (RFC 5321 §5.1 only says "error").
            failure = MxFailure.NO_USABLE_HOSTS
            if partial:
                failure = MxFailure.TIMEOUT if timed_out else MxFailure.DNS_FAILURE
            return self._failed(
                failure, f"no MX host of {name} has an address ({'; '.join(problems[:3])})"
            )
        # A host whose lookup failed may have answered next time: keep that short.
        return _Entry(self._expires(ttl, partial=partial), result=MxResult(name, tuple(hosts)))

    async def _implicit(self, name: str, qname: dns.name.Name, mx_ttl: float) -> _Entry:
        """RFC 5321 §5.1: no MX records, the domain itself is the mail host."""
        found = await self._addresses(qname)
        ttl = min(mx_ttl, found.ttl)
        if found.addresses:
            host = MxHost(name, 0, found.addresses)
            return _Entry(
                self._expires(ttl, partial=bool(found.error)),
                result=MxResult(name, (host,), implicit=True),
            )
        if found.error:
            return self._transient(name, f"address lookup for {name}", found.error, found.timed_out)
        return self._failed(
            MxFailure.NO_MAIL_HOSTS, f"domain {name} has no MX and no address records", ttl
        )

    def _transient(self, name: str, what: str, detail: str, timed_out: bool) -> _Entry:
        if timed_out:
            return self._failed(MxFailure.TIMEOUT, f"{what} timed out")
        return self._failed(MxFailure.DNS_FAILURE, f"{what} failed: {detail}")

    async def _addresses(self, qname: dns.name.Name) -> _Addresses:
        """A and AAAA of one host, asked at the same time."""
        types = _ADDRESS_TYPES if self.ipv6 else _ADDRESS_TYPES[:1]
        lookups: list[_Lookup | None] = [None] * len(types)

        async def ask(i: int, rdtype: dns.rdatatype.RdataType) -> None:
            lookups[i] = await self._query(qname, rdtype)

        async with anyio.create_task_group() as tg:
            for i, rdtype in enumerate(types):
                tg.start_soon(ask, i, rdtype)

        addresses: list[str] = []
        ttl = float("inf")
        errors: list[str] = []
        timed_out = False
        for lookup in lookups:
            assert lookup is not None
            if lookup.status == "error":
                errors.append(lookup.detail)
                timed_out = timed_out or lookup.timed_out
                continue
            ttl = min(ttl, lookup.ttl)
            for record in lookup.records:
                address = str(cast("A | AAAA", record).address)
                if _deliverable(address) and address not in addresses:
                    addresses.append(address)
        if ttl == float("inf"):
            ttl = 0.0
        return _Addresses(tuple(addresses), ttl, "; ".join(errors), timed_out)

    async def _query(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> _Lookup:
        backend = dns.asyncbackend.get_backend(sniffio.current_async_library())
        try:
            answer = await self._resolver.resolve(
                qname, rdtype, raise_on_no_answer=False, search=False, backend=backend
            )
        except dns.resolver.NXDOMAIN as exc:
            return _Lookup("nxdomain", ttl=_negative_ttl(exc, qname))
        except dns.exception.Timeout:
            return _Lookup("error", detail="timed out", timed_out=True)
        except dns.resolver.NoNameservers:
            return _Lookup("error", detail="no name server answered (SERVFAIL or refused)")
        except dns.exception.DNSException as exc:
            return _Lookup("error", detail=type(exc).__name__)
        ttl = float(answer.chaining_result.minimum_ttl)
        if answer.rrset is None:
            return _Lookup("nodata", ttl=ttl)
        return _Lookup("ok", tuple(answer.rrset), ttl)


def _negative_ttl(exc: dns.resolver.NXDOMAIN, qname: dns.name.Name) -> float:
    """RFC 2308: how long an NXDOMAIN may be remembered (from the SOA in the answer)."""
    try:
        # exc.response() is untyped; its kwargs hold the same map of responses.
        response = exc.kwargs["responses"][qname]
        if isinstance(response, dns.message.QueryMessage):
            return float(response.resolve_chaining().minimum_ttl)
    except (KeyError, TypeError, dns.exception.DNSException):
        pass
    return 60.0


__all__ = ["MxError", "MxFailure", "MxHost", "MxResolver", "MxResult", "to_a_label"]
