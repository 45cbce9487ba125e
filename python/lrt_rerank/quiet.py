"""Silencing a library's chatty logger for the length of a ``with`` block."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_logger(logger: logging.Logger, level: int) -> Iterator[None]:
    """Only records at ``level`` or above from ``logger`` inside the block; its own level comes back after."""
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)
