"""`lrt-rerank stack up | down | status`: rerank replicas, Redis, HAProxy and an OpenSearch cluster on 127.0.0.1."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path

from lrt_rerank.commands.common import arg_values, fail


def register(sub: argparse._SubParsersAction) -> None:
    from lrt_rerank.ops.opensearch import DEFAULT_VERSION, default_work_dir
    from lrt_rerank.opensearch.connection import refuse_secret_args
    from lrt_rerank.ops.stack.spec import default_state_dir

    parser = sub.add_parser(
        "stack",
        help="run the scale-out stack: rerank replicas sharing Redis behind HAProxy, and an OpenSearch cluster",
        description=(
            "Redis, N `lrt-rerank serve` replicas sharing it, HAProxy health-checking /health in front of them, "
            "and (unless --no-opensearch) an OpenSearch cluster whose rerank pipeline calls the load balancer. "
            "Everything listens on 127.0.0.1; see docs/scale-out.md."
        ),
    )
    actions = parser.add_subparsers(dest="stack_command", required=True, metavar="{up,down,status}")

    def state_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--state-dir", type=Path, default=default_state_dir(), help="pid files, logs, configs (default: %(default)s)")

    up = actions.add_parser("up", help="start whatever of the stack is not running; wait until it serves")
    state_arg(up)
    up.add_argument("--replicas", type=int, default=2, help="rerank service replicas (default: %(default)s)")
    up.add_argument("--port", type=int, default=8000, help="load balancer port (default: %(default)s)")
    up.add_argument("--replica-port", type=int, default=8001, help="port of replica 1; replica i gets PORT+i-1 (default: %(default)s)")
    up.add_argument("--stats-port", type=int, default=8404, help="HAProxy stats page port (default: %(default)s)")
    up.add_argument("--redis-port", type=int, default=6379, help="Redis port (default: %(default)s)")
    up.add_argument("--model", default="default", help="cross-encoder of every replica (default: %(default)s)")
    up.add_argument(
        "--api-key-file",
        type=Path,
        metavar="FILE",
        help="file whose first line is the bearer key the replicas require; the connector sends it as a credential",
    )
    refuse_secret_args(up, "--api-key", instead="--api-key-file FILE")
    up.add_argument("--threads", type=int, help="intra-op threads per replica (default: CPU count / replicas)")
    up.add_argument("--read-timeout", type=int, default=5, help="seconds the connector waits for a re-rank (default: %(default)s)")
    up.add_argument("--no-opensearch", action="store_true", help="only Redis, the replicas and the load balancer")
    up.add_argument(
        "--nodes", type=int, default=3, help="OpenSearch nodes; 3 survive losing the cluster manager (default: %(default)s)"
    )
    up.add_argument(
        "--secure", action="store_true", help="OpenSearch with TLS and the admin user (`opensearch up --secure`; `opensearch status` names the files)"
    )
    up.add_argument("--opensearch-port", type=int, default=9200, help="HTTP port of OpenSearch node 1 (default: %(default)s)")
    up.add_argument("--heap-mb", type=int, help="JVM heap per OpenSearch node in MB (default: 512 each for 2+ nodes)")
    up.add_argument("--version", default=DEFAULT_VERSION, help="OpenSearch version (default: %(default)s)")
    up.add_argument("--work-dir", type=Path, default=default_work_dir(), help="OpenSearch work dir (default: %(default)s)")
    up.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each part (default: %(default)s)")
    up.set_defaults(func=cmd_up)

    down = actions.add_parser("down", help="stop everything `up` started (OpenSearch included)")
    state_arg(down)
    down.set_defaults(func=cmd_down)

    st = actions.add_parser("status", help="each process, the replicas the load balancer counts healthy; exit 1 if any is down")
    state_arg(st)
    st.add_argument("--json", action="store_true", help="print a JSON object")
    st.set_defaults(func=cmd_status)


def _reports_stack_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``handler`` with what the stack refuses (StackError, HAProxyError, ValueError) said in one line, exit status 1."""

    @wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from lrt_rerank.ops.stack.haproxy import HAProxyError
        from lrt_rerank.ops.stack.launcher import StackError

        try:
            return handler(args)
        except (StackError, HAProxyError, ValueError) as exc:
            return fail(f"stack {args.stack_command}", exc)

    return run


@_reports_stack_errors
def cmd_up(args: argparse.Namespace) -> int:
    from lrt_rerank.ops.opensearch import ClusterSpec
    from lrt_rerank.ops.stack.launcher import StackSpec, up

    started = time.monotonic()
    cluster = None
    if not args.no_opensearch:
        cluster = ClusterSpec(args.nodes, args.version, args.opensearch_port, args.heap_mb, args.work_dir, secure=args.secure)
    spec = StackSpec(
        **arg_values(args, "replicas", "port", "replica_port", "stats_port", "redis_port", "model", "api_key_file", "threads"),
        opensearch=cluster,
        read_timeout_s=args.read_timeout,
        state_dir=args.state_dir,
    )
    up(spec, progress=lambda m: print(m, file=sys.stderr), timeout_s=args.timeout)
    print(f"stack up in {time.monotonic() - started:.1f} s: rerank load balancer {spec.url}")
    if cluster is not None:
        print(f"OpenSearch {', '.join(cluster.urls)}; search pipeline lrt-rrf-rerank calls {spec.url}")
    return 0


@_reports_stack_errors
def cmd_down(args: argparse.Namespace) -> int:
    from lrt_rerank.ops.stack.launcher import down

    stopped = down(args.state_dir)
    print("stopped " + ", ".join(stopped) if stopped else "nothing was running")
    return 0


@_reports_stack_errors
def cmd_status(args: argparse.Namespace) -> int:
    from lrt_rerank.ops.stack.launcher import status

    state = status(args.state_dir)
    if args.json:
        print(json.dumps(state.to_json()))
    else:
        for proc in state.processes:
            print(f"{proc.name}: {'running, pid ' + str(proc.pid) if proc.pid else 'not running'}, {proc.url}  (log {proc.log_path})")
        print(f"load balancer: {len(state.replicas_up)} healthy replica(s): {', '.join(state.replicas_up) or 'none'}")
        for node in state.opensearch:
            print(f"{node.name}: {'running, pid ' + str(node.pid) if node.running else 'not running'}, {node.url}, health {node.health}")
        if state.rerank_model is not None:
            model = state.rerank_model
            print(f"rerank model {model.get('model_id', '')}: {model.get('summary', model.get('error'))}")
    everything = all(p.pid for p in state.processes) and all(n.running for n in state.opensearch)
    return 0 if everything else 1
