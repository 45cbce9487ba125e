"""The OpenVINO backend against independent references (transformers; onnxruntime's Python API with HF
`tokenizers`), its static INT8 through NNCF, and the runtime choice (`auto`, fallbacks, no extra)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from lrt_rerank import BiEncoder, CrossEncoder, ModelError
from lrt_rerank.backends import MEASURED, cpu_kind, default_precision
from lrt_rerank.models.store import CARD, MODEL

pytestmark = pytest.mark.train
if os.environ.get("LRT_REQUIRE_TRAIN") == "1":
    import torch
else:
    torch = pytest.importorskip("torch")
pytest.importorskip("openvino")

QUERY = "vitamin d and bone fracture risk"
PASSAGES = [
    "Vitamin D supplements reduced fracture risk in older women.",
    "Coffee intake and blood pressure: a trial.",
    "Statins lower cholesterol.",
    "Sun light, calcium and bone health " * 12,
    "diet",
    "High dose daily vitamin d had no effect on heart disease in men.",
    "",
]
MAX_LENGTH = 32
#: bf16 keeps 8 bits of mantissa: its scores stay within this share of the reference's spread.
BF16_SPREAD_SHARE = 0.05
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_cross(tmp_path_factory: pytest.TempPathFactory):  # -> (model dir, transformers model, tokenizer)
    """A random-init 2-layer BERT cross-encoder (hidden 32, large init std so that scores spread), imported."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from lrt_rerank.models.importers import import_snapshot

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("backends")
    words = sorted({w.strip(".,:").lower() for p in [QUERY, *PASSAGES] for w in p.split()} - {""})
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(root / "vocab.txt"))
    config = BertConfig(
        vocab_size=len(tokenizer), num_hidden_layers=2, num_attention_heads=4, hidden_size=32,
        intermediate_size=64, initializer_range=0.3, num_labels=1,
    )  # fmt: skip
    model = BertForSequenceClassification(config).eval()
    snap = root / "snapshot"
    model.save_pretrained(str(snap))
    tokenizer.save_pretrained(str(snap))
    (snap / "README.md").write_text("---\nlicense: apache-2.0\n---\n", encoding="utf-8")
    return import_snapshot(snap, root / "ce"), model, tokenizer


