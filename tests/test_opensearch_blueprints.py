"""OpenSearch's documented rerank connectors, pointed at the service, on a real 2.19 node.

opensearch/blueprints/ holds the connector of ml-commons' Cohere rerank tutorial (``/v1/rerank``, the built-in
``connector.pre_process.cohere.rerank`` / ``connector.post_process.cohere.rerank``) and that of its TEI rerank
tutorial (bge-reranker on a TEI container: ``/rerank`` with its Painless pre/post-process functions), each
with only the URL, the protocol and the credential changed, and one fix in the TEI post-process function: it
put each result at its index in the list it was reading (``def sorted_outputs = outputs``), which loses
scores whenever the results come best first, as TEI sends them; it now fills a new array. Each is registered as a remote model, used by
the tutorial's ``rerank`` search pipeline, and a search through it must order the hits as the service does.
Everything created here is deleted afterwards.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lrt_rerank.opensearch.pipeline import TRUSTED_KEY, trusted_endpoint_regex
from opensearch_fixtures import SERVICE_API_KEY, OpenSearchNode
from opensearchpy.exceptions import TransportError
from readme_blocks import README, blocks_for
from service_fixtures import ServeProcess, key_file

pytestmark = pytest.mark.integration

BLUEPRINTS = Path(__file__).resolve().parents[1] / "opensearch" / "blueprints"
ML = "/_plugins/_ml"
INDEX = "my-test-data"  # the tutorials' (and the README's)
# The tutorials' query and passages (the TEI tutorial's Painless escapes nothing: no quotes in them).
QUERY = "What is the capital of the United States?"
PASSAGES = [
    "Carson City is the capital city of the American state of Nevada.",
    "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean. Its capital is Saipan.",
    "Washington, D.C. (also known as simply Washington or D.C., and officially as the District of Columbia) is the "
    "capital of the United States. It is a federal district.",
    "Capital punishment (the death penalty) has existed in the United States since beforethe United States was a "
    "country. As of 2017, capital punishment is legal in 30 of the 50 states.",
]


def blueprint(name: str, service_url: str) -> dict[str, Any]:
    """The blueprint file with the service's URL and key in place of the README's defaults."""
    body = json.loads((BLUEPRINTS / name).read_text())
    for action in body["actions"]:
        action["url"] = action["url"].replace("http://127.0.0.1:8000", service_url)
    body["credential"] = {k: SERVICE_API_KEY for k in body["credential"]}
    return body


def call(node: OpenSearchNode, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = node.client.transport.perform_request(method, path, body=body)
    return answer if isinstance(answer, dict) else {}


def create_connector(node: OpenSearchNode, body: dict[str, Any]) -> str:
    """The connector's id; a fresh node can answer "master key" errors for a while first."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return str(call(node, "POST", f"{ML}/connectors/_create", body)["connector_id"])
        except TransportError as exc:
            if "master key" not in str(exc.info).lower() or time.monotonic() > deadline:
                raise
            time.sleep(2)


