"""Standard Webhooks signatures and the encryption of signing secrets at rest.

A secret is ``whsec_`` + base64 of 32 random bytes. A message is signed as
``v1,`` + base64(HMAC-SHA256(secret bytes, "{webhook-id}.{webhook-timestamp}.{body}")),
one signature per live secret, space-separated, so receivers verifying with any
Standard Webhooks library accept it during a rotation with either secret.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.errors import ValidationError

SECRET_PREFIX = "whsec_"  # noqa: S105
SECRET_BYTES = 32
_NONCE_BYTES = 12


def generate_secret() -> str:
    """Return a new signing secret, ``whsec_`` followed by base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@functools.lru_cache(maxsize=256)
def secret_bytes(secret: str) -> bytes:
    """Return the HMAC key inside a ``whsec_`` secret; raise ValidationError if malformed."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValidationError("a signing secret starts with 'whsec_'")
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except ValueError:
        raise ValidationError("a signing secret is whsec_ followed by base64") from None
    if len(raw) < 24:
        raise ValidationError("a signing secret holds at least 24 random bytes")
    return raw


@functools.lru_cache(maxsize=256)
def _keyed(secret: str) -> hmac.HMAC:
    # The HMAC state after the key schedule, copied for each message (never updated itself).
    return hmac.new(secret_bytes(secret), digestmod=hashlib.sha256)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``v1,<base64>`` signature of one message under one secret."""
    mac = _keyed(secret).copy()
    mac.update(f"{msg_id}.{timestamp}.".encode())
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode()


def headers(secrets_: list[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Return the Standard Webhooks headers for `body`, signed with every secret given."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets_),
        "content-type": "application/json",
        "user-agent": "IntegrationSettings-Webhooks/1",
    }


def verify(secret: str, msg_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """Return whether any v1 signature in `header` matches (constant-time comparison)."""
    expected = sign(secret, msg_id, timestamp, body)
    return any(hmac.compare_digest(expected, part) for part in header.split(" ") if part)


def encrypt(key: bytes, plaintext: str, context: str) -> str:
    """Return `plaintext` sealed with AES-256-GCM under `key`, bound to `context`."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), context.encode())
    return base64.b64encode(nonce + sealed).decode()


def decrypt(key: bytes, ciphertext: str, context: str) -> str:
    """Return the plaintext sealed by `encrypt`; raise ValidationError if it does not open."""
    try:
        raw = base64.b64decode(ciphertext)
        opened = AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode())
    except (InvalidTag, ValueError):
        raise ValidationError(
            "a signing secret cannot be decrypted: the webhook secret key has changed"
        ) from None
    return opened.decode()
