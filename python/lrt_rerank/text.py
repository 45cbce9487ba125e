"""Text the Rust core can take: Python strings may hold lone surrogates (``"\\ud800"``, e.g. from a
JSON escape without its pair), which have no UTF-8 encoding."""

from __future__ import annotations


def lone_surrogate_at(text: str) -> int | None:
    """Position of the first lone surrogate in ``text``, or None when it encodes as UTF-8."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None
