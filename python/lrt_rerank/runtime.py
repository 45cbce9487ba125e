"""Locate and load the ONNX Runtime shared library that ships inside the onnxruntime wheel."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from lrt_rerank import _core

_LIB_PATTERNS = {
    "linux": "libonnxruntime.so.*",
    "darwin": "libonnxruntime.*.dylib",
    "win32": "onnxruntime.dll",
}


def _version_key(path: Path) -> tuple[int, ...]:
    parts = [p for p in path.name.split(".") if p.isdigit()]
    return tuple(int(p) for p in parts)


def wheel_library(env_var: str, package: str, folder: str, pattern: str, not_installed: str) -> Path:
    """A shared library: ``$env_var`` if set, else the newest ``pattern`` in the ``package`` wheel's ``folder``."""
    override = os.environ.get(env_var)
    if override:
        return Path(override)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise _core.RuntimeLoadError(f"{not_installed}, and {env_var} is not set")
    libs = Path(next(iter(spec.submodule_search_locations))) / folder
    candidates = sorted(libs.glob(pattern), key=_version_key)
    if not candidates:
        raise _core.RuntimeLoadError(f"no {pattern} found in {libs}; set {env_var} to the library")
    return candidates[-1]


def find_onnxruntime_library() -> Path:
    """Return the libonnxruntime path: $ORT_DYLIB_PATH if set, else the onnxruntime wheel's."""
    pattern = _LIB_PATTERNS.get(sys.platform, "libonnxruntime.so.*")
    not_installed = "the onnxruntime package is not installed (pip install onnxruntime)"
    return wheel_library("ORT_DYLIB_PATH", "onnxruntime", "capi", pattern, not_installed)


def ensure_runtime() -> None:
    """Load libonnxruntime once per process."""
    if not _core.runtime_ready():
        _core.init_runtime(str(find_onnxruntime_library()))
