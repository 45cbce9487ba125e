"""ONNX Runtime's transformer optimizer on an imported FP32 graph, kept only where it reproduces the graph.

Fusions (model_type "bert" for all four families, as in :mod:`lrt_rerank.train.export`): attention,
embedding layer norm, skip layer norm, bias GELU / FastGelu where the patterns match. The fused
graph must reproduce the unfused one on a probe batch (padding included); otherwise the unfused
graph is kept and the card says why.

No torch: ``onnxruntime.transformers.optimizer.optimize_model(..., opt_level=1)`` imports torch for
its ONNX Runtime step (to ask whether a GPU build is ROCm), so that step is run here directly
(:func:`basic_optimized`) and the optimizer is left only its Python fusion passes (``opt_level=0``):
the same graph, with or without torch installed.

The parity error is measured on this machine's kernels and differs from CPU to CPU in its last digits:
it goes into the card's ``measured`` field (:func:`lrt_rerank.models.store.measured`), not into
``optimization``, so that two builds of one snapshot have equal cards everywhere else.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from lrt_rerank.models.checkpoint import EncoderConfig
from lrt_rerank.models.onnx_files import has_external_data
from lrt_rerank.models.store import measured
from lrt_rerank.quiet import quiet_logger

logger = logging.getLogger(__name__)

#: Largest allowed difference, relative to the largest absolute output (at least 1).
PARITY_RTOL = 1e-4
PROBE_LENGTHS = (24, 17, 5)


def _session(path: Path, optimize: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def probe_batch(config: EncoderConfig, max_length: int) -> dict[str, np.ndarray]:
    """Random token ids, right padding, two segments: the batch both graphs are run on."""
    rng = np.random.default_rng(0)
    seq = min(max(PROBE_LENGTHS), max_length)
    ids = rng.integers(0, config.vocab_size, size=(len(PROBE_LENGTHS), seq), dtype=np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for row, length in enumerate(PROBE_LENGTHS):
        length = min(length, seq)
        mask[row, :length] = 1
        if config.type_vocab_size > 1:
            types[row, length // 2 : length] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _run(session: ort.InferenceSession, batch: dict[str, np.ndarray]) -> np.ndarray:
    names = {i.name for i in session.get_inputs()}
    return np.asarray(session.run(None, {k: v for k, v in batch.items() if k in names})[0], dtype=np.float32)


def parity_error(reference: Path, candidate: Path, batch: dict[str, np.ndarray]) -> float:
    """Largest difference of the first outputs relative to max(1, largest |reference|); padding ignored."""
    ref = _run(_session(reference, optimize=False), batch)
    out = _run(_session(candidate, optimize=True), batch)
    if ref.shape != out.shape:
        return float("inf")
    if ref.ndim == 3:  # token states: compare the real tokens only
        keep = batch["attention_mask"].astype(bool)
        ref, out = ref[keep], out[keep]
    return float(np.max(np.abs(out - ref)) / max(1.0, float(np.max(np.abs(ref)))))


def _contrib_ops(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node if n.domain == "com.microsoft").items()))


#: Graph rewrites the transformer optimizer turns off in its ONNX Runtime step (``optimize_model``).
DISABLED_ORT_OPTIMIZERS = ["ConstantSharing"]


def basic_optimized(model_path: Path, out: Path) -> Path:
    """What ``optimize_by_onnxruntime(opt_level=1)`` writes, without its torch import: ONNX Runtime's basic
    graph optimizations (constant folding, redundant-node elimination) on the CPU provider, saved to ``out``."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3
    ort.InferenceSession(
        str(model_path), options, providers=["CPUExecutionProvider"], disabled_optimizers=DISABLED_ORT_OPTIMIZERS
    )
    if not out.is_file():
        raise RuntimeError(f"onnxruntime wrote no optimized graph to {out}")
    return out


def fuse(model_path: Path, config: EncoderConfig) -> Any:
    """The optimizer's fused model (an ``OnnxModel``) of ``model_path``, as ``optimize_model(opt_level=1)``
    makes it, without torch."""
    from onnxruntime.transformers import optimizer

    # the optimizer warns that our graphs' producer is not "pytorch": true, and beside the point
    optimizer_log = logging.getLogger("onnxruntime.transformers.optimizer")
    with tempfile.TemporaryDirectory(prefix=".ort-basic-", dir=model_path.parent) as tmp, quiet_logger(optimizer_log, logging.ERROR):
        basic = basic_optimized(model_path, Path(tmp) / "basic.onnx")
        return optimizer.optimize_model(
            str(basic), model_type="bert", num_heads=config.num_heads, hidden_size=config.hidden_size, opt_level=0
        )


def optimize_in_place(model_path: Path, config: EncoderConfig, max_length: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Replace ``model_path`` by its fused graph when that reproduces it.

    Returns the card's ``optimization`` (deterministic: what was fused, or why not) and its ``measured``
    (the parity error on this machine; empty when nothing was compared)."""
    before = _contrib_ops(onnx.load(str(model_path), load_external_data=False))
    if has_external_data(model_path):
        return {"fused": bool(before), "ops": before, "reason": "graphs with external data (over 2 GB) are not fused"}, {}
    try:
        optimized = fuse(model_path, config)
    except Exception as exc:  # the optimizer raises whatever its passes raise
        logger.warning("%s: transformer optimizer failed: %s", model_path, exc)
        return {"fused": bool(before), "ops": before, "reason": f"onnxruntime transformer optimizer failed: {exc}"}, {}
    ops = _contrib_ops(optimized.model)
    if ops == before:
        return {"fused": bool(before), "ops": before, "reason": "the optimizer found nothing (more) to fuse"}, {}
    fused_path = model_path.with_name(f".fused-{model_path.name}")
    optimized.save_model_to_file(str(fused_path))
    error = parity_error(model_path, fused_path, probe_batch(config, max_length))
    figures = measured(fusion_parity_max_rel_error=float(f"{error:.3g}"))
    if error > PARITY_RTOL:
        fused_path.unlink()
        return {
            "fused": bool(before),
            "ops": before,
            "reason": f"the fused graph ({ops}) differs from the unfused one by more than {PARITY_RTOL:g} (relative; "
            "see measured.fusion_parity_max_rel_error): kept the unfused graph",
        }, figures
    os.replace(fused_path, model_path)
    return {"fused": True, "ops": ops, "parity_rtol": PARITY_RTOL}, figures
