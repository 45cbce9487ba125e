"""Export a training checkpoint to a cross-encoder model directory (ONNX + tokenizer + card), then INT8.

1. ``torch.onnx.export`` (TorchScript exporter, opset 17) with eager attention, dynamic batch and
   sequence axes; inputs ``input_ids``, ``attention_mask``, ``token_type_ids``; output ``logits`` [batch, 1].
2. ONNX Runtime's transformer optimizer (BERT fusions: embedding layer norm, attention, GELU, skip
   layer norm) where it applies; the fused graph must still reproduce the torch logits.
3. :func:`lrt_rerank.models.quantize.quantize_model_dir`: dynamic INT8, weights per channel.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from lrt_rerank.models.store import CARD, MODEL, TOKENIZER, file_sha256
from lrt_rerank.models.quantize import quantize_model_dir
from lrt_rerank.train.data import PairEncoder
from lrt_rerank.train.model import PairScorer, load_checkpoint

logger = logging.getLogger(__name__)

OPSET = 17
PARITY_ATOL = 1e-4
INPUTS = ("input_ids", "attention_mask", "token_type_ids")

PROBE_PAIRS = [
    ("vitamin D and breast cancer", "Vitamin D deficiency is common among women diagnosed with breast cancer " * 6),
    ("statins", "Statin use and risk of diabetes: a meta-analysis of randomised trials."),
    ("does coffee raise blood pressure?", "Coffee"),
    ("a much longer query about the health effects of eating processed red meat every day", "Processed meat intake and mortality " * 30),
]


class _Logits(torch.nn.Module):
    """[batch, 1] logits, the shape the engine's cross-encoder expects."""

    def __init__(self, scorer: PairScorer) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.scorer(input_ids, attention_mask, token_type_ids).unsqueeze(-1)


def _onnx_logits(path: Path, batch: dict[str, torch.Tensor]) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    feeds = {k: v.numpy().astype(np.int64) for k, v in batch.items() if k in names}
    return np.asarray(session.run(None, feeds)[0], dtype=np.float32).reshape(-1)


def probe_batch(tokenizer: Path, max_length: int) -> dict[str, torch.Tensor]:
    encoder = PairEncoder(tokenizer, max_length)
    return encoder.encode([q for q, _ in PROBE_PAIRS], [p for _, p in PROBE_PAIRS])


def export_onnx(model: PairScorer, tokenizer: Path, out: Path, max_length: int, optimize: bool = True) -> dict[str, Any]:
    """Write ``out`` (model.onnx); return the fused-op counts and the parity error against torch."""
    model.eval()
    wrapper = _Logits(model).eval()
    batch = probe_batch(tokenizer, max_length)
    with torch.no_grad():
        reference = wrapper(**batch).reshape(-1).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
        axes["logits"] = {0: "batch"}
        torch.onnx.export(
            wrapper,
            (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]),
            str(raw),
            input_names=list(INPUTS),
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
        fused: dict[str, int] = {}
        if optimize:
            from onnxruntime.transformers import optimizer

            config = model.encoder.config
            optimized = optimizer.optimize_model(
                str(raw), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size, opt_level=1
            )
            fused = dict(Counter(n.op_type for n in optimized.model.graph.node if n.domain == "com.microsoft"))
            optimized.save_model_to_file(str(out))
        else:
            shutil.copyfile(raw, out)
    error = float(np.max(np.abs(_onnx_logits(out, batch) - reference)))
    if error > PARITY_ATOL:
        raise RuntimeError(f"{out}: ONNX logits differ from torch by {error:.2e} (> {PARITY_ATOL:g})")
    return {"fused_ops": fused, "parity_max_abs_error": error}


def write_model_dir(
    checkpoint: Path, out_dir: Path, name: str, max_length: int, card_extra: dict[str, Any], optimize: bool = True
) -> Path:
    """Checkpoint directory → FP32 cross-encoder model directory with its card."""
    model, meta = load_checkpoint(checkpoint, attn="eager")
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint / TOKENIZER, out_dir / TOKENIZER)
    info = export_onnx(model, checkpoint / TOKENIZER, out_dir / MODEL, max_length, optimize)
    config = model.encoder.config
    card = {
        "kind": "cross-encoder",
        "name": name,
        "max_length": max_length,
        "pooling": "segment-cosine",
        "head": "logit = scale * cos(mean(query tokens), mean(passage tokens)) + w . mean(all tokens) + bias, "
        "over one joint encoding of [CLS] query [SEP] passage [SEP] (computed inside the graph)",
        "layers": int(config.num_hidden_layers),
        "hidden_size": int(config.hidden_size),
        "vocab_size": int(config.vocab_size),
        "parameters": model.parameter_count(),
        "onnx": {"opset": OPSET, "exporter": f"torch.onnx.export (TorchScript), torch {torch.__version__}", **info},
        "training": meta,
        "provenance": {key: meta[key] for key in ("initialised_from", "teacher") if key in meta},
        "sha256": file_sha256(out_dir / MODEL),
        **card_extra,
    }
    (out_dir / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return out_dir


def quantize(src: Path, dst: Path) -> Path:
    """INT8 copy of an FP32 model directory (card updated by :func:`quantize_model_dir`)."""
    out = quantize_model_dir(src, dst)
    data = json.loads((out / CARD).read_text(encoding="utf-8"))
    data["fused_ops_after_quantization"] = dict(
        Counter(n.op_type for n in onnx.load(str(out / MODEL)).graph.node if n.domain == "com.microsoft")
    )
    (out / CARD).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return out


def update_card(model_dir: Path, **fields: Any) -> None:
    path = model_dir / CARD
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(fields)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
