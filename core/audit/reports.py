"""Audit exports beyond CSV and JSON Lines: Parquet for analysts, a PDF report for reviewers.

The PDF states the organization, the period and filters, who generated it and when, the
hash-chain verification result, a summary by action and by actor with a bar chart, and
every matching event in a table that repeats its header on each page. Every export is
written aside and renamed, so a failure leaves no partial file.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fpdf import FPDF
from sqlalchemy.orm import Session

from core.audit import service as audit
from core.clock import resolve
from core.errors import ValidationError
from core.orgs.models import Organization
from core.orgs.permissions import Actor, Permission, check

FORMATS = ("csv", "jsonl", "parquet", "pdf")

PARQUET_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("actor_type", pa.string()),
        ("actor_id", pa.string()),
        ("actor_email", pa.string()),
        ("action", pa.string()),
        ("target_type", pa.string()),
        ("target_id", pa.string()),
        ("details", pa.string()),  # JSON text, keys sorted
        ("prev_hash", pa.string()),
        ("hash", pa.string()),
    ]
)


def export(
    session: Session,
    org_id: str,
    actor: Actor,
    fmt: str,
    path: Path,
    filters: audit.AuditFilter | None = None,
    *,
    now: datetime | None = None,
) -> int:
    """Write the organization's filtered audit log to `path` as csv, jsonl, parquet or pdf.

    Return the number of events written. Raise PermissionDenied without audit.export,
    ValidationError for an unknown format or a missing directory.
    """
    if fmt in audit.EXPORT_FORMATS:
        return audit.export_events(session, org_id, actor, fmt, path, filters)
    if fmt not in FORMATS:
        raise ValidationError(f"format must be one of {', '.join(FORMATS)}", field="format")
    if fmt == "pdf":
        return export_pdf(session, org_id, actor, path, filters, now=now)
    return export_parquet(session, org_id, actor, path, filters)


def _prepare(session: Session, org_id: str, actor: Actor, path: Path) -> Path:
    check(session, org_id, actor, Permission.AUDIT_EXPORT)
    path = Path(path)
    if not path.parent.is_dir():
        raise ValidationError(f"directory {path.parent} does not exist", field="out")
    return path


def _write_aside(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def export_parquet(
    session: Session,
    org_id: str,
    actor: Actor,
    path: Path,
    filters: audit.AuditFilter | None = None,
) -> int:
    """Write the filtered events as one Parquet file (PARQUET_SCHEMA); return their number.

    Raise PermissionDenied without audit.export, ValidationError for a missing directory.
    """
    path = _prepare(session, org_id, actor, path)
    events = audit.list_events(session, org_id, actor, filters)
    rows = [{**audit.event_row(e), "ts": e.ts.astimezone(UTC)} for e in events]
    table = pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA)
    _write_aside(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    return len(rows)


def _latin(text: object) -> str:
    """Return text the PDF's built-in fonts can show (Latin-1; others become '?')."""
    value = "" if text is None else str(text)
    value = value.replace("…", "...").replace("–", "-").replace("—", "-")
    return value.encode("latin-1", "replace").decode("latin-1")


def period_text(filters: audit.AuditFilter) -> str:
    """Return the period of `filters` as people read it: first and last day included."""
    since = f"{filters.since:%Y-%m-%d}" if filters.since else "the first event"
    if filters.until:
        last = filters.until - timedelta(microseconds=1)
        until = f"{last:%Y-%m-%d}"
    else:
        until = "the last event"
    return f"{since} to {until} (UTC)"


class _Report(FPDF):
    title_text = ""

    def header(self) -> None:
        self.set_font("Helvetica", "B", 9)
        self.set_text_color(90, 90, 90)
        self.cell(0, 6, _latin(self.title_text), new_x="LMARGIN", new_y="NEXT")
        self.set_text_color(0, 0, 0)
        self.ln(2)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", "", 8)
        self.set_text_color(90, 90, 90)
        self.cell(0, 6, f"Page {self.page_no()} of {{nb}}", align="C")
        self.set_text_color(0, 0, 0)


