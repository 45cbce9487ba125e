"""Graphs of the families transformers computes for us, exported with torch.onnx (the [train] extra).

ModernBERT (rotary positions, alternating global / sliding-window attention, cls or mean pooling and its
head) and DeBERTa-v2/v3 (disentangled relative attention, the ContextPooler head) are exported from their
``*ForSequenceClassification`` models; a Qwen3 causal LM under a prompt template
(:mod:`lrt_rerank.models.prompts`) from ``Qwen3ForCausalLM``. The model is loaded by transformers (which
reads single files and shards alike) with eager attention, the classic MatMul-Softmax-MatMul pattern, and
wrapped so that the graph ends in the engine's ``logits`` [batch, 1]:

- one label: the logit; two labels: ``logit[1] - logit[0]``;
- a template: the final hidden state of each row's last real token (the engine pads on the right, so it
  sits at ``sum(attention_mask) - 1``; causal attention never sees the padding after it) times
  ``lm_head[yes] - lm_head[no]``: the difference of the two next-token logits, without the vocabulary-wide
  head in the graph.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from lrt_rerank import _core
from lrt_rerank.models.checkpoint import EncoderConfig
from lrt_rerank.models.convert import OPSET
from lrt_rerank.models.prompts import Prompt

HEADS = {
    "modernbert": "ModernBertForSequenceClassification: cls or mean pooling, head (dense, activation, norm), classifier",
    "deberta-v2": "DebertaV2ForSequenceClassification: ContextPooler (dense, activation on [CLS]), classifier",
    "qwen3": "Qwen3ForCausalLM: last token's final hidden state times lm_head[yes] - lm_head[no]",
}
#: Inputs of the dummy batch the graph is traced with (its axes are exported dynamic).
TRACE_SHAPE = (2, 16)


def require_torch(config_path: Path, model_type: str) -> None:
    missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        raise _core.ModelError(
            f"{config_path}: model_type {model_type!r} is converted with torch.onnx from transformers, which needs "
            f"{' and '.join(missing)}: pip install 'lrt-rerank[train]'"
        )


def _load(root: Path, config: EncoderConfig, prompt: Prompt | None) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForCausalLM if prompt is not None else AutoModelForSequenceClassification
    try:
        model = auto.from_pretrained(str(root), attn_implementation="eager", dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for bad or missing files
        raise _core.ModelError(f"{root}: transformers could not load the {config.model_type} model: {exc}") from exc
    return model.eval()


def _wrapper(model: Any, num_labels: int | None, prompt: Prompt | None, token_types: bool) -> Any:
    import torch

    class Score(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            if prompt is not None:
                weight = model.get_output_embeddings().weight
                direction = weight[prompt.yes_token_id] - weight[prompt.no_token_id]
                # [hidden, 1]: a 2-D weight, which INT8 quantizes per output channel like any other
                self.register_buffer("direction", direction.detach().clone().unsqueeze(1))

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            if prompt is not None:
                hidden = self.model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                last = (attention_mask.sum(dim=1) - 1).clamp(min=0)
                index = last.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
                return torch.gather(hidden, 1, index).squeeze(1).matmul(self.direction)
            extra = {"token_type_ids": token_type_ids} if token_types else {}
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
            return logits[:, :1] if num_labels == 1 else logits[:, 1:2] - logits[:, 0:1]

    return Score().eval()


def export_graph(
    root: Path, config: EncoderConfig, num_labels: int | None, prompt: Prompt | None, out: Path
) -> tuple[str, list[str]]:
    """Write the graph to ``out`` (with external data beside it where torch writes it); return how it was
    made and its input names."""
    import torch

    require_torch(root / "config.json", config.model_type)
    model = _load(root, config, prompt)
    token_types = prompt is None and config.has_token_types
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_types else [])
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, TRACE_SHAPE, generator=generator)
    mask = torch.ones_like(ids)
    mask[1, TRACE_SHAPE[1] // 2 :] = 0
    args = (ids, mask, torch.zeros_like(ids))[: len(names)]
    wrapped = _wrapper(model, num_labels, prompt, token_types)
    with torch.no_grad():
        torch.onnx.export(
            wrapped,
            args,
            str(out),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**{k: {0: "batch", 1: "sequence"} for k in names}, "logits": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    del wrapped, model
    return f"torch.onnx.export (TorchScript, opset {OPSET}) of transformers' {HEADS[config.model_type].split(':')[0]}", names
