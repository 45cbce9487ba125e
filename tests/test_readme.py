"""Every command in README.md is run, so none can rot.

Blocks marked ``test_readme`` run here, on small stand-ins for the user's data (a MiniLM
cross-encoder snapshot saved by transformers for ``~/models/...``, a small BEIR folder for
``my-beir-data``); ``serve`` commands start the real service (and Redis when named) on free ports.
Blocks marked ``smoke``/``smoke-install`` are run verbatim by tests/smoke_wheel.py, and ``ci``
by .ci/run. This module checks that every block carries one of those markers.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from lrt_rerank.cli import main
from readme_blocks import MARKERS, README, Block, blocks_for, readme_blocks
from service_fixtures import RedisServer, ServeProcess, key_file

ROOT = README.parent
RUNNABLE = ("bash", "python")

DOCS = {
    "d1": ("Vitamin D", "Vitamin D helps the body absorb calcium and keeps bones strong."),
    "d2": ("Statins", "Statins lower LDL cholesterol and the risk of heart attacks."),
    "d3": ("Green tea", "Green tea contains catechins and a little caffeine."),
    "d4": ("Running", "Running improves cardiovascular fitness and mood."),
    "d5": ("Milk", "Milk is a source of calcium, protein and vitamin B12."),
    "d6": ("Sleep", "Adults need seven to nine hours of sleep a night."),
}
QUERIES = {"q1": "calcium for strong bones", "q2": "lowering cholesterol", "q3": "caffeine in tea", "q4": "sleep hours"}
QRELS = {"dev": [("q1", "d1", 2), ("q1", "d5", 1), ("q2", "d2", 1)], "test": [("q3", "d3", 1), ("q4", "d6", 1)]}


def test_every_runnable_block_names_what_runs_it() -> None:
    blocks = [b for b in readme_blocks() if b.language in RUNNABLE]
    assert blocks, f"{README}: no code blocks found"
    unmarked = [b.line for b in blocks if b.marker not in MARKERS]
    assert not unmarked, f"README.md blocks at lines {unmarked} lack a '<!-- exercised-by: ... -->' marker"
    unknown = [b.line for b in readme_blocks() if b.language not in (*RUNNABLE, "")]
    assert not unknown, f"README.md blocks at lines {unknown}: unexpected language (bash, python or none)"


def test_setup_block_is_what_ci_runs() -> None:
    (block,) = blocks_for("ci")
    assert block.commands() == ["./dev.sh demo", "./dev.sh test"]
    assert readme_blocks()[0] == block, "the README starts with the two set-up commands"
    assert "./dev.sh test" in (ROOT / ".ci" / "run").read_text()
    dev = (ROOT / "dev.sh").read_text()
    run_tests = dev[dev.index("run_tests() {") :]
    assert '"$ROOT/dev.sh" demo' in run_tests and "tests/smoke_wheel.py" in run_tests


def test_smoke_blocks_cover_the_pip_product() -> None:
    (install,) = blocks_for("smoke-install")
    assert any("maturin build --release" in c for c in install.commands())
    (quickstart,) = blocks_for("smoke")
    text = " ".join(quickstart.commands())
    for needed in (
        "lrt-rerank --version",
        "lrt-rerank eval --dataset ../shared/data/msmarco-sample",
        "lrt-rerank serve",
        "localhost:8000/health",
        "localhost:8000/v1/rerank",
        "lrt-rerank opensearch up",
        "lrt-rerank opensearch status",
        "lrt-rerank opensearch down",
    ):
        assert needed in text, needed


@pytest.mark.parametrize("block", blocks_for("test_readme", "python"), ids=lambda b: f"line{b.line}")
def test_python_block_runs(block: Block) -> None:
    namespace: dict[str, object] = {}
    exec(compile(block.text, f"{README}:{block.line}", "exec"), namespace)  # noqa: S102 (the README's own code)
    logits, probabilities, ranked = namespace["logits"], namespace["probabilities"], namespace["ranked"]
    assert len(logits) == 2 and all(0.0 <= p <= 1.0 for p in probabilities)  # type: ignore[arg-type]
    assert ranked == [(0, pytest.approx(float(max(logits))))]  # the vitamin D passage wins
    assert namespace["vectors"].shape == (2, 384)  # type: ignore[attr-defined]
    assert [doc for doc, _ in namespace["fused"]] == ["d2", "d1", "d3"]  # type: ignore[attr-defined]


# ------------------------------------------------------------------------- shell commands
@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """README placeholders -> paths of small real stand-ins."""
    if os.environ.get("LRT_REQUIRE_TRAIN") != "1":  # CI sets it: there a missing train extra fails
        pytest.importorskip("transformers", reason="the snapshot stand-in is saved by transformers (train extra)")
    from lrt_rerank.models.store import minilm_source_dir
    from transformers import AutoTokenizer, BertForSequenceClassification

    root = tmp_path_factory.mktemp("readme")
    data = root / "my-beir-data"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, x) in DOCS.items())
    )
    (data / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in QUERIES.items()))
    for split, rows in QRELS.items():
        lines = ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t{g}" for q, d, g in rows)]
        (data / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")

    snapshot = root / "ms-marco-MiniLM-L-6-v2"
    source = minilm_source_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model = BertForSequenceClassification.from_pretrained(str(source), num_labels=1)
    _fit_head(model, tokenizer)
    model.save_pretrained(str(snapshot))
    tokenizer.save_pretrained(str(snapshot))
    return {
        "~/models/ms-marco-MiniLM-L-6-v2": str(snapshot),
        "my-beir-data": str(data),
        "models/msmarco-minilm": str(root / "models" / "msmarco-minilm"),
    }


def _fit_head(model: Any, tokenizer: Any) -> None:
    """Fit the classifier head on these judgments, so that the stand-in ranks like a trained
    cross-encoder would (a random head can rank backwards, which `models calibrate` refuses)."""
    import torch

    relevant = {(q, d) for rows in QRELS.values() for q, d, _ in rows}
    pairs = [(q, d) for q in QUERIES for d in DOCS]
    batch = tokenizer([QUERIES[q] for q, _ in pairs], [" ".join(DOCS[d]) for _, d in pairs], padding=True, return_tensors="pt")
    labels = torch.tensor([[1.0 if pair in relevant else 0.0] for pair in pairs])
    model.eval()
    with torch.no_grad():
        pooled = model.bert(**batch).pooler_output
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.classifier.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model.classifier(pooled), labels)
        loss.backward()
        optimizer.step()


def _argv(command: str, stand_ins: dict[str, str]) -> list[str]:
    words = shlex.split(command)
    assert words[0] == "lrt-rerank", f"README test_readme blocks hold lrt-rerank commands only: {command}"
    return [stand_ins.get(word, word) for word in words[1:]]


def _serve(argv: list[str], tmp_path: Path) -> None:
    """Start `serve` as written (minus the port: a free one is used), check it answers, stop it."""
    args = argv[1:]
    if "--port" in args:
        at = args.index("--port")
        del args[at : at + 2]
    redis: RedisServer | None = None
    if "--redis-url" in args:
        redis = RedisServer(tmp_path / "redis.log")
        redis.start()
        args[args.index("--redis-url") + 1] = redis.url
    key = None
    if "--api-key-file" in args:  # the README's key file, made here
        at = args.index("--api-key-file") + 1
        key = "readme-key-1f3a"
        args[at] = key_file(tmp_path, key)
    server = ServeProcess(args, tmp_path / "serve.log")
    try:
        server.wait_ready()
        headers = {"authorization": f"Bearer {key}"} if key else {}
        body = {"query": "calcium for bones", "documents": ["Milk has calcium.", "Tea has caffeine."]}
        # with --workers N, /health answers from a worker that is ready; another may still load its model (503)
        deadline = time.monotonic() + 300
        while (response := httpx.post(server.url + "/v1/rerank", json=body, headers=headers, timeout=60)).status_code == 503:
            assert time.monotonic() < deadline, f"a worker still answers 503 after 300 s: {response.text}\n{server.log_tail()}"
            time.sleep(0.2)
        assert response.status_code == 200, response.text
        assert sorted(r["index"] for r in response.json()["results"]) == [0, 1]
        if key:
            assert httpx.post(server.url + "/v1/rerank", json=body, timeout=60).status_code == 401
        if redis is not None:
            assert redis.client().dbsize() >= 2  # the shared tier holds the scores
    finally:
        server.stop()
        if redis is not None:
            redis.stop()


@pytest.mark.parametrize("block", blocks_for("test_readme"), ids=lambda b: f"line{b.line}")
def test_shell_block_runs(
    block: Block, stand_ins: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The block's commands in order (each may use what the one before made)."""
    for command in block.commands():
        argv = _argv(command, stand_ins)
        if argv[0] == "serve":
            _serve(argv, tmp_path)
            continue
        if argv[0] == "eval" and "../shared/data/" in command:
            argv += ["--max-queries", "20"]  # the whole split is the figure's job, not the test's
        capsys.readouterr()
        assert main(argv) == 0, command
        out = capsys.readouterr().out
        if argv[0] == "eval" and "--json" in argv:
            records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            assert records and all(0.0 <= r["MRR@10"] <= 1.0 for r in records), out
