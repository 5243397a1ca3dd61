"""Every table, imported in one place so Alembic and tests see the whole schema."""

from core.alerts.models import Alert
from core.audit.models import AuditEvent
from core.keys.models import ApiKey, KeyChange
from core.orgs.models import Membership, Organization, User
from core.sessions.models import ConsoleSession
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
    "AuditEvent",
    "ConsoleSession",
    "EventPublication",
    "EventTypeDef",
    "KeyChange",
    "Membership",
    "Organization",
    "User",
    "WebhookAttempt",
    "WebhookEndpoint",
    "WebhookMessage",
]
