"""`lrt-rerank opensearch up | down | status | index | pipeline`: a local OpenSearch node (or cluster) and its index."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lrt_rerank.commands.common import fail

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from lrt_rerank.datasets import Document
    from lrt_rerank.ops.opensearch import ClusterSpec


def register(sub: argparse._SubParsersAction) -> None:
    from lrt_rerank.commands.common import add_dense_model_arg
    from lrt_rerank.first_stage.analyzer import DEFAULT_STEMMER, STEMMERS
    from lrt_rerank.opensearch.connection import add_connection_args, refuse_secret_args
    from lrt_rerank.ops.opensearch import DEFAULT_VERSION

    parser = sub.add_parser(
        "opensearch",
        help="run a local OpenSearch node or cluster (Maven Central artifacts), index a dataset, install the rerank pipeline",
        description=(
            "A local OpenSearch (one node, or --nodes N on 127.0.0.1) with k-NN, ml-commons and neural-search, "
            "built from Maven Central artifacts."
        ),
    )
    actions = parser.add_subparsers(dest="opensearch_command", required=True, metavar="{up,down,status,index,pipeline}")

    def node_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--version", default=DEFAULT_VERSION, help="OpenSearch version (default: %(default)s)")
        p.add_argument(
            "--port", type=int, default=9200, help="HTTP port on 127.0.0.1 (of node 1; node i gets PORT+i-1) (default: %(default)s)"
        )
        p.add_argument("--work-dir", type=Path, help="artifact cache and node home (default: $LRT_OPENSEARCH_WORK, else /var/tmp/lrt-rerank-opensearch under root, else ~/.cache/lrt-rerank/opensearch)")

    up = actions.add_parser("up", help="download (first time), assemble and start the node(s); wait for green/yellow")
    node_args(up)
    up.add_argument(
        "--nodes", type=int, default=1, help="cluster nodes on 127.0.0.1, each with its own ports, data and name (default: %(default)s)"
    )
    up.add_argument(
        "--transport-port",
        type=int,
        help="transport port of node 1 in a cluster (node i gets TRANSPORT_PORT+i-1) (default: --port + 100)",
    )
    up.add_argument("--heap-mb", type=int, help="JVM heap per node in MB, at most 1024 (default: 1024 for one node, 512 each for more)")
    up.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the node (default: %(default)s)")
    up.add_argument(
        "--secure",
        action="store_true",
        help="with the security plugin: TLS on HTTP and transport (a generated CA), user admin with a generated "
        "password in a 0600 file; `status` names the files",
    )
    up.set_defaults(func=cmd_up)

    down = actions.add_parser("down", help="stop the node (every node of the cluster) started by `up` with this --port")
    node_args(down)
    down.set_defaults(func=cmd_down)

    st = actions.add_parser(
        "status", help="is each node running, and the cluster's health and members; exit 1 when no node runs"
    )
    node_args(st)
    st.add_argument("--json", action="store_true", help="print a JSON object")
    st.set_defaults(func=cmd_status)

    index = actions.add_parser(
        "index",
        help="index a BEIR dataset: text fields + knn_vector (lucene HNSW) of bi-encoder embeddings",
        description="Create the index (mapping from opensearch/index-mapping.json) and bulk-load corpus.jsonl with embeddings.",
    )
    source = index.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", type=Path, help="BEIR folder with corpus.jsonl (documents are embedded now)")
    source.add_argument(
        "--from-embedded-index",
        type=Path,
        metavar="DIR",
        help="load the documents and embeddings of an index built by `lrt-rerank index` (no re-embedding)",
    )
    index.add_argument("--index", required=True, help="index name")
    index.add_argument(
        "--stemmer",
        choices=STEMMERS,
        help=f"BM25 stemming: Snowball English (Porter2) or none (default: the embedded index's with "
        f"--from-embedded-index, else an existing index's, else {DEFAULT_STEMMER})",
    )
    add_connection_args(index)
    add_dense_model_arg(index)
    index.add_argument("--batch-size", type=int, default=64, help="documents per embedding and bulk batch (default: %(default)s)")
    index.add_argument("--recreate", action="store_true", help="delete the index first if it exists")
    index.add_argument(
        "--late-interaction",
        type=Path,
        metavar="MODEL_DIR",
        help="encode every document's tokens once with this ColBERT: stored in the node (OpenSearch 3.3+, rescored there "
        "by lateInteractionScore) and, with --redis-url, in the service's document cache (any version)",
    )
    index.add_argument(
        "--late-dtype", choices=("float16", "int8"), default="float16", help="token values stored in the node (default: %(default)s)"
    )
    index.add_argument(
        "--redis-url", help="with --late-interaction: fill this Redis (the service's --redis-url) with the document tokens"
    )
    index.set_defaults(func=cmd_index)

    pipe = actions.add_parser(
        "pipeline",
        help="install the RRF search pipelines and the ml-commons model that calls the rerank service",
        description="Idempotent: cluster settings, connector, model (registered and deployed), search pipelines.",
    )
    add_connection_args(pipe)
    pipe.add_argument("--service-url", default="http://127.0.0.1:8000", help="rerank service base URL (default: %(default)s)")
    pipe.add_argument(
        "--service-api-key-file",
        type=Path,
        metavar="FILE",
        help="file whose first line is the rerank service's API key; the connector stores it as an (encrypted) "
        "credential and sends it as `Authorization: Bearer` (default: no key)",
    )
    refuse_secret_args(pipe, "--api-key", "--service-api-key", instead="--service-api-key-file FILE")
    pipe.add_argument("--read-timeout", type=int, default=5, help="seconds the connector waits for the service (default: %(default)s)")
    pipe.add_argument(
        "--fusion",
        type=Path,
        metavar="FILE",
        help="fusion.json of `lrt-rerank tune`: installed in the node (pipeline lrt-fusion) when the node can run it, "
        "else the node keeps RRF and the client applies it (docs/tuned-fusion.md)",
    )
    pipe.add_argument(
        "--plan", type=Path, metavar="FILE",
        help="plan.json of `lrt-rerank plan`: checked against what the node can run; its stages run in the service "
        "(serve --plan), the node sends its top hits (size >= the first stage's depth)",
    )
    from lrt_rerank.commands.common import add_long_document_args

    add_long_document_args(pipe)  # sent by the connector with every request (docs/long-documents.md)
    pipe.set_defaults(func=cmd_pipeline)


def _cluster(args: argparse.Namespace) -> ClusterSpec:
    """The cluster `up` asks for, or for `down`/`status` the one `up` recorded for this --port."""
    from lrt_rerank.ops.opensearch import ClusterSpec, default_work_dir, recorded_cluster

    work_dir = args.work_dir or default_work_dir()
    if getattr(args, "nodes", None) is None:
        return recorded_cluster(args.version, args.port, work_dir)
    return ClusterSpec(args.nodes, args.version, args.port, args.heap_mb, work_dir, args.transport_port, args.secure)


def cmd_up(args: argparse.Namespace) -> int:
    from lrt_rerank.opensearch.templates import TemplateError
    from lrt_rerank.ops.opensearch import NodeError, up_cluster
    from lrt_rerank.ops.opensearch.security import connection_json

    started = time.monotonic()
    try:
        cluster = _cluster(args)
        states = up_cluster(cluster, timeout=args.timeout, progress=lambda m: print(m, file=sys.stderr))
    except (NodeError, TemplateError, ValueError) as exc:
        return fail("opensearch up", exc)
    for state in states:
        print(f"{state.name}: OpenSearch {state.version} {state.health} at {state.url} (pid {state.pid}); log: {state.log_path}")
    if cluster.secure:
        print(_secured_line(connection_json(cluster.members()[0])))
    print(f"ready in {time.monotonic() - started:.1f} s")
    return 0


def _secured_line(connection: dict[str, object]) -> str:
    return (
        f"secured: user {connection['user']}, password in {connection['password_file']}, CA {connection['ca_certs']}\n"
        f"  e.g. --url {connection['url']} --user {connection['user']} --password-file {connection['password_file']} "
        f"--ca-certs {connection['ca_certs']}"
    )


def cmd_down(args: argparse.Namespace) -> int:
    from lrt_rerank.ops.opensearch import down_cluster

    try:
        stopped = down_cluster(_cluster(args))
    except (ValueError, OSError) as exc:
        return fail("opensearch down", exc)
    print(f"stopped {stopped} node{'s' if stopped != 1 else ''}" if stopped else "not running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from lrt_rerank.ops.opensearch import cluster_status
    from lrt_rerank.ops.opensearch.cluster import rerank_model_state

    try:
        cluster = _cluster(args)
        state = cluster_status(cluster)
    except ValueError as exc:
        return fail("opensearch status", exc)
    model = rerank_model_state(cluster) if state.health is not None else None
    if args.json:
        print(json.dumps({**state.to_json(), "rerank_model": model}))
        return 0 if state.running else 1
    for node in state.nodes:
        if node.running:
            print(f"{node.name}: running, pid {node.pid}, OpenSearch {node.version}, {node.url}\n  log: {node.log_path}")
        else:
            print(f"{node.name}: not running ({node.url}); files in {node.home}")
    if state.health is not None:
        members = ", ".join(state.joined)
        print(f"cluster health {state.health}; {len(state.joined)} node(s) joined: {members}; cluster manager {state.cluster_manager}")
    if model is not None:
        print(f"rerank model {model.get('model_id', '')}: {model.get('summary', model.get('error'))}")
    if "password_file" in state.connection:
        print(_secured_line(state.connection))
    return 0 if state.running else 1


def cmd_index(args: argparse.Namespace) -> int:
    import numpy as np

    from lrt_rerank import BiEncoder
    from lrt_rerank.datasets import DatasetError, load_corpus
    from lrt_rerank.first_stage.embedded import EMBEDDINGS, EmbeddedFirstStage, IndexFormatError
    from lrt_rerank.models.resolve import dense_model_dir
    from lrt_rerank.opensearch.client import connect
    from lrt_rerank.opensearch.connection import settings_from_args
    from lrt_rerank.opensearch.indexing import IndexingError, index_documents
    from lrt_rerank.opensearch.late import node_has_late_interaction
    from lrt_rerank.opensearch.templates import TemplateError

    if args.batch_size < 1:
        return fail("opensearch index", ValueError("--batch-size must be at least 1"))
    if "," in str(args.dense_model):
        return fail("opensearch index", ValueError(f"--dense-model {args.dense_model}: an OpenSearch index holds one dense model"))
    started = time.monotonic()
    try:
        connection = settings_from_args(args)
        model_dir = dense_model_dir(args.dense_model)
        vectors = None
        stemmer = args.stemmer
        if args.from_embedded_index is not None:
            stage = EmbeddedFirstStage.open(args.from_embedded_index, model_dir=model_dir)
            documents = stage.documents
            vectors = np.load(args.from_embedded_index / EMBEDDINGS, allow_pickle=False)
            stemmer = args.stemmer or stage.analyzer.stemmer
        else:
            documents = list(load_corpus(args.dataset / "corpus.jsonl").values())
        encoder = BiEncoder.load(str(model_dir))
        client = connect(connection)
        if args.late_interaction is not None and args.redis_url is None and not node_has_late_interaction(client):
            raise ValueError(
                f"{args.url} has no lateInteractionScore (k-NN of OpenSearch 3.3 or newer): add --redis-url URL to fill "
                "the service's document cache instead"
            )
        report = index_documents(
            client, args.index, documents, encoder, batch_size=args.batch_size, recreate=args.recreate, vectors=vectors,
            stemmer=stemmer,
        )
    except (DatasetError, IndexFormatError, IndexingError, TemplateError, ValueError, ConnectionError) as exc:
        return fail("opensearch index", exc)
    for failure in report.failures[:20]:
        print(f"  document {failure.doc_id}: {failure.reason}", file=sys.stderr)
    if len(report.failures) > 20:
        print(f"  ... and {len(report.failures) - 20} more failures", file=sys.stderr)
    print(
        f"indexed {report.indexed} of {report.total} documents into {args.index} at {args.url} "
        f"in {time.monotonic() - started:.1f} s ({len(report.failures)} failed)"
    )
    if report.failures:
        return 1
    if args.late_interaction is not None:
        return _index_late_interaction(args, client, documents)
    return 0


def _index_late_interaction(args: argparse.Namespace, client: OpenSearch, documents: list[Document]) -> int:
    """`index --late-interaction`: the documents' tokens into the node (3.3+) and/or Redis."""
    from lrt_rerank._core import LrtError
    from lrt_rerank.late import ColBERT
    from lrt_rerank.opensearch.late import index_late_interaction, node_has_late_interaction

    started = time.monotonic()
    in_node = node_has_late_interaction(client)
    try:
        model = ColBERT.load(args.late_interaction)
        late = index_late_interaction(
            model,
            [d.id for d in documents],
            [d.full_text for d in documents],
            client=client if in_node else None,
            index=args.index,
            node_dtype=args.late_dtype,
            redis_url=args.redis_url,
            batch_size=args.batch_size,
        )
    except (OSError, ValueError, LrtError) as exc:
        return fail("opensearch index", exc)
    where = []
    if late.node_dtype is not None:
        where.append(f"node ({late.node_dtype}, {late.per_document(late.node_json_bytes):.0f} JSON bytes per document)")
    if args.redis_url is not None:
        where.append(f"Redis (float16, {late.per_document(late.redis_bytes):.0f} bytes per document)")
    print(
        f"late interaction: {late.tokens} token embeddings of {late.documents} documents encoded once by {model.model_dir} "
        f"in {time.monotonic() - started:.1f} s, stored in {' and '.join(where)}"
    )
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from lrt_rerank.opensearch.client import connect
    from lrt_rerank.opensearch.connection import read_secret_file, settings_from_args
    from lrt_rerank.opensearch.pipeline import LONG_DOCUMENT_FIELDS, PipelineError, install_pipeline, place_fusion
    from lrt_rerank.opensearch.templates import TemplateError
    from lrt_rerank.rerank.fusion import load_fusion

    try:
        fusion = load_fusion(args.fusion) if args.fusion is not None else None
        plan_note = _plan_note(args.plan) if args.plan is not None else None
        key_file = args.service_api_key_file
        api_key = read_secret_file(key_file, "--service-api-key-file") if key_file is not None else None
        if api_key is not None and _plain_remote(args.service_url):
            print(
                f"lrt-rerank opensearch pipeline: warning: the service key travels unencrypted to {args.service_url}; "
                "serve it over https (serve --ssl-certfile) or terminate TLS in front of it",
                file=sys.stderr,
            )
        client = connect(settings_from_args(args))
        installed = install_pipeline(
            client,
            service_url=args.service_url,
            api_key=api_key,
            read_timeout_s=args.read_timeout,
            long_documents={name: getattr(args, name) for name in LONG_DOCUMENT_FIELDS},
        )
        placed = place_fusion(client, fusion) if fusion is not None else None
    except (PipelineError, TemplateError, ValueError, ConnectionError) as exc:
        return fail("opensearch pipeline", exc)
    report = installed.to_json()
    if placed is not None:
        report["fusion"] = placed.to_json()
    if plan_note is not None:
        report["plan"] = plan_note
        print(f"lrt-rerank opensearch pipeline: {plan_note['note']}", file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


def _plan_note(path: Path) -> dict[str, object]:
    """What the node-side pipeline does with a plan: its re-ranking processor sends one list to one service call,
    so the stages (a cascade included) run in a service started with ``serve --plan``."""
    from lrt_rerank.plan.planfile import Plan

    plan = Plan.load(path)
    stages = plan.config.stages
    if not stages:
        note = "the plan keeps the first stage: search with pipeline lrt-rrf (no re-ranking)"
    elif len(stages) == 1:
        note = (f"the plan re-ranks the top {stages[0].depth}: search with size {stages[0].depth} through lrt-rrf-rerank, "
                f"the service started with `lrt-rerank serve --plan {path}`")
    else:
        note = (f"the node-side pipeline cannot run a cascade ({len(stages)} stages: one rerank processor, one model call); "
                f"start the service with `lrt-rerank serve --plan {path}` so that it runs the stages, and search with size "
                f"{stages[0].depth} through lrt-rrf-rerank")
    return {"pipeline": plan.describe(), "stages": len(stages), "node_runs_cascade": False if len(stages) > 1 else None, "note": note}


def _plain_remote(url: str) -> bool:
    """An http:// URL to a host other than the loopback interface."""
    import ipaddress
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True

