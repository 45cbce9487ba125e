"""A plan served and installed: `serve --plan F` runs the plan's stages (a cascade in turn) on each request,
refuses a bad or foreign plan naming it, and `opensearch pipeline --plan` says what the node cannot run."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lrt_rerank import CrossEncoder
from lrt_rerank.cli import main
from lrt_rerank.commands.opensearch import _plan_note
from lrt_rerank.plan.grid import Config, StageSpec
from lrt_rerank.plan.planfile import Plan
from lrt_rerank.service.app import create_app
from lrt_rerank.service.served import PLAN_ENV, plan_env
from lrt_rerank.service.settings import ServiceSettings

N = 12


def cascade_plan(model_dir: Path, digest: str) -> Plan:
    spec = str(model_dir)
    return Plan(Config((StageSpec(spec, 32, 10, 0.0), StageSpec(spec, 64, 5, 0.0))), 100.0, 5.0, {spec: digest})


def by_hand(model_dir: Path, query: str, docs: list[str]) -> list[int]:
    """Stage 1 (32 tokens) orders the first 10 by logit, stage 2 (64 tokens) the top 5 of that; ties: earlier first."""
    short = CrossEncoder.load(model_dir, max_length=32).score(query, docs[:10]).astype(np.float32)
    first = sorted(range(10), key=lambda i: (-float(short[i]), i)) + list(range(10, len(docs)))
    long = CrossEncoder.load(model_dir, max_length=64).score(query, [docs[i] for i in first[:5]]).astype(np.float32)
    head = sorted(range(5), key=lambda j: (-float(long[j]), j))
    return [first[j] for j in head] + first[5:]


def test_serve_runs_the_plans_cascade(small_cross_encoder_dir: Path, nfcorpus_sample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    query, docs = nfcorpus_sample[0][2], nfcorpus_sample[1][:N]
    digest = CrossEncoder.load(small_cross_encoder_dir).sha256
    monkeypatch.setenv(PLAN_ENV, plan_env(cascade_plan(small_cross_encoder_dir, digest).save(tmp_path / "plan.json"), "default"))
    with TestClient(create_app(ServiceSettings(), loader=lambda: pytest.fail("the plan names the model"))) as client:
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        r = client.post("/v1/rerank", json={"query": query, "documents": docs, "top_n": N, "raw_scores": True})
    assert r.status_code == 200, r.text
    assert [x["index"] for x in r.json()["results"]] == by_hand(small_cross_encoder_dir, query, docs)


def test_serve_refuses_a_plan_of_another_model_naming_it(small_cross_encoder_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = cascade_plan(small_cross_encoder_dir, "f" * 64).save(tmp_path / "plan.json")
    assert main(["serve", "--plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: stage 1 model" in err and "but the plan was made with " + "f" * 64 in err


def test_serve_refuses_a_plan_that_keeps_the_first_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = Plan(Config(), 100.0, 5.0, {}).save(tmp_path / "plan.json")
    assert main(["serve", "--plan", str(path)]) == 2
    assert "the plan keeps the first stage: there is nothing to serve" in capsys.readouterr().err


def test_the_node_side_pipeline_says_it_cannot_run_a_cascade(small_cross_encoder_dir: Path, tmp_path: Path) -> None:
    cascade = _plan_note(cascade_plan(small_cross_encoder_dir, "0" * 64).save(tmp_path / "cascade.json"))
    assert cascade["node_runs_cascade"] is False
    assert "the node-side pipeline cannot run a cascade (2 stages" in str(cascade["note"])
    assert "serve --plan" in str(cascade["note"]) and "size 10" in str(cascade["note"])
    kept = _plan_note(Plan(Config(), 100.0, 5.0, {}).save(tmp_path / "kept.json"))
    assert "keeps the first stage" in str(kept["note"])
