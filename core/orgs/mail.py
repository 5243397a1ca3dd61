"""Invitation and password-reset e-mails, sent through SMTP when it is configured."""

from __future__ import annotations

import os
import smtplib
import ssl
from collections.abc import Mapping
from datetime import datetime
from email.message import EmailMessage

from core.errors import ValidationError
from core.webhooks.config import SmtpConfig

CONSOLE_URL_ENV = "INTEGRATION_CONSOLE_URL"


def _send(smtp: SmtpConfig, to: str, subject: str, body: str, *, timeout: float) -> None:
    msg = EmailMessage()
    msg["From"] = smtp.sender
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout) as conn:
        if smtp.starttls:
            conn.starttls(context=ssl.create_default_context())
        if smtp.user and smtp.password:
            conn.login(smtp.user, smtp.password)
        conn.send_message(msg)


def send_invitation(
    smtp: SmtpConfig,
    to: str,
    org_name: str,
    role: str,
    link: str,
    expires_at: datetime,
    *,
    timeout: float = 10.0,
) -> None:
    """E-mail an invitation link (plain text). Raise OSError / smtplib errors on failure."""
    body = (
        f"You are invited to join {org_name} in Integration Settings as {role}.\n\n"
        f"Accept the invitation here (the link works once, until "
        f"{expires_at:%Y-%m-%d %H:%M} UTC):\n\n{link}\n\n"
        "If you did not expect this, ignore this message.\n"
    )
    _send(smtp, to, f"Invitation to join {org_name}", body, timeout=timeout)


def send_reset(
    smtp: SmtpConfig, to: str, link: str, expires_at: datetime, *, timeout: float = 10.0
) -> None:
    """E-mail a password-reset link (plain text). Raise OSError / smtplib errors on failure."""
    body = (
        "A password reset was requested for your Integration Settings account.\n\n"
        f"Choose a new password here (the link works once, until "
        f"{expires_at:%Y-%m-%d %H:%M} UTC):\n\n{link}\n\n"
        "Every session of yours ends when the new password is set.\n"
    )
    _send(smtp, to, "Reset your Integration Settings password", body, timeout=timeout)


def smtp_from_env(env: Mapping[str, str] | None = None) -> SmtpConfig | None:
    """Return the SMTP settings (INTEGRATION_SMTP_*), or None when no host is configured."""
    env = os.environ if env is None else env
    host = (env.get("INTEGRATION_SMTP_HOST") or "").strip()
    if not host:
        return None
    try:
        port = int(env.get("INTEGRATION_SMTP_PORT") or 587)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ValidationError("INTEGRATION_SMTP_PORT must be a port number")
    return SmtpConfig(
        host=host,
        port=port,
        sender=env.get("INTEGRATION_SMTP_FROM") or "alerts@localhost",
        user=env.get("INTEGRATION_SMTP_USER") or None,
        password=env.get("INTEGRATION_SMTP_PASSWORD") or None,
        starttls=(env.get("INTEGRATION_SMTP_STARTTLS") or "1").strip().lower()
        not in ("0", "false", "no", "off"),
    )


def console_url(env: Mapping[str, str] | None = None, fallback: str | None = None) -> str:
    """Return the console's public URL for links (INTEGRATION_CONSOLE_URL), else
    `fallback`, else http://localhost:8501."""
    env = os.environ if env is None else env
    url = (env.get(CONSOLE_URL_ENV) or "").strip() or fallback or "http://localhost:8501"
    return url.rstrip("/")
