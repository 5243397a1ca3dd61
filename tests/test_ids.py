"""Identifiers: base62 encoding is exact, random parts use every character, ids sort by time."""

from __future__ import annotations

import random
import string

import pytest

from core.ids import BASE62, b62encode, new_id, random_b62


def _reference(number: int, width: int) -> str:
    digits = []
    while number:
        number, rem = divmod(number, 62)
        digits.append(BASE62[rem])
    return "".join(reversed(digits)).rjust(width, "0")


@pytest.mark.parametrize("width", [0, 6, 8, 12, 30])
def test_b62encode_is_positional_base62(width: int) -> None:
    rng = random.Random(7)
    numbers = [0, 1, 61, 62, 63, 3843, 3844, 3845, 62**12 - 1, 62**12]
    numbers += [rng.getrandbits(rng.randint(1, 200)) for _ in range(2000)]
    for n in numbers:
        encoded = b62encode(n, width)
        assert encoded == _reference(n, width)
        assert int(sum(BASE62.index(c) * 62**i for i, c in enumerate(reversed(encoded)))) == n
    with pytest.raises(ValueError):
        b62encode(-1)


def test_random_parts_have_their_length_and_use_every_character() -> None:
    seen = "".join(random_b62(30) for _ in range(300))
    assert len(seen) == 9000 and set(seen) == set(string.digits + string.ascii_letters)
    assert len({random_b62(12) for _ in range(1000)}) == 1000


def test_ids_carry_their_prefix_and_sort_by_creation_time() -> None:
    first, second = new_id("evt"), new_id("evt")
    assert first.startswith("evt_") and len(first) == 4 + 20
    assert first[4:12] <= second[4:12]
