"""Encoder checkpoints as the converter reads them: ``config.json`` (:class:`EncoderConfig`) and the named
tensors (:class:`Checkpoint`) of the families :mod:`lrt_rerank.models.convert` builds graphs for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lrt_rerank import _core
from lrt_rerank.jsonfile import read_json_object

MODEL_TYPES = ("bert", "electra", "roberta", "xlm-roberta", "distilbert")
#: Families whose graph is exported from transformers with torch.onnx (the [train] extra), see
#: :mod:`lrt_rerank.models.importers.torch_export`; their config.json fields are read here all the same.
EXPORTED_TYPES = ("modernbert", "deberta-v2", "qwen3")
#: Families whose position ids start at ``pad_token_id + 1`` and which have no token types.
ROBERTA_TYPES = ("roberta", "xlm-roberta")
#: ``hidden_act`` values and the GELU/ReLU form they compute (as in transformers.activations).
ACTIVATIONS = {
    "gelu": "gelu-erf",
    "gelu_python": "gelu-erf",
    "gelu_new": "gelu-tanh",
    "gelu_pytorch_tanh": "gelu-tanh",
    "gelu_python_tanh": "gelu-tanh",
    "relu": "relu",
}


def _int(raw: Mapping[str, Any], key: str, path: Path) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _core.ModelError(f"{path}: field {key!r} must be an integer, got {value!r}")
    return value


#: config.json's names of the sizes :class:`EncoderConfig` holds (field -> key), and DistilBERT's own.
SIZE_KEYS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "max_position": "max_position_embeddings",
}
DISTILBERT_SIZE_KEYS = {**SIZE_KEYS, "hidden_size": "dim", "num_layers": "n_layers", "num_heads": "n_heads", "intermediate_size": "hidden_dim"}


def _sizes(raw: Mapping[str, Any], path: Path, keys: Mapping[str, str]) -> dict[str, int]:
    return {field_name: _int(raw, key, path) for field_name, key in keys.items()}


@dataclass(frozen=True)
class EncoderConfig:
    """What the graph builder needs from a transformers ``config.json``."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position: int
    layer_norm_eps: float
    model_type: str = "bert"
    hidden_act: str = "gelu"
    type_vocab_size: int = 2
    pad_token_id: int = 0
    #: ELECTRA's embedding width (projected to ``hidden_size``); None: ``hidden_size``.
    embedding_size: int | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], path: Path) -> "EncoderConfig":
        """Read a config.json object; ``path`` names the file in errors."""
        model_type = raw.get("model_type")
        if model_type not in MODEL_TYPES + EXPORTED_TYPES:
            raise _core.ModelError(
                f"{path}: model_type {model_type!r} is not supported (supported: {', '.join(MODEL_TYPES + EXPORTED_TYPES)})"
            )
        if model_type in EXPORTED_TYPES:
            return cls._exported(raw, path, model_type)
        position = raw.get("position_embedding_type", "absolute")
        if position != "absolute":
            raise _core.ModelError(f"{path}: position_embedding_type {position!r} is not supported (only 'absolute')")
        if model_type == "distilbert":
            if raw.get("sinusoidal_pos_embds"):
                raise _core.ModelError(f"{path}: sinusoidal_pos_embds is not supported")
            config = cls(
                **_sizes(raw, path, DISTILBERT_SIZE_KEYS),
                layer_norm_eps=1e-12,  # fixed in DistilBERT
                model_type=model_type,
                hidden_act=str(raw.get("activation", "gelu")),
                type_vocab_size=0,
                pad_token_id=int(raw.get("pad_token_id") or 0),
            )
        else:
            electra_width = model_type == "electra" and "embedding_size" in raw
            config = cls(
                **_sizes(raw, path, SIZE_KEYS),
                layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
                model_type=model_type,
                hidden_act=str(raw.get("hidden_act", "gelu")),
                type_vocab_size=int(raw.get("type_vocab_size", 2)),
                pad_token_id=int(raw.get("pad_token_id") or 0),
                embedding_size=_int(raw, "embedding_size", path) if electra_width else None,
            )
        act_key = "activation" if model_type == "distilbert" else "hidden_act"
        if config.hidden_act not in ACTIVATIONS:
            raise _core.ModelError(
                f"{path}: {act_key} {config.hidden_act!r} is not supported (supported: {', '.join(ACTIVATIONS)})"
            )
        if config.hidden_size % config.num_heads:
            raise _core.ModelError(
                f"{path}: hidden size {config.hidden_size} is not a multiple of the {config.num_heads} attention heads"
            )
        if config.max_tokens < 4:
            raise _core.ModelError(f"{path}: max_position_embeddings {config.max_position} leaves under 4 positions")
        return config

    @classmethod
    def _exported(cls, raw: Mapping[str, Any], path: Path, model_type: str) -> "EncoderConfig":
        """A family that transformers computes (activations, positions and norms are its own)."""
        eps_key = {"modernbert": "norm_eps", "deberta-v2": "layer_norm_eps", "qwen3": "rms_norm_eps"}[model_type]
        config = cls(
            **_sizes(raw, path, SIZE_KEYS),
            layer_norm_eps=float(raw.get(eps_key, 1e-5)),
            model_type=model_type,
            hidden_act=str(raw.get("hidden_activation" if model_type == "modernbert" else "hidden_act", "gelu")),
            # DeBERTa-v3 has no segment embeddings (type_vocab_size 0); ModernBERT and Qwen3 none at all
            type_vocab_size=int(raw.get("type_vocab_size", 0)) if model_type == "deberta-v2" else 0,
            pad_token_id=int(raw.get("pad_token_id") or 0),
        )
        if config.max_tokens < 4:
            raise _core.ModelError(f"{path}: max_position_embeddings {config.max_position} leaves under 4 positions")
        return config

    @classmethod
    def from_file(cls, path: Path) -> "EncoderConfig":
        raw = read_json_object(path, unreadable="cannot read config.json")
        return cls.from_dict({"model_type": "bert", **raw}, path)

    @property
    def position_offset(self) -> int:
        """First position id: ``pad_token_id + 1`` for RoBERTa-family models, else 0."""
        return self.pad_token_id + 1 if self.model_type in ROBERTA_TYPES else 0

    @property
    def max_tokens(self) -> int:
        """Longest sequence the position table covers."""
        return self.max_position - self.position_offset

    @property
    def embedding_width(self) -> int:
        return self.embedding_size or self.hidden_size

    @property
    def has_token_types(self) -> bool:
        """Whether the model distinguishes segments (BERT, ELECTRA); RoBERTa's single type is a constant."""
        return self.model_type in ("bert", "electra", "deberta-v2") and self.type_vocab_size > 1

    @property
    def exported(self) -> bool:
        """Whether the graph is exported from transformers (torch.onnx) rather than built from the tensors."""
        return self.model_type in EXPORTED_TYPES


