"""The Rust engine against an independent reference: HF `tokenizers` + onnxruntime's Python API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from lrt_rerank import BiEncoder, CrossEncoder


def reference_tokenizer(model_dir: Path, max_length: int, pair: bool) -> Tokenizer:
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length, strategy="only_second" if pair else "longest_first")
    return tok


def reference_session(model_dir: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])


def padded(encodings: list, with_types: bool) -> dict[str, np.ndarray]:
    """One batch padded to its longest sequence (the peer's policy, not the engine's)."""
    n, longest = len(encodings), max(len(e.ids) for e in encodings)
    ids = np.zeros((n, longest), dtype=np.int64)
    mask = np.zeros((n, longest), dtype=np.int64)
    types = np.zeros((n, longest), dtype=np.int64)
    for i, e in enumerate(encodings):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
        types[i, : len(e.ids)] = e.type_ids
    feeds = {"input_ids": ids, "attention_mask": mask}
    if with_types:
        feeds["token_type_ids"] = types
    return feeds


@pytest.fixture(scope="module")
def ce(minilm_cross_encoder_dir: Path) -> CrossEncoder:
    return CrossEncoder.load(minilm_cross_encoder_dir, threads=2)


def test_cross_encoder_token_ids_match_reference(ce: CrossEncoder, minilm_cross_encoder_dir: Path, nfcorpus_sample) -> None:
    queries, docs = nfcorpus_sample
    tok = reference_tokenizer(minilm_cross_encoder_dir, 256, pair=True)
    passages = docs[:20] + ["", "emoji 🎉🔥 and CJK 日本語 한국어", "ctrl\x00\x07\x1b chars\ttab"]
    ours = ce.encode(queries[0], passages)
    for (ids, types), p in zip(ours, passages):
        ref = tok.encode(queries[0], p)
        assert ids == ref.ids
        assert types == ref.type_ids
        assert len(ids) <= 256


def test_cross_encoder_scores_and_ranking_match_reference(
    ce: CrossEncoder, minilm_cross_encoder_dir: Path, nfcorpus_sample
) -> None:
    queries, docs = nfcorpus_sample
    tok = reference_tokenizer(minilm_cross_encoder_dir, 256, pair=True)
    sess = reference_session(minilm_cross_encoder_dir)
    for q in queries[:3]:
        passages = docs[:50]
        encs = tok.encode_batch([(q, p) for p in passages])
        ref = sess.run(None, padded(encs, with_types=True))[0][:, 0]
        ours = ce.score(q, passages)
        assert ours.dtype == np.float32
        assert ours.shape == (50,)
        np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
        ranking = [i for i, _ in ce.rerank(q, passages)]
        assert ranking == sorted(range(50), key=lambda i: (-ref[i], i)) or np.allclose(
            np.sort(ref)[::-1], [ref[i] for i in ranking], atol=1e-4
        )


@pytest.mark.parametrize(
    ("fixture", "pooling", "batch_size"),
    [
        # all-MiniLM-L6-v2, FP32, mean pooling: batching does not change the numbers
        ("minilm_bi_encoder_dir", "mean", 32),
        # bge-small-en-v1.5 INT8, CLS pooling: dynamic quantization scales over the whole batch, so
        # engine and reference both run one text per batch
        ("bi_encoder_dir", "cls", 1),
    ],
)
def test_bi_encoder_matches_reference(
    fixture: str, pooling: str, batch_size: int, request: pytest.FixtureRequest, nfcorpus_sample
) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    _, docs = nfcorpus_sample
    be = BiEncoder.load(model_dir, threads=2, batch_size=batch_size)
    texts = docs[:30] + ["", "🎉", "日本語"]
    tok = reference_tokenizer(model_dir, 256, pair=False)
    encs = tok.encode_batch(texts)
    assert be.encode(texts) == [e.ids for e in encs]
    session = reference_session(model_dir)
    names = {i.name for i in session.get_inputs()}
    pooled_rows = []
    for start in range(0, len(encs), batch_size):
        feeds = padded(encs[start : start + batch_size], with_types="token_type_ids" in names)
        hidden = session.run(None, feeds)[0]
        mask = feeds["attention_mask"][:, :, None].astype(np.float32)
        pooled_rows.append(hidden[:, 0, :] if pooling == "cls" else (hidden * mask).sum(1) / mask.sum(1))
    pooled = np.concatenate(pooled_rows)
    ref = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    ours = be.embed(texts)
    assert ours.shape == (len(texts), be.dim) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_query_longer_than_max_length_falls_back_to_longest_first(small_cross_encoder_dir: Path) -> None:
    ce = CrossEncoder.load(small_cross_encoder_dir, threads=1)
    long_query = "protein " * 200
    (ids, _), = ce.encode(long_query, ["short passage"])
    tok = Tokenizer.from_file(str(small_cross_encoder_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(64, strategy="longest_first")
    assert ids == tok.encode(long_query, "short passage").ids
    assert ce.score(long_query, ["short passage"]).shape == (1,)
