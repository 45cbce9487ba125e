"""Property-based fuzzing (hypothesis) of the in-process API: CrossEncoder.score/relevance,
BiEncoder.embed, rrf, ScoreCache and BEIR loading.

Inputs: arbitrary Unicode (controls, NUL, combining marks, right-to-left text, emoji), lone
surrogates (a Python str can hold them; UTF-8 cannot), empty and huge strings, duplicates, 0–1000
passages, NaN/inf and out-of-range numbers, wrong types. Every call gives a result that meets its
invariants or raises a documented exception (ValueError, TypeError, DatasetError); never a crash.

Settings come from the "lrt" profile (tests/conftest.py): failing examples are kept in
tests/.hypothesis and replayed first. Each test has a small max_examples and a fixed seed; @settings
goes above @seed, because @seed alone switches the example database off.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, seed, settings
from hypothesis import strategies as st
from fuzz_strategies import AWKWARD, SEED, SURROGATES, TEXT, TOLERANCE, with_surrogate

from lrt_rerank import BiEncoder, CrossEncoder, ScoreCache, rrf
from lrt_rerank.datasets import DatasetError, load_dataset


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE)


@pytest.fixture(scope="module")
def ce(small_cross_encoder_dir: Path) -> CrossEncoder:
    return CrossEncoder.load(small_cross_encoder_dir, threads=2, batch_size=4)


@pytest.fixture(scope="module")
def cached_ce(small_cross_encoder_dir: Path) -> CrossEncoder:
    return CrossEncoder.load(small_cross_encoder_dir, threads=2, batch_size=4, cache=ScoreCache(capacity=10_000))


@pytest.fixture(scope="module")
def be(small_bi_encoder_dir: Path) -> BiEncoder:
    return BiEncoder.load(small_bi_encoder_dir, threads=2, batch_size=4)


# --- CrossEncoder -------------------------------------------------------------------------------


@settings(max_examples=40)
@seed(SEED)
@given(query=TEXT, passages=st.lists(TEXT, max_size=12))
@example(query="", passages=[])
@example(query="", passages=["", "", ""])
@example(query="word " * 20_000, passages=["short", "word " * 20_000, ""])  # the query alone exceeds 64 tokens
@example(query="q", passages=AWKWARD)
def test_cross_encoder_scores_are_finite_in_input_order(
    ce: CrossEncoder, cached_ce: CrossEncoder, query: str, passages: list[str]
) -> None:
    scores = ce.score(query, passages)
    assert scores.dtype == np.float32 and scores.shape == (len(passages),)
    assert np.isfinite(scores).all()
    # Input order: the same numbers scoring the passages one by one, and in reverse order.
    assert_close(scores[:4], np.array([ce.score(query, [p])[0] for p in passages[:4]]))
    assert_close(scores, ce.score(query, passages[::-1])[::-1])
    # Identical passages score alike wherever the batching put them.
    first = {p: scores[i] for i, p in reversed(list(enumerate(passages)))}
    assert_close(scores, np.array([first[p] for p in passages]))
    # relevance: sigmoid(a * score + b) with the calibration in use, in [0, 1].
    relevance = ce.relevance(query, passages)
    assert relevance.shape == (len(passages),) and ((relevance >= 0) & (relevance <= 1)).all()
    a, b = ce.calibration.a, ce.calibration.b
    np.testing.assert_allclose(relevance, 1 / (1 + np.exp(-(a * scores.astype(np.float64) + b))), rtol=1e-6, atol=1e-12)
    # With a cache: the first call fills it, the second is all hits with identical scores.
    cache = cached_ce.cache
    assert cache is not None
    fresh = cached_ce.score(query, passages)
    hits = cache.hits
    again = cached_ce.score(query, passages)
    assert cache.hits == hits + len(passages)
    assert again.tobytes() == fresh.tobytes()
    assert_close(fresh, scores)


@settings(max_examples=6)
@seed(SEED)
@given(
    query=st.text(max_size=20),
    pool=st.lists(st.text(max_size=40) | st.sampled_from(AWKWARD), min_size=1, max_size=25),
    n=st.integers(0, 1000),
)
@example(query="q", pool=["a passage", "another one"], n=1000)
def test_cross_encoder_many_duplicate_passages(ce: CrossEncoder, query: str, pool: list[str], n: int) -> None:
    """Up to 1,000 passages cycling through a small pool: each scores like its pool entry."""
    passages = [pool[i % len(pool)] for i in range(n)]
    scores = ce.score(query, passages)
    assert scores.shape == (n,) and np.isfinite(scores).all()
    alone = ce.score(query, pool)
    assert_close(scores, alone[np.arange(n) % len(pool)])


@settings(max_examples=30)
@seed(SEED)
@given(
    query=TEXT | with_surrogate(),
    passages=st.lists(TEXT, max_size=5),
    bad=with_surrogate(),
    at=st.integers(0, 5),
    in_query=st.booleans(),
)
@example(query="q", passages=[], bad="\ud800", at=0, in_query=False)
@example(query="\udfff", passages=["p"], bad="x\udc80y", at=0, in_query=True)
def test_lone_surrogates_are_a_clear_value_error(
    ce: CrossEncoder, be: BiEncoder, query: str, passages: list[str], bad: str, at: int, in_query: bool
) -> None:
    if in_query:
        query = bad
    else:
        passages = [*passages[:at], bad, *passages[at:]]
    with pytest.raises(ValueError, match=r"(query|passages\[\d+\]) is not valid Unicode text: lone surrogate"):
        ce.score(query, passages)
    with pytest.raises(ValueError, match="lone surrogate"):
        ce.relevance(query, passages)
    with pytest.raises(ValueError, match=r"texts\[\d+\] is not valid Unicode text"):
        be.embed([*passages, bad])
    # The core's own entry points refuse them too (UnicodeEncodeError is a ValueError).
    with pytest.raises(ValueError, match="surrogates not allowed"):
        ScoreCache(capacity=4).get_many("m", bad, ["p"])
    with pytest.raises(ValueError, match="surrogates not allowed"):
        rrf([["a", bad]])


JUNK = st.one_of(
    st.none(), st.integers(), st.floats(), st.binary(max_size=5), st.lists(st.text(max_size=3), max_size=2)
)


@settings(max_examples=30)
@seed(SEED)
@given(query=TEXT | JUNK, passages=st.lists(TEXT | JUNK, max_size=5) | JUNK | TEXT)
@example(query="", passages=None)  # found by this test: "'NoneType' object is not iterable"
@example(query="", passages=b"ab")
def test_wrong_argument_types_are_type_errors(ce: CrossEncoder, query: Any, passages: Any) -> None:
    valid = isinstance(query, str) and isinstance(passages, list) and all(isinstance(p, str) for p in passages)
    if valid:
        assert ce.score(query, passages).shape == (len(passages),)
    else:
        with pytest.raises(TypeError, match="must be a"):
            ce.score(query, passages)


# --- BiEncoder ----------------------------------------------------------------------------------


@settings(max_examples=30)
@seed(SEED)
@given(texts=st.lists(TEXT, max_size=12))
@example(texts=[])
@example(texts=AWKWARD)
def test_bi_encoder_embeddings_are_unit_rows_in_input_order(be: BiEncoder, texts: list[str]) -> None:
    out = be.embed(texts)
    assert out.dtype == np.float32 and out.shape == (len(texts), be.dim)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert_close(out[:4], np.array([be.embed([t])[0] for t in texts[:4]]).reshape(-1, be.dim))
    assert_close(out, be.embed(texts[::-1])[::-1])


# --- rrf ----------------------------------------------------------------------------------------

IDS = st.sampled_from(["a", "b", "c", "d", "e", "", " ", "日本", "a\x00", "\u0301"]) | st.text(max_size=3)
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1.0, 60.0, 1e-300, 1e300])


def rrf_by_definition(
    runs: list[list[str]], k: float, weights: list[float] | None, top_k: int | None
) -> list[tuple[str, float]]:
    """score(d) = Σ_r w_r / (k + rank_r(d)), rank from 1, a duplicate counting once at its best rank;
    ties by best rank, then the run that gave it, then the id (code point order)."""
    score: dict[str, float] = {}
    best: dict[str, tuple[int, int]] = {}
    for r, run in enumerate(runs):
        w = 1.0 if weights is None else weights[r]
        seen: set[str] = set()
        for pos, doc in enumerate(run):
            if doc in seen:
                continue
            seen.add(doc)
            score[doc] = score.get(doc, 0.0) + w / (k + (pos + 1))
            best[doc] = min(best.get(doc, (pos + 1, r)), (pos + 1, r))
    order = sorted(score, key=lambda d: (-score[d], *best[d], d))
    return [(d, score[d]) for d in order][: len(order) if top_k is None else top_k]


@settings(max_examples=150)
@seed(SEED)
@given(
    runs=st.lists(st.lists(IDS, max_size=12), max_size=5),
    k=FLOATS | st.integers(0, 100).map(float),
    weights=st.none() | st.lists(FLOATS | st.sampled_from([0.5, 2.0]), max_size=6),
    top_k=st.none() | st.integers(-3, 20),
)
@example(runs=[["d1", "d2"], ["d2", "d3"]], k=60.0, weights=None, top_k=None)
@example(runs=[["x", "a"], ["b", "a"]], k=0.0, weights=None, top_k=None)  # a three-way tie at 1.0
@example(runs=[["a"]], k=60.0, weights=None, top_k=-1)  # was an OverflowError from the core, now a ValueError
def test_rrf_agrees_with_its_definition(
    runs: list[list[str]], k: float, weights: list[float] | None, top_k: int | None
) -> None:
    valid = (
        math.isfinite(k)
        and k >= 0
        and (weights is None or (len(weights) == len(runs) and all(math.isfinite(w) and w >= 0 for w in weights)))
        and (top_k is None or top_k >= 0)
    )
    if not valid:
        with pytest.raises(ValueError, match="rrf: "):
            rrf(runs, k=k, weights=weights, top_k=top_k)
        return
    got = rrf(runs, k=k, weights=weights, top_k=top_k)
    assert got == rrf_by_definition(runs, k, weights, top_k)
    assert all(math.isfinite(s) or s == math.inf for _, s in got)


# --- ScoreCache ---------------------------------------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["put", "get"]),
        st.sampled_from(["q1", "q2", "", "日本"]),
        st.lists(st.sampled_from(["p1", "p2", "p3", "p4", "", "\x00", "🎉"]), max_size=6),
        st.lists(FLOATS, min_size=6, max_size=6),
    ),
    max_size=30,
)


def float32(value: float) -> np.float32:
    """The float32 a cache stores for a Python float (beyond float32's range: an infinity, as in the core)."""
    with np.errstate(over="ignore"):
        return np.float32(value)


@settings(max_examples=100)
@seed(SEED)
@given(
    capacity=st.integers(-2, 6),
    fingerprints=st.lists(st.sampled_from(["m1", "m2"]), min_size=30, max_size=30),
    ops=OPS,
)
@example(capacity=-1, fingerprints=["m1"] * 30, ops=[])  # was an OverflowError from the core, now a ValueError
@example(
    capacity=1,
    fingerprints=["m1"] * 30,
    ops=[("put", "q1", ["p1"], [float("nan")] * 6), ("get", "q1", ["p1"], [0.0] * 6)],
)
def test_score_cache_is_an_lru_with_exact_hits(capacity: int, fingerprints: list[str], ops: list) -> None:
    if capacity < 1:
        with pytest.raises(ValueError, match="capacity must be at least 1"):
            ScoreCache(capacity=capacity)
        return
    cache = ScoreCache(capacity=capacity)
    model: OrderedDict[tuple[str, str, str], np.float32] = OrderedDict()
    hits = misses = evictions = 0
    for (op, query, passages, values), fp in zip(ops, fingerprints, strict=False):
        keys = [(fp, query, p) for p in passages]
        if op == "put":
            scores = values[: len(passages)]
            cache.put_many(fp, query, passages, scores)
            for key, value in zip(keys, scores, strict=True):
                if key not in model and len(model) == capacity:
                    model.popitem(last=False)
                    evictions += 1
                model[key] = float32(value)
                model.move_to_end(key)
        else:
            got = cache.get_many(fp, query, passages)
            want: list[np.float32 | None] = []
            for key in keys:
                if key in model:
                    model.move_to_end(key)
                    hits += 1
                    want.append(model[key])
                else:
                    misses += 1
                    want.append(None)
            # A hit is the float32 that was stored, bit for bit (NaN and infinities included).
            assert [None if v is None else float32(v).tobytes() for v in got] == [
                None if v is None else v.tobytes() for v in want
            ]
        assert (cache.hits, cache.misses, cache.evictions, len(cache)) == (hits, misses, evictions, len(model))


# --- BEIR loading -------------------------------------------------------------------------------

ID_TEXT = st.text(
    st.characters(exclude_characters="\t\r\n", exclude_categories=["Zs", "Cc", "Cs"]), min_size=1, max_size=8
)


@st.composite
def beir_dataset(draw: st.DrawFn) -> dict[str, Any]:
    """A valid BEIR dataset as data: documents (id -> (title, text)), queries, qrels, file styles."""
    doc_ids = draw(st.lists(ID_TEXT, min_size=1, max_size=6, unique=True))
    body = st.text(max_size=40) | st.sampled_from(AWKWARD)
    docs = {}
    for doc_id in doc_ids:
        title, text = draw(st.tuples(body, body).filter(lambda tt: bool(tt[0].strip() or tt[1].strip())))
        docs[doc_id] = (title, text)
    query_ids = draw(st.lists(ID_TEXT, max_size=4, unique=True))
    queries = {q: draw(body) for q in query_ids}
    judged = st.tuples(st.sampled_from(query_ids), st.sampled_from(doc_ids)) if query_ids else st.nothing()
    pairs = draw(st.lists(judged, max_size=8, unique=True)) if query_ids else []
    qrels: dict[str, dict[str, int]] = {}
    for q, d in pairs:
        qrels.setdefault(q, {})[d] = draw(st.integers(-2, 3))
    return {
        "docs": docs,
        "queries": queries,
        "qrels": qrels,
        "newline": draw(st.sampled_from(["\n", "\r\n"])),
        "ascii": draw(st.booleans()),
        "blank_lines": draw(st.booleans()),
        "grade_style": draw(st.sampled_from(["{}", "{}.0", " {} "])),
    }


def write_beir(root: Path, data: dict[str, Any]) -> None:
    nl, blank = data["newline"], nl_blank(data)
    dump = lambda record: json.dumps(record, ensure_ascii=data["ascii"])  # noqa: E731
    (root / "qrels").mkdir(parents=True)
    corpus = [dump({"_id": i, "title": t, "text": x}) for i, (t, x) in data["docs"].items()]
    (root / "corpus.jsonl").write_text(blank.join(corpus) + nl, encoding="utf-8", newline="")
    queries = [dump({"_id": i, "text": t, "metadata": {}}) for i, t in data["queries"].items()]
    (root / "queries.jsonl").write_text(blank.join(queries) + nl, encoding="utf-8", newline="")
    lines = ["query-id\tcorpus-id\tscore"] + [
        f"{q}\t{d}\t{data['grade_style'].format(g)}" for q, judged in data["qrels"].items() for d, g in judged.items()
    ]
    (root / "qrels" / "test.tsv").write_text(nl.join(lines) + nl, encoding="utf-8", newline="")


def nl_blank(data: dict[str, Any]) -> str:
    return data["newline"] * (2 if data["blank_lines"] else 1)


@settings(max_examples=60)
@seed(SEED)
@given(data=beir_dataset())
def test_beir_files_round_trip(data: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write_beir(Path(tmp), data)
        ds = load_dataset(tmp, "test")
    assert {i: (d.title, d.text) for i, d in ds.corpus.items()} == data["docs"]
    assert ds.queries == data["queries"]
    assert ds.qrels == data["qrels"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | SURROGATES,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["_id", "title", "text", "x"]), children, max_size=4),
    max_leaves=8,
)
LINE = st.one_of(
    JSON_VALUES.map(lambda v: json.dumps(v, ensure_ascii=True)),  # NaN/Infinity literals and \\udXXX escapes included
    st.dictionaries(st.sampled_from(["_id", "title", "text"]), JSON_VALUES, max_size=3).map(json.dumps),
    st.text(max_size=30),
    st.sampled_from(["[" * 100_000, '{"_id": "1", "text": "\\ud800"}', '{"_id": 1.5, "text": "x"}', "\ufeff{}", "{}"]),
)
QRELS_FIELD = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "1.5", "2.0", "-0", "٣", "9" * 5000, "1_0", "0x1"]),
)
RAW_BYTES = st.binary(max_size=40) | st.sampled_from([b"\xff\xfe", b"\xed\xa0\x80", b'{"_id": "a", "text": "\xc3"}'])


