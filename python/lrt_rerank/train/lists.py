"""Distillation on what the teacher can label: whole first-stage lists of many queries.

Humans labelled one or two passages of each train query; a teacher can score every passage of
every query's re-rank list, and of queries nobody labelled. The student is taught on such lists:

* **train queries**: each one's whole first-stage list (its labels also count, see ``kd_weight``);
* **a queries file** (``--queries FILE``): one query per line, or BEIR ``queries.jsonl``; the
  unlabelled query log a production system has;
* **pseudo-queries from the corpus**: a seeded sample of documents, each giving its title or its
  first sentence.

No query of a split that is reported on (dev, test) may reach training: a queries file holding
one (same id, or the same text up to case and spacing) is refused with an error naming the file,
line and split, and a pseudo-query that happens to equal one is dropped. Each step draws
``list_size`` passages of a list (a judged positive always among them) and fits the student's
scores to the teacher's over them (:func:`lrt_rerank.train.loop.kd_loss`).
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lrt_rerank.datasets import Dataset, DatasetError, Document, load_qrels, load_queries
from lrt_rerank.first_stage.base import FirstStage
from lrt_rerank.interpolation import rank_prior
from lrt_rerank.train.data import Candidates, PairEncoder
from lrt_rerank.train.loop import LoopConfig, LoopResult, kd_loss, run_steps
from lrt_rerank.train.model import PairScorer

logger = logging.getLogger(__name__)

RERANK_DEPTH = 50
REPORTED_SPLITS = ("dev", "test")
PSEUDO_MAX_WORDS = 32
PSEUDO_MIN_WORDS = 3


@dataclass(frozen=True)
class QueryList:
    """A query and its first-stage candidates (best first); ``positives`` are judged relevant ones."""

    source: str
    query: str
    doc_ids: tuple[str, ...]
    positives: frozenset[str] = field(default_factory=frozenset)


def normalise(text: str) -> str:
    """How query texts are compared for overlap: case-folded, whitespace collapsed."""
    return " ".join(text.casefold().split())


@dataclass
class HeldOut:
    """The queries of the reported splits: ids and normalised texts, with the split each belongs to."""

    ids: dict[str, str]
    texts: dict[str, tuple[str, str]]

    def find(self, text: str, query_id: str | None = None) -> str | None:
        """``"split query ID"`` when the query is held out, else ``None``."""
        if query_id is not None and query_id in self.ids:
            return f"{self.ids[query_id]} query {query_id}"
        hit = self.texts.get(normalise(text))
        return f"{hit[0]} query {hit[1]}" if hit else None


def held_out_queries(dataset_dir: Path, splits: Sequence[str] = REPORTED_SPLITS) -> HeldOut:
    """The queries of ``splits`` present in ``dataset_dir`` (a split without a qrels file holds none)."""
    queries = load_queries(dataset_dir / "queries.jsonl")
    ids: dict[str, str] = {}
    texts: dict[str, tuple[str, str]] = {}
    for split in splits:
        path = dataset_dir / "qrels" / f"{split}.tsv"
        if not path.is_file():
            continue
        for qid in load_qrels(path):
            ids.setdefault(qid, split)
            if qid in queries:
                texts.setdefault(normalise(queries[qid]), (split, qid))
    return HeldOut(ids, texts)


def read_queries_file(path: Path, held_out: HeldOut) -> list[str]:
    """Queries of ``path``: BEIR ``queries.jsonl`` (``.jsonl``: ``text`` required, ``_id`` optional) or one per
    line; blank lines and repeats skipped. A held-out query is an error naming the line and its split."""
    if not path.is_file():
        raise DatasetError(f"{path}: queries file not found")
    jsonl = path.suffix == ".jsonl"
    seen: set[str] = set()
    out: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        query_id = None
        if jsonl:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DatasetError(f"{path}:{number}: field 'text' (a string) is required")
            text = record["text"]
            query_id = str(record["_id"]) if "_id" in record else None
        else:
            text = line
        clash = held_out.find(text, query_id)
        if clash:
            raise DatasetError(
                f"{path}:{number}: {text.strip()[:80]!r} is {clash} of the dataset, which the report measures; "
                "a queries file must not overlap the reported splits"
            )
        key = normalise(text)
        if key and key not in seen:
            seen.add(key)
            out.append(text.strip())
    if not out:
        raise DatasetError(f"{path}: no queries")
    return out


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)[0]


def pseudo_queries(corpus: dict[str, Document], count: int, seed: int, held_out: HeldOut) -> list[tuple[str, str]]:
    """``count`` (source, query) pairs from a seeded sample of documents: the title for every other
    document that has one, else the first sentence of its text, cut to 32 words; held-out texts dropped."""
    rng = random.Random(seed)
    docs = [d for d in corpus.values() if not d.is_empty]
    rng.shuffle(docs)
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    dropped = 0
    for doc in docs:
        if len(out) >= count:
            break
        use_title = bool(doc.title.strip()) and (len(out) % 2 == 0 or not doc.text.strip())
        source, text = ("pseudo-title", doc.title) if use_title else ("pseudo-sentence", _first_sentence(doc.text))
        words = text.split()
        if len(words) < PSEUDO_MIN_WORDS:
            continue
        text = " ".join(words[:PSEUDO_MAX_WORDS])
        if held_out.find(text):
            dropped += 1
            continue
        if normalise(text) not in seen:
            seen.add(normalise(text))
            out.append((source, text))
    if dropped:
        logger.warning("%d pseudo-queries equal a dev/test query and were dropped", dropped)
    return out


def labelled_lists(dataset: Dataset, candidates: Candidates, depth: int = RERANK_DEPTH) -> list[QueryList]:
    """Every judged query's top-``depth`` list, its judged positives in that depth marked."""
    out = []
    for qid, ids in candidates.ids.items():
        head = tuple(ids[:depth])
        judged = dataset.qrels.get(qid, {})
        out.append(QueryList("train", dataset.queries[qid], head, frozenset(d for d in head if judged.get(d, 0) > 0)))
    return out


