"""Late interaction: token embeddings stored with an index (fp16, int8) and the document-embedding cache
(in-process LRU in MiB, the Redis tier started by the test setup, corrupt entries).

The model is the tiny colbert-ai checkpoint of tests/test_colbert.py (torch only, no PyLate subprocess).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from lrt_rerank.late import ColBERT
from lrt_rerank.late.cache import DocumentCache, RedisDocumentTier, cache_key, pack, unpack
from lrt_rerank.late.attach import attach_store
from lrt_rerank.late.model import text_hash
from lrt_rerank.late.store import StoredEmbeddings, write_store
from lrt_rerank.rerank.redis_tier import RedisSettings
from test_colbert import DOCUMENTS, QUERY, WORDS, imported_stanford_colbert

pytestmark = pytest.mark.train
QUERIES = [QUERY, "coffee and heart disease", "calcium intake in women", "statins trial"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return imported_stanford_colbert(tmp_path_factory.mktemp("colbert-storage"))


@pytest.fixture(scope="module")
def texts() -> list[str]:
    rng = random.Random(0)
    salad = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) + "." for _ in range(40)]
    return DOCUMENTS + salad


def spread_close(a: np.ndarray, b: np.ndarray, rtol: float) -> None:
    assert np.max(np.abs(a - b)) <= rtol * (float(np.ptp(b)) or 1.0), (a, b)


def test_stored_fp16_scores_equal_on_the_fly_without_encoding(model_dir: Path, texts: list[str], tmp_path: Path) -> None:
    fresh = ColBERT.load(model_dir)
    manifest = write_store(fresh, texts, tmp_path, dtype="float16", batch_size=16)
    assert manifest["documents"] == len(texts) and manifest["bytes_per_document"] > 0
    stored = ColBERT.load(model_dir)
    assert attach_store(stored, tmp_path) and len(stored.store or []) == len(set(texts))
    for query in QUERIES:
        # float16 rows: within fp16 rounding of the float32 scores, the same order
        spread_close(stored.score(query, texts), fresh.score(query, texts), 2e-3)
    assert stored.documents_encoded == 0  # every candidate came from the store
    stored.score(QUERY, ["a text that was never indexed"])
    assert stored.documents_encoded == 1


def test_int8_storage_keeps_the_ranking(model_dir: Path, texts: list[str], tmp_path: Path) -> None:
    fresh = ColBERT.load(model_dir)
    manifest = write_store(fresh, texts, tmp_path, dtype="int8")
    fp16 = write_store(fresh, texts, tmp_path / "fp16", dtype="float16")
    assert manifest["bytes_per_document"] < fp16["bytes_per_document"]
    stored = ColBERT.load(model_dir)
    attach_store(stored, tmp_path)
    for query in QUERIES:
        rho = spearmanr(stored.score(query, texts), fresh.score(query, texts)).statistic
        assert rho >= 0.99, (query, rho)
    assert stored.documents_encoded == 0


def reference_maxsim(query: np.ndarray, docs: list[np.ndarray]) -> np.ndarray:
    """numpy float64 MaxSim: Σ over query tokens of the best dot product with a document token."""
    q = query.astype(np.float64)
    return np.array([(q @ d.astype(np.float64).T).max(axis=1).sum() if len(d) else 0.0 for d in docs])


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_stored_rows_are_scored_in_rust_as_numpy_scores_them(model_dir: Path, texts: list[str], tmp_path: Path, dtype: str) -> None:
    from lrt_rerank import _core

    model = ColBERT.load(model_dir, threads=2)
    write_store(model, texts, tmp_path, dtype=dtype)
    attach_store(model, tmp_path)
    store = model.store
    assert store is not None
    # candidates in another order than stored, one repeated, one not stored (encoded) in the middle
    candidates = [texts[7], texts[0], "never indexed text", *texts[20:], texts[7]]
    for query in QUERIES:
        q = model.encode_query(query)
        rows = [np.asarray(store.tokens[a:b], np.float32) for a, b in (store.spans([text_hash(t)])[0] or (0, 0) for t in candidates)]
        if store.scale is not None:
            rows = [r * store.scale for r in rows]
        rows[2] = model.encode_documents([candidates[2]]).data
        want = reference_maxsim(q, rows)
        got = model.score(query, candidates)
        assert got.dtype == np.float32 and got.shape == (len(candidates),)
        assert np.max(np.abs(got - want)) <= 1e-5 * float(np.ptp(want)), (got, want)
    # bad input is a clear ValueError, not a panic
    q = model.encode_query(QUERY)
    n = store.tokens.shape[0]
    with pytest.raises(ValueError, match=f"document 0: rows 0..{n + 1} do not fit the {n} stored rows"):
        store.maxsim(q, [(0, n + 1)])
    with pytest.raises(ValueError, match="dim"):
        _core.maxsim_stored(q[:, :4].copy(), store._rows_view, [(0, 1)], scale=store.scale)
    bad_scale = None if dtype == "int8" else np.ones(model.dim, np.float32)
    with pytest.raises(ValueError, match="scale"):
        _core.maxsim_stored(q, store._rows_view, [(0, 1)], scale=bad_scale)
    with pytest.raises(ValueError, match="uint16"):
        _core.maxsim_stored(q, np.zeros((3, model.dim), np.float64), [(0, 1)])


def test_maxsim_threads_split_documents_without_changing_scores(model_dir: Path, texts: list[str]) -> None:
    from lrt_rerank import _core

    model = ColBERT.load(model_dir)
    docs = model.encode_documents(texts * 20)  # enough tokens to be split over the threads
    q = model.encode_query(QUERY)
    one = _core.maxsim(q, docs.data, docs.lengths, threads=1)
    want = reference_maxsim(q, docs.matrices())
    assert np.max(np.abs(one - want)) <= 1e-5 * float(np.ptp(want))
    for threads in (2, 3, 64):
        np.testing.assert_allclose(_core.maxsim(q, docs.data, docs.lengths, threads=threads), one, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="lengths say"):
        _core.maxsim(q, docs.data, [*docs.lengths, 1])


def test_a_store_of_another_model_is_refused(model_dir: Path, texts: list[str], tmp_path: Path) -> None:
    from lrt_rerank import ModelError

    model = ColBERT.load(model_dir)
    write_store(model, texts[:3], tmp_path)
    manifest = tmp_path / "late-interaction" / "manifest.json"
    manifest.write_text(manifest.read_text().replace(model.sha256, "0" * 64))
    with pytest.raises(ModelError, match=r"manifest\.json: made by model .*rebuild the index with --late-interaction"):
        StoredEmbeddings.open(tmp_path, model)


def test_packed_entries_round_trip_and_corrupt_ones_are_misses() -> None:
    m = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    np.testing.assert_array_equal(unpack(pack(m)), m.astype(np.float16).astype(np.float32))
    blob = pack(m)
    for bad in (None, b"", blob[:-1], b"XXXX" + blob[4:], blob + b"\0", pack(np.full((1, 8), np.inf, np.float32))):
        assert unpack(bad) is None


def test_the_lru_is_bounded_in_mib(model_dir: Path, texts: list[str]) -> None:
    cache = DocumentCache(max_mib=2048 / 2**20)  # 2 KiB: a handful of tiny documents
    model = ColBERT.load(model_dir, document_cache=cache)
    model.score(QUERY, texts)
    assert 0 < cache.bytes <= 2048 and cache.evictions > 0 and len(cache) < len(set(texts))
    before = model.documents_encoded
    model.score(QUERY, texts[-2:])  # the most recent entries are still there
    assert model.documents_encoded == before and cache.stats()["hits"] >= 2
    with pytest.raises(ValueError, match="max_mib must be > 0"):
        DocumentCache(max_mib=0)


def test_cached_documents_score_as_stored_and_cost_no_encoding(model_dir: Path, texts: list[str]) -> None:
    cache = DocumentCache(max_mib=64)
    model = ColBERT.load(model_dir, document_cache=cache)
    first = model.score(QUERY, texts)
    encoded = model.documents_encoded
    second = model.score(QUERY, texts)
    assert model.documents_encoded == encoded  # repeated documents cost no encoding
    spread_close(second, first, 2e-3)
    assert cache.stats()["misses"] == len(set(texts)) and cache.stats()["hits"] == len(texts)


def test_the_redis_tier_round_trip_and_a_corrupt_entry(model_dir: Path, texts: list[str], redis_server) -> None:  # type: ignore[no-untyped-def]
    settings = RedisSettings(url=redis_server.url)
    writer = ColBERT.load(model_dir, document_cache=DocumentCache(64, shared=RedisDocumentTier(settings)))
    writer.score(QUERY, texts)
    reader_cache = DocumentCache(64, shared=RedisDocumentTier(settings))  # another worker: empty in-process tier
    reader = ColBERT.load(model_dir, document_cache=reader_cache)
    spread_close(reader.score(QUERY, texts), writer.score(QUERY, texts), 1e-6)
    assert reader.documents_encoded == 0 and reader_cache.stats()["shared_hits"] == len(set(texts))
    key = cache_key(reader.fingerprint, text_hash(texts[0]))
    redis_server.client().set(key, b"LRT1 garbage")
    fresh = ColBERT.load(model_dir, document_cache=DocumentCache(64, shared=RedisDocumentTier(settings)))
    fresh.score(QUERY, texts[:1])
    assert fresh.documents_encoded == 1  # the corrupt entry was a miss ...
    assert unpack(redis_server.client().get(key)) is not None  # ... and was overwritten
