"""Hypothesis strategies shared by the fuzz tests (tests/test_fuzz.py, tests/test_fuzz_service.py)."""

from __future__ import annotations

from hypothesis import strategies as st

SEED = 20261128
TOLERANCE = 1e-4  # FP32 models: batching and padding move a score by far less

# Strings that have broken tokenizers and encoders elsewhere: NUL and other controls, combining marks
# (alone and stacked), bidi controls and right-to-left scripts, joiners, BOM, non-characters, emoji
# sequences, CJK, a replacement character.
AWKWARD = [
    "\x00", "\x00\x00 nul", "\x07\x1b[31m", "\r\n\t", "\u0301", "e\u0301\u0302\u0303" * 20, "\u0301" * 300,
    "\u202e reversed \u202c", "\u200f\u200e", "שלום עולם", "مرحبا بالعالم", "a\u200db", "\ufeffbom",
    "\ufffe\uffff", "\U0010ffff", "👩\u200d👩\u200d👧", "🎉🔥💯", "日本語の文章です", "\ufffd", " ", "",
]
SURROGATES = st.characters(categories=["Cs"])


def huge(units: list[str], max_size: int = 100_000) -> st.SearchStrategy[str]:
    """One string of 1,000–max_size characters made of a repeated unit."""
    return st.builds(lambda unit, n: (unit * n)[:n], st.sampled_from(units), st.integers(1_000, max_size))


HUGE_UNITS = ["word ", "x", "日本", "\u0301", "🎉 ", "a\x00"]


def texts(max_size: int = 100_000) -> st.SearchStrategy[str]:
    """Any valid (UTF-8-encodable) string of at most max_size characters; hypothesis' st.text never
    yields surrogates."""
    return st.one_of(
        st.text(max_size=60),
        st.sampled_from(AWKWARD),
        st.lists(st.sampled_from(AWKWARD) | st.text(max_size=8), max_size=8).map("".join),
        huge(HUGE_UNITS, max_size),
    )


TEXT = texts()


@st.composite
def with_surrogate(draw: st.DrawFn, base: st.SearchStrategy[str] = TEXT) -> str:
    """A string with at least one lone surrogate somewhere in it."""
    text = draw(base)
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(SURROGATES) + text[at:]
