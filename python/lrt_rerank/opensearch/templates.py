"""JSON templates kept in the repository's top-level ``opensearch/`` folder.

``index-mapping.json``, ``cluster-settings.json``, ``connector.json``, ``model.json`` and the
``search-pipeline-*.json`` bodies are plain OpenSearch request bodies; code fills in the
run-time values (vector dimension, service URL, model id) on a loaded copy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class TemplateError(RuntimeError):
    """A template file is missing or is not a JSON object; the message names the file."""


def assets_dir() -> Path:
    """The ``opensearch/`` folder: $LRT_OPENSEARCH_ASSETS, else the one next to ``python/`` in this checkout."""
    override = os.environ.get("LRT_OPENSEARCH_ASSETS")
    path = Path(override) if override else Path(__file__).resolve().parents[3] / "opensearch"
    if not (path / "pom.xml").is_file():
        raise TemplateError(f"{path / 'pom.xml'}: not found; set LRT_OPENSEARCH_ASSETS to the repository's opensearch/ folder")
    return path


def load(name: str) -> dict[str, Any]:
    """Parse ``opensearch/<name>`` into a fresh dict (callers may modify it)."""
    path = assets_dir() / name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TemplateError(f"{path}: template not found") from None
    except json.JSONDecodeError as exc:
        raise TemplateError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: expected a JSON object")
    return data
