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


def find_onnxruntime_library() -> Path:
    """Return the libonnxruntime path: $ORT_DYLIB_PATH if set, else the onnxruntime wheel's."""
    override = os.environ.get("ORT_DYLIB_PATH")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise _core.RuntimeLoadError(
            "the onnxruntime package is not installed (pip install onnxruntime), and ORT_DYLIB_PATH is not set"
        )
    capi = Path(next(iter(spec.submodule_search_locations))) / "capi"
    pattern = _LIB_PATTERNS.get(sys.platform, "libonnxruntime.so.*")
    candidates = sorted(capi.glob(pattern), key=_version_key)
    if not candidates:
        raise _core.RuntimeLoadError(f"no {pattern} found in {capi}; set ORT_DYLIB_PATH to libonnxruntime")
    return candidates[-1]


def ensure_runtime() -> None:
    """Load libonnxruntime once per process."""
    if not _core.runtime_ready():
        _core.init_runtime(str(find_onnxruntime_library()))
