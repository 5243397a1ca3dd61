"""Signed checkpoints: the head of each organization's chain, sealed with Ed25519.

A checkpoint states "organization O's chain had hash H at event S", numbered n = 1, 2, …
per organization and linked to the one before (`prev`, the SHA-256 of its canonical
statement), then signed with the audit key's Ed25519 key. The chain's own keyed hashes
stop anyone without the audit key from rewriting events; checkpoints add what hashes
cannot: a removed tail of events no longer reaches the sealed head.

A copy of every committed checkpoint is appended, one JSON line each, to a digest file
outside the database (`<data dir>/audit/<org id>.checkpoints.jsonl`), as CloudTrail keeps
digest files beside the logs: a database writer who deletes the newest events *and* the
newest checkpoints is still caught by the copy.

The statement signed, canonical JSON (RFC 8785) of:
    {"type": "audit.checkpoint", "v": 1, "org_id", "n", "seq", "head", "ts", "prev", "key_id"}
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit.canonical import jcs, timestamp
from core.audit.keyring import AuditKeyring
from core.audit.models import AuditCheckpoint

GENESIS = "0" * 64
# A chain is sealed again once its newest checkpoint is this old, or this many events behind.
SEAL_EVERY = timedelta(hours=1)
SEAL_EVERY_EVENTS = 100
DIGEST_DIR = "audit"
_PENDING = "audit_digest_lines"


def statement(cp: AuditCheckpoint) -> dict[str, Any]:
    """Return the statement a checkpoint's signature covers."""
    return {
        "type": "audit.checkpoint",
        "v": 1,
        "org_id": cp.org_id,
        "n": cp.n,
        "seq": cp.seq,
        "head": cp.head,
        "ts": timestamp(cp.ts),
        "prev": cp.prev,
        "key_id": cp.key_id,
    }


def digest(cp: AuditCheckpoint) -> str:
    """Return the SHA-256 (hex) of a checkpoint's canonical statement: the next one's `prev`."""
    return hashlib.sha256(jcs(statement(cp))).hexdigest()


def signature_ok(cp: AuditCheckpoint, public_key: Ed25519PublicKey | None) -> bool:
    if public_key is None:
        return False
    try:
        public_key.verify(base64.b64decode(cp.signature), jcs(statement(cp)))
    except (InvalidSignature, ValueError):
        return False
    return True


def latest(session: Session, org_id: str) -> AuditCheckpoint | None:
    return session.execute(
        select(AuditCheckpoint)
        .where(AuditCheckpoint.org_id == org_id)
        .order_by(AuditCheckpoint.n.desc())
        .limit(1)
    ).scalar_one_or_none()


def seal(
    session: Session,
    org_id: str,
    seq: int,
    head: str,
    keyring: AuditKeyring,
    now: datetime,
    *,
    last: AuditCheckpoint | None = None,
) -> AuditCheckpoint:
    """Sign a checkpoint of (seq, head) in the caller's transaction; return it.

    The caller holds the organization row's lock (as `audit.record` does), so checkpoints
    are numbered without gaps even with several writers. Once the transaction commits,
    the checkpoint is appended to the digest file outside the database.
    """
    last = last if last is not None else latest(session, org_id)
    cp = AuditCheckpoint(
        org_id=org_id,
        n=(last.n + 1) if last else 1,
        seq=seq,
        head=head,
        ts=now,
        prev=digest(last) if last else GENESIS,
        key_id=keyring.current.id,
        signature="",
    )
    cp.signature = keyring.current.sign(jcs(statement(cp)))
    session.add(cp)
    session.flush()
    if keyring.digest_dir is not None:
        _queue_digest_line(session, keyring.digest_dir, cp)
    return cp


def due(last: AuditCheckpoint | None, seq: int, now: datetime) -> bool:
    """Return whether a chain at `seq` should be sealed again at `now`."""
    if last is None:
        return True
    return last.seq < seq and (now - last.ts >= SEAL_EVERY or seq - last.seq >= SEAL_EVERY_EVENTS)


# -- the copy outside the database ----------------------------------------------------------


def digest_path(digest_dir: Path, org_id: str) -> Path:
    return Path(digest_dir) / f"{org_id}.checkpoints.jsonl"


