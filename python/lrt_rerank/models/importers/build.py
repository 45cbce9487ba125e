"""Snapshot → model directory (model.onnx, tokenizer.json, card.json), written atomically.

Weights are converted by :mod:`lrt_rerank.models.convert` (no torch for safetensors); an ONNX-only
snapshot's export is taken over (:mod:`.onnx_export`). Every FP32 graph then goes through ONNX
Runtime's transformer optimizer (:mod:`.optimize`). With ``int8`` the directory holds the dynamic
INT8 model (:func:`lrt_rerank.models.quantize.quantize_model_dir`); its card's ``quantization.source_sha256``
is the FP32 graph's.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx

from lrt_rerank import _core
from lrt_rerank.models.convert import (
    Checkpoint,
    build_encoder_onnx,
    count_parameters,
    sequence_classification_head,
)
from lrt_rerank.models.importers.metadata import read_activation, read_license
from lrt_rerank.models.importers.onnx_export import adapt_onnx_export
from lrt_rerank.models.importers.optimize import optimize_in_place
from lrt_rerank.models.importers.snapshot import IMPORTER_VERSION, Snapshot, architecture, key_of, open_snapshot
from lrt_rerank.models.importers.tokenizer import write_tokenizer
from lrt_rerank.models.store import CARD, MODEL, TOKENIZER, file_sha256, model_home, publish_model_dir
from lrt_rerank.models.weights import read_weights

#: Longest sequence an imported model defaults to (all four families were trained at 512 or less).
MAX_LENGTH_CAP = 512
#: protobuf's limit on one ONNX file; larger graphs would need external data.
MAX_GRAPH_BYTES = 2_000_000_000
HEADS = {
    "bert": "BertForSequenceClassification: pooler (dense, tanh) on [CLS], then classifier",
    "electra": "ElectraClassificationHead: dense, GELU, out_proj on [CLS]",
    "roberta": "RobertaClassificationHead: dense, tanh, out_proj on <s>",
    "xlm-roberta": "XLMRobertaClassificationHead: dense, tanh, out_proj on <s>",
    "distilbert": "DistilBertForSequenceClassification: pre_classifier, ReLU, classifier on [CLS]",
}


def snapshot_name(src: Path) -> str:
    """The repository name for a Hugging Face cache snapshot (models--org--name/snapshots/<rev>), else the folder's."""
    src = src.resolve()
    repo = src.parent.parent.name
    if src.parent.name == "snapshots" and repo.startswith("models--"):
        return repo.split("--")[-1]
    return src.name


def _max_length(snap: Snapshot, requested: int | None) -> int:
    limit = snap.config.max_tokens
    if requested is not None:
        if not 4 <= requested <= limit:
            raise ValueError(f"max_length must be in 4..{limit} ({snap.config_path} positions), got {requested}")
        return requested
    default = min(limit, MAX_LENGTH_CAP)
    if snap.pooling is not None and isinstance(snap.pooling.max_length, int):
        default = min(default, snap.pooling.max_length)
    return default


def _graph(snap: Snapshot) -> tuple[onnx.ModelProto, str, int]:
    """The FP32 graph, how it was made and its parameter count.

    Converted graphs count the checkpoint's tensors they compute with (for a cross-encoder: all of
    transformers' ``*ForSequenceClassification`` parameters); an ONNX export counts its float initializers.
    """
    if snap.weights is None:
        assert snap.onnx is not None
        adapted = " (+ logit[1] - logit[0])" if snap.num_labels == 2 else ""
        model = adapt_onnx_export(snap.onnx, snap.kind, snap.num_labels)
        return model, f"the snapshot's ONNX export{adapted}", count_parameters(model)
    tensors = read_weights(snap.weights)
    size = sum(t.nbytes for t in tensors.values())
    if size > MAX_GRAPH_BYTES:
        raise _core.ModelError(
            f"{snap.weights}: {size / 1e9:.1f} GB of weights; ONNX graphs over 2 GB (external data) are not supported"
        )
    ckpt = Checkpoint(tensors, snap.weights, snap.config.model_type)
    head = None
    if snap.kind == "cross-encoder":
        assert snap.num_labels is not None
        head = sequence_classification_head(ckpt, snap.config, snap.num_labels)
    reader = "safetensors" if snap.weights.suffix == ".safetensors" else "pytorch_model.bin (torch.load, weights_only)"
    model = build_encoder_onnx(ckpt, snap.config, head)
    return model, f"lrt_rerank.models.convert.build_encoder_onnx ({reader} -> ONNX opset 17)", ckpt.parameters


