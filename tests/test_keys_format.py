"""The key format: prefix, randomness, checksum; and the stored hash."""

from __future__ import annotations

import pytest

from core.ids import BASE62
from core.keys import format as keyformat


def test_generated_key_has_prefix_random_part_and_checksum() -> None:
    key = keyformat.generate()
    assert key.startswith("isk_")
    assert len(key) == keyformat.KEY_LEN == 4 + 30 + 6
    assert set(key[4:]) <= set(BASE62)
    assert keyformat.checksum(key[:-6]) == key[-6:]
    assert keyformat.has_valid_shape(key)


def test_random_part_carries_at_least_160_bits() -> None:
    import math

    assert keyformat.RANDOM_LEN * math.log2(62) >= 160


def test_keys_do_not_repeat() -> None:
    keys = {keyformat.generate() for _ in range(2000)}
    assert len(keys) == 2000


@pytest.mark.parametrize("position", [4, 10, 33, 34, 39])
def test_any_single_character_change_fails_the_checksum(position: int) -> None:
    key = keyformat.generate()
    replacement = "A" if key[position] != "A" else "B"
    altered = key[:position] + replacement + key[position + 1 :]
    assert not keyformat.has_valid_shape(altered)


@pytest.mark.parametrize(
    "candidate",
    ["", "isk_", "ghp_" + "a" * 36, "isk_" + "a" * 35, "isk_" + "a" * 37, "ISK_" + "a" * 36],
)
def test_look_alikes_are_rejected_by_shape(candidate: str) -> None:
    assert not keyformat.has_valid_shape(candidate)


def test_hash_depends_on_the_pepper_and_never_contains_the_key() -> None:
    key = keyformat.generate()
    a = keyformat.hash_key(key, b"pepper-one-0123456789")
    b = keyformat.hash_key(key, b"pepper-two-0123456789")
    assert a != b and len(a) == 64
    assert key not in a and key[4:] not in a


def test_display_parts_show_only_the_last_four() -> None:
    key = keyformat.generate()
    assert keyformat.display_parts(key) == ("isk_", key[-4:])
