"""Search pipelines for the hybrid query, and the ml-commons model that calls the rerank service.

Two search pipelines (bodies in ``opensearch/search-pipeline-*.json``):

``lrt-rrf``         ``score-ranker-processor``: RRF (rank_constant 60) of the hybrid sub-queries.
``lrt-rrf-rerank``  the same, then a ``rerank`` response processor of type ``ml_opensearch``
                    that re-scores the returned hits with an ml-commons *remote* model. The
                    model's HTTP connector posts to the service's Cohere-compatible
                    ``POST /v1/rerank`` through ml-commons' built-in
                    ``connector.pre_process.cohere.rerank`` / ``connector.post_process.cohere.rerank``.

``lrt-fusion``      a tuned fusion run in the node (:func:`place_fusion`): the ``normalization-processor``
                    (``min_max``, then ``arithmetic_mean`` with the fusion's weights), installed only
                    when the fusion is one the node computes exactly as :mod:`lrt_rerank.rerank.fusion`
                    does; otherwise the node keeps RRF and the client applies the fusion.

The connector's request body carries the window settings for long documents when
:func:`install_pipeline` is given them (the service's ``long_documents``, ``window_stride``,
``max_windows`` and ``aggregate`` request fields).

Failure tolerance (what OpenSearch 2.19 offers, all used here): the connector's
``client_config`` bounds each call (``connection_timeout`` ms, ``read_timeout`` s, no retries),
and ``ignore_failure: true`` on the response processor makes a failed re-rank (service down,
slow, or answering an error) log a warning in the node log and return the RRF hits unchanged.

:func:`install_pipeline` is idempotent. Connector and model are named after a hash of their
configuration (service URL, timeouts, API key), so a re-run finds and reuses them (deploying
the model if it is not deployed) and a changed configuration gets a new connector and model.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError, TransportError

from lrt_rerank.opensearch import templates
from lrt_rerank.opensearch.capabilities import pipeline_refusal
from lrt_rerank.opensearch.ml_model import ML, ModelReadiness, PipelineError, create_connector, deploy, find_one, readiness, register_model, request, settle_shards
from lrt_rerank.rerank.fusion import FEATURE_POOL, Fusion

RRF_PIPELINE = "lrt-rrf"
RERANK_PIPELINE = "lrt-rrf-rerank"
FUSION_PIPELINE = "lrt-fusion"
NODE_FUSION_SINCE = (2, 19)
"""The normalization-processor with the hybrid query's ``pagination_depth`` (the pool it normalises over)."""
LONG_DOCUMENT_FIELDS = ("long_documents", "window_stride", "max_windows", "aggregate")
MODEL_PREFIX = "lrt-rerank"
TRUSTED_KEY = "plugins.ml_commons.trusted_connector_endpoints_regex"


@dataclass(frozen=True)
class InstalledPipeline:
    rrf_pipeline: str
    rerank_pipeline: str
    connector_id: str
    model_id: str
    model_name: str
    service_url: str
    model: ModelReadiness
    """The model's settled deploy state when the install returned."""

    def to_json(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.__dict__.items() if k != "model"}, "model_state": self.model.to_json()}


