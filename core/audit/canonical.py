"""The canonical byte forms that audit hashes and signatures cover.

Everything signed or keyed is serialized with the JSON Canonicalization Scheme (RFC 8785):
object members sorted by their UTF-16 code units, no insignificant whitespace, strings as
UTF-8 with the minimal escapes, numbers in their shortest ECMAScript form. Any JCS
implementation in any language reproduces these bytes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import rfc8785


def jcs(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of a JSON value."""
    return rfc8785.dumps(value)


def jcs_text(value: Any) -> str:
    return jcs(value).decode("utf-8")


def timestamp(ts: datetime) -> str:
    """Return a time as the audit log writes it: UTC, microseconds, 'Z' (RFC 3339)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