def _card(snap: Snapshot, digests: dict[str, str], out: Path, max_length: int) -> dict[str, Any]:
    """The card's facts from the snapshot's files (checked before the graph is built)."""
    cross = snap.kind == "cross-encoder"
    card: dict[str, Any] = {"kind": snap.kind, "name": out.name, "max_length": max_length}
    if cross:
        card["pooling"] = "cls"
    else:
        assert snap.pooling is not None
        card.update(pooling=snap.pooling.mode, normalize=snap.pooling.normalize)
    card.update(
        {
            "source": str(snap.root.resolve()),
            "files": digests,
            "architecture": architecture(snap.raw_config) or None,
            "model_type": snap.config.model_type,
            "num_labels": snap.num_labels,
            "score": None if not cross else "logit" if snap.num_labels == 1 else "logit[1]-logit[0]",
            "activation": read_activation(snap.raw_config, snap.config_path) if cross else None,
            "license": read_license(snap.readme),
            "layers": snap.config.num_layers,
            "hidden_size": snap.config.hidden_size,
            "provenance": {
                "source": str(snap.root.resolve()),
                "importer": f"lrt_rerank.models.importers, version {IMPORTER_VERSION}",
                "head": HEADS[snap.config.model_type] if cross else "none: last_hidden_state, pooling in the engine",
            },
        }
    )
    if snap.onnx is not None:
        card["onnx"] = {"imported": snap.onnx.relative_to(snap.root).as_posix(), "variants": list(snap.onnx_variants)}
    return card


def _build(snap: Snapshot, digests: dict[str, str], tmp: Path, out: Path, max_length: int | None) -> None:
    """Write the FP32 model directory into ``tmp`` (named after ``out``)."""
    length = _max_length(snap, max_length)
    vocab = write_tokenizer(snap.tokenizer, tmp / TOKENIZER)
    if snap.config.vocab_size < vocab:
        raise _core.ModelError(
            f"{snap.config_path}: vocab_size {snap.config.vocab_size} is smaller than the tokenizer's vocabulary "
            f"of {vocab} tokens ({snap.tokenizer})"
        )
    card = _card(snap, digests, out, length)
    model, card["provenance"]["converter"], card["parameters"] = _graph(snap)
    onnx.save(model, str(tmp / MODEL))
    del model
    card["optimization"], figures = optimize_in_place(tmp / MODEL, snap.config, length)
    card["sha256"] = file_sha256(tmp / MODEL)
    if figures:
        card["measured"] = figures
    (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


def _import(snap: Snapshot, digests: dict[str, str], out: Path, int8: bool, max_length: int | None) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        fp32 = work / out.name
        fp32.mkdir()
        _build(snap, digests, fp32, out, max_length)
        final = fp32
        if int8:
            from lrt_rerank.models.quantize import quantize_model_dir

            final = quantize_model_dir(fp32, work / "int8" / out.name)
        publish_model_dir(final, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def import_snapshot(
    src: Path, out: Path, kind: str | None = None, int8: bool = False, max_length: int | None = None
) -> Path:
    """Import the snapshot ``src`` into the model directory ``out`` (which must not exist yet).

    ``kind`` None: a ``*ForSequenceClassification`` architecture is a cross-encoder, anything
    else a bi-encoder. ``max_length`` None: min(positions, 512, sentence-transformers' max_seq_length).
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: already exists (remove it, or choose another --out)")
    snap = open_snapshot(src, kind)
    return _import(snap, snap.digests(), out, int8, max_length)


def imported_model_dir(src: Path, kind: str) -> Path:
    """The model directory of snapshot ``src`` under ``<model home>/imported``, importing it on first use.

    The directory name carries the snapshot's content key, so an edited snapshot is imported afresh.
    """
    snap = open_snapshot(src, kind)
    digests = snap.digests()
    out = model_home() / "imported" / f"{snapshot_name(src)}-{key_of(snap, digests)[:16]}"
    if (out / CARD).is_file():
        return out
    return _import(snap, digests, out, int8=False, max_length=None)
