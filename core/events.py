"""The one catalog of event names, shared by the audit log and webhooks.

Names are `noun.verb` (or `noun.sub.verb`), never sentences, so DuckDB can GROUP BY them.
`WEBHOOK_EVENTS` is the subset an endpoint may subscribe to; the platform registers its
own domain event types in the database catalog (`core.webhooks.catalog`).
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

_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){1,3}")
MAX_EVENT_NAME = 64
# The first words of the product's own events: a platform type cannot pose as one of them.
RESERVED_PREFIXES = frozenset(str(e).split(".", 1)[0] for e in EventType)


def check_event_name(name: object) -> str:
    """Return `name` if it can name a platform event type (e.g. ``invoice.paid``).

    Raise ValidationError if it is malformed or in the product's own namespaces
    (``api_key.``, ``member.``, ``webhook.``, …).
    """
    if not isinstance(name, str) or len(name) > MAX_EVENT_NAME or not _EVENT_NAME.fullmatch(name):
        raise ValidationError(
            f"event type {str(name)[:80]!r} must be 2-4 dot-separated lowercase words of "
            f"letters, digits and '_' (at most {MAX_EVENT_NAME} characters), e.g. 'invoice.paid'",
            field="type",
        )
    if name.split(".", 1)[0] in RESERVED_PREFIXES:
        raise ValidationError(
            f"event type {name!r} is in the product's own namespace "
            f"({', '.join(sorted(p + '.*' for p in RESERVED_PREFIXES))})",
            field="type",
        )
    return name
