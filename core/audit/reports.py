"""Audit exports (CSV, JSON Lines, Parquet, PDF) with their provenance and signed manifest.

`export` verifies the organization's chain (refusing a broken one unless `allow_broken`),
seals its head in a signed checkpoint, writes the file with its provenance inside and a
signed manifest beside it (`core.audit.exports`), and records `audit.exported` with the
filters and the file's SHA-256 — all in the caller's transaction. Files are written aside
and renamed, so a failure leaves no partial file.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit import exports, pdf
from core.audit import service as audit
from core.audit.canonical import timestamp
from core.audit.errors import ChainBroken
from core.audit.exports import PARQUET_SCHEMA, manifest_path
from core.audit.keyring import keyring_for
from core.clock import resolve
from core.errors import ValidationError
from core.events import EventType
from core.keys.models import ApiKey
from core.orgs.models import Organization, User
from core.orgs.permissions import Actor, Permission, check
from core.webhooks.models import WebhookEndpoint

FORMATS = ("csv", "jsonl", "parquet", "pdf")
MIME = {
    "csv": "text/csv",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
    "pdf": "application/pdf",
}
__all__ = ["FORMATS", "MIME", "PARQUET_SCHEMA", "ExportBytes", "ExportResult", "export"]


@dataclass(frozen=True)
class ExportResult:
    events: int
    path: Path
    manifest: Path
    sha256: str
    chain: audit.ChainReport


@dataclass(frozen=True)
class ExportBytes:
    content: bytes
    manifest: bytes
    events: int
    chain: audit.ChainReport


def period_text(filters: audit.AuditFilter, rows: Sequence[dict[str, Any]], now: datetime) -> str:
    """Return the period as dates, first and last day included (UTC).

    An open start is the first exported event's day (or the generation day when nothing
    matched); an open end is the generation day.
    """
    if filters.since is not None:
        first = f"{filters.since:%Y-%m-%d}"
    elif rows:
        first = str(rows[0]["ts"])[:10]
    else:
        first = f"{now:%Y-%m-%d}"
    last = (
        f"{filters.until - timedelta(microseconds=1):%Y-%m-%d}"
        if filters.until is not None
        else f"{now:%Y-%m-%d}"
    )
    return f"{first} to {last} (UTC)"


def _filters_dict(filters: audit.AuditFilter) -> dict[str, Any]:
    return {
        "since": timestamp(filters.since) if filters.since else None,
        "until": timestamp(filters.until) if filters.until else None,
        "actor": filters.actor_email,
        "action": filters.action,
    }


def _provenance(
    org: Organization,
    filters: audit.AuditFilter,
    actor: Actor,
    now: datetime,
    fmt: str,
    rows: Sequence[dict[str, Any]],
    chain: audit.ChainReport,
    checkpoint: int | None,
    key_id: str,
) -> dict[str, Any]:
    return {
        "organization": {"id": org.id, "name": org.name},
        "period": {
            "since": timestamp(filters.since) if filters.since else None,
            "until": timestamp(filters.until) if filters.until else None,
            "text": period_text(filters, rows, now),
        },
        "filters": _filters_dict(filters),
        "generated_at": timestamp(now),
        "generated_by": actor.email or actor.type,
        "format": fmt,
        "events": len(rows),
        "chain": {
            "verified": chain.ok,
            "result": chain.describe(),
            "first_bad_seq": chain.first_bad_seq,
            "head_seq": chain.head_seq if chain.ok else org.audit_seq,
            "head": chain.head if chain.ok else org.audit_head,
            "checkpoint": checkpoint,
            "key_id": key_id,
        },
    }


def target_names(
    session: Session, org_id: str, rows: Sequence[dict[str, Any]]
) -> dict[tuple[str, str], str]:
    """Return {(target_type, target_id): a name people read} for the rows' targets."""
    ids: dict[str, set[str]] = {}
    for r in rows:
        key = pdf.target_key(r)
        if key:
            ids.setdefault(key[0], set()).add(key[1])
    names: dict[tuple[str, str], str] = {}
    if ids.get("api_key"):
        for api_key in session.execute(
            select(ApiKey).where(ApiKey.org_id == org_id, ApiKey.id.in_(ids["api_key"]))
        ).scalars():
            names[("api_key", api_key.id)] = f"{api_key.name} ({api_key.masked})"
    if ids.get("user"):
        for uid, email in session.execute(
            select(User.id, User.email).where(User.id.in_(ids["user"]))
        ):
            names[("user", uid)] = email
    if ids.get("webhook_endpoint"):
        for eid, url in session.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.url).where(
                WebhookEndpoint.org_id == org_id, WebhookEndpoint.id.in_(ids["webhook_endpoint"])
            )
        ):
            names[("webhook_endpoint", eid)] = url
    for oid in ids.get("org", ()):
        org = session.get(Organization, oid)
        if org is not None and org.id == org_id:
            names[("org", oid)] = org.name
    return names


