"""``lrt-rerank train all``: the whole model factory in one resumable command.

Stages, each skipped when its output is already complete (so a stopped run resumes):

1. **teacher** (unless ``--teacher``): fine-tune the MiniLM backbone on the train qrels with hard
   negatives (``RUN/teacher/``, a checkpoint), export it to ``RUN/teacher-fp32/``;
2. **lists**: every train query's first-stage top 50, plus unlabelled queries (``--queries FILE``,
   and pseudo-queries from the corpus), none of them a dev or test query
   (:mod:`lrt_rerank.train.lists`);
3. **teacher scores** of every passage of every list, cached pair by pair in
   ``RUN/.candidates/teacher-scores.sqlite`` (``--cache DIR`` shares one cache, and the mined
   candidates, between runs) (:mod:`lrt_rerank.train.score_cache`); with ``--teacher-fusion`` the
   student's teacher is the fusion of those scores with the first stage's BM25 and dense scores
   (:mod:`lrt_rerank.train.fusion`, weights in ``RUN/fusion-teacher.json``);
4. **student** (``RUN/lrt/``): a few layers fitted to those scores (listwise KL or Margin-MSE);
5. **export**: ``RUN/lrt-fp32/`` and its INT8 copy ``RUN/lrt-int8/``;
6. **report**: both models re-rank the RRF top 50 of dev (interpolation weights chosen there) and
   of test when the dataset has test qrels; ``RUN/report.json`` and ``RUN/report.md``, with the
   student's retention of the teacher's gain (the fusion teacher's, with ``--teacher-fusion``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported only when the factory runs, so the CLI parses without the train extra
    import numpy as np

    from lrt_rerank.datasets import Dataset
    from lrt_rerank.first_stage.base import FirstStage
    from lrt_rerank.train.data import Candidates
    from lrt_rerank.train.fusion import FusionWeights
    from lrt_rerank.train.lists import QueryList
    from lrt_rerank.train.recipes import Recipe
    from lrt_rerank.train.report import Derived
    from lrt_rerank.train.teachers import Teacher

logger = logging.getLogger(__name__)

TEACHER_CKPT = "teacher"
TEACHER_FP32 = "teacher-fp32"
STUDENT_CKPT = "lrt"
STUDENT_FP32 = "lrt-fp32"
STUDENT_INT8 = "lrt-int8"
REPORT = "report.json"
TEACHER_LABEL = "teacher FP32"
STUDENT_LABEL = "LRT INT8"
FUSION_LABEL = "fusion teacher (BM25 + dense + teacher FP32)"
FUSION_FILE = "fusion-teacher.json"


@dataclass
class FactoryConfig:
    dataset: Path
    out: Path
    teacher: Path | None = None
    queries: Path | None = None
    cache: Path | None = None
    pseudo_queries: int = 1000
    max_length: int = 128
    teacher_layers: int = 6
    teacher_epochs: float = 4.0
    teacher_negatives: int = 7
    teacher_lr: float = 5e-5
    teacher_cloze: int = 0
    clicks: Path | None = None
    teacher_fusion: bool = False
    student_layers: list[int] = field(default_factory=lambda: [0, 5])
    student_epochs: float = 1.0
    student_lr: float = 1e-4
    list_size: int = 16
    loss: str = "kl"
    temperature: float = 1.0
    kd_weight: float = 0.8
    prior_weight: float = 4.0
    head_lr: float = 1e-2
    batch: int = 4
    eval_every: int = 100
    dev_queries: int = 100
    dev_depth: int = 50
    train_queries: int = 0
    threads: int = 2
    seed: int = 13

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def _teacher_recipe(cfg: FactoryConfig) -> Recipe:
    from lrt_rerank.train.loop import LoopConfig
    from lrt_rerank.train.recipes import Recipe

    loop = LoopConfig(lr=cfg.teacher_lr, head_lr=cfg.head_lr, batch_groups=cfg.batch, epochs=cfg.teacher_epochs,
                      eval_every=cfg.eval_every, seed=cfg.seed, prior_weight=cfg.prior_weight)
    return Recipe(dataset=cfg.dataset, out=cfg.out / TEACHER_CKPT, layers=cfg.teacher_layers, max_length=cfg.max_length,
                  negatives=cfg.teacher_negatives, cloze=cfg.teacher_cloze, clicks=cfg.clicks, train_queries=cfg.train_queries, dev_queries=cfg.dev_queries,
                  dev_depth=cfg.dev_depth, threads=cfg.threads, loop=loop, cache=cfg.cache)


def _student_recipe(cfg: FactoryConfig) -> Recipe:
    from lrt_rerank.train.loop import LoopConfig
    from lrt_rerank.train.recipes import Recipe

    loop = LoopConfig(lr=cfg.student_lr, head_lr=cfg.head_lr, batch_groups=cfg.batch, epochs=cfg.student_epochs,
                      eval_every=cfg.eval_every, seed=cfg.seed, prior_weight=cfg.prior_weight, kd_weight=cfg.kd_weight,
                      loss=cfg.loss, temperature=cfg.temperature)
    return Recipe(dataset=cfg.dataset, out=cfg.out / STUDENT_CKPT, layers=len(cfg.student_layers), max_length=cfg.max_length,
                  train_queries=cfg.train_queries, dev_queries=cfg.dev_queries, dev_depth=cfg.dev_depth, threads=cfg.threads, loop=loop, cache=cfg.cache)


def _done(path: Path, marker: str) -> bool:
    return (path / marker).is_file()


def check_inputs(cfg: FactoryConfig) -> None:
    """Fail before any training on what would fail later: dataset splits, the teacher, the queries file."""
    from lrt_rerank.datasets import DatasetError
    from lrt_rerank.train.lists import held_out_queries, read_queries_file
    from lrt_rerank.train.loop import LOSSES
    from lrt_rerank.train.teachers import teacher_kind

    for split in ("train", "dev"):
        if not (cfg.dataset / "qrels" / f"{split}.tsv").is_file():
            raise DatasetError(f"{cfg.dataset / 'qrels' / f'{split}.tsv'}: missing; `train all` trains on train and selects on dev")
    if cfg.loss not in LOSSES:
        raise ValueError(f"--loss {cfg.loss!r}: expected one of {', '.join(LOSSES)}")
    if cfg.teacher is not None:
        teacher_kind(cfg.teacher)
    if cfg.queries is not None:
        read_queries_file(cfg.queries, held_out_queries(cfg.dataset))
    if cfg.clicks is not None and cfg.teacher is not None:  # the log itself is checked where it is read, before any training
        raise ValueError("--clicks adds groups to the teacher's training; with --teacher no teacher is trained")


def run_factory(cfg: FactoryConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) every stage; returns the report (also written to ``RUN/report.json``)."""
    from lrt_rerank.first_stage.index_cache import cached_index
    from lrt_rerank.train.data import load_or_mine, passage_text
    from lrt_rerank.train.export import quantize, write_model_dir
    from lrt_rerank.train.lists import held_out_queries, labelled_lists, mine_lists, pseudo_queries, read_queries_file
    from lrt_rerank.train.recipes import distill_lists, train_teacher
    from lrt_rerank.train.teachers import CHECKPOINT, open_teacher, score_lists, teacher_kind

    check_inputs(cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "factory.json").write_text(json.dumps(cfg.to_json(), indent=2) + "\n", encoding="utf-8")
    timings: dict[str, float] = {}
    cache = cfg.cache or cfg.out / ".candidates"

    def stage(name: str) -> float:
        logger.info("== %s", name)
        return time.perf_counter()

    # 1. teacher
    started = stage("teacher")
    checkpoint: Path | None
    if cfg.teacher is None:
        checkpoint = cfg.out / TEACHER_CKPT
        if not _done(checkpoint, "lrt-train.json"):
            train_teacher(_teacher_recipe(cfg), progress=progress)
    else:
        checkpoint = cfg.teacher if teacher_kind(cfg.teacher) == CHECKPOINT else None
    if checkpoint is not None:
        teacher_dir = cfg.out / TEACHER_FP32
        if not _done(teacher_dir, "card.json"):
            write_model_dir(checkpoint, teacher_dir, TEACHER_FP32, cfg.max_length, {})
    else:  # a model directory, or a snapshot the engine imports into one
        assert cfg.teacher is not None
        teacher_dir = Path(open_teacher(cfg.teacher, cfg.threads).encoder.model_dir)  # type: ignore[union-attr]
    timings["teacher"] = time.perf_counter() - started

    # 2. lists
    started = stage("lists")
    train, train_cands = load_or_mine(cfg.dataset, "train", cache, progress)
    if cfg.train_queries:
        keep = sorted(train_cands.ids)[: cfg.train_queries]
        train_cands.ids = {q: train_cands.ids[q] for q in keep}
    lists = labelled_lists(train, train_cands)
    held_out = held_out_queries(cfg.dataset)
    unlabelled: list[tuple[str, str]] = []
    if cfg.queries is not None:
        unlabelled += [("queries-file", q) for q in read_queries_file(cfg.queries, held_out)]
    if cfg.clicks is not None:
        from lrt_rerank.train.clicks import read_clicks

        unlabelled += [("clicks", r.query) for r in read_clicks(cfg.clicks, train.corpus, held_out)]
    if cfg.pseudo_queries:
        unlabelled += pseudo_queries(train.corpus, cfg.pseudo_queries, cfg.seed, held_out)
    seen = {q.query for q in lists}
    fresh: list[tuple[str, str]] = []
    for source, text in unlabelled:  # each query text once, train queries first
        if text not in seen:
            seen.add(text)
            fresh.append((source, text))
    unlabelled = fresh
    first_stage = cached_index(train, progress=progress) if unlabelled or cfg.teacher_fusion else None
    if unlabelled:
        assert first_stage is not None
        lists += mine_lists(first_stage, unlabelled, progress=progress)
    timings["lists"] = time.perf_counter() - started

    # 3. teacher scores
    started = stage("teacher scores")
    teacher = open_teacher(checkpoint or teacher_dir, cfg.threads)  # a checkpoint's scores are keyed by its weights' sha256
    scores = score_lists(teacher, [(q.query, [passage_text(train, d) for d in q.doc_ids]) for q in lists], cache, cfg.threads, progress)
    provenance = teacher.provenance()
    student_cfg = cfg
    fusion: tuple[FusionWeights, FirstStage] | None = None
    if cfg.teacher_fusion:
        assert first_stage is not None
        weights, scores = fusion_teacher(cfg, train, train_cands, first_stage, lists, scores, teacher, cache, progress)
        fusion = (weights, first_stage)
        provenance["fusion"] = weights.to_json()
        student_cfg = replace(cfg, prior_weight=weights.prior)  # residual training on the fusion's own prior weight
    timings["teacher_scores"] = time.perf_counter() - started

    # 4. student
    started = stage("student")
    student = cfg.out / STUDENT_CKPT
    if not _done(student, "lrt-train.json"):
        distill_lists(_student_recipe(student_cfg), checkpoint or teacher_dir, cfg.student_layers, lists, scores, cfg.list_size, progress)
    timings["student"] = time.perf_counter() - started

    # 5. export
    started = stage("export")
    fp32 = cfg.out / STUDENT_FP32
    if not _done(fp32, "card.json"):
        write_model_dir(student, fp32, STUDENT_FP32, cfg.max_length, {"teacher": provenance})
    int8 = cfg.out / STUDENT_INT8
    if not _done(int8, "card.json"):
        quantize(fp32, int8)
    timings["export"] = time.perf_counter() - started

    # 6. report
    started = stage("report")
    report = factory_report(cfg, teacher_dir, int8, cache, progress, fusion)
    timings["report"] = time.perf_counter() - started
    report["stage_seconds"] = {k: round(v, 1) for k, v in timings.items()}
    report["lists"] = json.loads((student / "lrt-train.json").read_text(encoding="utf-8")).get("lists")
    report["config"] = cfg.to_json()
    (cfg.out / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def fusion_teacher(cfg: FactoryConfig, train: Dataset, train_cands: Candidates, first_stage: FirstStage, lists: list[QueryList],
                   scores: list[np.ndarray], teacher: Teacher, cache: Path, progress: bool) -> tuple[FusionWeights, list[np.ndarray]]:
    """The fusion teacher's weights (first-stage ones on train's judged queries, the teacher's on dev; written to
    ``RUN/fusion-teacher.json``) and its score for every passage of every list (:mod:`lrt_rerank.train.fusion`)."""
    from tqdm.auto import tqdm

    from lrt_rerank.train.data import load_or_mine, passage_text
    from lrt_rerank.train.fusion import choose_first_stage_weights, choose_teacher_weight, first_stage_features
    from lrt_rerank.train.lists import RERANK_DEPTH
    from lrt_rerank.train.teachers import score_lists

    found: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}

    def features(query: str, ids: Sequence[str]) -> np.ndarray:
        """Each (query, list) searched once: train queries' lists are both where weights are chosen and trained on."""
        key = (query, tuple(ids))
        if key not in found:
            found[key] = first_stage_features(first_stage, query, ids)
        return found[key]

    on_train = {q: (ids[:RERANK_DEPTH], features(train.queries[q], ids[:RERANK_DEPTH])) for q, ids in train_cands.ids.items()}
    base, train_mrr = choose_first_stage_weights(train.qrels, on_train)
    dev, dev_cands = load_or_mine(cfg.dataset, "dev", cache, progress)
    dev_ids = {q: ids[:RERANK_DEPTH] for q, ids in dev_cands.ids.items()}
    dev_logits = score_lists(teacher, [(dev.queries[q], [passage_text(dev, d) for d in ids]) for q, ids in dev_ids.items()], cache, cfg.threads, progress)
    on_dev = {q: (ids, first_stage_features(first_stage, dev.queries[q], ids)) for q, ids in dev_ids.items()}
    weights, curve = choose_teacher_weight(dev.qrels, on_dev, dict(zip(dev_ids, dev_logits)), base)
    record = {"weights": weights.to_json(), "first_stage_weights_chosen_on": f"{cfg.dataset.name}/train", "train_mrr@10_without_teacher": round(train_mrr, 4),
              "teacher_weight_chosen_on": f"{cfg.dataset.name}/dev", "dev_mrr@10_by_teacher_weight": {str(k): round(v, 4) for k, v in curve.items()}}
    (cfg.out / FUSION_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("fusion teacher %s (train MRR@10 without the teacher %.4f; dev by teacher weight %s)", weights, train_mrr, record["dev_mrr@10_by_teacher_weight"])
    targets = [weights.target(features(q.query, q.doc_ids), s)
               for q, s in tqdm(list(zip(lists, scores)), desc="fusion teacher", unit="list", disable=not progress)]
    return weights, targets


def factory_report(cfg: FactoryConfig, teacher_dir: Path, student_dir: Path, cache: Path, progress: bool,
                   fusion: tuple[FusionWeights, FirstStage] | None = None) -> dict[str, Any]:
    """The teacher (and the fusion teacher, when given with the first stage it reads) and the LRT INT8 on dev
    (tuning) and test (when present), with the LRT's retention of the gain of the teacher it was distilled
    from, and the targets."""
    from lrt_rerank.train.report import Derived, Split, build_report, markdown, write_card_figures

    splits = [Split(cfg.dataset, "dev", "tune")]
    if (cfg.dataset / "qrels" / "test.tsv").is_file():
        splits.append(Split(cfg.dataset, "test", "test"))
    models = {TEACHER_LABEL: teacher_dir, STUDENT_LABEL: student_dir}
    derived: dict[str, Derived] = {}
    if fusion is not None:
        derived[FUSION_LABEL] = _fusion_system(*fusion)
    report = build_report(models, splits, cache, threads=cfg.threads, progress=progress,
                          teacher=FUSION_LABEL if fusion is not None else TEACHER_LABEL, derived=derived)
    if fusion is not None:
        report["fusion_teacher"] = json.loads((cfg.out / FUSION_FILE).read_text(encoding="utf-8"))
    for label, path in models.items():
        if path.resolve().is_relative_to(cfg.out.resolve()):  # never rewrite the card of a teacher brought from elsewhere
            write_card_figures(path, label, report)
    report["targets"] = targets(report, FUSION_LABEL if fusion is not None else TEACHER_LABEL)
    (cfg.out / "report.md").write_text(markdown(report), encoding="utf-8")
    return report


def _fusion_system(fusion: FusionWeights, first_stage: FirstStage) -> Derived:
    """The fusion teacher as a report system: its score from the first stage's scores and the teacher FP32's logits."""
    from lrt_rerank.train.fusion import first_stage_features
    from lrt_rerank.train.report import DEPTH

    def score(dataset: Dataset, candidates: Candidates, logits: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {q: fusion.target(first_stage_features(first_stage, dataset.queries[q], candidates.ids[q][:DEPTH]), row)
                for q, row in logits[TEACHER_LABEL].items()}

    return score


def targets(report: dict[str, Any], teacher_label: str = TEACHER_LABEL) -> dict[str, Any]:
    """The distillation targets read off the tuning split: retention (interpolated MRR@10), the gain over the
    first stage of the teacher the LRT learnt from (``teacher_label``), the LRT's size and its p95 against the
    teacher FP32's (a fusion teacher costs the same plus the first stage's scores, already at hand)."""
    tune = next(data for data in report["splits"].values() if data["role"] == "tune")
    rows = {row["system"]: row for row in tune["rows"]}
    first, teacher, student = rows["RRF first stage"], rows[f"+ {teacher_label}"], rows[f"+ {STUDENT_LABEL}"]
    engine_teacher = rows[f"+ {TEACHER_LABEL}"]
    gain = teacher["interpolated"]["MRR@10"] / first["MRR@10"] - 1.0 if first["MRR@10"] else float("nan")
    return {
        "split": next(k for k, d in report["splits"].items() if d["role"] == "tune"),
        "retention_interpolated_mrr@10": student["retention"]["MRR@10"]["interpolated"],
        "retention_target": 0.75,
        "teacher_gain_interpolated_mrr@10": round(gain, 4),
        "teacher_gain_target": 0.05,
        "lrt_parameters": student.get("parameters"),
        "lrt_parameters_target": 16_000_000,
        "p95_ratio_lrt_to_teacher": round(student["rerank_p95_ms"] / engine_teacher["rerank_p95_ms"], 3) if engine_teacher["rerank_p95_ms"] else None,
        "p95_ratio_target": round(1 / 3, 3),
    }
