"""The listwise training loop shared by the teacher and the distilled student.

Each step takes ``batch_groups`` groups of (query, positive, negatives...) and minimises

* teacher (labels only): cross-entropy of the positive under a softmax over its group;
* student (distillation): ``kd_weight`` * the distillation loss (:func:`kd_loss`: listwise KL with a
  temperature, or Margin-MSE) over the group + (1 - ``kd_weight``) * the same cross-entropy on the label.

:func:`run_steps` is the optimisation loop itself; :mod:`lrt_rerank.train.lists` drives it with
whole teacher-scored candidate lists instead of groups.

With ``prior_weight`` > 0 the model is trained as a residual of the first stage: the loss sees
``logit + prior_weight * prior(first-stage position)`` (:func:`lrt_rerank.interpolation.combine`), so the
model spends its capacity on what the first stage ranks wrong, and is used the same way at run time.

AdamW with linear warm-up then linear decay; the head (scale, bias, mixer) learns faster than
the encoder. Seeded: the same data, seed and thread count give the same model. Model selection:
the state with the best dev MRR@10 among the evaluations (with ``eval_every``: before the first
step, every ``eval_every`` steps and at the end; otherwise only at the end).
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TypeVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lrt_rerank.datasets import Dataset
from lrt_rerank.train.data import Group, PairEncoder, passage_text
from lrt_rerank.train.model import PairScorer

logger = logging.getLogger(__name__)

HEAD_PARAMS = ("scale", "bias", "lexical", "mixer.weight")
LOSSES = ("kl", "margin-mse")
T = TypeVar("T")


@dataclass
class LoopConfig:
    lr: float = 5e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    batch_groups: int = 4
    epochs: float = 1.0
    eval_every: int = 0
    kd_weight: float = 0.0
    loss: str = "kl"
    temperature: float = 1.0
    prior_weight: float = 0.0
    seed: int = 13


@dataclass
class LoopResult:
    steps: int
    pairs: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    evaluations: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    best_dev: float = float("nan")

    def summary(self) -> dict[str, object]:
        data = asdict(self)
        data["losses"] = [round(x, 4) for x in self.losses[:: max(1, len(self.losses) // 50)]]
        return data


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _optimizer(model: PairScorer, cfg: LoopConfig) -> torch.optim.Optimizer:
    head, decay, no_decay = [], [], []
    for name, param in model.named_parameters():
        if name in HEAD_PARAMS:
            head.append(param)
        elif name.endswith("bias") or "LayerNorm" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr},
            {"params": head, "weight_decay": 0.0, "lr": cfg.head_lr},
        ]
    )


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, cfg: LoopConfig) -> torch.Tensor:
    """Distillation loss between [batch, list] student and teacher logits, ``cfg.loss``:

    * ``kl``: T^2 * KL(softmax(teacher/T) || softmax(student/T)) per list, averaged over lists;
    * ``margin-mse``: the mean over all ordered pairs (i, j) of a list of
      ((s_i - s_j) - (t_i - t_j))^2, i.e. the teacher's margins matched on the teacher's scale.
      With d = s - t it equals 2 * the variance of d over the list, which is what is computed.
    """
    if cfg.loss == "kl":
        t = cfg.temperature
        return nn.functional.kl_div(
            nn.functional.log_softmax(student / t, dim=-1), nn.functional.log_softmax(teacher / t, dim=-1), log_target=True, reduction="batchmean"
        ) * (t * t)
    if cfg.loss == "margin-mse":
        d = student - teacher
        return 2.0 * (d - d.mean(dim=-1, keepdim=True)).pow(2).mean(dim=-1).mean()
    raise ValueError(f"unknown distillation loss {cfg.loss!r}: expected one of {', '.join(LOSSES)}")


def run_steps(
    model: PairScorer,
    items: Sequence[T],
    cfg: LoopConfig,
    batch_loss: Callable[[list[T]], tuple[torch.Tensor, int]],
    evaluate: Callable[[PairScorer], float] | None = None,
    progress: bool = True,
) -> LoopResult:
    """The optimisation loop: ``epochs`` passes over ``items`` in seeded random order, ``batch_groups``
    items per step, ``batch_loss(batch) -> (loss, pairs encoded)``; with ``evaluate`` the best dev
    state is restored at the end."""
    if not items:
        raise ValueError("no training examples (too few judged queries or candidates)")
    seed_everything(cfg.seed)
    steps = max(1, int(round(len(items) * cfg.epochs / cfg.batch_groups)))
    warmup = max(1, int(steps * cfg.warmup))
    optimizer = _optimizer(model, cfg)
    bases = [g["lr"] for g in optimizer.param_groups]
    rng = random.Random(cfg.seed)
    order: list[T] = []
    result = LoopResult(steps=steps, pairs=0, seconds=0.0)
    best_state: dict[str, torch.Tensor] | None = None
    started = time.perf_counter()

    def run_eval(step: int) -> None:
        nonlocal best_state
        if evaluate is None:
            return
        score = evaluate(model)
        result.evaluations.append({"step": step, "dev_mrr@10": round(score, 4)})
        logger.info("step %d: dev MRR@10 %.4f", step, score)
        if best_state is None or score > result.best_dev:
            result.best_dev, result.best_step = score, step
            best_state = copy.deepcopy(model.state_dict())

    if cfg.eval_every:
        run_eval(0)  # the starting point competes too: training that only hurts keeps the initial state
    bar = tqdm(range(1, steps + 1), desc="training", unit="step", disable=not progress)
    for step in bar:
        model.train()
        batch: list[T] = []
        while len(batch) < cfg.batch_groups:
            if not order:
                order = list(items)
                rng.shuffle(order)
            batch.append(order.pop())
        loss, pairs = batch_loss(batch)
        factor = step / warmup if step <= warmup else max(0.0, (steps - step) / max(1, steps - warmup))
        for group, base in zip(optimizer.param_groups, bases):
            group["lr"] = base * factor
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        result.losses.append(float(loss.detach()))
        result.pairs += pairs
        window = result.losses[-20:]
        bar.set_postfix(loss=f"{sum(window) / len(window):.3f}", pairs_s=f"{result.pairs / (time.perf_counter() - started):.1f}")
        if cfg.eval_every and step % cfg.eval_every == 0 and step != steps:
            run_eval(step)
    run_eval(steps)
    if best_state is not None and result.best_step != steps:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - started
    return result


def train_listwise(
    model: PairScorer,
    encoder: PairEncoder,
    dataset: Dataset,
    groups: Sequence[Group],
    cfg: LoopConfig,
    teacher_scores: dict[str, dict[str, float]] | None = None,
    priors: dict[str, dict[str, float]] | None = None,
    evaluate: Callable[[PairScorer], float] | None = None,
    progress: bool = True,
) -> LoopResult:
    """Train ``model`` in place on ``groups``; with ``evaluate`` the best dev state is restored at the end."""
    if cfg.kd_weight > 0 and teacher_scores is None:
        raise ValueError("kd_weight > 0 needs teacher scores")
    if cfg.prior_weight > 0 and priors is None:
        raise ValueError("prior_weight > 0 needs first-stage priors")
    if not groups:
        raise ValueError("no training groups (too few judged queries or candidates)")

    def batch_loss(batch: list[Group]) -> tuple[torch.Tensor, int]:
        size = 1 + len(batch[0].negatives)
        queries = [dataset.queries[g.query_id] for g in batch for _ in range(size)]
        doc_ids = [d for g in batch for d in (g.positive, *g.negatives)]
        inputs = encoder.encode(queries, [passage_text(dataset, d) for d in doc_ids])
        logits = model(**inputs).view(len(batch), size)
        prior = None
        if cfg.prior_weight > 0 and priors is not None:
            offset = [[priors[g.query_id][d] for d in (g.positive, *g.negatives)] for g in batch]
            prior = cfg.prior_weight * torch.tensor(offset, dtype=logits.dtype)
            logits = logits + prior
        labels = torch.zeros(len(batch), dtype=torch.long)
        loss = nn.functional.cross_entropy(logits, labels)
        if cfg.kd_weight > 0 and teacher_scores is not None:
            target = torch.tensor(
                [[teacher_scores[g.query_id][d] for d in (g.positive, *g.negatives)] for g in batch], dtype=logits.dtype
            )
            if prior is not None:  # the teacher is read the way it is used: with the prior
                target = target + prior
            loss = cfg.kd_weight * kd_loss(logits, target, cfg) + (1.0 - cfg.kd_weight) * loss
        return loss, len(doc_ids)

    return run_steps(model, groups, cfg, batch_loss, evaluate, progress)
