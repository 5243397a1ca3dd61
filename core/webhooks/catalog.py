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
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, and_, delete, or_, select, tuple_
from sqlalchemy.orm import Session

from core import outbox, validation
from core.clock import iso, resolve
from core.errors import (
    CoreError,
    IdempotencyConflict,
    InvalidEventData,
    UnknownEventType,
    UnknownOrganization,
    ValidationError,
)
from core.events import MAX_EVENT_NAME, WEBHOOK_EVENTS, EventType, check_event_name
from core.ids import new_id
from core.orgs.models import Organization
from core.webhooks.models import EventPublication, EventTypeDef, WebhookEndpoint

IDEMPOTENCY_WINDOW = timedelta(hours=24)
MAX_IDEMPOTENCY_KEY = 255
MAX_SCHEMA_BYTES = 64 * 1024
MAX_DATA_DEPTH = 32
# Keywords that make a schema fetch or resolve another document; refused at registration
# so validating an event never reaches the network and never meets an unresolvable ref.
_UNSUPPORTED_KEYWORDS = ("$id", "$anchor", "$dynamicRef", "$dynamicAnchor", "$recursiveRef")
_VALIDATORS_MAX = 256
_validators: dict[str, Any] = {}  # the schema's canonical JSON -> its compiled validator
_validators_by_object: dict[int, tuple[Any, Any]] = {}
_TYPES = cast(Table, EventTypeDef.__table__)
_ORGS = cast(Table, Organization.__table__)
_ENDPOINTS = cast(Table, WebhookEndpoint.__table__)


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


class TypeSpec(NamedTuple):
    """What publishing needs of a registered type: its name and schema."""

    name: str
    data_schema: dict[str, Any] | None


class OrgRef(NamedTuple):
    id: str
    name: str


def _event_type(session: Session, name: object) -> TypeSpec:
    found = None
    if isinstance(name, str) and len(name) <= MAX_EVENT_NAME:
        found = (
            session.connection()
            .execute(
                select(EventTypeDef.name, EventTypeDef.data_schema).where(EventTypeDef.name == name)
            )
            .first()
        )
    if found is not None:
        return TypeSpec(found[0], found[1])
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


def _organization(session: Session, ref: object) -> OrgRef:
    """Return the organization whose id, else whose name, is `ref`; raise UnknownOrganization."""
    if isinstance(ref, str) and 0 < len(ref) <= 100:
        rows = (
            session.connection()
            .execute(
                select(Organization.id, Organization.name).where(
                    or_(Organization.id == ref, Organization.name == ref)
                )
            )
            .all()
        )
        for org_id, name in sorted(rows, key=lambda r: r[0] != ref):  # the id first
            return OrgRef(org_id, name)
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


def _validator(row: TypeSpec | EventTypeDef) -> Any:
    schema = row.data_schema
    known = _validators_by_object.get(id(schema))
    if known is not None and known[0] is schema:
        return known[1]
    # Keyed by the schema itself: a type registered again with another schema (by any
    # process, on any database) never meets the validator of the old one.
    cache_key = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    validator = _validators.get(cache_key)
    if validator is None:
        from jsonschema.validators import validator_for
        from referencing import Registry

        cls = validator_for(schema, default=_default_validator())
        # An empty registry: a reference outside the schema is never fetched.
        validator = cls(schema, registry=Registry())
        if len(_validators) >= _VALIDATORS_MAX:
            _validators.clear()
        _validators[cache_key] = validator
    if len(_validators_by_object) >= _VALIDATORS_MAX:
        _validators_by_object.clear()
    # The same loaded schema object (a batch's rows) skips the canonical JSON next time;
    # the entry holds the object, so its id cannot be reused while it is there.
    _validators_by_object[id(schema)] = (schema, validator)
    return validator


def check_data(row: TypeSpec | EventTypeDef, data: object) -> dict[str, Any]:
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


def _claim_statement(session: Session, values: list[dict[str, Any]]) -> Any:
    """INSERT the publication rows unless their (organization, key) pair exists, returning
    the event ids inserted. On PostgreSQL a concurrent insert of the same pair waits for
    the other transaction, then inserts nothing if it committed."""
    from sqlalchemy.dialects import postgresql, sqlite

    pair = ["org_id", "idempotency_key"]
    statement: Any
    if session.get_bind().dialect.name == "postgresql":
        statement = postgresql.insert(EventPublication).values(values)
    else:
        statement = sqlite.insert(EventPublication).values(values)
    return statement.on_conflict_do_nothing(index_elements=pair).returning(
        EventPublication.event_id
    )


