"""The OpenSearch assets that ship inside the package (``lrt_rerank/opensearch/assets/``).

The node's Maven project (``pom.xml``) and module descriptors (``modules/``) sit beside the JSON
templates; ``$LRT_OPENSEARCH_ASSETS`` points at another copy of the folder instead.

``index-mapping.json``, ``cluster-settings.json``, ``connector.json``, ``model.json`` and the
``search-pipeline-*.json`` bodies are plain OpenSearch request bodies; code fills in the
run-time values (vector dimension, service URL, model id) on a loaded copy.
"""

from __future__ import annotations

import json
import os
from importlib.resources import files
from pathlib import Path
from typing import Any


class TemplateError(RuntimeError):
    """A template file is missing or is not a JSON object; the message names the file."""


def assets_dir() -> Path:
    """The assets folder: ``$LRT_OPENSEARCH_ASSETS`` if set, else the package's ``assets/``."""
    override = os.environ.get("LRT_OPENSEARCH_ASSETS")
    if override:
        path = Path(override)
        where = "LRT_OPENSEARCH_ASSETS"
    else:
        # Maven needs a real pom.xml on disk: the package is installed as files (wheel or editable).
        path = Path(str(files("lrt_rerank.opensearch").joinpath("assets")))
        where = "the installed package (reinstall lrt-rerank)"
    if not (path / "pom.xml").is_file():
        raise TemplateError(f"{path / 'pom.xml'}: not found; check {where}")
    return path


def load(name: str) -> dict[str, Any]:
    """Parse ``<assets>/<name>`` into a fresh dict (callers may modify it)."""
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
