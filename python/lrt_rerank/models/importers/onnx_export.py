"""Take over a snapshot's own ONNX export: check its inputs and give its first output the engine's shape.

Cross-encoders end in ``logits`` [batch, 1]: one label is reshaped if needed, two labels become
``logit[1] - logit[0]`` (a Sub node is appended). Bi-encoders keep their first output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lrt_rerank import _core

ID_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "logits"


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def _last_dim(value: onnx.ValueInfoProto) -> int | None:
    dims = value.type.tensor_type.shape.dim
    return dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None


def adapt_onnx_export(path: Path, kind: str, num_labels: int | None) -> onnx.ModelProto:
    """The export at ``path`` with inputs checked and, for a cross-encoder, output ``logits`` [batch, 1]."""
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise _core.ModelError(f"{path}: not a loadable ONNX model: {exc}") from exc
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]  # IR < 4 lists initializers as inputs
    names = [i.name for i in inputs]
    for value in inputs:
        if value.name not in ID_INPUTS:
            raise _core.ModelError(f"{path}: graph input {value.name!r} is not one of {', '.join(ID_INPUTS)}")
        if value.type.tensor_type.elem_type != TensorProto.INT64:
            raise _core.ModelError(f"{path}: graph input {value.name!r} must be int64")
    for required in ("input_ids", "attention_mask"):
        if required not in names:
            raise _core.ModelError(f"{path}: graph has no {required!r} input (inputs: {names})")
    if not graph.output:
        raise _core.ModelError(f"{path}: graph has no outputs")
    del graph.output[1:]
    if kind == "bi-encoder":
        return model

    first = graph.output[0]
    width = _last_dim(first)
    rank = len(first.type.tensor_type.shape.dim)
    if width is not None and rank == 2 and width != num_labels:
        raise _core.ModelError(
            f"{path}: output {first.name!r} has {width} labels, config.json says {num_labels}"
        )
    raw = f"{first.name}_labels"
    _rename_tensor(graph, first.name, raw)
    if num_labels == 2:
        picked = []
        for i in (1, 0):
            index = f"{raw}_index{i}"
            graph.initializer.append(numpy_helper.from_array(np.array([i], dtype=np.int64), index))
            picked.append(f"{raw}_{i}")
            graph.node.append(helper.make_node("Gather", [raw, index], [picked[-1]], name=picked[-1], axis=1))
        graph.node.append(helper.make_node("Sub", picked, [OUTPUT], name="logit1_minus_logit0"))
    else:
        shape = f"{raw}_shape"
        graph.initializer.append(numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), shape))
        graph.node.append(helper.make_node("Reshape", [raw, shape], [OUTPUT], name="logits_column"))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 1]))
    onnx.checker.check_model(model)
    return model
