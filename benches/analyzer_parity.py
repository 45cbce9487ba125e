"""Embedded stemmed BM25 vs node BM25 with snowball English and porter_stem: top-10 overlap and MRR@10, NFCorpus test."""
import numpy as np
from lrt_rerank import BiEncoder
from lrt_rerank.bundled import bundled_dataset_dir
from lrt_rerank.datasets import load_dataset
from lrt_rerank.evaluate import evaluate
from lrt_rerank.first_stage.embedded import EMBEDDINGS
from lrt_rerank.first_stage.index_cache import cached_index
from lrt_rerank.first_stage.opensearch import OpenSearchFirstStage
from lrt_rerank.opensearch import indexing
from lrt_rerank.opensearch.client import connect

URL = "http://127.0.0.1:9234"
ds = load_dataset(bundled_dataset_dir(), "test")
emb = cached_index(ds, progress=False)
enc = BiEncoder.load(str(emb._encoder.model_dir)) if hasattr(emb._encoder, "model_dir") else emb._encoder
vectors = np.load(emb.path / EMBEDDINGS)
client = connect(URL)
local = evaluate(ds, emb, None, progress=False, systems=("bm25",))[0].metrics
print("embedded", {k: round(v, 4) for k, v in local.items() if "@" in k})
original = indexing.Analyzer.opensearch_analysis
for label, filt in [("snowball English", {"type": "snowball", "language": "English"}), ("porter_stem", {"type": "porter_stem"})]:
    def patched(self, filt=filt):
        body = original(self)
        body["filter"]["lrt_english_stem"] = filt
        return body
    indexing.Analyzer.opensearch_analysis = patched
    name = "lrt-diag-" + label.split()[0]
    indexing.index_documents(client, name, emb.documents, enc, recreate=True, progress=False, vectors=vectors)
    stage = OpenSearchFirstStage.connect(URL, name, encoder=enc)
    overlaps = []
    for qid in ds.eval_query_ids():
        q = ds.queries[qid]
        a = {c.id for c in stage.search(q, 10, "bm25")}
        b = {c.id for c in emb.search(q, 10, "bm25")}
        overlaps.append(len(a & b) / max(1, len(b)))
    m = evaluate(ds, stage, None, progress=False, systems=("bm25",))[0].metrics
    print(label, "mean top-10 overlap", round(float(np.mean(overlaps)), 4), "p10", round(float(np.percentile(overlaps, 10)), 3),
          {k: round(v, 4) for k, v in m.items() if "@" in k})
    client.indices.delete(index=name)
