"""ONNX Runtime's transformer optimizer on an imported FP32 graph, kept only where it reproduces the graph.

Fusions (model_type "bert" for all four families, as in :mod:`lrt_rerank.train.export`): attention,
embedding layer norm, skip layer norm, bias GELU / FastGelu where the patterns match. The fused
graph must reproduce the unfused one on a probe batch (padding included); otherwise the unfused
graph is kept and the card says why.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx
import onnxruntime as ort

from lrt_rerank.models.convert import EncoderConfig

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


@contextmanager
def _quiet_optimizer() -> Iterator[None]:
    """The optimizer warns that our graphs' producer is not "pytorch": true, and beside the point."""
    log = logging.getLogger("onnxruntime.transformers.optimizer")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def optimize_in_place(model_path: Path, config: EncoderConfig, max_length: int) -> dict[str, Any]:
    """Replace ``model_path`` by its fused graph when that reproduces it; return the card's ``optimization``."""
    from onnxruntime.transformers import optimizer

    before = _contrib_ops(onnx.load(str(model_path), load_external_data=False))
    try:
        with _quiet_optimizer():
            optimized = optimizer.optimize_model(
                str(model_path),
                model_type="bert",
                num_heads=config.num_heads,
                hidden_size=config.hidden_size,
                opt_level=1,
            )
    except Exception as exc:  # the optimizer raises whatever its passes raise
        logger.warning("%s: transformer optimizer failed: %s", model_path, exc)
        return {"fused": bool(before), "ops": before, "reason": f"onnxruntime transformer optimizer failed: {exc}"}
    ops = _contrib_ops(optimized.model)
    if ops == before:
        return {"fused": bool(before), "ops": before, "reason": "the optimizer found nothing (more) to fuse"}
    fused_path = model_path.with_name(f".fused-{model_path.name}")
    optimized.save_model_to_file(str(fused_path))
    error = parity_error(model_path, fused_path, probe_batch(config, max_length))
    if error > PARITY_RTOL:
        fused_path.unlink()
        return {
            "fused": bool(before),
            "ops": before,
            "reason": f"the fused graph ({ops}) differs from the unfused one by {error:.2e} (relative, "
            f"> {PARITY_RTOL:g}): kept the unfused graph",
        }
    os.replace(fused_path, model_path)
    return {"fused": True, "ops": ops, "parity_max_rel_error": error}
