"""Settings read from the environment, with the embedded default's files in the data dir.

DATABASE_URL                 SQLAlchemy URL (default: sqlite file in the data directory)
INTEGRATION_DATA_DIR         data directory (default: ./data)
INTEGRATION_PEPPER           server pepper for key hashes (default: data/pepper, 0600)
INTEGRATION_AUDIT_KEY        secret that keys the audit chains and signs their checkpoints
                             (default: data/audit_key, 0600); keep it outside the database
INTEGRATION_AUDIT_KEY_RETIRED  earlier audit keys, comma-separated, still trusted to verify
                             (default: data/audit_key.retired, one per line, if present)
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ValidationError

PEPPER_FILE = "pepper"
AUDIT_KEY_FILE = "audit_key"
AUDIT_KEY_RETIRED_FILE = "audit_key.retired"
DATABASE_FILE = "integration.db"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    pepper_override: str | None = field(default=None, repr=False)
    audit_key_override: str | None = field(default=None, repr=False)
    audit_keys_retired: tuple[str, ...] | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Read settings from `env` (default: the process environment)."""
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("INTEGRATION_DATA_DIR") or "data").expanduser().resolve()
        url = env.get("DATABASE_URL") or f"sqlite:///{data_dir / DATABASE_FILE}"
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        pepper = env.get("INTEGRATION_PEPPER") or None
        if pepper is not None and len(pepper) < 16:
            raise ValidationError("INTEGRATION_PEPPER must be at least 16 characters")
        audit_key = env.get("INTEGRATION_AUDIT_KEY") or None
        if audit_key is not None and len(audit_key) < 32:
            raise ValidationError("INTEGRATION_AUDIT_KEY must be at least 32 characters")
        retired_text = env.get("INTEGRATION_AUDIT_KEY_RETIRED")
        retired = None
        if retired_text is not None:
            retired = tuple(k.strip() for k in retired_text.split(",") if k.strip())
            if any(len(k) < 32 for k in retired):
                raise ValidationError(
                    "each INTEGRATION_AUDIT_KEY_RETIRED key must be 32+ characters"
                )
        return cls(
            data_dir=data_dir,
            database_url=url,
            pepper_override=pepper,
            audit_key_override=audit_key,
            audit_keys_retired=retired,
        )

    @property
    def pepper(self) -> bytes:
        """Return the key-hash pepper; the embedded default creates data/pepper (0600) once."""
        if self.pepper_override is not None:
            return self.pepper_override.encode()
        return read_or_create_secret(self.data_dir / PEPPER_FILE)

    @property
    def audit_key(self) -> bytes:
        """Return the audit key; the embedded default creates data/audit_key (0600) once."""
        if self.audit_key_override is not None:
            return self.audit_key_override.encode()
        return read_or_create_secret(self.data_dir / AUDIT_KEY_FILE)

    @property
    def retired_audit_keys(self) -> tuple[bytes, ...]:
        """Return earlier audit keys still trusted for verification (oldest first)."""
        if self.audit_keys_retired is not None:
            return tuple(k.encode() for k in self.audit_keys_retired)
        path = self.data_dir / AUDIT_KEY_RETIRED_FILE
        if not path.is_file():
            return ()
        lines = [line.strip() for line in path.read_text().splitlines()]
        return tuple(line.encode() for line in lines if line and not line.startswith("#"))


def read_or_create_secret(path: Path, nbytes: int = 32) -> bytes:
    """Return the hex secret stored at `path`, creating it owner-readable only if absent.

    The file appears atomically with its content (written aside, then hard-linked), so a
    second process starting at the same moment reads the same secret, never an empty file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(nbytes) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    value = path.read_text().strip()
    if len(value) < 32:
        raise ValidationError(f"secret file {path} is empty or too short")
    return value.encode()