def _claim_values(
    org_id: str,
    key: str,
    event_id: str,
    event_type: str,
    digest: str,
    message_ids: list[str],
    now: datetime,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "org_id": org_id,
        "idempotency_key": key,
        "event_type": event_type,
        "request_hash": digest,
        "message_ids": {"ids": message_ids},
        "created_at": now,
    }


def _claim(session: Session, prepared: Prepared, now: datetime) -> bool:
    """Claim one event's (organization, key) pair; return whether this call inserted it."""
    return bool(_claim_many(session, [prepared], now))


def _repeat(earlier: EventPublication, p: Prepared) -> Published:
    """Answer a repeated key with its earlier publication; raise IdempotencyConflict when
    the earlier one was another type or other data."""
    if earlier.request_hash != p.digest:
        raise IdempotencyConflict(
            "this idempotency_key was used in the last 24 hours for another event "
            "(a different type or data): use a new key"
        )
    return Published(earlier.event_id, list(earlier.message_ids["ids"]), duplicate=True)


def _earlier_many(
    session: Session, prepared: list[Prepared]
) -> dict[tuple[str, str | None], EventPublication]:
    """Return the publications holding these events' keys, by (organization, key)."""
    if not prepared:
        return {}
    pairs = [(p.org_id, p.key) for p in prepared]
    rows = session.execute(
        select(EventPublication)
        .where(tuple_(EventPublication.org_id, EventPublication.idempotency_key).in_(pairs))
        .execution_options(populate_existing=True)
    ).scalars()
    return {(r.org_id, r.idempotency_key): r for r in rows}


def _claim_many(session: Session, prepared: list[Prepared], now: datetime) -> set[str]:
    """Claim the keys of prepared events in one statement; return the event ids that got
    theirs (a key repeated in the list goes to its first event)."""
    if not prepared:
        return set()
    values = [
        _claim_values(p.org_id, p.key or "", p.event_id, p.event_type, p.digest, p.message_ids, now)
        for p in prepared
    ]
    return set(session.execute(_claim_statement(session, values)).scalars())


