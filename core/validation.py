"""Checks shared by every service for text that comes from outside."""

from __future__ import annotations

import functools
import gzip
import re
import string
import unicodedata
from pathlib import Path

from core.errors import ValidationError

_EMAIL = re.compile(
    r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)

PASSWORD_MIN = 12
PASSWORD_MAX = 128
PASSWORD_RULES = (
    f"Passwords need {PASSWORD_MIN}–{PASSWORD_MAX} characters; any characters count, spaces "
    "too. Common passwords, repeated or sequential characters and your email address "
    "are refused."
)
COMMON_PASSWORDS_FILE = Path(__file__).parent / "orgs" / "data" / "common-passwords.txt.gz"
_SEQUENCES = (
    "0123456789012345678901234567890",
    "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz",
    "qwertyuiopasdfghjklzxcvbnmqwertyuiop",
    "qwertzuiopasdfghjklyxcvbnm",
    "azertyuiopqsdfghjklmwxcvbn",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
    "!@#$%^&*()_+",
)
_LEET = str.maketrans({"@": "a", "4": "a", "0": "o", "3": "e", "$": "s", "5": "s", "7": "t"})
_LEET_ONE = ("i", "l")


@functools.cache
def common_passwords() -> frozenset[str]:
    """Return the list of common passwords shipped with the product, lower-cased."""
    with gzip.open(COMMON_PASSWORDS_FILE, "rt", encoding="utf-8") as fh:
        return frozenset(line.strip() for line in fh if line.strip())


def _sequential(text: str) -> bool:
    """True if `text` is a run along a keyboard row, the alphabet or the digits."""
    return any(text in seq or text in seq[::-1] for seq in _SEQUENCES)


def _repeated_unit(text: str) -> str | None:
    """Return the shortest unit `text` is made of, repeated, when it is one."""
    for size in range(1, len(text) // 2 + 1):
        if len(text) % size == 0 and text[:size] * (len(text) // size) == text:
            return text[:size]
    return None


def _common_forms(text: str) -> set[str]:
    """The forms of `text` checked against the list: as typed, without leading and
    trailing digits and symbols, and with common letter substitutions undone."""
    core_word = text.strip(string.digits + string.punctuation + " ")
    forms = {text, core_word}
    for form in list(forms):
        plain = form.translate(_LEET)
        forms |= {plain, *(plain.replace("1", c) for c in _LEET_ONE)}
        forms |= {f.strip(string.digits + string.punctuation + " ") for f in set(forms)}
    return {f for f in forms if f}


def password(value: object, *, email: str | None = None) -> str:
    """Return the password if it follows PASSWORD_RULES (NIST SP 800-63B); else raise.

    Refused: fewer than 12 or more than 128 characters, control characters, an entry of
    the common-password list (also with digits or symbols around it, or with letters
    swapped for look-alike digits), one repeated character or unit, a keyboard or
    alphabet run, fewer than five different characters, or the person's email address
    (or its part before the @). No composition rules beyond that.
    """
    if not isinstance(value, str) or not (PASSWORD_MIN <= len(value) <= PASSWORD_MAX):
        raise ValidationError(PASSWORD_RULES, field="password")
    if not value.isprintable():
        raise ValidationError(PASSWORD_RULES, field="password")
    text = unicodedata.normalize("NFKC", value).casefold()
    squeezed = "".join(text.split())
    unit = _repeated_unit(squeezed) or squeezed
    common = common_passwords()
    weak = (
        len(set(squeezed)) < 5
        or _sequential(squeezed)
        or _sequential(unit)
        or any(form in common for form in _common_forms(squeezed) | _common_forms(unit))
    )
    if not weak and email:
        address = email.strip().casefold()
        local = address.split("@", 1)[0]
        weak = address in text or (len(local) >= 4 and local in text)
    if weak:
        raise ValidationError(PASSWORD_RULES, field="password")
    return value


def display_text(value: object, field: str, *, max_len: int = 100) -> str:
    """Return `value` trimmed if it is 1–max_len printable characters; else raise."""
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be text", field=field)
    text = value.strip()
    if not text:
        raise ValidationError(f"{field} must not be empty", field=field)
    if len(text) > max_len:
        raise ValidationError(
            f"{field} must be at most {max_len} characters (got {len(text)})", field=field
        )
    if not text.isprintable():
        raise ValidationError(f"{field} must contain only printable characters", field=field)
    return text


def email(value: object) -> str:
    """Return the address lower-cased if it looks like one; else raise ValidationError."""
    if not isinstance(value, str):
        raise ValidationError("email must be text", field="email")
    text = value.strip().lower()
    if len(text) > 254 or not _EMAIL.match(text):
        raise ValidationError(f"{value!r} is not a valid email address", field="email")
    return text
