"""The catalog of the platform's own event types, and publishing them.

The platform registers each of its domain event types once (``invoice.paid``), with a
description and optionally a JSON Schema its `data` must match; endpoints subscribe to
them beside the product's built-in events. `publish_event` (``emit`` in Python,
``POST /v1/events`` over HTTP) checks the type and the data, then writes the messages to
the outbox in the caller's transaction. With an idempotency key, the same key within
24 hours publishes once: the unique (organization, key) row is claimed with an
``INSERT … ON CONFLICT DO NOTHING``, so two concurrent requests cannot both publish.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core import outbox, validation
from core.clock import iso, resolve
from core.errors import (
    IdempotencyConflict,
    InvalidEventData,
    UnknownEventType,
    UnknownOrganization,
    ValidationError,
)
from core.events import WEBHOOK_EVENTS, EventType, check_event_name
from core.ids import new_id
from core.orgs.models import Organization
from core.webhooks.models import EventPublication, EventTypeDef

IDEMPOTENCY_WINDOW = timedelta(hours=24)
MAX_IDEMPOTENCY_KEY = 255
MAX_SCHEMA_BYTES = 64 * 1024
MAX_DATA_DEPTH = 32
# Keywords that make a schema fetch or resolve another document; refused at registration
# so validating an event never reaches the network and never meets an unresolvable ref.
_UNSUPPORTED_KEYWORDS = ("$id", "$anchor", "$dynamicRef", "$dynamicAnchor", "$recursiveRef")
_VALIDATORS_MAX = 256
_validators: dict[str, Any] = {}  # the schema's canonical JSON -> its compiled validator


@dataclass(frozen=True)
class EventTypeView:
    name: str
    description: str
    schema: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "schema": self.schema,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True)
class Published:
    """What a publication wrote: the event id and one message id per subscribed endpoint.

    `duplicate` is True when an earlier publication with the same idempotency key is
    answered instead (nothing new was written).
    """

    event_id: str
    message_ids: list[str]
    duplicate: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "message_ids": self.message_ids,
            "duplicate": self.duplicate,
        }


def _view(row: EventTypeDef) -> EventTypeView:
    return EventTypeView(row.name, row.description, row.data_schema, row.created_at, row.updated_at)


# -- the catalog ------------------------------------------------------------------------------


def _check_refs(node: Any, root: dict[str, Any], where: str) -> None:
    """Refuse every `$ref` that is not a JSON Pointer into this schema that resolves."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check_refs(item, root, f"{where}/{i}")
        return
    if not isinstance(node, dict):
        return
    for keyword in _UNSUPPORTED_KEYWORDS:
        if isinstance(node.get(keyword), str) and not (keyword == "$id" and node is root):
            raise ValidationError(
                f"schema: {keyword} at {where or '/'} is not supported; keep the schema in "
                "one document and use $ref '#/$defs/…'",
                field="schema",
            )
    ref = node.get("$ref")
    if isinstance(ref, str):
        if ref != "#" and not ref.startswith("#/"):
            raise ValidationError(
                f"schema: $ref {ref[:100]!r} at {where or '/'} must point into this schema "
                "('#/$defs/…'): other documents are never fetched",
                field="schema",
            )
        target: Any = root
        for part in ref[2:].split("/") if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                raise ValidationError(
                    f"schema: $ref {ref[:100]!r} at {where or '/'} points nowhere",
                    field="schema",
                )
    for key, value in node.items():
        _check_refs(value, root, f"{where}/{key}")


