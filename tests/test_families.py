"""The families of issue 25, imported and checked against transformers on tiny random-init models:
sharded safetensors (XLM-R in 6 shards), ModernBERT (cls and mean pooling, sliding-window layers with a
window shorter than the passages), DeBERTa-v3 (Unigram tokenizer, with and without segment embeddings),
a Qwen3 causal LM under the qwen3-reranker template (against the model card's scoring code), and
graphs with external data.

Scores must be within 1e-4 of transformers' score spread in FP32; INT8 must keep each query's order
(Spearman >= 0.8). Needs the [train] extra, as tests/test_import.py.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from lrt_rerank import CrossEncoder, ModelError
from lrt_rerank.models.importers import import_snapshot
from lrt_rerank.models.store import CARD, MODEL, MODEL_DATA, model_sha256

pytestmark = pytest.mark.train

if os.environ.get("LRT_REQUIRE_TRAIN") == "1":
    import torch
else:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")

from test_import import INIT_STD, PASSAGES, QUERY, WORDS, Tiny, _unigram_vocab, assert_matches, reference_scores  # noqa: E402

MAX_LENGTH = 32
QUERIES = [QUERY, "coffee and heart disease", "statins cholesterol in older women"]
#: Longer than ModernBERT's test window (8 tokens), so the sliding-window layers matter.
LONG_PASSAGES = [p for p in PASSAGES if len(p) > 40]


def _save(model: Any, tokenizer: Any, path: Path, **kwargs: Any) -> Tiny:
    model.eval()
    model.save_pretrained(str(path), **kwargs)
    tokenizer.save_pretrained(str(path))
    return Tiny(path, model, tokenizer)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def assert_int8_keeps_order(tiny: Tiny, int8_dir: Path, max_length: int = MAX_LENGTH) -> None:
    ce = CrossEncoder.load(int8_dir, max_length=max_length)
    for query in QUERIES:
        rho = spearman(ce.score(query, PASSAGES), _reference(tiny, query, PASSAGES, max_length))
        assert rho >= 0.8, f"{query!r}: Spearman {rho:.2f} between INT8 and transformers"


# --- sharded safetensors --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sharded_xlmr(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaTokenizer

    torch.manual_seed(0)
    unigram = XLMRobertaTokenizer(vocab=_unigram_vocab())
    config = XLMRobertaConfig(
        vocab_size=len(unigram), max_position_embeddings=MAX_LENGTH * 2 + 2, type_vocab_size=1, num_labels=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, num_hidden_layers=2, num_attention_heads=4, hidden_size=32,
        intermediate_size=64, initializer_range=INIT_STD,
    )
    path = tmp_path_factory.mktemp("sharded") / "xlmr"
    return _save(XLMRobertaForSequenceClassification(config), unigram, path, max_shard_size="20KB")


def test_sharded_xlmr_reproduces_transformers(sharded_xlmr: Tiny, tmp_path: Path) -> None:
    shards = sorted(p.name for p in sharded_xlmr.path.glob("model-*.safetensors"))
    assert len(shards) >= 3 and not (sharded_xlmr.path / "model.safetensors").exists()
    out = import_snapshot(sharded_xlmr.path, tmp_path / "out")
    assert_matches(CrossEncoder.load(out, max_length=MAX_LENGTH).score(QUERY, PASSAGES), reference_scores(sharded_xlmr, QUERY, PASSAGES))
    card = json.loads((out / CARD).read_text(encoding="utf-8"))
    assert set(shards) | {"model.safetensors.index.json"} <= set(card["files"])
    assert f"{len(shards)} shards" in card["provenance"]["converter"]
    assert card["parameters"] == sum(p.numel() for p in sharded_xlmr.model.parameters())


def test_a_shard_missing_from_the_index_is_named(sharded_xlmr: Tiny, tmp_path: Path) -> None:
    src = shutil.copytree(sharded_xlmr.path, tmp_path / "src")
    victim = sorted(src.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(ModelError, match=rf"{victim.name}: shard listed in model\.safetensors\.index\.json"):
        import_snapshot(src, tmp_path / "out")


# --- ModernBERT and DeBERTa-v3 --------------------------------------------------------------------


def _wordpiece(root: Path) -> Any:
    from transformers import BertTokenizer

    from test_import import _vocab_file

    return BertTokenizer(vocab=str(_vocab_file(root / "vocab.txt")))


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tiny]:
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, DebertaV2Tokenizer
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("families")
    wordpiece = _wordpiece(root)
    out: dict[str, Tiny] = {}
    for pooling in ("cls", "mean"):
        config = ModernBertConfig(
            vocab_size=len(wordpiece), hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
            local_attention=8, global_attn_every_n_layers=2, max_position_embeddings=128, classifier_pooling=pooling,
            num_labels=1 if pooling == "cls" else 2, pad_token_id=0, bos_token_id=2, eos_token_id=3, cls_token_id=2,
            sep_token_id=3, initializer_range=INIT_STD,
        )
        out[f"modernbert-{pooling}"] = _save(ModernBertForSequenceClassification(config), wordpiece, root / f"modernbert-{pooling}")
    rng = random.Random(0)
    from tokenizers import SentencePieceUnigramTokenizer

    trainer = SentencePieceUnigramTokenizer()
    trainer.train_from_iterator(
        [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(400)], vocab_size=250,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], unk_token="[UNK]",
    )
    unigram = DebertaV2Tokenizer(vocab=[(p, s) for p, s in json.loads(trainer.to_str())["model"]["vocab"]])
    for types in (0, 2):
        config = DebertaV2Config(
            vocab_size=len(unigram), hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=128, relative_attention=True, position_buckets=16, max_relative_positions=-1,
            pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False,
            type_vocab_size=types, num_labels=1, pad_token_id=0, initializer_range=INIT_STD, hidden_act="gelu",
        )
        out[f"deberta-types{types}"] = _save(DebertaV2ForSequenceClassification(config), unigram, root / f"deberta-types{types}")
    return out


def _reference(tiny: Tiny, query: str, passages: list[str], max_length: int = MAX_LENGTH) -> np.ndarray:
    if tiny.model.config.model_type == "deberta-v2" and tiny.model.config.type_vocab_size > 1:
        enc = tiny.tokenizer([query] * len(passages), passages, truncation="only_second", max_length=max_length,
                             padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = tiny.model(**enc).logits.numpy()
        return logits[:, 0] if tiny.num_labels == 1 else logits[:, 1] - logits[:, 0]
    return reference_scores(tiny, query, passages, max_length)


@pytest.mark.parametrize("name", ["modernbert-cls", "modernbert-mean", "deberta-types0", "deberta-types2"])
def test_family_reproduces_transformers_and_int8_keeps_the_order(
    name: str, encoders: dict[str, Tiny], tmp_path: Path
) -> None:
    tiny = encoders[name]
    out = import_snapshot(tiny.path, tmp_path / "fp32")
    ce = CrossEncoder.load(out, max_length=MAX_LENGTH)
    for query in QUERIES:
        assert_matches(ce.score(query, PASSAGES), _reference(tiny, query, PASSAGES))
    assert max(len(e) for e in ce.encode(QUERY, LONG_PASSAGES)[0]) > 8  # longer than ModernBERT's window
    card = json.loads((out / CARD).read_text(encoding="utf-8"))
    assert card["model_type"] == tiny.model.config.model_type and card["architecture"] == type(tiny.model).__name__
    assert card["score"] == ("logit" if tiny.num_labels == 1 else "logit[1]-logit[0]")
    assert "torch.onnx.export" in card["provenance"]["converter"]
    assert "fused" in card["optimization"] and card["sha256"] == model_sha256(out)
    inputs = [i.name for i in onnx.load(str(out / MODEL)).graph.input]
    types = tiny.model.config.model_type == "deberta-v2" and tiny.model.config.type_vocab_size > 1
    assert inputs == ["input_ids", "attention_mask"] + (["token_type_ids"] if types else [])
    if name.startswith("modernbert"):
        assert card["pooling"] == tiny.model.config.classifier_pooling
    int8 = import_snapshot(tiny.path, tmp_path / "int8", int8=True)
    assert_int8_keeps_order(tiny, int8)


def test_exported_families_name_the_train_extra(encoders: dict[str, Tiny], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(ModelError, match=r"config\.json: model_type 'modernbert' .* pip install 'lrt-rerank\[train\]'"):
        import_snapshot(encoders["modernbert-cls"].path, tmp_path / "out")