def export(
    session: Session,
    org_id: str,
    actor: Actor,
    fmt: str,
    path: Path,
    filters: audit.AuditFilter | None = None,
    *,
    now: datetime | None = None,
    allow_broken: bool = False,
) -> ExportResult:
    """Write the filtered audit log to `path` with its signed manifest; return what was written.

    Runs in the caller's write transaction (it seals the head and records audit.exported).
    Raise PermissionDenied without audit.export, ValidationError for an unknown format, a
    missing directory or a filter naming an unknown action or actor, ChainBroken when the
    chain fails verification and `allow_broken` is not set.
    """
    check(session, org_id, actor, Permission.AUDIT_EXPORT)
    if fmt not in FORMATS:
        raise ValidationError(f"format must be one of {', '.join(FORMATS)}", field="format")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValidationError(f"directory {path.parent} does not exist", field="out")
    filters = audit.validate_filters(session, org_id, actor, filters or audit.AuditFilter())
    now = resolve(now)
    keyring = keyring_for(session)
    chain = audit.verify_chain(session, org_id, actor, keyring=keyring)
    if not chain.ok and not allow_broken:
        raise ChainBroken(chain.describe(), chain.first_bad_seq)
    checkpoint = None
    if chain.ok:
        sealed = audit.seal(session, org_id, now=now)
        latest = sealed or audit.checkpoints.latest(session, org_id)
        checkpoint = latest.n if latest else None
    org = session.get(Organization, org_id)
    assert org is not None
    rows = [audit.event_row(e) for e in audit.list_events(session, org_id, actor, filters)]
    prov = _provenance(org, filters, actor, now, fmt, rows, chain, checkpoint, keyring.current.id)
    mpath = manifest_path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        if fmt == "pdf":
            pdf.render(
                tmp,
                provenance=prov,
                rows=rows,
                targets=target_names(session, org_id, rows),
                manifest_name=mpath.name,
            )
        else:
            {"csv": exports.write_csv, "jsonl": exports.write_jsonl,
             "parquet": exports.write_parquet}[fmt](tmp, prov, rows)  # fmt: skip
        manifest = exports.sign_manifest(tmp, fmt, prov, rows, keyring.current, name=path.name)
        mtmp = mpath.with_name(f".{mpath.name}.partial")
        try:
            mtmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
            tmp.replace(path)
            mtmp.replace(mpath)
        finally:
            mtmp.unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    audit.record(
        session,
        org_id,
        actor,
        EventType.AUDIT_EXPORTED,
        details={
            "format": fmt,
            "filters": _filters_dict(filters),
            "events": len(rows),
            "sha256": sha,
            "chain_verified": chain.ok,
            "allow_broken": bool(allow_broken),
        },
        now=now,
    )
    return ExportResult(len(rows), path, mpath, sha, chain)


def export_bytes(
    session: Session,
    org_id: str,
    actor: Actor,
    fmt: str,
    filters: audit.AuditFilter | None = None,
    *,
    now: datetime | None = None,
    allow_broken: bool = False,
    filename: str | None = None,
) -> ExportBytes:
    """Return an export's content and signed manifest, for a download button.

    Raise as `export` does.
    """
    with tempfile.TemporaryDirectory(prefix="audit-export-") as tmp:
        name = Path(filename).name if filename else f"audit.{fmt if fmt in FORMATS else 'out'}"
        path = Path(tmp) / name
        result = export(
            session, org_id, actor, fmt, path, filters, now=now, allow_broken=allow_broken
        )
        return ExportBytes(
            path.read_bytes(), result.manifest.read_bytes(), result.events, result.chain
        )
