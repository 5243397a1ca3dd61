"""The audit keyring: the secret that keys the chains and signs their checkpoints.

One audit key (`Settings.audit_key`: INTEGRATION_AUDIT_KEY, or data/audit_key, 0600) is
kept outside the database. From it two keys are derived, each for one purpose:

- the chain key (HMAC-SHA256) that hashes every audit event, so a database writer who
  does not hold it cannot re-chain an edited log;
- an Ed25519 key pair that signs checkpoints and export manifests; its public half is
  what auditors are given (`python -m core audit public-key`).

A key is named by its id: the first 16 hex digits of the SHA-256 of its raw public key.
Retired keys (`Settings.retired_audit_keys`) still verify what they sealed; only the
current key seals anything new.

Every process of one deployment must hold the same audit key. `keyring_for(session)`
finds it: the keyring bound to the session's engine (`bind`), else the one configured by
the environment (`Settings.from_env()`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from core.config import Settings

_CHAIN_LABEL = b"integration-settings audit chain v1"
_SIGNING_LABEL = b"integration-settings audit signing v1"


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """Return the id of a public key: 16 hex digits of the SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class AuditKey:
    """One audit key's derived parts: the HMAC chain key and the Ed25519 key pair."""

    id: str
    chain_key: bytes = field(repr=False)
    signing_key: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def from_secret(cls, secret: bytes) -> AuditKey:
        chain = hmac.new(secret, _CHAIN_LABEL, hashlib.sha256).digest()
        seed = hmac.new(secret, _SIGNING_LABEL, hashlib.sha256).digest()
        signing = Ed25519PrivateKey.from_private_bytes(seed)
        return cls(key_id_of(signing.public_key()), chain, signing)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()

    def mac(self, data: bytes) -> str:
        """Return HMAC-SHA256 of `data` under the chain key, as hex."""
        return hmac.new(self.chain_key, data, hashlib.sha256).hexdigest()

    def sign(self, data: bytes) -> str:
        """Return the Ed25519 signature of `data`, base64."""
        return base64.b64encode(self.signing_key.sign(data)).decode()


@dataclass(frozen=True)
class AuditKeyring:
    """The current audit key, the retired ones, and where checkpoint copies are kept."""

    current: AuditKey
    retired: tuple[AuditKey, ...] = ()
    digest_dir: Path | None = None  # copies of signed checkpoints, outside the database

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditKeyring:
        current = AuditKey.from_secret(settings.audit_key)
        retired = tuple(
            k for k in map(AuditKey.from_secret, settings.retired_audit_keys) if k.id != current.id
        )
        return cls(current, retired, settings.data_dir / "audit")

    @classmethod
    def from_secret(cls, secret: bytes, digest_dir: Path | None = None) -> AuditKeyring:
        return cls(AuditKey.from_secret(secret), (), digest_dir)

    def get(self, key_id: str | None) -> AuditKey | None:
        """Return the key (current or retired) with this id, or None."""
        for key in (self.current, *self.retired):
            if key.id == key_id:
                return key
        return None

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        return {k.id: k.public_key for k in (self.current, *self.retired)}


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    """Return a public key as PEM (SubjectPublicKeyInfo), the form `openssl pkey` reads."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """Read an Ed25519 public key from PEM, or from base64 of its 32 raw bytes.

    Raise ValueError if it is neither.
    """
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(text)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the public key is not an Ed25519 key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise ValueError("the public key is neither PEM nor base64") from None
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key has 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


_bound: weakref.WeakKeyDictionary[Any, AuditKeyring] = weakref.WeakKeyDictionary()
_default: tuple[tuple[str | None, ...], AuditKeyring] | None = None
_lock = threading.Lock()


def _pool_of(bind: Engine | Connection) -> Any:
    return bind.engine.pool


def bind(engine: Engine, keyring: AuditKeyring) -> None:
    """Make sessions on `engine` (and engines sharing its pool) use `keyring`."""
    _bound[_pool_of(engine)] = keyring


def from_env() -> AuditKeyring:
    """Return the keyring the environment configures (cached while the environment holds)."""
    global _default
    import os

    marker = tuple(
        os.environ.get(k)
        for k in ("INTEGRATION_AUDIT_KEY", "INTEGRATION_AUDIT_KEY_RETIRED", "INTEGRATION_DATA_DIR")
    )
    with _lock:
        if _default is None or _default[0] != marker:
            _default = (marker, AuditKeyring.from_settings(Settings.from_env()))
        return _default[1]


def keyring_for_bind(bind_: Engine | Connection) -> AuditKeyring:
    """Return the keyring for an engine or connection: the bound one, else the environment's."""
    found = _bound.get(_pool_of(bind_))
    return found if found is not None else from_env()


def keyring_for(session: Session) -> AuditKeyring:
    """Return the keyring for the session's database: the bound one, else the environment's."""
    return keyring_for_bind(session.get_bind())
