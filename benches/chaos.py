"""Chaos run of the scale-out stack: searches under load while a replica, Redis and a node die.

Starts its own stack on 127.0.0.1 (``lrt_rerank.ops.stack``: Redis, 2 ``lrt-rerank serve``
replicas behind HAProxy, a 3-node OpenSearch cluster (``--nodes 2`` for two) whose rerank pipeline calls HAProxy),
loads the NFCorpus test collection (bundled; 500 documents held back), then for ``--duration``
seconds (default 120) 8 clients send hybrid searches (k=10) through the ``lrt-rrf-rerank``
pipeline with NFCorpus test queries, to both nodes (opensearch-py fails over between them),
while on a fixed schedule it

* SIGKILLs replica 1 at 30 s and starts it again at 50 s,
* SIGKILLs Redis at 60 s and starts it again at 75 s,
* SIGKILLs the elected cluster manager at 90 s (with ``--nodes 2``, the node that is not the
  manager: two nodes have no quorum without it) and starts it again at 100 s; from 90 s a writer
  indexes the 500 held-back documents (bulks of 10). The seconds until the survivors elect a new
  manager are measured (polling their cluster state every 0.2 s).

Every answer is checked: HTTP 200 and k hits. ``verbose_pipeline=true`` makes OpenSearch report
each response processor's outcome, so every answer says whether the ``lrt-rerank`` rerank
processor succeeded (re-ranked) or failed (the RRF order came back: a fallback). A search
that raises or misses hits is an error; a fallback is not. Replica /metrics (cache hits), CPU
time per process (``/proc``) and HAProxy's view of the replicas are sampled along the way.
When traffic stops the cluster must turn green again, and each node's copy of the index must
hold every document the writer got acknowledged.

Results go to stdout and, unless --no-write, into a section of benches/RESULTS.md (replaced on
re-runs). The run is bounded: traffic stops at --duration, every wait has a timeout, and the
stack is stopped at the end (also on Ctrl-C).

    python benches/chaos.py                 # the full 120 s run on 3 nodes, written to RESULTS.md
    python benches/chaos.py --nodes 2 --no-write --keep-stack

``tests/test_scale_out.py`` runs the same harness on a 30 s schedule (:data:`SHORT`).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import numpy as np
from lrt_rerank.opensearch.indexing import Embedder, document_source, index_documents
from lrt_rerank.opensearch.pipeline import RERANK_PIPELINE, RRF_PIPELINE
from lrt_rerank.opensearch.queries import hybrid_body
from lrt_rerank.ops import opensearch as nodes
from lrt_rerank.ops.stack.haproxy import HAProxyError, backend_state
from lrt_rerank.ops.stack.launcher import Stack
from lrt_rerank.ops.stack.processes import cpu_seconds
from opensearchpy import OpenSearch
from opensearchpy.exceptions import OpenSearchException
from prometheus_client.parser import text_string_to_metric_families

from chaos_report import FULL, SHORT, ChaosReport, PhaseRow, Sample, Schedule, WriterReport, markdown  # benches/ is on the path
from results_file import RESULTS, write_section

SECTION_BEGIN = "<!-- chaos.py: begin -->"
SECTION_END = "<!-- chaos.py: end -->"
RERANK_TAG = "lrt-rerank"
INDEX = "lrt-chaos-nfcorpus"


# -------------------------------------------------------------------------------- harness
class Chaos:
    """Traffic, faults and checks against a running :class:`Stack` with a cluster of 2 or more nodes."""

    def __init__(
        self,
        stack: Stack,
        cluster: nodes.ClusterSpec,
        index: str,
        queries: Sequence[tuple[str, list[float]]],
        held_back: Sequence[dict[str, object]],
        schedule: Schedule,
        clients: int = 8,
        k: int = 10,
        say: Callable[[str], None] = print,
    ) -> None:
        if len(held_back) < schedule.writer_docs:
            raise ValueError(f"the writer needs {schedule.writer_docs} held-back documents, got {len(held_back)}")
        self.stack = stack
        self.cluster = cluster
        self.index = index
        self.queries = list(queries)
        self.held_back = list(held_back[: schedule.writer_docs])
        self.schedule = schedule
        self.clients = clients
        self.k = k
        self.say = say
        self.samples: list[Sample] = []
        self.events: list[tuple[float, str]] = []
        self.lb_timeline: list[tuple[float, int]] = []
        self.writer = WriterReport()
        self._lock = threading.Lock()
        self._t0 = 0.0
        self._stop = threading.Event()
        self._node_restart: threading.Thread | None = None
        self._restart_error: BaseException | None = None
        self._replica_restarted_at: float | None = None
        self._replica_requests_at_restart = 0
        self._cpu_last: dict[str, tuple[int, float]] = {}
        self._victim_spec: nodes.NodeSpec | None = None
        self._election: threading.Thread | None = None
        self.new_manager: str | None = None
        self.election_s: float | None = None
        self.final_health = "unknown"

    def now(self) -> float:
        return time.monotonic() - self._t0

    def _event(self, text: str) -> None:
        with self._lock:
            self.events.append((self.now(), text))
        self.say(f"[{self.now():6.1f} s] {text}")

    def client(self) -> OpenSearch:
        return OpenSearch(hosts=self.cluster.urls, timeout=30, max_retries=3, retry_on_status=(502, 503, 504))

    # ------------------------------------------------------------------ threads
    def warm_up(self, seconds: float) -> int:
        """Searches without re-ranking (the ``lrt-rrf`` pipeline: the score caches stay cold) from every
        client for ``seconds``, and one re-rank per replica: the JVMs and models are warm when timing
        starts. Returns the searches sent."""
        key = self.stack.spec.api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        for url in self.stack.spec.replica_urls:
            body = {"query": "warm-up", "documents": ["warm-up passage"]}
            httpx.post(url + "/v1/rerank", json=body, headers=headers, timeout=120).raise_for_status()
        deadline = time.monotonic() + seconds
        sent = [0] * self.clients

        def loop(i: int) -> None:
            rng = random.Random(-1 - i)
            client = self.client()
            while time.monotonic() < deadline:
                text, vector = rng.choice(self.queries)
                body = hybrid_body(text, vector, self.k, source=["doc_id"])
                client.search(index=self.index, body=body, params={"search_pipeline": RRF_PIPELINE})
                sent[i] += 1
            client.close()

        threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(self.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=seconds + 60)
        return sum(sent)

    def _search_loop(self, seed: int) -> None:
        rng = random.Random(seed)
        client = self.client()
        params = {"search_pipeline": RERANK_PIPELINE, "verbose_pipeline": "true"}
        while not self._stop.is_set():
            text, vector = rng.choice(self.queries)
            body = hybrid_body(text, vector, self.k, source=["doc_id"], rerank_query=text)
            start = self.now()
            began = time.perf_counter()
            try:
                answer = client.search(index=self.index, body=body, params=params)
            except OpenSearchException as exc:
                sample = Sample(start, (time.perf_counter() - began) * 1000, False, False, f"{type(exc).__name__}: {str(exc)[:200]}")
            else:
                latency = (time.perf_counter() - began) * 1000
                hits = answer.get("hits", {}).get("hits", [])
                outcome = [p.get("status") for p in answer.get("processor_results", []) if p.get("tag") == RERANK_TAG]
                if len(hits) != self.k:
                    sample = Sample(start, latency, False, False, f"{len(hits)} hits instead of {self.k}")
                elif outcome not in (["success"], ["fail"]):
                    sample = Sample(start, latency, False, False, f"no single outcome of processor {RERANK_TAG}: {outcome}")
                else:
                    sample = Sample(start, latency, True, outcome == ["success"])
            with self._lock:
                self.samples.append(sample)
        client.close()

    def _monitor_loop(self) -> None:
        while not self._stop.wait(0.25):
            try:
                healthy = sum(s.up for s in backend_state(self.stack.spec.stats_port))
            except HAProxyError:
                healthy = -1
            with self._lock:
                self.lb_timeline.append((self.now(), healthy))

    def _writer(self) -> None:
        """Index the held-back documents in bulks of 10, spread over the writer window."""
        client = self.client()
        batches = [self.held_back[i : i + 10] for i in range(0, len(self.held_back), 10)]
        pause = self.schedule.writer_window_s / len(batches)
        for batch in batches:
            lines: list[dict[str, object]] = []
            for doc in batch:
                lines += [{"index": {"_index": self.index, "_id": doc["doc_id"]}}, doc]
            began = time.monotonic()
            try:
                answer = client.bulk(body=lines, params={"timeout": "60s", "request_timeout": 90})
            except OpenSearchException as exc:
                self.writer.failed_requests += 1
                self._event(f"writer: bulk failed ({type(exc).__name__}); its documents are not acknowledged")
            else:
                for item in answer["items"]:
                    result = item["index"]
                    if result.get("status") in (200, 201):
                        self.writer.acknowledged.append(str(result["_id"]))
                    else:
                        self.writer.rejected += 1
            time.sleep(max(0.0, pause - (time.monotonic() - began)))
        client.close()
        self._event(f"writer: {len(self.writer.acknowledged)} of {len(self.held_back)} documents acknowledged")

    # ------------------------------------------------------------------ samples
    def _cache_counts(self) -> list[tuple[int, int] | None]:
        """(hits, lookups) of each replica's score cache (both tiers), None when it does not answer."""
        counts: list[tuple[int, int] | None] = []
        for url in self.stack.spec.replica_urls:
            try:
                text = httpx.get(url + "/metrics", timeout=2.0).text
            except httpx.HTTPError:
                counts.append(None)
                continue
            values: dict[tuple[str, str], float] = {}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name in ("lrt_rerank_cache_hits_total", "lrt_rerank_cache_misses_total"):
                        values[(sample.name, sample.labels.get("tier", ""))] = sample.value
            hits = values.get(("lrt_rerank_cache_hits_total", "local"), 0) + values.get(("lrt_rerank_cache_hits_total", "redis"), 0)
            lookups = values.get(("lrt_rerank_cache_hits_total", "local"), 0) + values.get(("lrt_rerank_cache_misses_total", "local"), 0)
            counts.append((int(hits), int(lookups)))
        return counts

    def _pids(self) -> dict[str, int | None]:
        pids: dict[str, int | None] = {p.name: p.pid() for p in self.stack.processes()}
        for member in self.cluster.members():
            pids[member.name] = nodes.pid(member)
        pids["bench (clients, writer)"] = os.getpid()
        return pids

    def _cpu_delta(self) -> dict[str, float]:
        """CPU seconds each process used since the last call (a restarted process counts from 0)."""
        delta: dict[str, float] = {}
        for name, pid in self._pids().items():
            used = cpu_seconds(pid) if pid is not None else None
            if pid is None or used is None:
                delta[name] = 0.0
                self._cpu_last.pop(name, None)
                continue
            last_pid, last = self._cpu_last.get(name, (pid, 0.0))
            delta[name] = used - last if last_pid == pid else used
            self._cpu_last[name] = (pid, used)
        return delta

    # ------------------------------------------------------------------ faults
    def _restart_node(self, member: nodes.NodeSpec) -> None:
        try:
            nodes.up(member, timeout=600.0)
            self._event(f"{member.name} answers again and reports the cluster green/yellow")
        except BaseException as exc:  # reported after the run
            self._restart_error = exc

    def _fault(self, at_s: float) -> None:
        s = self.schedule
        if at_s == s.kill_replica_s:
            self._event(f"SIGKILL replica-1 (pid {self.stack.replica(1).kill()})")
        elif at_s == s.restart_replica_s:
            states = {x.name: x.requests for x in backend_state(self.stack.spec.stats_port)}
            self._replica_requests_at_restart = states.get("replica-1", 0)
            self._replica_restarted_at = self.now()
            self.stack.start_replica(1)
            self._event("replica-1 started again")
        elif at_s == s.kill_redis_s:
            self._event(f"SIGKILL redis (pid {self.stack.redis.kill()})")
        elif at_s == s.restart_redis_s:
            self.stack.start_redis()
            self._event("redis started again (empty: no persistence)")
        elif at_s == s.kill_node_s:
            member = self._victim()
            role = "the elected cluster manager" if self.kills_manager else "not the cluster manager"
            killed_at = self.now()
            self._event(f"SIGKILL {member.name} (pid {nodes.kill(member)}), {role}")
            threading.Thread(target=self._writer, name="chaos-writer", daemon=True).start()
            if self.kills_manager:
                self._election = threading.Thread(target=self._watch_election, args=(member, killed_at), name="election", daemon=True)
                self._election.start()
        elif at_s == s.restart_node_s:
            member = self._victim()
            self._node_restart = threading.Thread(target=self._restart_node, args=(member,), name="node-restart", daemon=True)
            self._node_restart.start()
            self._event(f"{member.name} starting again")

    @property
    def kills_manager(self) -> bool:
        """From 3 nodes on the elected cluster manager is killed: the others keep a quorum and elect another."""
        return self.cluster.nodes >= 3

    def _victim(self) -> nodes.NodeSpec:
        """The node to kill: the elected cluster manager (3 nodes or more), else the other node (a 2-node
        cluster keeps one voting node; losing it leaves no quorum to elect another)."""
        if self._victim_spec is None:
            manager = nodes.cluster_status(self.cluster).cluster_manager
            if manager is None:
                raise RuntimeError("no node reports an elected cluster manager")
            pick = (lambda m: m.name == manager) if self.kills_manager else (lambda m: m.name != manager)
            self._victim_spec = next(m for m in self.cluster.members() if pick(m))
        return self._victim_spec

    def _watch_election(self, killed: nodes.NodeSpec, killed_at: float, timeout_s: float = 120.0) -> None:
        """Poll the survivors' cluster state until one names a cluster manager other than ``killed``."""
        survivors = [m for m in self.cluster.members() if m.name != killed.name]
        while self.now() - killed_at < timeout_s:
            for member in survivors:
                try:
                    state = nodes.get_json(member, "/_cluster/state/nodes,cluster_manager_node?local=true", 1.0)
                except (OSError, ValueError):
                    continue
                manager = state.get("nodes", {}).get(state.get("cluster_manager_node"), {}).get("name")
                if manager and manager != killed.name:
                    self.new_manager, self.election_s = str(manager), self.now() - killed_at
                    self._event(f"{manager} elected cluster manager {self.election_s:.1f} s after the SIGKILL")
                    return
            time.sleep(0.2)
        self._event(f"no new cluster manager seen within {timeout_s:.0f} s")

    # ------------------------------------------------------------------ run
    def run(self, warm_up_s: float = 5.0) -> ChaosReport:
        s = self.schedule
        if warm_up_s > 0:
            self.say(f"warm-up: {self.warm_up(warm_up_s)} searches without re-ranking in {warm_up_s:.0f} s")
        self._victim()
        self._t0 = time.monotonic()
        self._cpu_delta()
        threads = [threading.Thread(target=self._search_loop, args=(i,), name=f"client-{i}", daemon=True) for i in range(self.clients)]
        threads.append(threading.Thread(target=self._monitor_loop, name="lb-monitor", daemon=True))
        for thread in threads:
            thread.start()
        phases = s.phases(self.cluster.nodes)
        boundaries: list[tuple[list[tuple[int, int] | None], dict[str, float]]] = [(self._cache_counts(), {})]
        for _name, start, _end in phases[1:]:
            time.sleep(max(0.0, start - self.now()))
            boundaries.append((self._cache_counts(), self._cpu_delta()))
            self._fault(start)
        time.sleep(max(0.0, s.duration_s - self.now()))
        self._stop.set()
        boundaries.append((self._cache_counts(), self._cpu_delta()))
        for thread in threads:
            thread.join(timeout=60)
        self._event(f"traffic stopped: {len(self.samples)} searches")
        killed = self._victim()
        if self._election is not None:
            self._election.join(timeout=150)
        if self._node_restart is not None:
            self._node_restart.join(timeout=600)
        if self._restart_error is not None:
            raise RuntimeError(f"restarting {killed.name} failed: {self._restart_error}") from self._restart_error
        self._check_writes()
        return self._report(phases, boundaries, killed)

    def _report(
        self,
        phases: list[tuple[str, float, float]],
        boundaries: list[tuple[list[tuple[int, int] | None], dict[str, float]]],
        killed: nodes.NodeSpec,
    ) -> ChaosReport:
        rows = []
        for i, (name, start, end) in enumerate(phases):
            before, after = boundaries[i][0], boundaries[i + 1][0]
            hits = lookups = 0
            for b, a in zip(before, after, strict=True):
                if a is None:
                    continue  # died in this phase: its counts are gone with it
                base = b if b is not None and a[1] >= b[1] else (0, 0)
                hits += a[0] - base[0]
                lookups += a[1] - base[1]
            samples = [x for x in self.samples if start <= x.start_s < end]
            rows.append(PhaseRow(name, start, end, samples, hits, lookups, boundaries[i + 1][1]))
        back = None
        served = 0
        if self._replica_restarted_at is not None:
            restarted = self._replica_restarted_at
            back = next((t - restarted for t, healthy in self.lb_timeline if t >= restarted and healthy == len(self.stack.replicas)), None)
            states = {x.name: x.requests for x in backend_state(self.stack.spec.stats_port)}
            served = states.get("replica-1", 0) - self._replica_requests_at_restart
        return ChaosReport(
            self.schedule, self.clients, self.k, rows, self.writer, list(self.events), list(self.lb_timeline),
            back, served, self.final_health, killed.name, self.kills_manager, self.new_manager, self.election_s,
            self.cluster.nodes,
        )

    def _check_writes(self) -> None:
        client = self.client()
        health = client.cluster.health(params={"wait_for_status": "green", "timeout": "300s", "request_timeout": 330})
        self._event(f"cluster {health['status']} with {health['number_of_nodes']} nodes")
        client.indices.refresh(index=self.index)
        acked = sorted(set(self.writer.acknowledged))
        for node_id, info in client.nodes.info()["nodes"].items():
            found = client.count(
                index=self.index, body={"query": {"ids": {"values": acked}}}, params={"preference": f"_only_nodes:{node_id}"}
            )["count"]
            self.writer.found_per_node[str(info["name"])] = int(found)
        self.final_health = str(health["status"])
        client.close()


