"""Title-aware (multifield) BM25 against flat BM25 over title + text, with the default analyzer (stemmed).

Multifield: one bm25s index of the titles and one of the texts; a document's score is
``BM25(text) + w * BM25(title)`` (Anserini's multifield sums its fields' BM25 scores). Flat: one index of
``Document.full_text``, the shipped BM25. ``w`` is chosen on the tuning split (best MRR@10 over
:data:`WEIGHTS`) and the held-out split is reported; the test split is never tuned on.

    python benches/title_bm25.py /work/shared/data/nfcorpus dev test
    python benches/title_bm25.py /work/shared/data/scifact train dev
"""

from __future__ import annotations

import sys
from pathlib import Path

import bm25s
import numpy as np
from lrt_rerank.datasets import Dataset, load_dataset
from lrt_rerank.evaluate import query_metrics
from lrt_rerank.first_stage.analyzer import Analyzer

WEIGHTS = (0.25, 0.5, 1.0, 2.0)
DEPTH = 100


def _index(texts: list[str], analyzer: Analyzer) -> bm25s.BM25:
    retriever = bm25s.BM25()
    retriever.index(analyzer.tokenize(texts), show_progress=False)
    return retriever


def _scores(retriever: bm25s.BM25, tokens: list[str]) -> np.ndarray:
    return retriever.get_scores(tokens) if tokens else np.zeros(retriever.scores["num_docs"])


def evaluate_split(dataset: Dataset, weight: float | None) -> dict[str, float]:
    """Mean metrics of flat BM25 (``weight`` None) or multifield BM25 with title weight ``weight``."""
    analyzer = Analyzer()
    documents = list(dataset.corpus.values())
    ids = [d.id for d in documents]
    if weight is None:
        indexes = [(_index([d.full_text for d in documents], analyzer), 1.0)]
    else:
        indexes = [(_index([d.text for d in documents], analyzer), 1.0), (_index([d.title for d in documents], analyzer), weight)]
    totals: dict[str, float] = {}
    query_ids = dataset.eval_query_ids()
    for query_id in query_ids:
        tokens = analyzer.tokenize(dataset.queries[query_id], return_ids=False)[0]
        score = sum(w * _scores(index, tokens) for index, w in indexes)
        order = np.argsort(-score, kind="stable")[:DEPTH]
        ranking = [ids[i] for i in order if score[i] > 0]
        for name, value in query_metrics(ranking, dataset.qrels[query_id]).items():
            totals[name] = totals.get(name, 0.0) + value
    return {name: round(value / len(query_ids), 4) for name, value in totals.items()}


def main(root: Path, tune_split: str, report_split: str) -> None:
    tuning = load_dataset(root, tune_split)
    flat = evaluate_split(tuning, None)
    by_weight = {w: evaluate_split(tuning, w) for w in WEIGHTS}
    print(f"{root.name} {tune_split}: flat {flat}")
    for w, metrics in by_weight.items():
        print(f"{root.name} {tune_split}: multifield title weight {w:g} {metrics}")
    best = max(WEIGHTS, key=lambda w: by_weight[w]["MRR@10"])
    held_out = load_dataset(root, report_split)
    print(f"{root.name} {report_split}: flat {evaluate_split(held_out, None)}")
    print(f"{root.name} {report_split}: multifield title weight {best:g} (chosen on {tune_split}) {evaluate_split(held_out, best)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
