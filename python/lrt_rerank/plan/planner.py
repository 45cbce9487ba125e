"""``lrt-rerank plan``: measure every candidate pipeline's quality on a split's judged queries and its
latency on this machine, then choose the most precise one within the budget (or keep the first stage).

Quality is measured once (:mod:`~lrt_rerank.plan.quality`); ``reuse`` (a plan's evidence) skips it and
re-measures latency only, on the machine it runs on (:mod:`~lrt_rerank.plan.latency`)."""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lrt_rerank.datasets import Dataset
from lrt_rerank.evaluate import latency_percentiles
from lrt_rerank.first_stage.base import FirstStage
from lrt_rerank.plan.choice import check_budget, choose_within, default_margin
from lrt_rerank.plan.grid import DEPTHS, Config, StageSpec, cascades, single_stage
from lrt_rerank.plan.latency import LATENCY_QUERIES, Key, Timings, direct, measure, time_first_stage
from lrt_rerank.plan.models import PlanModel
from lrt_rerank.plan.planfile import Plan
from lrt_rerank.plan.quality import JudgedQuery, collect, mrr_of, per_query_quality, record_scores, summary
from lrt_rerank.rerank import Stage
from lrt_rerank.tune import FOLDS, SEED, check_split, qrels_digest, sample_queries

DIRECT_CHECKS = 4
"""Candidates also timed whole through the pipeline, to check the latency model."""
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def cpu_flags() -> list[str]:
    """The SIMD flags of this machine's CPU that matter to the models (from /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [f for f in SIMD_FLAGS if f in flags]


def make_plan(
    dataset: Dataset, first_stage: FirstStage, models: Sequence[PlanModel], budget_ms: float, *,
    margin_ms: float | None = None, max_queries: int | None = None, latency_queries: int = LATENCY_QUERIES,
    reuse: Plan | None = None, folds: int = FOLDS, checks: int = DIRECT_CHECKS, progress: bool = True,
) -> Plan:
    """The plan for ``dataset``'s split (train or dev) under ``budget_ms`` (p95 per query, first stage included)."""
    check_split(dataset.split)
    if budget_ms <= 0:
        raise ValueError(f"--budget-ms must be > 0, got {budget_ms:g}")
    margin = default_margin(budget_ms) if margin_ms is None else margin_ms
    query_ids = sample_queries(dataset, max_queries)
    if not query_ids:
        raise ValueError(f"{dataset.path}: split {dataset.split!r} has no query with a relevant judgment")
    by_spec = {m.spec: m for m in models}
    keys: list[Key] = [(m.spec, length) for m in models for length in m.lengths]
    rerankers = {key: by_spec[key[0]].load(key[1]) for key in keys}
    timed_ids = [query_ids[i] for i in np.random.default_rng(SEED).permutation(len(query_ids))[:latency_queries]]
    timed = collect(dataset, first_stage, timed_ids, progress)
    first_ms = time_first_stage(first_stage, timed)
    first_p95 = latency_percentiles(list(first_ms))[95]
    check_budget(budget_ms, first_p95)  # before timing the models and the (long) quality pass
    timings = measure(first_ms, timed, rerankers, dict.fromkeys(keys, DEPTHS), progress)
    if reuse is not None:
        configs, first_relevant, quality = _reused(reuse, models, keys)
        judged_ids = list(reuse.evidence.get("query_ids", []))
    else:
        judged = collect(dataset, first_stage, query_ids, progress)
        recorded = record_scores(judged, {key: (lambda r=rerankers[key]: r) for key in keys}, progress)
        configs = [Config(), *single_stage([m.spec for m in models], {m.spec: m.lengths for m in models}, {m.spec: m.weight for m in models})]
        first_relevant, ndcg10 = per_query_quality(configs, judged, recorded)
        extra = _cascade_configs(models, configs, mrr_of(first_relevant), timings)
        if extra:
            more_first, more_ndcg = per_query_quality(extra, judged, recorded)
            configs += extra
            first_relevant, ndcg10 = np.vstack([first_relevant, more_first]), np.vstack([ndcg10, more_ndcg])
        mrr = mrr_of(first_relevant)
        quality = [{"MRR@10": summary(mrr[i], mrr[0]), "NDCG@10": summary(ndcg10[i], ndcg10[0])} for i in range(len(configs))]
        judged_ids = query_ids
    mrr = mrr_of(first_relevant)
    totals = [timings.modelled(c) for c in configs]
    p95s = [latency_percentiles(list(t))[95] for t in totals]
    chosen, figures = choose_within(configs, mrr, p95s, budget_ms, margin, folds)
    checked = _direct_checks(first_stage, timed, configs, chosen, totals, models, checks)
    table = [
        {
            "pipeline": c.describe(), "kind": c.kind, "stages": [s.to_json() for s in c.stages], **quality[i],
            "p50_ms": round(latency_percentiles(list(totals[i]))[50], 3), "p95_ms": round(p95s[i], 3),
            "first_relevant": [int(r) for r in first_relevant[i]],
        }
        for i, c in enumerate(configs)
    ]
    evidence: dict[str, Any] = {
        "compared_models": {m.spec: m.sha256 for m in models},
        "dataset": dataset.name, "split": dataset.split, "queries": len(judged_ids), "query_ids": judged_ids,
        "qrels_sha256": qrels_digest(dataset, judged_ids) if reuse is None else reuse.evidence.get("qrels_sha256"),
        "date": datetime.date.today().isoformat(), "cpu_flags": cpu_flags(), "cpus": os.cpu_count(),
        "threads": "the model's default (all cores), as the service", "quality_reused_from": str(reuse.source) if reuse else None,
        "chosen": configs[chosen].describe(), "adopted": figures["adopted"], "reason": figures["reason"], "guard": figures,
        "latency": {
            "method": "modelled: first stage + each stage's scoring time at its depth, timed per query (interleaved); "
            "cascades' later stages timed over the first-stage top k",
            "queries": len(timed), "first_stage_p95_ms": round(first_p95, 3), "direct_checks": checked,
        },
        "table": table,
    }
    used = {s.model for s in configs[chosen].stages}
    return Plan(configs[chosen], budget_ms, margin, {spec: by_spec[spec].sha256 for spec in sorted(used)}, evidence)