def _queue_digest_line(session: Session, digest_dir: Path, cp: AuditCheckpoint) -> None:
    pending: list[tuple[Path, str]] | None = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
        sa_event.listen(session, "after_commit", _write_pending)
        sa_event.listen(session, "after_rollback", _drop_pending)
    line = json.dumps({**statement(cp), "signature": cp.signature}, ensure_ascii=False)
    pending.append((digest_path(digest_dir, cp.org_id), line))


def _drop_pending(session: Session) -> None:
    session.info.get(_PENDING, []).clear()


def _write_pending(session: Session) -> None:
    pending: list[tuple[Path, str]] = session.info.get(_PENDING, [])
    lines, pending[:] = list(pending), []
    for path, line in lines:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")  # one short write: appends from processes never mix
        except OSError:
            # The database holds the checkpoint; the copy is a second line of defence that
            # must never undo a committed change. `audit verify` reports the copy's state.
            continue


def read_digest_file(digest_dir: Path | None, org_id: str) -> list[dict[str, Any]]:
    """Return the checkpoint statements (with signatures) in an organization's digest file."""
    if digest_dir is None:
        return []
    path = digest_path(digest_dir, org_id)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and item.get("org_id") == org_id:
            out.append(item)
    return out


def from_line(item: dict[str, Any]) -> AuditCheckpoint | None:
    """Return the checkpoint a digest-file line describes, or None if it is malformed."""
    try:
        return AuditCheckpoint(
            org_id=str(item["org_id"]),
            n=int(item["n"]),
            seq=int(item["seq"]),
            head=str(item["head"]),
            ts=datetime.fromisoformat(str(item["ts"])),
            prev=str(item["prev"]),
            key_id=str(item["key_id"]),
            signature=str(item["signature"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class CheckpointProblem:
    seq: int | None
    message: str


def check(
    checkpoints: Sequence[AuditCheckpoint],
    hashes: dict[int, str],
    chain_length: int,
    keyring: AuditKeyring,
    outside: Sequence[dict[str, Any]] = (),
) -> CheckpointProblem | None:
    """Return the first problem with an organization's checkpoints, or None.

    `hashes` maps each event's seq to its stored hash; `outside` is the digest file's lines.
    """
    public = keyring.public_keys()
    prev, last_seq = GENESIS, 0
    by_n: dict[int, AuditCheckpoint] = {}
    for expected_n, cp in enumerate(checkpoints, start=1):
        by_n[cp.n] = cp
        if cp.n != expected_n:
            return CheckpointProblem(None, f"signed checkpoint #{expected_n} was removed")
        if not signature_ok(cp, public.get(cp.key_id)):
            if cp.key_id not in public:
                return CheckpointProblem(
                    cp.seq,
                    f"signed checkpoint #{cp.n} names audit key {cp.key_id}, "
                    "which is not configured here",
                )
            return CheckpointProblem(cp.seq, f"signed checkpoint #{cp.n} has a forged signature")
        if cp.prev != prev:
            return CheckpointProblem(
                cp.seq, f"signed checkpoint #{cp.n} does not follow #{cp.n - 1} (one was replaced)"
            )
        if cp.seq < last_seq:
            return CheckpointProblem(cp.seq, f"signed checkpoint #{cp.n} goes back in the chain")
        if cp.seq > chain_length:
            return CheckpointProblem(
                chain_length + 1,
                f"events #{chain_length + 1} to #{cp.seq} were removed "
                f"(signed checkpoint #{cp.n} sealed event #{cp.seq})",
            )
        if hashes.get(cp.seq) != cp.head:
            return CheckpointProblem(
                cp.seq, f"event #{cp.seq} differs from the one signed checkpoint #{cp.n} sealed"
            )
        prev, last_seq = digest(cp), cp.seq
    for item in outside:
        copy = from_line(item)
        if copy is None or not signature_ok(copy, public.get(copy.key_id)):
            continue  # not a checkpoint this deployment signed
        held = by_n.get(copy.n)
        if held is None:
            if copy.seq > chain_length:
                return CheckpointProblem(
                    chain_length + 1,
                    f"events #{chain_length + 1} to #{copy.seq} were removed, with their "
                    f"checkpoints (the copy of signed checkpoint #{copy.n} outside the "
                    "database sealed them)",
                )
            return CheckpointProblem(
                copy.seq, f"signed checkpoint #{copy.n} was removed from the database"
            )
        if held.signature != copy.signature or held.head != copy.head:
            return CheckpointProblem(
                copy.seq, f"signed checkpoint #{copy.n} differs from its copy outside the database"
            )
    return None
