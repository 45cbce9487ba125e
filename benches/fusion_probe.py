"""How much a score-level fusion of the first stage's own signals adds over its RRF order (a diagnostic).

For every judged query of a split, the embedded first stage's RRF top 50 is re-ordered by

    a * z(BM25 score) + b * z(dense cosine) + c * z(-log RRF rank)

(``z``: standardised over the query's 50 candidates; a candidate missing from one system's top 200
gets that system's lowest score; the features are :mod:`lrt_rerank.rerank.fusion`'s, the weights
:mod:`lrt_rerank.train.fusion`'s, which ``train all --teacher-fusion`` uses). ``lrt-rerank tune`` is the
shipped form of this probe: cross-validated, with a guard, applied on every path (docs/tuned-fusion.md). ``a, b, c`` are chosen on the ``train`` split over a small grid,
then applied unchanged to ``--eval`` (dev or test). It answers one question: how much of a
re-ranker's possible gain is already in the first stage's scores, which RRF reduces to ranks.
With ``--reranker DIR`` (repeatable) each model's standardised logit is added to the fused score,
its weight chosen on the reported split itself (as ``train report`` chooses interpolation weights on
dev): what a cross-encoder adds on top of the fusion.

    python benches/fusion_probe.py --dataset ../shared/data/scifact --eval dev [--reranker DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lrt_rerank.datasets import Dataset, load_dataset
from lrt_rerank.first_stage.base import FirstStage
from lrt_rerank.first_stage.index_cache import cached_index
from lrt_rerank.rerank.fusion import first_stage_features
from lrt_rerank.train.fusion import Features, FusionWeights, choose_first_stage_weights, choose_teacher_weight, fused_run, mrr_at_10

DEPTH = 50


def features(dataset: Dataset, first_stage: FirstStage) -> Features:
    """Per judged query: the RRF top-50 ids and their z(BM25), z(dense) (:func:`lrt_rerank.rerank.fusion.first_stage_features`)."""
    out: Features = {}
    for qid in dataset.eval_query_ids():
        text = dataset.queries[qid]
        ids = [c.id for c in first_stage.search(text, DEPTH, "rrf")]
        out[qid] = (ids, first_stage_features(first_stage, text, ids))
    return out


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
    best, _ = choose_first_stage_weights(train.qrels, on_train)
    rows = {
        "RRF order (first stage)": FusionWeights(0.0, 0.0, 1.0),
        "BM25 scores only": FusionWeights(1.0, 0.0, 0.0),
        "dense scores only": FusionWeights(0.0, 1.0, 0.0),
        f"fused, weights ({best.bm25:g}, {best.dense:g}, {best.prior:g}) chosen on train": best,
    }
    print(f"{args.dataset.name}/{args.eval}: {len(on_held)} queries, RRF top {DEPTH} re-ordered\n")
    print("| order | MRR@10 |\n|---|---|")
    for label, weights in rows.items():
        print(f"| {label} | {mrr_at_10(held.qrels, fused_run(on_held, weights)):.3f} |")
    for model_dir in args.reranker:
        logits = reranker_logits(held, on_held, model_dir, args.threads)
        fused, curve = choose_teacher_weight(held.qrels, on_held, logits, best)
        print(f"| fused + {fused.teacher:g} * z({model_dir} logit), weight chosen on {args.eval} | {curve[fused.teacher]:.3f} |")


def reranker_logits(dataset: Dataset, feats: Features, model_dir: Path, threads: int) -> dict[str, np.ndarray]:
    """The re-ranker's logits for each query's candidates."""
    from lrt_rerank import CrossEncoder

    encoder = CrossEncoder.load(str(model_dir), threads=threads)
    return {qid: np.asarray(encoder.score(dataset.queries[qid], [dataset.corpus[d].full_text for d in ids]), dtype=np.float64)
            for qid, (ids, _) in feats.items()}


if __name__ == "__main__":
    main()
