"""The seam between the changes `core` makes and the webhook outbox.

`publish` is called in the transaction of the change that caused the event. Until the
webhooks package installs its writer, events are not queued (the audit log still has
every change).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

Writer = Callable[[Session, str, str, dict[str, Any], datetime], None]
_writer: Writer | None = None


def install(writer: Writer | None) -> None:
    """Set the function that writes events to the outbox (the webhooks package's)."""
    global _writer
    _writer = writer


def publish(
    session: Session, org_id: str, event_type: str, data: dict[str, Any], *, now: datetime
) -> None:
    """Queue `event_type` with `data` for the organization's subscribed endpoints."""
    if _writer is not None:
        _writer(session, org_id, str(event_type), data, now)
