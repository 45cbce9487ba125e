"""The [train] extra in the tests: CI installs it and sets LRT_REQUIRE_TRAIN=1, which turns a missing
module into a failure; elsewhere the test module that needs it is skipped."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def require(*modules: str) -> ModuleType:
    """Import ``modules`` (default torch and transformers) and return the first."""
    names = modules or ("torch", "transformers")
    if os.environ.get("LRT_REQUIRE_TRAIN") == "1":
        imported = [importlib.import_module(name) for name in names]
    else:
        imported = [pytest.importorskip(name) for name in names]
    return imported[0]
