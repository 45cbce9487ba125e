"""``plan.json``: the chosen pipeline (stages with model, depth, max length, weight; the budget), the
evidence it was chosen on, and the digests of its models; written by ``lrt-rerank plan``, read by
``eval``, ``search``, ``serve`` and ``opensearch pipeline`` (``--plan``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrt_rerank.plan.grid import Config, StageSpec
from lrt_rerank.rerank import Stage

FORMAT = "lrt-rerank-plan"
VERSION = 1


@dataclass
class Plan:
    """A chosen pipeline and its evidence. ``models`` maps each stage's model to its sha256 (None: unknown)."""

    config: Config
    budget_ms: float
    margin_ms: float
    models: dict[str, str | None]
    evidence: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "pipeline": {
                "fusion": None,
                "budget_ms": self.budget_ms,
                "margin_ms": self.margin_ms,
                "stages": [s.to_json() for s in self.config.stages],
            },
            "models": {spec: {"sha256": digest} for spec, digest in self.models.items()},
            "evidence": self.evidence,
        }

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(_dumps(self.to_json()), encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read a ``plan.json``; anything missing or of another format or version is an error naming the field."""
        source = Path(path)
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{source}: no such plan file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{source}: not a JSON plan ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{source}: field 'format' must be {FORMAT!r}: not a plan of `lrt-rerank plan`")
        if data.get("version") != VERSION:
            raise ValueError(f"{source}: field 'version' is {data.get('version')!r}; this lrt-rerank reads plan version {VERSION}")
        pipeline = _field(source, data, "pipeline", dict)
        if pipeline.get("fusion") is not None:
            raise ValueError(f"{source}: field 'pipeline.fusion' must be null (plans with a fusion are not supported)")
        stages = tuple(_stage(source, i, s) for i, s in enumerate(_field(source, pipeline, "stages", list, "pipeline.")))
        models = _field(source, data, "models", dict)
        digests: dict[str, str | None] = {}
        for stage in stages:
            entry = models.get(stage.model)
            if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), (str, type(None))):
                raise ValueError(f"{source}: field 'models.{stage.model}.sha256' is missing")
            digests[stage.model] = entry["sha256"]
        budget = _number(source, pipeline, "budget_ms")
        margin = _number(source, pipeline, "margin_ms")
        return cls(Config(stages), budget, margin, digests, dict(data.get("evidence") or {}), source)

    def stages(self, open_model: Callable[[str], Any] | None = None) -> list[Stage]:
        """The pipeline's stages with their models loaded; a model whose sha256 differs from the plan's is refused."""
        if open_model is None:
            from lrt_rerank.plan.models import open_model
        opened: dict[str, Any] = {}
        out = []
        for i, spec in enumerate(self.config.stages, start=1):
            if spec.model not in opened:
                model = opened[spec.model] = open_model(spec.model)
                expected = self.models.get(spec.model)
                if expected is not None and model.sha256 != expected:
                    raise ValueError(
                        f"{self.source}: stage {i} model {spec.model!r} has sha256 {model.sha256}, but the plan was made "
                        f"with {expected}: plan again for this model"
                    )
            out.append(Stage(opened[spec.model].load(spec.max_length), spec.depth, spec.weight, name=spec.describe()))
        return out

    def describe(self) -> str:
        return self.config.describe()


def _dumps(data: Mapping[str, Any]) -> str:
    """Indented JSON, with each row of the evidence's long lists (table, query ids) on one line."""
    body = {k: v for k, v in data.items() if k != "evidence"}
    text = json.dumps(body, indent=1)[:-2]
    evidence = data.get("evidence") or {}
    items = []
    for key, value in evidence.items():
        if isinstance(value, list) and len(value) > 8:
            rows = ",\n".join("   " + json.dumps(v) for v in value)
            items.append(f"  {json.dumps(key)}: [\n{rows}\n  ]")
        else:
            items.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return text + ',\n "evidence": {\n' + ",\n".join(items) + "\n }\n}\n"


def _field(source: Path, data: Mapping[str, Any], name: str, kind: type, prefix: str = "") -> Any:
    value = data.get(name)
    if not isinstance(value, kind):
        raise ValueError(f"{source}: field '{prefix}{name}' must be a {kind.__name__}")
    return value


def _number(source: Path, data: Mapping[str, Any], name: str) -> float:
    value = data.get(name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{source}: field 'pipeline.{name}' must be a number >= 0")
    return float(value)


def _stage(source: Path, index: int, data: object) -> StageSpec:
    where = f"pipeline.stages[{index}]"
    if not isinstance(data, dict):
        raise ValueError(f"{source}: field '{where}' must be an object")
    model = data.get("model")
    depth = data.get("depth")
    weight = data.get("weight")
    length = data.get("max_length")
    if not isinstance(model, str) or not model:
        raise ValueError(f"{source}: field '{where}.model' must be a model name or directory")
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"{source}: field '{where}.depth' must be an integer >= 1")
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
        raise ValueError(f"{source}: field '{where}.weight' must be a number >= 0")
    if length is not None and (not isinstance(length, int) or isinstance(length, bool) or length < 4):
        raise ValueError(f"{source}: field '{where}.max_length' must be an integer >= 4 or null")
    return StageSpec(model, length, depth, float(weight))
