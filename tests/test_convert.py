"""The converted ONNX models reproduce the original all-MiniLM-L6-v2 (sentence-transformers / torch).

Needs the [train] extra (torch, transformers, sentence-transformers). CI installs it and sets
LRT_REQUIRE_TRAIN=1, which turns a missing torch into a failure instead of a skip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lrt_rerank import BiEncoder, CrossEncoder
from lrt_rerank.models.store import minilm_source_dir
from train_extra import require

pytestmark = pytest.mark.train

torch = require("torch", "sentence_transformers")

TEXTS = [
    "Dietary fibre and the risk of colorectal cancer",
    "Statins lower LDL cholesterol " * 40,
    "",
    "emoji 🎉 and 日本語",
]


def test_bi_encoder_reproduces_sentence_transformers(minilm_bi_encoder_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    original = SentenceTransformer(str(minilm_source_dir()), device="cpu")
    original.max_seq_length = 256
    ref = original.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    ours = BiEncoder.load(minilm_bi_encoder_dir).embed(TEXTS)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_cross_encoder_graph_reproduces_torch_bert(small_cross_encoder_dir: Path) -> None:
    """2-layer cross-encoder: transformers' BertModel truncated to 2 layers + the same head."""
    import onnx
    from onnx import numpy_helper
    from tokenizers import Tokenizer
    from transformers import BertModel

    model = BertModel.from_pretrained(str(minilm_source_dir()), add_pooling_layer=False, attn_implementation="eager")
    model.encoder.layer = model.encoder.layer[:2]
    model.eval()
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(small_cross_encoder_dir / "model.onnx")).graph.initializer}
    # the placeholder head's bias is zero: the transformer optimizer folds its Add away
    w, b = inits["classifier.weight_t"], inits.get("classifier.bias", np.zeros(1, dtype=np.float32))

    tok = Tokenizer.from_file(str(small_cross_encoder_dir / "tokenizer.json"))
    tok.enable_truncation(64, strategy="only_second")
    tok.enable_padding()
    query, passages = "fibre intake", TEXTS
    encs = tok.encode_batch([(query, p) for p in passages])
    with torch.no_grad():
        hidden = model(
            input_ids=torch.tensor([e.ids for e in encs]),
            attention_mask=torch.tensor([e.attention_mask for e in encs]),
            token_type_ids=torch.tensor([e.type_ids for e in encs]),
        ).last_hidden_state
    ref = hidden[:, 0, :].numpy() @ w + b
    ours = CrossEncoder.load(small_cross_encoder_dir).score(query, passages)
    np.testing.assert_allclose(ours, ref[:, 0], atol=1e-4, rtol=0)
