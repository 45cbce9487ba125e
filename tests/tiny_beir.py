"""A tiny BEIR folder cut from SciFact for factory tests: train, dev and test qrels (test carved from
SciFact's dev, as the shared copy holds no test claims), every judged abstract and some others."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from lrt_rerank.datasets import Document


#: Three judged queries, each matching its document only through stemming ("running" ~ runs, "swimmers" ~
#: swimmer, "baking breads" ~ bake bread): the swimming and cooking documents, then each test's own running one.
SWIM = Document("swim", "Lakes", "A swimmer crosses the lake before breakfast.")
COOK = Document("cook", "Kitchens", "Cooks boil potatoes and bake bread in the kitchen.")
QUERIES = {"q1": "running", "q2": "swimmers", "q3": "baking breads"}
QRELS = {"q1": "run", "q2": "swim", "q3": "cook"}


def write_beir(root: Path, docs: Sequence[Document], queries: dict[str, str], qrels: dict[str, str], split: str = "test") -> Path:
    """A BEIR folder at ``root`` of ``docs``, ``queries`` (id -> text) and one relevant document per query."""
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n" for d in docs), encoding="utf-8"
    )
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()), encoding="utf-8")
    rows = "".join(f"{q}\t{d}\t1\n" for q, d in qrels.items())
    (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows, encoding="utf-8")
    return root


def read_qrels(path: Path) -> dict[str, list[str]]:
    qrels: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        qid, doc, score = line.split("\t")
        if int(score) > 0:
            qrels.setdefault(qid, []).append(doc)
    return qrels


def make_tiny_scifact(src: Path, root: Path, train: int = 24, dev: int = 8, test: int = 4, filler: int = 120, seed: int = 5) -> Path:
    """Write the folder at ``root`` and return it."""
    rng = random.Random(seed)
    train_q = dict(list(read_qrels(src / "qrels" / "train.tsv").items())[:train])
    held = list(read_qrels(src / "qrels" / "dev.tsv").items())
    splits = {"train": train_q, "dev": dict(held[:dev]), "test": dict(held[dev : dev + test])}
    corpus = [json.loads(line) for line in (src / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    positives = {d for qrels in splits.values() for docs in qrels.values() for d in docs}
    others = sorted(d["_id"] for d in corpus if d["_id"] not in positives)
    keep = positives | set(rng.sample(others, filler))
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus if d["_id"] in keep), encoding="utf-8")
    wanted = {q for qrels in splits.values() for q in qrels}
    lines = [line for line in (src / "queries.jsonl").read_text(encoding="utf-8").splitlines() if json.loads(line)["_id"] in wanted]
    (root / "queries.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for split, qrels in splits.items():
        rows = "".join(f"{q}\t{d}\t1\n" for q, docs in qrels.items() for d in docs)
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows, encoding="utf-8")
    return root


def tiny_scifact_with_index(shared_data: Path, where: Path) -> tuple[Path, Path]:
    """The tiny SciFact folder under ``where`` and its embedded index (the default bi-encoder)."""
    from lrt_rerank.datasets import load_dataset
    from lrt_rerank.first_stage.embedded import EmbeddedFirstStage

    root = make_tiny_scifact(shared_data / "scifact", where / "tinysci")
    index = where / "index"
    EmbeddedFirstStage.build(load_dataset(root, "train").corpus.values(), index, progress=False)
    return root, index
