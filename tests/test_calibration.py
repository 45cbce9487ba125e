"""Score calibration: the Platt fit, ECE/Brier, the card's ``calibration``, ``CrossEncoder.relevance``
and ``lrt-rerank models calibrate`` (run as a subprocess on a small NFCorpus slice)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from lrt_rerank import CrossEncoder, ModelError
from lrt_rerank.calibrate import LabelledScores, TuningSplitError, fit
from lrt_rerank.calibration import (
    Calibration,
    CalibrationRecord,
    brier_score,
    expected_calibration_error,
    fit_platt,
    sigmoid,
    write_calibration,
)
from lrt_rerank.datasets import Dataset

RECORD = {
    "method": "platt",
    "a": 0.5,
    "b": -12.0,
    "dataset": "nfcorpus",
    "split": "dev",
    "depth": 50,
    "pairs": 1000,
    "positives": 80,
    "ece": 0.01,
    "brier": 0.07,
    "fitted": "2026-11-28",
}


def logistic(x: np.ndarray) -> np.ndarray:
    """Reference sigmoid for moderate inputs, written out independently of lrt_rerank."""
    return 1.0 / (1.0 + np.exp(-x))


# --- the maths --------------------------------------------------------------------------------


def test_sigmoid_is_stable_at_the_extremes() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow RuntimeWarning would fail the test
        with np.errstate(all="raise"):
            values = sigmoid(np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0]))
    assert values[0] == 0.0 and values[-1] == 1.0 and values[2] == 0.5
    np.testing.assert_allclose(values[1:4], logistic(np.array([-30.0, 0.0, 30.0])), rtol=1e-12)


def test_platt_fit_recovers_known_parameters() -> None:
    # Scores shaped like the shipped LRT's logits (around 25, spread 3), labels drawn from a known
    # logistic model. The tolerance is 4 standard errors of the maximum-likelihood estimate, from the
    # Fisher information at the true parameters; Platt's target smoothing shifts the estimate by
    # O(1/N), far inside that.
    rng = np.random.default_rng(20261128)
    a_true, b_true, n = 0.8, -21.0, 40_000
    scores = rng.normal(25.0, 3.0, n)
    p = logistic(a_true * scores + b_true)
    labels = (rng.random(n) < p).astype(np.int64)
    a, b = fit_platt(scores, labels)
    design = np.stack([scores, np.ones(n)], axis=1)
    fisher = (design * (p * (1 - p))[:, None]).T @ design
    se_a, se_b = np.sqrt(np.diag(np.linalg.inv(fisher)))
    assert abs(a - a_true) < 4 * se_a, (a, a_true, se_a)
    assert abs(b - b_true) < 4 * se_b, (b, b_true, se_b)
    assert se_a < 0.05  # the check is tight enough to catch a wrong fit


def test_platt_fit_is_finite_on_separable_data() -> None:
    # Every positive scores above every negative: an unsmoothed fit would run off to infinity.
    scores = np.array([1.0, 2.0, 3.0, 10.0, 11.0, 12.0])
    labels = np.array([0, 0, 0, 1, 1, 1])
    a, b = fit_platt(scores, labels)
    assert np.isfinite([a, b]).all() and a > 0
    probabilities = sigmoid(a * scores + b)
    assert ((probabilities > 0.1) & (probabilities < 0.9)).all()
    # The fit is the optimum for Platt's targets, positives (3 + 1) / (3 + 2) = 0.8, negatives
    # 1 / (3 + 2) = 0.2: the gradient of the cross-entropy, sum((p - t) * [score, 1]), vanishes.
    targets = np.where(labels == 1, 0.8, 0.2)
    gradient = [np.sum(probabilities - targets), np.sum((probabilities - targets) * scores)]
    np.testing.assert_allclose(gradient, 0, atol=1e-6)


def test_platt_fit_rejects_uninformative_input() -> None:
    with pytest.raises(ValueError, match="both relevant and non-relevant"):
        fit_platt([1.0, 2.0, 3.0], [1, 1, 1])
    with pytest.raises(ValueError, match="all 3 scores are equal"):
        fit_platt([2.0, 2.0, 2.0], [0, 1, 0])
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        fit_platt([1.0, 2.0], [0, 2])
    with pytest.raises(ValueError, match="finite"):
        fit_platt([1.0, float("nan")], [0, 1])


def test_ece_and_brier_on_a_worked_example() -> None:
    # Bins: 0.05 -> bin 0, 0.15 -> bin 1, 0.95 and 1.0 -> bin 9 (1.0 belongs to the last bin).
    probabilities = np.array([0.05, 0.15, 0.95, 1.0])
    labels = np.array([0, 1, 1, 0])
    expected = (abs(0 - 0.05) + abs(1 - 0.15) + abs(1 - 0.95 + 0 - 1.0)) / 4
    assert expected_calibration_error(probabilities, labels) == pytest.approx(expected, abs=1e-12)
    assert brier_score(probabilities, labels) == pytest.approx((0.05**2 + 0.85**2 + 0.05**2 + 1.0) / 4, abs=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1.2], [1])


def test_ece_is_small_when_calibrated_and_large_when_not() -> None:
    rng = np.random.default_rng(7)
    p = rng.random(50_000)
    labels = (rng.random(p.size) < p).astype(np.int64)
    # ~5,000 per bin: sampling noise per bin about sqrt(0.25 / 5000) = 0.007.
    assert expected_calibration_error(p, labels) < 0.02
    overconfident = np.where(p > 0.5, 1.0, 0.0)
    assert expected_calibration_error(overconfident, labels) > 0.2
    # The raw LRT situation: every probability 1.0, a tenth of the pairs relevant -> ECE 0.9.
    rare = (rng.random(10_000) < 0.1).astype(np.int64)
    assert expected_calibration_error(np.ones(rare.size), rare) == pytest.approx(1 - rare.mean())


# --- the card ---------------------------------------------------------------------------------


def test_card_calibration_round_trip_and_validation(tmp_path: Path) -> None:
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"kind": "cross-encoder", "name": "x", "max_length": 64, "extra": [1, 2]}))
    record = CalibrationRecord(**{k: v for k, v in RECORD.items() if k != "method"})
    write_calibration(card, record)
    data = json.loads(card.read_text())
    assert data["calibration"] == RECORD
    assert {k: data[k] for k in ("kind", "name", "max_length", "extra")} == {
        "kind": "cross-encoder",
        "name": "x",
        "max_length": 64,
        "extra": [1, 2],
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json"]  # no temporary file left behind
    mapping = Calibration.from_card(data, card)
    assert (mapping.a, mapping.b, mapping.calibrated) == (0.5, -12.0, True)
    assert "nfcorpus/dev" in mapping.source

    for field, value, message in [
        ("split", "test", "calibration.split"),
        ("split", " Test ", "calibration.split"),
        ("a", -0.5, "calibration.a"),
        ("a", float("inf"), "calibration.a"),
        ("method", "isotonic", "calibration.method"),
        ("fitted", "yesterday", "calibration.fitted"),
        ("positives", 1000, "calibration.positives"),
        ("ece", 1.5, "calibration.ece"),
    ]:
        with pytest.raises(ModelError, match=message) as err:
            Calibration.from_card({"calibration": {**RECORD, field: value}}, card)
        assert str(card) in str(err.value)
    with pytest.raises(ModelError, match="'calibration.depth' is missing"):
        Calibration.from_card({"calibration": {k: v for k, v in RECORD.items() if k != "depth"}}, card)
    with pytest.raises(ModelError, match="calibration.split"):
        CalibrationRecord(**{**{k: v for k, v in RECORD.items() if k != "method"}, "split": "test"})


def test_activation_fallbacks(tmp_path: Path) -> None:
    card = tmp_path / "card.json"
    for activation in ("sigmoid", "identity", None):
        mapping = Calibration.from_card({} if activation is None else {"activation": activation}, card)
        assert (mapping.a, mapping.b, mapping.calibrated) == (1.0, 0.0, False)
        np.testing.assert_allclose(mapping.apply([-2.0, 0.0, 3.0]), logistic(np.array([-2.0, 0.0, 3.0])))
    assert "identity" in Calibration.from_card({"activation": "identity"}, card).source
    with pytest.raises(ModelError, match="field 'activation'") as err:
        Calibration.from_card({"activation": "softmax"}, card)
    assert str(card) in str(err.value)


def test_fitting_on_a_test_split_is_impossible() -> None:
    data = LabelledScores(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0, 1, 0, 1]), queries=2)
    for split in ("test", "TEST"):
        dataset = Dataset(path=Path("/data/nfcorpus"), split=split, corpus={}, queries={}, qrels={})
        with pytest.raises(TuningSplitError, match="never|reporting only"):
            fit(None, dataset, data, depth=2)  # type: ignore[arg-type]  # refused before the encoder is used


# --- CrossEncoder.relevance -------------------------------------------------------------------

QUERY = "vitamin d"
PASSAGES = [
    "Vitamin D supplementation and serum 25-hydroxyvitamin D levels in older adults.",
    "Cars: a review of fuel economy in family sedans.",
    "Dietary calcium, vitamin D and bone mineral density.",
    "The history of jazz in New Orleans.",
    "",
]


@pytest.fixture(scope="module")
def shipped(cross_encoder_dir: Path) -> CrossEncoder:
    return CrossEncoder.load(str(cross_encoder_dir))


def copy_with_card(src: Path, dst: Path, drop: tuple[str, ...] = (), **changes: object) -> Path:
    """A model directory sharing ``src``'s graph and tokenizer (symlinks) with an edited card."""
    dst.mkdir()
    for name in ("model.onnx", "tokenizer.json"):
        os.symlink(src / name, dst / name)
    card = {k: v for k, v in json.loads((src / "card.json").read_text()).items() if k not in drop}
    card.update(changes)
    (dst / "card.json").write_text(json.dumps(card))
    return dst


