"""Webhooks: endpoints, signing, the outbox, the dispatcher and the egress guard.

The platform publishes its own domain events with `emit` after registering their type
with `core.events.register_event_type`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core import outbox
from core.clock import resolve
from core.config import Settings
from core.errors import ValidationError
from core.events import subscribable_events
from core.webhooks.config import WebhookConfig
from core.webhooks.dispatcher import Dispatcher, EmbeddedWorker, deliver_due
from core.webhooks.monitor import (
    AttemptView,
    EndpointStats,
    deliver_test,
    endpoint_stats,
    list_attempts,
    prune,
    queue_test,
    recover,
    replay,
    send_test,
)
from core.webhooks.service import (
    EndpointView,
    create_endpoint,
    delete_endpoint,
    get_endpoint,
    list_endpoints,
    rotate_secret,
    update_endpoint,
)


def start_embedded_worker(engine: Engine, settings: Settings) -> EmbeddedWorker | None:
    """Start the in-process dispatcher and alert scanner the console runs by default.

    Return the running worker (call `.stop()` at shutdown), or None when
    INTEGRATION_EMBEDDED_WORKER=0 says a separate `python -m core worker` does the job.
    """
    config = WebhookConfig.from_env(settings)
    if not config.embedded_worker:
        return None
    return EmbeddedWorker(engine, config).start()


def emit(
    session: Session,
    org_id: str,
    event_type: str,
    data: dict[str, Any],
    *,
    now: datetime | None = None,
) -> list[str]:
    """Publish a platform event in the caller's transaction; return the message ids written.

    Raise ValidationError for an unregistered type, data that is not JSON, too large
    (64 KiB), or that carries a field named like a secret.
    """
    if event_type not in subscribable_events():
        raise ValidationError(
            f"event type {event_type!r} is not registered: call register_event_type first",
            field="type",
        )
    if not isinstance(data, dict):
        raise ValidationError("event data must be a JSON object", field="data")
    return outbox.publish(session, org_id, event_type, data, now=resolve(now))


__all__ = [
    "AttemptView",
    "Dispatcher",
    "EmbeddedWorker",
    "EndpointStats",
    "EndpointView",
    "WebhookConfig",
    "create_endpoint",
    "delete_endpoint",
    "deliver_due",
    "deliver_test",
    "emit",
    "endpoint_stats",
    "get_endpoint",
    "list_attempts",
    "list_endpoints",
    "prune",
    "queue_test",
    "recover",
    "replay",
    "rotate_secret",
    "send_test",
    "start_embedded_worker",
    "update_endpoint",
]
