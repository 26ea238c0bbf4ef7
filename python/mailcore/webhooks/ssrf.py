"""Where a webhook may connect: public addresses only, unless private targets are allowed
(local development, tests). Checked when the endpoint is saved and again on every
connection, against the address actually connected to (so DNS rebinding cannot sneak a
private address in after the check)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import anyio

from ..errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(Exception):
    """The webhook's target is not allowed; no connection was made."""


def check_url(url: str) -> tuple[str, str, int]:
    """Syntax: http(s), a host, no credentials. Returns (scheme, host, port)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("a webhook URL is http:// or https:// with a host", field="url")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValidationError("a webhook URL cannot carry credentials", field="url")
    if len(url) > 2000 or any(c in url for c in "\r\n\t "):
        raise ValidationError("the webhook URL is not valid", field="url")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValidationError("the webhook URL's port is not valid", field="url") from exc
    return parts.scheme, parts.hostname, port


def is_public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return is_public(ip.ipv4_mapped)
    if isinstance(ip, ipaddress.IPv6Address) and ip.sixtofour is not None:
        return is_public(ip.sixtofour)
    return ip.is_global and not ip.is_multicast


def literal_ip(host: str) -> IPAddress | None:
    """An IP written in the URL, in any of the forms resolvers accept (decimal, octal,
    hex, short dotted), normalised by ``inet_aton`` as the resolver would."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


async def resolve(host: str, port: int, allow_private: bool) -> list[str]:
    """The addresses to connect to, all of them allowed, or TargetRefused."""
    ip = literal_ip(host)
    if ip is not None:
        addresses = [str(ip)]
    else:
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise TargetRefused(f"cannot resolve {host}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        for address in addresses:
            if not is_public(ipaddress.ip_address(address.split("%")[0])):
                raise TargetRefused(f"{host} resolves to a private or reserved address")
    if not addresses:
        raise TargetRefused(f"{host} has no address")
    return addresses
