"""Import ColBERT snapshots (PyLate's layout and Stanford colbert-ai's) as ``late-interaction`` model directories.

PyLate (sentence-transformers' layout): ``modules.json`` lists the Transformer and one or more Dense
layers (``1_Dense/config.json`` + weights, identity activation); ``config_sentence_transformers.json``
holds the query and document prefixes, the lengths, the skiplist and query expansion.

colbert-ai: ``config.json`` with architecture ``HF_ColBERT``, the encoder's weights under ``bert.`` and a
``linear.weight`` projection (no bias) in the same file, and ``artifact.metadata`` with the marker
tokens (``[unused0]``/``[unused1]``), ``query_maxlen``, ``doc_maxlen``, ``attend_to_mask_tokens`` and
``mask_punctuation``.

The encoder is converted without torch (:func:`lrt_rerank.models.convert.build_encoder_onnx`), the
projection appended to its token states (output ``embeddings`` [batch, sequence, dim], not normalised:
the engine L2-normalises each token), and the graph goes through the same fusion as every import. The
card (kind ``late-interaction``) carries everything the engine needs to encode as PyLate does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import string
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer

from lrt_rerank import _core
from lrt_rerank.models.checkpoint import Checkpoint, EncoderConfig
from lrt_rerank.models.convert import build_encoder_onnx
from lrt_rerank.jsonfile import read_json, read_json_object
from lrt_rerank.models.importers.metadata import first_file, read_license
from lrt_rerank.models.importers.optimize import optimize_in_place
from lrt_rerank.models.importers.snapshot import CONFIG, TOKENIZER_FILES, WEIGHT_FILES, architecture
from lrt_rerank.models.importers.tokenizer import write_tokenizer
from lrt_rerank.models.store import CARD, LATE_INTERACTION, MODEL, TOKENIZER, file_sha256, model_home, publish_model_dir
from lrt_rerank.models.weights import read_weights

MODULES = "modules.json"
ST_CONFIG = "config_sentence_transformers.json"
METADATA = "artifact.metadata"
STANFORD_ARCHITECTURE = "HF_ColBERT"
OUTPUT = "embeddings"
#: Bumped when an import of the same files would come out different (part of the imported folder's key).
IMPORTER_VERSION = 1
#: PyLate's defaults where a config leaves a field out.
DEFAULTS: dict[str, Any] = {
    "query_prefix": "[Q] ",
    "document_prefix": "[D] ",
    "query_length": 32,
    "document_length": 180,
    "do_query_expansion": True,
    "attend_to_expansion_tokens": False,
}


@dataclass(frozen=True)
class Projection:
    """One linear layer on the token states: weight [out, in], optional bias."""

    weight: np.ndarray
    bias: np.ndarray | None
    source: Path


@dataclass(frozen=True)
class ColbertSnapshot:
    root: Path
    layout: str  # "pylate" | "colbert-ai"
    config: EncoderConfig
    raw_config: dict[str, Any]
    weights: Path
    tokenizer: Path
    projections: tuple[Projection, ...]
    settings: dict[str, Any]
    files: tuple[Path, ...] = field(default=())

    def digests(self) -> dict[str, str]:
        return {f.relative_to(self.root).as_posix(): file_sha256(f) for f in self.files}


def is_colbert_snapshot(path: Path) -> bool:
    """A folder in PyLate's layout (a PyLate Dense module, or MaxSim / ColBERT prefixes in its
    sentence-transformers config) or colbert-ai's (an ``HF_ColBERT`` config or an ``artifact.metadata``)."""
    if not path.is_dir() or (path / CARD).exists():
        return False
    if (path / METADATA).is_file():
        return True
    try:
        raw = json.loads((path / CONFIG).read_text(encoding="utf-8")) if (path / CONFIG).is_file() else {}
        st = json.loads((path / ST_CONFIG).read_text(encoding="utf-8")) if (path / ST_CONFIG).is_file() else {}
        modules = json.loads((path / MODULES).read_text(encoding="utf-8")) if (path / MODULES).is_file() else []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    if isinstance(raw, dict) and architecture(raw) == STANFORD_ARCHITECTURE:
        return True
    if isinstance(st, dict) and (st.get("similarity_fn_name") == "MaxSim" or "query_length" in st):
        return True
    return isinstance(modules, list) and any("pylate" in str(m.get("type", "")) for m in modules if isinstance(m, dict))