@dataclass(frozen=True)
class FusionPlacement:
    """Where a tuned fusion runs: ``node`` (search through ``pipeline``, the hybrid query's sub-queries to
    depth ``pool``: :func:`lrt_rerank.opensearch.queries.hybrid_body`) or ``client`` (the node keeps RRF in
    ``pipeline``; ``HybridSearcher(fusion=...)`` or ``Pipeline(..., fusion=...)`` applies it), and why."""

    where: Literal["node", "client"]
    pipeline: str
    function: str
    reason: str
    pool: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def node_fusion_refusal(fusion: Fusion, version: str) -> str | None:
    """Why the node (OpenSearch ``version``) cannot compute ``fusion`` exactly as the library does, or None.

    The node's normalization-processor min-max normalises each sub-query's scores over its retrieved pool
    and takes their weighted mean; the library's ``minmax`` does the same over the same pools. It has no
    term for the RRF prior or a re-ranker's logit, and its ``z_score`` (3.x) standardises over the pool,
    not over the candidates as the library's ``zscore`` does.
    """
    if fusion.is_first_stage_order:
        return None
    if fusion.further_signals:
        return f"it weighs further dense signals ({', '.join(fusion.further_signals)}); the node's index holds one vector field"
    if fusion.uses_reranker:
        return f"it weighs the re-ranker's logit ({fusion.weights['reranker']:g}) together with the first-stage signals"
    if fusion.function != "linear" and fusion.weighted_rrf:
        return f"{fusion.describe()}: the node's RRF pipeline weighs its sub-queries alike (2.19's score-ranker-processor takes no weights)"
    if fusion.function != "linear":
        return f"RRF with k={fusion.rrf_k}: the node's RRF pipeline has k=60"
    if fusion.weights["prior"] > 0:
        return f"it weighs the RRF prior ({fusion.weights['prior']:g}), which the normalization-processor has no term for"
    if fusion.normalisation != "minmax":
        return f"its {fusion.normalisation} is over the candidates; the node's normalisations are over each sub-query's pool"
    try:
        major_minor = tuple(int(x) for x in version.split(".")[:2])
    except ValueError:
        return f"OpenSearch version {version!r} is not MAJOR.MINOR.PATCH"
    if major_minor < NODE_FUSION_SINCE:
        return f"OpenSearch {version} has no pagination_depth for the hybrid query (needs {'.'.join(map(str, NODE_FUSION_SINCE))})"
    return None


def fusion_pipeline_body(fusion: Fusion) -> dict[str, Any]:
    """The ``lrt-fusion`` search pipeline for a fusion the node can run: its BM25 and dense weights,
    scaled to sum to 1 (the processor's rule; the order is the same)."""
    body = templates.load("search-pipeline-fusion.json")
    total = fusion.weights["bm25"] + fusion.weights["dense"]
    try:
        processor = body["phase_results_processors"][0]["normalization-processor"]
        processor["combination"]["parameters"]["weights"] = [fusion.weights["bm25"] / total, fusion.weights["dense"] / total]
    except (KeyError, IndexError, TypeError):
        raise templates.TemplateError(
            f"{templates.assets_dir() / 'search-pipeline-fusion.json'}: needs a phase_results_processors[0].normalization-processor "
            "with combination.parameters"
        ) from None
    return body


def place_fusion(client: OpenSearch, fusion: Fusion, name: str = FUSION_PIPELINE, rrf_pipeline: str = RRF_PIPELINE) -> FusionPlacement:
    """Install ``fusion`` as the ``name`` search pipeline when the node can run it; else keep RRF in the
    node (``rrf_pipeline``) for the client to apply it. Idempotent."""
    version = str(client.info().get("version", {}).get("number", ""))
    refusal = node_fusion_refusal(fusion, version)
    ensure_rrf_pipeline(client, rrf_pipeline)
    if refusal is not None:
        return FusionPlacement("client", rrf_pipeline, fusion.describe(), f"the node cannot run it: {refusal}")
    if fusion.is_first_stage_order:
        return FusionPlacement("node", rrf_pipeline, fusion.describe(), "the first stage's own RRF: the node's RRF pipeline")
    request(client, "PUT", f"/_search/pipeline/{name}", fusion_pipeline_body(fusion), f"creating search pipeline {name}")
    return FusionPlacement("node", name, fusion.describe(), f"min_max + arithmetic_mean on OpenSearch {version}", FEATURE_POOL)


def ensure_rrf_pipeline(client: OpenSearch, name: str = RRF_PIPELINE) -> str:
    """Create or update the RRF-only search pipeline (needs only neural-search); return its name."""
    request(client, "PUT", f"/_search/pipeline/{name}", templates.load("search-pipeline-rrf.json"), f"creating search pipeline {name}")
    return name


