"""Property-based fuzzing (hypothesis) of a real `lrt-rerank serve` process: `/v1/rerank` and `/rerank`
bodies, valid and broken (wrong JSON types, NaN/Infinity, out-of-range numbers, lone surrogate escapes,
too many documents, bytes that are not JSON or not UTF-8).

Invariants: a valid body gets 200 and the scores of the in-process CrossEncoder on the same model; a
broken one a 4xx with a JSON `detail`; never a 5xx; the process stays up and its memory bounded.
The server is tests/service_fixtures.py's `small_rerank_server` (small FP32 model, session Redis).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fuzz_strategies import AWKWARD, SEED, TOLERANCE, texts, with_surrogate
from hypothesis import example, given, seed, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from tokenizers import Tokenizer
from service_fixtures import ServeProcess, metric

from lrt_rerank import CrossEncoder

pytestmark = pytest.mark.integration

DOC = texts(max_size=3_000)  # a few of them stay well under the 1 MiB body limit
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**20, max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.sampled_from(["text", "title", "x"]), st.integers(), max_size=2),
)


@pytest.fixture(scope="module")
def http(small_rerank_server: ServeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=small_rerank_server.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def ce(small_cross_encoder_dir: Path) -> CrossEncoder:
    """The served model in-process, batched like the server (two sessions, batches of 16)."""
    return CrossEncoder.load(small_cross_encoder_dir, threads=2)


def post(http: httpx.Client, route: str, body: Any) -> httpx.Response:
    # allow_nan: NaN and Infinity go on the wire as the literals Python's json module reads back
    return http.post(route, content=json.dumps(body, allow_nan=True), headers={"content-type": "application/json"})


@st.composite
def cohere_body(draw: st.DrawFn) -> dict[str, Any]:
    docs = draw(st.lists(DOC, max_size=30))
    body: dict[str, Any] = {
        "query": draw(texts(max_size=2_000)),
        "documents": [{"text": d, "id": i} if draw(st.booleans()) else d for i, d in enumerate(docs)],
    }
    for field, values in (
        ("top_n", st.integers(1, 40)),
        ("return_documents", st.booleans()),
        ("raw_scores", st.booleans()),
        ("first_stage_order", st.booleans()),
        ("model", st.text(max_size=10)),
    ):
        if draw(st.booleans()):
            body[field] = draw(values)
    return body


@st.composite
def tei_body(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"query": draw(texts(max_size=2_000)), "texts": draw(st.lists(DOC, max_size=30))}
    for field in ("raw_scores", "return_text", "truncate", "first_stage_order"):
        if draw(st.booleans()):
            body[field] = draw(st.booleans())
    return body


def check_ranking(
    ce: CrossEncoder, query: str, texts_sent: list[str], results: list[dict[str, Any]], score_key: str, raw: bool,
    top_n: int | None,
) -> None:
    """Results are a best-first selection of the documents with the in-process model's scores."""
    indices = [r["index"] for r in results]
    assert len(indices) == len(set(indices)) == min(top_n or len(texts_sent), len(texts_sent))
    assert all(0 <= i < len(texts_sent) for i in indices)
    scores = np.array([r[score_key] for r in results], dtype=np.float64)
    assert np.isfinite(scores).all()
    logits = ce.score(query, texts_sent)
    if raw:
        np.testing.assert_allclose(scores, logits[indices], rtol=0, atol=TOLERANCE)
        assert (np.diff(scores) <= 0).all()
    else:
        assert ((scores >= 0) & (scores <= 1)).all()
        np.testing.assert_allclose(scores, ce.calibration.apply(logits[indices]), rtol=0, atol=TOLERANCE)
    if len(indices) < len(texts_sent):  # top_n: none left out scores above the last one kept
        rest = np.delete(logits, indices)
        assert rest.max() <= logits[indices].min() + TOLERANCE


