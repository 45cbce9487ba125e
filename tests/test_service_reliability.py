"""The rerank service under failure and load, against real `lrt-rerank serve` and `redis-server` processes:
scoring that fails inside a request (503 + Retry-After, counted, the process keeps serving), 16
concurrent clients under the scoring limit, corrupt values in the Redis tier, the Redis back-off.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from onnx_graphs import cross_encoder_reshaped_by
from service_fixtures import RedisServer, ServeProcess, metric, serving

from lrt_rerank import CrossEncoder
from lrt_rerank.models.store import file_sha256
from lrt_rerank.service.engine import RETRY_AFTER_S
from lrt_rerank.rerank.redis_tier import RedisScoreTier, RedisSettings
from lrt_rerank.rerank.tiers import tier_key

pytestmark = pytest.mark.integration

CE_TOKENS = 64  # small_cross_encoder_dir's max_length


def words(n: int) -> str:
    return " ".join(["word"] * n)


@pytest.fixture(scope="module")
def failing_server(tmp_path_factory: pytest.TempPathFactory, small_cross_encoder_dir: Path) -> Iterator[ServeProcess]:
    """A server whose model passes the load-time probe (one 64-token sequence) and fails in ONNX
    Runtime on other batches (tests/onnx_graphs.py: cross_encoder_reshaped_by)."""
    root = tmp_path_factory.mktemp("failing")
    model = cross_encoder_reshaped_by(small_cross_encoder_dir, root / "model", CE_TOKENS)
    with serving(["--model", str(model), "--threads", "1"], root / "serve.log") as server:
        yield server


def test_scoring_that_fails_is_503_with_retry_after(failing_server: ServeProcess) -> None:
    with httpx.Client(base_url=failing_server.url, timeout=60) as http:
        failures = [
            http.post("/v1/rerank", json={"query": "word", "documents": ["short"]}),  # Reshape fails
            http.post("/rerank", json={"query": "word", "texts": ["short", "also short"]}),
            # two 32-token pairs: ONNX Runtime runs, the output has one row for two pairs
            http.post("/v1/rerank", json={"query": "word", "documents": [words(CE_TOKENS // 2 - 4)] * 2}),
        ]
        for r in failures:
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == str(RETRY_AFTER_S)
            assert r.headers["content-type"] == "application/json"
            assert r.json() == {"detail": "scoring failed (InferenceError); retry later"}
        # The process is up and serves what the model can score: one pair cut to 64 tokens.
        assert failing_server.proc.poll() is None
        assert http.get("/health").json() == {"status": "ok"}
        ok = http.post("/v1/rerank", json={"query": "word", "documents": [words(500)], "raw_scores": True})
        assert ok.status_code == 200, ok.text
        assert ok.json()["results"][0]["relevance_score"] == float(CE_TOKENS)
        text = http.get("/metrics").text
    assert metric(text, "lrt_rerank_scoring_errors_total", error="InferenceError") == len(failures)
    assert metric(text, "lrt_rerank_requests_total", route="/v1/rerank", method="POST", status="503") == 2
    assert metric(text, "lrt_rerank_requests_total", route="/rerank", method="POST", status="503") == 1
    assert metric(text, "lrt_rerank_requests_total", route="/v1/rerank", method="POST", status="200") == 1
    log = failing_server.log_path.read_text()
    assert "scoring 1 documents failed: InferenceError" in log and "model.onnx" in log
    assert "Traceback" not in log


# --- 16 concurrent clients ----------------------------------------------------------------------

INVALID: list[tuple[str, dict[str, Any] | bytes, int]] = [
    ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, 422),
    ("/v1/rerank", {"query": "q", "documents": ["d"] * 1001}, 422),  # over --max-documents
    ("/rerank", {"query": 42, "texts": ["a"]}, 422),
    ("/rerank", {"query": "q", "texts": ["ok", "\ud800"]}, 422),  # a lone surrogate escape
    ("/v1/rerank", b'{"query": "q", "documents": [', 422),
    ("/v1/rerank", {"query": "q", "documents": ["x" * 1000] * 1100}, 413),  # over --max-body-bytes
]


def test_concurrent_clients_get_their_own_scores_within_the_scoring_limit(
    small_rerank_server: ServeProcess, small_cross_encoder_dir: Path
) -> None:
    """16 clients at once, each sending valid requests (distinct queries, 24 passages) and invalid
    ones in turn: every valid request gets the in-process scores of the same model batched the same
    way, every invalid one its 4xx, and the server never scores more than its 2 slots at a time."""
    ce = CrossEncoder.load(small_cross_encoder_dir, threads=2)  # the server's batching: 2 sessions, 16 per batch
    words5 = ["vitamin", "d", "bone", "health", "trial"]
    passages = [f"passage {j}: " + " ".join(words5 * (j % 9 + 1)) for j in range(24)]
    clients, rounds = 16, 2
    barrier = threading.Barrier(clients)
    outcomes: list[tuple[str, Any, httpx.Response]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    before = httpx.get(small_rerank_server.url + "/metrics").text

    def client(c: int) -> None:
        try:
            with httpx.Client(base_url=small_rerank_server.url, timeout=300) as http:
                barrier.wait(timeout=60)
                for r in range(rounds):
                    k = c * rounds + r
                    if k % 3 == 2:
                        route, body, _ = INVALID[(k // 3) % len(INVALID)]
                        content = body if isinstance(body, bytes) else json.dumps(body).encode()
                    else:
                        query = f"concurrency client {c} round {r}: does vitamin d help bones?"
                        docs = passages[k % 7 :] + passages[: k % 7]
                        route = "/v1/rerank" if k % 2 else "/rerank"
                        field = "documents" if route == "/v1/rerank" else "texts"
                        body = {"query": query, field: docs, "raw_scores": True}
                        content = json.dumps(body).encode()
                    response = http.post(route, content=content, headers={"content-type": "application/json"})
                    with lock:
                        outcomes.append((route, body, response))
        except BaseException as err:  # reported below, with the server's log
            errors.append(err)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors and len(outcomes) == clients * rounds, f"{errors!r}\n{small_rerank_server.log_tail()}"

    valid = {"/v1/rerank": 0, "/rerank": 0}
    for route, body, response in outcomes:
        if isinstance(body, dict) and body.get("raw_scores"):
            assert response.status_code == 200, response.text
            valid[route] += 1
            docs = body.get("documents", body.get("texts"))
            results = response.json()["results"] if route == "/v1/rerank" else response.json()
            key = "relevance_score" if route == "/v1/rerank" else "score"
            got = np.full(len(docs), np.nan, dtype=np.float32)
            for x in results:
                got[x["index"]] = x[key]
            np.testing.assert_allclose(got, ce.score(body["query"], docs), rtol=0, atol=1e-6)
        else:
            expected = next(code for r, b, code in INVALID if r == route and b is body)
            assert response.status_code == expected, response.text
            assert "detail" in response.json()

    after = httpx.get(small_rerank_server.url + "/metrics").text
    assert metric(after, "lrt_rerank_scoring_slots") == 2
    assert metric(after, "lrt_rerank_scoring_in_progress_peak") == 2  # reached, never exceeded
    assert metric(after, "lrt_rerank_scoring_in_progress") == 0
    for route, count in valid.items():
        labels = {"route": route, "method": "POST", "status": "200"}
        total = "lrt_rerank_requests_total"
        assert metric(after, total, **labels) - metric(before, total, **labels) == count


# --- Redis tier -------------------------------------------------------------------------------


def test_a_corrupt_redis_value_is_a_miss_and_is_overwritten(
    small_rerank_server: ServeProcess, redis_server: RedisServer, small_cross_encoder_dir: Path
) -> None:
    fingerprint = file_sha256(small_cross_encoder_dir / "model.onnx")
    query = "corrupt redis values"
    docs = ["not a float", "nan", "infinity", "bytes", "a good value"]
    stored = [b"not a float", b"nan", b"-inf", b"\xff\xfe\x00", b"123.5"]
    client = redis_server.client()
    keys = [tier_key(fingerprint, query, d) for d in docs]
    for key, value in zip(keys, stored, strict=True):
        client.set(key, value, ex=600)
    before = httpx.get(small_rerank_server.url + "/metrics").text
    body = {"query": query, "texts": docs, "raw_scores": True}
    r = httpx.post(small_rerank_server.url + "/rerank", json=body, timeout=60)
    assert r.status_code == 200, r.text
    got = {x["index"]: x["score"] for x in r.json()}
    logits = CrossEncoder.load(small_cross_encoder_dir, threads=2).score(query, docs[:4])
    np.testing.assert_allclose([got[i] for i in range(4)], logits, rtol=0, atol=1e-6)
    assert got[4] == 123.5  # the readable value is a hit
    # The unreadable ones now hold the model's scores.
    np.testing.assert_allclose([float(client.get(k)) for k in keys[:4]], logits, rtol=0, atol=1e-6)
    assert client.get(keys[4]) == b"123.5"
    after = httpx.get(small_rerank_server.url + "/metrics").text

    def delta(name: str, tier: str) -> float:
        return metric(after, name, tier=tier) - metric(before, name, tier=tier)

    assert (delta("lrt_rerank_cache_hits_total", "redis"), delta("lrt_rerank_cache_misses_total", "redis")) == (1, 4)


def test_redis_backoff_doubles_up_to_its_cap_and_resets_on_success(tmp_path: Path) -> None:
    """A Redis that refuses connections, timed by a stand-in clock: tried again only when the back-off
    period is over; periods 1, 2, 4, then 4 (the cap) again; a success resets them to 1."""
    server = RedisServer(tmp_path / "redis.log")  # not started yet: its port refuses connections
    now = [0.0]
    tier = RedisScoreTier(
        RedisSettings(url=server.url, socket_timeout_s=2.0, backoff_initial_s=1.0, backoff_max_s=4.0),
        clock=lambda: now[0],
    )
    key = [b"lrt-rerank:score:backoff-test"]

    def failed_at(t: float) -> bool:
        """Look up at time t: True if Redis was tried and failed (a new error), False if it was not
        tried (or, once the server runs, tried and answered)."""
        now[0] = t
        errors = tier.errors
        assert tier.get_many(key) == [None]
        return tier.errors != errors

    try:
        t = 0.0
        assert failed_at(t)  # first period: 1 s
        for period in (1.0, 2.0, 4.0, 4.0, 4.0):
            assert not failed_at(t + period - 0.001), f"tried within a {period} s period"
            errors = tier.errors
            tier.put_many(key, [1.0])  # writes wait out the period too
            assert tier.errors == errors
            assert failed_at(t + period), f"not tried after a {period} s period"
            t += period
        assert tier.stats() == {"hits": 0, "misses": 11, "errors": 6}
        server.start()
        t += 4.0
        assert not failed_at(t)  # tried, and Redis answered (a miss)
        tier.put_many(key, [2.5])
        assert tier.get_many(key) == [2.5]
        server.stop()
        assert failed_at(t)  # the success reset the period to 1 s
        assert not failed_at(t + 0.999)
        assert failed_at(t + 1.0)
    finally:
        server.stop()
        tier.close()
