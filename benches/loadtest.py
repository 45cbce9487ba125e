"""Load test of `lrt-rerank serve` on loopback, with NFCorpus BM25 top-k passages.

Starts the service (default model unless --model), then:

1. overhead: one client, requests one at a time; each request is sent over HTTP and then
   re-ranked in this process with ``CrossEncoder.rerank`` on the same (query, passages),
   alternating; then both again (several passes), now with every score cached on both sides, so
   HTTP + JSON overhead = HTTP latency - in-process latency of the same request, same run;
2. load, unique queries: N concurrent clients for D seconds (at most --max-requests);
3. load, 50% repeated queries: the same, but half the requests repeat an earlier request of the
   phase (served by the score cache).

Every request of phases 1-3 is checked (status 200, one result per passage); the server's
resident memory is sampled all along. Results go to stdout and, unless --no-write, into a
section of benches/RESULTS.md (replaced on re-runs; other sections are left alone).

    python benches/loadtest.py                      # 8 clients, 50 passages, 60 s per phase
    python benches/loadtest.py --duration 10 --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from lrt_rerank import CrossEncoder, ScoreCache
from lrt_rerank.datasets import load_corpus, load_queries

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("LRT_SHARED_DATA", ROOT.parent / "shared" / "data")) / "nfcorpus"
SECTION_BEGIN = "<!-- loadtest.py: begin -->"
SECTION_END = "<!-- loadtest.py: end -->"


@dataclass(frozen=True)
class RerankRequest:
    query: str
    passages: list[str]

    def body(self) -> bytes:
        return json.dumps({"query": self.query, "documents": self.passages}).encode()


@dataclass
class Sample:
    latency_s: float
    ok: bool
    server_score_s: float
    server_queue_s: float
    error: str = ""


@dataclass
class PhaseResult:
    name: str
    clients: int
    wall_s: float
    samples: list[Sample]
    rss_mib: list[float]
    cache_before: dict[str, float]
    cache_after: dict[str, float]
    repeated: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(not s.ok for s in self.samples)


def build_requests(data: Path, k: int) -> list[RerankRequest]:
    """One request per NFCorpus query: the query and its BM25 top-k passages (title + text)."""
    corpus = load_corpus(data / "corpus.jsonl")
    queries = load_queries(data / "queries.jsonl")
    docs = list(corpus.values())
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25()
    corpus_tokens = bm25s.tokenize([d.full_text for d in docs], stopwords="en", stemmer=stemmer, show_progress=False)
    retriever.index(corpus_tokens, show_progress=False)
    texts = list(dict.fromkeys(queries.values()))
    ids, _ = retriever.retrieve(
        bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), k=k, show_progress=False
    )
    requests = [RerankRequest(q, [docs[int(j)].full_text for j in row]) for q, row in zip(texts, ids, strict=True)]
    random.Random(5).shuffle(requests)
    return requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, model: str, cache_capacity: int, log_path: Path) -> None:
        self.port = free_port()
        exe = Path(sys.executable).with_name("lrt-rerank")
        args = [str(exe), "serve", "--port", str(self.port), "--model", model, "--log-level", "warning"]
        args += ["--cache-capacity", str(cache_capacity)]
        self.log = log_path.open("wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"lrt-rerank serve exited with {self.proc.returncode}; see {self.log.name}")
            try:
                status, _, _ = request(self.connect(), "GET", "/health")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"lrt-rerank serve not ready after {timeout_s} s; see {self.log.name}")

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("VmRSS not found")

    def cache_metrics(self) -> dict[str, float]:
        _, _, body = request(self.connect(), "GET", "/metrics")
        out: dict[str, float] = {}
        for line in body.decode().splitlines():
            m = re.match(
                r'lrt_rerank_cache_(hits_total|misses_total|evictions_total|entries)(\{tier="local"\})? (\S+)', line
            )
            if m:
                out[m.group(1).removesuffix("_total")] = float(m.group(3))
        return out

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=120)
        self.log.close()
        return code


def request(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def server_timing(headers: dict[str, str]) -> tuple[float, float]:
    timing = dict(re.findall(r"(\w+);dur=([\d.]+)", headers.get("server-timing", "")))
    return float(timing.get("score", "nan")) / 1000, float(timing.get("queue", "nan")) / 1000


def rerank_over_http(conn: http.client.HTTPConnection, req: RerankRequest) -> Sample:
    """One POST /v1/rerank, timed from JSON encoding to the decoded response."""
    start = time.perf_counter()
    try:
        status, headers, data = request(conn, "POST", "/v1/rerank", req.body())
        results = json.loads(data)["results"] if status == 200 else []
    except (OSError, http.client.HTTPException, ValueError) as err:
        return Sample(time.perf_counter() - start, False, float("nan"), float("nan"), f"{type(err).__name__}: {err}")
    latency = time.perf_counter() - start
    ok = status == 200 and len(results) == len(req.passages)
    score_s, queue_s = server_timing(headers)
    return Sample(latency, ok, score_s, queue_s, "" if ok else f"HTTP {status}: {data[:200]!r}")


class RequestSource:
    """Hands out requests to the clients: fresh ones, or with probability ``repeat`` one already sent."""

    def __init__(self, fresh: list[RerankRequest], repeat: float, limit: int, seed: int) -> None:
        self._fresh = iter(fresh)
        self._sent: list[RerankRequest] = []
        self._repeat = repeat
        self._left = limit
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.repeated = 0

    def next(self) -> RerankRequest | None:
        with self._lock:
            if self._left <= 0:
                return None
            self._left -= 1
            if self._sent and self._rng.random() < self._repeat:
                self.repeated += 1
                return self._rng.choice(self._sent)
            req = next(self._fresh, None)
            if req is None:
                raise SystemExit("ran out of distinct NFCorpus queries: lower --duration or --max-requests")
            self._sent.append(req)
            return req


def run_load(server: Server, name: str, source: RequestSource, clients: int, duration_s: float) -> PhaseResult:
    samples: list[Sample] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + duration_s
    rss: list[float] = []
    sampling = threading.Event()

    def client() -> None:
        conn = server.connect()
        while time.monotonic() < stop_at and (req := source.next()) is not None:
            s = rerank_over_http(conn, req)
            if not s.ok:
                conn.close()
                conn = server.connect()
            with lock:
                samples.append(s)
        conn.close()

    def sample_rss() -> None:
        while not sampling.wait(0.5):
            rss.append(server.rss_mib())

    before = server.cache_metrics()
    sampler = threading.Thread(target=sample_rss)
    sampler.start()
    start = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    sampling.set()
    sampler.join()
    rss.append(server.rss_mib())
    return PhaseResult(name, clients, wall, samples, rss, before, server.cache_metrics(), repeated=source.repeated)


@dataclass
class Overhead:
    """Latencies (s) of the same requests over HTTP and in-process, cold (model runs) and warm
    (every score cached, so what remains is the HTTP + JSON path)."""

    http_cold: list[float] = field(default_factory=list)
    local_cold: list[float] = field(default_factory=list)
    server_score_cold: list[float] = field(default_factory=list)
    http_warm: list[float] = field(default_factory=list)
    local_warm: list[float] = field(default_factory=list)


def run_overhead(server: Server, encoder: CrossEncoder, reqs: list[RerankRequest], warm_passes: int) -> Overhead:
    """Each request over HTTP, then in-process (an encoder with its own ScoreCache): first cold,
    nothing cached; then ``warm_passes`` times over all requests with every score cached."""
    out = Overhead()
    conn = server.connect()
    for req in reqs:
        # A fresh connection, opened outside the timing: the in-process run in between can
        # outlast the server's keep-alive timeout (uvicorn: 5 s).
        conn.close()
        conn.connect()
        s = rerank_over_http(conn, req)
        if not s.ok:
            raise SystemExit(f"overhead phase: request failed: {s.error}")
        out.http_cold.append(s.latency_s)
        out.server_score_cold.append(s.server_score_s)
        start = time.perf_counter()
        encoder.rerank(req.query, req.passages)
        out.local_cold.append(time.perf_counter() - start)
    conn.close()
    conn.connect()
    for _ in range(warm_passes):
        for req in reqs:
            s = rerank_over_http(conn, req)
            if not s.ok:
                raise SystemExit(f"overhead phase: request failed: {s.error}")
            out.http_warm.append(s.latency_s)
            start = time.perf_counter()
            encoder.rerank(req.query, req.passages)
            out.local_warm.append(time.perf_counter() - start)
    conn.close()
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def ms(v: float) -> str:
    return f"{v * 1000:.1f}"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} logical CPUs, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def report(
    args: argparse.Namespace,
    encoder: CrossEncoder,
    overhead: Overhead,
    phases: list[PhaseResult],
    exit_code: int,
    load_avg: tuple[tuple[float, float, float], tuple[float, float, float]],
) -> str:
    o = overhead

    def row(label: str, values: list[float]) -> str:
        return f"| {label} | {ms(pct(values, 50))} | {ms(pct(values, 95))} | {ms(pct(values, 99))} |"

    def diff(a: list[float], b: list[float]) -> list[float]:
        return [x - y for x, y in zip(a, b, strict=True)]

    lines = [
        "## Rerank HTTP service load test (`benches/loadtest.py`)",
        "",
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {machine()}; 1-min load average {load_avg[0][0]:.2f} before, {load_avg[1][0]:.2f} after "
        "(the machine is shared: other jobs' CPU use shows up in these figures)",
        f"- model: `{encoder.name}` (sha256 {encoder.fingerprint[:12]}…), max_length {encoder.max_length}, "
        f"{encoder.card.get('layers', '?')} layers",
        f"- requests: POST /v1/rerank, NFCorpus query + BM25 top-{args.passages} passages (title + text), "
        "every response checked (200, one result per passage)",
        f"- command: `{' '.join(['python', 'benches/loadtest.py', *sys.argv[1:]])}`; server: "
        f"`lrt-rerank serve --cache-capacity {args.cache_capacity}` (1 worker), load generator on the same machine",
        "",
        f"### HTTP + JSON overhead ({len(o.http_cold)} requests, one at a time, HTTP and in-process alternating)",
        "",
        "Cold: nothing cached, the model scores all passages (each side once). Warm: the same requests again, "
        f"{args.warm_passes} passes, every score cached on both sides (the server's ScoreCache and an in-process "
        "one), so what differs is the HTTP + JSON path itself: client encode, loopback HTTP, validation, "
        "response serialisation, client decode.",
        "",
        "| | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|",
        row("cold, over HTTP (client: encode, POST, decode)", o.http_cold),
        row("cold, in-process `CrossEncoder.rerank`", o.local_cold),
        row("cold, per request: HTTP − server scoring time (Server-Timing)", diff(o.http_cold, o.server_score_cold)),
        row("cold, per request: HTTP − in-process (two separate model runs: noisy)", diff(o.http_cold, o.local_cold)),
        row("warm, over HTTP", o.http_warm),
        row("warm, in-process", o.local_warm),
        row("**warm, per request: HTTP − in-process**", diff(o.http_warm, o.local_warm)),
        "",
        f"### Load: {args.clients} concurrent clients, {args.duration:g} s per phase "
        f"(at most {args.max_requests} requests)",
        "",
        "| phase | requests | errors | throughput req/s | p50 ms | p95 ms | p99 ms | server queue p50 ms | "
        "local cache hits / misses / evictions | cache entries | server RSS MiB min / max / last |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for p in phases:
        lat = [s.latency_s for s in p.samples]
        queue = [s.server_queue_s for s in p.samples if s.ok]
        d = {k: p.cache_after.get(k, 0) - p.cache_before.get(k, 0) for k in ("hits", "misses", "evictions")}
        lines.append(
            f"| {p.name} | {len(p.samples)} | {p.errors} | {len(p.samples) / p.wall_s:.2f} | {ms(pct(lat, 50))} | "
            f"{ms(pct(lat, 95))} | {ms(pct(lat, 99))} | {ms(pct(queue, 50))} | "
            f"{d['hits']:.0f} / {d['misses']:.0f} / {d['evictions']:.0f} | {p.cache_after.get('entries', 0):.0f} | "
            f"{min(p.rss_mib):.0f} / {max(p.rss_mib):.0f} / {p.rss_mib[-1]:.0f} |"
        )
    lines += [
        "",
        f"Server exit status after SIGTERM: {exit_status(exit_code)}. RSS sampled every 0.5 s from /proc. "
        "Latency is measured by the client from JSON encoding to the decoded response; the server queue "
        "is the wait for a scoring slot (Server-Timing). The clients form a closed loop: each sends its next "
        f"request when the last one returns, so with {args.clients} clients and one model session per process "
        "a request waits for about the other clients' scoring before its own; latency under load is "
        "queueing, and throughput is the figure to compare across machines.",
    ]
    return "\n".join(lines) + "\n"


def exit_status(code: int) -> str:
    if code == -signal.SIGTERM:
        return "terminated by SIGTERM after uvicorn's graceful shutdown (uvicorn re-raises the signal)"
    return str(code)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="NFCorpus in BEIR layout (default: %(default)s)")
    ap.add_argument("--model", default="default", help="cross-encoder directory or 'default'")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--passages", type=int, default=50)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per load phase")
    ap.add_argument("--max-requests", type=int, default=2000, help="request cap per load phase")
    ap.add_argument("--overhead-requests", type=int, default=20)
    ap.add_argument("--warm-passes", type=int, default=10, help="cached passes over the overhead requests")
    ap.add_argument("--repeat", type=float, default=0.5, help="share of repeated requests in the second phase")
    ap.add_argument("--cache-capacity", type=int, default=100_000)
    ap.add_argument("--results", type=Path, default=ROOT / "benches" / "RESULTS.md")
    ap.add_argument("--no-write", action="store_true", help="print the results only")
    args = ap.parse_args()

    load_before = os.getloadavg()
    print(f"building requests from {args.data} ...", flush=True)
    reqs = build_requests(args.data, args.passages)
    encoder = CrossEncoder.load(None if args.model == "default" else args.model, cache=ScoreCache(100_000))
    server = Server(str(encoder.model_dir), args.cache_capacity, Path("/tmp") / f"loadtest-serve-{os.getpid()}.log")
    try:
        server.wait_ready()
        warmup, reqs = reqs[:3], reqs[3:]
        conn = server.connect()
        for req in warmup:
            rerank_over_http(conn, req)
            encoder.rerank(req.query, req.passages)
        conn.close()
        n = args.overhead_requests
        print(f"overhead phase: {n} requests ...", flush=True)
        overhead = run_overhead(server, encoder, reqs[:n], args.warm_passes)
        reqs = reqs[n:]
        half = len(reqs) // 2
        phases = []
        for name, pool, repeat, seed in (
            ("unique queries", reqs[:half], 0.0, 1),
            (f"{args.repeat:.0%} repeated queries", reqs[half:], args.repeat, 2),
        ):
            print(f"load phase: {name}, {args.clients} clients, {args.duration:g} s ...", flush=True)
            source = RequestSource(pool, repeat, args.max_requests, seed)
            phases.append(run_load(server, name, source, args.clients, args.duration))
    finally:
        code = server.stop()
    section = report(args, encoder, overhead, phases, code, (load_before, os.getloadavg()))
    print(section)
    for p in phases:
        for s in p.samples:
            if not s.ok:
                print(f"error in {p.name}: {s.error}", file=sys.stderr)
    if not args.no_write:
        from results_file import write_section  # benches/ is this script's folder

        write_section(section, SECTION_BEGIN, SECTION_END, args.results)
        print(f"written to {args.results}")
    return 1 if any(p.errors for p in phases) or code not in (0, -signal.SIGTERM) else 0


if __name__ == "__main__":
    raise SystemExit(main())
