"""Public identifiers: a type prefix and 20 base62 characters, roughly time-ordered."""

from __future__ import annotations

import secrets
import time

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


_PAIRS = [a + b for a in BASE62 for b in BASE62]  # two digits at a time: half the divisions


def b62encode(number: int, width: int = 0) -> str:
    """Encode a non-negative integer in base62, left-padded with '0' to `width`."""
    if number < 0:
        raise ValueError("negative number")
    pairs = []
    while number:
        number, rem = divmod(number, 3844)
        pairs.append(_PAIRS[rem])
    return "".join(reversed(pairs)).lstrip("0").rjust(width, "0")


def random_b62(length: int) -> str:
    """Return `length` uniformly random base62 characters from the OS CSPRNG."""
    # One draw below 62**length: uniform over every string, and one CSPRNG call, not one
    # per character.
    return b62encode(secrets.randbelow(62**length), length)


def new_id(prefix: str) -> str:
    """Return a new identifier such as ``key_0Pq3…``: 8 chars of milliseconds + 12 random."""
    return f"{prefix}_{b62encode(int(time.time() * 1000), 8)}{random_b62(12)}"
