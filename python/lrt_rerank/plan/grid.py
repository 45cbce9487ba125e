"""The candidate pipelines `lrt-rerank plan` compares: the first stage alone, each re-ranker over depths,
max lengths and interpolation weights, and cascades of a cheaper stage over a deep top then a dearer one
over a shallow top of its order."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath

DEPTHS = (10, 20, 30, 50, 100)
"""Re-rank depths of a single stage; the deepest is the number of first-stage candidates scored."""
MAX_LENGTHS = (64, 128, 256, 512)
"""Max lengths tried, up to the model card's own."""
WEIGHTS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
"""Interpolation weights tried (the card's own weight is added)."""
CASCADE_FIRST_DEPTHS = (50, 100)
CASCADE_SECOND_DEPTHS = (10, 20, 30)


@dataclass(frozen=True)
class StageSpec:
    """One stage of a candidate: the model (its ``--reranker`` value), its max length, depth and weight."""

    model: str
    max_length: int | None
    depth: int
    weight: float

    @property
    def scored(self) -> tuple[str, int | None]:
        """The (model, max length) whose recorded scores this stage uses."""
        return (self.model, self.max_length)

    def describe(self) -> str:
        name = PurePath(self.model).name or self.model
        length = f"@{self.max_length}" if self.max_length is not None else ""
        return f"{name}{length} top{self.depth} w{self.weight:g}"

    def to_json(self) -> dict[str, object]:
        return {"model": self.model, "max_length": self.max_length, "depth": self.depth, "weight": self.weight}


@dataclass(frozen=True)
class Config:
    """A candidate pipeline: its re-ranking stages in order (none: the first stage alone)."""

    stages: tuple[StageSpec, ...] = ()

    def describe(self) -> str:
        return " -> ".join(s.describe() for s in self.stages) or "first stage"

    @property
    def kind(self) -> str:
        return {0: "first stage", 1: "single"}.get(len(self.stages), "cascade")


def lengths_for(card_max_length: int | None) -> tuple[int | None, ...]:
    """The max lengths worth trying for a model whose card says ``card_max_length`` (None: the model's own only)."""
    if card_max_length is None:
        return (None,)
    return tuple(sorted({n for n in MAX_LENGTHS if n <= card_max_length} | {card_max_length}))


def single_stage(models: Sequence[str], lengths: Mapping[str, Sequence[int | None]], card_weights: Mapping[str, float]) -> list[Config]:
    """Each model at each of its lengths, depth in :data:`DEPTHS` and weight in :data:`WEIGHTS` (+ its card's)."""
    out = []
    for model in models:
        weights = sorted(set(WEIGHTS) | {card_weights.get(model, 0.0)})
        for length in lengths[model]:
            for depth in DEPTHS:
                out += [Config((StageSpec(model, length, depth, w),)) for w in weights]
    return out


def cascades(
    cheap: str, dear: str, lengths: Mapping[str, Sequence[int | None]], card_weights: Mapping[str, float],
    best_weight: Callable[[str, int | None, int], float],
) -> list[Config]:
    """``cheap`` over :data:`CASCADE_FIRST_DEPTHS` (at the weight ``best_weight`` gives it alone at that
    length and depth), then ``dear`` over :data:`CASCADE_SECOND_DEPTHS` at each weight."""
    out = []
    weights = sorted(set(WEIGHTS) | {card_weights.get(dear, 0.0)})
    for first_length in lengths[cheap]:
        for first_depth in CASCADE_FIRST_DEPTHS:
            first = StageSpec(cheap, first_length, first_depth, best_weight(cheap, first_length, first_depth))
            for length in lengths[dear]:
                for depth in CASCADE_SECOND_DEPTHS:
                    out += [Config((first, StageSpec(dear, length, depth, w))) for w in weights]
    return out