def test_shipped_relevance_is_the_cards_platt_mapping(shipped: CrossEncoder, cross_encoder_dir: Path) -> None:
    card = json.loads((cross_encoder_dir / "card.json").read_text())
    assert card["calibration"]["split"] == "dev"  # the shipped LRT is calibrated, on dev
    a, b = card["calibration"]["a"], card["calibration"]["b"]
    assert (shipped.calibration.a, shipped.calibration.b) == (a, b) and shipped.calibration.calibrated
    scores = shipped.score(QUERY, PASSAGES).astype(np.float64)
    relevance = shipped.relevance(QUERY, PASSAGES)
    np.testing.assert_allclose(relevance, logistic(a * scores + b), rtol=1e-12, atol=1e-15)
    assert ((relevance >= 0) & (relevance <= 1)).all()
    # Monotone: the relevance orders the passages exactly as the score does.
    assert list(np.argsort(-relevance, kind="stable")) == list(np.argsort(-scores, kind="stable"))
    assert relevance[0] > relevance[1] and relevance[2] > relevance[3]
    assert float(sigmoid(scores).min()) > 0.999999  # what the raw logits gave: no meaning at all


def test_relevance_follows_the_card(shipped: CrossEncoder, cross_encoder_dir: Path, tmp_path: Path) -> None:
    scores = shipped.score(QUERY, PASSAGES).astype(np.float64)
    record = {**RECORD, "a": 2.0, "b": -50.0}
    custom = CrossEncoder.load(str(copy_with_card(cross_encoder_dir, tmp_path / "custom", calibration=record)))
    np.testing.assert_allclose(custom.relevance(QUERY, PASSAGES), logistic(2.0 * scores - 50.0), rtol=1e-9)
    bare_dir = copy_with_card(cross_encoder_dir, tmp_path / "bare", drop=("calibration",), activation="identity")
    bare = CrossEncoder.load(str(bare_dir))
    assert not bare.calibration.calibrated
    np.testing.assert_allclose(bare.relevance(QUERY, PASSAGES), sigmoid(scores), rtol=1e-12)
    bad = copy_with_card(cross_encoder_dir, tmp_path / "bad", calibration={**RECORD, "split": "test"})
    with pytest.raises(ModelError, match="calibration.split") as err:
        CrossEncoder.load(str(bad))
    assert str(bad / "card.json") in str(err.value)