def transformers_scores(model, tokenizer) -> np.ndarray:
    enc = tokenizer([QUERY] * len(PASSAGES), PASSAGES, truncation="only_second", max_length=MAX_LENGTH,
                    padding=True, return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        return model(**enc).logits[:, 0].numpy()


def test_openvino_f32_cross_encoder_matches_transformers(tiny_cross) -> None:
    model_dir, model, tokenizer = tiny_cross
    ref = transformers_scores(model, tokenizer)
    spread = float(ref.max() - ref.min())
    assert spread > 0.1, ref
    ce = CrossEncoder.load(model_dir, max_length=MAX_LENGTH, backend="openvino", precision="f32")
    assert ce.card["runtime"] == {
        "requested": "openvino", "cpu_kind": cpu_kind(), "reason": "asked for", "backend": "openvino", "precision": "f32"
    }  # fmt: skip
    error = float(np.max(np.abs(ce.score(QUERY, PASSAGES) - ref)))
    assert error <= 1e-4 * spread, (error, spread)
    # token-budget batching and length sorting run unchanged: a tiny budget splits the call into many batches
    split = CrossEncoder.load(model_dir, max_length=MAX_LENGTH, token_budget=40, backend="openvino", precision="f32")
    np.testing.assert_allclose(split.score(QUERY, PASSAGES), ce.score(QUERY, PASSAGES), atol=1e-5)
    assert split.batches_run > ce.batches_run


def test_openvino_bf16_stays_close_where_the_cpu_has_bf16(tiny_cross) -> None:
    model_dir, model, tokenizer = tiny_cross
    ref = transformers_scores(model, tokenizer)
    ce = CrossEncoder.load(model_dir, max_length=MAX_LENGTH, backend="openvino")
    kind = cpu_kind()
    # the default precision is bf16 where the CPU computes it natively, f32 elsewhere, and the card says which ran
    assert ce.card["runtime"]["precision"] == default_precision(kind)
    error = float(np.max(np.abs(ce.score(QUERY, PASSAGES) - ref)))
    assert error <= BF16_SPREAD_SHARE * float(ref.max() - ref.min()), error


def test_openvino_bi_encoder_matches_onnxruntime_reference(small_bi_encoder_dir: Path) -> None:
    texts = ["vitamin d and bone health", "coffee", "a much longer text about statins and cholesterol levels", ""]
    ours = BiEncoder.load(small_bi_encoder_dir, backend="openvino", precision="f32").embed(texts)
    tok = Tokenizer.from_file(str(small_bi_encoder_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(32)
    session = ort.InferenceSession(str(small_bi_encoder_dir / MODEL), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    for row, text in zip(ours, texts):
        ids = np.asarray([tok.encode(text).ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        hidden = session.run(None, {k: v for k, v in feeds.items() if k in names})[0][0]
        pooled = hidden.mean(axis=0)
        np.testing.assert_allclose(row, pooled / np.linalg.norm(pooled), atol=1e-4)


def test_openvino_int8_ir_keeps_the_fp32_order(tmp_path: Path) -> None:
    """NNCF static INT8 of the seeded MiniLM cross-encoder keeps, per query, the rank correlation bounds of
    tests/test_import.py against transformers' FP32 scores; the card records the IR and its calibration."""
    from int8_variants import fidelity, nfcorpus_candidates, write_minilm_ce
    from int8_variants import transformers_scores as list_scores

    from lrt_rerank.models.importers import import_snapshot
    from lrt_rerank.models.openvino_ir import write_int8_ir
    from test_import import FIDELITY_DEPTH, FIDELITY_LENGTH, FIDELITY_QUERIES, INT8_MEAN_SPEARMAN, INT8_MIN_SPEARMAN

    model, tokenizer = write_minilm_ce(tmp_path / "snap")
    model_dir = import_snapshot(tmp_path / "snap", tmp_path / "ce")
    calibration = [(q, p) for _, q, _, ps in nfcorpus_candidates("train", 6, 10) for p in ps]
    record = write_int8_ir(model_dir, calibration)
    assert record["calibration_pairs"] == 60 and record["calibration_set"] == "given pairs"
    assert json.loads((model_dir / CARD).read_text(encoding="utf-8"))["openvino"] == record
    candidates = nfcorpus_candidates("dev", FIDELITY_QUERIES, FIDELITY_DEPTH)
    reference = list_scores(model, tokenizer, candidates, FIDELITY_LENGTH)
    ce = CrossEncoder.load(model_dir, max_length=FIDELITY_LENGTH, backend="openvino", precision="f32")
    low, mean = fidelity(reference, [ce.score(q, ps) for _, q, _, ps in candidates])
    assert low >= INT8_MIN_SPEARMAN and mean >= INT8_MEAN_SPEARMAN, (low, mean)


def _with_measurement(src: Path, dst: Path, ort_ms: float, openvino_ms: float) -> Path:
    import shutil

    shutil.copytree(src, dst)
    card = json.loads((dst / CARD).read_text(encoding="utf-8"))
    card[MEASURED] = {cpu_kind(): {"ort_ms": ort_ms, "openvino_ms": openvino_ms}}
    (dst / CARD).write_text(json.dumps(card), encoding="utf-8")
    return dst


def test_auto_follows_the_measurement_for_this_cpu_kind(tiny_cross, tmp_path: Path) -> None:
    model_dir = tiny_cross[0]
    unmeasured = CrossEncoder.load(model_dir, backend="auto")
    assert unmeasured.card["runtime"]["backend"] == "ort"
    assert unmeasured.card["runtime"]["reason"] == f"no measurement on this CPU kind ({cpu_kind()}) in the card"
    faster = CrossEncoder.load(_with_measurement(model_dir, tmp_path / "ov", 30.0, 10.0), backend="auto")
    assert faster.card["runtime"]["backend"] == "openvino"
    assert "10.0 ms vs ORT 30.0 ms" in faster.card["runtime"]["reason"]
    slower = CrossEncoder.load(_with_measurement(model_dir, tmp_path / "ort", 10.0, 30.0), backend="auto")
    assert slower.card["runtime"]["backend"] == "ort"
    ort_scores = slower.score(QUERY, PASSAGES)  # auto's OpenVINO runs at this CPU's default precision
    spread = float(ort_scores.max() - ort_scores.min())
    assert float(np.max(np.abs(faster.score(QUERY, PASSAGES) - ort_scores))) <= BF16_SPREAD_SHARE * spread


def test_a_model_openvino_refuses_falls_back_to_ort_under_auto(tiny_cross, tmp_path: Path, caplog) -> None:
    model_dir = _with_measurement(tiny_cross[0], tmp_path / "broken-ir", 30.0, 10.0)
    (model_dir / "openvino_model.xml").write_text("<net name='broken'>", encoding="utf-8")
    with pytest.raises(ModelError) as refused:
        CrossEncoder.load(model_dir, backend="openvino")
    message = str(refused.value)
    assert "\n" not in message and "backend 'openvino' cannot load" in message and "openvino_model.xml" in message
    with caplog.at_level("WARNING", logger="lrt_rerank.backends"):
        ce = CrossEncoder.load(model_dir, backend="auto")
    assert ce.card["runtime"]["backend"] == "ort" and "fell back to ORT" in ce.card["runtime"]["reason"]
    assert any("falling back to ORT" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(ce.score(QUERY, PASSAGES), CrossEncoder.load(model_dir).score(QUERY, PASSAGES))


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT / "python"), **env},
    )  # fmt: skip


def test_a_broken_openvino_install_is_one_line_and_auto_uses_ort(tiny_cross, tmp_path: Path) -> None:
    model_dir = _with_measurement(tiny_cross[0], tmp_path / "measured", 30.0, 10.0)
    code = f"""
from lrt_rerank import CrossEncoder, RuntimeLoadError
try:
    CrossEncoder.load({str(model_dir)!r}, backend="openvino")
except RuntimeLoadError as exc:
    print("ERROR", exc)
ce = CrossEncoder.load({str(model_dir)!r}, backend="auto")
print("AUTO", ce.card["runtime"]["backend"], len(ce.score("q", ["a", "b"])))
"""
    out = _run(code, LRT_OPENVINO_LIB="/nonexistent/libopenvino_c.so")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("ERROR backend 'openvino' cannot load"), lines
    assert "cannot load the OpenVINO library /nonexistent/libopenvino_c.so: file not found" in lines[0]
    assert lines[1] == "AUTO ort 2"
    assert "falling back to ORT" in out.stderr


def test_the_core_works_without_the_openvino_extra(tiny_cross) -> None:
    code = f"""
import sys
sys.modules["openvino"] = None  # as if the [openvino] extra were not installed
from lrt_rerank import CrossEncoder, RuntimeLoadError
ce = CrossEncoder.load({str(tiny_cross[0])!r})
print("ORT", len(ce.score("q", ["a", "b", "c"])))
print("AUTO", CrossEncoder.load({str(tiny_cross[0])!r}, backend="auto").card["runtime"]["reason"])
try:
    CrossEncoder.load({str(tiny_cross[0])!r}, backend="openvino")
except RuntimeLoadError as exc:
    print("ERROR", exc)
"""
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "ORT 3",
        "AUTO OpenVINO is not installed",
        f"ERROR backend 'openvino' cannot load {tiny_cross[0]}: the OpenVINO runtime is not installed "
        "(pip install lrt-rerank[openvino]), and LRT_OPENVINO_LIB is not set",
    ]


def test_openvino_colbert_matches_pylate(tmp_path: Path) -> None:
    """The ColBERT query encoder (and document encoder, MaxSim) on OpenVINO FP32 against PyLate itself."""
    from test_colbert import DOCUMENTS, QUERY as COLBERT_QUERY, assert_close, pylate_colbert

    from lrt_rerank.late import ColBERT
    from lrt_rerank.models.importers.colbert import import_colbert

    snapshot, ref = pylate_colbert(tmp_path)
    model = ColBERT.load(import_colbert(snapshot, tmp_path / "imported"), backend="openvino", precision="f32")
    assert model.card["runtime"]["backend"] == "openvino" and model.card["runtime"]["precision"] == "f32"
    np.testing.assert_allclose(model.encode_query(COLBERT_QUERY), ref["query"], atol=1e-5)
    assert_close(model.score(COLBERT_QUERY, DOCUMENTS), ref["scores"])


def test_models_openvino_measures_both_backends_for_auto(tiny_cross, tmp_path: Path) -> None:
    """`lrt-rerank models openvino DIR` times both backends into the card; `auto` then picks the faster one."""
    import shutil

    model_dir = Path(shutil.copytree(tiny_cross[0], tmp_path / "ce"))
    out = _run(f"from lrt_rerank.cli import main; raise SystemExit(main(['models', 'openvino', {str(model_dir)!r}]))")
    assert out.returncode == 0, out.stderr
    measured = json.loads((model_dir / CARD).read_text(encoding="utf-8"))[MEASURED][cpu_kind()]
    assert json.loads(out.stdout.splitlines()[-1]) == {cpu_kind(): measured}
    assert measured["ort_ms"] > 0 and measured["openvino_ms"] > 0 and measured["pairs"] == 50
    faster = "openvino" if measured["openvino_ms"] < measured["ort_ms"] else "ort"
    assert CrossEncoder.load(model_dir, backend="auto").card["runtime"]["backend"] == faster


def _quantized_matmuls(xml: Path) -> dict[str, bool]:
    """Each MatMul of an IR: whether an input comes through a FakeQuantize (NNCF's INT8 marker)."""
    import openvino as ov

    def through_fq(node, depth: int = 3) -> bool:
        if node.get_type_name() == "FakeQuantize":
            return True
        if depth == 0 or node.get_type_name() not in ("Convert", "Reshape", "Transpose", "Multiply", "Subtract"):
            return False
        return any(through_fq(i.get_source_output().get_node(), depth - 1) for i in node.inputs())

    model = ov.Core().read_model(str(xml))
    return {
        op.get_friendly_name(): any(through_fq(i.get_source_output().get_node()) for i in op.inputs())
        for op in model.get_ops()
        if op.get_type_name() == "MatMul"
    }


def test_openvino_int8_ir_keeps_the_head_and_edges_in_float_and_records_its_fidelity(tiny_cross, tmp_path: Path) -> None:
    """The IR comes from the source snapshot's unfused graph; the MatMuls the card lists as floating point are
    not quantized while the others are; the card's fidelity is measured on the calibration set's held-out lists."""
    import shutil

    from lrt_rerank.models.calibration_pairs import calibration_pairs
    from lrt_rerank.models.openvino_ir import SCHEME, write_int8_ir

    model_dir = shutil.copytree(tiny_cross[0], tmp_path / "ce")
    calibration = calibration_pairs(count=24)
    record = write_int8_ir(model_dir, calibration)
    assert record["scheme"] == SCHEME and record["calibration_pairs"] == 24
    assert record["graph"].startswith("the unfused graph of ")
    fidelity = record["fidelity"]
    assert fidelity["lists"] == len(calibration.holdout) > 0
    assert -1.0 <= fidelity["spearman_min"] <= fidelity["spearman_mean"] <= 1.0
    assert fidelity["precision"] in ("f32", "bf16")
    kept = record["fp32"]["nodes"]
    matmuls = _quantized_matmuls(model_dir / "openvino_model.xml")
    # the pooler and the two layers' down projections keep their names (or a "/..." suffix) in the IR
    named = {name for name in matmuls if any(name == k or name.startswith(k + "/") for k in kept)}
    assert len(named) == 3, (kept, sorted(matmuls))
    assert not any(matmuls[name] for name in named)
    # the classifier is named after the graph's output in the IR
    assert matmuls["logits"] is False
    assert sum(matmuls.values()) >= 2 * 4, matmuls  # each layer's Q, K, V, output projections at least


def test_openvino_int8_ir_without_its_source_snapshot_quantizes_model_onnx(tiny_cross, tmp_path: Path) -> None:
    import shutil

    from lrt_rerank.models.openvino_ir import write_int8_ir

    moved = shutil.copytree(tiny_cross[0], tmp_path / "ce")
    card = json.loads((moved / CARD).read_text(encoding="utf-8"))
    card["source"] = str(tmp_path / "gone")
    (moved / CARD).write_text(json.dumps(card), encoding="utf-8")
    record = write_int8_ir(moved, [(QUERY, p) for p in PASSAGES if p])
    assert record["graph"].startswith(f"{MODEL} (the source snapshot is not there")
    assert record["calibration_set"] == "given pairs" and record["fidelity"]["lists"] > 0
    scores = CrossEncoder.load(moved, max_length=MAX_LENGTH, backend="openvino").score(QUERY, PASSAGES)
    assert len(scores) == len(PASSAGES) and np.isfinite(scores).all()


def test_openvino_int8_ir_needs_held_out_lists_for_its_fidelity(tiny_cross, tmp_path: Path) -> None:
    import shutil

    from lrt_rerank.models.calibration_pairs import CalibrationSet
    from lrt_rerank.models.openvino_ir import IR, write_int8_ir

    model_dir = shutil.copytree(tiny_cross[0], tmp_path / "ce")
    bare = CalibrationSet("mine", "dev", [(QUERY, PASSAGES[0])], holdout=[])
    with pytest.raises(ValueError, match="calibration set mine:dev has no held-out lists"):
        write_int8_ir(model_dir, bare)
    assert not (model_dir / IR).exists()
