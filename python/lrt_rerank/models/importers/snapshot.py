"""A model folder as downloaded with ``huggingface-cli download``: its layout and the files an import reads.

Layouts: ``config.json`` + weights (``model.safetensors``, shards named by ``model.safetensors.index.json``,
or ``pytorch_model.bin``) + a tokenizer
(``tokenizer.json``; or ``vocab.txt``; or ``sentencepiece.bpe.model``, each with
``tokenizer_config.json``) — or, without weights, an ONNX export (``onnx/model.onnx`` or
``model.onnx``) with config.json and the tokenizer files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrt_rerank import _core
from lrt_rerank.models.checkpoint import EncoderConfig
from lrt_rerank.jsonfile import read_json_object
from lrt_rerank.models.importers.metadata import Pooling, first_file, read_pooling
from lrt_rerank.models.onnx_files import external_files
from lrt_rerank.models.store import CARD, KINDS, file_sha256
from lrt_rerank.models.weights import SHARD_INDEX, shard_files

CONFIG = "config.json"
WEIGHT_FILES = ("model.safetensors", SHARD_INDEX, "pytorch_model.bin")
ONNX_FILES = ("onnx/model.onnx", "model.onnx")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model")
#: Read alongside vocab.txt / sentencepiece.bpe.model (special tokens, lower-casing).
TOKENIZER_SIDE_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
README = "README.md"
#: Bumped when an import of the same files would come out different: part of :func:`snapshot_key`.
IMPORTER_VERSION = 1


def is_snapshot(path: Path) -> bool:
    """A folder with config.json and no card.json.

    Both layouts (weights or an ONNX export) come with config.json; requiring it keeps one of our
    model directories that lost its card.json (model.onnx + tokenizer.json) from passing for a snapshot.
    """
    return path.is_dir() and not (path / CARD).exists() and (path / CONFIG).is_file()


@dataclass(frozen=True)
class Snapshot:
    root: Path
    raw_config: dict[str, Any]
    config: EncoderConfig
    kind: str
    #: Labels of the classification head (cross-encoders); None for bi-encoders.
    num_labels: int | None
    #: model.safetensors / model.safetensors.index.json / pytorch_model.bin, or None when the ONNX export is imported.
    weights: Path | None
    #: The shards a model.safetensors.index.json names (empty otherwise).
    shards: tuple[Path, ...]
    onnx: Path | None
    #: The external data files the imported export names (model.onnx_data beside it; empty for one file).
    onnx_data: tuple[Path, ...]
    #: Other .onnx files beside the imported export (quantized variants), relative to root.
    onnx_variants: tuple[str, ...]
    #: tokenizer.json, vocab.txt or sentencepiece.bpe.model.
    tokenizer: Path
    #: Bi-encoders: pooling and normalisation from sentence-transformers' modules.json.
    pooling: Pooling | None
    readme: Path | None

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG

    @property
    def files(self) -> list[Path]:
        """Every file the import reads."""
        files = [self.config_path, self.weights or self.onnx, *self.shards, *self.onnx_data, self.tokenizer]
        if self.tokenizer.name != "tokenizer.json":
            files += [self.root / n for n in TOKENIZER_SIDE_FILES if (self.root / n).is_file()]
        if self.pooling is not None:
            files += self.pooling.files
        if self.readme is not None:
            files.append(self.readme)
        return [f for f in files if f is not None]

    def digests(self) -> dict[str, str]:
        """sha256 of every file read, keyed by its path relative to the snapshot."""
        return {f.relative_to(self.root).as_posix(): file_sha256(f) for f in self.files}


def architecture(raw_config: dict[str, Any]) -> str:
    """config.json's ``architectures[0]`` ('' when absent)."""
    names = raw_config.get("architectures")
    return str(names[0]) if isinstance(names, list) and names else ""


def _num_labels(raw: dict[str, Any], path: Path) -> int:
    """As transformers counts them: id2label's size, else num_labels, else 2."""
    if isinstance(raw.get("id2label"), dict):
        n = len(raw["id2label"])
    else:
        n = raw.get("num_labels", 2)
    if n not in (1, 2):
        raise _core.ModelError(
            f"{path}: a cross-encoder needs 1 label (a relevance logit) or 2 (scored as logit[1] - logit[0]); "
            f"this config has {n}"
        )
    return int(n)


def open_snapshot(src: Path, kind: str | None = None) -> Snapshot:
    """Find the files of ``src`` and check them; ``kind`` None: inferred from config.json's architectures."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not src.is_dir():
        raise _core.ModelError(f"{src}: snapshot folder not found")
    config_path = src / CONFIG
    raw = read_json_object(config_path, "a snapshot needs config.json")
    config = EncoderConfig.from_dict(raw, config_path)
    if kind is None:
        kind = "cross-encoder" if architecture(raw).endswith("ForSequenceClassification") else "bi-encoder"

    weights = first_file(src, WEIGHT_FILES)
    onnx_path = None if weights else first_file(src, ONNX_FILES)
    if weights is None and onnx_path is None:
        raise _core.ModelError(
            f"{src / WEIGHT_FILES[0]}: not found, nor {', '.join(WEIGHT_FILES[1:] + ONNX_FILES)}: no weights to import"
        )
    variants: tuple[str, ...] = ()
    if onnx_path is not None:
        variants = tuple(
            sorted(p.relative_to(src).as_posix() for p in onnx_path.parent.glob("*.onnx") if p != onnx_path)
        )

    tokenizer = first_file(src, TOKENIZER_FILES)
    if tokenizer is None:
        raise _core.ModelError(
            f"{src / TOKENIZER_FILES[0]}: not found, nor {' or '.join(TOKENIZER_FILES[1:])}: "
            "the snapshot has no tokenizer"
        )
    readme = src / README
    return Snapshot(
        root=src,
        raw_config=raw,
        config=config,
        kind=kind,
        num_labels=_num_labels(raw, config_path) if kind == "cross-encoder" else None,
        weights=weights,
        shards=tuple(shard_files(weights)) if weights is not None and weights.name == SHARD_INDEX else (),
        onnx=onnx_path,
        onnx_data=tuple(external_files(onnx_path)) if onnx_path is not None else (),
        onnx_variants=variants,
        tokenizer=tokenizer,
        pooling=read_pooling(src) if kind == "bi-encoder" else None,
        readme=readme if readme.is_file() else None,
    )


def snapshot_key(src: Path, kind: str | None = None) -> str:
    """Content hash of the files an import of ``src`` reads (plus the kind and the importer version)."""
    snap = open_snapshot(src, kind)
    return key_of(snap, snap.digests())


def key_of(snap: Snapshot, digests: dict[str, str]) -> str:
    h = hashlib.sha256(f"lrt-rerank importer {IMPORTER_VERSION}\n{snap.kind}\n".encode())
    for name in sorted(digests):
        h.update(f"{name}\t{digests[name]}\n".encode())
    return h.hexdigest()