# --- lrt-rerank models calibrate --------------------------------------------------------------

DEV_QUERIES = 20
TEST_QUERIES = 10
JUDGED_PER_QUERY = 8
FILLER_DOCS = 150


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for line in path.read_text().splitlines()[1:]:
        query_id, doc_id, grade = line.strip().split("\t")
        qrels.setdefault(query_id, {})[doc_id] = int(grade)
    return qrels


@pytest.fixture(scope="module")
def nfcorpus_slice(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small BEIR folder cut from NFCorpus: the first 20 judged dev queries and 10 test queries, up
    to 8 judged documents of each, 150 other documents, and the judgments among them (dev and test)."""
    source = shared_data / "nfcorpus"
    root = tmp_path_factory.mktemp("data") / "nfcorpus-slice"
    (root / "qrels").mkdir(parents=True)
    dev = dict(list(_read_qrels(source / "qrels" / "dev.tsv").items())[:DEV_QUERIES])
    test = dict(list(_read_qrels(source / "qrels" / "test.tsv").items())[:TEST_QUERIES])
    lines = (source / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    keep = {doc for judged in (*dev.values(), *test.values()) for doc in list(judged)[:JUDGED_PER_QUERY]}
    rng = np.random.default_rng(3)
    keep |= {json.loads(lines[i])["_id"] for i in rng.choice(len(lines), FILLER_DOCS, replace=False)}
    (root / "corpus.jsonl").write_text(
        "\n".join(line for line in lines if json.loads(line)["_id"] in keep) + "\n", encoding="utf-8"
    )
    wanted = set(dev) | set(test)
    queries = [
        line
        for line in (source / "queries.jsonl").read_text(encoding="utf-8").splitlines()
        if json.loads(line)["_id"] in wanted
    ]
    (root / "queries.jsonl").write_text("\n".join(queries) + "\n", encoding="utf-8")
    for split, qrels in (("dev", dev), ("test", test)):
        rows = [f"{q}\t{d}\t{g}" for q, judged in qrels.items() for d, g in judged.items() if d in keep]
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return root


def calibrate_cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lrt-rerank")
    return subprocess.run([str(exe), "models", "calibrate", *args], capture_output=True, text=True, timeout=900)


def test_models_calibrate_writes_the_card_and_refuses_test(
    cross_encoder_dir: Path, nfcorpus_slice: Path, tmp_path: Path
) -> None:
    model = copy_with_card(cross_encoder_dir, tmp_path / "lrt", drop=("calibration",))
    card_before = json.loads((model / "card.json").read_text())
    index = tmp_path / "index"
    # The MiniLM bi-encoder is built by setup from a pip package: the slice's index needs nothing else.
    common = ["--dataset", str(nfcorpus_slice), "--index", str(index), "--dense-model", "minilm", "--depth", "10"]
    common.append("--json")

    refused = calibrate_cli(str(model), *common, "--split", "test")
    assert refused.returncode == 2
    assert "refusing to fit a calibration on split 'test'" in refused.stderr and "--report-only" in refused.stderr
    assert json.loads((model / "card.json").read_text()) == card_before
    assert not index.exists()  # refused before any work

    fitted = calibrate_cli(str(model), *common, "--split", "dev", "--queries", str(DEV_QUERIES))
    assert fitted.returncode == 0, fitted.stderr
    report = json.loads(fitted.stdout)
    card = json.loads((model / "card.json").read_text())
    written = card.pop("calibration")
    assert card == card_before  # every other field kept
    assert written == report["calibration"]
    assert [written[k] for k in ("method", "dataset", "split", "depth")] == ["platt", "nfcorpus-slice", "dev", 10]
    assert written["pairs"] == report["pairs"] == DEV_QUERIES * 10
    assert 0 < written["positives"] == report["positives"] < written["pairs"]
    rows = report["rows"]
    raw, platt = rows["sigmoid(score)"], next(v for k, v in rows.items() if k.startswith("Platt fit"))
    # Raw sigmoid says ~1.0 for every pair; the fit must do far better on the data it was fitted on.
    assert raw["ece"] > 0.2 and platt["ece"] < raw["ece"] / 4 and platt["brier"] < raw["brier"]
    assert (written["ece"], written["brier"]) == (platt["ece"], platt["brier"])
    loaded = CrossEncoder.load(str(model))
    assert (loaded.calibration.a, loaded.calibration.b) == (written["a"], written["b"])

    measured = calibrate_cli(str(model), *common, "--split", "test", "--report-only")
    assert measured.returncode == 0, measured.stderr
    test_report = json.loads(measured.stdout)
    assert "calibration" not in test_report and test_report["split"] == "test"
    card_row = f"card calibration (a={written['a']:.4g}, b={written['b']:.4g})"
    assert set(test_report["rows"]) == {"sigmoid(score)", card_row}
    assert json.loads((model / "card.json").read_text())["calibration"] == written  # nothing written
