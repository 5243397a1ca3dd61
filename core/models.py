"""Every table, imported in one place so Alembic and tests see the whole schema."""

from core.alerts.models import Alert
from core.audit.models import AuditCheckpoint, AuditEvent
from core.keys.models import ApiKey, KeyChange
from core.orgs.models import Invitation, Membership, Organization, PasswordReset, User
from core.sessions.models import (
    ConsoleSession,
    Handoff,
    SetupToken,
    SigninBurst,
    SigninThrottle,
)
from core.webhooks.models import (
    EventPublication,
    EventTypeDef,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
)

__all__ = [
    "Alert",
    "ApiKey",
    "AuditCheckpoint",
    "AuditEvent",
    "ConsoleSession",
    "EventPublication",
    "EventTypeDef",
    "Handoff",
    "Invitation",
    "KeyChange",
    "Membership",
    "Organization",
    "PasswordReset",
    "SetupToken",
    "SigninBurst",
    "SigninThrottle",
    "User",
    "WebhookAttempt",
    "WebhookEndpoint",
    "WebhookMessage",
]
