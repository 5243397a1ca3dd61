"""What the middlewares share: the verified principal and the one JSON error shape.

The ASGI middleware puts the principal in ``scope["integration.principal"]`` (and in
``scope["state"]["principal"]``, where Starlette's ``request.state.principal`` finds it);
the WSGI middleware puts it in ``environ["integration.principal"]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from core.auth.contract import Verdict

PRINCIPAL_KEY = "integration.principal"
# Where an ASGI app that declares `reports_status = True` puts the HTTP status it answers
# with, so the middleware can record it without wrapping `send` (see ApiKeyMiddleware).
STATUS_KEY = "integration.status"
AUTHENTICATE_HEADER = ("WWW-Authenticate", "x-api-key")
DEFAULT_EXEMPT_PATHS = frozenset({"/healthz"})

UNAVAILABLE_CODE = "auth_unavailable"
UNAVAILABLE_MESSAGE = "Authentication is temporarily unavailable. Retry shortly."


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller a valid key identifies: its organization, key id and key name."""

    org_id: str
    key_id: str
    key_name: str

    def to_dict(self) -> dict[str, str]:
        return {"org": self.org_id, "key_id": self.key_id, "key_name": self.key_name}


def principal_of(verdict: Verdict) -> Principal:
    """Return the principal of a valid verdict (its ids are set for every valid key)."""
    assert verdict.key_id is not None and verdict.org_id is not None
    return Principal(verdict.org_id, verdict.key_id, verdict.key_name or "")


def error_json(code: str, message: str) -> bytes:
    """Return the JSON body every failure answers: ``{"error": {"code", "message"}}``."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


_VERDICT_BODIES: dict[str, bytes] = {}


def verdict_body(verdict: Verdict) -> bytes:
    """Return the (cached) JSON error body of a failed verdict."""
    body = _VERDICT_BODIES.get(verdict.code)
    if body is None:
        body = _VERDICT_BODIES[verdict.code] = error_json(verdict.code.value, verdict.message)
    return body
