"""The HTTPS-only setting: refuse requests that did not arrive over HTTPS.

A request is secure when the server itself terminated TLS (ASGI scheme ``https``, WSGI
``wsgi.url_scheme`` ``https``), or when it came from a configured proxy address and that
proxy's ``X-Forwarded-Proto`` says ``https``. The header is ignored from anyone else, so a
client cannot claim HTTPS over plain HTTP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from core.errors import ValidationError

HTTPS_REQUIRED_CODE = "https_required"
HTTPS_REQUIRED_MESSAGE = (
    "API keys must be sent over HTTPS only. Repeat the request with https:// "
    "and treat this key as exposed if it was sent."
)
HTTPS_REQUIRED_STATUS = 403

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class HttpsPolicy:
    """Whether HTTPS is required, and which proxy addresses may say a request was HTTPS."""

    required: bool = False
    trusted_proxies: tuple[Network, ...] = field(default=())

    @classmethod
    def parse(cls, required: bool, proxies: str | Iterable[str] = ()) -> HttpsPolicy:
        """Build a policy from addresses or networks (comma-separated text or a list).

        Raise ValidationError naming the first entry that is not an address or network.
        """
        items = proxies.split(",") if isinstance(proxies, str) else list(proxies)
        nets = []
        for item in items:
            text = item.strip()
            if not text:
                continue
            try:
                nets.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ValidationError(
                    f"trusted proxy {text!r} is not an IP address or network",
                    field="trusted_proxies",
                ) from None
        return cls(required=required, trusted_proxies=tuple(nets))

    def is_trusted_proxy(self, client: str | None) -> bool:
        if not client or not self.trusted_proxies:
            return False
        try:
            addr = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted_proxies)

    def allows(self, scheme: str, client: str | None, forwarded_proto: list[str]) -> bool:
        """Return whether a request may proceed under this policy."""
        if not self.required or scheme in ("https", "wss"):
            return True
        if not forwarded_proto or not self.is_trusted_proxy(client):
            return False
        # The last value is the one our own (trusted) proxy added.
        last = forwarded_proto[-1].split(",")[-1].strip().lower()
        return last == "https"
