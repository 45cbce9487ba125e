"""Snapshot → model directory (model.onnx, tokenizer.json, card.json), written atomically.

Weights are converted by :mod:`lrt_rerank.models.convert` (no torch for safetensors); an ONNX-only
snapshot's export is taken over (:mod:`.onnx_export`). Every FP32 graph then goes through ONNX
Runtime's transformer optimizer (:mod:`.optimize`). With ``int8`` the directory holds the INT8 model:
dynamic (:func:`lrt_rerank.models.quantize.quantize_model_dir`) or static, calibrated on (query, passage)
pairs from the unfused graph (:func:`lrt_rerank.models.static_int8.quantize_static_dir`); its card's
``quantization.source_sha256`` is the FP32 graph's.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx

from lrt_rerank import _core
from lrt_rerank.models.checkpoint import Checkpoint
from lrt_rerank.models.convert import (
    build_encoder_onnx,
    count_parameters,
    sequence_classification_head,
)
from lrt_rerank.models.importers.colbert import import_colbert, imported_colbert_dir, is_colbert_snapshot
from lrt_rerank.models.importers.metadata import read_activation, read_license
from lrt_rerank.models.importers.onnx_export import adapt_onnx_export
from lrt_rerank.models import onnx_files
from lrt_rerank.models.importers.optimize import basic_optimized, optimize_in_place
from lrt_rerank.models.importers.torch_export import HEADS as TORCH_HEADS
from lrt_rerank.models.importers.snapshot import IMPORTER_VERSION, Snapshot, architecture, key_of, open_snapshot
from lrt_rerank.models.importers.tokenizer import write_tokenizer
from lrt_rerank.models.prompts import Prompt, make_prompt
from lrt_rerank.models.store import CARD, MODEL, TOKENIZER, model_home, model_sha256, publish_model_dir
from lrt_rerank.models.weights import open_weights

#: Longest sequence an imported model defaults to (all four families were trained at 512 or less).
MAX_LENGTH_CAP = 512
HEADS = {
    "bert": "BertForSequenceClassification: pooler (dense, tanh) on [CLS], then classifier",
    "electra": "ElectraClassificationHead: dense, GELU, out_proj on [CLS]",
    "roberta": "RobertaClassificationHead: dense, tanh, out_proj on <s>",
    "xlm-roberta": "XLMRobertaClassificationHead: dense, tanh, out_proj on <s>",
    "distilbert": "DistilBertForSequenceClassification: pre_classifier, ReLU, classifier on [CLS]",
    **TORCH_HEADS,
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


def _graph(snap: Snapshot, path: Path, prompt: Prompt | None) -> tuple[str, int]:
    """Write the FP32 graph to ``path`` (model.onnx_data beside it over 2 GB); return how it was made and
    its parameter count.

    Converted graphs count the checkpoint's tensors they compute with (for a cross-encoder: all of
    transformers' ``*ForSequenceClassification`` parameters); exported graphs their float initializers.
    """
    if snap.weights is None:
        assert snap.onnx is not None
        adapted = " (+ logit[1] - logit[0])" if snap.num_labels == 2 else ""
        model = adapt_onnx_export(snap.onnx, snap.kind, snap.num_labels)
        onnx_files.save(model, path)
        return f"the snapshot's ONNX export{adapted}", count_parameters(model)
    if snap.config.exported:
        from lrt_rerank.models.importers.torch_export import export_graph

        converter, _ = export_graph(snap.root, snap.config, snap.num_labels, prompt, path)
        onnx_files.consolidate(path)
        return converter, count_parameters(onnx.load(str(path), load_external_data=False))
    tensors = open_weights(snap.weights)  # safetensors: streamed, each tensor read when the graph takes it
    ckpt = Checkpoint(tensors, snap.weights, snap.config.model_type)
    head = None
    if snap.kind == "cross-encoder":
        assert snap.num_labels is not None
        head = sequence_classification_head(ckpt, snap.config, snap.num_labels)
    reader = {
        ".safetensors": "safetensors",
        ".json": f"safetensors, {len(snap.shards)} shards",
    }.get(snap.weights.suffix, "pytorch_model.bin (torch.load, weights_only)")
    model = build_encoder_onnx(ckpt, snap.config, head)
    onnx_files.save(model, path)
    return f"lrt_rerank.models.convert.build_encoder_onnx ({reader} -> ONNX opset 17)", ckpt.parameters


def _card(
    snap: Snapshot, digests: dict[str, str], out: Path, max_length: int, prompt: Prompt | None
) -> dict[str, Any]:
    """The card's facts from the snapshot's files (checked before the graph is built)."""
    cross = snap.kind == "cross-encoder"
    card: dict[str, Any] = {"kind": snap.kind, "name": out.name, "max_length": max_length}
    if cross:  # inside the graph: [CLS], ModernBERT's classifier_pooling, or a template's last token
        pooling = snap.raw_config.get("classifier_pooling", "cls") if snap.config.model_type == "modernbert" else "cls"
        card["pooling"] = "last" if prompt is not None else pooling
    else:
        assert snap.pooling is not None
        card.update(pooling=snap.pooling.mode, normalize=snap.pooling.normalize)
    card.update(
        {
            "source": str(snap.root.resolve()),
            "files": digests,
            "architecture": architecture(snap.raw_config) or None,
            "model_type": snap.config.model_type,
            "num_labels": None if prompt else snap.num_labels,
            "score": _score(snap, prompt),
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
    if prompt is not None:
        card["prompt"] = prompt.card()
    if snap.onnx is not None:
        card["onnx"] = {"imported": snap.onnx.relative_to(snap.root).as_posix(), "variants": list(snap.onnx_variants)}
    return card


def _score(snap: Snapshot, prompt: Prompt | None) -> str | None:
    if snap.kind != "cross-encoder":
        return None
    if prompt is not None:
        return "logit(yes)-logit(no) of the last token"
    return "logit" if snap.num_labels == 1 else "logit[1]-logit[0]"


def _build(
    snap: Snapshot,
    digests: dict[str, str],
    tmp: Path,
    out: Path,
    max_length: int | None,
    prompt: Prompt | None,
    unfused: Path | None = None,
) -> None:
    """Write the FP32 model directory into ``tmp`` (named after ``out``), and the graph before the transformer
    optimizer's fusions (constant-folded) to ``unfused`` when given."""
    length = _max_length(snap, max_length)
    vocab = write_tokenizer(snap.tokenizer, tmp / TOKENIZER)
    if snap.config.vocab_size < vocab:
        raise _core.ModelError(
            f"{snap.config_path}: vocab_size {snap.config.vocab_size} is smaller than the tokenizer's vocabulary "
            f"of {vocab} tokens ({snap.tokenizer})"
        )
    card = _card(snap, digests, out, length, prompt)
    card["provenance"]["converter"], card["parameters"] = _graph(snap, tmp / MODEL, prompt)
    if unfused is not None:
        if (tmp / onnx_files.MODEL_DATA).is_file():
            raise ValueError(f"{snap.root}: static INT8 of a graph over 2 GB (external data) is not supported; use --int8 dynamic")
        basic_optimized(tmp / MODEL, unfused)
    card["optimization"], figures = optimize_in_place(tmp / MODEL, snap.config, length)
    card["sha256"] = model_sha256(tmp)
    if (tmp / onnx_files.MODEL_DATA).is_file():
        card["external_data"] = onnx_files.MODEL_DATA
    if figures:
        card["measured"] = figures
    (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


def unfused_graph(src: Path, out: Path) -> Path:
    """Write the cross-encoder snapshot ``src``'s FP32 graph as static INT8 starts from it (constant-folded,
    before the transformer optimizer's fusions) to ``out``."""
    snap = open_snapshot(src, "cross-encoder")
    with tempfile.TemporaryDirectory(prefix=".unfused-", dir=out.parent) as tmp:
        _graph(snap, Path(tmp) / MODEL, None)
        return basic_optimized(Path(tmp) / MODEL, out)


def _scheme(int8: bool | str, calibrate: str | None) -> str | None:
    """``int8`` as a scheme name (True: the default scheme), checked with ``calibrate`` before any work."""
    from lrt_rerank.models.quantize import DEFAULT_SCHEME, SCHEMES

    scheme = DEFAULT_SCHEME if int8 is True else (int8 or None)
    if scheme is not None and scheme not in SCHEMES:
        raise ValueError(f"int8 scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    if calibrate is not None and scheme != "static":
        raise ValueError("--calibrate applies to static INT8 (--int8 static) only")
    return scheme


def _import(
    snap: Snapshot,
    digests: dict[str, str],
    out: Path,
    int8: bool | str,
    max_length: int | None,
    prompt: Prompt | None = None,
    calibrate: str | None = None,
) -> Path:
    scheme = _scheme(int8, calibrate)
    calibration = None
    if scheme == "static":
        from lrt_rerank.models.calibration_pairs import calibration_pairs

        if snap.kind != "cross-encoder" or prompt is not None:
            raise ValueError(f"{snap.root}: static INT8 is for cross-encoders scored on (query, passage) pairs; use --int8 dynamic")
        calibration = calibration_pairs(calibrate)  # a bad --calibrate fails here, before the build
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        fp32 = work / out.name
        fp32.mkdir()
        unfused = work / "unfused.onnx" if calibration is not None else None
        _build(snap, digests, fp32, out, max_length, prompt, unfused)
        final = fp32
        if calibration is not None:
            from lrt_rerank.models.static_int8 import quantize_static_dir

            final = quantize_static_dir(fp32, work / "int8" / out.name, calibration, graph=unfused)
        elif scheme == "dynamic":
            from lrt_rerank.models.quantize import quantize_model_dir

            final = quantize_model_dir(fp32, work / "int8" / out.name)
        publish_model_dir(final, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _check_family(snap: Snapshot, prompt: Prompt | None) -> None:
    """Exported families are cross-encoders; a causal LM is one only under a template."""
    model_type, arch = snap.config.model_type, architecture(snap.raw_config)
    if model_type == "qwen3" and prompt is None:
        raise _core.ModelError(
            f"{snap.config_path}: a {arch or model_type} is imported as a re-ranker with --template qwen3-reranker"
        )
    if snap.config.exported and snap.kind != "cross-encoder":
        raise _core.ModelError(f"{snap.config_path}: model_type {model_type!r} is imported as a cross-encoder only")


def import_snapshot(
    src: Path,
    out: Path,
    kind: str | None = None,
    int8: bool | str = False,
    max_length: int | None = None,
    template: str | None = None,
    instruction: str | None = None,
    calibrate: str | None = None,
) -> Path:
    """Import the snapshot ``src`` into the model directory ``out`` (which must not exist yet).

    ``kind`` None: a ``*ForSequenceClassification`` architecture is a cross-encoder, anything
    else a bi-encoder. ``max_length`` None: min(positions, 512, sentence-transformers' max_seq_length).
    ``template`` (:mod:`lrt_rerank.models.prompts`) turns a causal LM into a re-ranker scored by its
    next-token logits of "yes" and "no"; ``instruction`` replaces the template's default one.
    ``int8``: False (FP32), "dynamic", "static" or True (the default scheme); ``calibrate`` (``DATASET[:SPLIT]``)
    chooses static INT8's calibration pairs (default: the bundled corpus, :mod:`lrt_rerank.models.calibration_pairs`).
    A ColBERT snapshot (PyLate's or colbert-ai's layout) becomes a late-interaction model directory
    (:mod:`.colbert`); none of the options apply to it.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: already exists (remove it, or choose another --out)")
    if is_colbert_snapshot(src):
        given = {
            "--kind": kind, "--int8": int8 or None, "--calibrate": calibrate, "--max-length": max_length,
            "--template": template, "--instruction": instruction,
        }  # fmt: skip
        flags = [flag for flag, value in given.items() if value is not None]
        if flags:
            raise ValueError(
                f"{src}: a ColBERT snapshot (PyLate / colbert-ai layout) is imported as a late-interaction model; "
                f"{', '.join(flags)} do not apply to it (its lengths come from its own configuration)"
            )
        return import_colbert(src, out)
    if instruction is not None and template is None:
        raise ValueError("an instruction needs a template (--template)")
    snap = open_snapshot(src, "cross-encoder" if template else kind)
    prompt = None
    if template is not None:
        prompt = make_prompt(template, instruction, architecture(snap.raw_config), snap.config_path, snap.tokenizer)
    _check_family(snap, prompt)
    return _import(snap, snap.digests(), out, int8, max_length, prompt, calibrate)


def imported_model_dir(src: Path, kind: str) -> Path:
    """The model directory of snapshot ``src`` under ``<model home>/imported``, importing it on first use.

    The directory name carries the snapshot's content key, so an edited snapshot is imported afresh.
    A ColBERT snapshot is imported as a late-interaction model, whatever ``kind`` asks.
    """
    if is_colbert_snapshot(src):
        return imported_colbert_dir(src)
    snap = open_snapshot(src, kind)
    digests = snap.digests()
    out = model_home() / "imported" / f"{snapshot_name(src)}-{key_of(snap, digests)[:16]}"
    if (out / CARD).is_file():
        return out
    _check_family(snap, None)
    return _import(snap, digests, out, int8=False, max_length=None)
