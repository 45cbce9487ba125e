"""NNCF static INT8 variants of bench_peers' cross-encoder for the OpenVINO backend: make one, measure its rank
fidelity, or time several against sentence-transformers' static INT8 (st-ov-int8) interleaved per query.

    python benches/ov_int8_variants.py quantize NAME '{"ignored": ["matmul_222", "logits"], "sq": 0.5}'
    python benches/ov_int8_variants.py fidelity NAME [NAME:f32 ...]
    python benches/ov_int8_variants.py speed DATASET QUERIES '{"label": {"name": NAME, "token_budget": 1024}}'

Needs the models bench_peers builds under ``<model home>/peers`` (run it once), and for ``speed``
LRT_PEERS_ST_OPENVINO_PYTHON. NAME is a model directory under ``<model home>/peers/variants``: the FP32 import
with an ``openvino_model.xml`` quantized from the snapshot's unfused graph on the 300 NFCorpus dev pairs with the
given NNCF options (``ignored``: node names or their prefixes, ``preset``, ``fbc``: fast bias correction,
``sq``: SmoothQuant alpha of MatMuls, -1 off). Fidelity: min / mean per-query Spearman of the variant's scores
(``backend="openvino"``, bf16 unless ``NAME:f32``) with the FP32 model's on ONNX Runtime (the same scores as ST's
torch FP32 within 1e-4) over the first 20 judged test queries' BM25 top 50 of NFCorpus and msmarco-sample.
Speed: each query runs every system once in an order rotated per query, two rounds; speed-up is the median
over queries of st-ov-int8's time over the system's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from functools import cache
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_peers as bp  # noqa: E402

from lrt_rerank import CrossEncoder  # noqa: E402
from lrt_rerank.models.importers.build import unfused_graph  # noqa: E402
from lrt_rerank.models.openvino_ir import IR, _feeds  # noqa: E402
from lrt_rerank.models.static_int8 import spearman  # noqa: E402

CALIBRATION = 300
QUERIES = 20


@cache
def peers() -> bp.PeerModels:
    return bp.build_peer_models(CALIBRATION)


def variant_dir(name: str) -> Path:
    return peers().snapshot.parent / "variants" / name


def quantize(name: str, options: dict) -> Path:
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    models = peers()
    out = variant_dir(name)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(models.fp32, out)
    pairs = json.loads(models.calibration.read_text(encoding="utf-8"))
    kwargs: dict = {}
    if "preset" in options:
        kwargs["preset"] = getattr(nncf.QuantizationPreset, options["preset"])
    if "fbc" in options:
        kwargs["fast_bias_correction"] = options["fbc"]
    if "sq" in options:
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=options["sq"])
        )
    if options.get("ignored"):
        patterns = [f"^{re.escape(n)}(/|$)" for n in options["ignored"]]
        kwargs["ignored_scope"] = nncf.IgnoredScope(patterns=patterns, validate=False)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        graph = unfused_graph(models.snapshot, Path(tmp) / "unfused.onnx")
        model = ov.Core().read_model(str(graph))
        inputs = {n for port in model.inputs for n in port.get_names()}
        feeds = _feeds(out, [tuple(p) for p in pairs], bp.MAX_LENGTH, inputs)
        quantized = nncf.quantize(
            model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds), **kwargs
        )
        ov.save_model(quantized, str(out / IR), compress_to_fp16=False)
    return out


def fidelity(specs: list[str]) -> None:
    ref = CrossEncoder.load(peers().fp32, threads=bp.THREADS, max_length=bp.MAX_LENGTH)
    work = {ds: bp.bm25_top(ds, QUERIES, 50) for ds in bp.DATASETS}
    reference = {ds: [np.asarray(ref.score(q, ps)) for q, ps in w] for ds, w in work.items()}
    for spec in specs:
        name, _, precision = spec.partition(":")
        model = CrossEncoder.load(
            variant_dir(name), threads=bp.THREADS, max_length=bp.MAX_LENGTH, backend="openvino", precision=precision or "bf16"
        )
        parts = []
        for ds, w in work.items():
            rho = [spearman(np.asarray(model.score(q, ps)), r) for (q, ps), r in zip(w, reference[ds])]
            parts.append(f"{ds} min {min(rho):.4f} mean {np.mean(rho):.4f}")
        print(spec, " | ".join(parts), flush=True)


def speed(dataset: str, queries: int, variants: dict[str, dict]) -> None:
    models = peers()
    python = os.environ["LRT_PEERS_ST_OPENVINO_PYTHON"]
    st = bp.ProcessPeer("st-ov-int8", python, models, models.snapshot.parent / "st-ov-int8.log")
    systems = {"st-ov-int8": st.score}
    for label, options in variants.items():
        options = dict(options)
        path = variant_dir(options.pop("name")) if "name" in options else models.ov_int8
        engine = CrossEncoder.load(path, threads=bp.THREADS, max_length=bp.MAX_LENGTH, backend="openvino", **options)
        systems[label] = engine.score
    work = bp.bm25_top(dataset, queries, 50)
    for score in systems.values():
        score(*work[0])
    times: dict[str, dict[int, list[float]]] = {name: {} for name in systems}
    try:
        for _ in range(2):
            for qi, (query, passages) in enumerate(work):
                for name in bp.rotated(list(systems), qi):
                    start = time.perf_counter()
                    systems[name](query, passages)
                    seconds = st.last_seconds if name == "st-ov-int8" else time.perf_counter() - start
                    times[name].setdefault(qi, []).append(seconds)
    finally:
        st.close()
    per = {name: {q: statistics.median(ts) for q, ts in by_q.items()} for name, by_q in times.items()}
    for name, by_q in per.items():
        ratio = statistics.median(per["st-ov-int8"][q] / t for q, t in by_q.items())
        print(f"{dataset} {name}: p50 {1e3 * statistics.median(by_q.values()):.1f} ms, speed-up over st-ov-int8 {ratio:.3f}")
    print("uptime:", Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    command, *rest = sys.argv[1:]
    if command == "quantize":
        print(quantize(rest[0], json.loads(rest[1]) if len(rest) > 1 else {}))
    elif command == "fidelity":
        fidelity(rest)
    elif command == "speed":
        speed(rest[0], int(rest[1]), json.loads(rest[2]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
