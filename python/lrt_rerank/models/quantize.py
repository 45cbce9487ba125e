"""Dynamic INT8 quantization of a model directory with ONNX Runtime's quantization tool."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from lrt_rerank.models.store import CARD, MODEL, TOKENIZER, ModelCard, file_sha256


def quantize_model_dir(src: Path, dst: Path, per_channel: bool = True) -> Path:
    """Write ``dst``: ``src`` with int8 weights (per channel), activations quantized at run time."""
    card = ModelCard.read(src)
    if not (src / MODEL).is_file():
        raise FileNotFoundError(f"{src / MODEL}: model file not found")
    dst.mkdir(parents=True, exist_ok=True)
    fused = any(n.domain == "com.microsoft" for n in onnx.load(str(src / MODEL), load_external_data=False).graph.node)
    quantize_dynamic(
        str(src / MODEL),
        str(dst / MODEL),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        # graphs fused by the transformer optimizer carry contrib ops whose outputs have no
        # inferred type; without a default the quantizer fails on them
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT} if fused else {},
    )
    shutil.copyfile(src / TOKENIZER, dst / TOKENIZER)
    data = dict(card.data)
    data["name"] = dst.name
    data["sha256"] = file_sha256(dst / MODEL)
    data["quantization"] = {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "weights": "int8, per channel" if per_channel else "int8, per tensor",
        "activations": "uint8, dynamic",
        "source_sha256": file_sha256(src / MODEL),
    }
    (dst / CARD).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return dst
