"""Audit exports an auditor can check offline: provenance in the file, a signed manifest beside it.

Every export `F` carries its provenance (organization, period, filters, generated at / by,
event count, chain head and verification result) inside the file — the first line of
JSON Lines and CSV, the Parquet file's key-value metadata, the PDF's cover — and comes with
`F.manifest.json`, signed with the audit key's Ed25519 key:

    {"type": "audit.export.manifest", "v": 1, "format": "csv",
     "file": {"name": "F", "bytes": 1234, "sha256": "…"},
     "provenance": {…the same object as in the file…},
     "records": {"seqs": [1, 2, …], "sha256": ["…", "…", …]},
     "key_id": "…", "public_key": "<base64 of the 32-byte Ed25519 key>",
     "signature": "<base64 Ed25519 signature>"}

The signature covers the RFC 8785 canonical JSON of the manifest without "signature".
Each record digest is the SHA-256 (hex) of the RFC 8785 form of the event's *canonical
record*: an object with the 11 export columns as strings — null as "", seq in decimal, ts
as written ("2026-04-01T09:00:00.000000Z"), details as the RFC 8785 text of the details
object. `verify_file` re-reads the file without any database and names the first record
that differs; README "For auditors" says how to do the same by hand.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.audit.canonical import jcs, jcs_text, timestamp
from core.audit.keyring import AuditKey, key_id_of
from core.audit.service import EXPORT_COLUMNS

MANIFEST_SUFFIX = ".manifest.json"
PARQUET_METADATA_KEY = b"integration_settings.audit.provenance"
CSV_PROVENANCE_PREFIX = "# provenance: "
MAX_MANIFEST_BYTES = 256 * 1024 * 1024

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
        ("details", pa.string()),  # RFC 8785 JSON text
        ("prev_hash", pa.string()),
        ("hash", pa.string()),
    ]
)


def manifest_path(path: Path) -> Path:
    """Return where an export's signed manifest is written: beside it, `.manifest.json` added."""
    path = Path(path)
    return path.with_name(path.name + MANIFEST_SUFFIX)


def canonical_record(row: dict[str, Any]) -> dict[str, str]:
    """Return an exported event as its canonical record (every column a string).

    `details` may be the object or its JSON text; `ts` a datetime or the written text.
    """
    out: dict[str, str] = {}
    for col in EXPORT_COLUMNS:
        value = row.get(col)
        if col == "details":
            obj = json.loads(value) if isinstance(value, str) else (value or {})
            out[col] = jcs_text(obj)
        elif col == "ts" and isinstance(value, datetime):
            out[col] = timestamp(value)
        else:
            out[col] = "" if value is None else str(value)
    return out


def record_digest(row: dict[str, Any]) -> str:
    """Return the SHA-256 (hex) of an exported event's canonical record (RFC 8785)."""
    return hashlib.sha256(jcs(canonical_record(row))).hexdigest()


# -- writing ---------------------------------------------------------------------------------