@settings(max_examples=80)
@seed(SEED)
@given(
    corpus=st.lists(LINE, max_size=4),
    queries=st.lists(LINE, max_size=4),
    qrels=st.lists(st.lists(QRELS_FIELD, min_size=1, max_size=4).map("\t".join), max_size=4),
    garbage=st.none() | st.tuples(st.sampled_from(["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"]), RAW_BYTES),
)
@example(corpus=["[" * 100_000], queries=[], qrels=[], garbage=None)  # nested too deeply for json
@example(corpus=['{"_id": "1", "text": "\\ud800"}'], queries=[], qrels=[], garbage=None)
def test_beir_garbage_is_a_dataset_error(
    corpus: list[str], queries: list[str], qrels: list[str], garbage: tuple[str, bytes] | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "qrels").mkdir()
        (root / "corpus.jsonl").write_text("\n".join(corpus), encoding="utf-8")
        (root / "queries.jsonl").write_text("\n".join(queries), encoding="utf-8")
        (root / "qrels" / "test.tsv").write_text("\n".join(qrels), encoding="utf-8")
        if garbage is not None:
            with (root / garbage[0]).open("ab") as fh:
                fh.write(b"\n" + garbage[1])
        try:
            ds = load_dataset(root, "test")
        except DatasetError as err:
            assert str(root) in str(err)
            return
    # What loads is clean: encodable text, integer grades, judgments only of known ids.
    for doc in ds.corpus.values():
        (doc.title + doc.text).encode("utf-8")
    for text in ds.queries.values():
        text.encode("utf-8")
    for q, judged in ds.qrels.items():
        assert q in ds.queries and set(judged) <= set(ds.corpus)
        assert all(type(g) is int for g in judged.values())
