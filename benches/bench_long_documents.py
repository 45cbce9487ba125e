"""Long documents (issue 23): the cost of windows against document length, and their quality.

Cost (pytest-benchmark):
    pytest benches/bench_long_documents.py -o python_files='bench_*.py' \
        --benchmark-columns=min,median,mean,max,rounds

  Re-ranks a top 50 of passages 1x, 2x and 4x the window (the shipped LRT: max_length 128, so the
  window is 128 - query tokens - 3) under truncate, windows (max_windows 8) and windows capped at 2;
  each benchmark's extra_info records the pairs scored.

Figures (p50/p95 from our own timer, pairs scored, the cap's effect) and quality, as markdown:
    python benches/bench_long_documents.py cost [--rounds 10]
    python benches/bench_long_documents.py quality [--dataset nfcorpus] [--choose dev] [--report test]
    python benches/bench_long_documents.py curve [--model DIR] [--modes truncate,max,mean] [--max-queries N]

  quality: the embedded first stage (RRF top 50) re-ranked by the shipped LRT through ``Pipeline``
  (the card's interpolation applies, as in ``lrt-rerank eval``), under truncate and windows x
  aggregate x stride; the configuration is chosen on the dev split by MRR@10 and reported on test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from lrt_rerank import CrossEncoder

DATA = Path(os.environ.get("LRT_RERANK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MULTIPLES = (1, 2, 4)
DEPTH = 50
CONFIGS = {
    "truncate": {},
    "windows": {"long_documents": "windows", "max_windows": 8},
    "windows-cap2": {"long_documents": "windows", "max_windows": 2},
}


def _texts(n: int = 400) -> tuple[list[str], list[str]]:
    root = DATA / "nfcorpus"
    docs = []
    with open(root / "corpus.jsonl", encoding="utf-8") as fh:
        for line in itertools.islice(fh, n):
            d = json.loads(line)
            docs.append(f"{d.get('title', '')} {d['text']}".strip())
    with open(root / "queries.jsonl", encoding="utf-8") as fh:
        queries = [json.loads(line)["text"] for line in itertools.islice(fh, 10)]
    return queries, docs


def passages_of(encoder: CrossEncoder, query: str, docs: list[str], multiple: int) -> list[str]:
    """DEPTH passages of exactly ``multiple`` windows' tokens each (NFCorpus text, joined and cut)."""
    width = encoder.window_width(query)
    assert width is not None
    tok = Tokenizer.from_file(str(encoder.model_dir / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    stream = " ".join(docs)
    enc = tok.encode(stream, add_special_tokens=False)
    n = width * multiple
    out = []
    for k in range(DEPTH):
        s = (k * 37 * n // 10) % max(1, len(enc.ids) - n)
        out.append(stream[enc.offsets[s][0] : enc.offsets[s + n - 1][1]])
    return out


@pytest.fixture(scope="module")
def base() -> CrossEncoder:
    if not (DATA / "nfcorpus" / "corpus.jsonl").is_file():
        pytest.skip(f"{DATA}: benchmark data not found (set LRT_RERANK_DATA)")
    return CrossEncoder.load()


@pytest.mark.parametrize("multiple", MULTIPLES)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_rerank_top50_long(benchmark, base: CrossEncoder, multiple: int, config: str) -> None:
    queries, docs = _texts()
    encoder = base.with_windows(**CONFIGS[config]) if CONFIGS[config] else base
    pairs = [(q, passages_of(encoder, q, docs, multiple)) for q in queries[:5]]
    benchmark.extra_info["pairs_scored"] = sum(w for _, _, w, _ in encoder.window_stats(*pairs[0]))
    it = itertools.cycle(pairs)
    benchmark.pedantic(lambda: encoder.score(*next(it)), rounds=10, iterations=1, warmup_rounds=1)


def cost(rounds: int) -> str:
    base = CrossEncoder.load()
    queries, docs = _texts()
    rows = ["| passage length | mode | pairs scored (50 passages) | p50 ms | p95 ms | tokens dropped |", "|---|---|---|---|---|---|"]
    for multiple in MULTIPLES:
        for name, kw in CONFIGS.items():
            encoder = base.with_windows(**kw) if kw else base
            pairs = [(q, passages_of(encoder, q, docs, multiple)) for q in queries[:5]]
            stats = encoder.window_stats(*pairs[0])
            encoder.score(*pairs[0])  # warm-up
            samples = []
            for r in range(rounds):
                q, ps = pairs[r % len(pairs)]
                t = time.perf_counter()
                encoder.score(q, ps)
                samples.append((time.perf_counter() - t) * 1000)
            p50, p95 = np.percentile(samples, [50, 95])
            rows.append(
                f"| {multiple}x window | {name} | {sum(w for _, _, w, _ in stats)} | {p50:.0f} | {p95:.0f} | "
                f"{sum(t - ts for t, ts, _, _ in stats)} |"
            )
    return "\n".join(rows)


def quality(
    dataset_name: str, choose: str, report: str, configs: list[dict], max_queries: int | None = None, interpolation: float | None = None
) -> str:
    from lrt_rerank.datasets import load_dataset
    from lrt_rerank.evaluate import score_run
    from lrt_rerank.first_stage.index_cache import cached_index
    from lrt_rerank.pipeline import Pipeline

    base = CrossEncoder.load()
    root = DATA / dataset_name
    results: dict[str, dict[str, dict[str, float]]] = {}

    def run(split: str, kw: dict) -> dict[str, float]:
        dataset = load_dataset(root, split)
        stage = cached_index(dataset)
        encoder = base.with_windows(**kw) if kw else base
        pipeline = Pipeline(stage, encoder, rerank_depth=DEPTH, interpolation=interpolation)
        ids = dataset.eval_query_ids()[:max_queries]
        ranking = {qid: [h.id for h in pipeline.run(dataset.queries[qid], k=DEPTH).hits] for qid in ids}
        return score_run(ranking, dataset.qrels, ids)

    def label(kw: dict) -> str:
        return "truncate" if not kw else f"windows {kw.get('aggregate', 'max')} stride={kw.get('window_stride') or 'W/2'} cap={kw.get('max_windows', 8)}"

    lines = [f"| {dataset_name} {choose} | MRR@10 | NDCG@10 |", "|---|---|---|"]
    best, best_mrr = {}, -1.0
    for kw in configs:
        t = time.perf_counter()
        m = run(choose, kw)
        results.setdefault(choose, {})[label(kw)] = m
        lines.append(f"| {label(kw)} | {m['MRR@10']:.3f} | {m['NDCG@10']:.3f} |")
        print(label(kw), m, f"{time.perf_counter() - t:.0f}s", flush=True)
        if m["MRR@10"] > best_mrr:
            best, best_mrr = kw, m["MRR@10"]
    lines += ["", f"| {dataset_name} {report} | MRR@10 | NDCG@10 |", "|---|---|---|"]
    for kw in [{}] + ([best] if best else []):
        m = run(report, kw)
        lines.append(f"| {label(kw)}{' (chosen on ' + choose + ')' if kw is best else ''} | {m['MRR@10']:.3f} | {m['NDCG@10']:.3f} |")
        print(label(kw), report, m, flush=True)
    return "\n".join(lines)


WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0)
MODES = {
    "truncate": {},
    "max": {"long_documents": "windows", "aggregate": "max"},
    "mean": {"long_documents": "windows", "aggregate": "mean"},
    "sum": {"long_documents": "windows", "aggregate": "sum"},
}
"""``curve`` modes; ``max-strideN`` (any aggregate) is windows with stride N."""


def mode_settings(name: str) -> dict:
    head, _, stride = name.partition("-stride")
    if head not in MODES or (stride and not stride.isdigit()):
        raise SystemExit(f"--modes: {name!r} is not one of {', '.join(MODES)} (optionally -strideN)")
    return {**MODES[head], **({"window_stride": int(stride)} if stride else {})}


def curve(
    dataset_name: str, choose: str, report: str, max_queries: int | None = None, model: str | None = None,
    modes: tuple[str, ...] = ("truncate", "max"), report_queries: int | None = None, report_skip: int = 0,
) -> str:
    """Truncate and window modes against the interpolation weight: each split's RRF top 50 is scored once
    per mode (raw logits), then every weight is applied as the core applies it
    (:func:`lrt_rerank.interpolation.combine`). The (mode, weight) is chosen on ``choose`` by MRR@10 and
    reported on ``report`` beside truncation at its own best ``choose`` weight (and at the card's, when the
    card names one). ``report_skip`` skips the report split's first judged queries (to report on queries
    apart from those chosen on when both are one split)."""
    from lrt_rerank.datasets import load_dataset
    from lrt_rerank.evaluate import score_run
    from lrt_rerank.first_stage.index_cache import cached_index
    from lrt_rerank.interpolation import card_weight, combine

    base = CrossEncoder.load(model) if model else CrossEncoder.load()
    encoders = {m: base.with_windows(**mode_settings(m)) if mode_settings(m) else base for m in modes}
    card = json.loads((base.model_dir / "card.json").read_text())

    def logits(split: str, limit: int | None, which: tuple[str, ...], skip: int = 0) -> tuple[dict, dict, dict, list[str]]:
        dataset = load_dataset(DATA / dataset_name, split)
        stage = cached_index(dataset)
        ids = dataset.eval_query_ids()[skip:][:limit]
        cands, scores = {}, {m: {} for m in which}
        began = time.perf_counter()
        for n, qid in enumerate(ids, 1):
            query = dataset.queries[qid]
            cands[qid] = [c.id for c in stage.search(query, DEPTH, "rrf")][:DEPTH]
            texts = stage.get_texts(cands[qid])
            for m in which:
                scores[m][qid] = np.asarray(encoders[m].score(query, texts), dtype=np.float64)
            if n % 25 == 0:
                print(f"{dataset_name} {split}: {n}/{len(ids)} queries, {time.perf_counter() - began:.0f} s", flush=True)
        return dataset.qrels, cands, scores, ids

    def mrr(qrels: dict, cands: dict, scores: dict, ids: list[str], weight: float) -> dict[str, float]:
        run = {}
        for qid in ids:
            fused = combine(scores[qid], weight)
            order = sorted(range(len(fused)), key=lambda i: (-fused[i], i))
            run[qid] = [cands[qid][i] for i in order]
        return score_run(run, qrels, ids)

    qrels, cands, scores, ids = logits(choose, max_queries, tuple(modes))
    lines = [f"| {dataset_name} {choose} ({len(ids)} queries), MRR@10 | " + " | ".join(f"w={w:g}" for w in WEIGHTS) + " |",
             "|---|" + "---|" * len(WEIGHTS)]
    best, best_truncate = ("truncate", 0.0, -1.0), ("truncate", 0.0, -1.0)
    for m in modes:
        row = [mrr(qrels, cands, scores[m], ids, w)["MRR@10"] for w in WEIGHTS]
        lines.append(f"| {m} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
        for w, v in zip(WEIGHTS, row):
            if v > best[2]:
                best = (m, w, v)
            if m == "truncate" and v > best_truncate[2]:
                best_truncate = (m, w, v)
    shown = [("truncate", best_truncate[1], f" (its best weight on {choose})")]
    if "interpolation" in card:
        shown.insert(0, ("truncate", card_weight(card), " (the card's weight)"))
    shown.append((best[0], best[1], f" (chosen on {choose})"))
    qrels, cands, scores, ids = logits(report, report_queries, tuple(dict.fromkeys(m for m, _, _ in shown)), report_skip)
    skipped = f", after its first {report_skip}" if report_skip else ""
    lines += ["", f"| {dataset_name} {report} ({len(ids)} queries{skipped}) | weight | MRR@10 | NDCG@10 |", "|---|---|---|---|"]
    for m, w, note in shown:
        r = mrr(qrels, cands, scores[m], ids, w)
        lines.append(f"| {m}{note} | {w:g} | {r['MRR@10']:.3f} | {r['NDCG@10']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--rounds", type=int, default=10)
    q = sub.add_parser("quality")
    q.add_argument("--dataset", default="nfcorpus")
    q.add_argument("--choose", default="dev")
    q.add_argument("--report", default="test")
    q.add_argument("--max-queries", type=int, default=None, help="the first N judged queries of each split (default: all)")
    q.add_argument(
        "--interpolation", type=float, default=None,
        help="weight of the first-stage order (default: the card's; 0 = the re-ranker's order alone)",
    )
    q.add_argument("--configs", default="truncate,max,mean,sum,max-stride96", help="comma-separated (default: %(default)s)")
    cv = sub.add_parser("curve", help="truncate and windows against the interpolation weight (scored once per mode)")
    cv.add_argument("--dataset", default="nfcorpus")
    cv.add_argument("--choose", default="dev")
    cv.add_argument("--report", default="test")
    cv.add_argument("--max-queries", type=int, default=None, help="the first N judged queries of the choose split")
    cv.add_argument("--report-queries", type=int, default=None, help="the first N judged queries of the report split")
    cv.add_argument("--report-skip", type=int, default=0, help="skip the report split's first N judged queries")
    cv.add_argument("--model", default=None, help="cross-encoder model directory (default: the shipped LRT)")
    cv.add_argument("--modes", default="truncate,max", help="comma-separated: truncate, max, mean, sum, each optionally -strideN")
    args = parser.parse_args()
    if args.what == "curve":
        modes = tuple(args.modes.split(","))
        for m in modes:
            mode_settings(m)
        print(curve(args.dataset, args.choose, args.report, args.max_queries, args.model, modes, args.report_queries, args.report_skip))
    elif args.what == "cost":
        print(cost(args.rounds))
    else:
        configs = [mode_settings(c) for c in args.configs.split(",")]
        print(quality(args.dataset, args.choose, args.report, configs, args.max_queries, args.interpolation))


if __name__ == "__main__":
    main()
