"""Model outputs that lie about their shape, or go wrong at run time: a ModelError at load time or an
InferenceError at run time, each naming model.onnx; never a crash.

The graphs (tests/onnx_graphs.py) are tiny ONNX graphs saved into copies of real model directories.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx_graphs import (
    bi_encoder_pooled,
    bi_encoder_one_token_short,
    bi_encoder_reshaped_by,
    cross_encoder_nan_below,
    cross_encoder_one_row_too_many,
    cross_encoder_reshaped_by,
    cross_encoder_wider_than_declared,
)

from lrt_rerank import BiEncoder, CrossEncoder, InferenceError, ModelError

CE_TOKENS = 64  # small_cross_encoder_dir's max_length
BE_TOKENS = 32  # small_bi_encoder_dir's max_length


def refuses_to_load(encoder: type[CrossEncoder] | type[BiEncoder], model_dir: Path, message: str) -> None:
    """``encoder.load(model_dir)`` raises a ModelError that names model.onnx and matches ``message``."""
    with pytest.raises(ModelError, match=r"model\.onnx: " + message):
        encoder.load(model_dir)


def words(n: int) -> str:
    """n tokens for the MiniLM WordPiece vocabulary ("word" is one token)."""
    return " ".join(["word"] * n)


@pytest.mark.parametrize(
    "declared, message",
    [
        (["batch", 3], r"must output one logit per pair .*declares \[-1, 3\]"),
        (["batch", "n"], r"declares \[-1, 3\]"),  # ONNX Runtime infers the 3
        ([1, 3], r"fixed batch dimension"),
    ],
)
def test_cross_encoder_with_three_logits_per_pair(
    small_cross_encoder_dir: Path, tmp_path: Path, declared: list[int | str], message: str
) -> None:
    d = cross_encoder_wider_than_declared(small_cross_encoder_dir, tmp_path / "m", 3, declared)
    refuses_to_load(CrossEncoder, d, ".*" + message)


def test_cross_encoder_with_one_row_too_many(small_cross_encoder_dir: Path, tmp_path: Path) -> None:
    d = cross_encoder_one_row_too_many(small_cross_encoder_dir, tmp_path / "m")
    refuses_to_load(CrossEncoder, d, r"probe run .*shape \[2, 1\] for a batch of 1")


def test_cross_encoder_whose_output_lies_after_the_probe(small_cross_encoder_dir: Path, tmp_path: Path) -> None:
    d = cross_encoder_reshaped_by(small_cross_encoder_dir, tmp_path / "m", CE_TOKENS)
    ce = CrossEncoder.load(d, threads=1)  # the probe (one sequence of 64 tokens) fits
    # Two 32-token pairs in one batch: 2 × 32 values reshape to one row, not two.
    pairs = [words(CE_TOKENS // 2 - 4)] * 2  # [CLS] word [SEP] + 28 words + [SEP]
    assert all(len(ids) == CE_TOKENS // 2 for ids, _ in ce.encode("word", pairs))
    with pytest.raises(InferenceError, match=r"model\.onnx: output 'logits' has shape \[1, 1\] for a batch of 2"):
        ce.score("word", pairs)
    # A short pair: ONNX Runtime's Reshape fails.
    with pytest.raises(InferenceError, match=r"model\.onnx: .*Reshape"):
        ce.score("word", ["short"])
    # The encoder is still usable: a pair truncated to 64 tokens fits (logit = its 64 tokens).
    assert ce.score("word", [words(500)]).tolist() == [float(CE_TOKENS)]


def test_cross_encoder_returning_nan(small_cross_encoder_dir: Path, tmp_path: Path) -> None:
    d = cross_encoder_nan_below(small_cross_encoder_dir, tmp_path / "m", 10)
    ce = CrossEncoder.load(d, threads=1)
    assert ce.score("word", [words(500)]).tolist() == [pytest.approx(np.sqrt(CE_TOKENS - 10))]
    with pytest.raises(InferenceError, match=r"model\.onnx: .*non-finite logit \(NaN\)"):
        ce.score("word", [words(500), "short"])
    with pytest.raises(InferenceError, match="non-finite"):
        ce.relevance("word", ["short"])


def test_bi_encoder_whose_sequence_is_shorter_than_its_input(small_bi_encoder_dir: Path, tmp_path: Path) -> None:
    d = bi_encoder_one_token_short(small_bi_encoder_dir, tmp_path / "m")
    refuses_to_load(BiEncoder, d, r"a bi-encoder must output .*\[1, 31, 4\] for one sequence of 32")


def test_bi_encoder_whose_output_lies_after_the_probe(small_bi_encoder_dir: Path, tmp_path: Path) -> None:
    d = bi_encoder_reshaped_by(small_bi_encoder_dir, tmp_path / "m", BE_TOKENS)
    be = BiEncoder.load(d, threads=1)
    assert be.dim == 4
    texts = [words(BE_TOKENS // 2 - 2)] * 2  # two 16-token sequences: one [1, 32, 4] block
    assert [len(ids) for ids in be.encode(texts)] == [BE_TOKENS // 2] * 2
    lie = r"model\.onnx: output 'last_hidden_state' has shape \[1, 32, 4\] for a batch of 2"
    with pytest.raises(InferenceError, match=lie):
        be.embed(texts)
    with pytest.raises(InferenceError, match=r"model\.onnx: .*Reshape"):
        be.embed(["short"])
    # A text truncated to 32 tokens fits: mean of (1, 2, 3, 4) × 1 over its tokens, normalised.
    np.testing.assert_allclose(be.embed([words(100)])[0], np.arange(1, 5) / np.linalg.norm(np.arange(1, 5)), rtol=1e-6)


@pytest.mark.parametrize(
    "dim, declared, message",
    [
        (1, ["batch", 1], r"declares \[-1, 1\]"),  # one dimension is a score, not an embedding
        (4, [1, 4], "fixed batch dimension"),
    ],
)
def test_bi_encoder_declared_outputs(
    small_bi_encoder_dir: Path, tmp_path: Path, dim: int, declared: list[int | str], message: str
) -> None:
    d = bi_encoder_pooled(small_bi_encoder_dir, tmp_path / "m", declared, dim)
    refuses_to_load(BiEncoder, d, ".*" + message)


def test_bi_encoder_pooled_output_is_taken_as_is(small_bi_encoder_dir: Path, tmp_path: Path) -> None:
    d = bi_encoder_pooled(small_bi_encoder_dir, tmp_path / "m", ["batch", 4])
    out = BiEncoder.load(d, threads=1).embed(["a b c", "", words(100)])
    np.testing.assert_allclose(out, np.tile(np.arange(1, 5) / np.linalg.norm(np.arange(1, 5)), (3, 1)), rtol=1e-6)