def register_and_deploy(node: OpenSearchNode, connector_id: str) -> str:
    """The tutorial's `_register?deploy=true`; the model id once its task completed."""
    body = {"name": "lrt-test-blueprint", "function_name": "remote", "description": "test rerank model", "connector_id": connector_id}
    task_id = call(node, "POST", f"{ML}/models/_register?deploy=true", body)["task_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        task = call(node, "GET", f"{ML}/tasks/{task_id}")
        if task.get("state") == "COMPLETED":
            model_id = str(task["model_id"])
            while call(node, "GET", f"{ML}/models/{model_id}").get("model_state") != "DEPLOYED":
                assert time.monotonic() < deadline, "the remote model was not deployed in 60 s"
                time.sleep(0.2)
            return model_id
        assert task.get("state") not in ("FAILED", "COMPLETED_WITH_ERROR"), task
        time.sleep(0.2)
    raise AssertionError(f"register task {task_id} did not complete in 60 s")


@pytest.fixture(scope="module")
def passages_index(opensearch_node: OpenSearchNode, opensearch_rerank_service: ServeProcess) -> Iterator[str]:
    """The tutorial's `my-test-data` documents, and the cluster settings a loopback connector needs."""
    node = opensearch_node
    node.client.cluster.health(params={"wait_for_no_initializing_shards": "true", "timeout": "60s", "request_timeout": 90})
    current = node.client.cluster.get_settings(include_defaults=True, flat_settings=True)
    trusted = next((list(current[s][TRUSTED_KEY]) for s in ("transient", "persistent", "defaults") if TRUSTED_KEY in current.get(s, {})), [])
    regex = trusted_endpoint_regex(opensearch_rerank_service.url)
    settings = {
        "plugins.ml_commons.only_run_on_ml_node": False,
        "plugins.ml_commons.connector.private_ip_enabled": True,
        TRUSTED_KEY: [*trusted, regex],
    }
    call(node, "PUT", "/_cluster/settings", {"persistent": settings})
    node.client.indices.delete(index=INDEX, ignore_unavailable=True)
    for i, text in enumerate(PASSAGES):
        node.client.index(index=INDEX, id=str(i), body={"passage_text": text}, refresh=True)
    try:
        yield INDEX
    finally:
        node.client.indices.delete(index=INDEX, ignore_unavailable=True)
        call(node, "PUT", "/_cluster/settings", {"persistent": {TRUSTED_KEY: [r for r in trusted if r != regex]}})


@pytest.fixture
def blueprint_pipeline(
    opensearch_node: OpenSearchNode, opensearch_rerank_service: ServeProcess, passages_index: str, request: pytest.FixtureRequest
) -> Iterator[str]:
    """The search pipeline of the tutorial on a model of the blueprint named by the test's parameter."""
    node = opensearch_node
    connector_id = create_connector(node, blueprint(request.param, opensearch_rerank_service.url))
    model_id: str | None = None
    name = "lrt-test-blueprint-" + re.sub(r"\W", "-", request.param)
    try:
        model_id = register_and_deploy(node, connector_id)
        body = {
            "description": "Pipeline for reranking with the blueprint's model",
            "response_processors": [
                {"rerank": {"ml_opensearch": {"model_id": model_id}, "context": {"document_fields": ["passage_text"]}}}
            ],
        }
        call(node, "PUT", f"/_search/pipeline/{name}", body)
        yield name
    finally:
        steps = [("DELETE", f"/_search/pipeline/{name}")]
        if model_id is not None:
            steps += [("POST", f"{ML}/models/{model_id}/_undeploy"), ("DELETE", f"{ML}/models/{model_id}")]
        for method, path in [*steps, ("DELETE", f"{ML}/connectors/{connector_id}")]:
            node.client.transport.perform_request(method, path, params={"ignore": 404})


def service_order(service: ServeProcess) -> tuple[list[int], list[float]]:
    """The passages best first and their scores, as the service answers them directly."""
    answer = httpx.post(
        service.url + "/v1/rerank",
        json={"query": QUERY, "documents": PASSAGES},
        headers={"authorization": f"Bearer {SERVICE_API_KEY}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    return [r["index"] for r in results], [r["relevance_score"] for r in results]


@pytest.mark.parametrize("blueprint_pipeline", ["cohere-rerank.json", "tei-rerank.json"], indirect=True)
def test_blueprint_pipeline_orders_hits_as_the_service(
    opensearch_node: OpenSearchNode, opensearch_rerank_service: ServeProcess, passages_index: str, blueprint_pipeline: str
) -> None:
    order, scores = service_order(opensearch_rerank_service)
    assert order != list(range(len(PASSAGES))), "the service must re-order the index order for this test to mean anything"
    body = {"query": {"match_all": {}}, "ext": {"rerank": {"query_context": {"query_text": QUERY}}}}
    found = opensearch_node.client.search(index=passages_index, body=body, params={"search_pipeline": blueprint_pipeline})
    hits = found["hits"]["hits"]
    assert [int(h["_id"]) for h in hits] == order, hits
    assert [h["_score"] for h in hits] == pytest.approx(scores, rel=1e-6)


def test_readme_opensearch_block(
    opensearch_node: OpenSearchNode,
    opensearch_rerank_service: ServeProcess,
    passages_index: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The README's OpenSearch snippet, run as written against this node and service (their URLs in place of
    the README's), from a folder holding its `service.key` and the checkout's opensearch/ folder."""
    (block,) = [b for b in blocks_for("stack", "python") if "opensearchpy" in b.text]
    text = block.text
    for old, new in (('"http://127.0.0.1:8000"', f'"{opensearch_rerank_service.url}"'), ('"http://127.0.0.1:9200"', f'"{opensearch_node.url}"')):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    key_file(tmp_path, SERVICE_API_KEY)
    (tmp_path / "opensearch").symlink_to(README.parent / "opensearch")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    try:
        exec(compile(text, f"README.md:{block.line}", "exec"), namespace)  # noqa: S102 (the README's own code)
        order, scores = service_order(opensearch_rerank_service)
        assert [int(h["_id"]) for h in namespace["hits"]] == order
        assert [h["_score"] for h in namespace["hits"]] == pytest.approx(scores, rel=1e-6)
    finally:
        node = opensearch_node.client.transport
        node.perform_request("DELETE", "/_search/pipeline/lrt-cohere-rerank", params={"ignore": 404})
        if "model_id" in namespace:
            node.perform_request("POST", f"{ML}/models/{namespace['model_id']}/_undeploy", params={"ignore": 404})
            node.perform_request("DELETE", f"{ML}/models/{namespace['model_id']}", params={"ignore": 404})
        if "connector_id" in namespace:
            node.perform_request("DELETE", f"{ML}/connectors/{namespace['connector_id']}", params={"ignore": 404})
