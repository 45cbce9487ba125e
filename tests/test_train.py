"""The model factory: training makes the loss fall, export round-trips, INT8 ranks like FP32, and
the shipped default re-ranker matches its card.

The training/export tests need the [train] extra (torch, transformers); CI installs it and sets
LRT_REQUIRE_TRAIN=1, which turns a missing torch into a failure instead of a skip. The
shipped-model tests need only the engine.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from lrt_rerank import CrossEncoder
from lrt_rerank.datasets import Dataset, Document
from lrt_rerank.models.store import CARD, MODEL, PACKAGED_DIR, file_sha256
from lrt_rerank.models.resolve import default_model_dir
from train_extra import require

SHIPPED = PACKAGED_DIR / "lrt-nfcorpus-int8"
MAX_SHIPPED_BYTES = 25 * 1024 * 1024


def _need_torch() -> None:
    require()


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


# ------------------------------------------------------------------------------ shipped model
def test_shipped_model_matches_its_card() -> None:
    card = json.loads((SHIPPED / CARD).read_text(encoding="utf-8"))
    assert card["kind"] == "cross-encoder"
    assert card["sha256"] == file_sha256(SHIPPED / MODEL)
    assert card["quantization"]["weights"] == "int8, per channel"
    assert card["parameters"] > 1_000_000 and card["layers"] >= 1
    assert "NFCorpus" in json.dumps(card["metrics"]) or "nfcorpus" in json.dumps(card["metrics"])
    total = sum(p.stat().st_size for p in SHIPPED.iterdir() if p.is_file())
    assert total <= MAX_SHIPPED_BYTES, f"{SHIPPED}: {total} bytes, more than the 25 MB wheel budget"


def test_default_cross_encoder_is_the_shipped_lrt() -> None:
    assert default_model_dir("cross-encoder") == SHIPPED
    ce = CrossEncoder.load()
    assert Path(ce.model_dir) == SHIPPED
    assert ce.fingerprint == json.loads((SHIPPED / CARD).read_text(encoding="utf-8"))["sha256"]
    scores = ce.score(
        "vitamin D supplementation and bone fractures",
        [
            "Vitamin D supplementation and fracture prevention in older adults: a randomised trial of daily vitamin D.",
            "The migration of monarch butterflies across North America follows the seasons.",
        ],
    )
    assert scores.shape == (2,) and np.isfinite(scores).all()
    assert scores[0] > scores[1]


# ------------------------------------------------------------------------- training & export
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, nfcorpus_sample: tuple[list[str], list[str]]) -> Path:
    """A 2-layer scorer from the MiniLM backbone (layers 0 and 5), head perturbed so every term matters."""
    _need_torch()
    import torch

    from lrt_rerank.train.model import corpus_idf, from_backbone, set_lexical

    torch.manual_seed(0)
    model, tokenizer = from_backbone(layer_map=[0, 5])
    set_lexical(model, corpus_idf(tokenizer, nfcorpus_sample[1], model.encoder.config.vocab_size), 4.0)
    with torch.no_grad():
        model.mixer.weight.normal_(0.0, 0.05)
        model.bias.fill_(0.25)
    return model.save(tmp_path_factory.mktemp("ckpt") / "tiny", tokenizer, {"recipe": {"max_length": 64, "layers": 2}})


@pytest.fixture(scope="module")
def exported(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from lrt_rerank.train.export import quantize, write_model_dir

    root = tmp_path_factory.mktemp("export")
    fp32 = write_model_dir(tiny_checkpoint, root / "fp32", "tiny", 64, {})
    return fp32, quantize(fp32, root / "int8")


@pytest.mark.train
def test_few_training_steps_make_the_loss_fall(nfcorpus_sample: tuple[list[str], list[str]]) -> None:
    _need_torch()
    import torch

    from lrt_rerank.train.data import Group, PairEncoder
    from lrt_rerank.train.loop import LoopConfig, train_listwise
    from lrt_rerank.train.model import from_backbone

    queries, passages = nfcorpus_sample
    corpus = {f"d{i}": Document(f"d{i}", "", text) for i, text in enumerate(passages[:24])}
    dataset = Dataset(Path("tiny"), "train", corpus, {f"q{i}": q for i, q in enumerate(queries[:4])}, {})
    # each query's positive is a passage the untrained model has no reason to prefer
    groups = [Group(f"q{i}", f"d{i * 6 + 5}", tuple(f"d{i * 6 + j}" for j in range(5))) for i in range(4)]
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model, tokenizer = from_backbone(layer_map=[0, 5])
    cfg = LoopConfig(lr=2e-4, head_lr=1e-2, warmup=0.1, batch_groups=4, epochs=10, seed=1)
    result = train_listwise(model, PairEncoder(tokenizer, 48), dataset, groups, cfg, progress=False)
    assert result.steps == 10 and result.pairs == 10 * 4 * 6
    assert np.mean(result.losses[-3:]) < 0.5 * np.mean(result.losses[:2]), result.losses


@pytest.mark.train
def test_export_reproduces_torch_logits(tiny_checkpoint: Path, exported: tuple[Path, Path]) -> None:
    import onnxruntime as ort
    import torch

    from lrt_rerank.train.data import PairEncoder
    from lrt_rerank.train.model import load_checkpoint

    fp32, _ = exported
    card = json.loads((fp32 / CARD).read_text(encoding="utf-8"))
    assert card["onnx"]["fused_ops"].get("Attention") == 2, card["onnx"]["fused_ops"]
    assert card["sha256"] == file_sha256(fp32 / MODEL)

    model, _ = load_checkpoint(tiny_checkpoint, attn="eager")
    model.eval()
    query = "does dietary fibre protect against colon cancer?"
    passages = ["Fibre", "Dietary fibre intake and colorectal cancer risk in a prospective cohort. " * 8, "Coffee and sleep quality.", "colon"]
    batch = PairEncoder(fp32 / "tokenizer.json", 64).encode([query] * len(passages), passages)  # shapes unlike the export probe
    with torch.no_grad():
        reference = model(**batch).numpy()
        mask = batch["attention_mask"].float()
        passage = batch["token_type_ids"].float() * mask
        match = model.exact_match(batch["input_ids"], mask - passage, passage).numpy()
    assert match[0] > 0 and match[2] == 0 and match[1] > match[3] > 0, match  # the exact-match term is live
    session = ort.InferenceSession(str(fp32 / MODEL), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {k: v.numpy() for k, v in batch.items()})[0].reshape(-1)
    np.testing.assert_allclose(onnx_logits, reference, atol=1e-4, rtol=0)
    engine = CrossEncoder.load(fp32).score(query, passages)  # the Rust engine: its own tokenizer and batching
    np.testing.assert_allclose(engine, reference, atol=1e-4, rtol=0)


@pytest.mark.train
def test_int8_ranks_like_fp32(exported: tuple[Path, Path], nfcorpus_sample: tuple[list[str], list[str]]) -> None:
    fp32, int8 = exported
    assert (int8 / MODEL).stat().st_size < 0.4 * (fp32 / MODEL).stat().st_size
    queries, passages = nfcorpus_sample
    full, quant = CrossEncoder.load(fp32), CrossEncoder.load(int8)
    correlations = [_spearman(full.score(q, passages[:30]), quant.score(q, passages[:30])) for q in queries]
    # the fixed sample: 8 queries x 30 passages; the shipped LRT measured 0.997 mean / 0.983 min over NFCorpus test
    assert np.mean(correlations) >= 0.95 and min(correlations) >= 0.9, correlations


# ------------------------------------------------------------------- training data & residual
def _toy_dataset(n_docs: int = 12) -> Dataset:
    corpus = {f"d{i}": Document(f"d{i}", "", f"passage number {i}") for i in range(n_docs)}
    return Dataset(Path("toy"), "train", corpus, {"q1": "query one", "q2": "query two"}, {"q1": {"d2": 1, "d7": 1, "d9": 2}, "q2": {"d11": 1}})


def test_groups_take_positives_and_negatives_from_the_reranked_depth() -> None:
    from lrt_rerank.train.data import Candidates, build_groups

    dataset = _toy_dataset()
    ranked = [f"d{i}" for i in range(12)]
    candidates = Candidates({"q1": ranked, "q2": ranked}, {"q1": [1.0 / (r + 1) for r in range(12)], "q2": [1.0 / (r + 1) for r in range(12)]})
    groups = build_groups(dataset, candidates, negatives=3, negative_depth=8, groups_per_query=4, seed=3)
    # q2's only positive (d11) lies below the depth: the re-ranker never sees it, so q2 gives no group
    assert {g.query_id for g in groups} == {"q1"} and len(groups) == 4
    head = set(ranked[:8])
    for g in groups:
        assert g.positive in {"d2", "d7"}  # judged and within the depth (d9 is deeper)
        assert set(g.negatives) <= head - {"d2", "d7"} and len(set(g.negatives)) == 3
    assert {g.positive for g in groups} == {"d2", "d7"}  # both positives used before any repeats


def test_first_stage_priors_standardise_the_reranked_head() -> None:
    from lrt_rerank.train.data import Candidates, first_stage_priors

    scores = [0.05, 0.04, 0.02, 0.01, 0.005]  # only the order matters
    priors = first_stage_priors(Candidates({"q": ["a", "b", "c", "d", "e"]}, {"q": scores}), depth=3)["q"]
    values = -np.log(np.arange(1, 6))
    expected = (values - values[:3].mean()) / values[:3].std()
    assert [priors[d] for d in "abcde"] == pytest.approx(list(expected))
    assert priors["not-retrieved"] == pytest.approx(expected[-1])


@pytest.mark.train
def test_residual_training_adds_the_weighted_prior_to_the_loss(nfcorpus_sample: tuple[list[str], list[str]]) -> None:
    _need_torch()
    import torch

    from lrt_rerank.train.data import Group, PairEncoder
    from lrt_rerank.train.loop import LoopConfig, train_listwise
    from lrt_rerank.train.model import from_backbone

    queries, passages = nfcorpus_sample
    corpus = {f"d{i}": Document(f"d{i}", "", text) for i, text in enumerate(passages[:6])}
    dataset = Dataset(Path("tiny"), "train", corpus, {"q0": queries[0]}, {})
    groups = [Group("q0", "d5", tuple(f"d{j}" for j in range(5)))]
    torch.set_num_threads(2)
    model, tokenizer = from_backbone(layer_map=[0])
    encoder = PairEncoder(tokenizer, 32)
    frozen = LoopConfig(lr=0.0, head_lr=0.0, batch_groups=1, epochs=1, seed=1)
    plain = train_listwise(model, encoder, dataset, groups, frozen, progress=False).losses[0]
    favour = {"q0": {"d5": 3.0, **{f"d{j}": -1.0 for j in range(5)}}}
    residual = dataclasses.replace(frozen, prior_weight=2.0)
    helped = train_listwise(model, encoder, dataset, groups, residual, priors=favour, progress=False).losses[0]
    assert helped < plain - 1.0, (plain, helped)  # a prior that favours the positive lowers the loss
    with pytest.raises(ValueError, match="prior"):
        train_listwise(model, encoder, dataset, groups, residual, progress=False)


# ---------------------------------------------------------------------------------- report
@pytest.mark.train
def test_report_chooses_the_weight_on_dev_and_writes_the_card(exported: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    from lrt_rerank.evaluate import score_run
    from lrt_rerank.train.report import Split, build_report, markdown, write_card_figures

    texts = {
        "d0": "Vitamin D supplementation lowers fracture risk in older adults.",
        "d1": "Monarch butterflies migrate across North America.",
        "d2": "Fibre intake and colorectal cancer: a cohort study of dietary fibre.",
        "d3": "Coffee drinking and sleep quality in students.",
    }
    queries = {"v": "vitamin D and fractures", "f": "dietary fibre and colon cancer"}
    root = tmp_path / "toy"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": t}) + "\n" for k, t in texts.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": t}) + "\n" for k, t in queries.items()))
    for split in ("dev", "test"):
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\nv\td0\t1\nf\td2\t1\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    # the first stage ranks the relevant passage last for both queries
    first_stage = {"v": [["d1", 0.04], ["d3", 0.03], ["d2", 0.02], ["d0", 0.01]], "f": [["d3", 0.04], ["d1", 0.03], ["d0", 0.02], ["d2", 0.01]]}
    for split in ("dev", "test"):
        (cache / f"candidates-toy-{split}.json").write_text(json.dumps(first_stage))
    _, int8 = exported
    model_dir = tmp_path / "model"
    shutil.copytree(int8, model_dir)
    report = build_report({"tiny": model_dir}, [Split(root, "dev", "tune"), Split(root, "test", "test")], cache, threads=1, progress=False)
    fs_row, model_row = report["splits"]["toy/test"]["rows"]
    qrels = {"v": {"d0": 1}, "f": {"d2": 1}}
    assert fs_row["MRR@10"] == pytest.approx(score_run({q: [d for d, _ in r] for q, r in first_stage.items()}, qrels, list(qrels))["MRR@10"])
    assert fs_row["MRR@10"] == pytest.approx(0.25)
    curve = report["weights"]["tiny"]["curve"]
    chosen = report["weights"]["tiny"]["weight"]
    assert curve[str(chosen)] == max(curve.values())
    assert model_row["interpolated"]["weight"] == chosen and model_row["rerank_p95_ms"] > 0
    assert "toy/test" in markdown(report)
    write_card_figures(model_dir, "tiny", report)
    card = json.loads((model_dir / CARD).read_text(encoding="utf-8"))
    assert card["interpolation"]["weight"] == chosen and card["sha256"] == file_sha256(model_dir / MODEL)
    assert CrossEncoder.load(model_dir).card["interpolation"]["weight"] == chosen


@pytest.mark.train
def test_report_of_a_dataset_without_test_qrels_covers_dev_and_a_missing_ood_split_fails_first(
    exported: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lrt_rerank.cli import main

    root = tmp_path / "devonly"
    (root / "qrels").mkdir(parents=True)
    texts = {"d0": "Statins and muscle pain in older adults.", "d1": "Bird migration across the Atlantic.", "d2": "Muscle symptoms on statin therapy."}
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": t}) + "\n" for k, t in texts.items()))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "statins and muscle pain"}) + "\n")
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq\td2\t1\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "candidates-devonly-dev.json").write_text(json.dumps({"q": [["d1", 0.03], ["d0", 0.02], ["d2", 0.01]]}))
    _, int8 = exported
    out = tmp_path / "report.json"
    base = ["train", "report", "--model", f"m={int8}", "--dataset", str(root), "--cache", str(cache), "--out", str(out), "--quiet"]
    assert main([*base, "--ood", str(root)]) == 1  # the dev-only folder as out-of-domain: it has no test split
    assert f"{root / 'qrels' / 'test.tsv'}: missing" in capsys.readouterr().err and not out.exists()
    assert main(base) == 0
    assert list(json.loads(out.read_text(encoding="utf-8"))["splits"]) == ["devonly/dev"]
    assert "covers dev only" in capsys.readouterr().err
