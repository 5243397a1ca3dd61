"""The API key format: ``isk_`` + 30 random base62 characters + 6-character CRC32 checksum.

30 base62 characters carry 178 bits of randomness. The checksum (CRC32 of the prefix and
random part, base62, zero-padded) lets scanners and the verifier reject look-alikes
without a database call. The key is stored only as HMAC-SHA256 under a server pepper.
"""

from __future__ import annotations

import hashlib
import hmac
import zlib

from core.ids import BASE62, b62encode, random_b62

PREFIX = "isk_"
RANDOM_LEN = 30
CHECKSUM_LEN = 6
KEY_LEN = len(PREFIX) + RANDOM_LEN + CHECKSUM_LEN
_B62 = frozenset(BASE62)


def checksum(body: str) -> str:
    """Return the 6-character base62 CRC32 of `body` (prefix + random part)."""
    return b62encode(zlib.crc32(body.encode()), CHECKSUM_LEN)


def generate() -> str:
    """Return a new random key with its checksum."""
    body = PREFIX + random_b62(RANDOM_LEN)
    return body + checksum(body)


def has_valid_shape(key: str) -> bool:
    """Return whether `key` has our prefix, length, alphabet and a correct checksum."""
    if len(key) != KEY_LEN or not key.startswith(PREFIX):
        return False
    tail = key[len(PREFIX) :]
    if not _B62.issuperset(tail):
        return False
    return hmac.compare_digest(checksum(key[:-CHECKSUM_LEN]), key[-CHECKSUM_LEN:])


def hash_key(key: str, pepper: bytes) -> str:
    """Return HMAC-SHA256(pepper, key) in hex: the only form of a key that is stored."""
    return hmac.digest(pepper, key.encode(), hashlib.sha256).hex()


def display_parts(key: str) -> tuple[str, str]:
    """Return (prefix, last4), the parts shown masked as ``isk_…abcd``."""
    return PREFIX, key[-4:]
