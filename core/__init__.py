"""Integration Settings core: API keys, webhooks, request authentication, audit.

The public surface is re-exported here; pages, notebooks and the CLI use these names
(or the domain service modules: `core.keys.service`, `core.orgs.service`, …).
"""

from typing import Any

from core.auth.contract import Code, Verdict
from core.auth.verifier import Verifier
from core.config import Settings
from core.db import connect, migrate, session_factory
from core.errors import (
    AuthenticationFailed,
    Conflict,
    CoreError,
    NotFound,
    PermissionDenied,
    RateLimited,
    StorageError,
    ValidationError,
)
from core.events import EventType
from core.orgs.models import Role
from core.orgs.permissions import Actor, Permission, can

# The event catalog lives with the webhooks (`core.webhooks.catalog`), whose import pulls in
# the HTTP client: loaded on first use, so `import core` stays light.
_LAZY = {"publish_event", "register_event_type", "subscribable_events"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from core.webhooks import catalog

        return getattr(catalog, name)
    raise AttributeError(f"module 'core' has no attribute {name!r}")


__all__ = [
    "Actor",
    "AuthenticationFailed",
    "Code",
    "Conflict",
    "CoreError",
    "EventType",
    "NotFound",
    "Permission",
    "PermissionDenied",
    "RateLimited",
    "Role",
    "Settings",
    "StorageError",
    "ValidationError",
    "Verdict",
    "Verifier",
    "can",
    "connect",
    "migrate",
    "publish_event",
    "register_event_type",
    "session_factory",
    "subscribable_events",
]
