"""The engine's token budget per batch: batches are cut so that rows x longest stays within it, and
the scores do not depend on it (FP32: batch composition only changes padding, which is masked)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lrt_rerank import _core
from lrt_rerank.runtime import ensure_runtime


def _core_encoder(model_dir: Path, token_budget: int | None) -> _core.CrossEncoderCore:
    ensure_runtime()
    return _core.CrossEncoderCore(str(model_dir), 64, "test", threads=2, batch_size=16, token_budget=token_budget)


def test_budget_cuts_batches_and_keeps_scores(
    small_cross_encoder_dir: Path, nfcorpus_sample: tuple[list[str], list[str]]
) -> None:
    queries, passages = nfcorpus_sample
    passages = passages[:24]
    unbounded = _core_encoder(small_cross_encoder_dir, 10**9)
    tight = _core_encoder(small_cross_encoder_dir, 128)
    assert tight.token_budget == 128 and unbounded.token_budget == 10**9
    assert _core_encoder(small_cross_encoder_dir, None).token_budget == 512  # the default
    before = (unbounded.batches_run, tight.batches_run)
    wide = np.asarray(unbounded.score(queries[0], passages))
    narrow = np.asarray(tight.score(queries[0], passages))
    np.testing.assert_allclose(narrow, wide, atol=1e-5)
    # 24 pairs of up to 64 tokens: 2 batches of 12 unbounded; 128 tokens hold at most 2 such pairs
    assert unbounded.batches_run - before[0] == 2
    assert tight.batches_run - before[1] >= 12


def test_zero_budget_is_rejected(small_cross_encoder_dir: Path) -> None:
    with pytest.raises(ValueError, match="token_budget"):
        _core_encoder(small_cross_encoder_dir, 0)