def _encoder(root: Path) -> tuple[dict[str, Any], EncoderConfig, Path, Path]:
    config_path = root / CONFIG
    raw = read_json_object(config_path, "a ColBERT snapshot needs its encoder's config.json")
    weights = first_file(root, WEIGHT_FILES)
    if weights is None:
        raise _core.ModelError(f"{root / WEIGHT_FILES[0]}: not found, nor {WEIGHT_FILES[1]}: no encoder weights to import")
    tokenizer = first_file(root, TOKENIZER_FILES)
    if tokenizer is None:
        raise _core.ModelError(f"{root / TOKENIZER_FILES[0]}: not found, nor {' or '.join(TOKENIZER_FILES[1:])}: no tokenizer")
    return raw, EncoderConfig.from_dict(raw, config_path), weights, tokenizer


def _linear(weights: Path, needed_by: str) -> tuple[np.ndarray, Any]:
    """(``linear.weight`` as float32, ``linear.bias`` or None) from ``weights``; a ModelError naming the file, and
    ``needed_by``, when it has no ``linear.weight``."""
    tensors = read_weights(weights)
    if "linear.weight" not in tensors:
        raise _core.ModelError(f"{weights}: tensor 'linear.weight' not found ({needed_by} needs it; tensors: {sorted(tensors)})")
    return np.asarray(tensors["linear.weight"], dtype=np.float32), tensors.get("linear.bias")


def _dense(root: Path, module: dict[str, Any], modules_path: Path) -> tuple[Projection, list[Path]]:
    folder = root / str(module.get("path", ""))
    config_path = folder / CONFIG
    config = read_json_object(config_path, f"the Dense module listed in {modules_path}")
    activation = str(config.get("activation_function", "torch.nn.modules.linear.Identity")).rsplit(".", 1)[-1]
    if activation != "Identity":
        raise _core.ModelError(f"{config_path}: activation_function {activation!r} is not supported (only Identity)")
    if config.get("use_residual"):
        raise _core.ModelError(f"{config_path}: use_residual is not supported")
    weights = first_file(folder, WEIGHT_FILES)
    if weights is None:
        raise _core.ModelError(f"{folder / WEIGHT_FILES[0]}: not found, nor {WEIGHT_FILES[1]}: the Dense layer has no weights")
    weight, bias = _linear(weights, "the Dense layer")
    out_features, in_features = config.get("out_features"), config.get("in_features")
    if weight.ndim != 2 or (in_features, out_features) != (weight.shape[1], weight.shape[0]):
        raise _core.ModelError(
            f"{weights}: 'linear.weight' has shape {list(weight.shape)}, {config_path} says "
            f"[out_features {out_features}, in_features {in_features}]"
        )
    if config.get("bias", True) != (bias is not None):
        raise _core.ModelError(f"{weights}: 'linear.bias' {'missing' if bias is None else 'present'}, {config_path} says bias={config.get('bias', True)}")
    return Projection(weight, None if bias is None else np.asarray(bias, dtype=np.float32), weights), [config_path, weights]


def _check_chain(projections: list[Projection], hidden: int) -> None:
    width = hidden
    for p in projections:
        if p.weight.shape[1] != width:
            raise _core.ModelError(
                f"{p.source}: the projection takes {p.weight.shape[1]} features, the encoder gives {width} "
                f"(hidden_size {hidden})"
            )
        width = p.weight.shape[0]


