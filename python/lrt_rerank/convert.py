"""Build BERT-family ONNX graphs straight from safetensors weights, without torch.

The graph is written with the `onnx` package (opset 17) in the classic attention pattern
(MatMul → Softmax → MatMul), so ONNX Runtime's transformer optimizer can fuse it. Two heads:

- ``bi-encoder``: outputs ``last_hidden_state`` [batch, seq, hidden]; the engine mean-pools.
- ``cross-encoder``: takes ``token_type_ids`` and outputs ``logits`` [batch, 1] from a linear
  head over the [CLS] state (weights given, or seeded random for a placeholder).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

OPSET = 17


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position: int
    layer_norm_eps: float

    @classmethod
    def from_file(cls, path: Path) -> "BertConfig":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read a BERT config.json: {exc}") from exc
        try:
            return cls(
                vocab_size=int(raw["vocab_size"]),
                hidden_size=int(raw["hidden_size"]),
                num_layers=int(raw["num_hidden_layers"]),
                num_heads=int(raw["num_attention_heads"]),
                intermediate_size=int(raw["intermediate_size"]),
                max_position=int(raw["max_position_embeddings"]),
                layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            )
        except KeyError as exc:
            raise ValueError(f"{path}: missing field {exc.args[0]!r}") from exc


class _Graph:
    """Small helper that names nodes and collects initializers."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], prefix: str | None = None, **attrs: object) -> str:
        out = self.name(prefix or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray, prefix: str) -> str:
        # torch Linear stores [out, in]; MatMul wants [in, out]
        w = self.const(f"{prefix}.weight_t", np.ascontiguousarray(weight.T.astype(np.float32)))
        b = self.const(f"{prefix}.bias", bias.astype(np.float32))
        return self.op("Add", [self.op("MatMul", [x, w]), b])

    def layer_norm(self, x: str, gamma: np.ndarray, beta: np.ndarray, prefix: str, eps: float) -> str:
        g = self.const(f"{prefix}.weight", gamma.astype(np.float32))
        b = self.const(f"{prefix}.bias", beta.astype(np.float32))
        return self.op("LayerNormalization", [x, g, b], axis=-1, epsilon=eps)


def _weights(weights: dict[str, np.ndarray], key: str, source: Path) -> np.ndarray:
    for candidate in (key, f"bert.{key}"):
        if candidate in weights:
            return weights[candidate]
    raise ValueError(f"{source}: tensor {key!r} not found (is this a BERT checkpoint?)")


