"""The PDF audit report a compliance reviewer reads.

The cover states the organization, the period as dates, the filters, who generated it
and when, the event count, the chain head and the verification result (and the manifest
that signs the file). Then a chart and summaries by action and actor, then every event
with its details in words: the revoke reason, role from → to, the key's name and masked
key, settings before → after, a failed sign-in's client address and user agent. Targets
are shown by name. On a broken chain every page says so, and the first bad event's row is
marked. Text prints in a Unicode font from a package, so any organization name shows.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.enums import TextMode

from core.audit import _fonts

FONT = "NotoSans"
RED, GREEN, GREY = (180, 0, 0), (0, 110, 40), (90, 90, 90)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


def describe_details(row: dict[str, Any]) -> str:
    """Return an event's details in words (what a reviewer needs), never raw ids alone."""
    d: dict[str, Any] = json.loads(row["details"]) if isinstance(row["details"], str) else {}
    action = row["action"]
    key = " ".join(str(d[k]) for k in ("name", "masked") if d.get(k))
    parts: list[str] = []
    if action == "api_key.revoked":
        parts = [f"key {key}", f"reason: {d.get('reason') or '(none given)'}"]
    elif action == "api_key.created":
        parts = [f"key {key}", f"expires {str(d.get('expires_at') or '')[:10]}"]
    elif action == "api_key.rolled":
        parts = [
            f"key {d.get('name', '')}: {d.get('old_masked', '')} → {d.get('new_masked', '')}",
            f"old valid until {str(d.get('old_valid_until') or '')[:16].replace('T', ' ')}",
        ]
    elif action in ("api_key.expiring", "api_key.expired"):
        parts = [f"key {key}"] if key else []
    elif action == "member.role_changed":
        parts = [f"{d.get('email', '')}: role {d.get('from', '?')} → {d.get('to', '?')}"]
    elif action in ("member.added", "member.removed"):
        parts = [f"{d.get('email', '')} as {d.get('role', '?')}"]
    elif action in ("settings.changed", "webhook.endpoint.updated"):
        for name, change in sorted(d.items()):
            if isinstance(change, list) and len(change) == 2:
                parts.append(f"{name}: {_json(change[0])} → {_json(change[1])}")
            else:
                parts.append(f"{name}: {_json(change)}")
    elif action.startswith("auth.signin"):
        who = d.get("email") or row.get("actor_email") or ""
        parts = [f"account {who}"] if who else []
        for k in ("reason", "client", "client_address", "ip", "user_agent", "failures"):
            if d.get(k):
                parts.append(f"{k.replace('_', ' ')}: {d[k]}")
    else:
        parts = [f"{k}: {_json(v)}" for k, v in sorted(d.items()) if v not in (None, "", [])]
    return "; ".join(p for p in parts if p.strip())


class _Report(FPDF):
    title_text = ""
    banner = ""  # printed in red under the title on every page (a broken chain)

    def header(self) -> None:
        self.set_font(FONT, "", 9)
        self.set_text_color(*GREY)
        self.cell(0, 5, self.title_text, new_x="LMARGIN", new_y="NEXT")
        if self.banner:
            self.set_text_color(*RED)
            self.set_font(FONT, "", 9)
            with self.local_context(text_mode=TextMode.FILL_STROKE, line_width=0.15):
                self.multi_cell(0, 5, self.banner, new_x="LMARGIN", new_y="NEXT")
        self.set_text_color(0, 0, 0)
        self.ln(2)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(FONT, "", 8)
        self.set_text_color(*GREY)
        self.cell(0, 6, f"Page {self.page_no()} of {{nb}}", align="C")
        self.set_text_color(0, 0, 0)


def _bold(pdf: FPDF, size: float) -> Any:
    pdf.set_font(FONT, "", size)
    return pdf.local_context(text_mode=TextMode.FILL_STROKE, line_width=size * 0.012)


