"""Late interaction in an OpenSearch 3.5 node (k-NN's ``lateInteractionScore``) against the Rust MaxSim, and
the bytes per document each place stores.

Run (a 3.5 node on $LRT_OPENSEARCH_V3_PORT, default 9210, is started unless one answers there):
    OMP_NUM_THREADS=2 python benches/bench_opensearch_late.py --queries 10 --json /tmp/bench_os_late.json

Workload: the first ``--queries`` judged NFCorpus test queries, client-side RRF top 50 from the node's
NFCorpus index (loaded from the cached embedded index, as the tests do). Only those candidates get tokens
(2 shared cores cannot encode the corpus in a bench run). Model: bench_colbert.py's untrained speed model
(MiniLM encoder + seeded 384->96 projection, 300 document tokens): speed and agreement only.

Per query, interleaved in one loop, the query already encoded (both paths need it):
  node_fp16 / node_int8   script_score over the 50 ids with lateInteractionScore on the stored rows (HTTP included)
  rust_maxsim             ColBERT.score_encoded on the same 50 float32 matrices in this process
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
INDEX = "lrt-test-nfcorpus"
DEPTH = 50


def pct(values: list[float], p: float) -> float:
    return round(float(np.percentile(np.asarray(values) * 1000.0, p)), 2)


def node_store_bytes(client: Any, index: str) -> int:
    client.indices.forcemerge(index=index, max_num_segments=1)
    return int(client.indices.stats(index=index, metric="store")["indices"][index]["total"]["store"]["size_in_bytes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from bench_colbert import speed_snapshot
    from scipy.stats import spearmanr

    from lrt_rerank.bundled import bundled_dataset_dir
    from lrt_rerank.datasets import load_dataset
    from lrt_rerank.first_stage.embedded import EMBEDDINGS
    from lrt_rerank.first_stage.index_cache import cached_index
    from lrt_rerank.late import ColBERT
    from lrt_rerank.models.importers.colbert import import_colbert
    from lrt_rerank.models.resolve import default_model_dir
    from lrt_rerank.opensearch import HybridSearcher
    from lrt_rerank.opensearch.client import connect
    from lrt_rerank.opensearch.indexing import index_documents
    from lrt_rerank.opensearch.late import index_late_interaction, rescore_in_node
    from lrt_rerank.ops.opensearch import NodeSpec, down, status, up
    from lrt_rerank.ops.opensearch.spec import V3_VERSION
    from lrt_rerank import BiEncoder

    spec = NodeSpec(version=V3_VERSION, port=int(os.environ.get("LRT_OPENSEARCH_V3_PORT", "9210")), heap_mb=512)
    already_running = status(spec).version is not None
    state = up(spec)
    client = connect(state.url)
    dataset = load_dataset(bundled_dataset_dir(), "test")
    embedded = cached_index(dataset, progress=False)
    encoder = BiEncoder.load(str(default_model_dir("bi-encoder")))
    if not client.indices.exists(index=INDEX):
        vectors = np.load(embedded.path / EMBEDDINGS, allow_pickle=False)
        index_documents(client, INDEX, embedded.documents, encoder, recreate=True, progress=False, vectors=vectors)
    searcher = HybridSearcher(client, INDEX, encoder, None, depth=DEPTH, pipeline=None)
    judged = dataset.eval_query_ids()[: args.queries]
    work = []
    for qid in judged:
        raw = searcher.first_stage(dataset.queries[qid])
        work.append((dataset.queries[qid], [h["_id"] for h in raw], [h["_source"]["content"] for h in raw]))
    ids = list(dict.fromkeys(i for _, doc_ids, _ in work for i in doc_ids))
    text_of = {i: t for _, doc_ids, texts in work for i, t in zip(doc_ids, texts, strict=True)}
    root = Path(tempfile.mkdtemp(prefix="lrt-bench-os-late-"))
    try:
        model = ColBERT.load(import_colbert(speed_snapshot(root / "snapshot"), root / "model"), threads=args.threads)
        before = node_store_bytes(client, INDEX)
        began = time.perf_counter()
        fp16 = index_late_interaction(model, ids, [text_of[i] for i in ids], client=client, index=INDEX, redis_url=None)
        index_s = time.perf_counter() - began
        fp16_store = node_store_bytes(client, INDEX) - before
        matrices = {i: m for i, m in zip(ids, model.encode_documents([text_of[i] for i in ids]).matrices(), strict=True)}
        int8_index = f"{INDEX}-late-int8"
        client.indices.delete(index=int8_index, ignore_unavailable=True)
        client.indices.create(index=int8_index, body={"settings": {"number_of_replicas": 0}})
        client.bulk(body="".join(json.dumps({"index": {"_index": int8_index, "_id": i}}) + "\n{}\n" for i in ids), refresh=True)
        int8_before = node_store_bytes(client, int8_index)
        int8 = index_late_interaction(model, ids, [text_of[i] for i in ids], client=client, index=int8_index, node_dtype="int8")
        int8_store = node_store_bytes(client, int8_index) - int8_before
        times: dict[str, list[float]] = {"node_fp16": [], "node_int8": [], "rust_maxsim": []}
        spearman, overlap, fp16_vs_rust = [], [], []
        queries = [(model.encode_query(q), doc_ids) for q, doc_ids, _ in work]
        for q, doc_ids in queries[:2]:  # warm-up
            rescore_in_node(client, INDEX, q, doc_ids)
            rescore_in_node(client, int8_index, q, doc_ids)
        for q, doc_ids in queries:
            began = time.perf_counter()
            node16 = dict(rescore_in_node(client, INDEX, q, doc_ids))
            times["node_fp16"].append(time.perf_counter() - began)
            began = time.perf_counter()
            node8 = dict(rescore_in_node(client, int8_index, q, doc_ids))
            times["node_int8"].append(time.perf_counter() - began)
            began = time.perf_counter()
            rust = model.score_encoded(q, [matrices[i] for i in doc_ids])
            times["rust_maxsim"].append(time.perf_counter() - began)
            a = np.asarray([node16[i] for i in doc_ids])
            b = np.asarray([node8[i] for i in doc_ids])
            spearman.append(float(spearmanr(a, b).statistic))
            overlap.append(len(set(np.argsort(-a)[:10]) & set(np.argsort(-b)[:10])) / 10)
            fp16_vs_rust.append(float(spearmanr(a, rust).statistic))
        client.indices.delete(index=int8_index)
        n, tokens = len(ids), fp16.tokens
        report = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load": os.getloadavg(),
            "queries": len(work),
            "documents": n,
            "tokens_per_document": tokens / n,
            "index_s": round(index_s, 1),
            "latency_ms": {k: {"p50": pct(v, 50), "p95": pct(v, 95)} for k, v in times.items()},
            "node_fp16_over_rust_p50": round(np.median(times["node_fp16"]) / np.median(times["rust_maxsim"]), 1),
            "bytes_per_document": {
                "node_fp16_json": fp16.per_document(fp16.node_json_bytes),
                "node_int8_json": int8.per_document(int8.node_json_bytes),
                "node_fp16_store_delta": fp16_store / n,
                "node_int8_store_delta": int8_store / n,
                "redis_fp16": 12 + 2 * tokens * model.dim / n + len(f"lrt:doc:{model.fingerprint}:") + 32,
            },
            "int8_vs_fp16_node": {"spearman_mean": float(np.mean(spearman)), "spearman_min": float(np.min(spearman)),
                                  "top10_overlap": float(np.mean(overlap))},
            "node_fp16_vs_rust_spearman_min": float(np.min(fp16_vs_rust)),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
        client.close()
        if not already_running:
            down(spec)
    from results_file import print_report  # benches/ is this script's folder

    print_report(report, args.json)


if __name__ == "__main__":
    main()
