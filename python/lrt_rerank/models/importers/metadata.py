"""Facts a snapshot states outside its weights: pooling (sentence-transformers), score activation, license."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrt_rerank import _core
from lrt_rerank.jsonfile import read_json

MODULES = "modules.json"
ST_CONFIG = "sentence_bert_config.json"
_POOLING_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean"}


def first_file(root: Path, names: tuple[str, ...]) -> Path | None:
    """``root / name`` for the first of ``names`` that is a file there, or None."""
    return next((root / n for n in names if (root / n).is_file()), None)


@dataclass(frozen=True)
class Pooling:
    mode: str  # "cls" | "mean"
    normalize: bool
    #: sentence_bert_config.json's max_seq_length, where given.
    max_length: int | None
    files: tuple[Path, ...]


def read_pooling(root: Path) -> Pooling:
    """A bi-encoder's pooling from sentence-transformers' modules.json; without it: mean, normalised."""
    modules_path = root / MODULES
    if not modules_path.is_file():
        return Pooling("mean", True, None, ())
    modules = read_json(modules_path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise _core.ModelError(f"{modules_path}: must hold a list of module objects")
    files = [modules_path]
    mode, normalize = None, False
    for module in modules:
        name = str(module.get("type", "")).rsplit(".", 1)[-1]
        if name == "Transformer":
            continue
        if name == "Normalize":
            normalize = True
        elif name == "Pooling":
            pooling_path = root / str(module.get("path", "")) / "config.json"
            mode = _pooling_mode(read_json(pooling_path), pooling_path)
            files.append(pooling_path)
        else:
            raise _core.ModelError(
                f"{modules_path}: module {module.get('type')!r} is not supported (only Transformer, Pooling, Normalize)"
            )
    if mode is None:
        raise _core.ModelError(f"{modules_path}: lists no Pooling module")
    max_length = None
    st_path = root / ST_CONFIG
    if st_path.is_file():
        st = read_json(st_path)
        if st.get("do_lower_case"):
            raise _core.ModelError(f"{st_path}: do_lower_case (lower-casing outside the tokenizer) is not supported")
        max_length = st.get("max_seq_length")
        files.append(st_path)
    return Pooling(mode, normalize, max_length, tuple(files))


def _pooling_mode(config: Any, path: Path) -> str:
    if not isinstance(config, dict):
        raise _core.ModelError(f"{path}: must hold a JSON object")
    on = sorted(k for k, v in config.items() if k.startswith("pooling_mode_") and v is True)
    if len(on) != 1 or on[0] not in _POOLING_MODES:
        raise _core.ModelError(
            f"{path}: pooling modes {on} are not supported (exactly one of {', '.join(_POOLING_MODES)})"
        )
    return _POOLING_MODES[on[0]]


def read_activation(raw_config: dict[str, Any], path: Path) -> str:
    """The score activation sentence-transformers applies: 'sigmoid' (the default) or 'identity'."""
    st = raw_config.get("sentence_transformers")
    value = raw_config.get("sbert_ce_default_activation_function") or (
        st.get("activation_fn") if isinstance(st, dict) else None
    )
    if value is None:
        return "sigmoid"
    name = str(value).rsplit(".", 1)[-1].lower()
    if name not in ("sigmoid", "identity"):
        raise _core.ModelError(f"{path}: score activation {value!r} is not supported (Sigmoid or Identity)")
    return name


def read_license(readme: Path | None) -> str | None:
    """``license:`` from a model card's YAML front matter (between the leading ``---`` lines)."""
    if readme is None:
        return None
    lines = readme.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for line in lines[1:]:
        if line.strip() == "---":
            break
        key, sep, value = line.partition(":")
        if sep and key == "license":
            return value.strip().strip("'\"") or None
    return None