# ---------------------------------------------------------------------------- set-up
def load_collection(
    client: OpenSearch, index: str, bi_encoder: Embedder, documents: int | None, held_back: int
) -> tuple[list[tuple[str, list[float]]], list[dict[str, object]]]:
    """Index the bundled NFCorpus test corpus (its first ``documents``, all by default) except the last
    ``held_back`` of them, from the cached embedded index's vectors; return (query, vector) pairs of
    the test queries and the held-back documents' sources for the writer."""
    from lrt_rerank.bundled import bundled_dataset_dir
    from lrt_rerank.datasets import load_dataset
    from lrt_rerank.first_stage.embedded import EMBEDDINGS
    from lrt_rerank.first_stage.index_cache import cached_index

    dataset = load_dataset(bundled_dataset_dir(), "test")
    stage = cached_index(dataset, progress=False)
    vectors = np.load(stage.path / EMBEDDINGS, allow_pickle=False)
    count = min(documents or len(stage.documents), len(stage.documents))
    if held_back >= count:
        raise ValueError(f"cannot hold back {held_back} of {count} documents")
    keep = count - held_back
    report = index_documents(client, index, stage.documents[:keep], bi_encoder, recreate=True, progress=False, vectors=vectors[:keep])
    if report.failures:
        raise RuntimeError(f"indexing {index} failed for {len(report.failures)} documents: {report.failures[:3]}")
    client.cluster.health(index=index, params={"wait_for_status": "green", "timeout": "120s", "request_timeout": 150})
    texts = [dataset.queries[qid] for qid in dataset.eval_query_ids()]
    embedded = np.asarray(bi_encoder.embed_queries(texts), dtype=np.float32)
    held = [document_source(d, v) for d, v in zip(stage.documents[keep:count], vectors[keep:count].tolist(), strict=True)]
    return list(zip(texts, embedded.tolist(), strict=True)), held


