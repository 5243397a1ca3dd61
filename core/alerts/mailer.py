"""Alert e-mail through SMTP, when INTEGRATION_SMTP_HOST is configured."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.alerts import service
from core.alerts.models import Alert
from core.clock import resolve
from core.webhooks.config import SmtpConfig

SUBJECTS = {
    "api_key.expiring": "An API key expires soon",
    "api_key.expired": "An API key has expired",
    "webhook.endpoint.failing": "A webhook endpoint is failing",
    "webhook.endpoint.disabled": "A webhook endpoint was disabled",
}


def build_message(smtp: SmtpConfig, alert: Alert, to: list[str]) -> EmailMessage:
    """Return the e-mail for one alert (plain text; never a secret)."""
    msg = EmailMessage()
    msg["From"] = smtp.sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = SUBJECTS.get(alert.kind, "Integration Settings alert")
    msg.set_content(f"{alert.message}\n\nAlert: {alert.kind}\nOrganization: {alert.org_id}\n")
    return msg


def send_pending(engine: Engine, smtp: SmtpConfig, *, timeout: float = 10.0) -> int:
    """E-mail every alert not yet sent (each once, even with several workers); return how many.

    An alert whose e-mail fails stays pending and is tried at the next scan.
    """
    sent = 0
    with Session(engine) as session, session.begin():
        batch = service.pending_emails(session)
        if not batch:
            return 0
        with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout) as conn:
            if smtp.starttls:
                conn.starttls(context=ssl.create_default_context())
            if smtp.user and smtp.password:
                conn.login(smtp.user, smtp.password)
            for alert, to in batch:
                if to:
                    conn.send_message(build_message(smtp, alert, to))
                alert.emailed_at = resolve(None)
                sent += 1
    return sent