@settings(max_examples=25)
@seed(SEED)
@given(body=cohere_body())
@example(body={"query": "", "documents": []})
@example(body={"query": "q", "documents": AWKWARD, "raw_scores": True, "return_documents": True})
@example(body={"query": "word " * 5_000, "documents": ["a", "a", {"text": "a"}], "top_n": 2, "raw_scores": True})
def test_valid_cohere_bodies_get_the_models_scores(
    http: httpx.Client, ce: CrossEncoder, small_rerank_server: ServeProcess, body: dict[str, Any]
) -> None:
    r = post(http, "/v1/rerank", body)
    assert r.status_code == 200, f"{r.status_code} {r.text[:500]}\n{small_rerank_server.log_tail()}"
    results = r.json()["results"]
    texts_sent = [d if isinstance(d, str) else d["text"] for d in body["documents"]]
    raw, top_n = body.get("raw_scores", False), body.get("top_n")
    check_ranking(ce, body["query"], texts_sent, results, "relevance_score", raw, top_n)
    for result in results:
        assert ("document" in result) == body.get("return_documents", False)
        if "document" in result:
            assert result["document"] == {"text": texts_sent[result["index"]]}


@settings(max_examples=15)
@seed(SEED)
@given(body=tei_body())
@example(body={"query": "\x00", "texts": ["\u202e", "\u0301" * 300, ""], "raw_scores": True, "return_text": True})
@example(body={"query": "", "texts": ["word " * 1000, "short"], "truncate": False})
def test_valid_tei_bodies_get_the_models_scores(
    http: httpx.Client, ce: CrossEncoder, small_rerank_server: ServeProcess, body: dict[str, Any]
) -> None:
    r = post(http, "/rerank", body)
    if r.status_code == 413 and body.get("truncate") is False:
        # TEI's rule: a text that would not be read whole is refused; each one named must really not fit
        # (HF tokenizers: query + text + [CLS] [SEP] [SEP] over the model's max_length)
        named = re.search(r"indices ([0-9, .]+)\)", r.json()["detail"])
        assert named, r.text
        tok = Tokenizer.from_file(str(ce.model_dir / "tokenizer.json"))
        tok.no_truncation()
        q = len(tok.encode(body["query"], add_special_tokens=False).ids)
        for i in (int(x) for x in named.group(1).replace(".", "").split(",") if x.strip()):
            assert q + len(tok.encode(body["texts"][i], add_special_tokens=False).ids) + 3 > ce.max_length, i
        return
    assert r.status_code == 200, f"{r.status_code} {r.text[:500]}\n{small_rerank_server.log_tail()}"
    results = r.json()
    check_ranking(ce, body["query"], body["texts"], results, "score", body.get("raw_scores", False), None)
    for result in results:
        assert ("text" in result) == body.get("return_text", False)


@st.composite
def broken_body(draw: st.DrawFn) -> tuple[str, Any]:
    """(route, body): a valid body with one field replaced by something it may not hold, or a body of
    the wrong JSON type altogether."""
    route = draw(st.sampled_from(["/v1/rerank", "/rerank"]))
    body = dict(draw(cohere_body() if route == "/v1/rerank" else tei_body()))
    docs_field = "documents" if route == "/v1/rerank" else "texts"
    field = draw(st.sampled_from(["query", docs_field, "top_n", "raw_scores", "return_documents", "whole"]))
    if field == "whole":
        return route, draw(JUNK | st.lists(st.text(max_size=5), max_size=3))
    if field == docs_field:
        body[field] = draw(
            JUNK
            | st.lists(JUNK | DOC, min_size=1, max_size=5)
            | st.lists(with_surrogate(st.text(max_size=10)), min_size=1, max_size=3)
            | st.lists(st.builds(lambda t: {"text": t}, with_surrogate(st.text(max_size=10))), min_size=1, max_size=2)
            | st.just(["d"] * 1001)  # over --max-documents
        )
    elif field == "query":
        body[field] = draw(JUNK | with_surrogate(st.text(max_size=20)))
    else:
        body[field] = draw(JUNK | st.integers(-5, 0))
    return route, body


