"""`lrt-rerank plan`: measure candidate pipelines on a split's judged queries and this machine, choose one
under a p95 budget and write ``plan.json`` (:mod:`lrt_rerank.plan`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lrt_rerank.commands.common import add_dense_model_arg, add_judged_dataset_arg, reports_user_errors
from lrt_rerank.datasets import load_dataset
from lrt_rerank.extras import require
from lrt_rerank.first_stage.index_cache import open_first_stage
from lrt_rerank.plan.latency import LATENCY_QUERIES
from lrt_rerank.plan.planfile import Plan
from lrt_rerank.tune import FOLDS, TUNING_SPLITS, check_split

DESCRIPTION = (
    "Score the first stage's top 100 of each judged query once with each re-ranker (at each sensible max length), "
    "derive every depth, interpolation weight and cascade from those scores, time each on this machine, and choose "
    "the most precise pipeline whose p95 (first stage included) is within the budget less a margin; it is adopted only "
    "if the 95%% paired-bootstrap interval of its cross-validated MRR@10 gain over the first stage is above 0 (the "
    "guard of `tune`), else the first stage is kept."
)
SUMMARY = "choose re-rankers, depths, lengths and cascades under a p95 budget on judged queries"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("plan", help=SUMMARY, description=DESCRIPTION)
    add_judged_dataset_arg(parser)
    parser.add_argument("--split", help=f"split to plan on: {' or '.join(TUNING_SPLITS)} (never test; with --reuse-quality: the plan's)")
    parser.add_argument("--budget-ms", type=float, help="p95 latency budget per query, first stage included (with --reuse-quality: the plan's)")
    parser.add_argument("--margin-ms", type=float, help="keep the chosen p95 this far under the budget (default: 5%% of it, at least 2 ms)")
    parser.add_argument(
        "--reranker", action="append", default=[], metavar="MODEL",
        help="a re-ranker to consider: 'default' or a model directory (repeat for several; cascades go cheap to dear)",
    )
    parser.add_argument("--out", required=True, type=Path, help="plan.json to write")
    parser.add_argument("--plot", type=Path, help="also draw MRR@10 against p95 for every candidate to this PNG (plot extra)")
    parser.add_argument("--json", action="store_true", help="print the choice as one JSON object instead of text")
    parser.add_argument("--reuse-quality", type=Path, metavar="PLAN", help="a plan.json whose quality to keep: re-measure latency only")
    parser.add_argument("--index", type=Path, help="embedded index directory (default: the cached index of the corpus)")
    add_dense_model_arg(parser)
    parser.add_argument("--max-queries", type=int, help="plan on a seeded random N of the judged queries")
    parser.add_argument("--latency-queries", type=int, default=LATENCY_QUERIES, help="queries timed per candidate (default: %(default)s)")
    parser.add_argument("--folds", type=int, default=FOLDS, help="cross-validation folds of the guard (default: %(default)s)")
    parser.set_defaults(func=cmd_plan, command_name="plan")


@reports_user_errors
def cmd_plan(args: argparse.Namespace) -> int:
    from lrt_rerank.plan.models import open_model
    from lrt_rerank.plan.planner import make_plan

    reuse = Plan.load(args.reuse_quality) if args.reuse_quality is not None else None
    split = args.split or (reuse.evidence.get("split") if reuse is not None else None)
    budget = args.budget_ms if args.budget_ms is not None else (reuse.budget_ms if reuse is not None else None)
    if split is None or budget is None:
        raise ValueError("--split and --budget-ms are required (unless --reuse-quality gives them)")
    check_split(split)
    if args.plot is not None:
        require("plot", "--plot")
    specs = args.reranker or (sorted((reuse.evidence.get("compared_models") or {}).keys()) if reuse is not None else [])
    if not specs:
        raise ValueError("name at least one --reranker to plan with")
    dataset = load_dataset(args.dataset, split)
    models = [open_model(spec) for spec in specs]
    stage = open_first_stage("embedded", dataset, index=args.index, dense_model=args.dense_model)
    try:
        plan = make_plan(
            dataset, stage, models, budget, margin_ms=args.margin_ms, max_queries=args.max_queries,
            latency_queries=args.latency_queries, reuse=reuse, folds=args.folds,
        )
    finally:
        stage.close()
    plan.save(args.out)
    if args.plot is not None:
        from lrt_rerank.plan.plot import plot_plan

        plot_plan(plan, args.plot)
    _report(plan, args)
    return 0


def _report(plan: Plan, args: argparse.Namespace) -> None:
    ev = plan.evidence
    row = next(r for r in ev["table"] if r["pipeline"] == plan.describe())
    base = ev["table"][0]
    if args.json:
        summary = {
            "chosen": plan.describe(), "adopted": ev["adopted"], "reason": ev["reason"], "budget_ms": plan.budget_ms,
            "p95_ms": row["p95_ms"], "MRR@10": row["MRR@10"], "NDCG@10": row["NDCG@10"], "first_stage": {
                "p95_ms": base["p95_ms"], "MRR@10": base["MRR@10"], "NDCG@10": base["NDCG@10"]},
            "candidates": len(ev["table"]), "within_budget": ev["guard"]["within_budget"],
            "latency_checks": ev["latency"]["direct_checks"], "out": str(args.out),
        }
        print(json.dumps(summary))
        return
    print(
        f"{ev['dataset']} / {ev['split']}: {ev['queries']} judged queries, {len(ev['table'])} candidate pipelines, "
        f"{ev['guard']['within_budget']} re-ranking ones with p95 <= {ev['guard']['limit_ms']:.1f} ms (budget {plan.budget_ms:g} ms)"
    )
    print(f"first stage: MRR@10 {base['MRR@10']['mean']:.4f}, p95 {base['p95_ms']:.1f} ms")
    print(
        f"chosen: {plan.describe()}: MRR@10 {row['MRR@10']['mean']:.4f} (95% CI {row['MRR@10']['ci95']}, gain CI "
        f"{row['MRR@10']['gain_ci95']}), NDCG@10 {row['NDCG@10']['mean']:.4f}, p95 {row['p95_ms']:.1f} ms"
    )
    print(("adopted: " if ev["adopted"] else "") + ev["reason"])
    for check in ev["latency"]["direct_checks"]:
        print(f"latency model check: {check['pipeline']}: modelled p95 {check['modelled_p95_ms']:.1f} ms, timed whole {check['direct_p95_ms']:.1f} ms ({check['error']:+.1%})")
    print(f"written to {args.out}" + (f"; figure {args.plot}" if args.plot is not None else ""))
