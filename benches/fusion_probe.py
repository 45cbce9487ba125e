"""How much a score-level fusion of the first stage's own signals adds over its RRF order (a diagnostic).

For every judged query of a split, the embedded first stage's RRF top 50 is re-ordered by

    a * z(BM25 score) + b * z(dense cosine) + c * z(-log RRF rank)

(``z``: standardised over the query's 50 candidates; a candidate missing from one system's top 200
gets that system's lowest score). ``a, b, c`` are chosen on the ``train`` split over a small grid,
then applied unchanged to ``--eval`` (dev or test). It answers one question: how much of a
re-ranker's possible gain is already in the first stage's scores, which RRF reduces to ranks.
With ``--reranker DIR`` (repeatable) each model's standardised logit is added to the fused score,
its weight chosen on the reported split itself (as ``train report`` chooses interpolation weights on
dev): what a cross-encoder adds on top of the fusion.

    python benches/fusion_probe.py --dataset ../shared/data/scifact --eval dev [--reranker DIR]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from lrt_rerank.commands.pipeline import cached_index
from lrt_rerank.datasets import Dataset, load_dataset
from lrt_rerank.evaluate import score_run
from lrt_rerank.first_stage.base import FirstStage

DEPTH = 50
POOL = 200
GRID = (0.0, 0.25, 0.5, 1.0, 2.0)
Features = dict[str, tuple[list[str], np.ndarray]]


def _z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-9)


def features(dataset: Dataset, first_stage: FirstStage) -> Features:
    """Per judged query: the RRF top-50 ids and a [3, n] array of z(BM25), z(dense), z(-log rank)."""
    out: Features = {}
    for qid in dataset.eval_query_ids():
        text = dataset.queries[qid]
        ids = [c.id for c in first_stage.search(text, DEPTH, "rrf")]
        rows = []
        for system in ("bm25", "dense"):
            scores = {c.id: c.score for c in first_stage.search(text, POOL, system)}
            floor = min(scores.values()) if scores else 0.0
            rows.append(_z(np.array([scores.get(d, floor) for d in ids], dtype=np.float64)))
        rows.append(_z(-np.log(np.arange(1, len(ids) + 1, dtype=np.float64))))
        out[qid] = (ids, np.vstack(rows))
    return out


def fused_run(feats: Features, weights: tuple[float, float, float]) -> dict[str, list[str]]:
    w = np.asarray(weights)
    return {qid: [ids[i] for i in np.argsort(-(w @ x), kind="stable")] for qid, (ids, x) in feats.items()}


def mrr(dataset: Dataset, run: dict[str, list[str]]) -> float:
    return score_run(run, dataset.qrels, list(run))["MRR@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True, help="BEIR folder with qrels/train.tsv")
    parser.add_argument("--eval", default="dev", help="split to report (default: %(default)s)")
    parser.add_argument("--reranker", type=Path, action="append", default=[], help="model directory whose logits join the fusion")
    parser.add_argument("--threads", type=int, default=2, help="engine threads (default: %(default)s)")
    args = parser.parse_args()
    train, held = load_dataset(args.dataset, "train"), load_dataset(args.dataset, args.eval)
    first_stage = cached_index(train, progress=False)
    on_train, on_held = features(train, first_stage), features(held, first_stage)
    candidates = [w for w in itertools.product(GRID, GRID, GRID) if sum(w) > 0]
    best = max(candidates, key=lambda w: (round(mrr(train, fused_run(on_train, w)), 6), -sum(w)))
    rows = {
        "RRF order (first stage)": (0.0, 0.0, 1.0),
        "BM25 scores only": (1.0, 0.0, 0.0),
        "dense scores only": (0.0, 1.0, 0.0),
        f"fused, weights {best} chosen on train": best,
    }
    print(f"{args.dataset.name}/{args.eval}: {len(on_held)} queries, RRF top {DEPTH} re-ordered\n")
    print("| order | MRR@10 |\n|---|---|")
    for label, weights in rows.items():
        print(f"| {label} | {mrr(held, fused_run(on_held, weights)):.3f} |")
    for model_dir in args.reranker:
        curve = with_reranker(held, on_held, best, model_dir, args.threads)
        weight = max(curve, key=lambda w: (round(curve[w], 6), -w))
        print(f"| fused + {weight:g} * z({model_dir} logit), weight chosen on {args.eval} | {curve[weight]:.3f} |")


def with_reranker(dataset: Dataset, feats: Features, weights: tuple[float, float, float], model_dir: Path, threads: int) -> dict[float, float]:
    """MRR@10 of the fused score plus w * the re-ranker's standardised logit, for each w of the grid."""
    from lrt_rerank import CrossEncoder

    encoder = CrossEncoder.load(str(model_dir), threads=threads)
    logits = {qid: _z(np.asarray(encoder.score(dataset.queries[qid], [dataset.corpus[d].full_text for d in ids]), dtype=np.float64))
              for qid, (ids, _) in feats.items()}
    w = np.asarray(weights)
    curve = {}
    for extra in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0):
        run = {qid: [ids[i] for i in np.argsort(-(w @ x + extra * logits[qid]), kind="stable")] for qid, (ids, x) in feats.items()}
        curve[extra] = mrr(dataset, run)
    return curve


if __name__ == "__main__":
    main()