#: The name the MiniLM tools and tests use.
BertConfig = EncoderConfig


#: Attribute of the base model inside ``*ForSequenceClassification`` (the state-dict prefix).
_BASE_PREFIX = {
    "bert": "bert.",
    "electra": "electra.",
    "roberta": "roberta.",
    "xlm-roberta": "roberta.",
    "distilbert": "distilbert.",
}


class Checkpoint:
    """Named tensors of one checkpoint, looked up with or without the base-model prefix.

    Legacy ``gamma``/``beta`` LayerNorm names are read as ``weight``/``bias`` (as transformers does).
    Every lookup checks the shape; errors name the tensor and the file.
    """

    def __init__(self, tensors: Mapping[str, np.ndarray], source: Path, model_type: str) -> None:
        self.source = source
        self.model_type = model_type
        # tensors are looked up lazily (a streamed mapping reads each one from its file when asked)
        self.tensors = tensors
        self.names = {self._modern(k): k for k in tensors}
        prefix = _BASE_PREFIX[model_type]
        self.prefix = prefix if f"{prefix}embeddings.word_embeddings.weight" in self.names else ""
        self.used: dict[str, int] = {}

    @staticmethod
    def _modern(key: str) -> str:
        if key.endswith(".gamma"):
            return key[: -len("gamma")] + "weight"
        if key.endswith(".beta"):
            return key[: -len("beta")] + "bias"
        return key

    def top(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        """A tensor outside the base model (a classification head)."""
        if key not in self.names:
            raise _core.ModelError(f"{self.source}: tensor {key!r} not found (is this a {self.model_type} checkpoint?)")
        value = self.tensors[self.names[key]]
        self.used[key] = int(value.size)
        if tuple(value.shape) != shape:
            raise _core.ModelError(
                f"{self.source}: tensor {key!r} has shape {list(value.shape)}, config.json implies {list(shape)}"
            )
        return np.asarray(value, dtype=np.float32)

    def base(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        """A tensor of the base model (``embeddings.…``, ``encoder.…``, ``pooler.…``)."""
        return self.top(self.prefix + key, shape)

    @property
    def parameters(self) -> int:
        """Number of weights in the tensors looked up so far (those a built graph computes with)."""
        return sum(self.used.values())
