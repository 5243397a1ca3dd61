"""Audit exports: CSV, JSON Lines and Parquet re-read equal the source rows; the PDF report
opens and states the organization, period, event count and chain status."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pypdf import PdfReader
from sqlalchemy import update
from sqlalchemy.orm import Session

from core.audit import reports
from core.audit import service as audit
from core.audit.canonical import timestamp
from core.audit.errors import ChainBroken
from core.audit.models import AuditEvent
from core.errors import PermissionDenied, ValidationError
from core.events import EventType
from core.keys import service as keys
from tests.factories import make_org

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def acme(session: Session, pepper: bytes):
    """Acme: 4 people (5 events), 60 keys created April 2–3, one revoked: 66 events."""
    org = make_org(session, "Acme Corp", now=T0)
    with session.begin():
        ids = [
            keys.create_key(
                session, org.id, org.admin, name=f"Server {i}", expires=90, pepper=pepper,
                now=T0 + timedelta(days=1, minutes=30 * i),
            ).id
            for i in range(60)
        ]  # fmt: skip
        keys.revoke_key(session, org.admin, ids[0], reason="léaked…", now=T0 + timedelta(days=4))
    return org


def source_rows(session: Session, org, filters=None) -> list[dict]:
    return [audit.event_row(e) for e in audit.list_events(session, org.id, org.admin, filters)]


APRIL_2 = audit.AuditFilter(
    since=datetime(2026, 4, 2, tzinfo=UTC), until=datetime(2026, 4, 3, tzinfo=UTC)
)


def export(session: Session, *args, **kwargs) -> int:
    """Export in a transaction of its own (an export seals the head and is audited)."""
    with session.begin():
        return reports.export(session, *args, **kwargs).events


def test_csv_and_jsonl_round_trip(session: Session, acme, tmp_path: Path) -> None:
    expected_rows = source_rows(session, acme)
    session.rollback()
    n = export(session, acme.id, acme.auditor, "csv", tmp_path / "a.csv")
    with open(tmp_path / "a.csv", newline="", encoding="utf-8") as fh:
        provenance = fh.readline()
        back = list(csv.DictReader(fh))
    expected = [{k: "" if v is None else str(v) for k, v in r.items()} for r in expected_rows]
    assert provenance.startswith("# provenance: {")
    assert n == len(back) == 66
    assert back == expected
    n = export(session, acme.id, acme.auditor, "jsonl", tmp_path / "a.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert lines[0]["provenance"]["events"] == 67 == n  # and the first export's audit.exported
    assert [x["hash"] for x in lines[1:67]] == [r["hash"] for r in expected_rows]
    assert lines[67]["action"] == "audit.exported" and lines[67]["details"]["format"] == "csv"


def test_parquet_round_trip_equals_source_rows(session: Session, acme, tmp_path: Path) -> None:
    expected = source_rows(session, acme, APRIL_2)
    session.rollback()
    n = export(session, acme.id, acme.admin, "parquet", tmp_path / "a.parquet", APRIL_2)
    table = pq.read_table(tmp_path / "a.parquet")
    rows = table.to_pylist()
    assert n == len(rows) == 30  # keys 0..29 were created on April 2 (every 30 minutes)
    for got, want in zip(rows, expected, strict=True):
        assert timestamp(got["ts"]) == want["ts"]
        assert {k: v for k, v in got.items() if k != "ts"} == {
            k: v for k, v in want.items() if k != "ts"
        }
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    provenance = json.loads(table.schema.metadata[b"integration_settings.audit.provenance"])
    assert provenance["events"] == 30 and provenance["chain"]["verified"] is True


def test_pdf_states_org_period_count_and_intact_chain(
    session: Session, acme, tmp_path: Path
) -> None:
    out = tmp_path / "report.pdf"
    n = export(session, acme.id, acme.auditor, "pdf", out, APRIL_2)
    reader = PdfReader(out)
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert n == 30
    assert "Acme Corp" in text
    assert "2026-04-02 to 2026-04-02 (UTC)" in text
    assert "30 events in this report" in text
    assert "INTACT" in text and "66 events verified" in text
    assert "api_key.created" in text
    assert "Page 1 of" in text


def test_pdf_event_table_spans_pages_and_names_a_broken_chain(
    session: Session, acme, tmp_path: Path
) -> None:
    with session.begin():
        session.execute(
            update(AuditEvent)
            .where(AuditEvent.org_id == acme.id, AuditEvent.seq == 10)
            .values(action="api_key.revoked")
        )
    out = tmp_path / "all.pdf"
    with pytest.raises(ChainBroken, match="event #10 was altered"):
        export(session, acme.id, acme.admin, "pdf", out)
    assert not out.exists()
    n = export(
        session, acme.id, acme.admin, "pdf", out, allow_broken=True, now=T0 + timedelta(days=9)
    )
    reader = PdfReader(out)
    assert n == 66
    assert len(reader.pages) >= 3  # summary page, then the event table over pages
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert "BROKEN" in text and "event #10 was altered" in text
    assert "2026-04-01 to 2026-04-10 (UTC)" in text  # the period as dates
    assert all("CHAIN BROKEN at event #10" in p.extract_text() for p in reader.pages)
    assert "ALTERED:" in text  # the first bad event's row is marked
    last_page = reader.pages[-1].extract_text()
    assert "# Time (UTC)" in last_page  # the header repeats on every page
    assert "66" in last_page


def test_filters_by_actor_and_action(session: Session, acme, tmp_path: Path) -> None:
    f = audit.AuditFilter(actor_email=acme.admin.email, action=EventType.API_KEY_REVOKED)
    n = export(session, acme.id, acme.admin, "parquet", tmp_path / "r.parquet", f)
    rows = pq.read_table(tmp_path / "r.parquet").to_pylist()
    assert n == 1
    assert json.loads(rows[0]["details"])["reason"] == "léaked…"
    n = export(session, acme.id, acme.admin, "pdf", tmp_path / "r.pdf", f)
    text = PdfReader(tmp_path / "r.pdf").pages[0].extract_text()
    assert "1 events in this report" in text and "api_key.revoked" in text


def test_exports_need_audit_export_and_a_known_format(
    session: Session, acme, tmp_path: Path
) -> None:
    with pytest.raises(PermissionDenied):
        export(session, acme.id, acme.member, "pdf", tmp_path / "x.pdf")
    with pytest.raises(ValidationError):
        export(session, acme.id, acme.admin, "xlsx", tmp_path / "x.xlsx")
    with pytest.raises(ValidationError):
        export(session, acme.id, acme.admin, "parquet", tmp_path / "nope" / "x.parquet")
    assert list(tmp_path.iterdir()) == [tmp_path / "data"]  # nothing partial left behind


@pytest.mark.slow
def test_cli_exports_parquet_and_pdf(
    session: Session, acme, database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(DATABASE_URL=database_url, INTEGRATION_DATA_DIR=str(data_dir))
    for fmt in ("parquet", "pdf"):
        out = tmp_path / f"out.{fmt}"
        r = subprocess.run(
            [sys.executable, "-m", "core", "audit", "export", "--org", "Acme Corp",
             "--format", fmt, "--out", str(out), "--since", "2026-04-02", "--until", "2026-04-02",
             "--by", acme.auditor.email, "--json"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["events"] == 30
        assert Path(json.loads(r.stdout)["manifest"]).is_file()
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 30
    assert "Acme Corp" in PdfReader(tmp_path / "out.pdf").pages[0].extract_text()


def test_export_bytes_for_a_download_button(session: Session, acme) -> None:
    with session.begin():
        out = reports.export_bytes(session, acme.id, acme.auditor, "pdf", APRIL_2)
    assert out.content.startswith(b"%PDF") and out.events == 30
    assert json.loads(out.manifest)["file"]["sha256"] == hashlib.sha256(out.content).hexdigest()
    with session.begin():
        out = reports.export_bytes(session, acme.id, acme.auditor, "csv")
    assert out.content.decode().count("\n") == out.events + 2 == 69  # 66 + seal + export