@settings(max_examples=60)
@seed(SEED)
@given(case=broken_body())
@example(case=("/v1/rerank", {"query": "\ud800", "documents": ["d"]}))  # a lone surrogate escape on the wire
@example(case=("/rerank", {"query": "q", "texts": ["ok", "x\udfffy"], "return_text": True}))
@example(case=("/v1/rerank", {"query": "q", "documents": ["d"], "top_n": math.nan}))
@example(case=("/v1/rerank", {"query": "q", "documents": ["d"], "top_n": math.inf}))
@example(case=("/v1/rerank", {"query": "q", "documents": ["d"], "top_n": 10**30}))
@example(case=("/v1/rerank", {"query": math.nan, "documents": [math.inf]}))
def test_broken_bodies_are_4xx_never_5xx(
    http: httpx.Client, small_rerank_server: ServeProcess, case: tuple[str, Any]
) -> None:
    route, body = case
    r = post(http, route, body)
    assert r.status_code in (200, 413, 422), f"{r.status_code} {r.text[:500]}\n{small_rerank_server.log_tail()}"
    answer = r.json()
    if r.status_code == 200:  # lax coercions ("5" for 5, 1 for true): still a well-formed ranking
        results = answer["results"] if route == "/v1/rerank" else answer
        key = "relevance_score" if route == "/v1/rerank" else "score"
        assert all(math.isfinite(x[key]) for x in results)
    else:
        assert "detail" in answer
    assert small_rerank_server.proc.poll() is None


RAW = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.sampled_from(
        [
            b"", b"{", b"[" * 100_000, b"\xff\xfe\x00", b'{"query": "\xc3", "documents": []}', b"NaN", b"null",
            b'{"query": "q", "documents": ["a"], "top_n": 1e400}', b'{"query": "q", "documents": ["\\ud800"]}',
            b'{"query": "q", "documents": ["a"]}' + b" " * 10 + b"trailing",
        ]
    ),
)


@settings(max_examples=40)
@seed(SEED)
@given(
    route=st.sampled_from(["/v1/rerank", "/rerank"]),
    raw=RAW,
    content_type=st.sampled_from(["application/json", "text/plain", None]),
)
def test_bodies_that_are_not_json_are_4xx(
    http: httpx.Client, small_rerank_server: ServeProcess, route: str, raw: bytes, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    r = http.post(route, content=raw, headers=headers)
    assert 400 <= r.status_code < 500, f"{r.status_code} {r.text[:500]}\n{small_rerank_server.log_tail()}"
    assert "detail" in r.json()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def test_memory_stays_bounded_over_large_requests(http: httpx.Client, small_rerank_server: ServeProcess) -> None:
    """Requests near the 1 MiB body limit: 500 documents of about 1,900 characters, 50 of them cut to
    64 tokens by the model, the others one long [UNK] word each (cheap to score, as large on the wire).
    After one to warm up, eight more distinct ones (new cache entries each time) grow the process by
    less than 3 MiB each, less than one body held as Python strings and pydantic objects (measured:
    about 1 MiB in all): retained requests or an unbounded buffer would not fit."""

    def big_request(i: int) -> None:
        docs = [
            f"request {i} document {j} " + ("vitamin d and bone health " * 70 if j < 50 else "x" * 1_850)
            for j in range(500)
        ]
        body = {"query": f"large request {i}", "documents": docs, "raw_scores": True}
        r = http.post("/v1/rerank", json=body)
        assert r.status_code == 200, f"{r.status_code} {r.text[:300]}\n{small_rerank_server.log_tail()}"
        assert len(r.json()["results"]) == 500

    pid = small_rerank_server.proc.pid
    big_request(0)
    before = rss_bytes(pid)
    for i in range(1, 9):
        big_request(i)
    growth = rss_bytes(pid) - before
    assert growth < 8 * 3 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 8 large requests"


def test_no_request_was_answered_5xx(http: httpx.Client) -> None:
    """Runs after the fuzz tests above (file order): the server's own count of rerank answers by status
    (/health answers 503 while the model loads; that is not counted here)."""
    text = http.get("/metrics").text
    statuses = {
        sample.labels["status"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "lrt_rerank_requests_total"
        and sample.labels["route"] in ("/v1/rerank", "/rerank")
        and sample.value > 0
    }
    assert statuses and not any(s.startswith("5") for s in statuses), statuses
    assert metric(text, "lrt_rerank_scoring_errors_total", error="InferenceError") == 0
