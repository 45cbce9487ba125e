"""INT8 fidelity of the imported MiniLM cross-encoder (and the shipped LRT), per quantization variant.

For each variant of the same FP32 graph (``lrt-rerank models import`` of the seeded MiniLM
cross-encoder of tests/int8_variants.py; dynamic INT8 variants, and static INT8 calibrated on 256 NFCorpus
train pairs as ``models import --int8 static --calibrate nfcorpus:train`` writes it, in QOperator and QDQ
format), on NFCorpus BM25 top-``depth`` lists at 256 tokens:
  * per-query Spearman correlation of the engine's scores with the engine's FP32 scores (min, mean);
  * MRR@10 of the variant's order alone against FP32's (the head is random: only the change means something);
  * p50 milliseconds per query, the paired median time ratio against the default INT8 variant, and
    the achieved rate (encoder FLOPs on real tokens / time) next to a u8s8 MatMulInteger and an FP32
    MatMul probe run in the same loop.
Every query runs every variant once, in an order rotated from query to query (interleaved).
The shipped LRT has no FP32 graph; its row compares the INT8 graph with the same graph whose weights
are dequantized to FP32 (what activation quantization and the INT8 kernels change).

Run:  python benches/int8_fidelity.py --split dev --queries 20 [--markdown OUT.md]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_peers import CPU_FLAGS, cpu_flags, ort_matmul_probe, probe_ops, query_flops, rotated  # noqa: E402
from int8_variants import (  # noqa: E402
    fidelity,
    nfcorpus_candidates,
    scaled_weight_scales,
    two_bit_weights,
    write_minilm_ce,
)

from lrt_rerank import CrossEncoder  # noqa: E402
from lrt_rerank.datasets import load_dataset  # noqa: E402
from lrt_rerank.evaluate import reciprocal_rank  # noqa: E402
from lrt_rerank.models.calibration_pairs import calibration_pairs  # noqa: E402
from lrt_rerank.models.importers import import_snapshot  # noqa: E402
from lrt_rerank.models.importers.build import unfused_graph  # noqa: E402
from lrt_rerank.models.static_int8 import quantize_static_dir  # noqa: E402
from lrt_rerank.models.quantize import quantize_model_dir  # noqa: E402
from lrt_rerank.models.store import CARD, MODEL, TOKENIZER, file_sha256  # noqa: E402
from lrt_rerank.models.resolve import default_model_dir

MAX_LENGTH = 256
DEFAULT = "int8 per-channel (shipped)"


def build_variants(work: Path) -> dict[str, Path]:
    snapshot = work / "minilm-ce"
    if not (snapshot / "config.json").is_file():
        write_minilm_ce(snapshot)
    fp32 = work / "fp32"
    if not (fp32 / CARD).is_file():
        import_snapshot(snapshot, fp32, kind="cross-encoder", max_length=MAX_LENGTH)
    recipes = {
        DEFAULT: {},
        "int8 per-channel, reduce_range": {"reduce_range": True},
        "int8 per-tensor": {"per_channel": False},
        "int8, head FP32": {"keep_fp32": "head"},
        "int8, head + first/last layer FP32": {"keep_fp32": "head+edges"},
    }
    dirs = {"fp32": fp32}
    for i, (name, options) in enumerate(recipes.items()):
        out = work / f"v{i}"
        if not (out / CARD).is_file():
            quantize_model_dir(fp32, out, **options)
        dirs[name] = out
    calibrate = f"{sys.modules['int8_variants'].DATA / 'nfcorpus'}:train"
    static = work / "static"
    if not (static / CARD).is_file():  # what `models import --int8 static --calibrate nfcorpus:train` writes
        import_snapshot(snapshot, static, kind="cross-encoder", max_length=MAX_LENGTH, int8="static", calibrate=calibrate)
    dirs["int8 static (QOperator, MinMax)"] = static
    unfused = work / "unfused.onnx"
    if not unfused.is_file():
        unfused_graph(snapshot, unfused)
    qdq = work / "s0"
    if not (qdq / CARD).is_file():
        quantize_static_dir(fp32, qdq, calibration_pairs(calibrate), graph=unfused, quant_format="qdq")
    dirs["int8 static (QDQ, MinMax)"] = qdq
    broken = {"broken: 2-bit weights": lambda out: two_bit_weights(fp32, out),
              "broken: weight scales x10": lambda out: scaled_weight_scales(dirs[DEFAULT], out)}  # fmt: skip
    for i, (name, make) in enumerate(broken.items()):
        out = work / f"b{i}"
        if not (out / CARD).is_file():
            make(out)
        dirs[name] = out
    return dirs


def dequantized_lrt(work: Path) -> Path:
    """The shipped LRT with its INT8 weights dequantized into FP32 MatMul, Attention and
    EmbedLayerNormalization nodes (the graph ONNX Runtime's dynamic quantizer started from, up to the
    rounding of the weights)."""
    out = work / "lrt-dequantized"
    if (out / CARD).is_file():
        return out
    src = default_model_dir("cross-encoder")
    model = onnx.load(str(src / MODEL))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    added: list[onnx.TensorProto] = []

    def dequant(weight: str, scale: str, zero: str) -> str:
        w = inits[weight].astype(np.float32) - (inits[zero].astype(np.float32) if zero else 0.0)
        added.append(numpy_helper.from_array((w * inits[scale].astype(np.float32)).astype(np.float32), weight + "_fp32"))
        return weight + "_fp32"

    quantized_from = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DynamicQuantizeLinear"}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    dropped: set[int] = set()
    nodes = []
    for n in model.graph.node:
        if id(n) in dropped:
            continue
        if n.op_type == "MatMulInteger":  # -> Cast -> Mul(scales): one FP32 MatMul writing the Mul's output
            cast = consumers[n.output[0]][0]
            mul = consumers[cast.output[0]][0]
            dropped.update((id(cast), id(mul)))
            w = dequant(n.input[1], n.input[1].replace("_quantized", "_scale"), n.input[3])
            nodes.append(helper.make_node("MatMul", [quantized_from[n.input[0]], w], [mul.output[0]], name=n.name))
        elif n.op_type == "QAttention":  # input, weight, bias, input_scale, weight_scale, mask, input_zp, weight_zp
            ins = [*n.input, "", "", ""]
            w = dequant(ins[1], ins[4], ins[7])
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            nodes.append(helper.make_node("Attention", [quantized_from[ins[0]], w, ins[2], ins[5]], list(n.output),
                                          name=n.name, domain="com.microsoft", **attrs))  # fmt: skip
        elif n.op_type == "QEmbedLayerNormalization":  # ids, segments, 5 tables, mask, 5 scales, 5 zero points
            tables = [dequant(n.input[2 + k], n.input[8 + k], n.input[13 + k]) for k in range(5)]
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            nodes.append(helper.make_node("EmbedLayerNormalization", [n.input[0], n.input[1], *tables, n.input[7]],
                                          list(n.output), name=n.name, domain="com.microsoft", **attrs))  # fmt: skip
        else:
            nodes.append(n)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(added)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / MODEL))
    for name in (TOKENIZER, CARD):
        (out / name).write_bytes((src / name).read_bytes())
    card = (out / CARD).read_text(encoding="utf-8").replace(file_sha256(src / MODEL), file_sha256(out / MODEL))
    (out / CARD).write_text(card, encoding="utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="dev")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--work", type=Path, default=Path(".benchmarks/int8-fidelity"))
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--lrt", action="store_true", help="also the shipped LRT against its dequantized graph")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    dirs = build_variants(args.work)
    engines = {name: CrossEncoder.load(path, max_length=MAX_LENGTH, threads=2) for name, path in dirs.items()}
    lrt = {}
    if args.lrt:
        lrt = {"lrt int8 (shipped)": CrossEncoder.load(threads=2), "lrt dequantized": CrossEncoder.load(dequantized_lrt(args.work), threads=2)}
    candidates = nfcorpus_candidates(args.split, args.queries, args.depth)
    qrels = load_dataset(Path(sys.modules["int8_variants"].DATA) / "nfcorpus", args.split).qrels
    probes = {"u8s8 MatMulInteger (ORT)": ort_matmul_probe(True), "FP32 MatMul (ORT)": ort_matmul_probe(False)}
    systems = [*engines, *lrt, *probes]
    scores: dict[str, list[np.ndarray]] = {s: [] for s in [*engines, *lrt]}
    times: dict[str, list[float]] = {s: [] for s in systems}
    flops: dict[str, list[float]] = {s: [] for s in systems}
    mrr: dict[str, list[float]] = {s: [] for s in [*engines, *lrt]}
    for q, (qid, query, ids, passages) in enumerate(candidates):
        work_flops = query_flops(engines["fp32"], query, passages)
        lrt_flops = query_flops(lrt["lrt int8 (shipped)"], query, passages) if lrt else 0.0
        for name in rotated(systems, q):
            began = time.perf_counter()
            if name in probes:
                probes[name]()
                times[name].append(time.perf_counter() - began)
                flops[name].append(probe_ops())
                continue
            encoder = engines.get(name) or lrt[name]
            s = encoder.score(query, passages)
            times[name].append(time.perf_counter() - began)
            flops[name].append(lrt_flops if name in lrt else work_flops)
            scores[name].append(s)
            order = [ids[i] for i in np.argsort(-s, kind="stable")]
            mrr[name].append(reciprocal_rank(order, qrels.get(qid, {}), 10))
    rows = []
    for name in systems:
        p50 = 1e3 * statistics.median(times[name])
        rate = statistics.median(f / t / 1e9 for f, t in zip(flops[name], times[name], strict=True))
        ratio = statistics.median(t / d for t, d in zip(times[name], times[DEFAULT], strict=True))
        if name in probes:
            rows.append(f"| {name} (probe) | | | | {p50:.2f} | | {rate:.0f} |")
            continue
        ref = "lrt dequantized" if name in lrt else "fp32"
        low, mean = fidelity(scores[ref], scores[name])
        d_mrr = float(np.mean(mrr[name])) - float(np.mean(mrr[ref]))
        rows.append(f"| {name} | {low:.3f} | {mean:.3f} | {np.mean(mrr[name]):.3f} ({d_mrr:+.3f}) | {p50:.0f} | {ratio:.2f} | {rate:.0f} |")
    flags = " ".join(f for f in CPU_FLAGS if f in cpu_flags())
    text = "\n".join([
        f"{datetime.date.today()}, `lscpu` flags: {flags}; NFCorpus {args.split}, {len(candidates)} queries, BM25 top {args.depth}, "
        f"{MAX_LENGTH} tokens (LRT: its card's), 2 threads, interleaved.",
        f"Command: `python benches/int8_fidelity.py --split {args.split} --queries {args.queries} --depth {args.depth}{' --lrt' if args.lrt else ''}`",
        "",
        "| variant | Spearman min | Spearman mean | MRR@10 alone (change) | p50 ms | time / shipped INT8 | GFLOP/s (GOP/s) |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])  # fmt: skip
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