def write_jsonl(path: Path, provenance: dict[str, Any], rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(json.dumps({"provenance": provenance}, ensure_ascii=False) + "\n")
        for row in rows:
            fh.write(json.dumps({**row, "details": json.loads(row["details"])}, ensure_ascii=False))
            fh.write("\n")


def write_csv(path: Path, provenance: dict[str, Any], rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(CSV_PROVENANCE_PREFIX + json.dumps(provenance, ensure_ascii=False) + "\r\n")
        writer = csv.DictWriter(fh, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def write_parquet(path: Path, provenance: dict[str, Any], rows: Sequence[dict[str, Any]]) -> None:
    data = [{**r, "ts": datetime.fromisoformat(r["ts"]).astimezone(UTC)} for r in rows]
    table = pa.Table.from_pylist(data, schema=PARQUET_SCHEMA)
    meta = {PARQUET_METADATA_KEY: json.dumps(provenance, ensure_ascii=False).encode()}
    table = table.replace_schema_metadata(meta)
    pq.write_table(table, path, compression="zstd")


def sign_manifest(
    path: Path,
    fmt: str,
    provenance: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    key: AuditKey,
    *,
    name: str | None = None,
) -> dict[str, Any]:
    """Return the signed manifest of the export written at `path` (to be named `name`)."""
    data = Path(path).read_bytes()
    raw = key.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    manifest: dict[str, Any] = {
        "type": "audit.export.manifest",
        "v": 1,
        "format": fmt,
        "file": {
            "name": name or Path(path).name,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
        "provenance": provenance,
        "records": {
            "seqs": [int(r["seq"]) for r in rows],
            "sha256": [record_digest(r) for r in rows],
        },
        "key_id": key.id,
        "public_key": base64.b64encode(raw).decode(),
    }
    manifest["signature"] = key.sign(jcs(manifest))
    return manifest


# -- reading back, without the database ------------------------------------------------------


class ExportFileError(Exception):
    """The file cannot be read as an export of the manifest's format."""


@dataclass
class _Read:
    provenance: dict[str, Any] | None
    records: list[dict[str, Any]] = field(default_factory=list)
    where: list[str] = field(default_factory=list)  # "line 3", "row 2"


def _read_jsonl(data: bytes) -> _Read:
    lines = data.decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise ExportFileError("the file is empty")
    try:
        head = json.loads(lines[0])
        out = _Read(head.get("provenance") if isinstance(head, dict) else None)
        for number, line in enumerate(lines[1:], start=2):
            out.records.append(json.loads(line))
            out.where.append(f"line {number}")
    except ValueError as exc:
        raise ExportFileError(f"not JSON Lines: {exc}") from None
    return out


def _read_csv(data: bytes) -> _Read:
    text = data.decode("utf-8")
    first, _, rest = text.partition("\n")
    first = first.removesuffix("\r")
    if not first.startswith(CSV_PROVENANCE_PREFIX):
        raise ExportFileError("the first line is not the provenance line")
    try:
        out = _Read(json.loads(first[len(CSV_PROVENANCE_PREFIX) :]))
    except ValueError as exc:
        raise ExportFileError(f"the provenance line is not JSON: {exc}") from None
    reader = csv.DictReader(io.StringIO(rest, newline=""))
    if list(reader.fieldnames or []) != list(EXPORT_COLUMNS):
        raise ExportFileError("the CSV header is not the export's columns")
    for row in reader:
        out.records.append(dict(row))
        out.where.append(f"line {reader.line_num + 1}")
    return out


def _read_parquet(data: bytes) -> _Read:
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise ExportFileError(f"not a Parquet file: {exc}") from None
    meta = (table.schema.metadata or {}).get(PARQUET_METADATA_KEY)
    out = _Read(json.loads(meta) if meta else None)
    for number, row in enumerate(table.to_pylist(), start=1):
        out.records.append(row)
        out.where.append(f"row {number}")
    return out


_READERS: dict[str, Callable[[bytes], _Read]] = {
    "jsonl": _read_jsonl,
    "csv": _read_csv,
    "parquet": _read_parquet,
}


@dataclass(frozen=True)
class FileReport:
    ok: bool
    message: str
    records: int = 0
    first_bad_seq: int | None = None
    key_id: str | None = None
    trusted_key: bool = False
    provenance: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "message": self.message,
            "records": self.records,
            "first_bad_seq": self.first_bad_seq,
            "key_id": self.key_id,
            "trusted_key": self.trusted_key,
        }


def load_manifest(path: Path) -> dict[str, Any]:
    """Read a manifest file; raise ExportFileError if it is missing, too big or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise ExportFileError(f"no manifest at {path}")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ExportFileError(f"{path} is too large to be a manifest")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ExportFileError(f"{path} is not a JSON manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("type") != "audit.export.manifest":
        raise ExportFileError(f"{path} is not an audit export manifest")
    return manifest


def _signature_problem(
    manifest: dict[str, Any], trusted: Ed25519PublicKey | None
) -> tuple[str | None, bool]:
    """Return (problem or None, whether the key was a trusted one given by the caller)."""
    try:
        embedded = Ed25519PublicKey.from_public_bytes(base64.b64decode(manifest["public_key"]))
        signature = base64.b64decode(manifest["signature"])
    except (KeyError, TypeError, ValueError):
        return "the manifest carries no valid public key or signature", False
    key = trusted or embedded
    if trusted is not None and key_id_of(trusted) != manifest.get("key_id"):
        return (
            f"the manifest was signed by key {manifest.get('key_id')}, not by the public key "
            f"given ({key_id_of(trusted)})",
            True,
        )
    if key_id_of(embedded) != manifest.get("key_id"):
        return "the manifest's key id does not match its public key", trusted is not None
    body = {k: v for k, v in manifest.items() if k != "signature"}
    try:
        key.verify(signature, jcs(body))
    except (InvalidSignature, ValueError):
        return "the manifest's signature does not verify: the manifest was altered", (
            trusted is not None
        )
    return None, trusted is not None


def verify_file(
    path: Path,
    *,
    manifest: Path | None = None,
    public_key: Ed25519PublicKey | None = None,
) -> FileReport:
    """Check an export against its signed manifest, without the database.

    Return a report naming the first altered, removed or added record (or the file or
    manifest as a whole). With `public_key`, the manifest must be signed by that key;
    without it, by the key the manifest carries (`trusted_key` False).
    """
    path = Path(path)
    if not path.is_file():
        return FileReport(False, f"no file at {path}")
    try:
        m = load_manifest(manifest or manifest_path(path))
    except ExportFileError as exc:
        return FileReport(False, str(exc))
    problem, trusted = _signature_problem(m, public_key)
    key_id = m.get("key_id")
    if problem:
        return FileReport(False, problem, key_id=key_id, trusted_key=trusted)
    data = path.read_bytes()
    fmt = m.get("format")
    seqs: list[int] = list(m.get("records", {}).get("seqs", []))
    digests: list[str] = list(m.get("records", {}).get("sha256", []))
    if fmt in _READERS:
        try:
            read = _READERS[fmt](data)
        except (ExportFileError, UnicodeDecodeError) as exc:
            return FileReport(False, f"the file cannot be read as {fmt}: {exc}", key_id=key_id)
        bad = _first_bad_record(read, seqs, digests)
        if bad is not None:
            seq, message = bad
            return FileReport(
                False, message, len(read.records), seq, key_id=key_id, trusted_key=trusted
            )
        if read.provenance != m.get("provenance"):
            return FileReport(
                False,
                "the provenance in the file differs from the signed manifest's",
                len(read.records),
                key_id=key_id,
                trusted_key=trusted,
            )
    if hashlib.sha256(data).hexdigest() != m.get("file", {}).get("sha256"):
        return FileReport(
            False,
            "the file's SHA-256 differs from the signed manifest's: the file was altered",
            key_id=key_id,
            trusted_key=trusted,
        )
    prov = m.get("provenance") or {}
    verdict = "intact" if (prov.get("chain") or {}).get("verified") else "BROKEN"
    return FileReport(
        True,
        f"export intact: {len(digests)} records match the manifest signed by key {key_id}; "
        f"the audit chain was {verdict} when it was exported",
        len(digests),
        key_id=key_id,
        trusted_key=trusted,
        provenance=prov,
    )


def _first_bad_record(read: _Read, seqs: list[int], digests: list[str]) -> tuple[int, str] | None:
    for i, row in enumerate(read.records):
        where = read.where[i]
        if i >= len(digests):
            return _seq_of(row), f"record at {where} (event #{_seq_of(row)}) was added"
        try:
            digest = record_digest(row)
        except (ValueError, TypeError):
            digest = ""
        if digest != digests[i]:
            seq = seqs[i]
            return seq, f"record at {where} (event #{seq}) was altered"
    if len(read.records) < len(digests):
        seq, missing = seqs[len(read.records)], len(digests) - len(read.records)
        return seq, f"the record of event #{seq} was removed" + (
            f", with the {missing - 1} after it" if missing > 1 else ""
        )
    return None


def _seq_of(row: dict[str, Any]) -> int:
    try:
        return int(row.get("seq") or 0)
    except (TypeError, ValueError):
        return 0
