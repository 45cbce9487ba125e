"""A rerank model whose deploy failed inside the node is deployed again by `install_pipeline`.

The failure reproduced here is the one a loaded CI machine met by chance: after a node restart, a
deploy of a remote model first reads ml-commons' master key (the key that decrypts connector
credentials); when that read fails or times out (slow on a busy machine, here made impossible with
a read block on ml-commons' config index), the model is left ``DEPLOY_FAILED`` (or ``DEPLOYING``)
*and* in the node's model cache, so that every later deploy of it is refused as a duplicate for the
life of the node.
"""

from __future__ import annotations

import pytest
from lrt_rerank.opensearch import install_pipeline, uninstall_pipeline
from lrt_rerank.opensearch.ml_model import ML, PipelineError, readiness, wait_task
from lrt_rerank.opensearch.queries import hybrid_body
from lrt_rerank.opensearch.searcher import embed_query
from lrt_rerank.ops.opensearch import NodeSpec, down, up
from opensearch_fixtures import OPENSEARCH_PORT, SERVICE_API_KEY, OpenSearchNode
from service_fixtures import ServeProcess

pytestmark = pytest.mark.integration

CONFIG_INDEX = ".plugins-ml-config"
PIPELINE = "lrt-test-rerank-recovery"
AUTO_REDEPLOY = "plugins.ml_commons.model_auto_redeploy.enable"


def _block_config_reads(node: OpenSearchNode, blocked: bool) -> None:
    node.client.transport.perform_request("PUT", f"/{CONFIG_INDEX}/_settings", body={"index.blocks.read": blocked})


def test_install_deploys_again_a_model_whose_redeploy_failed_after_a_restart(
    opensearch_node: OpenSearchNode, opensearch_nfcorpus: str, opensearch_rerank_service: ServeProcess, bi_encoder
) -> None:
    client = opensearch_node.client
    # its own connector and model (its own read timeout), so no other test's model is touched
    arguments = {"service_url": opensearch_rerank_service.url, "api_key": SERVICE_API_KEY, "read_timeout_s": 118}
    pipeline = install_pipeline(client, rerank_pipeline=PIPELINE, **arguments)
    assert pipeline.model.state == "DEPLOYED"
    spec = NodeSpec(port=OPENSEARCH_PORT)
    try:
        # ml-commons' own redeploy after the restart goes through its models one at a time, in its own
        # time: off, so that the failing deploy is this test's own, at a known moment
        client.cluster.put_settings(body={"persistent": {AUTO_REDEPLOY: False}})
        _block_config_reads(opensearch_node, True)
        down(spec)
        up(spec, timeout=600.0)
        first = client.transport.perform_request("POST", f"{ML}/models/{pipeline.model_id}/_deploy")
        with pytest.raises(PipelineError, match="failed"):
            wait_task(client, str(first["task_id"]), "deploying the model while the master key cannot be read")
        # the precondition: ml-commons keeps the failed deploy in the node's cache and refuses the next one
        second = client.transport.perform_request("POST", f"{ML}/models/{pipeline.model_id}/_deploy")
        with pytest.raises(PipelineError, match="Duplicate deploy model task"):
            wait_task(client, str(second["task_id"]), "deploying the failed model again")
        # ml-commons' sync-up job reports the model from that cache: DEPLOY_FAILED, or DEPLOYING for good
        assert readiness(client, pipeline.model_id).state in ("DEPLOY_FAILED", "DEPLOYING")
        _block_config_reads(opensearch_node, False)

        again = install_pipeline(client, rerank_pipeline=PIPELINE, **arguments)

        assert again.model_id == pipeline.model_id
        assert again.model.state == "DEPLOYED" and again.model.everywhere
        query = "statin use and breast cancer survival"
        body = hybrid_body(query, embed_query(bi_encoder, query), 10, source=["doc_id"], rerank_query=query)
        answer = client.search(index=opensearch_nfcorpus, body=body, params={"search_pipeline": PIPELINE, "verbose_pipeline": "true"})
        (outcome,) = [p for p in answer["processor_results"] if p.get("tag") == "lrt-rerank"]
        assert outcome["status"] == "success", outcome
        assert len(answer["hits"]["hits"]) == 10
    finally:
        _block_config_reads(opensearch_node, False)
        client.cluster.put_settings(body={"persistent": {AUTO_REDEPLOY: None}})
        uninstall_pipeline(client, pipeline)
