"""Tiny ONNX graphs whose outputs lie about their shape or fail at run time, saved into copies of
real model directories (their tokenizer.json and card.json), for the engine's output checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def _ids_inputs() -> list[onnx.ValueInfoProto]:
    return [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
        for name in ("input_ids", "attention_mask")
    ]


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def _token_values() -> list[onnx.NodeProto]:
    """x = float(attention_mask) + 0 * float(input_ids): [batch, sequence], reads both inputs."""
    return [
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
        _const("zero", np.array(0.0, dtype=np.float32)),
        helper.make_node("Mul", ["ids_f", "zero"], ["ids_0"]),
        helper.make_node("Add", ["mask_f", "ids_0"], ["x"]),
    ]


def _save(nodes: list[onnx.NodeProto], output: str, declared: list[int | str], src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    out = helper.make_tensor_value_info(output, TensorProto.FLOAT, declared)
    model = helper.make_model(helper.make_graph(nodes, "lying", _ids_inputs(), [out]), opset_imports=OPSET)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst / "model.onnx"))
    return dst


def cross_encoder_wider_than_declared(src: Path, dst: Path, width: int, declared: list[int | str]) -> Path:
    """logits [batch, width]: the token count of each row, repeated `width` times."""
    nodes = [
        *_token_values(),
        _const("axis1", np.array([1], dtype=np.int64)),
        helper.make_node("ReduceSum", ["x", "axis1"], ["one"], keepdims=1),
        helper.make_node("Concat", ["one"] * width, ["logits"], axis=1),
    ]
    return _save(nodes, "logits", declared, src, dst)


def cross_encoder_one_row_too_many(src: Path, dst: Path) -> Path:
    """logits [batch + 1, 1]: a constant row appended."""
    nodes = [
        *_token_values(),
        _const("axis1", np.array([1], dtype=np.int64)),
        helper.make_node("ReduceSum", ["x", "axis1"], ["rows"], keepdims=1),
        _const("extra", np.zeros((1, 1), dtype=np.float32)),
        helper.make_node("Concat", ["rows", "extra"], ["logits"], axis=0),
    ]
    return _save(nodes, "logits", ["rows", 1], src, dst)


def cross_encoder_reshaped_by(src: Path, dst: Path, tokens: int) -> Path:
    """logits = row sums of x reshaped to [-1, tokens]: [batch, 1] only when the batch holds `batch`
    sequences of exactly `tokens` tokens (the load-time probe does). Other batches either fail in
    ONNX Runtime (batch × sequence not a multiple of `tokens`) or come out with the wrong number of rows."""
    nodes = [
        *_token_values(),
        _const("shape", np.array([-1, tokens], dtype=np.int64)),
        helper.make_node("Reshape", ["x", "shape"], ["grouped"]),
        _const("axis1", np.array([1], dtype=np.int64)),
        helper.make_node("ReduceSum", ["grouped", "axis1"], ["logits"], keepdims=1),
    ]
    return _save(nodes, "logits", ["rows", 1], src, dst)


def cross_encoder_nan_below(src: Path, dst: Path, tokens: int) -> Path:
    """logits = sqrt(token count - tokens): NaN for pairs shorter than `tokens`."""
    nodes = [
        *_token_values(),
        _const("axis1", np.array([1], dtype=np.int64)),
        helper.make_node("ReduceSum", ["x", "axis1"], ["count"], keepdims=1),
        _const("limit", np.array(float(tokens), dtype=np.float32)),
        helper.make_node("Sub", ["count", "limit"], ["margin"]),
        helper.make_node("Sqrt", ["margin"], ["logits"]),
    ]
    return _save(nodes, "logits", ["batch", 1], src, dst)


def _token_embeddings(dim: int) -> list[onnx.NodeProto]:
    """emb [batch, sequence, dim]: x broadcast over `dim` features (1, 2, ..., dim)."""
    return [
        *_token_values(),
        _const("axis2", np.array([2], dtype=np.int64)),
        helper.make_node("Unsqueeze", ["x", "axis2"], ["x3"]),
        _const("features", np.arange(1, dim + 1, dtype=np.float32).reshape(1, 1, dim)),
        helper.make_node("Mul", ["x3", "features"], ["emb"]),
    ]


def bi_encoder_one_token_short(src: Path, dst: Path, dim: int = 4) -> Path:
    """Token embeddings [batch, sequence - 1, dim]: the last token dropped."""
    nodes = [
        *_token_embeddings(dim),
        _const("starts", np.array([0], dtype=np.int64)),
        _const("ends", np.array([-1], dtype=np.int64)),
        _const("axes", np.array([1], dtype=np.int64)),
        helper.make_node("Slice", ["emb", "starts", "ends", "axes"], ["last_hidden_state"]),
    ]
    return _save(nodes, "last_hidden_state", ["batch", "shorter", dim], src, dst)


def bi_encoder_reshaped_by(src: Path, dst: Path, tokens: int, dim: int = 4) -> Path:
    """Token embeddings reshaped to [-1, tokens, dim]: right only for batches of `tokens`-token sequences.

    The `tokens` of the target shape is computed from the input (max(attention_mask) × tokens), so shape
    inference cannot fix the output's sequence dimension and the graph passes the load-time checks."""
    nodes = [
        *_token_embeddings(dim),
        helper.make_node("ReduceMax", ["attention_mask"], ["one"], keepdims=0),  # a scalar 1
        helper.make_node("Mul", ["one", "n_tokens"], ["seq"]),
        helper.make_node("Unsqueeze", ["seq", "axis0"], ["seq_1d"]),
        helper.make_node("Concat", ["minus_one", "seq_1d", "width"], ["shape"], axis=0),
        helper.make_node("Reshape", ["emb", "shape"], ["last_hidden_state"]),
    ]
    nodes[len(_token_embeddings(dim)) : len(_token_embeddings(dim))] = [
        _const("n_tokens", np.array(tokens, dtype=np.int64)),
        _const("axis0", np.array([0], dtype=np.int64)),
        _const("minus_one", np.array([-1], dtype=np.int64)),
        _const("width", np.array([dim], dtype=np.int64)),
    ]
    return _save(nodes, "last_hidden_state", ["rows", "tokens", dim], src, dst)


def bi_encoder_pooled(src: Path, dst: Path, declared: list[int | str], dim: int = 4) -> Path:
    """Mean-pooled [batch, dim] output declared as `declared`."""
    nodes = [
        *_token_embeddings(dim),
        helper.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0),  # axes an attribute before opset 18
    ]
    return _save(nodes, "pooled", declared, src, dst)