def mine_lists(first_stage: FirstStage, queries: Sequence[tuple[str, str]], depth: int = RERANK_DEPTH, progress: bool = True) -> list[QueryList]:
    """First-stage (RRF) top-``depth`` lists of unlabelled (source, query) pairs; lists of fewer than 2 dropped."""
    out = []
    for source, text in tqdm(queries, desc="first stage for unlabelled queries", unit="query", disable=not progress):
        hits = first_stage.search(text, depth, "rrf")
        if len(hits) >= 2:
            out.append(QueryList(source, text, tuple(c.id for c in hits)))
    return out


def _sample(item: QueryList, size: int, rng: random.Random) -> list[int]:
    """Positions of ``size`` passages of a list: one judged positive (if any) and a uniform sample of the rest."""
    n = len(item.doc_ids)
    if n <= size:
        return list(range(n))
    chosen: list[int] = []
    positives = [i for i, d in enumerate(item.doc_ids) if d in item.positives]
    if positives:
        chosen.append(rng.choice(positives))
    rest = [i for i in range(n) if i not in chosen]
    return chosen + rng.sample(rest, size - len(chosen))


def train_on_lists(
    model: PairScorer,
    encoder: PairEncoder,
    lists: Sequence[QueryList],
    teacher: Sequence[np.ndarray],
    passage: Callable[[str], str],
    cfg: LoopConfig,
    list_size: int,
    evaluate: Callable[[PairScorer], float] | None = None,
    progress: bool = True,
) -> LoopResult:
    """Fit ``model``'s scores to the teacher's (``teacher[i]`` aligned with ``lists[i].doc_ids``) over
    ``list_size`` passages per list; a list with a judged positive adds (1 - ``kd_weight``) * the
    cross-entropy of that positive. With ``prior_weight`` both scores get the first-stage prior of
    each passage's position (standardised over the top 50, as at run time)."""
    if len(lists) != len(teacher) or any(len(t) != len(q.doc_ids) for q, t in zip(lists, teacher)):
        raise ValueError("teacher scores must align with the lists' passages")
    if list_size < 2:
        raise ValueError(f"list size must be >= 2, got {list_size}")
    rng = random.Random(cfg.seed + 1)
    index = {id(q): i for i, q in enumerate(lists)}

    def batch_loss(batch: list[QueryList]) -> tuple[torch.Tensor, int]:
        picks = [_sample(item, list_size, rng) for item in batch]
        ids = [[item.doc_ids[i] for i in p] for item, p in zip(batch, picks)]
        queries = [item.query for item, row in zip(batch, ids) for _ in row]
        flat = model(**encoder.encode(queries, [passage(d) for row in ids for d in row]))  # one forward for the batch
        loss = torch.zeros(())
        start = 0
        for item, pick, row in zip(batch, picks, ids):
            logits = flat[start : start + len(row)].view(1, -1)
            start += len(row)
            target = torch.tensor(teacher[index[id(item)]][pick], dtype=logits.dtype).view(1, -1)
            if cfg.prior_weight > 0:
                prior = cfg.prior_weight * torch.tensor(rank_prior(len(item.doc_ids), RERANK_DEPTH)[pick], dtype=logits.dtype).view(1, -1)
                logits, target = logits + prior, target + prior
            one = kd_loss(logits, target, cfg)
            if row[0] in item.positives and cfg.kd_weight < 1.0:
                label = nn.functional.cross_entropy(logits, torch.zeros(1, dtype=torch.long))
                one = cfg.kd_weight * one + (1.0 - cfg.kd_weight) * label
            loss = loss + one / len(batch)
        return loss, start

    return run_steps(model, lists, cfg, batch_loss, evaluate, progress)
