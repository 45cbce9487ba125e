"""The trainable cross-encoder: a BERT encoder over ``[CLS] query [SEP] passage [SEP]`` plus a
segment-pooled similarity head.

all-MiniLM-L6-v2 was trained as a bi-encoder with mean pooling and cosine similarity, so its
[CLS] state carries no relevance signal and a fresh linear head on it starts from nothing
(ARCHITECTURE.md, pitfalls). The head here reuses what the backbone already knows: it mean-pools
the jointly encoded query tokens (token type 0) and passage tokens (type 1) separately and scores

    logit = scale * cos(mean_query, mean_passage) + lexical * match + w . mean_all + bias

with ``w`` starting at zero, so the untrained model already ranks roughly like the bi-encoder
while every layer attends across query and passage (a true cross-encoder) and fine-tuning
can move away from it. ``match`` is an exact-match signal computed from the token ids (as in
DRMM/KNRM-style rankers): the IDF-weighted share of query word pieces that occur in the
passage, IDF taken from the training corpus (a fixed [vocab] table in the head). It brings
the lexical evidence a short CPU fine-tune cannot learn from scratch. The ONNX graph exported from this module computes exactly this from
``input_ids``, ``attention_mask`` and ``token_type_ids``; it outputs ``logits`` [batch, 1].

A checkpoint directory holds ``config.json`` + ``model.safetensors`` (transformers BertModel),
``head.safetensors`` and ``tokenizer.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import BertConfig, BertModel

from lrt_rerank.models.store import TOKENIZER, minilm_source_dir, write_clean_tokenizer

HEAD_FILE = "head.safetensors"
META_FILE = "lrt-train.json"
HEAD_KIND = "segment-cosine"
INITIAL_SCALE = 20.0


class PairScorer(nn.Module):
    """BERT encoder + segment-pooled cosine head; ``forward`` returns logits of shape [batch]."""

    def __init__(self, encoder: BertModel) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.scale = nn.Parameter(torch.tensor(INITIAL_SCALE))
        self.bias = nn.Parameter(torch.zeros(()))
        self.mixer = nn.Linear(hidden, 1, bias=False)
        nn.init.zeros_(self.mixer.weight)
        self.lexical = nn.Parameter(torch.zeros(()))
        self.register_buffer("idf", torch.zeros(encoder.config.vocab_size))

    @property
    def num_layers(self) -> int:
        return int(self.encoder.config.num_hidden_layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        states = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.to(states.dtype)
        passage = token_type_ids.to(states.dtype) * mask
        query = mask - passage
        q = (states * query.unsqueeze(-1)).sum(1) / query.sum(1, keepdim=True).clamp(min=1.0)
        p = (states * passage.unsqueeze(-1)).sum(1) / passage.sum(1, keepdim=True).clamp(min=1.0)
        pooled = (states * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        cosine = nn.functional.cosine_similarity(q, p, dim=-1, eps=1e-6)
        return self.scale * cosine + self.lexical * self.exact_match(input_ids, query, passage) + self.mixer(pooled).squeeze(-1) + self.bias

    def exact_match(self, input_ids: torch.Tensor, query: torch.Tensor, passage: torch.Tensor) -> torch.Tensor:
        """IDF-weighted share of the query's word pieces that also occur in the passage, in [0, 1]."""
        same = (input_ids.unsqueeze(2) == input_ids.unsqueeze(1)).to(query.dtype)  # [b, i, j]
        found = (same * passage.unsqueeze(1)).amax(dim=2)  # query position i matches some passage token
        weight = self.idf[input_ids] * query
        return (weight * found).sum(1) / weight.sum(1).clamp(min=1e-6)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------------------ persistence
    def save(self, out_dir: Path, tokenizer_src: Path, meta: dict[str, Any]) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(str(out_dir), safe_serialization=True)
        head = {name: getattr(self, name).detach().clone() for name in ("scale", "bias", "lexical", "idf")}
        head["mixer.weight"] = self.mixer.weight.detach().clone()
        save_file(head, str(out_dir / HEAD_FILE))
        if tokenizer_src.resolve() != (out_dir / TOKENIZER).resolve():
            write_clean_tokenizer(tokenizer_src, out_dir / TOKENIZER)
        (out_dir / META_FILE).write_text(json.dumps({"head": HEAD_KIND, **meta}, indent=2) + "\n", encoding="utf-8")
        return out_dir


def from_backbone(num_layers: int | None = None, layer_map: list[int] | None = None, attn: str = "sdpa") -> tuple[PairScorer, Path]:
    """A scorer initialised from all-MiniLM-L6-v2 (optionally keeping only some layers); returns (model, tokenizer path)."""
    src = minilm_source_dir()
    encoder = BertModel.from_pretrained(str(src), add_pooling_layer=False, attn_implementation=attn)
    model = PairScorer(encoder)
    if layer_map is not None or num_layers is not None:
        keep_layers(model, layer_map if layer_map is not None else list(range(num_layers or 0)))
    return model, src / TOKENIZER


def load_checkpoint(path: Path, attn: str = "sdpa") -> tuple[PairScorer, dict[str, Any]]:
    """Load a checkpoint directory written by :meth:`PairScorer.save`; returns (model, its training metadata)."""
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: not a training checkpoint (expected {META_FILE}, {HEAD_FILE}, config.json)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("head") != HEAD_KIND:
        raise ValueError(f"{meta_path}: field 'head' is {meta.get('head')!r}, expected {HEAD_KIND!r}")
    encoder = BertModel.from_pretrained(str(path), add_pooling_layer=False, attn_implementation=attn)
    model = PairScorer(encoder)
    head = load_file(str(path / HEAD_FILE))
    with torch.no_grad():
        model.scale.copy_(head["scale"])
        model.bias.copy_(head["bias"])
        model.mixer.weight.copy_(head["mixer.weight"])
        if "idf" in head:
            model.idf.copy_(head["idf"])
            model.lexical.copy_(head["lexical"])
    return model, meta


def corpus_idf(tokenizer_path: Path, texts: list[str], vocab_size: int) -> torch.Tensor:
    """BM25-style IDF of every word piece over ``texts``: log(1 + (N - df + 0.5) / (df + 0.5)); 0 for special tokens."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    df = torch.zeros(vocab_size, dtype=torch.float64)
    for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
        df[torch.tensor(sorted(set(encoding.ids)), dtype=torch.long)] += 1
    n = len(texts)
    idf = torch.log1p((n - df + 0.5) / (df + 0.5)).to(torch.float32)
    for token in ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            idf[token_id] = 0.0
    return idf


def set_lexical(model: PairScorer, idf: torch.Tensor, weight: float) -> None:
    """Install the IDF table and the starting weight of the exact-match term."""
    with torch.no_grad():
        model.idf.copy_(idf)
        model.lexical.fill_(weight)


def keep_layers(model: PairScorer, layer_map: list[int]) -> None:
    """Keep only the encoder layers in ``layer_map`` (in that order): how a student starts from its teacher."""
    layers = model.encoder.encoder.layer
    if not layer_map or any(i < 0 or i >= len(layers) for i in layer_map):
        raise ValueError(f"layer map {layer_map} must name layers 0..{len(layers) - 1}")
    model.encoder.encoder.layer = nn.ModuleList([layers[i] for i in layer_map])
    config: BertConfig = model.encoder.config
    config.num_hidden_layers = len(layer_map)
