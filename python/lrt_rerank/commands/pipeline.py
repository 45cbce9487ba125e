"""`lrt-rerank index | search | eval | demo`: the embedded hybrid pipeline from the command line."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lrt_rerank.bundled import bundled_dataset_dir
from lrt_rerank.commands.common import (
    add_dense_model_arg,
    add_fusion_arg,
    add_judged_dataset_arg,
    add_plan_arg,
    add_reranker_args,
    add_stemmer_arg,
    open_first_stage,
    plan_stages,
    reports_user_errors,
    with_long_documents,
)
from lrt_rerank.datasets import Dataset, load_dataset
from lrt_rerank.evaluate import RERANKED_SYSTEM, evaluate, markdown_table, plot_tradeoff
from lrt_rerank.extras import require
from lrt_rerank.first_stage.embedded import EmbeddedFirstStage
from lrt_rerank.first_stage.index_cache import cache_home, cached_index
from lrt_rerank.interpolation import card_weight, resolve_weight
from lrt_rerank.late.attach import attach_store, store_report
from lrt_rerank.models.resolve import dense_model_dirs
from lrt_rerank.rerank.loading import load_reranker
from lrt_rerank.models.store import DEFAULT_DENSE_MODEL
from lrt_rerank.opensearch.connection import add_connection_args
from lrt_rerank.pipeline import Pipeline
from lrt_rerank.plan.planfile import Plan
from lrt_rerank.rerank.fusion import load_fusion

__all__ = ["register"]

DEMO_SAMPLE_QUERIES = ("PLAIN-2", "PLAIN-1635", "PLAIN-3161")
"""Statin drugs and breast cancer; milk; milk and mucus: judged queries with clear topics."""


def register(sub: argparse._SubParsersAction) -> None:
    index = sub.add_parser(
        "index",
        help="build an embedded (BM25 + dense) index from a BEIR dataset folder",
        description="Index corpus.jsonl of a BEIR-layout folder: BM25 (bm25s), bi-encoder embeddings, document store.",
    )
    index.add_argument("--dataset", required=True, type=Path, help="BEIR folder with corpus.jsonl")
    index.add_argument("--out", required=True, type=Path, help="index directory to create")
    add_dense_model_arg(index)
    add_stemmer_arg(index)
    index.add_argument("--batch-size", type=int, default=64, help="documents per embedding call (default: %(default)s)")
    index.add_argument("--force", action="store_true", help="replace an existing index in --out")
    index.add_argument(
        "--late-interaction", type=Path, metavar="MODEL_DIR",
        help="also store every document's token embeddings for this ColBERT model (or PyLate / colbert-ai snapshot)",
    )
    index.add_argument(
        "--late-dtype", choices=("float16", "int8"), default="float16",
        help="stored token embeddings: float16, or int8 with a per-dimension scale (default: %(default)s)",
    )
    index.set_defaults(func=cmd_index, command_name="index")

    search = sub.add_parser(
        "search",
        help="search an index and re-rank the top candidates",
        description=(
            "Hybrid (RRF of BM25 and dense) search over an index built by `lrt-rerank index`, "
            "re-ranked by a cross-encoder."
        ),
    )
    search.add_argument("index_dir", type=Path, help="index directory")
    search.add_argument("query", help="query text")
    search.add_argument("--k", type=int, default=10, help="hits to show (default: %(default)s)")
    add_reranker_args(search)
    search.add_argument(
        "--budget-ms", type=float, help="latency budget for the whole search; what does not fit keeps first-stage order"
    )
    add_fusion_arg(search)
    add_plan_arg(search)
    search.add_argument("--json", action="store_true", help="print hits as JSON lines instead of a table")
    search.set_defaults(func=cmd_search, command_name="search")

    ev = sub.add_parser(
        "eval",
        help="evaluate BM25, dense, RRF and RRF + re-ranker on a BEIR dataset",
        description=(
            "Quality (MRR@10, NDCG@5, NDCG@10, R@50) and per-query latency (p50/p95/p99 of first stage, "
            "re-rank and total) of BM25, dense, RRF (top 100 each) and RRF + re-ranker."
        ),
    )
    add_judged_dataset_arg(ev)
    ev.add_argument("--split", default="test", help="qrels split to evaluate (default: %(default)s)")
    add_reranker_args(ev)
    ev.add_argument(
        "--first-stage",
        default="embedded",
        help="'embedded' (default; index cached under $LRT_RERANK_HOME/indexes unless --index) or an OpenSearch URL",
    )
    ev.add_argument("--index", type=Path, help="embedded index directory to use (built there if absent)")
    ev.add_argument("--opensearch-index", help="OpenSearch index name (default: the dataset folder name)")
    add_connection_args(ev, url_flag=None)  # the URL is --first-stage's
    add_dense_model_arg(ev)
    add_stemmer_arg(ev, for_existing=True)
    ev.add_argument("--max-queries", type=int, help="evaluate only the first N judged queries")
    add_fusion_arg(ev)
    add_plan_arg(ev)
    ev.add_argument("--json", action="store_true", help="one JSON object per system per line instead of a table")
    ev.add_argument("--plot", type=Path, help="write the MRR@10 vs p95 latency chart to this PNG")
    ev.set_defaults(func=cmd_eval, command_name="eval")

    demo = sub.add_parser(
        "demo",
        help="index the bundled NFCorpus test set, show re-ranking on sample queries, print the eval table",
        description="End-to-end demo on the bundled NFCorpus test split (CC BY-SA 4.0; see its ATTRIBUTION.md).",
    )
    add_reranker_args(demo)
    demo.add_argument(
        "--rerank-queries",
        type=int,
        default=50,
        help="queries used for the RRF vs RRF + re-ranker comparison (default: %(default)s; 0 = all 323)",
    )
    add_dense_model_arg(demo)
    demo.add_argument("--rebuild", action="store_true", help="rebuild the cached demo index")
    demo.set_defaults(func=cmd_demo, command_name="demo")


# ------------------------------------------------------------------------------------ helpers


def _print_rows(rows: list[list[str]], header: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*header, show_lines=False)
    for row in rows:
        table.add_row(*row)
    Console(width=max(120, shutil.get_terminal_size().columns)).print(table)


def _snippet(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


# ----------------------------------------------------------------------------------- commands


@reports_user_errors
def cmd_index(args: argparse.Namespace) -> int:
    from lrt_rerank.datasets import load_corpus

    started = time.perf_counter()
    model_dir, *extra_dirs = dense_model_dirs(args.dense_model)
    corpus = load_corpus(args.dataset / "corpus.jsonl")
    stage = EmbeddedFirstStage.build(
        corpus.values(),
        args.out,
        model_dir=model_dir,
        extra_model_dirs=extra_dirs,
        batch_size=args.batch_size,
        overwrite=args.force,
        stemmer=args.stemmer,
    )
    print(f"indexed {len(stage.documents)} documents into {args.out} in {time.perf_counter() - started:.1f} s")
    print(stage.analyzer.describe())
    if args.late_interaction is not None:
        from lrt_rerank.late import ColBERT
        from lrt_rerank.late.store import write_store

        started = time.perf_counter()
        model = ColBERT.load(args.late_interaction)
        texts = stage.get_texts([d.id for d in stage.documents])  # the texts a re-rank is given
        m = write_store(model, texts, args.out, dtype=args.late_dtype, batch_size=args.batch_size)
        print(
            f"stored {m['tokens']} token embeddings ({m['dtype']}, {m['bytes_per_document']:.0f} bytes per document) "
            f"of {model.model_dir} in {time.perf_counter() - started:.1f} s"
        )
    return 0


@reports_user_errors
def cmd_search(args: argparse.Namespace) -> int:
    stage = EmbeddedFirstStage.open(args.index_dir)
    planned = plan_stages(args)
    fusion = load_fusion(args.fusion) if args.fusion is not None else None
    if planned is not None:
        reranker = planned[0].reranker if planned else None
        pipeline = Pipeline.of_stages(stage, planned)
    else:
        reranker = with_long_documents(load_reranker(args.reranker, args.backend), args) if fusion is None or fusion.uses_reranker else None
        pipeline = Pipeline(stage, reranker, rerank_depth=args.rerank_depth, interpolation=args.interpolation, fusion=fusion)
    attach_store(reranker, args.index_dir)
    result = pipeline.run(args.query, k=args.k, budget_ms=args.budget_ms)
    _report_store(reranker)
    if args.json:
        for hit in result.hits:
            print(json.dumps({**asdict(hit), "title": stage.document(hit.id).title}))
        return 0
    rows = [
        [
            str(h.rank),
            h.id,
            f"{h.score:.4f}",
            str(h.first_stage_rank),
            "yes" if h.reranked else "no",
            _snippet(stage.document(h.id).full_text),
        ]
        for h in result.hits
    ]
    _print_rows(rows, ["rank", "id", "score", "first-stage rank", "re-ranked", "text"])
    print(
        f"re-rank: {result.status.value} ({result.reranked} re-ranked); first stage {result.first_stage_ms:.1f} ms, "
        f"re-rank {result.rerank_ms:.1f} ms, total {result.total_ms:.1f} ms"
    )
    return 0


def _report_store(reranker: object) -> None:
    """On stderr, for a ColBERT re-ranker: how many documents it encoded at query time (0 over a full store)."""
    line = store_report(reranker)
    if line is not None:
        print(line, file=sys.stderr)


@reports_user_errors
def cmd_eval(args: argparse.Namespace) -> int:
    dataset = load_dataset(args.dataset, args.split)
    if args.plot is not None:
        require("plot", "--plot")  # before the evaluation, not after it
    query_ids = dataset.eval_query_ids()
    if args.max_queries is not None:
        query_ids = query_ids[: args.max_queries]
    planned = plan_stages(args)
    fusion = load_fusion(args.fusion) if args.fusion is not None else None
    reranker = with_long_documents(load_reranker(args.reranker, args.backend), args) if planned is None else None
    if fusion is not None and fusion.uses_reranker and reranker is None:
        raise ValueError(f"{args.fusion}: field 'weights.reranker' is {fusion.weights['reranker']:g}: pass its --reranker")
    stage = open_first_stage(args, dataset)
    attach_store(reranker, args.index)
    try:
        results = evaluate(
            dataset,
            stage,
            reranker,
            rerank_depth=args.rerank_depth,
            query_ids=query_ids,
            interpolation=args.interpolation,
            fusion=fusion,
            plan=planned,
            on_result=(lambda r: print(json.dumps(r.to_json()), flush=True)) if args.json else None,
        )
    finally:
        stage.close()
    _report_store(reranker)
    if stage.analyzer is not None:
        print(stage.analyzer.describe(), file=sys.stderr if args.json else sys.stdout)
    if not args.json:
        weight = resolve_weight(reranker, args.interpolation)
        print(
            f"{dataset.name} / {args.split}: {len(query_ids)} queries, top 100 per system, RRF k=60, "
            f"re-rank depth {args.rerank_depth}" + (f", interpolation weight {weight:g}" if reranker is not None else "")
            + (f", tuned fusion {fusion.describe()} ({args.fusion})" if fusion is not None else "")
            + (f", plan {Plan.load(args.plan).describe()} ({args.plan})" if planned is not None else "")
        )
        print(markdown_table(results))
    if args.plot is not None:
        plot_tradeoff(results, args.plot, title=f"{dataset.name} ({args.split}, {len(query_ids)} queries)")
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


@reports_user_errors
def cmd_demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    root = bundled_dataset_dir()
    print(f"Dataset: NFCorpus test split bundled with lrt-rerank ({root}).")
    print("NFCorpus: CC BY-SA 4.0 - Boteva et al., ECIR 2016; via BEIR, Thakur et al., NeurIPS 2021.")
    dataset = load_dataset(root, "test")
    query_ids = dataset.eval_query_ids()
    print(f"{len(dataset.corpus)} documents, {len(query_ids)} judged queries.\n")

    print(f"[1/4] Index (BM25 + {args.dense_model or DEFAULT_DENSE_MODEL} embeddings; cached after the first run)")
    step = time.perf_counter()
    stage = cached_index(dataset, rebuild=args.rebuild, dense_model=args.dense_model, home=cache_home())
    print(f"      ready in {time.perf_counter() - step:.1f} s: {stage.path}\n")

    print("[2/4] Re-ranker")
    reranker = with_long_documents(load_reranker(args.reranker, args.backend), args)
    if reranker is None:
        print("      none (--reranker none): first stage only\n")
    else:
        _describe_reranker(reranker)
    pipeline = Pipeline(stage, reranker, rerank_depth=args.rerank_depth, interpolation=args.interpolation)

    print("[3/4] Sample queries: first stage (RRF) vs re-ranked; '*' marks a judged-relevant document")
    for query_id in [q for q in DEMO_SAMPLE_QUERIES if q in dataset.queries] or query_ids[:3]:
        _show_query(pipeline, stage, dataset, query_id)

    print("[4/4] Evaluation")
    first_stage_results = evaluate(dataset, stage, None, query_ids=query_ids)
    print(f"First stage, all {len(query_ids)} test queries, top 100 per system, RRF k=60:")
    print(markdown_table(first_stage_results) + "\n")
    if reranker is not None:
        subset = query_ids if args.rerank_queries <= 0 else query_ids[: args.rerank_queries]
        rerank_results = evaluate(
            dataset, stage, reranker, rerank_depth=args.rerank_depth, query_ids=subset, systems=("rrf", RERANKED_SYSTEM),
            interpolation=args.interpolation,
        )
        scope = (
            f"the first {len(subset)} of {len(query_ids)} queries (for time; --rerank-queries 0 runs all)"
            if len(subset) < len(query_ids)
            else f"all {len(subset)} queries"
        )
        print(f"RRF vs RRF + re-ranker (top {args.rerank_depth} re-ranked), {scope}:")
        print(markdown_table(rerank_results) + "\n")
    print(f"Demo finished in {time.perf_counter() - started:.0f} s.")
    return 0


def _describe_reranker(reranker: Any) -> None:
    """Name, shape and what the model card says about quality; a loud note for an untrained head."""
    card: dict[str, Any] = getattr(reranker, "card", None) or {}
    print(f"      {getattr(reranker, 'model_dir', 'custom re-ranker')}")
    shape = {key: card[key] for key in ("name", "layers", "max_length", "parameters") if key in card}
    if shape:
        print(f"      {json.dumps(shape)}")
    if card.get("description"):
        print(f"      {card['description']}")
    weight = card_weight(card)
    if weight > 0:
        print(f"      re-ranked score = logit + {weight:g} * z(-log first-stage rank) (weight chosen on {card['interpolation'].get('chosen_on', '?')})")
    if "UNTRAINED" in json.dumps(card.get("provenance", {})):
        print(
            "      Note: this cross-encoder has an UNTRAINED scoring head (a placeholder): its latency is real,\n"
            "      its ranking is not. Expect the re-ranked rows to be worse than the first stage."
        )
    print()


def _show_query(pipeline: Pipeline, stage: EmbeddedFirstStage, dataset: Dataset, query_id: str, shown: int = 5) -> None:
    query = dataset.queries[query_id]
    judged = dataset.qrels.get(query_id, {})
    first = stage.search(query, shown, "rrf")
    result = pipeline.run(query, k=shown)
    print(
        f"\n  Query {query_id}: {query!r}  "
        f"({result.first_stage_ms:.0f} ms first stage, {result.rerank_ms:.0f} ms re-rank)"
    )
    rows = []
    for position in range(shown):
        left = first[position] if position < len(first) else None
        right = result.hits[position] if position < len(result.hits) else None
        rows.append(
            [
                str(position + 1),
                _mark(left.id, judged, stage) if left else "",
                _mark(right.id, judged, stage) + (f"  (was #{right.first_stage_rank})" if right else "")
                if right
                else "",
            ]
        )
    _print_rows(rows, ["#", "first stage (RRF)", "re-ranked"])
    print()


def _mark(doc_id: str, judged: dict[str, int], stage: EmbeddedFirstStage) -> str:
    star = "*" if judged.get(doc_id, 0) > 0 else " "
    return f"{star} {doc_id}: {_snippet(stage.document(doc_id).title or stage.document(doc_id).text, 48)}"