def render(
    path: Path,
    *,
    provenance: dict[str, Any],
    rows: list[dict[str, Any]],
    targets: dict[tuple[str, str], str],
    manifest_name: str,
) -> None:
    """Write the report to `path` from the provenance and the exported rows."""
    details = [describe_details(r) for r in rows]
    cells = [_event_cells(r, targets) for r in rows]
    text = json.dumps(provenance, ensure_ascii=False) + "".join(
        d + "".join(c.values()) for d, c in zip(details, cells, strict=True)
    )
    pdf = _Report(orientation="L", unit="mm", format="A4")
    font_file = path.with_name(f".{path.name}.font.ttf")
    try:
        font_file.write_bytes(_fonts.subset_ttf(text))
        pdf.add_font(FONT, "", str(font_file))
    finally:
        font_file.unlink(missing_ok=True)
    org = provenance["organization"]
    chain = provenance["chain"]
    pdf.title_text = _fonts.printable(f"Audit log report — {org['name']}")
    if not chain["verified"]:
        pdf.banner = _fonts.printable(
            f"CHAIN BROKEN at event #{chain['first_bad_seq']}: this report was exported with "
            "--allow-broken and is not evidence of an intact log. " + chain["result"]
        )
    pdf.set_auto_page_break(auto=True, margin=16)
    pdf.set_title(_fonts.printable(f"Audit log report: {org['name']}"))
    pdf.set_author("Integration Settings")
    pdf.add_page()
    with _bold(pdf, 18):
        pdf.cell(0, 10, "Audit log report", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    filters = provenance["filters"]
    facts = [
        ("Organization", f"{org['name']} ({org['id']})"),
        ("Period", provenance["period"]["text"]),
        ("Actor filter", filters.get("actor") or "all actors"),
        ("Action filter", filters.get("action") or "all actions"),
        ("Events", f"{provenance['events']} events in this report"),
        ("Generated", f"{provenance['generated_at']} by {provenance['generated_by']}"),
        ("Chain head", f"event #{chain['head_seq']}, hash {chain['head']}"),
        (
            "Sealed",
            f"signed checkpoint #{chain['checkpoint']} (audit key {chain['key_id']})"
            if chain.get("checkpoint")
            else "no signed checkpoint seals this head",
        ),
        ("Signature", f"{manifest_name} signs this file's SHA-256 (Ed25519)"),
    ]
    _facts(pdf, facts)
    pdf.ln(3)
    _section(pdf, "Audit chain verification")
    pdf.set_text_color(*(GREEN if chain["verified"] else RED))
    with _bold(pdf, 10):
        verdict = "INTACT" if chain["verified"] else "BROKEN"
        pdf.multi_cell(0, 6, _fonts.printable(f"{verdict}: {chain['result']}"),
                       new_x="LMARGIN", new_y="NEXT")  # fmt: skip
    pdf.set_text_color(0, 0, 0)
    pdf.set_font(FONT, "", 8)
    pdf.multi_cell(
        0,
        4.5,
        "Each event's hash is HMAC-SHA256, under a key held outside the database, of its "
        "fields and the previous event's hash; signed checkpoints seal the chain's head. The "
        "verification walks the organization's whole log, so an altered, removed or reordered "
        "event is named above. Check this file offline with: python -m core audit verify "
        "--file <this file> --public-key <the organization's audit public key>.",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(3)
    by_action = Counter(r["action"] for r in rows)
    by_actor = Counter(r["actor_email"] or r["actor_type"] for r in rows)
    _section(pdf, "Events by action")
    _bar_chart(pdf, by_action.most_common(12))
    _section(pdf, "Summary by action")
    _count_table(pdf, "Action", by_action.most_common())
    _section(pdf, "Summary by actor")
    _count_table(pdf, "Actor", by_actor.most_common())
    pdf.add_page()
    _section(pdf, f"Events ({len(rows)})")
    bad_seq = None if chain["verified"] else chain.get("first_bad_seq")
    _event_table(pdf, rows, cells, details, bad_seq)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        pdf.output(str(tmp))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _section(pdf: FPDF, title: str) -> None:
    with _bold(pdf, 12):
        pdf.cell(0, 8, _fonts.printable(title), new_x="LMARGIN", new_y="NEXT")


def _facts(pdf: FPDF, facts: list[tuple[str, str]]) -> None:
    for label, value in facts:
        with _bold(pdf, 10):
            pdf.cell(32, 6, label)
        pdf.set_font(FONT, "", 10)
        pdf.multi_cell(0, 6, _fonts.printable(value), new_x="LMARGIN", new_y="NEXT")


def _count_table(pdf: FPDF, label: str, rows: list[tuple[str, int]]) -> None:
    total = sum(n for _, n in rows) or 1
    pdf.set_fill_color(230, 230, 230)
    with _bold(pdf, 9):
        pdf.cell(110, 6, label, border=1, fill=True)
        pdf.cell(30, 6, "Events", border=1, fill=True, align="R")
        pdf.cell(30, 6, "Share", border=1, fill=True, align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", 9)
    for name, n in rows:
        pdf.cell(110, 5.5, _fonts.printable(str(name))[:70], border=1)
        pdf.cell(30, 5.5, str(n), border=1, align="R")
        pdf.cell(30, 5.5, f"{100 * n / total:.1f} %", border=1, align="R")
        pdf.ln(5.5)
    pdf.ln(3)


def _bar_chart(pdf: FPDF, rows: list[tuple[str, int]]) -> None:
    if not rows:
        pdf.set_font(FONT, "", 9)
        pdf.cell(0, 6, "No events match the filters.", new_x="LMARGIN", new_y="NEXT")
        return
    top = max(n for _, n in rows)
    label_w, bar_w, h = 60.0, 140.0, 5.0
    pdf.set_font(FONT, "", 8)
    for name, n in rows:
        if pdf.will_page_break(h + 1):
            pdf.add_page()
        x, y = pdf.l_margin, pdf.get_y()
        pdf.set_xy(x, y)
        pdf.cell(label_w, h, _fonts.printable(name)[:40], align="R")
        pdf.set_fill_color(52, 101, 164)
        pdf.rect(x + label_w + 2, y + 0.6, max(bar_w * n / top, 0.5), h - 1.2, style="F")
        pdf.set_xy(x + label_w + 4 + bar_w * n / top, y)
        pdf.cell(20, h, str(n))
        pdf.set_xy(x, y + h + 0.8)
    pdf.ln(3)


EVENT_COLUMNS: list[tuple[str, str, float]] = [
    ("seq", "#", 14),
    ("ts", "Time (UTC)", 32),
    ("actor", "Actor", 46),
    ("action", "Action", 42),
    ("target", "Target", 50),
    ("details", "Details", 93),
]


def target_key(row: dict[str, Any]) -> tuple[str, str] | None:
    if row.get("target_type") and row.get("target_id"):
        return (str(row["target_type"]), str(row["target_id"]))
    return None


def _event_cells(row: dict[str, Any], targets: dict[tuple[str, str], str]) -> dict[str, str]:
    ts = datetime.fromisoformat(row["ts"])
    key = target_key(row)
    details = json.loads(row["details"]) if isinstance(row["details"], str) else {}
    if key is None:
        target = str(details.get("email") or "")
    else:
        name = targets.get(key)
        target = f"{key[0].replace('_', ' ')} {name}" if name else f"{key[0]} {key[1]}"
    return {
        "seq": str(row["seq"]),
        "ts": f"{ts:%Y-%m-%d %H:%M:%S}",
        "actor": row["actor_email"] or row["actor_type"] or "",
        "action": row["action"],
        "target": target,
    }


def _event_header(pdf: FPDF) -> None:
    pdf.set_fill_color(230, 230, 230)
    with _bold(pdf, 8):
        for _key, title, width in EVENT_COLUMNS:
            pdf.cell(width, 6, title, border=1, fill=True)
    pdf.ln(6)
    pdf.set_font(FONT, "", 7.5)


def _event_table(
    pdf: FPDF,
    rows: list[dict[str, Any]],
    cells: list[dict[str, str]],
    details: list[str],
    bad_seq: int | None,
) -> None:
    if not rows:
        pdf.set_font(FONT, "", 9)
        pdf.cell(0, 6, "No events match the filters.", new_x="LMARGIN", new_y="NEXT")
        return
    _event_header(pdf)
    line_h = 4.0
    for row, cell, detail in zip(rows, cells, details, strict=True):
        cell = {**cell, "details": detail}
        marked = bad_seq is not None and int(row["seq"]) == bad_seq
        if marked:
            cell["details"] = f"ALTERED: the chain breaks at this event. {detail}"
        texts = {k: _fonts.printable(v) for k, v in cell.items()}
        counts = [
            len(pdf.multi_cell(w - 1, line_h, texts[k], dry_run=True, output="LINES"))  # type: ignore[arg-type]
            for k, _t, w in EVENT_COLUMNS
        ]
        height = line_h * max(counts) + 1
        if pdf.will_page_break(height):
            pdf.add_page()
            _event_header(pdf)
        x, y = pdf.l_margin, pdf.get_y()
        if marked:
            pdf.set_fill_color(255, 220, 220)
            pdf.rect(x, y, sum(w for *_, w in EVENT_COLUMNS), height, style="F")
            pdf.set_text_color(*RED)
        for key, _title, width in EVENT_COLUMNS:
            pdf.rect(x, y, width, height)
            pdf.set_xy(x + 0.5, y + 0.5)
            pdf.multi_cell(width - 1, line_h, texts[key])
            x += width
        pdf.set_text_color(0, 0, 0)
        pdf.set_xy(pdf.l_margin, y + height)
