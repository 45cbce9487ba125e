"""What a service process serves, as `lrt-rerank serve` hands it to its workers: the model (a cross-encoder
or a ColBERT), its long-document settings, a tuned fusion and a plan's stages (each through the environment)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from lrt_rerank import CrossEncoder, ModelError
from lrt_rerank.late import ColBERT
from lrt_rerank.models.resolve import is_late_interaction
from lrt_rerank.models.resolve import resolve_model_dir as resolve_source
from lrt_rerank.plan.planfile import Plan
from lrt_rerank.rerank import Stage
from lrt_rerank.rerank.fusion import Fusion, FusionFormatError, load_fusion, parse_fusion
from lrt_rerank.service.settings import ServiceSettings

ServedModel = CrossEncoder | ColBERT
EncoderLoader = Callable[[], ServedModel]


def resolve_model_dir(model: str) -> Path:
    """The cross-encoder source for ``--model``: "default" (built on first use), a model directory or a
    Hugging Face snapshot folder. Only resolved here: what the folder holds is ``CrossEncoder.load``'s to
    judge (it reads model directories and imports snapshots), so a folder without card.json is not
    rejected here."""
    path = resolve_source(model, "cross-encoder")
    if not path.is_dir():
        raise ModelError(
            f"{path}: not a directory (--model must be a model directory, a Hugging Face snapshot or 'default')"
        )
    return path


LONG_DOCUMENTS_ENV = "LRT_RERANK_LONG_DOCUMENTS"
"""JSON of the served encoder's window settings (``serve --long-documents`` etc.), beside the settings."""


def long_document_env(args: object) -> str:
    """The JSON of ``LONG_DOCUMENTS_ENV`` for parsed ``serve`` arguments (unset flags left out)."""
    names = ("long_documents", "window_stride", "max_windows", "aggregate")
    return json.dumps({n: getattr(args, n) for n in names if getattr(args, n, None) is not None})


FUSION_ENV = "LRT_RERANK_FUSION"
"""JSON of the served tuned fusion (``serve --fusion F``): ``{"source": path, "fusion": its record}``."""


def fusion_env(path: str | Path) -> str:
    """The JSON of ``FUSION_ENV`` for a ``fusion.json`` (read and validated now: a bad file fails ``serve``)."""
    fusion = load_fusion(path)
    if fusion.further_signals:
        raise FusionFormatError(
            f"{path}: weighs the dense signals {', '.join(fusion.further_signals)}; first_stage_scores carry BM25 and "
            "one dense signal, so the service cannot apply it (apply it with the embedded first stage)"
        )
    return json.dumps({"source": fusion.source, "fusion": fusion.to_json()})


def served_fusion() -> Fusion | None:
    """The fusion ``serve --fusion`` handed over in ``FUSION_ENV``, if any."""
    raw = os.environ.get(FUSION_ENV)
    if not raw:
        return None
    record = json.loads(raw)
    return parse_fusion(record["fusion"], str(record["source"]))


PLAN_ENV = "LRT_RERANK_PLAN"
"""Path of the served ``plan.json`` (``serve --plan F``), checked by the parent process."""


def plan_env(path: str | Path, model: str) -> str:
    """The value of ``PLAN_ENV``: the plan's path, once its models load and match its digests."""
    plan = Plan.load(path)
    if not plan.config.stages:
        raise ValueError(f"{path}: the plan keeps the first stage: there is nothing to serve")
    if model != "default":
        raise ValueError(f"--plan {path} and --model {model}: the plan names its models; pass one of them")
    plan.stages()
    return str(Path(path).resolve())


def served_plan() -> list[Stage] | None:
    """The stages of the plan ``serve --plan`` handed over in ``PLAN_ENV``, loaded (None without one)."""
    raw = os.environ.get(PLAN_ENV)
    return Plan.load(raw).stages() if raw else None


def load_served_model(
    model: str, threads: int | None, windows: dict[str, object] | None = None, backend: str = "ort"
) -> ServedModel:
    """The model ``--model`` names: a ColBERT for a late-interaction directory or snapshot, else a
    cross-encoder read with ``windows`` (the served long-document settings); run by ``backend``."""
    path = resolve_model_dir(model)
    if is_late_interaction(path):
        if windows:
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in windows)
            raise ModelError(
                f"{path}: a late-interaction model truncates documents at its card's document_length; "
                f"{flags} apply to cross-encoders only"
            )
        return ColBERT.load(path, threads=threads, backend=backend)
    return CrossEncoder.load(str(path), threads=threads, backend=backend, **(windows or {}))  # type: ignore[arg-type]


def default_loader(settings: ServiceSettings) -> EncoderLoader:
    def load() -> ServedModel:
        windows = json.loads(os.environ.get(LONG_DOCUMENTS_ENV) or "{}")
        return load_served_model(settings.model, settings.threads, windows, settings.backend)

    return load
