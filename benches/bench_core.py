"""Re-rank latency of the Rust engine against the plain-Python peer, in the same run.

Peer: HF `tokenizers` + onnxruntime InferenceSession on the same model file, same thread count,
all 50 pairs in one batch padded to the longest. Engine: lrt_rerank.CrossEncoder (length-sorted
batches of 16, each padded to its own longest). Candidates: the BM25 top-50 (bm25s) of NFCorpus
test queries (256 tokens) and of msmarco-sample queries. FP32 and INT8 models.

Run:  python -m pytest benches/bench_core.py --benchmark-json=.benchmarks/core.json
      python benches/summarize.py .benchmarks/core.json
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import bm25s
import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from lrt_rerank import CrossEncoder
from lrt_rerank.models.store import PLACEHOLDER_CROSS_ENCODER_NAME, model_home
from lrt_rerank.models.minilm import build_minilm_model
from lrt_rerank.models.quantize import quantize_model_dir

THREADS = 2
DEPTH = 50
ROUNDS = 12
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def load_split(name: str, split: str, limit: int) -> tuple[list[str], list[str]]:
    """(query texts with judgments in `split`, corpus texts) of a BEIR folder."""
    root = DATA / name
    corpus = []
    with open(root / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            corpus.append(f"{d.get('title') or ''} {d['text']}".strip())
    judged = set()
    with open(root / "qrels" / f"{split}.tsv", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            judged.add(line.split("\t")[0])
    queries = []
    with open(root / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            if q["_id"] in judged:
                queries.append(q["text"])
    return queries[:limit], corpus


def bm25_candidates(name: str, split: str, limit: int) -> list[tuple[str, list[str]]]:
    queries, corpus = load_split(name, split, limit)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)
    ids, _ = retriever.retrieve(bm25s.tokenize(queries, stopwords="en", show_progress=False), k=DEPTH, show_progress=False)
    return [(q, [corpus[j] for j in row]) for q, row in zip(queries, ids)]


@pytest.fixture(scope="session")
def workloads() -> dict[str, list[tuple[str, list[str]]]]:
    return {"nfcorpus": bm25_candidates("nfcorpus", "test", 24), "msmarco": bm25_candidates("msmarco-sample", "test", 24)}


def build_model_dirs() -> dict[str, Path]:
    """The MiniLM-shaped FP32 cross-encoder and its INT8 copy (built once into the model home)."""
    fp32 = model_home() / PLACEHOLDER_CROSS_ENCODER_NAME
    if not (fp32 / "card.json").is_file():
        build_minilm_model(fp32, "cross-encoder")
    int8 = model_home() / f"{PLACEHOLDER_CROSS_ENCODER_NAME}-int8"
    if not (int8 / "card.json").is_file():
        quantize_model_dir(fp32, int8)
    return {"fp32": fp32, "int8": int8}


@pytest.fixture(scope="session")
def model_dirs() -> dict[str, Path]:
    return build_model_dirs()


class PythonPeer:
    """The plain-Python pipeline: one batch of all pairs padded to the longest."""

    def __init__(self, model_dir: Path, max_length: int) -> None:
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(max_length, strategy="only_second")
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        encs = self.tok.encode_batch([(query, p) for p in passages])
        feeds = {
            "input_ids": np.array([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64),
        }
        return self.sess.run(None, feeds)[0][:, 0]


def flops_per_pair(tokens: int, layers: int = 6, hidden: int = 384, inter: int = 1536) -> int:
    """Multiply-adds ×2 of a BERT encoder over `tokens` real tokens (projections, FFN, attention)."""
    per_layer = 2 * tokens * (4 * hidden * hidden + 2 * hidden * inter) + 2 * 2 * tokens * tokens * hidden
    return layers * per_layer


def real_flops(engine: CrossEncoder, work: list[tuple[str, list[str]]]) -> float:
    total = 0
    for q, ps in work:
        total += sum(flops_per_pair(len(ids)) for ids, _ in engine.encode(q, ps))
    return total / len(work)


@pytest.mark.parametrize("dataset", ["nfcorpus", "msmarco"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("impl", ["engine", "python-peer"])
def test_rerank_top50(benchmark, workloads, model_dirs, dataset: str, precision: str, impl: str) -> None:
    work = workloads[dataset]
    model_dir = model_dirs[precision]
    engine = CrossEncoder.load(model_dir, threads=THREADS, max_length=256)
    # That both implementations agree (FP32 scores, INT8 rankings) is tests/test_bench_parity.py's
    # job: it runs in the test suite, on the first query of each workload.
    scorer = engine if impl == "engine" else PythonPeer(model_dir, 256)
    cycle = itertools.cycle(work)
    benchmark.group = f"rerank-top50-{dataset}-{precision}"
    benchmark.extra_info.update(
        impl=impl, dataset=dataset, precision=precision, threads=THREADS, flops_per_query=real_flops(engine, work)
    )
    if impl == "engine":
        padded, longest, real = np.sum([engine.padding_stats(q, ps) for q, ps in work], axis=0) / len(work)
        benchmark.extra_info.update(padded_tokens=padded, pad_to_longest_tokens=longest, real_tokens=real)
    benchmark.pedantic(lambda: scorer.score(*next(cycle)), rounds=ROUNDS, iterations=1, warmup_rounds=1)


def test_numpy_matmul(benchmark) -> None:
    """float32 1024×1024 matmul: the machine's reachable GFLOP/s in this run."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1024, 1024), dtype=np.float32)
    b = rng.standard_normal((1024, 1024), dtype=np.float32)
    benchmark.group = "matmul"
    benchmark.extra_info.update(flops_per_query=2 * 1024**3)
    benchmark.pedantic(lambda: a @ b, rounds=30, iterations=1, warmup_rounds=2)
