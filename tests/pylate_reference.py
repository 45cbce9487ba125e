"""PyLate's side of the ColBERT parity tests, run in a subprocess (see tests/test_colbert.py).

PyLate 1.6 pins sentence-transformers 5.3 while the train extra brings a newer one, so PyLate and its
sentence-transformers live in a folder of their own (``$LRT_PYLATE_PATH``, default
``<venv>/pylate-reference``, installed by ``./dev.sh setup``) put first on this process's path; torch and
transformers are the environment's.

``python pylate_reference.py BERT_DIR OUT JOB.json RESULT.npz``: a PyLate ColBERT from the tiny BERT in
BERT_DIR with a Dense layer (and the job's settings), saved in PyLate's layout to OUT, loaded back from
OUT, and its query and document token embeddings and MaxSim scores (``pylate.scores.colbert_scores``)
for the job's query and documents written to RESULT.npz.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from pylate import models, scores
from sentence_transformers.models import Transformer


def build(bert: str, out: str, job: dict) -> None:
    torch.manual_seed(job.get("seed", 0))
    dense = models.Dense(job["hidden"], job["dim"], bias=job.get("bias", False))
    torch.nn.init.normal_(dense.linear.weight, std=0.5)
    settings = {k: job[k] for k in ("query_prefix", "document_prefix", "query_length", "document_length",
                                     "do_query_expansion", "attend_to_expansion_tokens", "skiplist_words") if k in job}
    model = models.ColBERT(modules=[Transformer(bert), dense], device="cpu", **settings)
    model.save(out)


def score(model_dir: str, job: dict, result: str) -> None:
    model = models.ColBERT(model_dir, device="cpu")  # as saved: the layout the importer reads
    q = model.encode([job["query"]], is_query=True, convert_to_numpy=True)[0]
    docs = model.encode(job["documents"], is_query=False, convert_to_numpy=True)
    query = torch.from_numpy(q)[None]
    s = np.array([float(scores.colbert_scores(query, torch.from_numpy(d)[None])[0, 0]) for d in docs], dtype=np.float32)
    np.savez(result, query=q, scores=s, lengths=np.array([len(d) for d in docs]), documents=np.concatenate(docs))


if __name__ == "__main__":
    bert_dir, out, job_file, result_file = sys.argv[1:]
    job = json.loads(Path(job_file).read_text())
    build(bert_dir, out, job)
    score(out, job, result_file)