def check_schema(schema: object) -> dict[str, Any]:
    """Return `schema` if it is a JSON Schema (draft 2020-12 unless it says otherwise) that
    an event's data object can match, at most 64 KiB, and self-contained.

    Raise ValidationError saying what is wrong.
    """
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    if not isinstance(schema, dict):
        raise ValidationError("schema must be a JSON object", field="schema")
    try:
        size = len(json.dumps(schema, allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"schema must be JSON: {exc}", field="schema") from None
    if size > MAX_SCHEMA_BYTES:
        raise ValidationError(f"schema must be at most {MAX_SCHEMA_BYTES} bytes", field="schema")
    declared = schema.get("type")
    if declared is not None and "object" not in (
        declared if isinstance(declared, list) else [declared]
    ):
        raise ValidationError(
            'schema: event data is a JSON object, so "type" must be "object"', field="schema"
        )
    cls = validator_for(schema, default=_default_validator())
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/" + "/".join(str(p) for p in exc.absolute_path)
        raise ValidationError(f"schema: {exc.message} (at {where})", field="schema") from None
    except RecursionError:
        raise ValidationError("schema: nested too deeply", field="schema") from None
    _check_refs(schema, schema, "")
    try:
        cls(schema).is_valid({})
    except RecursionError:
        raise ValidationError("schema: refers to itself without end", field="schema") from None
    return schema


def _default_validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator


def register_event_type(
    session: Session,
    name: str,
    description: str = "",
    *,
    schema: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> tuple[EventTypeView, bool]:
    """Register a platform event type, or replace the description and schema of one.

    Return its view and whether it is new. Raise ValidationError for a malformed name
    (or one in the product's namespaces), a description over 300 characters, or a schema
    that is not a usable, self-contained JSON Schema.
    """
    now = resolve(now)
    name = check_event_name(name)
    text = "" if not description or not description.strip() else description
    if text:
        text = validation.display_text(text, "description", max_len=300)
    if schema is not None:
        schema = check_schema(schema)
    row = session.execute(
        select(EventTypeDef).where(EventTypeDef.name == name).with_for_update()
    ).scalar()
    created = row is None
    if row is None:
        row = EventTypeDef(name=name, created_at=now)
        session.add(row)
    row.description = text
    row.data_schema = schema
    row.updated_at = now
    session.flush()
    return _view(row), created


def list_event_types(session: Session) -> list[EventTypeView]:
    """Return the platform's registered event types, by name."""
    rows = session.execute(select(EventTypeDef).order_by(EventTypeDef.name)).scalars()
    return [_view(r) for r in rows]


def subscribable_events(session: Session) -> list[str]:
    """Return every event type an endpoint may subscribe to: built-ins, then the platform's."""
    names = session.execute(select(EventTypeDef.name).order_by(EventTypeDef.name)).scalars()
    return [str(e) for e in WEBHOOK_EVENTS] + list(names)


# -- publishing -------------------------------------------------------------------------------


def _event_type(session: Session, name: object) -> EventTypeDef:
    row = session.get(EventTypeDef, name) if isinstance(name, str) and len(name) <= 64 else None
    if row is not None:
        return row
    shown = str(name)[:80]
    if isinstance(name, str) and name in EventType._value2member_map_:
        raise UnknownEventType(
            f"event type {shown!r} is one of the product's own: only registered platform "
            "types can be published"
        )
    raise UnknownEventType(
        f"event type {shown!r} is not registered: register it first "
        "(python -m core events register TYPE)"
    )


def _organization(session: Session, ref: object) -> Organization:
    if isinstance(ref, str) and 0 < len(ref) <= 100:
        org = session.get(Organization, ref) if len(ref) <= 32 else None
        if org is None:
            org = session.execute(
                select(Organization).where(Organization.name == ref)
            ).scalar_one_or_none()
        if org is not None:
            return org
    raise UnknownOrganization(f"no organization has the id or name {str(ref)[:100]!r}")


def _depth_ok(data: object) -> bool:
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DATA_DEPTH:
            return False
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return True


def _pointer(parts: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _validator(row: EventTypeDef) -> Any:
    # Keyed by the schema itself: a type registered again with another schema (by any
    # process, on any database) never meets the validator of the old one.
    cache_key = json.dumps(row.data_schema, sort_keys=True, separators=(",", ":"))
    validator = _validators.get(cache_key)
    if validator is None:
        from jsonschema.validators import validator_for
        from referencing import Registry

        cls = validator_for(row.data_schema, default=_default_validator())
        # An empty registry: a reference outside the schema is never fetched.
        validator = cls(row.data_schema, registry=Registry())
        if len(_validators) >= _VALIDATORS_MAX:
            _validators.clear()
        _validators[cache_key] = validator
    return validator


def check_data(row: EventTypeDef, data: object) -> dict[str, Any]:
    """Return `data` if it is a JSON object matching the type's schema.

    Raise InvalidEventData with the JSON Pointer (``/data/amount``) of the first failure.
    """
    if not isinstance(data, dict):
        raise InvalidEventData("/data: must be a JSON object", path="/data")
    if not _depth_ok(data):
        raise InvalidEventData(f"/data: nested deeper than {MAX_DATA_DEPTH} levels")
    if row.data_schema is None:
        return data
    from jsonschema.exceptions import best_match

    try:
        error = best_match(_validator(row).iter_errors(data))
    except RecursionError:
        raise InvalidEventData(
            f"/data: the schema of {row.name!r} refers to itself without end; fix the schema"
        ) from None
    if error is None:
        return data
    parts = ["data", *error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [
            p for p in error.validator_value if p not in error.instance and repr(p) in error.message
        ]
        parts += missing[:1]
        path = _pointer(parts)
        raise InvalidEventData(f"{path}: is required", path=path)
    path = _pointer(parts)
    raise InvalidEventData(f"{path}: {error.message[:300]}", path=path)


def check_idempotency_key(value: object) -> str:
    """Return the key if it is 1-255 printable characters; raise ValidationError."""
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_IDEMPOTENCY_KEY
        or not value.isprintable()
    ):
        raise ValidationError(
            f"idempotency_key must be 1-{MAX_IDEMPOTENCY_KEY} printable characters",
            field="idempotency_key",
        )
    return value


def _fingerprint(event_type: str, data: dict[str, Any]) -> str:
    """SHA-256 of the type and the data (canonical JSON: the order of keys does not count)."""
    text = json.dumps([event_type, data], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _claim(
    session: Session,
    org_id: str,
    key: str,
    event_id: str,
    event_type: str,
    digest: str,
    now: datetime,
) -> bool:
    """Insert the publication row unless the (organization, key) pair exists; return
    whether this call inserted it. On PostgreSQL a concurrent insert of the same pair waits
    for the other transaction and then inserts nothing if it committed."""
    from sqlalchemy.dialects import postgresql, sqlite

    values = {
        "event_id": event_id,
        "org_id": org_id,
        "idempotency_key": key,
        "event_type": event_type,
        "request_hash": digest,
        "message_ids": {"ids": []},
        "created_at": now,
    }
    pair = ["org_id", "idempotency_key"]
    statement: Any
    if session.get_bind().dialect.name == "postgresql":
        statement = postgresql.insert(EventPublication).values(values)
        statement = statement.on_conflict_do_nothing(index_elements=pair)
    else:
        statement = sqlite.insert(EventPublication).values(values)
        statement = statement.on_conflict_do_nothing(index_elements=pair)
    return session.execute(statement.returning(EventPublication.event_id)).scalar() is not None


def _earlier(session: Session, org_id: str, key: str) -> EventPublication | None:
    return session.execute(
        select(EventPublication)
        .where(EventPublication.org_id == org_id, EventPublication.idempotency_key == key)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def publish_event(
    session: Session,
    org: str,
    event_type: str,
    data: object,
    *,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> Published:
    """Publish a registered platform event to the organization (its id or name) in the
    caller's transaction: one outbox message per subscribed, enabled endpoint.

    With `idempotency_key`, a repeat within 24 hours writes nothing and answers the first
    publication (`duplicate=True`). Raise UnknownEventType, UnknownOrganization,
    InvalidEventData (naming the failing path), ValidationError (data too large, not JSON,
    a secret-named field, a bad key), or IdempotencyConflict when the key was used for
    another type or data.
    """
    now = resolve(now)
    row = _event_type(session, event_type)
    organization = _organization(session, org)
    payload = check_data(row, data)
    key = None if idempotency_key is None else check_idempotency_key(idempotency_key)
    event_id = new_id("evt")
    try:
        body = outbox.envelope(event_id, row.name, organization, payload, now)
    except ValidationError as exc:
        raise InvalidEventData(f"/data: {exc.message}") from None
    if key is None:
        ids = outbox.queue(session, organization.id, row.name, event_id, body, now=now)
        return Published(event_id, ids)
    digest = _fingerprint(row.name, payload)
    for _ in range(2):
        if _claim(session, organization.id, key, event_id, row.name, digest, now):
            ids = outbox.queue(session, organization.id, row.name, event_id, body, now=now)
            session.execute(
                update(EventPublication)
                .where(EventPublication.event_id == event_id)
                .values(message_ids={"ids": ids})
            )
            return Published(event_id, ids)
        earlier = _earlier(session, organization.id, key)
        if earlier is None:
            continue  # removed since the insert saw it: claim again
        if earlier.created_at > now - IDEMPOTENCY_WINDOW:
            if earlier.request_hash != digest:
                raise IdempotencyConflict(
                    "this idempotency_key was used in the last 24 hours for another event "
                    "(a different type or data): use a new key"
                )
            return Published(earlier.event_id, list(earlier.message_ids["ids"]), duplicate=True)
        # Expired: the key may publish again. Remove the old row (only that one) and claim.
        session.execute(
            delete(EventPublication).where(EventPublication.event_id == earlier.event_id)
        )
    raise IdempotencyConflict("this idempotency_key is being used by another request; retry")


def prune_publications(session: Session, *, now: datetime | None = None) -> int:
    """Delete idempotency records older than the 24-hour window; return how many."""
    cutoff = resolve(now) - IDEMPOTENCY_WINDOW
    result = session.execute(delete(EventPublication).where(EventPublication.created_at <= cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
