"""Reading JSON files, with a ModelError that names the file and what is wrong with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lrt_rerank import _core


def read_json(path: Path, unreadable: str = "cannot read JSON") -> Any:
    """The JSON value in ``path``; a ModelError ``"{path}: {unreadable}: {reason}"`` when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _core.ModelError(f"{path}: {unreadable}: {exc}") from exc


def read_json_object(path: Path, needed_by: str | None = None, unreadable: str = "cannot read JSON") -> dict[str, Any]:
    """The JSON object in ``path``; a ModelError naming it when it is unreadable or not an object, and, with
    ``needed_by`` (what needs it), when it is missing."""
    if needed_by is not None and not path.is_file():
        raise _core.ModelError(f"{path}: not found ({needed_by})")
    raw = read_json(path, unreadable)
    if not isinstance(raw, dict):
        raise _core.ModelError(f"{path}: must hold a JSON object")
    return raw