def build_bert_onnx(
    weights_path: Path,
    config: BertConfig,
    kind: str,
    num_layers: int | None = None,
    head: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
) -> onnx.ModelProto:
    """Return an ONNX model for ``kind`` ('bi-encoder' or 'cross-encoder').

    ``num_layers`` keeps the first N encoder layers (a smaller, faster model). For a
    cross-encoder, ``head`` is (weight [1, hidden], bias [1]); without it a seeded random head
    is used (a placeholder whose scores carry no relevance signal).
    """
    if kind not in ("bi-encoder", "cross-encoder"):
        raise ValueError(f"kind must be 'bi-encoder' or 'cross-encoder', got {kind!r}")
    try:
        w = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises several error types
        raise ValueError(f"{weights_path}: cannot read safetensors weights: {exc}") from exc
    layers = config.num_layers if num_layers is None else num_layers
    if not 1 <= layers <= config.num_layers:
        raise ValueError(f"num_layers must be in 1..{config.num_layers}, got {layers}")
    hidden, heads = config.hidden_size, config.num_heads
    head_dim = hidden // heads
    g = _Graph()
    get = lambda key: _weights(w, key, weights_path)  # noqa: E731

    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
    ]
    if kind == "cross-encoder":
        inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["batch", "sequence"]))

    # embeddings
    word = g.const("embeddings.word", get("embeddings.word_embeddings.weight").astype(np.float32))
    pos_table = g.const("embeddings.position", get("embeddings.position_embeddings.weight").astype(np.float32))
    type_table = get("embeddings.token_type_embeddings.weight").astype(np.float32)
    x = g.op("Gather", [word, "input_ids"], axis=0)
    shape = g.op("Shape", ["input_ids"])
    seq = g.op("Gather", [shape, g.const("one_scalar", np.array(1, dtype=np.int64))], axis=0)
    positions = g.op(
        "Range", [g.const("zero_scalar", np.array(0, dtype=np.int64)), seq, "one_scalar"]
    )
    x = g.op("Add", [x, g.op("Gather", [pos_table, positions], axis=0)])
    if kind == "cross-encoder":
        types = g.const("embeddings.token_type", type_table)
        x = g.op("Add", [x, g.op("Gather", [types, "token_type_ids"], axis=0)])
    else:
        x = g.op("Add", [x, g.const("embeddings.token_type0", type_table[0])])
    x = g.layer_norm(
        x, get("embeddings.LayerNorm.weight"), get("embeddings.LayerNorm.bias"), "embeddings.ln", config.layer_norm_eps
    )

    # additive attention mask [batch, 1, 1, seq]: 0 where attended, -10000 on padding
    mask_f = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    inverted = g.op("Sub", [g.const("one_f", np.array(1.0, dtype=np.float32)), mask_f])
    bias = g.op("Mul", [inverted, g.const("mask_neg", np.array(-10000.0, dtype=np.float32))])
    bias = g.op("Unsqueeze", [bias, g.const("mask_axes", np.array([1, 2], dtype=np.int64))])

    split_shape = g.const("split_heads_shape", np.array([0, 0, heads, head_dim], dtype=np.int64))
    merge_shape = g.const("merge_heads_shape", np.array([0, 0, hidden], dtype=np.int64))
    scale = g.const("attn_scale", np.array(1.0 / math.sqrt(head_dim), dtype=np.float32))
    half = g.const("half", np.array(0.5, dtype=np.float32))
    one = "one_f"
    inv_sqrt2 = g.const("inv_sqrt2", np.array(1.0 / math.sqrt(2.0), dtype=np.float32))

    for i in range(layers):
        p = f"encoder.layer.{i}"
        q = g.linear(x, get(f"{p}.attention.self.query.weight"), get(f"{p}.attention.self.query.bias"), f"{p}.q")
        k = g.linear(x, get(f"{p}.attention.self.key.weight"), get(f"{p}.attention.self.key.bias"), f"{p}.k")
        v = g.linear(x, get(f"{p}.attention.self.value.weight"), get(f"{p}.attention.self.value.bias"), f"{p}.v")
        q = g.op("Transpose", [g.op("Reshape", [q, split_shape])], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [k, split_shape])], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [v, split_shape])], perm=[0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), bias])
        probs = g.op("Softmax", [scores], axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merge_shape])
        attn = g.linear(ctx, get(f"{p}.attention.output.dense.weight"), get(f"{p}.attention.output.dense.bias"), f"{p}.o")
        x = g.layer_norm(
            g.op("Add", [attn, x]),
            get(f"{p}.attention.output.LayerNorm.weight"),
            get(f"{p}.attention.output.LayerNorm.bias"),
            f"{p}.ln1",
            config.layer_norm_eps,
        )
        ff = g.linear(x, get(f"{p}.intermediate.dense.weight"), get(f"{p}.intermediate.dense.bias"), f"{p}.ff1")
        # exact (erf) GELU, as in BERT
        gelu = g.op("Mul", [g.op("Mul", [ff, half]), g.op("Add", [g.op("Erf", [g.op("Mul", [ff, inv_sqrt2])]), one])])
        ff = g.linear(gelu, get(f"{p}.output.dense.weight"), get(f"{p}.output.dense.bias"), f"{p}.ff2")
        x = g.layer_norm(
            g.op("Add", [ff, x]), get(f"{p}.output.LayerNorm.weight"), get(f"{p}.output.LayerNorm.bias"), f"{p}.ln2",
            config.layer_norm_eps,
        )

    if kind == "bi-encoder":
        g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))
        outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden])]
    else:
        if head is None:
            rng = np.random.default_rng(seed)
            head = (rng.normal(0.0, 0.02, size=(1, hidden)).astype(np.float32), np.zeros(1, dtype=np.float32))
        cls = g.op("Gather", [x, "zero_scalar"], axis=1)  # [batch, hidden]
        logits = g.linear(cls, head[0], head[1], "classifier")
        g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="output"))
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])]

    graph = helper.make_graph(g.nodes, f"bert-{kind}", inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lrt-rerank")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def count_parameters(model: onnx.ModelProto) -> int:
    """Number of float weights in the graph (scalars and shape constants excluded)."""
    return sum(
        int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) >= 1
    )
