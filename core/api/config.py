"""Settings of the HTTP service, read from the environment.

INTEGRATION_SERVICE_TOKEN        bearer token for POST /v1/keys/verify (unset: endpoint off)
INTEGRATION_REQUIRE_HTTPS        1/true: refuse requests that did not arrive over HTTPS
INTEGRATION_TRUSTED_PROXIES      comma-separated addresses/networks whose X-Forwarded-Proto
                                 is believed
INTEGRATION_USAGE_LOG            0/false: do not record usage (default: on)
INTEGRATION_USAGE_FLUSH_SECONDS  flush interval of the usage buffer (default 1)
INTEGRATION_USAGE_BATCH          flush as soon as this many records wait (default 50000)
INTEGRATION_FEED_INTERVAL        key-change feed poll interval in seconds (default 0.25)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from core.auth.https import HttpsPolicy
from core.errors import ValidationError

MIN_TOKEN_LEN = 16
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValidationError(f"{name} must be 1/true/yes or 0/false/no", field=name)


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError(f"{name} must be a number", field=name) from None
    if not low <= value <= high:
        raise ValidationError(f"{name} must be between {low:g} and {high:g}", field=name)
    return value


@dataclass(frozen=True)
class ServiceConfig:
    service_token: str | None = field(default=None, repr=False)
    https: HttpsPolicy = field(default_factory=HttpsPolicy)
    usage_enabled: bool = True
    usage_interval: float = 1.0
    usage_batch: int = 50_000
    feed_interval: float = 0.25

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServiceConfig:
        """Read the service settings; raise ValidationError naming a bad variable."""
        env = os.environ if env is None else env
        token = env.get("INTEGRATION_SERVICE_TOKEN") or None
        if token is not None and len(token) < MIN_TOKEN_LEN:
            raise ValidationError(
                f"INTEGRATION_SERVICE_TOKEN must be at least {MIN_TOKEN_LEN} characters",
                field="INTEGRATION_SERVICE_TOKEN",
            )
        https = HttpsPolicy.parse(
            _flag(env, "INTEGRATION_REQUIRE_HTTPS", False),
            env.get("INTEGRATION_TRUSTED_PROXIES", ""),
        )
        return cls(
            service_token=token,
            https=https,
            usage_enabled=_flag(env, "INTEGRATION_USAGE_LOG", True),
            usage_interval=_number(env, "INTEGRATION_USAGE_FLUSH_SECONDS", 1.0, 0.05, 60),
            usage_batch=int(_number(env, "INTEGRATION_USAGE_BATCH", 50_000, 1, 1_000_000)),
            feed_interval=_number(env, "INTEGRATION_FEED_INTERVAL", 0.25, 0.01, 1.0),
        )
