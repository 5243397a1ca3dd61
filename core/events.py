"""The one catalog of event names, shared by the audit log and webhooks.

Names are `noun.verb` (or `noun.sub.verb`), never sentences, so DuckDB can GROUP BY them.
`WEBHOOK_EVENTS` is the subset an endpoint may subscribe to; the platform adds its own
domain events with `register_event_type`.
"""

from __future__ import annotations

import re
from enum import StrEnum

from core.errors import ValidationError


class EventType(StrEnum):
    ORG_CREATED = "org.created"
    SETTINGS_CHANGED = "settings.changed"
    API_KEY_CREATED = "api_key.created"
    API_KEY_ROLLED = "api_key.rolled"
    API_KEY_REVOKED = "api_key.revoked"
    API_KEY_EXPIRING = "api_key.expiring"
    API_KEY_EXPIRED = "api_key.expired"
    MEMBER_ADDED = "member.added"
    MEMBER_REMOVED = "member.removed"
    MEMBER_ROLE_CHANGED = "member.role_changed"
    MEMBER_INVITED = "member.invited"
    MEMBER_INVITATION_RESENT = "member.invitation_resent"
    MEMBER_INVITATION_REVOKED = "member.invitation_revoked"
    SIGNIN_SUCCEEDED = "auth.signin_succeeded"
    SIGNIN_FAILED = "auth.signin_failed"
    SIGNED_OUT = "auth.signed_out"
    SIGNED_OUT_EVERYWHERE = "auth.signed_out_everywhere"
    PASSWORD_CHANGED = "account.password_changed"  # noqa: S105
    PASSWORD_RESET_ISSUED = "account.password_reset_issued"  # noqa: S105
    PASSWORD_RESET = "account.password_reset"  # noqa: S105
    PASSWORD_SET = "account.password_set"  # noqa: S105
    ACCOUNT_DISABLED = "account.disabled"
    ACCOUNT_ENABLED = "account.enabled"
    WEBHOOK_ENDPOINT_CREATED = "webhook.endpoint.created"
    WEBHOOK_ENDPOINT_UPDATED = "webhook.endpoint.updated"
    WEBHOOK_ENDPOINT_DELETED = "webhook.endpoint.deleted"
    WEBHOOK_SECRET_ROTATED = "webhook.endpoint.secret_rotated"  # noqa: S105
    WEBHOOK_ENDPOINT_FAILING = "webhook.endpoint.failing"
    WEBHOOK_ENDPOINT_DISABLED = "webhook.endpoint.disabled"
    WEBHOOK_TEST = "webhook.test"
    WEBHOOK_MESSAGE_REPLAYED = "webhook.message.replayed"
    AUDIT_EXPORTED = "audit.exported"
    AUDIT_CHAIN_UPGRADED = "audit.chain_upgraded"
    AUDIT_KEY_CHANGED = "audit.key_changed"


# The built-in events a webhook endpoint can subscribe to.
WEBHOOK_EVENTS: tuple[str, ...] = (
    EventType.API_KEY_CREATED,
    EventType.API_KEY_ROLLED,
    EventType.API_KEY_REVOKED,
    EventType.API_KEY_EXPIRING,
    EventType.API_KEY_EXPIRED,
    EventType.MEMBER_ADDED,
    EventType.MEMBER_REMOVED,
    EventType.MEMBER_ROLE_CHANGED,
    EventType.WEBHOOK_ENDPOINT_FAILING,
    EventType.WEBHOOK_ENDPOINT_DISABLED,
    EventType.WEBHOOK_TEST,
)

_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){1,3}$")
_platform_events: dict[str, str] = {}


def register_event_type(name: str, description: str = "") -> str:
    """Register a platform event type (e.g. ``invoice.paid``) endpoints may subscribe to.

    Return the name. Raise ValidationError if it is malformed or clashes with a built-in.
    """
    if not _EVENT_NAME.match(name) or len(name) > 64:
        raise ValidationError(
            f"event type {name!r} must be dot-separated lowercase words, e.g. 'invoice.paid'"
        )
    if name in EventType._value2member_map_:
        raise ValidationError(f"event type {name!r} is built in")
    _platform_events[name] = description
    return name


def subscribable_events() -> list[str]:
    """Return every event type an endpoint may subscribe to: built-ins, then the platform's."""
    return [str(e) for e in WEBHOOK_EVENTS] + sorted(_platform_events)
