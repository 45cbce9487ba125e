"""The re-rankers a plan compares: each loaded once per max length (no score cache), with its digest
(the sha256 of model.onnx), its card's max length and interpolation weight."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lrt_rerank.interpolation import resolve_weight
from lrt_rerank.plan.grid import lengths_for
from lrt_rerank.rerank import Reranker


@dataclass
class PlanModel:
    """One ``--reranker``: ``load(max_length)`` gives it at that length (None: the card's)."""

    spec: str
    sha256: str | None
    lengths: tuple[int | None, ...]
    weight: float
    load_at: Callable[[int | None], Reranker]
    loaded: dict[int | None, Reranker] = field(default_factory=dict)

    def load(self, max_length: int | None) -> Reranker:
        if max_length not in self.loaded:
            self.loaded[max_length] = self.load_at(max_length)
        return self.loaded[max_length]


def open_model(spec: str) -> PlanModel:
    """The model a ``--reranker`` value names (``default`` or a model directory), loaded at its card's length.

    Any failure to load it is a ``ValueError`` naming the value."""
    from lrt_rerank.encoders import CrossEncoder
    from lrt_rerank.rerank.loading import load_reranker

    try:
        reranker = load_reranker(spec)
    except Exception as exc:  # noqa: BLE001 - any load failure is the user's model: name it
        raise ValueError(f"--reranker {spec}: cannot load it ({type(exc).__name__}: {exc})") from exc
    if reranker is None:
        raise ValueError("--reranker none: the first stage alone is always a candidate; name a model")
    weight = resolve_weight(reranker, None)
    if isinstance(reranker, CrossEncoder):
        model_dir = reranker.model_dir

        def load_at(max_length: int | None) -> Reranker:
            return CrossEncoder.load(model_dir, max_length=max_length)

        model = PlanModel(spec, reranker.sha256, lengths_for(reranker.card.get("max_length")), weight, load_at)
        model.loaded[reranker.max_length] = reranker
        return model
    return PlanModel(spec, getattr(reranker, "sha256", None), (None,), weight, lambda _: reranker, {None: reranker})
