"""Egress safety: endpoint URLs are checked when saved and their addresses when connecting.

The dispatcher's resolver (`GuardedResolver`) resolves a host once, drops every address
that is loopback, private, link-local (169.254.169.254 included), multicast, reserved,
unspecified or an IPv4-mapped form of these, and hands aiohttp only the checked
addresses to connect to, so no second lookup can be raced. `allow_private` lifts it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from core.errors import ValidationError

MAX_URL_LENGTH = 2048
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressRefused(OSError):
    """A destination address is not allowed; `reason` says which class it is in."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"refused to connect to {host}: {reason}")
        self.host = host
        self.reason = reason


def refusal_reason(address: str | IPAddress) -> str | None:
    """Return why `address` may not be reached (e.g. "loopback address"), or None if it may."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            inner = refusal_reason(mapped)
            return f"IPv4-mapped {inner}" if inner else None
    checks = (
        (ip.is_unspecified, "unspecified address"),
        (ip.is_loopback, "loopback address"),
        (ip.is_link_local, "link-local address"),
        (ip.is_multicast, "multicast address"),
        (ip.is_reserved, "reserved address"),
        (ip.is_private, "private address"),
        (not ip.is_global, "address that is not globally routable"),
    )
    for hit, reason in checks:
        if hit:
            return reason
    return None


def literal_address(host: str) -> IPAddress | None:
    """Return the IP address if `host` is an IP literal (brackets allowed), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def validate_url(value: object, *, allow_http: bool, allow_private: bool) -> str:
    """Return the endpoint URL trimmed if it is acceptable; raise ValidationError saying why.

    https is required unless `allow_http`; the host must be a name or a public address
    (private literals and ``localhost`` are refused unless `allow_private`).
    """
    if not isinstance(value, str):
        raise ValidationError("URL must be text", field="url")
    url = value.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        raise ValidationError(f"URL must be 1–{MAX_URL_LENGTH} characters", field="url")
    if not url.isprintable() or any(c.isspace() for c in url) or not url.isascii():
        raise ValidationError("URL must be printable ASCII without spaces", field="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"URL is malformed: {exc}", field="url") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme.lower() not in schemes:
        hint = "" if allow_http else " (http needs INTEGRATION_WEBHOOK_ALLOW_HTTP=1)"
        raise ValidationError(f"URL must use {' or '.join(schemes)}{hint}", field="url")
    host = parts.hostname or ""
    if not host or len(host) > 253:
        raise ValidationError("URL must name a host", field="url")
    if parts.username is not None or parts.password is not None:
        raise ValidationError("URL must not carry a user name or password", field="url")
    if port == 0:
        raise ValidationError("URL port must be 1–65535", field="url")
    if parts.fragment:
        raise ValidationError("URL must not have a #fragment", field="url")
    if not allow_private:
        ip = literal_address(host)
        reason = refusal_reason(ip) if ip is not None else None
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            reason = "loopback address"
        if reason:
            raise ValidationError(
                f"URL host is a {reason}; webhooks go to public addresses", field="url"
            )
    return url


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver returning only addresses the egress policy allows."""

    def __init__(self, allow_private: bool = False) -> None:
        self.allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family)
        except socket.gaierror as exc:
            raise OSError(f"cannot resolve {host}: {exc.strerror}") from None
        results: list[ResolveResult] = []
        refused: list[str] = []
        for fam, _, proto, _, sockaddr in infos:
            address = str(sockaddr[0])
            reason = None if self.allow_private else refusal_reason(address.split("%", 1)[0])
            if reason is not None:
                refused.append(f"{address} ({reason})")
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=address,
                    port=int(sockaddr[1]),
                    family=fam,
                    proto=proto,
                    flags=socket.AI_NUMERICHOST,
                )
            )
        if not results:
            reason = "resolves to " + ", ".join(refused) if refused else "no address"
            raise EgressRefused(host, reason)
        return results

    async def close(self) -> None:
        return None


def describe(exc: Any) -> str:
    """Return the refusal text if `exc` (or its cause chain) is an EgressRefused, else ''."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, EgressRefused):
            return str(exc)
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return ""