def install_pipeline(
    client: OpenSearch,
    service_url: str = "http://127.0.0.1:8000",
    api_key: str | None = None,
    read_timeout_s: int = 5,
    connection_timeout_ms: int = 1000,
    rrf_pipeline: str = RRF_PIPELINE,
    rerank_pipeline: str = RERANK_PIPELINE,
    long_documents: Mapping[str, Any] | None = None,
) -> InstalledPipeline:
    """Install everything the server-side re-rank needs; safe to run again.

    1. cluster settings: the service URL added to the trusted connector endpoints, private
       (loopback) addresses allowed, models allowed on non-ML nodes;
    2. a connector to ``service_url``/v1/rerank and a remote model on it, registered and deployed;
    3. the ``lrt-rrf`` and ``lrt-rrf-rerank`` search pipelines.

    Raises :class:`PipelineError` naming the missing plugin on a node without neural-search or
    ml-commons (OpenSearch 3.x from Maven Central: :func:`~lrt_rerank.opensearch.capabilities.pipeline_refusal`).

    ``long_documents`` (keys of :data:`LONG_DOCUMENT_FIELDS`, None values left out) goes into every
    request the connector sends, so the service reads long documents as asked.
    """
    base = _service_base(service_url)
    check_long_documents(long_documents or {})  # before anything is installed
    refusal = pipeline_refusal(client)
    if refusal is not None:
        raise PipelineError(refusal)
    if read_timeout_s < 1:
        raise ValueError(f"read_timeout_s must be >= 1 (ml-commons counts whole seconds), got {read_timeout_s}")
    if connection_timeout_ms < 1:
        raise ValueError(f"connection_timeout_ms must be >= 1, got {connection_timeout_ms}")
    settle_shards(client)
    _apply_cluster_settings(client, base)
    connector = connector_body(base, api_key, read_timeout_s, connection_timeout_ms, long_documents)
    name = connector["name"]
    connector_id = find_one(client, "connectors", name) or create_connector(client, connector)
    model_id = find_one(client, "models", name) or register_model(client, name, connector_id)
    model = deploy(client, model_id)
    ensure_rrf_pipeline(client, rrf_pipeline)
    body = templates.load("search-pipeline-rerank.json")
    try:
        rerank = next(p["rerank"] for p in body["response_processors"] if "rerank" in p)
        rerank["ml_opensearch"]["model_id"] = model_id
    except (KeyError, StopIteration, TypeError):
        raise templates.TemplateError(
            f"{templates.assets_dir() / 'search-pipeline-rerank.json'}: needs a response_processors[].rerank.ml_opensearch object"
        ) from None
    request(client, "PUT", f"/_search/pipeline/{rerank_pipeline}", body, f"creating search pipeline {rerank_pipeline}")
    return InstalledPipeline(rrf_pipeline, rerank_pipeline, connector_id, model_id, name, base, model)


def uninstall_pipeline(client: OpenSearch, installed: InstalledPipeline) -> None:
    """Remove what :func:`install_pipeline` created for one service: the rerank pipeline, the
    model (undeployed first), its connector and the service's trusted-endpoint regex. The shared
    RRF pipeline and the other cluster settings stay."""
    steps = [
        ("DELETE", f"/_search/pipeline/{installed.rerank_pipeline}"),
        ("POST", f"{ML}/models/{installed.model_id}/_undeploy"),
        ("DELETE", f"{ML}/models/{installed.model_id}"),
        ("DELETE", f"{ML}/connectors/{installed.connector_id}"),
    ]
    for method, path in steps:
        try:
            client.transport.perform_request(method, path)
        except NotFoundError:
            continue
        except TransportError as exc:
            raise PipelineError(f"uninstalling: {method} {path} failed with {exc.status_code}: {exc.info or exc.error}") from exc
    trusted = _trusted_endpoints(client)
    regex = trusted_endpoint_regex(installed.service_url)
    if regex in trusted:
        body = {"persistent": {TRUSTED_KEY: [r for r in trusted if r != regex]}}
        request(client, "PUT", "/_cluster/settings", body, "removing the trusted endpoint")


def rerank_model_readiness(client: OpenSearch, rerank_pipeline: str = RERANK_PIPELINE) -> ModelReadiness | None:
    """The deploy state of the model behind ``rerank_pipeline``; None when that pipeline is not installed."""
    try:
        body = client.transport.perform_request("GET", f"/_search/pipeline/{rerank_pipeline}")[rerank_pipeline]
    except NotFoundError:
        return None
    except TransportError as exc:
        raise PipelineError(f"reading search pipeline {rerank_pipeline}: failed with {exc.status_code}: {exc.info or exc.error}") from exc
    try:
        model_id = next(p["rerank"] for p in body["response_processors"] if "rerank" in p)["ml_opensearch"]["model_id"]
    except (KeyError, StopIteration, TypeError):
        raise PipelineError(f"search pipeline {rerank_pipeline} has no rerank processor with an ml_opensearch model_id") from None
    return readiness(client, str(model_id))


