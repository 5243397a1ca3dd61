"""Integration Settings core: API keys, webhooks, request authentication, audit.

The public surface is re-exported here; pages, notebooks and the CLI use these names
(or the domain service modules: `core.keys.service`, `core.orgs.service`, …).
"""

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
from core.events import EventType, register_event_type, subscribable_events
from core.orgs.models import Role
from core.orgs.permissions import Actor, Permission, can

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
    "register_event_type",
    "session_factory",
    "subscribable_events",
]
