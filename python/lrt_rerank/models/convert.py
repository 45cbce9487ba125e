"""Build transformer-encoder ONNX graphs straight from checkpoint tensors, without torch.

Four encoder families share one graph builder: BERT/MiniLM (``bert``), ELECTRA (``electra``),
RoBERTa/XLM-RoBERTa (``roberta``, ``xlm-roberta``) and DistilBERT (``distilbert``). The graph is
written with the `onnx` package (opset 17) in the classic attention pattern
(MatMul → Softmax → MatMul), so ONNX Runtime's transformer optimizer can fuse it.

Outputs:

- no head (bi-encoder): ``last_hidden_state`` [batch, seq, hidden]; the engine pools.
- a head (cross-encoder): ``logits`` [batch, 1]. :func:`sequence_classification_head` is the
  exact head of transformers' ``*ForSequenceClassification`` class of the family (with two labels
  the graph outputs ``logit[1] - logit[0]``); :func:`linear_cls_head` is a bare linear layer on
  [CLS] (the MiniLM placeholder).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lrt_rerank.models.checkpoint import ACTIVATIONS, Checkpoint, EncoderConfig
from lrt_rerank.models.onnx_files import MAX_GRAPH_BYTES, weight_bytes
from lrt_rerank.models.weights import read_safetensors

OPSET = 17
#: Additive attention bias on padded positions.
MASK_BIAS = -10000.0

_BERT_LAYER = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "o": "attention.output.dense",
    "ln1": "attention.output.LayerNorm",
    "ff1": "intermediate.dense",
    "ff2": "output.dense",
    "ln2": "output.LayerNorm",
}
_DISTILBERT_LAYER = {
    "q": "attention.q_lin",
    "k": "attention.k_lin",
    "v": "attention.v_lin",
    "o": "attention.out_lin",
    "ln1": "sa_layer_norm",
    "ff1": "ffn.lin1",
    "ff2": "ffn.lin2",
    "ln2": "output_layer_norm",
}


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

    def move_initializers(self, graph: onnx.GraphProto) -> None:
        """Append the initializers to ``graph`` in order, dropping ours as each is copied in: the weights are held
        once (plus one tensor), not twice, while a graph over 2 GB is assembled."""
        self.inits.reverse()
        while self.inits:
            graph.initializer.append(self.inits.pop())

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

    def scalar(self, name: str, value: float) -> str:
        if not any(t.name == name for t in self.inits):
            self.const(name, np.array(value, dtype=np.float32))
        return name

    def activation(self, x: str, form: str) -> str:
        """``form``: 'gelu-erf' (exact), 'gelu-tanh' (tanh approximation), 'relu' or 'tanh'.

        The GELUs are written as torch exports them, the patterns ORT fuses into Gelu / FastGelu.
        """
        if form == "relu":
            return self.op("Relu", [x])
        if form == "tanh":
            return self.op("Tanh", [x])
        half, one = self.scalar("half", 0.5), self.scalar("one_f", 1.0)
        if form == "gelu-erf":
            inner = self.op("Erf", [self.op("Div", [x, self.scalar("sqrt2", math.sqrt(2.0))])])
        else:  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            cube = self.op("Pow", [x, self.scalar("three", 3.0)])
            inner = self.op("Add", [x, self.op("Mul", [cube, self.scalar("gelu_coeff", 0.044715)])])
            inner = self.op("Tanh", [self.op("Mul", [inner, self.scalar("sqrt_2_over_pi", math.sqrt(2.0 / math.pi))])])
        return self.op("Mul", [self.op("Mul", [x, half]), self.op("Add", [inner, one])])


#: Maps the final hidden state [batch, seq, hidden] to logits [batch, 1].
Head = Callable[[_Graph, str], str]


def _cls(g: _Graph, x: str) -> str:
    return g.op("Gather", [x, g.const("cls_index", np.array(0, dtype=np.int64))], axis=1)  # [batch, hidden]


def linear_cls_head(weight: np.ndarray, bias: np.ndarray) -> Head:
    """``logits = [CLS] · weight.T + bias`` with weight [1, hidden], bias [1]."""

    def head(g: _Graph, x: str) -> str:
        return g.linear(_cls(g, x), weight, bias, "classifier")

    return head


def sequence_classification_head(ckpt: Checkpoint, config: EncoderConfig, num_labels: int) -> Head:
    """The head of transformers' ``<Family>ForSequenceClassification`` on [CLS].

    bert: pooler (dense, tanh) + classifier; electra: dense, exact GELU, out_proj; roberta /
    xlm-roberta: dense, tanh, out_proj; distilbert: pre_classifier, ReLU, classifier. With two
    labels the output is ``logit[1] - logit[0]`` (its sigmoid is the softmax of label 1).
    """
    if num_labels not in (1, 2):
        raise ValueError(f"num_labels must be 1 or 2, got {num_labels}")
    h = config.hidden_size
    dense, form, out = {
        "bert": ("pooler.dense", "tanh", "classifier"),
        "electra": ("classifier.dense", "gelu-erf", "classifier.out_proj"),
        "roberta": ("classifier.dense", "tanh", "classifier.out_proj"),
        "xlm-roberta": ("classifier.dense", "tanh", "classifier.out_proj"),
        "distilbert": ("pre_classifier", "relu", "classifier"),
    }[config.model_type]
    get = ckpt.base if config.model_type == "bert" else ckpt.top  # BERT's pooler belongs to the base model
    dense_w, dense_b = get(f"{dense}.weight", (h, h)), get(f"{dense}.bias", (h,))
    out_w, out_b = ckpt.top(f"{out}.weight", (num_labels, h)), ckpt.top(f"{out}.bias", (num_labels,))

    def head(g: _Graph, x: str) -> str:
        pooled = g.activation(g.linear(_cls(g, x), dense_w, dense_b, dense), form)
        logits = g.linear(pooled, out_w, out_b, out)  # [batch, num_labels]
        if num_labels == 1:
            return logits
        label0, label1 = (g.const(f"label{i}", np.array([i], dtype=np.int64)) for i in (0, 1))
        return g.op("Sub", [g.op("Gather", [logits, label1], axis=1), g.op("Gather", [logits, label0], axis=1)])

    return head


def build_encoder_onnx(
    ckpt: Checkpoint, config: EncoderConfig, head: Head | None, num_layers: int | None = None
) -> onnx.ModelProto:
    """The encoder of ``config.model_type`` with ``head`` (None: output ``last_hidden_state``).

    ``num_layers`` keeps the first N encoder layers. ``token_type_ids`` is a graph input only for a
    cross-encoder of a family with segment embeddings (BERT, ELECTRA); elsewhere type 0 is a constant.
    """
    layers = config.num_layers if num_layers is None else num_layers
    if not 1 <= layers <= config.num_layers:
        raise ValueError(f"num_layers must be in 1..{config.num_layers}, got {layers}")
    hidden, heads, inter = config.hidden_size, config.num_heads, config.intermediate_size
    emb = config.embedding_width
    head_dim = hidden // heads
    distil = config.model_type == "distilbert"
    names = _DISTILBERT_LAYER if distil else _BERT_LAYER
    layer_prefix = "transformer.layer" if distil else "encoder.layer"
    feeds_types = head is not None and config.has_token_types
    g = _Graph()

    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
    ]
    if feeds_types:
        inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["batch", "sequence"]))

    # embeddings: word + token type + position → LayerNorm (→ ELECTRA's projection). Where the token
    # type is a constant 0, its row is folded into the position table, and RoBERTa's offset (position
    # ids start at pad_token_id + 1) is sliced off it: the graph then has the pattern ORT fuses into
    # EmbedLayerNormalization (position ids 0..seq-1, expanded to [batch, seq]).
    positions_table = ckpt.base("embeddings.position_embeddings.weight", (config.max_position, emb))
    positions_table = positions_table[config.position_offset :]
    word = g.const("embeddings.word", ckpt.base("embeddings.word_embeddings.weight", (config.vocab_size, emb)))
    x = g.op("Gather", [word, "input_ids"], axis=0)
    if config.type_vocab_size:
        type_table = ckpt.base("embeddings.token_type_embeddings.weight", (config.type_vocab_size, emb))
        if feeds_types:
            types = g.op("Gather", [g.const("embeddings.token_type", type_table), "token_type_ids"], axis=0)
            x = g.op("Add", [x, types])
        else:
            positions_table = positions_table + type_table[0]
    one_i = g.const("one_scalar", np.array(1, dtype=np.int64))
    shape = g.op("Shape", ["input_ids"])
    seq = g.op("Gather", [shape, one_i], axis=0)
    positions = g.op("Range", [g.const("zero_scalar", np.array(0, dtype=np.int64)), seq, one_i])
    positions = g.op("Expand", [g.op("Unsqueeze", [positions, g.const("axis0", np.array([0], dtype=np.int64))]), shape])
    x = g.op("Add", [x, g.op("Gather", [g.const("embeddings.position", positions_table), positions], axis=0)])
    x = g.layer_norm(
        x,
        ckpt.base("embeddings.LayerNorm.weight", (emb,)),
        ckpt.base("embeddings.LayerNorm.bias", (emb,)),
        "embeddings.ln",
        config.layer_norm_eps,
    )
    if emb != hidden:
        x = g.linear(
            x,
            ckpt.base("embeddings_project.weight", (hidden, emb)),
            ckpt.base("embeddings_project.bias", (hidden,)),
            "embeddings_project",
        )

    # additive attention mask [batch, 1, 1, seq]: 0 where attended, MASK_BIAS on padding; written as
    # transformers' BERT exports it (Unsqueeze, Unsqueeze, Cast, Sub, Mul), the pattern ORT fuses into Attention
    mask = g.op("Unsqueeze", ["attention_mask", g.const("axis1", np.array([1], dtype=np.int64))])
    mask = g.op("Unsqueeze", [mask, g.const("axis2", np.array([2], dtype=np.int64))])
    inverted = g.op("Sub", [g.scalar("one_f", 1.0), g.op("Cast", [mask], to=TensorProto.FLOAT)])
    bias = g.op("Mul", [inverted, g.scalar("mask_neg", MASK_BIAS)])

    split_shape = g.const("split_heads_shape", np.array([0, 0, heads, head_dim], dtype=np.int64))
    merge_shape = g.const("merge_heads_shape", np.array([0, 0, hidden], dtype=np.int64))
    scale = g.scalar("attn_sqrt_head_dim", math.sqrt(head_dim))
    ffn_form = ACTIVATIONS[config.hidden_act]

    def linear(x: str, layer: str, part: str, out: int, inp: int) -> str:
        key = f"{layer}.{names[part]}"
        return g.linear(x, ckpt.base(f"{key}.weight", (out, inp)), ckpt.base(f"{key}.bias", (out,)), f"{layer}.{part}")

    def layer_norm(x: str, layer: str, part: str) -> str:
        key = f"{layer}.{names[part]}"
        w, b = ckpt.base(f"{key}.weight", (hidden,)), ckpt.base(f"{key}.bias", (hidden,))
        return g.layer_norm(x, w, b, f"{layer}.{part}", config.layer_norm_eps)

    for i in range(layers):
        p = f"{layer_prefix}.{i}"
        q = linear(x, p, "q", hidden, hidden)
        k = linear(x, p, "k", hidden, hidden)
        v = linear(x, p, "v", hidden, hidden)
        q = g.op("Transpose", [g.op("Reshape", [q, split_shape])], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [k, split_shape])], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [v, split_shape])], perm=[0, 2, 1, 3])
        scores = g.op("Add", [g.op("Div", [g.op("MatMul", [q, k]), scale]), bias])  # Div, as torch exports it
        probs = g.op("Softmax", [scores], axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merge_shape])
        x = layer_norm(g.op("Add", [linear(ctx, p, "o", hidden, hidden), x]), p, "ln1")
        ff = g.activation(linear(x, p, "ff1", inter, hidden), ffn_form)
        x = layer_norm(g.op("Add", [linear(ff, p, "ff2", hidden, inter), x]), p, "ln2")

    kind = "bi-encoder" if head is None else "cross-encoder"
    if head is None:
        g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))
        outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden])]
    else:
        g.nodes.append(helper.make_node("Identity", [head(g, x)], ["logits"], name="output"))
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])]

    # make_model copies its graph: the weights go in only after that, straight into the model's graph
    graph = helper.make_graph(g.nodes, f"{config.model_type}-{kind}", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lrt-rerank")
    g.move_initializers(model.graph)
    model.ir_version = 8
    if weight_bytes(model) <= MAX_GRAPH_BYTES:  # larger graphs are checked once saved with external data
        onnx.checker.check_model(model)
    return model


def build_bert_onnx(
    weights_path: Path,
    config: EncoderConfig,
    kind: str,
    num_layers: int | None = None,
    head: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
) -> onnx.ModelProto:
    """A BERT safetensors checkpoint as a bi-encoder or a cross-encoder with a linear [CLS] head.

    For a cross-encoder, ``head`` is (weight [1, hidden], bias [1]); without it a seeded random
    head is used (a placeholder whose scores carry no relevance signal).
    """
    if kind not in ("bi-encoder", "cross-encoder"):
        raise ValueError(f"kind must be 'bi-encoder' or 'cross-encoder', got {kind!r}")
    ckpt = Checkpoint(read_safetensors(weights_path), weights_path, "bert")
    graph_head = None
    if kind == "cross-encoder":
        if head is None:
            rng = np.random.default_rng(seed)
            weight = rng.normal(0.0, 0.02, size=(1, config.hidden_size)).astype(np.float32)
            head = (weight, np.zeros(1, dtype=np.float32))
        graph_head = linear_cls_head(*head)
    return build_encoder_onnx(ckpt, config, graph_head, num_layers)


_WEIGHT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT8, TensorProto.UINT8)


def count_parameters(model: onnx.ModelProto) -> int:
    """Number of weights in the graph, float or 8-bit quantized (scalars, shape constants and
    quantization scales / zero points excluded)."""
    return sum(
        int(np.prod(t.dims))
        for t in model.graph.initializer
        if t.data_type in _WEIGHT_TYPES
        and len(t.dims) >= 1
        and not t.name.endswith(("_scale", "_zero_point"))
    )