def connector_body(
    service_url: str,
    api_key: str | None,
    read_timeout_s: int,
    connection_timeout_ms: int,
    long_documents: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The connector from ``opensearch/connector.json`` with URL, timeouts, key, the long-document request
    fields and a content-derived name."""
    body = templates.load("connector.json")
    body["parameters"]["service_url"] = service_url
    fields = check_long_documents(long_documents or {})
    if fields:
        for action in body["actions"]:
            request_body = str(action["request_body"]).rstrip()
            if not request_body.endswith("}"):
                raise templates.TemplateError(f"{templates.assets_dir() / 'connector.json'}: request_body is not a JSON object")
            extra = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in fields.items())
            action["request_body"] = f"{request_body[:-1].rstrip()}, {extra} }}"
    body["client_config"]["read_timeout"] = read_timeout_s
    body["client_config"]["connection_timeout"] = connection_timeout_ms
    if api_key:
        for action in body["actions"]:
            action["headers"]["Authorization"] = "Bearer ${credential.api_key}"
    # The name (listed by anyone who may list connectors) changes with the key, so that a new key gets
    # a new connector, but it is derived from a deliberately slow hash of the key, never from the key.
    key_digest = _key_digest(api_key) if api_key else None
    fingerprint = hashlib.sha256(json.dumps({**body, "name": None, "key": key_digest}, sort_keys=True).encode()).hexdigest()[:12]
    # ml-commons requires a non-empty credential map even when the service needs no key.
    body["credential"] = {"api_key": api_key or "unused"}
    body["name"] = f"{MODEL_PREFIX}-{fingerprint}"
    return body


def _key_digest(api_key: str) -> str:
    """scrypt of the service's key (fixed salt: the name must be reproducible): guessing a key from a
    connector's name costs a scrypt evaluation per guess."""
    return hashlib.scrypt(api_key.encode(), salt=b"lrt-rerank connector name", n=2**14, r=8, p=1).hex()


def check_long_documents(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The long-document request fields that are set, checked as the service checks them (a value it would
    refuse would make every re-rank fail, and the pipeline ignores failures): ``ValueError`` naming the field."""
    chosen = {k: v for k, v in fields.items() if v is not None}
    unknown = sorted(set(chosen) - set(LONG_DOCUMENT_FIELDS))
    if unknown:
        raise ValueError(f"long_documents: {unknown[0]!r} is not one of {', '.join(LONG_DOCUMENT_FIELDS)}")
    choices = {"long_documents": ("truncate", "windows"), "aggregate": ("max", "mean", "sum", "first")}
    for name, allowed in choices.items():
        if name in chosen and chosen[name] not in allowed:
            raise ValueError(f"{name}: must be one of {', '.join(allowed)}, got {chosen[name]!r}")
    bounds = {"window_stride": (1, None), "max_windows": (1, 64)}
    for name, (low, high) in bounds.items():
        value = chosen.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            raise ValueError(f"{name}: must be an integer from {low}{f' to {high}' if high else ' up'}, got {value!r}")
    return chosen


def trusted_endpoint_regex(service_url: str) -> str:
    """A regex admitting exactly ``service_url``'s scheme, host and port."""
    return "^" + re.escape(_service_base(service_url)) + "/.*$"


# ---------------------------------------------------------------------------------- steps
def _service_base(service_url: str) -> str:
    parts = urlsplit(service_url.rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"service URL {service_url!r}: expected http(s)://host:port")
    if parts.path or parts.query:
        raise ValueError(f"service URL {service_url!r}: give the base URL only (the connector adds /v1/rerank)")
    return f"{parts.scheme}://{parts.netloc}"


def _apply_cluster_settings(client: OpenSearch, base: str) -> None:
    body = templates.load("cluster-settings.json")
    existing = _trusted_endpoints(client)
    regex = trusted_endpoint_regex(base)
    body["persistent"][TRUSTED_KEY] = existing if regex in existing else [*existing, regex]
    request(client, "PUT", "/_cluster/settings", body, "applying ml-commons cluster settings")


def _trusted_endpoints(client: OpenSearch) -> list[str]:
    """The effective trusted connector endpoint regexes (transient, else persistent, else default)."""
    current = client.cluster.get_settings(include_defaults=True, flat_settings=True)
    for section in ("transient", "persistent", "defaults"):
        if TRUSTED_KEY in current.get(section, {}):
            return list(current[section][TRUSTED_KEY])
    return []


