"""Clicks as weak labels for the teacher (``train all --clicks FILE.jsonl``, ``train teacher --clicks``).

One JSON object per line: ``{"query": str, "shown": [doc ids, in the order shown], "clicked": [doc ids]}``.
Each line with a click becomes one training group: its lowest-shown click is the positive, and its
negatives are the documents shown *above* that click and not clicked (the user read past them:
"skip-above"), then, when there are too few, other shown documents that were not clicked. A line
that cannot fill a group (no click, or fewer unclicked documents than negatives) is skipped and
counted.

Clicks are biased labels, and the recipe only partly corrects for it:

* **position bias**: users click near the top whatever is there. Groups are trained as residuals
  of the shown order (its rank prior, like the first-stage prior of judged groups), so what the
  position already explains does not become "relevance"; skip-above negatives are documents the
  user did see.
* **presentation bias**: a snippet, not the document, is what gets clicked; a click is not a
  judgment, and a document never shown can be neither clicked nor skipped.
* **trust**: a click log mixes navigational, exploratory and accidental clicks. Use it beside
  judged queries, check the result on a judged dev split, and never put dev or test queries in it:
  a line whose query is a dev/test query (same text up to case and spacing) is refused, like a
  ``--queries`` file.

A malformed line, an unknown document id or a click on a document that was not shown is an error
naming the file, line and field.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace
from pathlib import Path

from lrt_rerank.datasets import Dataset, DatasetError, _read_jsonl
from lrt_rerank.interpolation import rank_prior
from lrt_rerank.train.data import Group
from lrt_rerank.train.lists import HeldOut

logger = logging.getLogger(__name__)

CLICK_PREFIX = "click:"


@dataclass(frozen=True)
class ClickRecord:
    line: int
    query: str
    shown: tuple[str, ...]
    clicked: frozenset[str]


def _id_list(path: Path, number: int, record: dict[str, object], field: str) -> list[str]:
    value = record.get(field)
    if not isinstance(value, list) or not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in value):
        problem = "missing" if value is None else "not a list of document ids"
        raise DatasetError(f"{path}:{number}: field {field!r} is {problem}")
    return [str(x) for x in value]


def read_clicks(path: Path, corpus: set[str] | dict[str, object], held_out: HeldOut) -> list[ClickRecord]:
    """Every line of a click log, checked against the corpus and the held-out queries."""
    if not path.is_file():
        raise DatasetError(f"{path}: click log not found")
    out: list[ClickRecord] = []
    for number, record in _read_jsonl(path, ("query",)):
        query = str(record["query"]).strip()
        if not query:
            raise DatasetError(f"{path}:{number}: field 'query' is empty")
        shown = _id_list(path, number, record, "shown")
        clicked = _id_list(path, number, record, "clicked")
        for field, ids in (("shown", shown), ("clicked", clicked)):
            unknown = [d for d in ids if d not in corpus]
            if unknown:
                raise DatasetError(f"{path}:{number}: field {field!r} names {unknown[0]!r}, not a document of the corpus")
        if len(set(shown)) != len(shown):
            raise DatasetError(f"{path}:{number}: field 'shown' repeats a document id")
        stray = [d for d in clicked if d not in shown]
        if stray:
            raise DatasetError(f"{path}:{number}: field 'clicked' names {stray[0]!r}, which is not in 'shown'")
        clash = held_out.find(query)
        if clash:
            raise DatasetError(f"{path}:{number}: query {query[:80]!r} is {clash} of the dataset, which the report measures; "
                               "a click log must not overlap the reported splits")
        out.append(ClickRecord(number, query, tuple(shown), frozenset(clicked)))
    if not out:
        raise DatasetError(f"{path}: no click records")
    return out


def click_groups(
    dataset: Dataset, records: list[ClickRecord], negatives: int, seed: int
) -> tuple[Dataset, list[Group], dict[str, dict[str, float]]]:
    """Teacher groups from click records (positive: the lowest-shown click; negatives: skip-above first),
    ``dataset`` extended with their queries (id ``click:<line>``), and each group's priors: the rank prior
    of every document's shown position."""
    rng = random.Random(seed)
    queries: dict[str, str] = {}
    groups: list[Group] = []
    priors: dict[str, dict[str, float]] = {}
    skipped = 0
    for record in records:
        clicks = [i for i, d in enumerate(record.shown) if d in record.clicked]
        if not clicks:
            skipped += 1
            continue
        last = clicks[-1]
        above = [d for d in record.shown[:last] if d not in record.clicked]
        below = [d for d in record.shown[last + 1 :] if d not in record.clicked]
        if len(above) + len(below) < negatives:
            skipped += 1
            continue
        chosen = rng.sample(above, min(negatives, len(above)))
        chosen += rng.sample(below, negatives - len(chosen))
        key = f"{CLICK_PREFIX}{record.line}"
        queries[key] = record.query
        groups.append(Group(key, record.shown[last], tuple(chosen)))
        values = rank_prior(len(record.shown))
        priors[key] = {d: float(v) for d, v in zip(record.shown, values)}
    if skipped:
        logger.warning("%d click records could not fill a group (no click, or fewer than %d unclicked shown documents)", skipped, negatives)
    return replace(dataset, queries={**dataset.queries, **queries}), groups, priors
