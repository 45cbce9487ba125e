"""`lrt-rerank tune`: choose the tuned fusion on a split's judged queries and write ``fusion.json``
(:mod:`lrt_rerank.tune`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lrt_rerank.commands.common import add_dense_model_arg, add_judged_dataset_arg, add_stemmer_arg, reports_user_errors
from lrt_rerank.datasets import load_dataset
from lrt_rerank.first_stage.index_cache import open_first_stage
from lrt_rerank.rerank.loading import load_reranker
from lrt_rerank.tune import FOLDS, TUNING_SPLITS, check_split, tune


DESCRIPTION = (
    "Fit RRF k, or a convex combination of normalised BM25 and dense scores with the RRF prior (and, with --reranker, "
    "the re-ranker's logit), by cross-validation on a split's judged queries. A function other than RRF is adopted "
    "only if the 95% paired-bootstrap interval of its gain over RRF (MRR@10) is above 0."
)
SUMMARY = "choose the first stage's ranking function (and a re-ranker's weight) on judged queries"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("tune", help=SUMMARY, description=DESCRIPTION)
    add_judged_dataset_arg(parser)
    parser.add_argument("--split", required=True, help=f"split to tune on: {' or '.join(TUNING_SPLITS)} (never test)")
    parser.add_argument("--out", required=True, type=Path, help="fusion.json to write")
    parser.add_argument("--reranker", help="cross-encoder whose logit weight is tuned too: 'default' or a model directory")
    parser.add_argument("--index", type=Path, help="embedded index directory (default: the cached index of the corpus)")
    add_dense_model_arg(parser)
    add_stemmer_arg(parser, for_existing=True)
    parser.add_argument("--max-queries", type=int, help="tune on a seeded random N of the judged queries (learning curves)")
    parser.add_argument("--folds", type=int, default=FOLDS, help="cross-validation folds (default: %(default)s)")
    parser.set_defaults(func=cmd_tune, command_name="tune")


@reports_user_errors
def cmd_tune(args: argparse.Namespace) -> int:
    check_split(args.split)  # before loading anything
    dataset = load_dataset(args.dataset, args.split)
    reranker = load_reranker(args.reranker) if args.reranker is not None else None
    stage = open_first_stage("embedded", dataset, index=args.index, dense_model=args.dense_model, stemmer=args.stemmer)
    try:
        fusion = tune(dataset, stage, reranker, reranker_name=args.reranker, max_queries=args.max_queries, folds=args.folds)
    finally:
        stage.close()
    fusion.save(args.out)
    figures = fusion.figures
    cv = figures["cross_validation"]
    print(
        f"{dataset.name} / {args.split}: {figures['queries']} judged queries, {figures['candidates']} candidate functions, "
        f"{cv['folds']}-fold cross-validation"
    )
    print(f"RRF MRR@10 {figures['rrf']:.4f}; cross-validated {cv['MRR@10']:.4f} (gain {cv['gain_over_rrf']:+.4f}, 95% CI {cv['gain_ci95']})")
    print(f"{'adopted' if figures['adopted'] else 'kept RRF'}: {fusion.describe()} ({figures['reason']})")
    print(f"written to {args.out}")
    return 0
