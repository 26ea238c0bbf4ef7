"""Direct delivery: a connection to one of a recipient domain's MX hosts.

Hosts are tried in MX preference order and each host's addresses in turn (RFC 5321
§5.1); a host that refuses the session or cannot be reached sends us to the next one.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl

from ..config import Settings
from ..smtp import RelayConfig, Reply, SmtpConnection, SmtpError, SmtpReplyError
from ..webhooks.ssrf import is_public
from .mx import MxError, MxResolver


def _unverified_context() -> ssl.SSLContext:
    # Opportunistic TLS to MX hosts: encryption against passive listeners; certificates
    # are not checked (most MX certificates would not pass), as other MTAs do by default.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class DirectDelivery:
    def __init__(self, settings: Settings, resolver: MxResolver | None = None) -> None:
        self.settings = settings
        self.resolver = resolver or MxResolver.from_settings(settings)
        self.helo = settings.helo_name or socket.getfqdn()
        self._opportunistic = _unverified_context()

    async def open(
        self, domain: str, tls_context: ssl.SSLContext | None = None
    ) -> SmtpConnection | Reply:
        """A connection to ``domain``'s best reachable MX host, or the reply that says why
        there is none (transient: try later; permanent: the domain takes no mail)."""
        try:
            result = await self.resolver.resolve_mx(domain)
        except MxError as exc:
            return exc.reply
        required = self.settings.direct_tls == "required"
        ctx = tls_context if tls_context is not None or required else self._opportunistic
        last: Reply | None = None
        for name, address in result.targets():
            if not self.settings.direct_allow_private and not is_public(
                ipaddress.ip_address(address)
            ):
                # An MX record pointing into our own network is not a way in.
                last = Reply.of(451, f"4.4.4 {name} resolves to a private address {address}")
                continue
            config = RelayConfig(
                host=name,
                address=address,
                port=self.settings.mx_port,
                tls="required" if required else "opportunistic",
                local_hostname=self.helo,
            )
            try:
                return await SmtpConnection.open(config, tls_context=ctx)
            except SmtpReplyError as exc:
                last = exc.reply
            except SmtpError as exc:
                last = Reply.of(451, f"4.4.1 {name} [{address}]: {exc}")
        if last is None:
            return Reply.of(451, f"4.4.4 no address to deliver to for {domain}")
        if last.is_permanent:
            # A refusing host does not make the domain refuse: later hosts or a later try
            # may take it (RFC 5321 §5.1 tries the next host on any failure).
            return Reply.of(451, f"4.4.1 every MX host of {domain} refused: {last.text}")
        return last


__all__ = ["DirectDelivery"]
