"""OpenVINO at import: the IR of a model directory (static INT8 through NNCF) and the measured backend speeds."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lrt_rerank.backends import MEASURED, cpu_kind
from lrt_rerank.models.calibration_pairs import calibration_pairs
from lrt_rerank.extras import require
from lrt_rerank.models.store import CARD, MODEL, TOKENIZER

IR = "openvino_model.xml"


def _feeds(model_dir: Path, pairs: Sequence[tuple[str, str]], max_length: int, inputs: set[str]) -> list[dict[str, Any]]:
    """One feed dict (int64 [1, tokens]) per pair, tokenized as the engine does."""
    import numpy as np
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / TOKENIZER))
    tok.no_padding()
    tok.enable_truncation(max_length, strategy="only_second")
    feeds = []
    for query, passage in pairs:
        enc = tok.encode(query, passage)
        row = {
            "input_ids": np.asarray([enc.ids], dtype=np.int64),
            "attention_mask": np.ones((1, len(enc.ids)), dtype=np.int64),
            "token_type_ids": np.asarray([enc.type_ids], dtype=np.int64),
        }
        feeds.append({k: v for k, v in row.items() if k in inputs})
    return feeds


def write_int8_ir(model_dir: Path, pairs: Sequence[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Quantize ``model_dir/model.onnx`` to static INT8 with NNCF on tokenized (query, passage) pairs,
    write it as ``openvino_model.xml/.bin`` (what ``backend="openvino"`` then loads) and record it in the card."""
    require("openvino", "OpenVINO INT8 calibration")
    import nncf
    import openvino as ov

    card_path = model_dir / CARD
    card = json.loads(card_path.read_text(encoding="utf-8"))
    if card.get("kind") != "cross-encoder":
        raise ValueError(f"{card_path}: OpenVINO INT8 calibration takes (query, passage) pairs: a cross-encoder only")
    source = "given pairs" if pairs is not None else "the bundled corpus's judged pairs (models/calibration_pairs.py)"
    pairs = list(pairs) if pairs is not None else calibration_pairs().pairs
    model = ov.Core().read_model(str(model_dir / MODEL))
    inputs = {name for port in model.inputs for name in port.get_names()}
    feeds = _feeds(model_dir, pairs, int(card.get("max_length", 512)), inputs)
    quantized = nncf.quantize(
        model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds)
    )
    ov.save_model(quantized, str(model_dir / IR), compress_to_fp16=False)
    card["openvino"] = {
        "ir": IR,
        "scheme": "static INT8 (nncf.quantize, ModelType.TRANSFORMER)",
        "calibration_pairs": len(feeds),
        "calibration_set": source,
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card["openvino"]


def measure_backends(model_dir: Path, pairs: Sequence[tuple[str, str]] | None = None, repeats: int = 3) -> dict[str, Any]:
    """Time one call of ``pairs`` (default: 50 bundled ones) per backend, interleaved, median of
    ``repeats``; record it in the card under this CPU kind, where ``backend="auto"`` reads it."""
    from lrt_rerank.encoders import CrossEncoder

    pairs = list(pairs) if pairs is not None else calibration_pairs(count=50).pairs
    query, passages = pairs[0][0], [p for _, p in pairs]
    models = {name: CrossEncoder.load(model_dir, backend=name) for name in ("ort", "openvino")}
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.score(query, passages)
            times[name].append((time.perf_counter() - start) * 1000)
    kind = cpu_kind()
    record = {
        "ort_ms": round(statistics.median(times["ort"]), 2),
        "openvino_ms": round(statistics.median(times["openvino"]), 2),
        "openvino_precision": models["openvino"].card["runtime"]["precision"],
        "pairs": len(passages),
    }
    card_path = model_dir / CARD
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card.setdefault(MEASURED, {})[kind] = record
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return {kind: record}
