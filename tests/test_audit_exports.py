"""Exports an auditor checks offline, filters that cannot mislead, a PDF a reviewer accepts.

An export is verified by `python -m core audit verify --file` with no database at all (the
DATABASE_URL given points nowhere); editing one record's reason is named; so are removed
records, a re-signed manifest and a wrong key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pypdf import PdfReader
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.audit import exports, reports
from core.audit import service as audit
from core.audit.errors import ChainBroken
from core.audit.keyring import AuditKeyring, keyring_for, public_key_pem
from core.audit.models import AuditEvent
from core.errors import ValidationError
from core.events import EventType
from core.keys import service as keys
from core.orgs import service as orgs
from tests.factories import OrgFixture, make_org

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
REASON = "leaked in a public CI log"


@pytest.fixture
def tokyo(session: Session, pepper: bytes) -> OrgFixture:
    """東京 Trading KK: a key created and revoked with a reason, a role change, a setting."""
    org = make_org(session, "東京 Trading KK", now=T0)
    with session.begin():
        k = keys.create_key(session, org.id, org.admin, name="Billing export", expires=90,
                            pepper=pepper, now=T0 + timedelta(hours=1))  # fmt: skip
        keys.revoke_key(session, org.admin, k.id, reason=REASON, now=T0 + timedelta(hours=2))
        orgs.change_role(session, org.id, org.admin, org.other_member.user_id or "", "auditor",
                         now=T0 + timedelta(hours=3))  # fmt: skip
        orgs.update_settings(session, org.id, org.admin, max_key_lifetime_days=200,
                             now=T0 + timedelta(hours=4))  # fmt: skip
    return org


def _export(session: Session, org: OrgFixture, fmt: str, out: Path, **kw) -> reports.ExportResult:
    with session.begin():
        return reports.export(session, org.id, org.auditor, fmt, out, now=T0 + timedelta(days=1),
                              **kw)  # fmt: skip


def _offline_verify(path: Path, public_key: Path | None, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    # No database: any attempt to open one fails.
    env.update(DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:9/none",
               INTEGRATION_DATA_DIR=str(tmp_path / "empty"))  # fmt: skip
    cmd = [sys.executable, "-m", "core", "audit", "verify", "--file", str(path)]
    if public_key:
        cmd += ["--public-key", str(public_key)]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def _public_key_file(session: Session, tmp_path: Path) -> Path:
    path = tmp_path / "audit-public.pem"
    path.write_text(public_key_pem(keyring_for(session).current.public_key))
    return path


def _revoke_seq(session: Session, org: OrgFixture) -> int:
    return session.execute(
        select(AuditEvent.seq).where(
            AuditEvent.org_id == org.id, AuditEvent.action == "api_key.revoked"
        )
    ).scalar_one()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_verifies_offline_and_an_edited_reason_is_named(
    session: Session, tokyo: OrgFixture, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"audit.{fmt}"
    result = _export(session, tokyo, fmt, out)
    key = _public_key_file(session, tmp_path)
    seq = _revoke_seq(session, tokyo)
    ok = _offline_verify(out, key, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"export intact: {result.events} records" in ok.stdout
    data = out.read_bytes()
    assert data.count(REASON.encode()) == 1
    out.write_bytes(data.replace(REASON.encode(), b"routine rotation"))
    bad = _offline_verify(out, key, tmp_path)
    assert bad.returncode == 1
    assert f"(event #{seq}) was altered" in bad.stdout


def test_a_parquet_export_verifies_and_an_edited_row_is_named(
    session: Session, tokyo: OrgFixture, tmp_path: Path
) -> None:
    out = tmp_path / "audit.parquet"
    _export(session, tokyo, "parquet", out)
    public = keyring_for(session).current.public_key
    assert exports.verify_file(out, public_key=public).ok
    table = pq.read_table(out)
    rows = table.to_pylist()
    index = next(i for i, r in enumerate(rows) if r["action"] == "api_key.revoked")
    rows[index]["details"] = rows[index]["details"].replace(REASON, "routine rotation")
    forged = pa.Table.from_pylist(rows, schema=table.schema)
    pq.write_table(forged, out)
    report = exports.verify_file(out, public_key=public)
    assert not report.ok and report.first_bad_seq == rows[index]["seq"]
    assert f"row {index + 1} (event #{rows[index]['seq']}) was altered" in report.message


def test_removed_records_an_edited_header_and_a_resigned_manifest_are_refused(
    session: Session, tokyo: OrgFixture, tmp_path: Path
) -> None:
    out = tmp_path / "audit.jsonl"
    _export(session, tokyo, "jsonl", out)
    public = keyring_for(session).current.public_key
    lines = out.read_text().splitlines(keepends=True)
    original = "".join(lines)

    out.write_text("".join(lines[:-2]))  # the last two records removed
    report = exports.verify_file(out, public_key=public)
    assert not report.ok and "was removed, with the 1 after it" in report.message

    head = json.loads(lines[0])
    head["provenance"]["chain"]["verified"] = True
    head["provenance"]["generated_by"] = "someone-else@example.com"
    out.write_text(json.dumps(head) + "\n" + "".join(lines[1:]))
    report = exports.verify_file(out, public_key=public)
    assert not report.ok and "provenance" in report.message

    # A forger re-signs an edited export with a key of their own.
    out.write_text(original.replace(REASON, "routine rotation"))
    forger = AuditKeyring.from_secret(b"f" * 40).current
    prov = json.loads(lines[0])["provenance"]
    rows = [json.loads(x) for x in out.read_text().splitlines()[1:]]
    rows = [{**r, "details": json.dumps(r["details"])} for r in rows]
    manifest = exports.sign_manifest(out, "jsonl", prov, rows, forger)
    exports.manifest_path(out).write_text(json.dumps(manifest))
    report = exports.verify_file(out, public_key=public)
    assert not report.ok and "not by the public key given" in report.message
    unpinned = exports.verify_file(out)
    assert unpinned.ok and not unpinned.trusted_key and unpinned.key_id == forger.id


def test_a_pdf_byte_changed_fails_its_manifest(
    session: Session, tokyo: OrgFixture, tmp_path: Path
) -> None:
    out = tmp_path / "audit.pdf"
    _export(session, tokyo, "pdf", out)
    public = keyring_for(session).current.public_key
    assert exports.verify_file(out, public_key=public).ok
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x01
    out.write_bytes(bytes(data))
    report = exports.verify_file(out, public_key=public)
    assert not report.ok and "SHA-256 differs" in report.message


def test_the_pdf_prints_the_name_the_reason_the_key_and_the_role_change(
    session: Session, tokyo: OrgFixture, tmp_path: Path
) -> None:
    out = tmp_path / "audit.pdf"
    _export(session, tokyo, "pdf", out)
    reader = PdfReader(out)
    text = "\n".join(p.extract_text() for p in reader.pages)
    assert "東京 Trading KK" in text
    assert REASON in text and "Billing export" in text and "isk_…" in text
    assert "role member → auditor" in text
    assert "max_key_lifetime_days: 365 → 200" in text
    assert "2026-05-04 to 2026-05-05 (UTC)" in text
    assert "signed checkpoint #" in text and "INTACT" in text
    assert f"Page {len(reader.pages)} of {len(reader.pages)}" in text
    assert f"user {tokyo.other_member.email}" in text  # a target by name, not by id


def test_a_failed_signin_shows_the_account_address_and_agent(
    session: Session, tokyo: OrgFixture, tmp_path: Path
) -> None:
    from core.orgs.permissions import Actor

    with session.begin():
        audit.record(session, tokyo.id, Actor.system("anonymous"), EventType.SIGNIN_FAILED,
                     target=("user", tokyo.admin.user_id or ""),
                     details={"email": tokyo.admin.email, "reason": "bad_password",
                              "client": "203.0.113.7", "user_agent": "curl/8.5"},
                     now=T0 + timedelta(hours=5))  # fmt: skip
    out = tmp_path / "audit.pdf"
    _export(session, tokyo, "pdf", out)
    text = "\n".join(p.extract_text() for p in PdfReader(out).pages)
    assert "anonymous" in text and "203.0.113.7" in text and "curl/8.5" in text
    assert f"user {tokyo.admin.email}" in text


def test_exports_are_audited_with_their_filters(
    session: Session, tokyo: OrgFixture, tmp_path: Path
) -> None:
    f = audit.AuditFilter(action="api_key.revoked", actor_email=tokyo.admin.email.upper())
    result = _export(session, tokyo, "csv", tmp_path / "a.csv", filters=f)
    assert result.events == 1
    last = audit.list_events(session, tokyo.id, tokyo.admin, newest_first=True, limit=1)[0]
    assert last.action == "audit.exported" and last.actor_email == tokyo.auditor.email
    assert last.details["filters"]["action"] == "api_key.revoked"
    assert last.details["filters"]["actor"] == tokyo.admin.email
    assert last.details["format"] == "csv" and last.details["events"] == 1
    assert last.details["sha256"] == result.sha256


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (
            audit.AuditFilter(action="api_key.revokd"),
            r"unknown action .api_key.revokd.; valid actions: .*api_key.revoked, ",
        ),
        (audit.AuditFilter(actor_email="nobody@example.com"), "actors in the log: admin@"),
        (
            audit.AuditFilter(
                since=datetime(2026, 5, 2, tzinfo=UTC), until=datetime(2026, 5, 1, tzinfo=UTC)
            ),
            "not after its start",
        ),
        (audit.AuditFilter(since=datetime(2026, 5, 2)), "time zone"),
    ],
)
def test_filters_that_would_mislead_are_refused(
    session: Session, tokyo: OrgFixture, tmp_path: Path, filters, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _export(session, tokyo, "jsonl", tmp_path / "a.jsonl", filters=filters)
    assert list(tmp_path.glob("a.jsonl*")) == []


def test_a_broken_chain_is_not_exported_without_allow_broken(
    session: Session, tokyo: OrgFixture, tmp_path: Path
) -> None:
    with session.begin():
        session.execute(
            update(AuditEvent)
            .where(AuditEvent.org_id == tokyo.id, AuditEvent.seq == 3)
            .values(actor_email="someone@else.test")
        )
    with pytest.raises(ChainBroken, match="event #3 was altered"):
        _export(session, tokyo, "jsonl", tmp_path / "a.jsonl")
    assert list(tmp_path.glob("a.jsonl*")) == []
    result = _export(session, tokyo, "jsonl", tmp_path / "a.jsonl", allow_broken=True)
    head = json.loads((tmp_path / "a.jsonl").read_text().splitlines()[0])["provenance"]
    assert head["chain"]["verified"] is False and head["chain"]["first_bad_seq"] == 3
    assert not result.chain.ok
    report = exports.verify_file(tmp_path / "a.jsonl")
    assert report.ok and "BROKEN when it was exported" in report.message


@pytest.mark.slow
def test_cli_refuses_a_broken_chain_and_unknown_filters(
    session: Session, tokyo: OrgFixture, database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(DATABASE_URL=database_url, INTEGRATION_DATA_DIR=str(data_dir))

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "core", "audit", "export", "--org", tokyo.name,
               "--format", "jsonl", "--out", str(tmp_path / "x.jsonl"), *extra]  # fmt: skip
        return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)

    r = run("--action", "api_key.revokd")
    assert r.returncode != 0 and "valid actions:" in r.stderr and "api_key.revoked" in r.stderr
    r = run("--actor", "ghost@example.com")
    assert r.returncode != 0 and "ghost@example.com" in r.stderr
    r = run("--since", "2026-13-01")
    assert r.returncode != 0 and "is not a date" in r.stderr
    r = run("--since", "2026-05-05", "--until", "2026-05-01")
    assert r.returncode != 0 and "--until is before --since" in r.stderr
    with session.begin():
        session.execute(
            update(AuditEvent)
            .where(AuditEvent.org_id == tokyo.id, AuditEvent.seq == 2)
            .values(action="api_key.revoked")
        )
    r = run()
    assert r.returncode != 0 and "event #2 was altered" in r.stderr and "--allow-broken" in r.stderr
    assert not (tmp_path / "x.jsonl").exists()
    r = run("--allow-broken")
    assert r.returncode == 0 and "BROKEN" in r.stdout
