"""A tuned fusion run in the OpenSearch node against the same fusion applied client-side.

A ``minmax`` fusion without prior (``--bm25 A --dense B``) is installed as the ``lrt-fusion``
normalization-processor pipeline (:func:`lrt_rerank.opensearch.pipeline.place_fusion`). Reported on one split,
through ``lrt_rerank.evaluate``: RRF in the node, the fusion applied client-side to the node's RRF top 50
(``Pipeline``, the ``tuned`` row of ``eval --first-stage URL --fusion F``), and the node's own top 50 of the
fusion (over the union of each sub-query's top 200).

    python benches/fusion_node_side.py --dataset ../shared/data/scifact --split dev --url http://127.0.0.1:9200 --index scifact
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lrt_rerank.datasets import load_dataset
from lrt_rerank.evaluate import evaluate
from lrt_rerank.first_stage.base import Candidate, System
from lrt_rerank.first_stage.opensearch import OpenSearchFirstStage
from lrt_rerank.opensearch.pipeline import place_fusion
from lrt_rerank.opensearch.searcher import HybridSearcher
from lrt_rerank.rerank.fusion import FEATURE_POOL, Fusion


class NodeFused(OpenSearchFirstStage):
    """The node-side fusion's hits served as the ``rrf`` system (BM25 and dense unchanged)."""

    def __init__(self, stage: OpenSearchFirstStage, searcher: HybridSearcher) -> None:
        super().__init__(stage.client, stage.index, stage.encoder)
        self.searcher = searcher

    def search(self, query: str, k: int, system: System = "rrf") -> list[Candidate]:
        if system != "rrf" or not query.strip():
            return super().search(query, k, system)
        hits = self.searcher.first_stage(query, min(k, FEATURE_POOL))
        return [Candidate(str(h["_id"]), float(h["_score"]), rank) for rank, h in enumerate(hits, start=1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True, help="BEIR folder")
    parser.add_argument("--split", default="dev", help="split to report (default: %(default)s)")
    parser.add_argument("--url", default="http://127.0.0.1:9200", help="OpenSearch URL (default: %(default)s)")
    parser.add_argument("--index", required=True, help="index built by `lrt-rerank opensearch index`")
    parser.add_argument("--bm25", type=float, default=0.25, help="BM25 weight (default: %(default)s)")
    parser.add_argument("--dense", type=float, default=2.0, help="dense weight (default: %(default)s)")
    args = parser.parse_args()
    dataset = load_dataset(args.dataset, args.split)
    stage = OpenSearchFirstStage.connect(args.url, args.index)
    fusion = Fusion("linear", {"bm25": args.bm25, "dense": args.dense, "prior": 0.0, "reranker": 0.0}, "minmax")
    placed = place_fusion(stage.client, fusion)
    if placed.where != "node":
        raise SystemExit(f"the node cannot run {fusion.describe()}: {placed.reason}")
    searcher = HybridSearcher(stage.client, args.index, stage.encoder, None, depth=50, pipeline=placed.pipeline, pool=placed.pool)
    client_side = evaluate(dataset, stage, None, systems=("rrf", "tuned"), fusion=fusion, progress=False)
    node_side = evaluate(dataset, NodeFused(stage, searcher), None, systems=("rrf",), progress=False)
    names = {"rrf": "RRF in the node", "tuned": f"client-side {fusion.describe()}"}
    for result in client_side:
        print(json.dumps({"path": names[result.system], **result.to_json()}))
    print(json.dumps({"path": f"node-side {fusion.describe()} ({placed.pipeline})", **node_side[0].to_json()}))


if __name__ == "__main__":
    main()
