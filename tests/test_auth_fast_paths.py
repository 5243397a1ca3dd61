"""The hot paths' one-step header matches agree with the authentication contract.

The ASGI middleware (`_CANONICAL`, on raw header bytes) and the verifier
(`_FAST_HEADER`, on a header string) answer the common `Authorization: x-api-key KEY`
with one regular expression and hand everything else to `extract_key`. Each composed
path must equal `extract_key` for every input, and the fast match must actually fire
for the canonical form (or it is dead code that only looks like a fast path).
"""

from __future__ import annotations

import itertools

from hypothesis import example, given
from hypothesis import strategies as st

from core.auth.asgi import _CANONICAL
from core.auth.contract import Verdict, extract_key
from core.auth.verifier import _FAST_HEADER

KEY_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"
_near = st.sampled_from([*KEY_CHARS, *" \t-.:!é\x00\u212aİ", "x-api-key", "X-API-KEY"])
HEADERS = st.one_of(
    st.text(),
    st.lists(_near, max_size=40).map("".join),
    st.builds(
        lambda lead, scheme, gap, key, tail: lead + scheme + gap + key + tail,
        st.sampled_from(["", " ", "\t", " \t ", "         "]),
        st.sampled_from(["x-api-key", "X-API-KEY", "X-Api-Key", "x-api-\u212aey", "bearer"]),
        st.sampled_from([" ", "  ", "\t", " \t", "        ", ""]),
        st.one_of(
            st.text(alphabet=KEY_CHARS + "-.!é\x00 \t", max_size=24),
            st.integers(250, 262).map(lambda n: "k" * n),  # around the length limit
        ),
        st.sampled_from(["", " ", "\t", "!", "         "]),
    ),
)


def _asgi(value: str) -> str | Verdict:
    """What the ASGI middleware does with one Authorization header and no X-API-Key."""
    raw = value.encode("latin-1")
    match = _CANONICAL.fullmatch(raw)
    if match is not None:
        return match[1].decode("ascii")
    return extract_key([raw], None)


def _verifier(value: str) -> str | Verdict:
    """What `Verifier.verify_headers` does with one Authorization string."""
    match = _FAST_HEADER.fullmatch(value)
    if match is not None:
        return match.group(1)
    return extract_key(value, None)


@given(HEADERS.filter(lambda v: all(ord(c) < 256 for c in v)))
@example("x-api-key isk_abc")
@example("x-api-key  isk_abc")
@example(" X-API-KEY isk_abc\t")
def test_the_asgi_fast_path_equals_the_contract(value: str) -> None:
    assert _asgi(value) == extract_key([value.encode("latin-1")], None)


@given(HEADERS)
@example("x-api-key isk_abc")
@example("\tX-Api-Key   isk_abc ")
@example("x-api-\u212aey isk_abc")
def test_the_verifier_fast_path_equals_the_contract(value: str) -> None:
    assert _verifier(value) == extract_key(value, None)


@given(st.text(alphabet=KEY_CHARS, min_size=1, max_size=256))
def test_the_canonical_form_takes_both_fast_paths(key: str) -> None:
    assert _CANONICAL.fullmatch(f"x-api-key {key}".encode()) is not None
    assert _FAST_HEADER.fullmatch(f"x-api-key {key}") is not None


# Every combination around the regular expressions' edges: leading and trailing blanks up
# to and past their limits, the scheme's spellings, the gap, each character class of the
# key and its length limit. Hypothesis explores the rest.
LEADS = ["", " ", "\t", " \t", " " * 8, " " * 9, "\t" * 9]
SCHEMES = ["x-api-key", "X-API-KEY", "x-Api-kEY", "x-api-\u212aey", "x-api-keys", "bearer", ""]
GAPS = ["", " ", "  ", " " * 7, " " * 8, "\t", " \t"]
KEYS = ["isk_abc", "_", "k" * 255, "k" * 256, "k" * 257, ""] + [
    f"ab{c}cd" for c in "-.:!é\x00\u212a+/= \t"
]
TAILS = ["", " ", "\t", " " * 8, " " * 9, "!", "\r"]


def test_every_edge_combination_agrees_on_both_fast_paths() -> None:
    checked = fast = 0
    for parts in itertools.product(LEADS, SCHEMES, GAPS, KEYS, TAILS):
        value = "".join(parts)
        assert _verifier(value) == extract_key(value, None), repr(value)
        fast += _FAST_HEADER.fullmatch(value) is not None
        if all(ord(c) < 256 for c in value):
            assert _asgi(value) == extract_key([value.encode("latin-1")], None), repr(value)
            fast += _CANONICAL.fullmatch(value.encode("latin-1")) is not None
        checked += 1
    assert checked == 7 * 7 * 7 * len(KEYS) * 7
    assert fast > 500  # the grid does exercise the fast matches, not only the fallbacks
