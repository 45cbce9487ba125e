"""Input checks shared by the encoders (cross-encoder, bi-encoder, ColBERT) and the readers of user text.

Python strings may hold lone surrogates (``"\\ud800"``, e.g. from a JSON escape without its pair), which have
no UTF-8 encoding and which the Rust core cannot take: they are refused here, naming the argument."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def lone_surrogate_at(text: str) -> int | None:
    """Position of the first lone surrogate in ``text``, or None when it encodes as UTF-8."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None


def check_text(name: str, text: object) -> str:
    """``text`` if it is a str the core can take (no lone surrogates)."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    at = lone_surrogate_at(text)
    if at is not None:
        raise ValueError(
            f"{name} is not valid Unicode text: lone surrogate {text[at]!r} at position {at} has no UTF-8 encoding"
        )
    return text


def check_texts(name: str, texts: Sequence[str]) -> list[str]:
    """``texts`` as a list, each checked by :func:`check_text` (named ``name[i]``); a single str is refused."""
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, not a single string")
    if isinstance(texts, bytes) or not isinstance(texts, Iterable):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    return [check_text(f"{name}[{i}]", t) for i, t in enumerate(texts)]


def check_positive(**values: int | None) -> None:
    """Each value None (the default) or an int >= 1; anything else is a ValueError/TypeError naming the
    argument, not an OverflowError in the core."""
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