def _open_pylate(root: Path) -> ColbertSnapshot:
    raw, config, weights, tokenizer = _encoder(root)
    modules_path, st_path = root / MODULES, root / ST_CONFIG
    if not modules_path.is_file():
        raise _core.ModelError(f"{modules_path}: not found (a PyLate ColBERT lists its Transformer and Dense modules there)")
    modules = read_json(modules_path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise _core.ModelError(f"{modules_path}: must hold a list of module objects")
    projections: list[Projection] = []
    files = [root / CONFIG, weights, tokenizer, modules_path]
    for module in modules:
        name = str(module.get("type", "")).rsplit(".", 1)[-1]
        if name == "Transformer":
            continue
        if name != "Dense":
            raise _core.ModelError(f"{modules_path}: module {module.get('type')!r} is not supported in a ColBERT (Transformer, Dense)")
        projection, read = _dense(root, module, modules_path)
        projections.append(projection)
        files += read
    if not projections:
        raise _core.ModelError(f"{modules_path}: lists no Dense module: a ColBERT needs its projection layer")
    _check_chain(projections, config.hidden_size)
    if not st_path.is_file():
        raise _core.ModelError(f"{st_path}: not found (it holds the ColBERT's prefixes, lengths and skiplist)")
    st = read_json(st_path)
    if not isinstance(st, dict):
        raise _core.ModelError(f"{st_path}: must hold a JSON object")
    files.append(st_path)
    settings = {key: st.get(key, default) for key, default in DEFAULTS.items()}
    settings["skiplist_words"] = st.get("skiplist_words", list(string.punctuation))
    settings["source_file"] = st_path
    return ColbertSnapshot(root, "pylate", config, raw, weights, tokenizer, tuple(projections), settings, tuple(files))


def _open_stanford(root: Path) -> ColbertSnapshot:
    raw, config, weights, tokenizer = _encoder(root)
    meta_path = root / METADATA
    meta = read_json_object(meta_path, "a colbert-ai checkpoint keeps its markers and lengths there")
    weight, _ = _linear(weights, "a colbert-ai checkpoint's projection")
    dim = meta.get("dim")
    if weight.ndim != 2 or (isinstance(dim, int) and weight.shape[0] != dim):
        raise _core.ModelError(f"{weights}: 'linear.weight' has shape {list(weight.shape)}, {meta_path} says dim {dim}")
    projection = Projection(weight, None, weights)
    _check_chain([projection], config.hidden_size)
    settings = {
        "query_prefix": meta.get("query_token_id", "[unused0]"),
        "document_prefix": meta.get("doc_token_id", "[unused1]"),
        "query_length": meta.get("query_maxlen", DEFAULTS["query_length"]),
        "document_length": meta.get("doc_maxlen", DEFAULTS["document_length"]),
        "do_query_expansion": True,
        "attend_to_expansion_tokens": bool(meta.get("attend_to_mask_tokens", False)),
        "skiplist_words": list(string.punctuation) if meta.get("mask_punctuation", True) else [],
        "source_file": meta_path,
    }
    files = (root / CONFIG, weights, tokenizer, meta_path)
    return ColbertSnapshot(root, "colbert-ai", config, raw, weights, tokenizer, (projection,), settings, files)


def open_colbert_snapshot(src: Path) -> ColbertSnapshot:
    if not src.is_dir():
        raise _core.ModelError(f"{src}: snapshot folder not found")
    raw = read_json(src / CONFIG) if (src / CONFIG).is_file() else {}
    if (src / METADATA).is_file() or (isinstance(raw, dict) and architecture(raw) == STANFORD_ARCHITECTURE):
        return _open_stanford(src)
    return _open_pylate(src)


def _token_id(tokenizer: Tokenizer, token: str, what: str, source: Path) -> int:
    found = tokenizer.token_to_id(token)
    if found is None:
        raise _core.ModelError(f"{source}: the {what} {token!r} is not a token of the tokenizer")
    return int(found)


def _mask_token(root: Path) -> str:
    path = root / "tokenizer_config.json"
    config = read_json(path) if path.is_file() else {}
    mask = config.get("mask_token") if isinstance(config, dict) else None
    if isinstance(mask, dict):
        mask = mask.get("content")
    return str(mask) if mask else "[MASK]"


def _settings_card(snap: ColbertSnapshot, tokenizer: Tokenizer, tok_path: Path) -> dict[str, Any]:
    s = snap.settings
    source = s["source_file"]
    for key in ("query_length", "document_length"):
        value = s[key]
        if not isinstance(value, int) or isinstance(value, bool) or not 5 <= value <= snap.config.max_tokens:
            raise _core.ModelError(f"{source}: {key} must be an integer in 5..{snap.config.max_tokens}, got {value!r}")
    for key in ("do_query_expansion", "attend_to_expansion_tokens"):
        if not isinstance(s[key], bool):
            raise _core.ModelError(f"{source}: {key} must be true or false, got {s[key]!r}")
    words = s["skiplist_words"]
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise _core.ModelError(f"{source}: skiplist_words must be a list of strings")
    markers = {}
    for key in ("query_prefix", "document_prefix"):
        prefix = s[key]
        if not isinstance(prefix, str):
            raise _core.ModelError(f"{source}: {key} must be a string, got {prefix!r}")
        markers[key] = _token_id(tokenizer, prefix, key, source) if prefix else None
    mask = _mask_token(snap.root)
    # As PyLate (convert_tokens_to_ids): a skiplist word outside the vocabulary maps to the unknown token.
    unk = tokenizer.token_to_id("[UNK]")
    ids = (tokenizer.token_to_id(w) for w in words)
    skip = sorted({i if i is not None else unk for i in ids} - {None})
    return {
        "query_prefix": s["query_prefix"],
        "document_prefix": s["document_prefix"],
        "query_marker_id": markers["query_prefix"],
        "document_marker_id": markers["document_prefix"],
        "query_length": s["query_length"],
        "document_length": s["document_length"],
        "query_expansion": s["do_query_expansion"],
        "attend_expansion": s["attend_to_expansion_tokens"] and s["do_query_expansion"],
        "mask_token": mask,
        "mask_id": _token_id(tokenizer, mask, "mask token", tok_path),
        "skiplist_words": words,
        "skiplist_ids": skip,
        "normalize": True,
        "similarity": "maxsim",
        "long_documents": "truncate",
    }


def build_colbert_onnx(snap: ColbertSnapshot) -> tuple[onnx.ModelProto, int]:
    """The encoder with its projection(s): output ``embeddings`` [batch, sequence, dim]; and its parameter count."""
    ckpt = Checkpoint(read_weights(snap.weights), snap.weights, snap.config.model_type)
    model = build_encoder_onnx(ckpt, snap.config, None)
    graph = model.graph
    x = graph.output[0].name
    for n, p in enumerate(snap.projections):
        weight = numpy_helper.from_array(np.ascontiguousarray(p.weight.T), f"colbert.projection{n}.weight_t")
        graph.initializer.append(weight)
        out = f"colbert.projection{n}"
        graph.node.append(helper.make_node("MatMul", [x, weight.name], [out], name=out))
        if p.bias is not None:
            bias = numpy_helper.from_array(p.bias, f"colbert.projection{n}.bias")
            graph.initializer.append(bias)
            graph.node.append(helper.make_node("Add", [out, bias.name], [f"{out}.biased"], name=f"{out}.biased"))
            out = f"{out}.biased"
        x = out
    graph.node.append(helper.make_node("Identity", [x], [OUTPUT], name="colbert.output"))
    del graph.output[:]
    dim = int(snap.projections[-1].weight.shape[0])
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", "sequence", dim]))
    onnx.checker.check_model(model)
    projection = sum(int(p.weight.size) + (0 if p.bias is None else int(p.bias.size)) for p in snap.projections)
    return model, ckpt.parameters + projection


def _build(snap: ColbertSnapshot, tmp: Path, out: Path) -> None:
    vocab = write_tokenizer(snap.tokenizer, tmp / TOKENIZER)
    if snap.config.vocab_size < vocab:
        raise _core.ModelError(
            f"{snap.root / CONFIG}: vocab_size {snap.config.vocab_size} is smaller than the tokenizer's vocabulary "
            f"of {vocab} tokens ({snap.tokenizer})"
        )
    tokenizer = Tokenizer.from_file(str(tmp / TOKENIZER))
    settings = _settings_card(snap, tokenizer, snap.tokenizer)
    model, parameters = build_colbert_onnx(snap)
    onnx.save(model, str(tmp / MODEL))
    del model
    length = max(settings["query_length"], settings["document_length"])
    card: dict[str, Any] = {
        "kind": LATE_INTERACTION,
        "name": out.name,
        "max_length": settings["document_length"],
        **settings,
        "dim": int(snap.projections[-1].weight.shape[0]),
        "layout": snap.layout,
        "source": str(snap.root.resolve()),
        "files": snap.digests(),
        "architecture": architecture(snap.raw_config) or None,
        "model_type": snap.config.model_type,
        "license": read_license(snap.root / "README.md" if (snap.root / "README.md").is_file() else None),
        "layers": snap.config.num_layers,
        "hidden_size": snap.config.hidden_size,
        "parameters": parameters,
        "provenance": {
            "source": str(snap.root.resolve()),
            "importer": f"lrt_rerank.models.importers.colbert, version {IMPORTER_VERSION}",
            "converter": "lrt_rerank.models.convert.build_encoder_onnx + the projection(s) as MatMul (ONNX opset 17)",
            "head": f"{len(snap.projections)} linear projection(s) on every token; L2 normalisation in the engine",
        },
    }
    card["optimization"], figures = optimize_in_place(tmp / MODEL, snap.config, length)
    card["sha256"] = file_sha256(tmp / MODEL)
    if figures:
        card["measured"] = figures
    (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


def _import(snap: ColbertSnapshot, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        staged = work / out.name
        staged.mkdir()
        _build(snap, staged, out)
        publish_model_dir(staged, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def import_colbert(src: Path, out: Path) -> Path:
    """Import the ColBERT snapshot ``src`` into the model directory ``out`` (which must not exist yet)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: already exists (remove it, or choose another --out)")
    return _import(open_colbert_snapshot(src), out)


def imported_colbert_dir(src: Path) -> Path:
    """The model directory of ColBERT snapshot ``src`` under ``<model home>/imported``, imported on first use
    (the name carries a hash of the files read, so an edited snapshot is imported afresh)."""
    snap = open_colbert_snapshot(src)
    h = hashlib.sha256(f"lrt-rerank colbert importer {IMPORTER_VERSION}\n".encode())
    for name, digest in sorted(snap.digests().items()):
        h.update(f"{name}\t{digest}\n".encode())
    out = model_home() / "imported" / f"{src.resolve().name}-colbert-{h.hexdigest()[:16]}"
    if (out / CARD).is_file():
        return out
    return _import(snap, out)
