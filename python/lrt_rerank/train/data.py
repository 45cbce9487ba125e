"""Training data: first-stage candidates per query (hard negatives), training groups, pair batches.

Candidates come from the project's own first stage (embedded BM25 + dense, fused by RRF), so the
re-ranker is trained on the same kind of lists it re-ranks at run time. They are mined once per
dataset and kept in a JSON file (``candidates-<split>.json``) beside the training output.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from lrt_rerank.datasets import Dataset, load_dataset
from lrt_rerank.first_stage.base import FirstStage
from lrt_rerank.interpolation import rank_prior

CANDIDATE_DEPTH = 100


@dataclass(frozen=True)
class Group:
    """One listwise training example: a query, one positive passage id, then negatives."""

    query_id: str
    positive: str
    negatives: tuple[str, ...]


class PairEncoder:
    """Tokenizes (query, passage) pairs as the Rust engine does: passage-only truncation, batch padding."""

    def __init__(self, tokenizer_path: Path, max_length: int) -> None:
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length, strategy="only_second")
        self._fallback = Tokenizer.from_file(str(tokenizer_path))
        self._fallback.no_padding()
        self._fallback.enable_truncation(max_length, strategy="longest_first")
        self.max_length = max_length

    def encode(self, queries: Sequence[str], passages: Sequence[str]) -> dict[str, torch.Tensor]:
        pairs = list(zip(queries, passages))
        try:
            encodings = self.tokenizer.encode_batch(pairs)
        except Exception:  # a query too long for passage-only truncation: the engine falls back the same way
            encodings = [self._encode_one(q, p) for q, p in pairs]
        width = max(len(e.ids) for e in encodings)
        ids = torch.zeros((len(encodings), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        types = torch.zeros_like(ids)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = torch.tensor(enc.ids)
            mask[row, :n] = 1
            types[row, :n] = torch.tensor(enc.type_ids)
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def _encode_one(self, query: str, passage: str):  # type: ignore[no-untyped-def]
        try:
            return self.tokenizer.encode(query, passage)
        except Exception:
            return self._fallback.encode(query, passage)


@dataclass
class Candidates:
    """RRF candidates per query: document ids best first, and their RRF scores."""

    ids: dict[str, list[str]]
    scores: dict[str, list[float]]

    def to_json(self) -> dict[str, list[list[object]]]:
        return {qid: [[d, s] for d, s in zip(ids, self.scores[qid])] for qid, ids in self.ids.items()}

    @classmethod
    def from_json(cls, data: dict[str, list[list[object]]], source: Path) -> "Candidates":
        try:
            return cls(
                {qid: [str(d) for d, _ in rows] for qid, rows in data.items()},
                {qid: [float(s) for _, s in rows] for qid, rows in data.items()},  # type: ignore[arg-type]
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: not a candidates file ({{query id: [[doc id, score], ...]}}): {exc}") from exc


def mine_candidates(
    dataset: Dataset, first_stage: FirstStage, query_ids: Sequence[str], depth: int = CANDIDATE_DEPTH, progress: bool = True
) -> Candidates:
    """RRF top-``depth`` documents per query."""
    ids: dict[str, list[str]] = {}
    scores: dict[str, list[float]] = {}
    for qid in tqdm(query_ids, desc=f"mining {dataset.name}/{dataset.split}", disable=not progress):
        hits = first_stage.search(dataset.queries[qid], depth, "rrf")
        ids[qid] = [c.id for c in hits]
        scores[qid] = [c.score for c in hits]
    return Candidates(ids, scores)


def load_or_mine(dataset_dir: Path, split: str, cache_dir: Path, progress: bool = True) -> tuple[Dataset, Candidates]:
    """The split and its RRF candidates, mined with the cached embedded index on first use."""
    from lrt_rerank.first_stage.index_cache import cached_index

    dataset = load_dataset(dataset_dir, split)
    path = cache_dir / f"candidates-{dataset.name}-{split}.json"
    if path.is_file():
        return dataset, Candidates.from_json(json.loads(path.read_text(encoding="utf-8")), path)
    first_stage = cached_index(dataset, progress=progress)
    candidates = mine_candidates(dataset, first_stage, dataset.eval_query_ids(), progress=progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(candidates.to_json()), encoding="utf-8")
    return dataset, candidates


def first_stage_priors(candidates: Candidates, depth: int) -> dict[str, dict[str, float]]:
    """``prior(position)`` of every candidate (:func:`lrt_rerank.interpolation.rank_prior`), standardised
    over the query's top ``depth`` (what is re-ranked at run time); deeper candidates extend the same
    scale, and a document the first stage did not return reads as the last candidate."""
    priors: dict[str, dict[str, float]] = {}
    for qid, ids in candidates.ids.items():
        values = rank_prior(len(ids), depth)
        floor = float(values[-1]) if values.size else 0.0
        priors[qid] = _DefaultPrior(floor, {d: float(v) for d, v in zip(ids, values)})
    return priors


def flat_prior() -> dict[str, float]:
    """A query's priors when there is no first-stage order to follow: 0 for every document."""
    return _DefaultPrior(0.0, {})


class _DefaultPrior(dict):  # type: ignore[type-arg]
    """A query's priors: documents outside the candidate list read as the last candidate."""

    def __init__(self, floor: float, values: dict[str, float]) -> None:
        super().__init__(values)
        self.floor = floor

    def __missing__(self, key: str) -> float:
        return self.floor


def passage_text(dataset: Dataset, doc_id: str) -> str:
    return dataset.corpus[doc_id].full_text


def build_groups(
    dataset: Dataset,
    candidates: Candidates,
    negatives: int,
    negative_depth: int,
    groups_per_query: int,
    seed: int,
) -> list[Group]:
    """Listwise groups: for each query, ``groups_per_query`` (positive, ``negatives`` hard negatives).

    Both come from the first ``negative_depth`` RRF candidates, the list the re-ranker sees at run
    time: positives are judged documents (grade > 0) among them (sampled without replacement,
    repeated only when there are fewer than ``groups_per_query``), negatives are sampled from
    the unjudged ones. A positive from deeper in the list would teach the model to prefer what
    the first stage ranks low, however it looks. Queries without a positive in that depth, or
    with too few negatives, are skipped.
    """
    rng = random.Random(seed)
    groups: list[Group] = []
    for qid, ranked in candidates.ids.items():
        judged = dataset.qrels.get(qid, {})
        head = ranked[:negative_depth]
        positives = [d for d in head if judged.get(d, 0) > 0]
        pool = [d for d in head if d not in judged]
        if not positives or len(pool) < negatives:
            continue
        chosen = rng.sample(positives, min(groups_per_query, len(positives)))
        while len(chosen) < groups_per_query:
            chosen.append(rng.choice(positives))
        for positive in chosen:
            groups.append(Group(qid, positive, tuple(rng.sample(pool, negatives))))
    rng.shuffle(groups)
    return groups
