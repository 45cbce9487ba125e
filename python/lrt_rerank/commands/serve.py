"""`lrt-rerank serve`: run the HTTP rerank service under uvicorn."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

API_KEY_ENV = "LRT_RERANK_API_KEY"

SERVE_HELP = "run the HTTP rerank service (Cohere- and TEI-compatible)"


def register(sub: argparse._SubParsersAction) -> None:
    from lrt_rerank.backends import add_backend_arg
    from lrt_rerank.opensearch.connection import refuse_secret_args

    p = sub.add_parser(
        "serve",
        help=SERVE_HELP,
        description=(
            "Serve POST /v1/rerank (Cohere shape), POST /rerank (TEI shape), GET /v1/models, GET /health and "
            "GET /metrics. Scores are probabilities calibrated by the model card's calibration (sigmoid(logit) "
            "for a card without one) unless a request asks for raw_scores."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port to bind (default: %(default)s)")
    p.add_argument(
        "--model",
        default="default",
        help="cross-encoder or late-interaction (ColBERT) model directory, Hugging Face / PyLate / colbert-ai "
        "snapshot folder, or 'default' (default)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (uvicorn multi-process mode); each has its own in-process cache (default: 1)",
    )
    p.add_argument(
        "--api-key-file",
        type=Path,
        metavar="FILE",
        help="require `Authorization: Bearer KEY` on the rerank routes, KEY being this file's first line "
        "(default: $LRT_RERANK_API_KEY, else no key)",
    )
    refuse_secret_args(p, "--api-key", instead=f"--api-key-file FILE or ${API_KEY_ENV}")
    p.add_argument("--ssl-certfile", type=Path, metavar="PEM", help="serve https with this certificate (chain) (default: http)")
    p.add_argument("--ssl-keyfile", type=Path, metavar="PEM", help="the private key of --ssl-certfile")
    p.add_argument("--redis-url", help="shared Redis score cache, e.g. redis://127.0.0.1:6379/0 (default: none)")
    p.add_argument(
        "--redis-ttl", type=int, default=86_400, help="seconds a score lives in Redis (default: %(default)s)"
    )
    p.add_argument(
        "--cache-capacity", type=int, default=100_000, help="in-process score cache entries (default: %(default)s)"
    )
    p.add_argument(
        "--document-cache-mib",
        type=float,
        default=256.0,
        help="a late-interaction model's in-process cache of document token matrices, in MiB (default: %(default)s); "
        "with --redis-url they are shared there too",
    )
    p.add_argument(
        "--max-documents", type=int, default=1000, help="documents allowed per request (default: %(default)s)"
    )
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="request body size limit (default: %(default)s)")
    p.add_argument(
        "--threads",
        type=int,
        help="intra-op threads of each worker's model (default: the CPU count divided by --workers, at least 1)",
    )
    add_backend_arg(p)
    p.add_argument(
        "--max-concurrent-scoring",
        type=int,
        default=2,
        help="requests scored at the same time per worker; others queue (default: %(default)s)",
    )
    p.add_argument(
        "--graceful-timeout",
        type=int,
        default=30,
        help="seconds in-flight requests get to finish after SIGTERM/SIGINT (default: %(default)s)",
    )
    p.add_argument(
        "--any-model-name",
        action="store_true",
        help="accept any `model` name on /v2/rerank (default: only the served model's id, as GET /v1/models shows it)",
    )
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=False, help="log every request")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    from lrt_rerank.commands.common import add_long_document_args

    add_long_document_args(p)  # the served default; a request may choose its own (docs/long-documents.md)
    p.add_argument(
        "--fusion",
        metavar="FILE",
        help="fusion.json of `lrt-rerank tune`: requests that send first_stage_scores are ordered by it (docs/tuned-fusion.md)",
    )
    p.add_argument(
        "--plan",
        metavar="FILE",
        help="plan.json of `lrt-rerank plan`: serve its stages (a cascade runs them in turn) in place of --model",
    )
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    from lrt_rerank.extras import require

    require("serve")  # all of it, before anything else: one line naming the extra if it is missing
    import redis
    import uvicorn

    from lrt_rerank import LrtError
    from lrt_rerank.commands.common import arg_values
    from lrt_rerank.service.served import LONG_DOCUMENTS_ENV, load_served_model, long_document_env
    from lrt_rerank.service.settings import SETTINGS_ENV, ServiceSettings

    if args.document_cache_mib <= 0:
        print("lrt-rerank serve: --document-cache-mib must be > 0", file=sys.stderr)
        return 2
    for name in ("workers", "max_documents", "max_body_bytes", "cache_capacity", "max_concurrent_scoring", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            print(f"lrt-rerank serve: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    try:
        api_key = _api_key(args)
        _check_tls(args)
    except ValueError as err:
        print(f"lrt-rerank serve: {err}", file=sys.stderr)
        return 2
    settings = ServiceSettings(
        **arg_values(
            args, "model", "max_documents", "max_body_bytes", "redis_url", "cache_capacity", "document_cache_mib",
            "max_concurrent_scoring", "any_model_name", "backend",
        ),
        api_key=api_key,
        redis_ttl_s=args.redis_ttl,
        threads=args.threads or max(1, (os.cpu_count() or 1) // args.workers),
    )
    try:
        # Loaded once here: a bad --model fails now, with its reason, and workers do not each build the
        # default model or import a snapshot again (they load the directory the probe used).
        windows = long_document_env(args)
        probe = load_served_model(settings.model, threads=1, windows=json.loads(windows), backend=settings.backend)
        settings = replace(settings, model=str(probe.model_dir))
        del probe
        if settings.redis_url:
            redis.Redis.from_url(settings.redis_url).close()  # parses the URL; connects lazily
    except (OSError, ValueError, LrtError) as err:
        print(f"lrt-rerank serve: {err}", file=sys.stderr)
        return 2
    if args.plan is not None:
        from lrt_rerank.service.served import PLAN_ENV, plan_env

        try:
            os.environ[PLAN_ENV] = plan_env(args.plan, args.model)
        except (OSError, ValueError, LrtError) as err:  # names the file, the field or the model
            print(f"lrt-rerank serve: {err}", file=sys.stderr)
            return 2
    os.environ[SETTINGS_ENV] = settings.to_env()
    os.environ[LONG_DOCUMENTS_ENV] = windows
    if args.fusion is not None:
        from lrt_rerank.service.served import FUSION_ENV, fusion_env

        try:
            os.environ[FUSION_ENV] = fusion_env(args.fusion)
        except ValueError as err:  # FusionFormatError: names the file and the field
            print(f"lrt-rerank serve: {err}", file=sys.stderr)
            return 2
    metrics_dir = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="lrt-rerank-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run(
            "lrt_rerank.service.app:create_app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            access_log=args.access_log,
            timeout_graceful_shutdown=args.graceful_timeout,
            ssl_certfile=str(args.ssl_certfile) if args.ssl_certfile else None,
            ssl_keyfile=str(args.ssl_keyfile) if args.ssl_keyfile else None,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _api_key(args: argparse.Namespace) -> str | None:
    """The service's key: --api-key-file, else $LRT_RERANK_API_KEY, else None (never an argument: `ps` shows those)."""
    if args.api_key_file is not None:
        from lrt_rerank.opensearch.connection import read_secret_file

        return read_secret_file(args.api_key_file, "--api-key-file")
    return os.environ.get(API_KEY_ENV) or None


def _check_tls(args: argparse.Namespace) -> None:
    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        raise ValueError("--ssl-certfile and --ssl-keyfile go together")
    for flag, path in (("--ssl-certfile", args.ssl_certfile), ("--ssl-keyfile", args.ssl_keyfile)):
        if path is not None and not path.is_file():
            raise ValueError(f"{flag} {path}: no such file")

