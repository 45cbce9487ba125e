"""OpenVINO at import: the IR of a model directory (static INT8 through NNCF, with its fidelity) and the measured backend speeds."""

from __future__ import annotations

import json
import re
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lrt_rerank import _core
from lrt_rerank.backends import MEASURED, cpu_kind
from lrt_rerank.extras import require
from lrt_rerank.models.calibration_pairs import CalibrationSet, calibration_pairs
from lrt_rerank.models.store import CARD, MODEL, TOKENIZER

IR = "openvino_model.xml"
#: What ``write_int8_ir`` makes (recorded in the card; a different value means an IR made another way).
SCHEME = "static INT8 (nncf.quantize, ModelType.TRANSFORMER: its default preset and SmoothQuant), head and edge down projections in floating point"


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


def _graph(model_dir: Path, card: dict[str, Any], tmp: Path) -> tuple[Path, str]:
    """The graph to quantize and what it is: the unfused graph of the snapshot the directory was imported from
    (OpenVINO fuses its attention itself, and runs it faster than ONNX Runtime's fused ``Attention``), where that
    snapshot is still there with the files the card records; else the directory's own ``model.onnx``."""
    from lrt_rerank.models.importers.build import unfused_graph
    from lrt_rerank.models.importers.snapshot import open_snapshot

    source = card.get("source")
    if source and Path(source).is_dir():
        try:
            same = open_snapshot(Path(source), "cross-encoder").digests() == card.get("files")
        except (ValueError, OSError, _core.ModelError):
            same = False
        if same:
            return unfused_graph(Path(source), tmp / "unfused.onnx"), f"the unfused graph of {source}"
    return model_dir / MODEL, f"{MODEL} (the source snapshot is not there as imported)"


def _fp32_names(graph: Path) -> list[str]:
    """The MatMuls NNCF leaves in floating point: the head (pooler, classifier) and, where the graph is unfused,
    the first and the last layer's feed-forward down projections (the GELU's outliers that one calibrated range
    per tensor clips; those two layers' cost the most rank fidelity, see benches/RESULTS.md)."""
    import onnx

    from lrt_rerank.models.quantize import fp32_nodes
    from lrt_rerank.models.static_int8 import down_projections

    model = onnx.load(str(graph), load_external_data=False)
    down = down_projections(model.graph)
    return [*fp32_nodes(model.graph, "head"), *dict.fromkeys(down[:1] + down[-1:])]


def _ignored_patterns(graph: Path, names: list[str]) -> list[str]:
    """NNCF name patterns of the ONNX nodes ``names`` in the model OpenVINO reads from ``graph``: a node keeps its
    name, or takes its output's (a graph output), or gets a suffix where OpenVINO fuses it ("name/MatMulAddFusion")."""
    import onnx

    outputs = {n.name: n.output[0] for n in onnx.load(str(graph), load_external_data=False).graph.node if n.output}
    aliases = dict.fromkeys(alias for name in names for alias in (name, outputs.get(name)) if alias)
    return [f"^{re.escape(alias)}(/|$)" for alias in aliases]


def _fidelity(model_dir: Path, holdout: Sequence[tuple[str, list[str]]]) -> dict[str, Any]:
    """Per-query Spearman of the IR's scores (``backend="openvino"``, its default precision) with the FP32
    ``model.onnx``'s (ONNX Runtime) on ``holdout``: min and mean, rounded to 3 digits."""
    import numpy as np

    from lrt_rerank.encoders import CrossEncoder
    from lrt_rerank.models.static_int8 import spearman

    fp32, int8 = CrossEncoder.load(model_dir, backend="ort"), CrossEncoder.load(model_dir, backend="openvino")
    values = [spearman(np.asarray(fp32.score(q, ps)), np.asarray(int8.score(q, ps))) for q, ps in holdout]
    return {
        "spearman_min": round(min(values), 3),
        "spearman_mean": round(float(np.mean(values)), 3),
        "lists": len(values),
        "precision": int8.card["runtime"]["precision"],
    }


def write_int8_ir(model_dir: Path, pairs: Sequence[tuple[str, str]] | CalibrationSet | None = None) -> dict[str, Any]:
    """Quantize the cross-encoder ``model_dir`` to static INT8 with NNCF on tokenized (query, passage) ``pairs``
    (a calibration set, given pairs, or by default the bundled corpus's), write it as ``openvino_model.xml/.bin``
    (what ``backend="openvino"`` then loads), measure its fidelity to FP32 on the calibration set's held-out lists
    (given pairs: the bundled set's) and record the scheme and the fidelity in the card."""
    require("openvino", "OpenVINO INT8 calibration")
    import nncf
    import openvino as ov

    card_path = model_dir / CARD
    card = json.loads(card_path.read_text(encoding="utf-8"))
    if card.get("kind") != "cross-encoder":
        raise ValueError(f"{card_path}: OpenVINO INT8 calibration takes (query, passage) pairs: a cross-encoder only")
    given = pairs is not None and not isinstance(pairs, CalibrationSet)
    calibration = calibration_pairs() if pairs is None or given else pairs
    source = "given pairs" if given else f"{calibration.name}:{calibration.split} (models/calibration_pairs.py)"
    pairs = list(pairs) if given else calibration.pairs
    if not calibration.holdout:
        raise ValueError(f"calibration set {calibration.name}:{calibration.split} has no held-out lists to measure fidelity on")
    with tempfile.TemporaryDirectory(prefix=".openvino-", dir=model_dir) as tmp:
        graph, graph_note = _graph(model_dir, card, Path(tmp))
        model = ov.Core().read_model(str(graph))
        inputs = {name for port in model.inputs for name in port.get_names()}
        feeds = _feeds(model_dir, pairs, int(card.get("max_length", 512)), inputs)
        fp32 = _fp32_names(graph)
        quantized = nncf.quantize(
            model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds),
            ignored_scope=nncf.IgnoredScope(patterns=_ignored_patterns(graph, fp32), validate=False),
        )  # fmt: skip
        ov.save_model(quantized, str(model_dir / IR), compress_to_fp16=False)
    card["openvino"] = {
        "ir": IR,
        "scheme": SCHEME,
        "graph": graph_note,
        "fp32": {"keep": "head, first and last feed-forward down projections", "nodes": fp32},
        "calibration_pairs": len(feeds),
        "calibration_set": source,
        "fidelity": _fidelity(model_dir, calibration.holdout),
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
