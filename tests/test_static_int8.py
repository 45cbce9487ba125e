"""Static (calibrated) INT8: ``models import --int8 static`` against transformers FP32, its card, and its errors.

The model is the seeded MiniLM cross-encoder of tests/int8_variants.py (all-MiniLM-L6-v2's encoder under a
random head), calibrated on NFCorpus train pairs and judged on NFCorpus dev BM25 lists by the bounds of
tests/test_import.py. The calibration set's own rules (bundled default, DATASET[:SPLIT]) are checked without torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from lrt_rerank import CrossEncoder
from lrt_rerank.datasets import DatasetError
from lrt_rerank.models.calibration_pairs import DEFAULT_PAIRS, calibration_pairs, parse_spec
from lrt_rerank.models.store import CARD, MODEL

sys.path.insert(0, str(Path(__file__).resolve().parent))
from int8_variants import DATA  # noqa: E402

NFCORPUS = DATA / "nfcorpus"
LENGTH = 128
#: the per-query Spearman bounds of tests/test_import.py (INT8_MIN_SPEARMAN, INT8_MEAN_SPEARMAN)
MIN_SPEARMAN, MEAN_SPEARMAN = 0.75, 0.88


def test_default_calibration_set_is_the_bundled_corpus_paired_by_its_judgments() -> None:
    bundled = calibration_pairs()
    assert (bundled.name, bundled.split, len(bundled.pairs)) == ("nfcorpus-test", "test", DEFAULT_PAIRS)
    assert "only to pair" in bundled.card()["note"]
    assert bundled.card()["sha256"] == calibration_pairs().digest  # deterministic
    held_out = {query for query, _ in bundled.holdout}
    assert held_out and not held_out & {query for query, _ in bundled.pairs}
    assert all(len(passages) >= 10 for _, passages in bundled.holdout)


def test_calibrate_spec_picks_folder_and_split() -> None:
    assert parse_spec("/data/nfcorpus:train") == (Path("/data/nfcorpus"), "train")
    assert parse_spec("/data/nfcorpus") == (Path("/data/nfcorpus"), "dev")
    train = calibration_pairs(f"{NFCORPUS}:train", count=10)
    assert (train.name, train.split, len(train.pairs)) == ("nfcorpus", "train", 10)
    assert train.digest != calibration_pairs(f"{NFCORPUS}:dev", count=10).digest


@pytest.mark.parametrize(
    ("spec", "named"),
    [("/no/such/folder", "/no/such/folder"), (f"{NFCORPUS}:nosuch", str(NFCORPUS / "qrels" / "nosuch.tsv"))],
)
def test_bad_calibrate_spec_names_what_is_wrong(spec: str, named: str) -> None:
    with pytest.raises(DatasetError, match=named):
        calibration_pairs(spec)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory):  # -> (path, transformers model, tokenizer)
    if os.environ.get("LRT_REQUIRE_TRAIN") != "1":  # as tests/test_import.py: CI makes a missing torch a failure
        pytest.importorskip("torch")
    from int8_variants import write_minilm_ce

    path = tmp_path_factory.mktemp("static") / "minilm-ce"
    model, tokenizer = write_minilm_ce(path)
    return path, model, tokenizer


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lrt_rerank.cli", *argv], capture_output=True, text=True, timeout=900)


@pytest.mark.train
def test_static_int8_import_keeps_the_fp32_order_and_records_calibration(snapshot, tmp_path: Path) -> None:
    """``--int8 static --calibrate nfcorpus:train``: the card names the set and scheme and carries the measured
    fidelity; the engine's scores keep transformers' FP32 order per query within test_import.py's bounds."""
    from int8_variants import fidelity, nfcorpus_candidates, transformers_scores

    path, model, tokenizer = snapshot
    out = tmp_path / "static"
    done = _cli("models", "import", str(path), "--out", str(out), "--int8", "static",
                "--calibrate", f"{NFCORPUS}:train", "--max-length", str(LENGTH))  # fmt: skip
    assert done.returncode == 0, done.stderr
    card = json.loads((out / CARD).read_text(encoding="utf-8"))
    quant = card["quantization"]
    assert quant["method"] == "onnxruntime.quantization.quantize_static" and quant["scheme"] == "static"
    assert quant["calibration"] == calibration_pairs(f"{NFCORPUS}:train").card()
    assert quant["weights"] == "int8, per channel" and quant["activations"].startswith("uint8, static")
    assert -1.0 <= card["measured"]["int8_spearman_min"] <= card["measured"]["int8_spearman_mean"] <= 1.0
    ops = [n.op_type for n in onnx.load(str(out / MODEL)).graph.node]
    # per layer: query, key, value, output and FFN up projections and attention's two activation MatMuls;
    # FP32: the 6 FFN down projections and the pooler and classifier
    assert ops.count("QLinearMatMul") == 6 * 7 and ops.count("MatMul") + ops.count("Gemm") == 6 + 2, ops

    candidates = nfcorpus_candidates("dev", 4, 30)
    reference = transformers_scores(model, tokenizer, candidates, LENGTH)
    engine = CrossEncoder.load(out, max_length=LENGTH)
    low, mean = fidelity(reference, [engine.score(query, passages) for _, query, _, passages in candidates])
    assert low >= MIN_SPEARMAN and mean >= MEAN_SPEARMAN, (low, mean)
    assert not np.isnan([low, mean]).any()


@pytest.mark.train
@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--int8", "static", "--calibrate", "/no/such/folder"], "/no/such/folder"),
        (["--int8", "static", "--calibrate", f"{NFCORPUS}:nosuch"], "nosuch.tsv"),
        (["--int8", "dynamic", "--calibrate", str(NFCORPUS)], "--calibrate applies to static"),
    ],
)
def test_import_with_a_bad_calibrate_is_one_clear_error(snapshot, tmp_path: Path, extra: list[str], named: str) -> None:
    out = tmp_path / "never"
    done = _cli("models", "import", str(snapshot[0]), "--out", str(out), *extra)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert not out.exists()


@pytest.mark.train
def test_static_quantize_of_a_fused_directory_says_why_not(snapshot, tmp_path: Path) -> None:
    """``models quantize --scheme static`` needs the unfused graph; on an imported (fused) directory it says so."""
    fused = tmp_path / "fp32"
    assert _cli("models", "import", str(snapshot[0]), "--out", str(fused), "--max-length", "32").returncode == 0
    done = _cli("models", "quantize", str(fused), str(tmp_path / "int8"), "--scheme", "static")
    assert done.returncode == 1 and "unfused graph" in done.stderr and str(fused / MODEL) in done.stderr, done.stderr
    for extra, named in ((["--scheme", "static", "--per-tensor"], "--per-tensor: dynamic INT8 options"),
                         (["--calibrate", str(NFCORPUS)], "--calibrate applies to --scheme static only")):  # fmt: skip
        done = _cli("models", "quantize", str(fused), str(tmp_path / "never"), *extra)
        assert done.returncode == 1 and named in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "never").exists()
    # the dynamic scheme, as before
    done = _cli("models", "quantize", str(fused), str(tmp_path / "dynamic"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "dynamic" / CARD).read_text(encoding="utf-8"))["quantization"]["activations"] == "uint8, dynamic"
