"""Webhook and alert settings, read from the environment.

INTEGRATION_WEBHOOK_ALLOW_HTTP=1        accept plain http:// endpoint URLs (development)
INTEGRATION_WEBHOOK_ALLOW_PRIVATE=1     let deliveries reach loopback/private addresses
INTEGRATION_WEBHOOK_SECRET_KEY          key (≥ 32 chars) encrypting signing secrets at rest
                                        (default: data/webhook_secret_key, 0600)
INTEGRATION_WEBHOOK_RETRY_SCHEDULE      seconds between attempts, e.g. "0,5,300,1800,…"
INTEGRATION_WEBHOOK_CONNECT_TIMEOUT     seconds (default 5)
INTEGRATION_WEBHOOK_TIMEOUT             seconds for a whole attempt (default 15)
INTEGRATION_WEBHOOK_LEASE_SECONDS       a claimed message is retried after this if its
                                        worker vanished (default 60)
INTEGRATION_WEBHOOK_ENDPOINT_CONCURRENCY  in-flight requests per endpoint per worker (16)
INTEGRATION_WEBHOOK_RETENTION_DAYS      attempt history kept (default 30)
INTEGRATION_EMBEDDED_WORKER=0           the console does not start its own dispatcher
INTEGRATION_SMTP_HOST / _PORT / _USER / _PASSWORD / _FROM / _STARTTLS   alert e-mail
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import timedelta

from core.config import Settings, read_or_create_secret
from core.errors import ValidationError

SECRET_KEY_FILE = "webhook_secret_key"  # noqa: S105 (a file name)
# Svix's schedule: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


def _flag(env: dict[str, str], name: str, default: bool = False) -> bool:
    value = env.get(name)
    if value is None or value == "":
        return default
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValidationError(f"{name} must be 1 or 0 (got {value!r})")


def _number(env: dict[str, str], name: str, default: float, lo: float, hi: float) -> float:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ValidationError(f"{name} must be a number (got {value!r})") from None
    if not lo <= number <= hi:
        raise ValidationError(f"{name} must be between {lo:g} and {hi:g}")
    return number


def parse_schedule(text: str) -> tuple[float, ...]:
    """Return the retry schedule from comma-separated seconds; raise ValidationError."""
    try:
        steps = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValidationError("retry schedule must be comma-separated seconds") from None
    if not steps or len(steps) > 20 or any(s < 0 or s > 7 * 86400 for s in steps):
        raise ValidationError("retry schedule must be 1–20 delays of 0–604800 seconds")
    return steps


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 587
    sender: str = "alerts@localhost"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = True


@dataclass(frozen=True)
class WebhookConfig:
    secret_key: bytes = field(repr=False)
    allow_http: bool = False
    allow_private: bool = False
    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    connect_timeout: float = 5.0
    total_timeout: float = 15.0
    max_response_bytes: int = 64 * 1024
    excerpt_chars: int = 1000
    lease_seconds: float = 60.0
    endpoint_concurrency: int = 16
    batch_size: int = 200
    poll_interval: float = 0.05
    retention_days: int = 30
    retry_after_max: float = 6 * 3600
    failing_after: timedelta = timedelta(hours=24)
    disable_after: timedelta = timedelta(days=5)
    rotation_overlap: timedelta = timedelta(hours=24)
    embedded_worker: bool = True
    smtp: SmtpConfig | None = None

    @classmethod
    def from_env(cls, settings: Settings, env: dict[str, str] | None = None) -> WebhookConfig:
        """Return the configuration from `env` (default: the process environment).

        Raise ValidationError naming the variable that holds a bad value.
        """
        env = dict(os.environ if env is None else env)
        raw_key = env.get("INTEGRATION_WEBHOOK_SECRET_KEY")
        if raw_key:
            if len(raw_key) < 32:
                raise ValidationError("INTEGRATION_WEBHOOK_SECRET_KEY must be at least 32 chars")
            key_material = raw_key.encode()
        else:
            key_material = read_or_create_secret(settings.data_dir / SECRET_KEY_FILE)
        schedule = env.get("INTEGRATION_WEBHOOK_RETRY_SCHEDULE")
        smtp = None
        if env.get("INTEGRATION_SMTP_HOST"):
            smtp = SmtpConfig(
                host=env["INTEGRATION_SMTP_HOST"],
                port=int(_number(env, "INTEGRATION_SMTP_PORT", 587, 1, 65535)),
                sender=env.get("INTEGRATION_SMTP_FROM") or "alerts@localhost",
                user=env.get("INTEGRATION_SMTP_USER") or None,
                password=env.get("INTEGRATION_SMTP_PASSWORD") or None,
                starttls=_flag(env, "INTEGRATION_SMTP_STARTTLS", True),
            )
        total_timeout = _number(env, "INTEGRATION_WEBHOOK_TIMEOUT", 15, 0.1, 120)
        lease = _number(env, "INTEGRATION_WEBHOOK_LEASE_SECONDS", 60, 1, 3600)
        if lease <= 2 * total_timeout:
            raise ValidationError(
                "INTEGRATION_WEBHOOK_LEASE_SECONDS must exceed twice INTEGRATION_WEBHOOK_TIMEOUT "
                "(a claimed message may wait for one round of sends), or a slow delivery "
                "would be sent twice"
            )
        return cls(
            secret_key=hashlib.sha256(key_material).digest(),
            allow_http=_flag(env, "INTEGRATION_WEBHOOK_ALLOW_HTTP"),
            allow_private=_flag(env, "INTEGRATION_WEBHOOK_ALLOW_PRIVATE"),
            retry_schedule=parse_schedule(schedule) if schedule else DEFAULT_RETRY_SCHEDULE,
            connect_timeout=_number(env, "INTEGRATION_WEBHOOK_CONNECT_TIMEOUT", 5, 0.1, 60),
            total_timeout=total_timeout,
            lease_seconds=lease,
            endpoint_concurrency=int(
                _number(env, "INTEGRATION_WEBHOOK_ENDPOINT_CONCURRENCY", 16, 1, 1000)
            ),
            retention_days=int(_number(env, "INTEGRATION_WEBHOOK_RETENTION_DAYS", 30, 1, 3650)),
            embedded_worker=_flag(env, "INTEGRATION_EMBEDDED_WORKER", True),
            smtp=smtp,
        )
