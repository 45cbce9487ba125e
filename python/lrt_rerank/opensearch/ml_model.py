"""The ml-commons side of the rerank pipeline: connector and remote model, deployed and settled.

Readiness: :func:`deploy` returns only once the model is ``DEPLOYED`` on every node ml-commons
planned for it and has stayed so for a settling window (:data:`SETTLE_S`). ml-commons can start
deploying a model again after a deploy call has returned (a node joins, its sync-up job runs, a
restart): a state seen once is not a state that holds. ``PARTIALLY_DEPLOYED`` is accepted, with a warning, only after every deploy attempt.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError, TransportError

from lrt_rerank.opensearch import templates

ML = "/_plugins/_ml"
DEPLOY_TIMEOUT_S = 120.0
"""How long :func:`deploy` waits, in all, for a settled deploy."""
SETTLE_S = 12.0
"""How long a deployed model must stay deployed everywhere: longer than one run of ml-commons'
sync-up job (``plugins.ml_commons.sync_up_job_interval_in_seconds``, 10 s by default)."""
POLL_S = 0.5
RETRY_S = 5.0
"""Seconds between two deploy requests of ours (the model's state follows a finished task with a delay)."""
DUPLICATE = "duplicate"
DUPLICATE_MESSAGE = "Duplicate deploy model task"
"""ml-commons' answer to a deploy request while another deploy of the same model runs."""
MASTER_KEY_WAIT_S = 60.0
STUCK_S = 30.0
"""A remote model's deploy takes well under a second: one ``DEPLOYING`` this long is a failed deploy
that a node's model cache keeps (see :func:`_clear_failed_deploy`)."""

log = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """Installing the pipeline failed; the message names the step and OpenSearch's answer."""


@dataclass(frozen=True)
class ModelReadiness:
    """A remote model's deploy state as ml-commons reports it."""

    model_id: str
    state: str | None
    """``DEPLOYED``, ``DEPLOYING``, ``PARTIALLY_DEPLOYED``, ``DEPLOY_FAILED``, ``UNDEPLOYED``... or None."""
    nodes: int
    """Nodes that have it (``current_worker_node_count``)."""
    planned: int | None
    """Nodes it should be on (``planning_worker_node_count``); None when ml-commons does not say."""

    @property
    def everywhere(self) -> bool:
        return self.state == "DEPLOYED" and (self.planned is None or self.nodes >= self.planned)

    def describe(self) -> str:
        where = f"on {self.nodes}/{self.planned} node(s)" if self.planned is not None else f"on {self.nodes} node(s)"
        return f"{self.state or 'unknown'} {where}"

    def to_json(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "state": self.state, "nodes": self.nodes, "planned": self.planned}


def readiness(client: OpenSearch, model_id: str) -> ModelReadiness:
    """The model's state and the nodes that have it."""
    try:
        model = client.transport.perform_request("GET", f"{ML}/models/{model_id}")
    except NotFoundError:
        raise PipelineError(f"model {model_id} does not exist (deleted while being deployed?)") from None
    except TransportError as exc:
        raise PipelineError(f"reading model {model_id}: failed with {exc.status_code}: {exc.info or exc.error}") from exc
    planned = model.get("planning_worker_node_count")
    return ModelReadiness(
        model_id, model.get("model_state"), int(model.get("current_worker_node_count") or 0), int(planned) if planned is not None else None
    )


def deploy(client: OpenSearch, model_id: str, attempts: int = 4, settle_s: float = SETTLE_S, timeout_s: float = DEPLOY_TIMEOUT_S) -> ModelReadiness:
    """Deploy the model unless it is deployed, and return once it is deployed everywhere and has stayed
    so for ``settle_s`` (see the module's docstring).

    After a cluster restart ml-commons redeploys models by itself; a deploy request racing with that
    answers 409 (version conflict on the model document). A node whose first read of ml-commons'
    master key fails or times out leaves the model ``DEPLOY_FAILED``, or ``DEPLOYING`` for good: such a
    model (``DEPLOYING`` for :data:`STUCK_S`) is undeployed, which clears the failed deploy from every
    node's cache, and deployed again. At most ``attempts`` deploy requests in all. A model still
    ``PARTIALLY_DEPLOYED`` after the attempts (a rejoined node can keep a stuck task of its own) answers
    from the nodes that have it: returned with a warning once that state has held for ``settle_s``.
    Anything else after ``timeout_s`` is a :class:`PipelineError` naming the state waited for and the
    state seen.
    """
    step = f"deploying model {model_id}"
    deadline = time.monotonic() + timeout_s
    asked = 0
    next_ask = 0.0
    held_since: float | None = None
    held_state: str | None = None
    deploying_since: float | None = None
    while True:
        ready = readiness(client, model_id)
        now = time.monotonic()
        settled_partially = ready.state == "PARTIALLY_DEPLOYED" and asked >= attempts
        if ready.everywhere or settled_partially:
            if held_since is None or held_state != ready.state:
                held_since, held_state = now, ready.state
            if now - held_since >= settle_s:
                if settled_partially:
                    log.warning("%s: %s after %d attempts; it answers from the nodes that have it", step, ready.describe(), attempts)
                return ready
        else:
            held_since = held_state = None
            deploying_since = (deploying_since or now) if ready.state == "DEPLOYING" else None
            stuck = deploying_since is not None and now - deploying_since >= STUCK_S
            if (ready.state != "DEPLOYING" or stuck) and asked < attempts and now >= next_ask:
                cleared = ready.state == "DEPLOY_FAILED" or stuck
                if cleared:
                    _clear_failed_deploy(client, model_id, step, ready.state)
                    deploying_since = None
                # another deploy of this model in flight (ml-commons' own, on a new cluster) is not an attempt
                # of ours (unless the model was just undeployed): wait for it to end; either way give the
                # model's state time to follow
                answer = _ask_deploy(client, model_id, step)
                asked += 1 if cleared or answer != DUPLICATE else 0
                next_ask = time.monotonic() + RETRY_S
                continue
        if now > deadline:
            raise PipelineError(
                f"{step}: waited {timeout_s:.0f} s for DEPLOYED on every node, held for {settle_s:.0f} s; "
                f"the model is {ready.describe()} after {asked} deploy request(s); see the node log"
            )
        time.sleep(POLL_S)


def _clear_failed_deploy(client: OpenSearch, model_id: str, step: str, state: str | None) -> None:
    """Undeploy a model whose deploy failed (``DEPLOY_FAILED``) or never ends (``DEPLOYING`` for
    :data:`STUCK_S`) before deploying it again. A deploy that failed inside a node (one whose first read
    of the master key failed or timed out after a restart, for one) can leave the model in that node's
    model cache: every later deploy is then refused as a duplicate for the life of the node, and the
    sync-up job may even report the model as ``DEPLOYING`` from that cache. An undeploy empties the
    model's entry in every node's cache."""
    log.info("%s: it is %s; undeploying it first, so that no node keeps a failed deploy of it", step, state)
    try:
        client.transport.perform_request("POST", f"{ML}/models/{model_id}/_undeploy")
    except TransportError as exc:
        log.warning("%s: undeploying the failed model answered %s: %s", step, exc.status_code, exc.info or exc.error)


def _ask_deploy(client: OpenSearch, model_id: str, step: str) -> str:
    """Ask for a deploy and wait for its task; :data:`DUPLICATE` when ml-commons refused it because another
    deploy of the model is running, else ``"asked"``."""
    try:
        answer = request(client, "POST", f"{ML}/models/{model_id}/_deploy", None, step)
    except PipelineError as exc:
        if DUPLICATE_MESSAGE in str(exc):
            return DUPLICATE
        if "version_conflict" not in str(exc):
            raise
        return "asked"
    if "task_id" in answer:
        try:
            wait_task(client, str(answer["task_id"]), step)
        except PipelineError as exc:
            if DUPLICATE_MESSAGE in str(exc):
                return DUPLICATE
            log.warning("%s", exc)
    return "asked"


def settle_shards(client: OpenSearch, timeout_s: int = 60) -> None:
    """Wait (at most ``timeout_s``) until no shard is initializing: on a cluster that just started,
    ml-commons' config index (which holds the key encrypting connector credentials) may still be
    allocating, and a node that cannot read it fails to create the connector or deploy the model."""
    try:
        client.cluster.health(
            params={"wait_for_no_initializing_shards": "true", "timeout": f"{timeout_s}s", "request_timeout": timeout_s + 30}
        )
    except TransportError as exc:
        log.warning("shards still initializing after %d s (%s); installing anyway", timeout_s, exc)


def find_one(client: OpenSearch, kind: str, name: str) -> str | None:
    """Id of the connector/model called ``name`` (the oldest, if several), or None."""
    query: dict[str, Any] = {"bool": {"filter": [{"term": {"name.keyword": name}}]}}
    if kind == "models":
        query["bool"]["must_not"] = [{"exists": {"field": "chunk_number"}}]
    body = {"size": 10, "query": query, "sort": [{"created_time": {"order": "asc", "unmapped_type": "long"}}]}
    try:
        found = request(client, "POST", f"{ML}/{kind}/_search", body, f"searching {kind} named {name}")
    except PipelineError as exc:
        if "index_not_found" in str(exc):  # no connector/model was ever created
            return None
        raise
    hits = found.get("hits", {}).get("hits", [])
    return str(hits[0]["_id"]) if hits else None


def create_connector(client: OpenSearch, body: dict[str, Any]) -> str:
    """Create the connector. On a new cluster ml-commons first creates the master key that encrypts
    credentials (in its config index) and can answer "Fetching master key timed out" while that
    index is still being allocated: such answers are retried for up to ``MASTER_KEY_WAIT_S``."""
    deadline = time.monotonic() + MASTER_KEY_WAIT_S
    while True:
        try:
            created = request(client, "POST", f"{ML}/connectors/_create", body, "creating the rerank connector")
        except PipelineError as exc:
            if "master key" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(2.0)
            continue
        return str(created["connector_id"])


def register_model(client: OpenSearch, name: str, connector_id: str) -> str:
    body = templates.load("model.json")
    body["name"] = name
    body["connector_id"] = connector_id
    registered = request(client, "POST", f"{ML}/models/_register", body, f"registering model {name}")
    model_id = registered.get("model_id")
    if model_id is None:
        model_id = wait_task(client, str(registered["task_id"]), f"registering model {name}").get("model_id")
    if model_id is None:
        raise PipelineError(f"registering model {name}: no model_id in the answer {registered}")
    return str(model_id)


def wait_task(client: OpenSearch, task_id: str, step: str, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = request(client, "GET", f"{ML}/tasks/{task_id}", None, step)
        if task.get("state") in ("COMPLETED", "COMPLETED_WITH_ERROR"):  # the latter: some nodes failed; callers check
            return task
        if task.get("state") == "FAILED":
            raise PipelineError(f"{step}: task {task_id} failed: {task.get('error')}")
        time.sleep(POLL_S)
    raise PipelineError(f"{step}: task {task_id} did not finish in {timeout_s:.0f} s")


def request(client: OpenSearch, method: str, path: str, body: dict[str, Any] | None, step: str) -> dict[str, Any]:
    try:
        answer = client.transport.perform_request(method, path, body=body)
    except TransportError as exc:
        raise PipelineError(f"{step}: {method} {path} failed with {exc.status_code}: {exc.info or exc.error}") from exc
    return answer if isinstance(answer, dict) else {}