def _earlier(session: Session, org_id: str, key: str) -> EventPublication | None:
    return session.execute(
        select(EventPublication)
        .where(EventPublication.org_id == org_id, EventPublication.idempotency_key == key)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


@dataclass(frozen=True)
class Prepared:
    """An event checked and turned into its outbox rows, not yet written."""

    event_id: str
    org_id: str
    event_type: str
    key: str | None
    digest: str
    rows: list[dict[str, Any]]

    @property
    def message_ids(self) -> list[str]:
        return [r["id"] for r in self.rows]


class Publisher:
    """Publishes events in the caller's transaction, many at a time.

    Each event type, organization and list of subscribed endpoints is looked up once per
    publisher (they cannot change under the caller's transaction, except by the caller),
    and the messages are written together by `flush`, which the caller runs before it
    commits. An event `publish` refuses raises before it writes anything, so the
    transaction may go on with the others.
    """

    def __init__(self, session: Session, *, now: datetime | None = None) -> None:
        self.session = session
        self.now = resolve(now)
        self._resolved: dict[tuple[str, str], tuple[TypeSpec, OrgRef, list[str]]] = {}
        self._rows: list[dict[str, Any]] = []

    def _resolve(self, org: object, event_type: object) -> tuple[TypeSpec, OrgRef, list[str]]:
        """Return the type, the organization and its subscribed endpoints, in one query
        (or raise UnknownEventType / UnknownOrganization)."""
        known = (
            self._resolved.get((org, event_type))
            if isinstance(org, str) and isinstance(event_type, str)
            else None
        )
        if known is not None:
            return known
        rows: list[Any] = []
        if (
            isinstance(org, str)
            and isinstance(event_type, str)
            and 0 < len(org) <= 100
            and len(event_type) <= MAX_EVENT_NAME
        ):
            t, o, e = _TYPES, _ORGS, _ENDPOINTS
            rows = list(
                self.session.connection()
                .execute(
                    select(t.c.name, t.c.data_schema, o.c.id, o.c.name, e.c.id, e.c.event_types)
                    .select_from(
                        t.join(o, or_(o.c.id == org, o.c.name == org)).outerjoin(
                            e, and_(e.c.org_id == o.c.id, e.c.enabled.is_(True))
                        )
                    )
                    .where(t.c.name == event_type)
                )
                .all()
            )
        if not rows:  # say which is missing
            _event_type(self.session, event_type)
            _organization(self.session, org)
            raise AssertionError("unreachable: both exist but the join found nothing")
        matched = {r[2] for r in rows}  # one organization by id, one by name, or the same
        org_id = org if org in matched else matched.pop()
        rows = [r for r in rows if r[2] == org_id]
        first = rows[0]
        targets = sorted(
            r[4] for r in rows if r[4] is not None and first[0] in (r[5] or {}).get("types", ())
        )
        resolved = (TypeSpec(first[0], first[1]), OrgRef(first[2], first[3]), targets)
        assert isinstance(org, str) and isinstance(event_type, str)
        self._resolved[(org, event_type)] = resolved
        return resolved

    def prepare(
        self, org: str, event_type: str, data: object, idempotency_key: str | None = None
    ) -> Prepared:
        """Check one event and build its messages, writing nothing (see `publish_event` for
        what it checks and raises)."""
        row, organization, targets = self._resolve(org, event_type)
        payload = check_data(row, data)
        key = None if idempotency_key is None else check_idempotency_key(idempotency_key)
        event_id = new_id("evt")
        try:
            body = outbox.envelope(event_id, row.name, organization, payload, self.now)
        except ValidationError as exc:
            raise InvalidEventData(f"/data: {exc.message}") from None
        rows = outbox.message_rows(organization.id, row.name, event_id, body, targets, now=self.now)
        digest = _fingerprint(row.name, payload) if key is not None else ""
        return Prepared(event_id, organization.id, row.name, key, digest, rows)

    def publish(
        self, org: str, event_type: str, data: object, *, idempotency_key: str | None = None
    ) -> Published:
        """Queue one event (see `publish_event` for what it checks and raises)."""
        return self._settle(self.prepare(org, event_type, data, idempotency_key))

    def publish_many(self, requests: list[dict[str, Any]]) -> list[Published | CoreError]:
        """Queue many events (`{"org", "type", "data", "idempotency_key"?}` each); return
        for each its publication or the CoreError that refused it (which wrote nothing).

        The idempotency keys of the batch are claimed with one statement, in one order
        (organization, key) in every batch, so concurrent batches never wait for each
        other's keys in a cycle; a key already taken is then settled on its own.
        """
        results: list[Published | CoreError | None] = [None] * len(requests)
        prepared: dict[int, Prepared] = {}
        for i, body in enumerate(requests):
            try:
                prepared[i] = self.prepare(
                    body["org"], body["type"], body["data"], body.get("idempotency_key")
                )
            except CoreError as exc:
                results[i] = exc
        keyed = sorted(
            (i for i, p in prepared.items() if p.key is not None),
            key=lambda i: (prepared[i].org_id, prepared[i].key),
        )
        claimed = _claim_many(self.session, [prepared[i] for i in keyed], self.now)
        taken = [prepared[i] for i in keyed if prepared[i].event_id not in claimed]
        earlier = _earlier_many(self.session, taken)
        for i, p in prepared.items():
            if p.key is None or p.event_id in claimed:
                self._rows += p.rows
                results[i] = Published(p.event_id, p.message_ids)
                continue
            try:
                found = earlier.get((p.org_id, p.key))
                if found is not None and found.created_at > self.now - IDEMPOTENCY_WINDOW:
                    results[i] = _repeat(found, p)
                else:
                    results[i] = self._settle(p)  # expired or gone since: claim on its own
            except CoreError as exc:
                results[i] = exc
        assert all(r is not None for r in results)
        return cast(list[Published | CoreError], results)

    def _settle(self, p: Prepared) -> Published:
        """Queue a prepared event; with a key, claim it, or answer the earlier publication."""
        session, now = self.session, self.now
        if p.key is None:
            self._rows += p.rows
            return Published(p.event_id, p.message_ids)
        for _ in range(2):
            if _claim(session, p, now):
                self._rows += p.rows
                return Published(p.event_id, p.message_ids)
            earlier = _earlier(session, p.org_id, p.key)
            if earlier is None:
                continue  # removed since the insert saw it: claim again
            if earlier.created_at > now - IDEMPOTENCY_WINDOW:
                return _repeat(earlier, p)
            # Expired: the key may publish again. Remove the old row (only it) and claim.
            session.execute(
                delete(EventPublication).where(EventPublication.event_id == earlier.event_id)
            )
        raise IdempotencyConflict("this idempotency_key is being used by another request; retry")

    def flush(self) -> None:
        """Write the queued messages (one statement); call before the transaction commits."""
        rows, self._rows = self._rows, []
        outbox.write(self.session, rows)


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
    publisher = Publisher(session, now=now)
    published = publisher.publish(org, event_type, data, idempotency_key=idempotency_key)
    publisher.flush()
    return published


def prune_publications(session: Session, *, now: datetime | None = None) -> int:
    """Delete idempotency records older than the 24-hour window; return how many."""
    cutoff = resolve(now) - IDEMPOTENCY_WINDOW
    result = session.execute(delete(EventPublication).where(EventPublication.created_at <= cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
