"""Which Lucene stemmer ranks closest to the embedded BM25 (bm25s + PyStemmer english): NFCorpus test, per query.

Needs a running node (`lrt-rerank opensearch up --port PORT`); indexes the bundled NFCorpus test corpus twice
(the `lrt_bm25` analyzer with Lucene's `snowball` English filter, then with `porter_stem`) from the cached
embedded index's embeddings, prints each one's mean top-10 overlap with the embedded BM25 and its BM25 figures,
and deletes the indexes.

    python benches/analyzer_parity.py http://127.0.0.1:9234
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from lrt_rerank import BiEncoder
from lrt_rerank.bundled import bundled_dataset_dir
from lrt_rerank.datasets import load_dataset
from lrt_rerank.evaluate import evaluate, top_k_overlap
from lrt_rerank.first_stage.embedded import EMBEDDINGS
from lrt_rerank.first_stage.index_cache import cached_index
from lrt_rerank.first_stage.opensearch import OpenSearchFirstStage
from lrt_rerank.models.resolve import default_model_dir
from lrt_rerank.opensearch.client import connect
from lrt_rerank.opensearch.indexing import index_body, index_documents

STEMMERS: dict[str, dict[str, Any]] = {
    "snowball English": {"type": "snowball", "language": "English"},
    "porter_stem": {"type": "porter_stem"},
}


def main(url: str) -> None:
    dataset = load_dataset(bundled_dataset_dir(), "test")
    embedded = cached_index(dataset, progress=False)
    encoder = BiEncoder.load(str(default_model_dir("bi-encoder")))  # the model the cached index was built with
    vectors = np.load(embedded.path / EMBEDDINGS)
    client = connect(url)
    local = evaluate(dataset, embedded, None, progress=False, systems=("bm25",))[0].metrics
    print("embedded (PyStemmer english)", {k: round(v, 4) for k, v in local.items() if "@" in k})
    for label, stem_filter in STEMMERS.items():
        name = "lrt-analyzer-parity"
        if client.indices.exists(index=name):
            client.indices.delete(index=name)
        body = index_body(int(encoder.dim))
        body["settings"]["analysis"]["filter"]["lrt_english_stem"] = stem_filter
        client.indices.create(index=name, body=body)
        try:
            index_documents(client, name, embedded.documents, encoder, progress=False, vectors=vectors)
            stage = OpenSearchFirstStage.connect(url, name, encoder=encoder)
            overlaps = top_k_overlap(dataset, stage, embedded)
            metrics = evaluate(dataset, stage, None, progress=False, systems=("bm25",))[0].metrics
            print(
                f"{label}: mean top-10 overlap {np.mean(overlaps):.4f} (10th percentile {np.percentile(overlaps, 10):.2f})",
                {k: round(v, 4) for k, v in metrics.items() if "@" in k},
            )
        finally:
            client.indices.delete(index=name)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:9200")