def export_pdf(
    session: Session,
    org_id: str,
    actor: Actor,
    path: Path,
    filters: audit.AuditFilter | None = None,
    *,
    now: datetime | None = None,
) -> int:
    """Write a PDF audit report of the filtered events; return their number.

    The chain is verified over the organization's whole log, whatever the filters.
    Raise PermissionDenied without audit.export, ValidationError for a missing directory.
    """
    path = _prepare(session, org_id, actor, path)
    filters = filters or audit.AuditFilter()
    now = resolve(now)
    org = session.get(Organization, org_id)
    assert org is not None
    chain = audit.verify_chain(session, org_id, actor)
    events = [audit.event_row(e) for e in audit.list_events(session, org_id, actor, filters)]
    pdf = _Report(orientation="P", unit="mm", format="A4")
    pdf.title_text = f"Audit log report - {org.name}"
    pdf.set_auto_page_break(auto=True, margin=16)
    pdf.set_title(f"Audit log report: {_latin(org.name)}")
    pdf.set_author("Integration Settings")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 10, "Audit log report", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    facts = [
        ("Organization", f"{org.name} ({org.id})"),
        ("Period", period_text(filters)),
        ("Actor filter", filters.actor_email or "all actors"),
        ("Action filter", filters.action or "all actions"),
        ("Events", f"{len(events)} events in this report"),
        ("Generated", f"{now:%Y-%m-%d %H:%M:%S} UTC by {actor.email or actor.type}"),
    ]
    _facts(pdf, facts)
    pdf.ln(3)
    _section(pdf, "Hash chain verification")
    pdf.set_font("Helvetica", "B", 10)
    pdf.set_text_color(0, 110, 40) if chain.ok else pdf.set_text_color(180, 0, 0)
    verdict = "INTACT" if chain.ok else "BROKEN"
    pdf.multi_cell(0, 6, _latin(f"{verdict}: {chain.describe()}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    pdf.set_font("Helvetica", "", 8)
    pdf.multi_cell(
        0,
        4.5,
        "Each event's SHA-256 hash covers its fields and the previous event's hash; the "
        "verification walks the organization's whole log, so an altered, removed or "
        "reordered event is named above.",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(3)
    by_action = Counter(e["action"] for e in events)
    by_actor = Counter(e["actor_email"] or e["actor_type"] for e in events)
    _section(pdf, "Events by action")
    _bar_chart(pdf, by_action.most_common(12))
    _section(pdf, "Summary by action")
    _count_table(pdf, "Action", by_action.most_common())
    _section(pdf, "Summary by actor")
    _count_table(pdf, "Actor", by_actor.most_common())
    pdf.add_page()
    _section(pdf, f"Events ({len(events)})")
    _event_table(pdf, events)
    _write_aside(path, lambda tmp: pdf.output(str(tmp)))
    return len(events)


def _section(pdf: FPDF, title: str) -> None:
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(0, 8, _latin(title), new_x="LMARGIN", new_y="NEXT")


def _facts(pdf: FPDF, facts: list[tuple[str, str]]) -> None:
    for label, value in facts:
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(32, 6, _latin(label))
        pdf.set_font("Helvetica", "", 10)
        pdf.multi_cell(0, 6, _latin(value), new_x="LMARGIN", new_y="NEXT")


def _count_table(pdf: FPDF, label: str, rows: list[tuple[str, int]]) -> None:
    total = sum(n for _, n in rows) or 1
    pdf.set_font("Helvetica", "B", 9)
    pdf.set_fill_color(230, 230, 230)
    pdf.cell(110, 6, label, border=1, fill=True)
    pdf.cell(30, 6, "Events", border=1, fill=True, align="R")
    pdf.cell(30, 6, "Share", border=1, fill=True, align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    for name, n in rows:
        pdf.cell(110, 5.5, _latin(name)[:70], border=1)
        pdf.cell(30, 5.5, str(n), border=1, align="R")
        pdf.cell(30, 5.5, f"{100 * n / total:.1f} %", border=1, align="R")
        pdf.ln(5.5)
    pdf.ln(3)


def _bar_chart(pdf: FPDF, rows: list[tuple[str, int]]) -> None:
    if not rows:
        pdf.set_font("Helvetica", "I", 9)
        pdf.cell(0, 6, "No events match the filters.", new_x="LMARGIN", new_y="NEXT")
        return
    top = max(n for _, n in rows)
    label_w, bar_w, h = 60.0, 100.0, 5.0
    pdf.set_font("Helvetica", "", 8)
    for name, n in rows:
        if pdf.will_page_break(h + 1):
            pdf.add_page()
        x, y = pdf.l_margin, pdf.get_y()
        pdf.set_xy(x, y)
        pdf.cell(label_w, h, _latin(name)[:40], align="R")
        pdf.set_fill_color(52, 101, 164)
        pdf.rect(x + label_w + 2, y + 0.6, max(bar_w * n / top, 0.5), h - 1.2, style="F")
        pdf.set_xy(x + label_w + 4 + bar_w * n / top, y)
        pdf.cell(20, h, str(n))
        pdf.set_xy(x, y + h + 0.8)
    pdf.ln(3)


EVENT_COLUMNS: list[tuple[str, str, float]] = [
    ("seq", "#", 12),
    ("ts", "Time (UTC)", 36),
    ("actor", "Actor", 44),
    ("action", "Action", 40),
    ("target", "Target", 58),
]


def _event_header(pdf: FPDF) -> None:
    pdf.set_font("Helvetica", "B", 8)
    pdf.set_fill_color(230, 230, 230)
    for _key, title, width in EVENT_COLUMNS:
        pdf.cell(width, 6, title, border=1, fill=True)
    pdf.ln(6)
    pdf.set_font("Helvetica", "", 7.5)


def _event_cells(event: dict[str, Any]) -> dict[str, str]:
    ts = datetime.fromisoformat(event["ts"]).astimezone(UTC)
    target = f"{event['target_type'] or ''} {event['target_id'] or ''}".strip()
    details = json.loads(event["details"])
    if not target and details.get("email"):
        target = str(details["email"])
    return {
        "seq": str(event["seq"]),
        "ts": f"{ts:%Y-%m-%d %H:%M:%S}",
        "actor": event["actor_email"] or event["actor_type"],
        "action": event["action"],
        "target": target,
    }


def _event_table(pdf: FPDF, events: list[dict[str, Any]]) -> None:
    if not events:
        pdf.set_font("Helvetica", "I", 9)
        pdf.cell(0, 6, "No events match the filters.", new_x="LMARGIN", new_y="NEXT")
        return
    _event_header(pdf)
    row_h = 5.0
    for event in events:
        if pdf.will_page_break(row_h):
            pdf.add_page()
            _event_header(pdf)
        cells = _event_cells(event)
        for key, _title, width in EVENT_COLUMNS:
            text = _latin(cells[key])
            while text and pdf.get_string_width(text) > width - 2:
                text = text[:-2] + "~"
            pdf.cell(width, row_h, text, border=1)
        pdf.ln(row_h)


def export_bytes(
    session: Session,
    org_id: str,
    actor: Actor,
    fmt: str,
    filters: audit.AuditFilter | None = None,
    *,
    now: datetime | None = None,
) -> tuple[bytes, int]:
    """Return (file content, event count) of an export, for a download button.

    Raise as `export` does.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="audit-export-") as tmp:
        path = Path(tmp) / f"audit.{fmt if fmt in FORMATS else 'out'}"
        n = export(session, org_id, actor, fmt, path, filters, now=now)
        return path.read_bytes(), n
