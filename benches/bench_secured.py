"""What security costs a search: the same hybrid query against a secured and an unsecured node, interleaved.

Two single nodes of the same version on 127.0.0.1, one started with ``opensearch up --secure``
(TLS on HTTP, basic authentication as the generated admin, the security plugin's checks on every
request) and one without, hold the same index: the bundled NFCorpus test corpus, vectors from the
cached embedded index. Each NFCorpus test query (``--rounds`` passes) is sent to both, in
alternating order, as the ``hybrid`` query through the ``lrt-rrf`` pipeline (k=10), from one
keep-alive client per node (opensearch-py, as the CLI uses it; the TLS handshake happens once per
connection, as in any long-lived client). Reported: p50/p95 per node and the secured/unsecured p50
ratio, into a section of benches/RESULTS.md unless --no-write.

    python benches/bench_secured.py                                   # nodes on 9200 (plain) and 9250 (secured)
    python benches/bench_secured.py --plain-port 19260 --plain-work-dir /var/tmp/x --no-write

A node already running on a port is used as it is; the nodes the bench started are stopped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benches" / "RESULTS.md"
SECTION_BEGIN = "<!-- bench_secured.py: begin -->"
SECTION_END = "<!-- bench_secured.py: end -->"
INDEX = "lrt-bench-secured"


def main(argv: list[str] | None = None) -> int:
    from lrt_rerank import BiEncoder
    from lrt_rerank.bundled import bundled_dataset_dir
    from lrt_rerank.datasets import load_dataset
    from lrt_rerank.first_stage.embedded import EMBEDDINGS
    from lrt_rerank.first_stage.index_cache import cached_index
    from lrt_rerank.models.resolve import default_model_dir
    from lrt_rerank.opensearch.client import connect
    from lrt_rerank.opensearch.indexing import index_documents
    from lrt_rerank.opensearch.pipeline import RRF_PIPELINE, ensure_rrf_pipeline
    from lrt_rerank.opensearch.queries import hybrid_body
    from lrt_rerank.ops.opensearch import NodeSpec, default_work_dir, down, status, up
    from lrt_rerank.ops.opensearch.security import admin_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plain-port", type=int, default=9200)
    parser.add_argument("--secure-port", type=int, default=9250)
    parser.add_argument("--work-dir", type=Path, default=default_work_dir(), help="the nodes' work dir (default: %(default)s)")
    parser.add_argument("--plain-work-dir", type=Path, help="another work dir for the unsecured node (default: --work-dir)")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the 323 test queries (default: %(default)s)")
    parser.add_argument("--warm-up", type=int, default=323, help="queries sent to both nodes before timing (default: %(default)s)")
    parser.add_argument("--no-write", action="store_true", help="do not update benches/RESULTS.md")
    args = parser.parse_args(argv)

    plain = NodeSpec(port=args.plain_port, work_dir=args.plain_work_dir or args.work_dir)
    secured = NodeSpec(port=args.secure_port, work_dir=args.work_dir, secure=True)
    started = [spec for spec in (plain, secured) if status(spec).version is None]
    try:
        for spec in (plain, secured):
            up(spec, timeout=900.0, progress=lambda m: print(m, file=sys.stderr))
        clients = {"unsecured": connect(plain.url), "secured": connect(admin_settings(secured))}
        dataset = load_dataset(bundled_dataset_dir(), "test")
        stage = cached_index(dataset, progress=False)
        vectors = np.load(stage.path / EMBEDDINGS, allow_pickle=False)
        encoder = BiEncoder.load(str(default_model_dir("bi-encoder")))
        for name, client in clients.items():
            if not client.indices.exists(index=INDEX) or client.count(index=INDEX)["count"] != len(stage.documents):
                print(f"indexing {len(stage.documents)} documents into {INDEX} on the {name} node", file=sys.stderr)
                index_documents(client, INDEX, stage.documents, encoder, recreate=True, progress=False, vectors=vectors)
            ensure_rrf_pipeline(client)
        texts = [dataset.queries[qid] for qid in dataset.eval_query_ids()]
        embedded = np.asarray(encoder.embed_queries(texts), dtype=np.float32).tolist()
        latencies: dict[str, list[float]] = {name: [] for name in clients}
        order = list(clients)
        for text, vector in zip(texts[: args.warm_up], embedded[: args.warm_up], strict=True):  # not timed: JIT, caches
            for client in clients.values():
                client.search(index=INDEX, body=hybrid_body(text, vector, 10, source=["doc_id"]), params={"search_pipeline": RRF_PIPELINE})
        for round_ in range(args.rounds):
            for i, (text, vector) in enumerate(zip(texts, embedded, strict=True)):
                body = hybrid_body(text, vector, 10, source=["doc_id"])
                for name in order if (i + round_) % 2 == 0 else order[::-1]:
                    began = time.perf_counter()
                    answer = clients[name].search(index=INDEX, body=body, params={"search_pipeline": RRF_PIPELINE})
                    latencies[name].append((time.perf_counter() - began) * 1000)
                    if len(answer["hits"]["hits"]) != 10:
                        raise RuntimeError(f"{name} node: {len(answer['hits']['hits'])} hits for {text!r}")
        for client in clients.values():
            client.close()
    finally:
        for spec in started:
            down(spec)
    text = markdown(latencies, " ".join(["python", "benches/bench_secured.py", *(argv if argv is not None else sys.argv[1:])]))
    print(text)
    if not args.no_write:
        from results_file import write_section  # benches/ is this script's folder

        write_section(text, SECTION_BEGIN, SECTION_END)
        print(f"written to {RESULTS}")
    return 0


def markdown(latencies: dict[str, list[float]], command: str) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    from results_file import lscpu_summary  # benches/ is this script's folder

    model, flags = lscpu_summary()
    p50 = {name: float(np.percentile(values, 50)) for name, values in latencies.items()}
    p95 = {name: float(np.percentile(values, 95)) for name, values in latencies.items()}
    lines = [
        f"## Secured against unsecured OpenSearch: hybrid search latency (`benches/bench_secured.py`, {when})",
        "",
        f"Machine: {os.cpu_count()} cores, `lscpu`: `Model name: {model}`, flags `{flags}`; shared with other jobs. Two single "
        "nodes (OpenSearch 2.19.6, 1 GB heap each), one with `opensearch up --secure` (TLS on HTTP, basic auth as admin, the "
        "security plugin 2.19.4.0), one without; the bundled NFCorpus test corpus (3,633 documents) in both; each NFCorpus test "
        "query sent to both in alternating order (one keep-alive opensearch-py client per node), `hybrid` query through "
        "`lrt-rrf`, k=10.",
        "",
        "```bash",
        command,
        "```",
        "",
        "| node | searches | p50 ms | p95 ms |",
        "|---|---|---|---|",
    ]
    for name in latencies:
        lines.append(f"| {name} | {len(latencies[name])} | {p50[name]:.1f} | {p95[name]:.1f} |")
    lines += [
        "",
        f"Secured / unsecured p50: **{p50['secured'] / p50['unsecured']:.2f}x** (p95 {p95['secured'] / p95['unsecured']:.2f}x), "
        "in one run, interleaved. A keep-alive client pays the TLS handshake once per connection, so this is the "
        "per-request cost of encryption and of the security plugin's authentication and authorisation checks.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
