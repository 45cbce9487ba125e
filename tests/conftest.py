"""Shared fixtures: model directories built by the project's own converter, data paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LRT_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Property-based tests (tests/test_fuzz*.py): no per-example deadline (models run on a busy CI
# machine), failing examples kept in tests/.hypothesis (committed) and replayed first. Each test
# sets its own max_examples and a fixed seed (`@settings(...)` above `@seed(...)`: @seed alone turns
# the database off), so runs are reproducible.
settings.register_profile(
    "lrt",
    deadline=None,
    database=DirectoryBasedExampleDatabase(str(Path(__file__).resolve().parent / ".hypothesis")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("lrt")

pytest_plugins = ["service_fixtures", "opensearch_fixtures"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "nfcorpus" / "corpus.jsonl").is_file():
        pytest.fail(f"benchmark data not found at {SHARED_DATA} (set LRT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def bi_encoder_dir() -> Path:
    """The default dense model (bge-small-en-v1.5 INT8, CLS pooling)."""
    from lrt_rerank.models.resolve import default_model_dir

    return default_model_dir("bi-encoder")


@pytest.fixture(scope="session")
def minilm_bi_encoder_dir() -> Path:
    """all-MiniLM-L6-v2 converted by the project (mean pooling)."""
    from lrt_rerank.models.resolve import dense_model_dir

    return dense_model_dir("minilm")


@pytest.fixture(scope="session")
def minilm_cross_encoder_dir() -> Path:
    """The full 6-layer MiniLM-shaped cross-encoder (placeholder head)."""
    from lrt_rerank.models.store import PLACEHOLDER_CROSS_ENCODER_NAME, model_home
    from lrt_rerank.models.minilm import build_minilm_model

    path = model_home() / PLACEHOLDER_CROSS_ENCODER_NAME
    if not (path / "card.json").is_file():
        build_minilm_model(path, "cross-encoder")
    return path


@pytest.fixture(scope="session")
def small_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer cross-encoder at 64 tokens: fast enough for many-passage tests."""
    from lrt_rerank.models.minilm import build_minilm_model

    return build_minilm_model(tmp_path_factory.mktemp("models") / "ce-2l", "cross-encoder", num_layers=2, max_length=64)


@pytest.fixture(scope="session")
def small_bi_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer bi-encoder (mean pooling, normalised) at 32 tokens: fast enough for fuzzing."""
    from lrt_rerank.models.minilm import build_minilm_model

    return build_minilm_model(tmp_path_factory.mktemp("models") / "be-1l", "bi-encoder", num_layers=1, max_length=32)


@pytest.fixture(scope="session")
def nfcorpus_sample(shared_data: Path) -> tuple[list[str], list[str]]:
    """(queries, passages): 8 test queries and 60 real NFCorpus documents (title + text)."""
    docs: list[str] = []
    with open(shared_data / "nfcorpus" / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            docs.append(f"{d.get('title', '')} {d['text']}".strip())
            if len(docs) == 60:
                break
    queries: list[str] = []
    with open(shared_data / "nfcorpus" / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            queries.append(json.loads(line)["text"])
            if len(queries) == 8:
                break
    return queries, docs
