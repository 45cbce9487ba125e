"""Dynamic INT8 quantization of a model directory with ONNX Runtime's quantization tool.

Weights become int8 (per output channel by default), activations are quantized to uint8 at run time.
``keep_fp32`` leaves parts of a graph fused by the transformer optimizer in FP32:

``"head"``        the pooler and classifier after the last transformer layer;
``"head+edges"``  those and the first and last transformer layers.

What each costs and keeps of the FP32 scores, per CPU kind, is in benches/RESULTS.md ("INT8 fidelity").
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lrt_rerank.models.store import CARD, MODEL, MODEL_DATA, TOKENIZER, ModelCard, model_sha256

if TYPE_CHECKING:
    import onnx

#: INT8 schemes: "dynamic" (this module) and "static", calibrated (:mod:`lrt_rerank.models.static_int8`).
SCHEMES = ("dynamic", "static")
#: What ``--int8`` without a value means: the scheme that measured faster at equal fidelity (benches/RESULTS.md).
DEFAULT_SCHEME = "dynamic"
KeepFp32 = Literal["none", "head", "head+edges"]
KEEP_FP32: tuple[KeepFp32, ...] = ("none", "head", "head+edges")
GEMMS = ("MatMul", "Gemm", "Attention")


def fp32_nodes(graph: onnx.GraphProto, keep: KeepFp32) -> list[str]:
    """Names of the nodes ``keep`` leaves unquantized in a fused transformer graph.

    A transformer layer runs from one ``Attention`` node to the next; the head is every GEMM after the
    last ``SkipLayerNormalization``. A graph without fused ``Attention`` nodes has no layers to keep.
    """
    if keep not in KEEP_FP32:
        raise ValueError(f"keep_fp32 must be one of {', '.join(KEEP_FP32)}, got {keep!r}")
    if keep == "none":
        return []
    nodes = list(graph.node)
    norms = [i for i, n in enumerate(nodes) if n.op_type in ("SkipLayerNormalization", "LayerNormalization")]
    if not norms:
        raise ValueError("keep_fp32 needs a graph with layer normalizations (fused or not)")
    kept = [n.name for n in nodes[norms[-1] + 1 :] if n.op_type in GEMMS]
    attention = [i for i, n in enumerate(nodes) if n.op_type == "Attention"]
    if keep == "head+edges" and attention:
        bounds = [*attention, norms[-1] + 1]
        for start, end in ((bounds[0], bounds[1]), (bounds[-2], bounds[-1])):
            kept += [n.name for n in nodes[start:end] if n.op_type in GEMMS]
    if any(not name for name in kept):
        raise ValueError("keep_fp32 needs named nodes; this graph has unnamed GEMMs")
    # quantize_dynamic first rewrites each Gemm as a MatMul named "<gemm>_MatMul" plus an Add
    gemms = {n.name for n in nodes if n.op_type == "Gemm"}
    return sorted(set(kept) | {f"{name}_MatMul" for name in kept if name in gemms})


def quantize_model_dir(
    src: Path, dst: Path, per_channel: bool = True, keep_fp32: KeepFp32 = "none", reduce_range: bool = False
) -> Path:
    """Write ``dst``: ``src`` with int8 weights (per channel), activations quantized at run time."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ModelCard.read(src)  # a directory without a valid card fails here, before any work
    if not (src / MODEL).is_file():
        raise FileNotFoundError(f"{src / MODEL}: model file not found")
    dst.mkdir(parents=True, exist_ok=True)
    graph = onnx.load(str(src / MODEL), load_external_data=False).graph
    fused = any(n.domain == "com.microsoft" for n in graph.node)
    external = (src / MODEL_DATA).is_file()
    excluded = fp32_nodes(graph, keep_fp32)
    quantize_dynamic(
        str(src / MODEL),
        str(dst / MODEL),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        reduce_range=reduce_range,
        nodes_to_exclude=excluded,
        # graphs fused by the transformer optimizer carry contrib ops whose outputs have no
        # inferred type; without a default the quantizer fails on them
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT} if fused else {},
        use_external_data_format=external,
    )
    if external:  # the quantizer names its data file model.onnx.data; ours is model.onnx_data (or none)
        from lrt_rerank.models.onnx_files import consolidate

        consolidate(dst / MODEL)
    quantization = {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "weights": ("int8, per channel" if per_channel else "int8, per tensor") + (", 7-bit range" if reduce_range else ""),
        "activations": "uint8, dynamic",
        "source_sha256": model_sha256(src),
    }
    if excluded:
        quantization["fp32"] = {"keep": keep_fp32, "nodes": excluded}
    return write_quantized_card(src, dst, quantization)


def write_quantized_card(src: Path, dst: Path, quantization: dict[str, Any], **measured: Any) -> Path:
    """Finish ``dst`` (its model.onnx written): ``src``'s tokenizer, and ``src``'s card with ``quantization``
    and the ``measured`` figures added."""
    shutil.copyfile(src / TOKENIZER, dst / TOKENIZER)
    data = dict(ModelCard.read(src).data)
    data["name"] = dst.name
    data["sha256"] = model_sha256(dst)
    # the INT8 graph may fit one file where the FP32 one needed external data
    data.pop("external_data", None)
    if (dst / MODEL_DATA).is_file():
        data["external_data"] = MODEL_DATA
    data["quantization"] = quantization
    if measured:
        data["measured"] = {**data.get("measured", {}), **measured}
    (dst / CARD).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return dst
