"""Runtime choice for the Rust core: ONNX Runtime or OpenVINO (``backend="ort"|"openvino"|"auto"``)."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

from lrt_rerank import _core
from lrt_rerank.runtime import wheel_library

BACKENDS = ("ort", "openvino", "auto")
OPENVINO_LIB_ENV = "LRT_OPENVINO_LIB"
_OPENVINO_PATTERNS = {"linux": "libopenvino_c.so*", "darwin": "libopenvino_c*.dylib", "win32": "openvino_c.dll"}
PRECISIONS = ("f32", "bf16")
#: The card field where the import records measured backend speeds, keyed by CPU kind.
MEASURED = "backend_measurements"
_INSTALL_HINT = "pip install lrt-rerank[openvino]"
_log = logging.getLogger(__name__)
T = TypeVar("T")


def add_backend_arg(parser: argparse.ArgumentParser) -> None:
    """``--backend`` of the commands that load a model."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="ort",
        help="runtime of the model: ONNX Runtime, OpenVINO (pip install lrt-rerank[openvino]) or auto "
        "(OpenVINO where the model card measured it faster on this CPU kind) (default: %(default)s)",
    )


def cpu_flags() -> set[str]:
    """The CPU's feature flags (from /proc/cpuinfo; empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_kind(flags: set[str] | None = None) -> str:
    """The CPU kind the backend choice is keyed by: amx, avx512-bf16, avx512-vnni, avx2 or generic."""
    flags = cpu_flags() if flags is None else flags
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512-bf16"
    if "avx512_vnni" in flags:
        return "avx512-vnni"
    return "avx2" if "avx2" in flags else "generic"


def default_precision(kind: str) -> str:
    """bf16 where the CPU computes it natively (AMX, AVX512-BF16), else f32."""
    return "bf16" if kind in ("amx", "avx512-bf16") else "f32"


def find_openvino_library() -> Path:
    """libopenvino_c: $LRT_OPENVINO_LIB if set, else the one in the openvino wheel."""
    not_installed = f"the OpenVINO runtime is not installed ({_INSTALL_HINT})"
    pattern = _OPENVINO_PATTERNS.get(sys.platform, "libopenvino_c.so*")
    return wheel_library(OPENVINO_LIB_ENV, "openvino", "libs", pattern, not_installed)


def ensure_openvino() -> None:
    """Load libopenvino_c once per process."""
    if not _core.openvino_ready():
        _core.init_openvino(str(find_openvino_library()))


def openvino_installed() -> bool:
    return bool(os.environ.get(OPENVINO_LIB_ENV)) or importlib.util.find_spec("openvino") is not None


def choose_auto(card: dict[str, Any], kind: str) -> tuple[str, str]:
    """(backend, why) for ``auto``: OpenVINO where installed and measured faster on this CPU kind, else ORT."""
    if not openvino_installed():
        return "ort", "OpenVINO is not installed"
    measured = card.get(MEASURED, {}).get(kind)
    if not isinstance(measured, dict) or "ort_ms" not in measured or "openvino_ms" not in measured:
        return "ort", f"no measurement on this CPU kind ({kind}) in the card"
    ort_ms, ov_ms = float(measured["ort_ms"]), float(measured["openvino_ms"])
    if ov_ms < ort_ms:
        return "openvino", f"measured faster on {kind}: {ov_ms:.1f} ms vs ORT {ort_ms:.1f} ms"
    return "ort", f"measured faster on {kind}: {ort_ms:.1f} ms vs OpenVINO {ov_ms:.1f} ms"


def load_with_backend(
    core_class: Callable[..., T],
    model_dir: Path,
    card: dict[str, Any],
    *args: Any,
    backend: str = "ort",
    precision: str | None = None,
    **options: Any,
) -> T:
    """Build ``core_class(str(model_dir), *args, **options, backend=..., precision=...)`` under the chosen
    runtime and record what ran in ``card["runtime"]`` (backend, precision, CPU kind, and for ``auto`` its
    choice and why). ``auto`` falls back to ORT, with a warning, where OpenVINO cannot load the model."""

    def make(name: str, prec: str | None) -> T:
        return core_class(str(model_dir), *args, backend=name, precision=prec, **options)

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    if precision is not None and backend == "ort":
        raise ValueError("precision applies to backend 'openvino' (or 'auto') only: ONNX Runtime runs the graph's own types")
    kind = cpu_kind()
    record: dict[str, Any] = {"requested": backend, "cpu_kind": kind}
    chosen, why = choose_auto(card, kind) if backend == "auto" else (backend, "asked for")
    record["reason"] = why
    if chosen == "openvino":
        ov_precision = precision or default_precision(kind)
        try:
            ensure_openvino()
            core = make("openvino", ov_precision)
        except (_core.RuntimeLoadError, _core.ModelError, _core.InferenceError) as exc:
            message = " ".join(f"backend 'openvino' cannot load {model_dir}: {exc}".split())
            if backend != "auto":
                raise type(exc)(message) from None
            _log.warning("%s; falling back to ORT", message)
            record["reason"] = f"{why}, but {message}; fell back to ORT"
        else:
            card["runtime"] = {**record, "backend": "openvino", "precision": core.runs_as[1]}  # type: ignore[attr-defined]
            return core
    core = make("ort", None)
    card["runtime"] = {**record, "backend": "ort", "precision": "graph"}
    return core