def _cascade_configs(models: Sequence[PlanModel], singles: Sequence[Config], mrr: npt.NDArray[np.float64], timings: Timings) -> list[Config]:
    """Cascades of each cheaper model (per passage, at its card's length) before each dearer one."""
    best: dict[tuple[str, int | None, int], tuple[float, float]] = {}
    for config, values in zip(singles, mrr, strict=True):
        if len(config.stages) == 1:
            s = config.stages[0]
            mean = float(values.mean())
            if (s.model, s.max_length, s.depth) not in best or mean > best[(s.model, s.max_length, s.depth)][0]:
                best[(s.model, s.max_length, s.depth)] = (mean, s.weight)

    def cost(m: PlanModel) -> float:
        return float(np.median(timings.scoring_ms[(m.spec, m.lengths[-1])][max(DEPTHS)]))

    lengths = {m.spec: m.lengths for m in models}
    weights = {m.spec: m.weight for m in models}
    out: list[Config] = []
    for cheap in models:
        for dear in models:
            if cheap.spec != dear.spec and cost(cheap) < cost(dear):
                out += cascades(cheap.spec, dear.spec, lengths, weights, lambda m, n, d: best[(m, n, d)][1])
    return out


def _reused(reuse: Plan, models: Sequence[PlanModel], keys: Sequence[Key]) -> tuple[list[Config], npt.NDArray[np.int64], list[dict[str, Any]]]:
    """The candidates and quality recorded in a plan's evidence (their models must be among ``keys``, unchanged)."""
    compared = reuse.evidence.get("compared_models") or {}
    for m in models:
        if m.spec in compared and compared[m.spec] is not None and m.sha256 != compared[m.spec]:
            raise ValueError(f"{reuse.source}: model {m.spec!r} has sha256 {m.sha256}, but the plan measured {compared[m.spec]}: plan again")
    table = reuse.evidence.get("table")
    if not isinstance(table, list) or not table:
        raise ValueError(f"{reuse.source}: field 'evidence.table' is missing: nothing to reuse")
    configs = [Config(tuple(StageSpec(s["model"], s["max_length"], s["depth"], float(s["weight"])) for s in row["stages"])) for row in table]
    missing = sorted({s.scored for c in configs for s in c.stages} - set(keys), key=str)
    if missing:
        raise ValueError(f"{reuse.source}: its candidates use {missing[0][0]!r} at max length {missing[0][1]}: pass it as --reranker")
    first_relevant = np.array([row["first_relevant"] for row in table], dtype=np.int64)
    return configs, first_relevant, [{"MRR@10": row["MRR@10"], "NDCG@10": row["NDCG@10"]} for row in table]


def _direct_checks(
    first_stage: FirstStage, timed: Sequence[JudgedQuery], configs: Sequence[Config], chosen: int,
    totals: Sequence[npt.NDArray[np.float64]], models: Sequence[PlanModel], checks: int,
) -> list[dict[str, Any]]:
    """The chosen pipeline, the slowest single stage and cascade of each kind: modelled against timed whole."""
    picks = [chosen]
    for kind in ("single", "cascade"):
        slowest = max((i for i, c in enumerate(configs) if c.kind == kind), key=lambda i: float(np.median(totals[i])), default=None)
        if slowest is not None:
            picks.append(slowest)
    picks += [i for i, c in enumerate(configs) if c.kind == "single" and c.stages[0].depth == 50 and c.stages[0].weight == 0.0]
    by_spec = {m.spec: m for m in models}
    out = []
    for i in list(dict.fromkeys(picks))[:checks]:
        stages = [Stage(by_spec[s.model].load(s.max_length), s.depth, s.weight) for s in configs[i].stages]
        measured = latency_percentiles(list(direct(first_stage, timed, stages)))[95]
        modelled = latency_percentiles(list(totals[i]))[95]
        out.append({
            "pipeline": configs[i].describe(), "modelled_p95_ms": round(modelled, 3), "direct_p95_ms": round(measured, 3),
            "error_ms": round(modelled - measured, 3), "error": round((modelled - measured) / measured, 4) if measured > 0 else None,
        })
    return out
