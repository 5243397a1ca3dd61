"""The authentication contract: how a request carries a key, and the fixed result codes.

| code                    | HTTP | when                                               |
|-------------------------|------|----------------------------------------------------|
| valid                   | 200  | key known, not revoked, not expired                |
| missing_credentials     | 401  | no key in the request                              |
| malformed_credentials   | 401  | wrong scheme, empty key, bad characters, over-long |
| invalid_key             | 401  | checksum fails or key unknown                      |
| key_expired             | 401  | past expires_at                                    |
| key_revoked             | 401  | revoked (or past the roll grace period)            |

A key arrives as ``Authorization: x-api-key <key>`` (scheme case-insensitive) or as
``X-API-Key: <key>``. If both carry a key they must agree. A repeated header is malformed.
An Authorization header with another scheme (e.g. Bearer) is ignored when X-API-Key is
present, and malformed otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

SCHEME = "x-api-key"
MAX_CREDENTIAL_LEN = 256  # far above a real key (40 characters); longer is malformed
_KEY_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")


class Code(StrEnum):
    VALID = "valid"
    MISSING_CREDENTIALS = "missing_credentials"
    MALFORMED_CREDENTIALS = "malformed_credentials"
    INVALID_KEY = "invalid_key"
    KEY_EXPIRED = "key_expired"
    KEY_REVOKED = "key_revoked"


MESSAGES: dict[Code, str] = {
    Code.VALID: "The API key is valid.",
    Code.MISSING_CREDENTIALS: "No API key was sent. Send 'Authorization: x-api-key YOUR_KEY'.",
    Code.MALFORMED_CREDENTIALS: (
        "The credentials are malformed. Send exactly one 'Authorization: x-api-key YOUR_KEY' "
        "header (or 'X-API-Key: YOUR_KEY') with the key as issued."
    ),
    Code.INVALID_KEY: "The API key is not valid.",
    Code.KEY_EXPIRED: "The API key has expired. Create a new key in Integration Settings.",
    Code.KEY_REVOKED: "The API key has been revoked.",
}

HTTP_STATUS: dict[Code, int] = {code: (200 if code is Code.VALID else 401) for code in Code}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of authenticating one request; never holds the key itself."""

    code: Code
    key_id: str | None = None
    org_id: str | None = None
    key_name: str | None = None

    @property
    def valid(self) -> bool:
        return self.code is Code.VALID

    @property
    def message(self) -> str:
        return MESSAGES[self.code]

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def error_body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code.value, "message": self.message}}

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "valid": self.valid,
            "code": self.code.value,
            "message": self.message,
        }
        if self.key_id is not None:
            out.update(key_id=self.key_id, org=self.org_id, key_name=self.key_name)
        return out


MISSING = Verdict(Code.MISSING_CREDENTIALS)
MALFORMED = Verdict(Code.MALFORMED_CREDENTIALS)
INVALID = Verdict(Code.INVALID_KEY)

HeaderValues = str | bytes | Sequence[str | bytes] | None


def _values(raw: HeaderValues) -> list[str] | None:
    """Normalize a header to a list of values; None if any value is not decodable text."""
    if raw is None:
        return []
    items = [raw] if isinstance(raw, (str, bytes)) else list(raw)
    out = []
    for item in items:
        if isinstance(item, bytes):
            try:
                item = item.decode("latin-1")
            except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
                return None
        out.append(item)
    return out


def _clean_key(text: str) -> str | None:
    key = text.strip(" \t")
    if not key or len(key) > MAX_CREDENTIAL_LEN or not _KEY_CHARS.issuperset(key):
        return None
    return key


def extract_key(authorization: HeaderValues, x_api_key: HeaderValues) -> str | Verdict:
    """Return the key a request carries, or the Verdict (missing/malformed) saying why not."""
    auth_values = _values(authorization)
    xkey_values = _values(x_api_key)
    if auth_values is None or xkey_values is None:
        return MALFORMED
    if len(auth_values) > 1 or len(xkey_values) > 1:
        return MALFORMED
    from_auth: str | None = None
    auth_other_scheme = False
    if auth_values:
        value = auth_values[0]
        if len(value) > MAX_CREDENTIAL_LEN + 32:
            return MALFORMED
        stripped = value.strip(" \t")
        scheme, _, rest = stripped.partition(" ")
        if scheme.lower() == SCHEME:
            key = _clean_key(rest)
            if key is None:
                return MALFORMED
            from_auth = key
        elif stripped:
            auth_other_scheme = True
        else:
            return MALFORMED
    from_header: str | None = None
    if xkey_values:
        value = xkey_values[0]
        if len(value) > MAX_CREDENTIAL_LEN + 32:
            return MALFORMED
        key = _clean_key(value)
        if key is None:
            return MALFORMED
        from_header = key
    if from_auth is not None and from_header is not None:
        return from_auth if from_auth == from_header else MALFORMED
    if from_auth is not None:
        return from_auth
    if from_header is not None:
        return from_header
    return MALFORMED if auth_other_scheme else MISSING


def key_from_text(text: str) -> str | Verdict:
    """Return the key in a header value (``x-api-key …``) or a bare key, as for the CLI."""
    stripped = text.strip()
    if not stripped:
        return MISSING
    if stripped.lower().startswith("authorization:"):
        stripped = stripped.split(":", 1)[1]
        return extract_key(stripped, None)
    if stripped.lower().startswith("x-api-key:"):
        return extract_key(None, stripped.split(":", 1)[1])
    if " " in stripped or "\t" in stripped:
        return extract_key(stripped, None)
    return extract_key(None, stripped)
