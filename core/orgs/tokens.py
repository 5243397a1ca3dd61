"""One-time secrets for people: invitation and reset links, console sessions, handoffs.

Each is a type prefix and 256 random bits (base64url), so a scanner can tell them apart;
only the SHA-256 of a secret is ever stored, and look-ups go by that hash.
"""

from __future__ import annotations

import hashlib
import re
import secrets

INVITATION = "inv_"
PASSWORD_RESET = "pwr_"  # noqa: S105
SESSION = "cs_"
HANDOFF = "hof_"
SETUP = "setup_"

_SHAPE = re.compile(r"^[a-z]{2,5}_[A-Za-z0-9_-]{43}$")


def new_token(prefix: str) -> str:
    """Return a new secret: `prefix` and 43 base64url characters (256 bits)."""
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """Return the hex SHA-256 under which a secret is stored."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def well_formed(token: object, prefix: str) -> bool:
    """Return whether `token` has the shape of a secret of this type (no database call)."""
    return (
        isinstance(token, str)
        and token.startswith(prefix)
        and len(token) == len(prefix) + 43
        and _SHAPE.match(token) is not None
    )
