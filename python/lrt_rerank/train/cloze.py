"""Inverse-cloze groups: teacher training examples made from the corpus alone.

A train split has a few hundred judged queries; the corpus has thousands of documents nobody
queried. Each cloze example takes one sentence of a document's body as the query and the rest of
that document (its title and every other sentence) as the positive passage; its negatives are
first-stage (RRF of BM25 and dense) hits of that sentence, so they are as hard as real ones. The
sentence is removed from its passage, so the positive cannot be found by copying: the model must
tell which abstract a claim-like sentence belongs to, the in-domain skill the judged queries are
too few to teach.

Cloze groups have no first-stage prior (the source document would trivially lead its own
sentence's list), so in residual training their positives compete on the model's logits alone.
A sentence equal to a dev or test query (up to case and spacing) is never used.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import replace

from tqdm.auto import tqdm

from lrt_rerank.datasets import Dataset, Document
from lrt_rerank.first_stage.base import FirstStage
from lrt_rerank.train.data import Group, flat_prior
from lrt_rerank.train.lists import HeldOut

logger = logging.getLogger(__name__)

CLOZE_PREFIX = "cloze:"
MIN_WORDS = 6
MAX_WORDS = 40
MIN_SENTENCES = 3
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def sentences(text: str) -> list[str]:
    """A body split at sentence ends (a full stop, question or exclamation mark before a capital or digit)."""
    return [s for s in SENTENCE_BREAK.split(text.strip()) if s]


def cloze_groups(
    dataset: Dataset,
    first_stage: FirstStage,
    count: int,
    negatives: int,
    depth: int,
    seed: int,
    held_out: HeldOut,
    progress: bool = True,
) -> tuple[Dataset, list[Group], dict[str, dict[str, float]]]:
    """Up to ``count`` cloze groups from a seeded sample of documents with at least three sentences.

    Returns ``dataset`` extended with the cloze queries (id ``cloze:<doc id>``) and positive passages
    (same id), the groups (positive + ``negatives`` first-stage hits of the sentence in its top
    ``depth``, the source document excluded) and their flat priors.
    """
    if count <= 0:
        return dataset, [], {}
    rng = random.Random(seed)
    docs = [d for d in dataset.corpus.values() if len(sentences(d.text)) >= MIN_SENTENCES]
    rng.shuffle(docs)
    queries: dict[str, str] = {}
    passages: dict[str, Document] = {}
    groups: list[Group] = []
    dropped = 0
    bar = tqdm(total=count, desc="cloze groups", unit="group", disable=not progress)
    for doc in docs:
        if len(groups) >= count:
            break
        parts = sentences(doc.text)
        usable = [i for i, s in enumerate(parts) if MIN_WORDS <= len(s.split()) <= MAX_WORDS]
        if not usable:
            continue
        pick = rng.choice(usable)
        query = parts[pick]
        if held_out.find(query):
            dropped += 1
            continue
        pool = [c.id for c in first_stage.search(query, depth, "rrf") if c.id != doc.id]
        if len(pool) < negatives:
            continue
        key = f"{CLOZE_PREFIX}{doc.id}"
        queries[key] = query
        passages[key] = Document(key, doc.title, " ".join(parts[:pick] + parts[pick + 1 :]))
        groups.append(Group(key, key, tuple(rng.sample(pool, negatives))))
        bar.update(1)
    bar.close()
    if dropped:
        logger.warning("%d cloze sentences equal a dev/test query and were not used", dropped)
    if len(groups) < count:
        logger.warning("only %d of %d cloze groups: too few documents with %d+ sentences", len(groups), count, MIN_SENTENCES)
    extended = replace(dataset, queries={**dataset.queries, **queries}, corpus={**dataset.corpus, **passages})
    return extended, groups, {key: flat_prior() for key in queries}
