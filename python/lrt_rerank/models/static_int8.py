"""Static (calibrated) INT8 of a cross-encoder with ONNX Runtime's ``quantize_static``, and its measured fidelity.

Activation ranges come from running the FP32 graph on a calibration set of (query, passage) pairs
(:mod:`lrt_rerank.models.calibration_pairs`); weights are int8 per output channel, activations uint8
(the u8 x s8 kernels that VNNI and AMX run fast). The quantizer works on the unfused graph (the
transformer optimizer's contrib ops have no static quantizers), so the MatMuls are quantized,
attention's included, but for two kinds left FP32: each feed-forward block's down projection (its input,
the GELU's output, has outliers that one calibrated range per tensor clips: on the seeded MiniLM
cross-encoder quantizing it dropped the min per-query Spearman from 0.90 to 0.57) and the pooler and
classifier after the last layer norm.

The fidelity of an INT8 directory is the per-query Spearman correlation of its scores with the FP32
directory's on the calibration set's held-out lists, both run by ONNX Runtime's Python API.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from lrt_rerank.models.calibration_pairs import CalibrationSet
from lrt_rerank.models.quantize import fp32_nodes, write_quantized_card
from lrt_rerank.models.store import MODEL, TOKENIZER, ModelCard, model_sha256
from lrt_rerank.quiet import quiet_logger

if TYPE_CHECKING:
    import onnxruntime as ort
    from tokenizers import Tokenizer

Format = Literal["qoperator", "qdq"]
BATCH = 16


def _tokenizer(model_dir: Path) -> Tokenizer:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER))
    tokenizer.enable_truncation(ModelCard.read(model_dir).max_length, strategy="only_second")
    tokenizer.enable_padding()
    return tokenizer


def _batches(tokenizer: Tokenizer, pairs: list[tuple[str, str]], inputs: set[str]) -> list[dict[str, np.ndarray]]:
    out = []
    for start in range(0, len(pairs), BATCH):
        enc = tokenizer.encode_batch(pairs[start : start + BATCH])
        batch = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
        }
        out.append({k: v for k, v in batch.items() if k in inputs})
    return out


def _check(model_dir: Path, graph: Path) -> None:
    card = ModelCard.read(model_dir)
    if card.kind != "cross-encoder" or "prompt" in card.data:
        raise ValueError(f"{model_dir}: static INT8 is for cross-encoders scored on (query, passage) pairs; use dynamic")
    if any(n.domain == "com.microsoft" for n in _load(graph).graph.node):
        raise ValueError(
            f"{graph}: a graph fused by the transformer optimizer has no static quantizers; static INT8 needs the "
            "unfused graph (`lrt-rerank models import --int8 static` keeps it)"
        )


def _load(graph: Path) -> Any:
    import onnx

    return onnx.load(str(graph), load_external_data=False)


#: Ops that end a feed-forward block's activation (GELU's last op is a Mul in an unfused graph).
ACTIVATIONS = ("Mul", "Gelu", "Relu")


def down_projections(graph: Any) -> list[str]:
    """Names of the MatMuls of ``graph`` whose weight is an initializer and whose input an activation's output."""
    weights = {i.name for i in graph.initializer}
    producer = {out: n.op_type for n in graph.node for out in n.output}
    return [
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and n.input[1] in weights and producer.get(n.input[0]) in ACTIVATIONS
    ]


def quantize_static_dir(
    src: Path,
    dst: Path,
    calibration: CalibrationSet,
    graph: Path | None = None,
    quant_format: Format = "qoperator",
) -> Path:
    """Write ``dst``: the FP32 directory ``src`` (or its unfused ``graph``) with calibrated static INT8."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    graph = graph or src / MODEL
    _check(src, graph)
    model = _load(graph)
    inputs = {i.name for i in model.graph.input}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(_batches(_tokenizer(src), calibration.pairs, inputs))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    dst.mkdir(parents=True, exist_ok=True)
    excluded = [*fp32_nodes(model.graph, "head"), *down_projections(model.graph)]
    # the quantizer advises "pre-processing" on the root logger, once per call
    with quiet_logger(logging.getLogger(), logging.ERROR):
        quantize_static(
            str(graph),
            str(dst / MODEL),
            Reader(),
            quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # MinMax: Percentile (99.99) kept less of the FP32 order, and it and Entropy hold every calibration
            # activation in memory (over 17 GB for 256 pairs at 256 tokens); see benches/RESULTS.md
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=excluded,
        )
    quantization = {
        "method": "onnxruntime.quantization.quantize_static",
        "scheme": "static",
        "format": quant_format,
        "weights": "int8, per channel",
        "activations": "uint8, static (MinMax calibration)",
        "quantized": "the MatMuls of the unfused graph, attention's included",
        "fp32": {"keep": "head and feed-forward down projections", "nodes": excluded},
        "calibration": calibration.card(),
        "source_sha256": model_sha256(src),
    }
    low, mean = fidelity(src, dst, calibration)
    return write_quantized_card(src, dst, quantization, int8_spearman_min=low, int8_spearman_mean=mean)


def _session(model_dir: Path) -> ort.InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(model_dir / MODEL), options, providers=["CPUExecutionProvider"])


def _scores(session: ort.InferenceSession, tokenizer: Tokenizer, query: str, passages: list[str]) -> np.ndarray:
    inputs = {i.name for i in session.get_inputs()}
    pairs = [(query, p) for p in passages]
    out = [np.asarray(session.run(None, b)[0]).reshape(len(b["input_ids"]), -1)[:, 0] for b in _batches(tokenizer, pairs, inputs)]
    return np.concatenate(out).astype(np.float64)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def fidelity(fp32: Path, int8: Path, calibration: CalibrationSet) -> tuple[float, float]:
    """(min, mean) per-query Spearman of ``int8``'s scores with ``fp32``'s on the held-out lists (rounded to 3 digits)."""
    if not calibration.holdout:
        raise ValueError(f"calibration set {calibration.name}:{calibration.split} has no held-out lists to measure fidelity on")
    tokenizer = _tokenizer(fp32)
    ref, out = _session(fp32), _session(int8)
    values = [spearman(_scores(ref, tokenizer, q, ps), _scores(out, tokenizer, q, ps)) for q, ps in calibration.holdout]
    return round(min(values), 3), round(float(np.mean(values)), 3)
