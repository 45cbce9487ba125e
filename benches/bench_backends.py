"""Engine backends in one run: ONNX Runtime INT8 (dynamic, `models import --int8`) against OpenVINO bf16
and OpenVINO static INT8 (NNCF, calibrated on NFCorpus dev pairs), on the same MiniLM-shaped
cross-encoder (bench_core's): BM25 top 50 of NFCorpus test queries at 256 tokens, interleaved per
query in an order that rotates by one, p50/p95 and ratios against ORT INT8, plus the per-query
Spearman of each against the FP32 model on ORT. Then the ColBERT query encoding per backend (the
ColBERT-shaped model of bench_colbert), interleaved the same way.

Run:  python benches/bench_backends.py --queries 20 --json out.json
Smoke (pytest collects it): python -m pytest -q benches/bench_backends.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_core  # noqa: E402
from bench_core import bm25_candidates, build_model_dirs  # noqa: E402

from lrt_rerank import CrossEncoder  # noqa: E402
from lrt_rerank.backends import cpu_flags, cpu_kind  # noqa: E402

MAX_LENGTH = 256
THREADS = 2
# bench_core reads ../shared/data beside the checkout; LRT_SHARED_DATA names it from elsewhere (a worktree)
bench_core.DATA = Path(os.environ.get("LRT_SHARED_DATA", bench_core.DATA))
SIMD = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def interleaved(systems: dict[str, Callable[[int], Any]], count: int, warmup: int = 2) -> dict[str, list[float]]:
    """ms per call of each system on items 0..count-1, the systems' order rotating by one per item."""
    names = list(systems)
    for i in range(warmup):
        for name in names:
            systems[name](i)
    ms: dict[str, list[float]] = {name: [] for name in names}
    for i in range(count):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            systems[name](i)
            ms[name].append((time.perf_counter() - start) * 1000)
    return ms


def summary(ms: dict[str, list[float]], base: str) -> dict[str, Any]:
    out: dict[str, Any] = {name: {"p50": round(pct(v, 50), 1), "p95": round(pct(v, 95), 1)} for name, v in ms.items()}
    for name, v in ms.items():
        out[name]["p50_speedup_vs_" + base] = round(pct(ms[base], 50) / pct(v, 50), 2)
    return out


def cross_encoder_bench(queries: int, root: Path) -> dict[str, Any]:
    from lrt_rerank.models.openvino_ir import write_int8_ir

    dirs = build_model_dirs()
    ov_int8 = root / "ov-int8"
    shutil.copytree(dirs["fp32"], ov_int8)
    calibration = [(q, p) for q, ps in bm25_candidates("nfcorpus", "dev", 30) for p in ps[:10]]
    write_int8_ir(ov_int8, calibration)
    work = bm25_candidates("nfcorpus", "test", queries + 2)
    load = dict(max_length=MAX_LENGTH, threads=THREADS)
    models = {
        "ort_int8": CrossEncoder.load(dirs["int8"], **load),
        "openvino_bf16": CrossEncoder.load(dirs["fp32"], backend="openvino", precision="bf16", **load),
        "openvino_int8": CrossEncoder.load(ov_int8, backend="openvino", precision="bf16", **load),
    }
    fp32 = CrossEncoder.load(dirs["fp32"], **load)
    reference = [fp32.score(q, ps) for q, ps in work[2:]]
    ms = interleaved({n: (lambda i, m=m: m.score(*work[i])) for n, m in models.items()}, queries)
    out = summary(ms, "ort_int8")
    for name, model in models.items():
        rho = [spearman(ref, model.score(q, ps)) for ref, (q, ps) in zip(reference, work[2:])]
        out[name].update(min_spearman=round(min(rho), 3), mean_spearman=round(statistics.mean(rho), 3),
                         runtime=model.card["runtime"])  # fmt: skip
    return out


def colbert_query_bench(queries: int, root: Path) -> dict[str, Any]:
    from bench_colbert import speed_snapshot

    from lrt_rerank.late import ColBERT
    from lrt_rerank.models.importers.colbert import import_colbert

    model_dir = import_colbert(speed_snapshot(root / "colbert-snapshot"), root / "colbert")
    texts = [q for q, _ in bm25_candidates("nfcorpus", "test", queries + 2)]
    models = {
        "ort": ColBERT.load(model_dir, threads=THREADS),
        "openvino_f32": ColBERT.load(model_dir, threads=THREADS, backend="openvino", precision="f32"),
        "openvino_bf16": ColBERT.load(model_dir, threads=THREADS, backend="openvino", precision="bf16"),
    }
    ms = interleaved({n: (lambda i, m=m: m.encode_query(texts[i])) for n, m in models.items()}, queries)
    return summary(ms, "ort")


def run(queries: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="lrt-bench-backends-"))
    try:
        flags = cpu_flags()
        return {
            "cpu_kind": cpu_kind(flags),
            "simd_flags": sorted(f for f in SIMD if f in flags),
            "queries": queries,
            "cross_encoder_nfcorpus_top50_256": cross_encoder_bench(queries, root),
            "colbert_query_encoding": colbert_query_bench(queries, root),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_backends_smoke() -> None:
    """Two queries: every system runs and the ratios come out."""
    out = run(2)
    assert set(out["cross_encoder_nfcorpus_top50_256"]) == {"ort_int8", "openvino_bf16", "openvino_int8"}
    assert out["cross_encoder_nfcorpus_top50_256"]["openvino_int8"]["runtime"]["backend"] == "openvino"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out = run(args.queries)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
