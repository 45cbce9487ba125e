"""Argument sets and helpers the `lrt-rerank` commands share: the dense model, the stemmer, the re-ranker and its
long-document flags, the fusion and plan files, the first stage a dataset names, and one-line user errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

from lrt_rerank.backends import add_backend_arg
from lrt_rerank.datasets import Dataset, DatasetError
from lrt_rerank.first_stage.analyzer import DEFAULT_STEMMER, STEMMERS
from lrt_rerank.first_stage.base import FirstStage
from lrt_rerank.first_stage.embedded import IndexFormatError
from lrt_rerank.first_stage.index_cache import open_first_stage as open_named_first_stage
from lrt_rerank.models.store import DEFAULT_DENSE_MODEL, DENSE_MODEL_NAMES
from lrt_rerank.opensearch.connection import settings_from_args
from lrt_rerank.plan.planfile import Plan
from lrt_rerank.rerank import Stage


def add_judged_dataset_arg(parser: argparse.ArgumentParser) -> None:
    """``--dataset``: the BEIR folder of the commands that read judged queries (eval, tune, plan, models calibrate)."""
    parser.add_argument("--dataset", required=True, type=Path, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv)")


def add_dense_model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dense-model",
        "--dense",
        "--bi-encoder",
        dest="dense_model",
        default=DEFAULT_DENSE_MODEL,
        metavar="MODEL[,MODEL...]",
        help=f"bi-encoder of the dense half: {', '.join(DENSE_MODEL_NAMES)}, a model directory or a Hugging Face "
        "snapshot folder (default: %(default)s); several, comma-separated, for an index built here: the first is "
        "'dense', each further one its own dense signal 'dense:NAME', all fused by RRF",
    )


def add_stemmer_arg(parser: argparse.ArgumentParser, for_existing: bool = False) -> None:
    """``--stemmer``: the BM25 analyzer of an index built now; with ``for_existing``, also a check on one opened."""
    parser.add_argument(
        "--stemmer",
        choices=STEMMERS,
        default=None if for_existing else DEFAULT_STEMMER,
        help="BM25 stemming: Snowball English (Porter2) or none "
        + (
            f"(default: the index's own; {DEFAULT_STEMMER} for an index built now; an index built with another is refused)"
            if for_existing
            else "(default: %(default)s)"
        ),
    )


def add_reranker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reranker",
        default="default",
        help="cross-encoder: 'default', 'none' (first stage only) or a model directory (default: %(default)s)",
    )
    parser.add_argument("--rerank-depth", type=int, default=50, help="candidates to re-rank (default: %(default)s)")
    add_backend_arg(parser)
    parser.add_argument(
        "--interpolation",
        type=float,
        default=None,
        metavar="W",
        help="re-ranked score = logit + W * z(-log first-stage rank); default: the weight in the model card (0 = logit alone)",
    )
    add_long_document_args(parser)


def add_long_document_args(parser: argparse.ArgumentParser) -> None:
    """--long-documents, --window-stride, --max-windows, --aggregate (docs/long-documents.md)."""
    parser.add_argument(
        "--long-documents", choices=("truncate", "windows"), default=None,
        help="truncate passages at the model's max length, or score windows of them (default: the card's, else truncate)",
    )
    parser.add_argument("--window-stride", type=int, default=None, help="tokens between windows (default: half a window)")
    parser.add_argument("--max-windows", type=int, default=None, help="most windows per passage (default: 8)")
    parser.add_argument(
        "--aggregate", choices=("max", "mean", "sum", "first"), default=None,
        help="how window scores make a passage's score (default: max)",
    )


def with_long_documents(reranker, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """``reranker`` under the window flags of ``args`` (unchanged when none is given)."""
    names = ("long_documents", "window_stride", "max_windows", "aggregate")
    chosen = {n: getattr(args, n, None) for n in names}
    if reranker is None or all(v is None for v in chosen.values()) or not hasattr(reranker, "with_windows"):
        return reranker
    return reranker.with_windows(
        long_documents=chosen["long_documents"] or reranker.long_documents,
        window_stride=chosen["window_stride"] if chosen["window_stride"] is not None else reranker.window_stride,
        max_windows=chosen["max_windows"] or reranker.max_windows,
        aggregate=chosen["aggregate"] or reranker.aggregate,
    )


def add_fusion_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fusion",
        type=Path,
        metavar="FILE",
        help="fusion.json of `lrt-rerank tune`: order by the tuned function (with the re-ranker only if it weighs one)",
    )


def add_plan_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plan", type=Path, metavar="FILE",
        help="plan.json of `lrt-rerank plan`: run its stages (models, depths, max lengths, weights) in place of --reranker",
    )


def plan_stages(args: argparse.Namespace) -> list[Stage] | None:
    """The loaded stages of ``--plan`` (None without one); refused together with --fusion."""
    if getattr(args, "plan", None) is None:
        return None
    if getattr(args, "fusion", None) is not None:
        raise ValueError("--plan and --fusion: a plan is a whole pipeline; pass one of them")
    return Plan.load(args.plan).stages()


def open_first_stage(args: argparse.Namespace, dataset: Dataset) -> FirstStage:
    """The first stage that `eval` and `models calibrate` read from their --first-stage/--index/--dense-model
    flags (and the OpenSearch connection flags, for a URL)."""
    connection = settings_from_args(args, url=args.first_stage) if args.first_stage != "embedded" else None
    return open_named_first_stage(
        args.first_stage,
        dataset,
        index=args.index,
        dense_model=args.dense_model,
        opensearch_index=args.opensearch_index,
        connection=connection,
        stemmer=args.stemmer,
    )


def arg_values(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """``{name: args.name}`` for ``names``: the fields of a settings object named as the command's flags."""
    return {name: getattr(args, name) for name in names}


def fail(command: str, exc: Exception) -> int:
    """Report ``exc`` as one line, ``lrt-rerank COMMAND: error: ...``, on stderr; exit status 1."""
    print(f"lrt-rerank {command}: error: {exc}", file=sys.stderr)
    return 1


USER_ERRORS: tuple[type[Exception], ...] = (
    DatasetError,
    IndexFormatError,
    FileNotFoundError,
    FileExistsError,
    ValueError,
    ConnectionError,
)
"""Bad input (and a cluster that cannot be reached or refuses the credentials): reported as one
line on stderr with exit code 2, not a traceback."""


def reports_user_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except USER_ERRORS as exc:
            print(f"lrt-rerank {args.command_name}: error: {exc}", file=sys.stderr)
            return 2

    return run