# ------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    from lrt_rerank import BiEncoder
    from lrt_rerank.models.resolve import default_model_dir
    from lrt_rerank.opensearch.client import connect
    from lrt_rerank.ops.stack.launcher import StackSpec, down, up

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--short", action="store_true", help="the 30 s schedule of the CI test")
    parser.add_argument(
        "--nodes", type=int, default=3, choices=(2, 3, 4), help="OpenSearch nodes; from 3 on the cluster manager is the one killed"
    )
    parser.add_argument("--lb-port", type=int, default=18000, help="HAProxy; replicas on the next ports, stats on +404")
    parser.add_argument("--redis-port", type=int, default=16379)
    parser.add_argument("--opensearch-port", type=int, default=19200, help="node 1's HTTP port; transport ports +100")
    parser.add_argument("--state-dir", type=Path, default=Path(tempfile.gettempdir()) / "lrt-rerank-chaos")
    parser.add_argument("--no-write", action="store_true", help="do not update benches/RESULTS.md")
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running afterwards")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.k < 1:
        parser.error("--clients and --k must be at least 1")
    schedule = SHORT if args.short else FULL
    cluster = nodes.ClusterSpec(args.nodes, port=args.opensearch_port)
    spec = StackSpec(
        replicas=2, port=args.lb_port, replica_port=args.lb_port + 1, stats_port=args.lb_port + 404,
        redis_port=args.redis_port, threads=1, opensearch=cluster, state_dir=args.state_dir,
    )
    try:
        stack = up(spec, progress=print)
        bi_encoder = BiEncoder.load(str(default_model_dir("bi-encoder")))
        client = connect(cluster.url)
        print(f"indexing the NFCorpus test corpus into {INDEX} ({schedule.writer_docs} documents held back)")
        queries, held = load_collection(client, INDEX, bi_encoder, None, schedule.writer_docs)
        client.close()
        report = Chaos(stack, cluster, INDEX, queries, held, schedule, clients=args.clients, k=args.k).run()
    finally:
        if not args.keep_stack:
            print("stopped: " + ", ".join(down(spec.state_dir)))
    command = "python benches/chaos.py" + (" --short" if args.short else "") + (f" --nodes {args.nodes}" if args.nodes != 3 else "")
    text = markdown(report, command)
    print(text)
    if not args.no_write:
        write_section(text, SECTION_BEGIN, SECTION_END)
        print(f"written to {RESULTS}")
    failed = sum(not x.ok for x in report.samples)
    return 0 if failed == 0 and report.writer.lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
