"""The client libraries people plug a re-ranker into, unchanged, against a real `lrt-rerank serve`.

`cohere` (``Client`` on /v1/rerank, ``ClientV2`` on /v2/rerank), `langchain-cohere`'s ``CohereRerank``,
`llama-index`'s Cohere rerank post-processor, and the documented TEI and Jina requests. Each answer is
checked against the same model called in-process (its logits, calibrated with the card's (a, b) here).
Error cases check that the SDK raises its own typed error for each status the service answers.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import cohere
import httpx
import numpy as np
import pytest
from cohere.core.api_error import ApiError
from fastapi.testclient import TestClient
from lrt_rerank import CrossEncoder
from lrt_rerank.service.app import create_app
from lrt_rerank.service.settings import ServiceSettings
from readme_blocks import blocks_for
from service_fixtures import ServeProcess, key_file, metric, serving

KEY = "clients-key-3e9a"
MAX_BODY = 64 * 1024
QUERY = "vitamin D and breast cancer risk"
DOCS = [
    "Coffee consumption and the risk of type 2 diabetes.",
    "Serum 25-hydroxyvitamin D concentrations were inversely associated with breast cancer incidence.",
    "Air pollution exposure and childhood asthma in urban neighbourhoods.",
    "Calcium and vitamin D supplements in postmenopausal women: a randomised trial of cancer outcomes.",
    "The effect of dietary fibre on the gut microbiome of healthy adults.",
    "Mammography screening intervals and breast cancer mortality.",
]
NO_RETRIES = {"max_retries": 0}

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def encoder(small_cross_encoder_dir: Path) -> CrossEncoder:
    return CrossEncoder.load(str(small_cross_encoder_dir))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, small_cross_encoder_dir: Path) -> Iterator[ServeProcess]:
    """`lrt-rerank serve` with the small cross-encoder, an API key and a 64 KiB body limit."""
    log = tmp_path_factory.mktemp("clients-serve") / "serve.log"
    args = ["--model", str(small_cross_encoder_dir), "--api-key-file", key_file(log.parent, KEY), "--max-body-bytes", str(MAX_BODY)]
    with serving(args, log) as process:
        yield process


def expected(encoder: CrossEncoder, docs: list[str] = DOCS) -> tuple[list[int], np.ndarray]:
    """Indices best first (ties by index) and each document's calibrated score, from the model in-process;
    the calibration is sigmoid(a * logit + b) with (a, b) read from card.json (a bare sigmoid without one)."""
    logits = encoder.score(QUERY, docs).astype(np.float64)
    card = json.loads((encoder.model_dir / "card.json").read_text())
    a, b = (card["calibration"]["a"], card["calibration"]["b"]) if card.get("calibration") else (1.0, 0.0)
    order = sorted(range(len(docs)), key=lambda i: (-logits[i], i))
    return order, 1.0 / (1.0 + np.exp(-(a * logits + b)))


def test_cohere_client_v2(server: ServeProcess, encoder: CrossEncoder) -> None:
    order, scores = expected(encoder)
    co = cohere.ClientV2(api_key=KEY, base_url=server.url)
    response = co.rerank(model=encoder.name, query=QUERY, documents=DOCS, top_n=3, max_tokens_per_doc=4096)
    assert [r.index for r in response.results] == order[:3]
    np.testing.assert_allclose([r.relevance_score for r in response.results], scores[order[:3]], rtol=1e-5)
    everything = co.rerank(model=encoder.name, query=QUERY, documents=DOCS)
    assert [r.index for r in everything.results] == order
    exposition = httpx.get(server.url + "/metrics").text
    assert metric(exposition, "lrt_rerank_requests_total", route="/v2/rerank", method="POST", status="200") >= 2


def test_cohere_client_v1(server: ServeProcess, encoder: CrossEncoder) -> None:
    order, scores = expected(encoder)
    co = cohere.Client(api_key=KEY, base_url=server.url)
    response = co.rerank(model="rerank-english-v3.0", query=QUERY, documents=DOCS, top_n=2, return_documents=True)
    assert [r.index for r in response.results] == order[:2]
    np.testing.assert_allclose([r.relevance_score for r in response.results], scores[order[:2]], rtol=1e-5)
    assert [r.document.text for r in response.results if r.document is not None] == [DOCS[i] for i in order[:2]]


def test_max_tokens_per_doc_truncates(server: ServeProcess, encoder: CrossEncoder) -> None:
    """v2's `max_tokens_per_doc` reads only each document's first tokens (the response's meta counts them)."""
    co = cohere.ClientV2(api_key=KEY, base_url=server.url)
    cut = co.rerank(model=encoder.name, query=QUERY, documents=DOCS, max_tokens_per_doc=3)
    whole = co.rerank(model=encoder.name, query=QUERY, documents=DOCS)
    assert cut.meta is not None and whole.meta is not None
    cut_meta, whole_meta = cut.meta.model_dump(), whole.meta.model_dump()
    assert whole_meta["documents_truncated"] == 0 and cut_meta["documents_truncated"] == len(DOCS)
    assert cut_meta["tokens_dropped"] > 0


def test_wrong_key_raises_the_sdks_401(server: ServeProcess, encoder: CrossEncoder) -> None:
    with pytest.raises(cohere.errors.UnauthorizedError) as v2:
        cohere.ClientV2(api_key="not-the-key", base_url=server.url).rerank(model=encoder.name, query=QUERY, documents=DOCS)
    assert "API key" in v2.value.body["message"]
    with pytest.raises(cohere.errors.UnauthorizedError):
        cohere.Client(api_key="not-the-key", base_url=server.url).rerank(query=QUERY, documents=DOCS)


def test_oversized_body_raises_the_sdks_413(server: ServeProcess, encoder: CrossEncoder) -> None:
    big = ["x" * 1000] * (MAX_BODY // 1000 + 1)
    with pytest.raises(ApiError) as v2:
        cohere.ClientV2(api_key=KEY, base_url=server.url).rerank(
            model=encoder.name, query=QUERY, documents=big, request_options=NO_RETRIES
        )
    assert v2.value.status_code == 413 and f"{MAX_BODY} bytes" in v2.value.body["message"]
    with pytest.raises(ApiError) as v1:
        cohere.Client(api_key=KEY, base_url=server.url).rerank(query=QUERY, documents=big, request_options=NO_RETRIES)
    assert v1.value.status_code == 413


def test_unknown_model_and_bad_fields_raise_typed_errors(server: ServeProcess, encoder: CrossEncoder) -> None:
    co = cohere.ClientV2(api_key=KEY, base_url=server.url)
    with pytest.raises(cohere.errors.NotFoundError) as unknown:
        co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert "'rerank-v3.5'" in unknown.value.body["message"] and encoder.name in unknown.value.body["message"]
    with pytest.raises(cohere.errors.UnprocessableEntityError) as bad:
        co.rerank(model=encoder.name, query=QUERY, documents=DOCS, top_n=0)
    assert bad.value.body["message"].startswith("top_n:")
    broken = httpx.post(
        server.url + "/v2/rerank", content=b'{"query": ', headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    )
    assert broken.status_code == 400 and broken.json()["message"].startswith("body: not valid JSON")


def test_any_model_name(tmp_path: Path, small_cross_encoder_dir: Path, encoder: CrossEncoder) -> None:
    """`serve --any-model-name` answers a v2 request that names another model."""
    with serving(["--model", str(small_cross_encoder_dir), "--any-model-name"], tmp_path / "serve.log") as process:
        response = cohere.ClientV2(api_key="unused", base_url=process.url).rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert [r.index for r in response.results] == expected(encoder)[0]


@pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument with the TestClient")  # the SDK sends one
def test_loading_raises_the_sdks_503(small_cross_encoder_dir: Path) -> None:
    """In process (the SDK over the app's test transport): a service still loading its model raises the
    SDK's 503 error, with Retry-After."""
    release = threading.Event()

    def slow_loader() -> CrossEncoder:
        release.wait(60)
        return CrossEncoder.load(str(small_cross_encoder_dir))

    app = create_app(ServiceSettings(model=str(small_cross_encoder_dir)), loader=slow_loader)
    with TestClient(app) as http:
        co = cohere.ClientV2(api_key="unused", base_url=str(http.base_url), httpx_client=http)
        try:
            with pytest.raises(cohere.errors.ServiceUnavailableError) as loading:
                co.rerank(model="any", query=QUERY, documents=DOCS, request_options=NO_RETRIES)
        finally:
            release.set()
    assert loading.value.headers is not None and loading.value.headers["retry-after"] == "1"
    assert loading.value.body["message"] == "model not loaded yet"


def test_langchain_cohere_rerank(server: ServeProcess, encoder: CrossEncoder) -> None:
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    order, scores = expected(encoder)
    reranker = CohereRerank(model=encoder.name, base_url=server.url, cohere_api_key=KEY, top_n=3)
    kept = reranker.compress_documents([Document(page_content=d, metadata={"id": i}) for i, d in enumerate(DOCS)], QUERY)
    assert [d.metadata["id"] for d in kept] == order[:3]
    np.testing.assert_allclose([d.metadata["relevance_score"] for d in kept], scores[order[:3]], rtol=1e-5)


def test_llama_index_cohere_rerank(server: ServeProcess, encoder: CrossEncoder) -> None:
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    order, scores = expected(encoder)
    reranker = CohereRerank(model=encoder.name, api_key=KEY, base_url=server.url, top_n=2)
    nodes = [NodeWithScore(node=TextNode(text=d, id_=f"doc-{i}"), score=0.0) for i, d in enumerate(DOCS)]
    kept = reranker.postprocess_nodes(nodes, query_str=QUERY)
    assert [n.node.node_id for n in kept] == [f"doc-{i}" for i in order[:2]]
    np.testing.assert_allclose([n.score for n in kept], scores[order[:2]], rtol=1e-5)


def test_tei_documented_request(server: ServeProcess, encoder: CrossEncoder) -> None:
    """TEI's /rerank request as its OpenAPI documents it (raw_scores, return_text, truncate, truncation_direction)."""
    order, _ = expected(encoder)
    logits = encoder.score(QUERY, DOCS).astype(np.float64)
    body = {"query": QUERY, "texts": DOCS, "raw_scores": True, "return_text": True, "truncate": True, "truncation_direction": "Right"}
    r = httpx.post(server.url + "/rerank", json=body, headers={"authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    assert [x["index"] for x in r.json()] == order
    assert [x["text"] for x in r.json()] == [DOCS[i] for i in order]
    np.testing.assert_allclose([x["score"] for x in r.json()], logits[order], rtol=1e-5)


def test_jina_documented_request(server: ServeProcess, encoder: CrossEncoder) -> None:
    """Jina's rerank request (/v1/rerank with its model name, top_n and return_documents)."""
    order, scores = expected(encoder)
    body = {"model": "jina-reranker-v2-base-multilingual", "query": QUERY, "documents": DOCS, "top_n": 3, "return_documents": True}
    r = httpx.post(server.url + "/v1/rerank", json=body, headers={"authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == order[:3]
    assert [x["document"]["text"] for x in results] == [DOCS[i] for i in order[:3]]
    np.testing.assert_allclose([x["relevance_score"] for x in results], scores[order[:3]], rtol=1e-5)


# ------------------------------------------------------------------ README "Use it from your stack"
def run_readme_block(needle: str, server: ServeProcess, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """The README's `stack` python block that contains ``needle``, run in the folder of the server's
    ``service.key`` with the server's URL in place of the README's. The server is the session's
    `opensearch_rerank_service` (the default model, the README's, and a key file named as the README's)."""
    (block,) = [b for b in blocks_for("stack", "python") if needle in b.text]
    assert block.text.count("http://127.0.0.1:8000") == 1
    monkeypatch.chdir(server.log_path.parent)
    assert os.path.isfile("service.key")
    namespace: dict[str, object] = {}
    exec(compile(block.text.replace("http://127.0.0.1:8000", server.url), f"README.md:{block.line}", "exec"), namespace)  # noqa: S102
    return namespace


def readme_expectation(cross_encoder_dir: Path, documents: list[str]) -> int:
    """Index of the README's query's best document, from the default model in-process."""
    logits = CrossEncoder.load(str(cross_encoder_dir)).score("calcium for strong bones", documents)
    return int(np.argmax(logits))


def test_readme_cohere_block(opensearch_rerank_service: ServeProcess, cross_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    namespace = run_readme_block("cohere.ClientV2", opensearch_rerank_service, monkeypatch)
    response = namespace["response"]
    documents = ["Green tea contains catechins and a little caffeine.", "Milk is a source of calcium and protein."]
    assert [r.index for r in response.results] == [readme_expectation(cross_encoder_dir, documents)]  # type: ignore[attr-defined]


def test_readme_langchain_block(opensearch_rerank_service: ServeProcess, cross_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    namespace = run_readme_block("langchain_cohere", opensearch_rerank_service, monkeypatch)
    documents = [d.page_content for d in namespace["documents"]]  # type: ignore[attr-defined]
    best = namespace["best"]
    assert [d.page_content for d in best] == [documents[readme_expectation(cross_encoder_dir, documents)]]  # type: ignore[attr-defined]
