"""`lrt-rerank train all` on a tiny SciFact cut (the CI smoke of the whole factory), the refusal of a
queries file that overlaps a reported split, the pair-by-pair teacher-score cache, and both
distillation losses: checked against their definitions and shown to teach a student on tiny lists."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lrt_rerank import CrossEncoder
from lrt_rerank.cli import main
from lrt_rerank.datasets import Document, load_dataset, load_queries
from tiny_beir import make_tiny_scifact
from train_extra import require

pytestmark = pytest.mark.train

FACTORY_ARGS = [
    "--pseudo-queries", "12", "--max-length", "48", "--teacher-layers", "2", "--teacher-epochs", "1", "--layers", "0",
    "--eval-every", "0", "--dev-queries", "4", "--threads", "1", "--teacher-cloze", "6", "--quiet",
]


def _need_torch() -> None:
    require()


@pytest.fixture(scope="module")
def tiny(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_scifact(shared_data / "scifact", tmp_path_factory.mktemp("factory") / "tinysci")


CLICK_QUERIES = ("statin therapy and muscle symptoms", "vitamin D status in older adults", "statin therapy and muscle symptoms")


def write_click_log(tiny: Path, path: Path) -> Path:
    """Three click records over the tiny corpus (the first and last share a query), 12 documents shown each."""
    ids = [json.loads(line)["_id"] for line in (tiny / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    lines = [{"query": q, "shown": ids[i * 5 : i * 5 + 12], "clicked": [ids[i * 5 + 3]]} for i, q in enumerate(CLICK_QUERIES)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def factory_run(tiny: Path) -> Path:
    _need_torch()
    run = tiny.parent / "run"
    clicks = write_click_log(tiny, tiny.parent / "clicks.jsonl")
    assert main(["train", "all", "--dataset", str(tiny), "--out", str(run), "--clicks", str(clicks), *FACTORY_ARGS]) == 0
    return run


# ------------------------------------------------------------------------------ the whole factory
def test_train_all_writes_usable_models_and_a_report_with_retention(factory_run: Path, tiny: Path) -> None:
    for name, layers in (("teacher-fp32", 2), ("lrt-int8", 1)):
        card = json.loads((factory_run / name / "card.json").read_text(encoding="utf-8"))
        assert card["layers"] == layers and card["max_length"] == 48
        assert card["interpolation"]["chosen_on"] == "tinysci/dev"
    dev = load_dataset(tiny, "dev")
    qid = next(iter(dev.qrels))
    scores = CrossEncoder.load(factory_run / "lrt-int8").score(dev.queries[qid], [d.full_text for d in list(dev.corpus.values())[:5]])
    assert scores.shape == (5,) and np.isfinite(scores).all()

    report = json.loads((factory_run / "report.json").read_text(encoding="utf-8"))
    assert set(report["splits"]) == {"tinysci/dev", "tinysci/test"}
    assert report["lists"]["train"] == 24 and report["lists"]["pseudo-title"] + report["lists"]["pseudo-sentence"] == 12
    for split in report["splits"].values():
        first, teacher, lrt = split["rows"]
        assert (teacher["system"], lrt["system"]) == ("+ teacher FP32", "+ LRT INT8") and "retention" not in teacher
        for metric in ("MRR@10", "NDCG@10"):
            for mode, get in (("alone", lambda r: r[metric]), ("interpolated", lambda r: r["interpolated"][metric])):
                gain = get(teacher) - first[metric]
                expected = None if gain <= 1e-9 else (get(lrt) - first[metric]) / gain
                got = lrt["retention"][metric][mode]
                assert (got is None and expected is None) or got == pytest.approx(expected, abs=1e-3)
        for row in (teacher, lrt):
            gain = row["gain_interpolated_mrr@10"]
            assert gain["mean"] == pytest.approx(row["interpolated"]["MRR@10"] - first["MRR@10"], abs=2e-4)
            assert gain["ci95"][0] <= gain["mean"] <= gain["ci95"][1]
    assert report["targets"]["lrt_parameters"] == lrt["parameters"]
    teacher_meta = json.loads((factory_run / "teacher" / "lrt-train.json").read_text(encoding="utf-8"))
    assert teacher_meta["groups"]["cloze"] == 6 and teacher_meta["groups"]["judged"] > 0 and teacher_meta["groups"]["clicks"] == 3
    assert report["lists"]["clicks"] == 2, "a query repeated in the click log is scored once"
    assert "retention of the teacher's MRR@10 gain" in (factory_run / "report.md").read_text(encoding="utf-8")


def test_train_all_resumes_from_its_stages_and_cached_teacher_scores(factory_run: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lrt_rerank.train.teachers import Teacher

    teacher_weights = factory_run / "teacher" / "model.safetensors"
    before = teacher_weights.stat().st_mtime_ns
    opened: list[int] = []
    engine = Teacher.engine

    @contextmanager
    def counted(self: Teacher, threads: int) -> Iterator[CrossEncoder]:
        opened.append(1)
        with engine(self, threads) as encoder:
            yield encoder

    monkeypatch.setattr(Teacher, "engine", counted)
    for stage in ("lrt", "lrt-fp32", "lrt-int8"):
        for path in sorted((factory_run / stage).iterdir()):
            path.unlink()
        (factory_run / stage).rmdir()
    (factory_run / "report.json").unlink()
    clicks = str(tiny.parent / "clicks.jsonl")
    assert main(["train", "all", "--dataset", str(tiny), "--out", str(factory_run), "--clicks", clicks, *FACTORY_ARGS]) == 0
    assert opened == [], "every teacher score should come from the cache"
    assert teacher_weights.stat().st_mtime_ns == before, "the finished teacher should not be trained again"
    assert (factory_run / "lrt-int8" / "card.json").is_file() and (factory_run / "report.json").is_file()


def test_train_all_distils_the_fusion_teacher_and_measures_retention_against_it(factory_run: Path, tiny: Path, tmp_path: Path) -> None:
    from lrt_rerank.train.factory import FUSION_LABEL
    from lrt_rerank.train.fusion import FIRST_STAGE_GRID, TEACHER_GRID

    run = tmp_path / "fusion"
    args = [a for a in FACTORY_ARGS if a not in ("--teacher-cloze", "6")]
    assert main(["train", "all", "--dataset", str(tiny), "--out", str(run), "--teacher", str(factory_run / "teacher"), "--teacher-fusion", *args]) == 0
    fusion = json.loads((run / "fusion-teacher.json").read_text(encoding="utf-8"))
    w = fusion["weights"]
    assert {w["bm25"], w["dense"], w["prior"]} <= set(FIRST_STAGE_GRID) and w["teacher"] in TEACHER_GRID and w["bm25"] + w["dense"] + w["prior"] > 0
    curve = fusion["dev_mrr@10_by_teacher_weight"]
    assert curve[str(float(w["teacher"]))] == max(curve.values()), "the teacher's weight is the best of its dev curve"
    student = json.loads((run / "lrt" / "lrt-train.json").read_text(encoding="utf-8"))
    assert student["recipe"]["loop"]["prior_weight"] == w["prior"], "the student trains as a residual of the fusion's own prior"
    card = json.loads((run / "lrt-fp32" / "card.json").read_text(encoding="utf-8"))
    assert card["teacher"]["fusion"] == w
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert report["retention_of"] == FUSION_LABEL and report["fusion_teacher"] == fusion
    for split in report["splits"].values():
        rows = {row["system"]: row for row in split["rows"]}
        first, teacher, lrt = rows["RRF first stage"], rows[f"+ {FUSION_LABEL}"], rows["+ LRT INT8"]
        assert "rerank_p95_ms" not in teacher and "retention" not in teacher
        gain = teacher["interpolated"]["MRR@10"] - first["MRR@10"]
        expected = None if gain <= 1e-9 else (lrt["interpolated"]["MRR@10"] - first["MRR@10"]) / gain
        got = lrt["retention"]["MRR@10"]["interpolated"]
        assert (got is None and expected is None) or got == pytest.approx(expected, abs=1e-3)
    dev = report["splits"]["tinysci/dev"]["rows"]
    fused_dev = next(row for row in dev if row["system"] == f"+ {FUSION_LABEL}")
    assert report["targets"]["teacher_gain_interpolated_mrr@10"] == pytest.approx(fused_dev["interpolated"]["MRR@10"] / dev[0]["MRR@10"] - 1, abs=1e-3)


# ------------------------------------------------------------------------------ held-out queries
def test_queries_file_overlapping_a_reported_split_is_refused(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lrt_rerank.datasets import DatasetError
    from lrt_rerank.train.lists import held_out_queries, read_queries_file

    queries = load_queries(tiny / "queries.jsonl")
    dev = load_dataset(tiny, "dev")
    test = load_dataset(tiny, "test")
    dev_id, test_id = next(iter(dev.qrels)), next(iter(test.qrels))
    held_out = held_out_queries(tiny)

    text_file = tmp_path / "log.txt"  # the dev query again, in other case and spacing
    text_file.write_text("statins and muscle pain\n\n" + "  " + queries[dev_id].upper().replace(" ", "   ") + "\n", encoding="utf-8")
    out = tmp_path / "run"
    assert main(["train", "all", "--dataset", str(tiny), "--out", str(out), "--queries", str(text_file), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{text_file}:3:" in err and f"dev query {dev_id}" in err
    assert not out.exists(), "nothing may be trained before the refusal"

    jsonl = tmp_path / "log.jsonl"  # a test query by id, whatever its text
    jsonl.write_text(json.dumps({"_id": "x1", "text": "vitamin D and bones"}) + "\n" + json.dumps({"_id": test_id, "text": "other words"}) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=rf"{jsonl}:2: .*test query {test_id}"):
        read_queries_file(jsonl, held_out)

    clean = tmp_path / "clean.txt"
    clean.write_text("statins and muscle pain\nStatins  and muscle pain\nvitamin D and bones\n", encoding="utf-8")
    assert read_queries_file(clean, held_out) == ["statins and muscle pain", "vitamin D and bones"]


def test_pseudo_queries_come_from_titles_and_first_sentences_never_from_held_out_texts() -> None:
    from lrt_rerank.train.lists import HeldOut, pseudo_queries

    corpus = {
        f"d{i}": Document(f"d{i}", f"Title number {i} about cells", f"First sentence of doc {i} here. Second sentence {i}.")
        for i in range(10)
    }
    corpus["held"] = Document("held", "A held out claim text", "")
    held_out = HeldOut({}, {"a held out claim text": ("dev", "q9")})
    out = pseudo_queries(corpus, 20, seed=3, held_out=held_out)
    texts = [t for _, t in out]
    assert "A held out claim text" not in texts and len(out) == 10
    for source, text in out:
        number = text.split()[2] if source == "pseudo-title" else text.split()[4]
        doc = corpus[f"d{number}"]
        assert text == (doc.title if source == "pseudo-title" else f"First sentence of doc {number} here.")
    assert {s for s, _ in out} == {"pseudo-title", "pseudo-sentence"}


# ------------------------------------------------------------------------------ bootstrap intervals
def test_bootstrap_intervals_of_gain_and_retention_follow_sampling_theory() -> None:
    from lrt_rerank.train.report import add_intervals

    n = 400
    first = np.zeros(n)
    teacher = first.copy()
    teacher[:120] = 1.0  # lifts 30% of the queries from 0 to 1
    student = first.copy()
    student[:60] = 1.0  # half of those
    rows = [{"system": "RRF first stage"}, {"system": "+ T"}, {"system": "+ S", "retention": {"MRR@10": {}}}, {"system": "+ same"}]
    add_intervals(rows, first, {"T": teacher, "S": student, "same": first.copy()}, teacher="T")
    half_width = 1.96 * np.sqrt(0.3 * 0.7 / n)  # normal approximation of a binomial share
    low, high = rows[1]["gain_interpolated_mrr@10"]["ci95"]
    assert rows[1]["gain_interpolated_mrr@10"]["mean"] == pytest.approx(0.3)
    assert low == pytest.approx(0.3 - half_width, abs=0.01) and high == pytest.approx(0.3 + half_width, abs=0.01)
    assert rows[3]["gain_interpolated_mrr@10"] == {"mean": 0.0, "ci95": [0.0, 0.0]}
    # the student's hits are a subset of the teacher's: retention is a binomial share of 120, about 0.5
    kept_low, kept_high = rows[2]["retention"]["MRR@10"]["interpolated_ci95"]
    share_width = 1.96 * np.sqrt(0.25 / 120)
    assert kept_low == pytest.approx(0.5 - share_width, abs=0.03) and kept_high == pytest.approx(0.5 + share_width, abs=0.03)

    unclear = first.copy()
    unclear[:4], unclear[4:8] = 1.0, -1.0  # a teacher that helps as often as it hurts
    rows = [{"system": "RRF first stage"}, {"system": "+ T"}, {"system": "+ S", "retention": {"MRR@10": {}}}]
    add_intervals(rows, first, {"T": unclear, "S": student}, teacher="T")
    assert rows[2]["retention"]["MRR@10"]["interpolated_ci95"] is None


# ------------------------------------------------------------------------------ inverse-cloze teacher groups
def test_cloze_groups_hide_their_sentence_and_draw_negatives_from_its_first_stage_list(tiny: Path) -> None:
    _need_torch()
    from lrt_rerank.first_stage.index_cache import cached_index
    from lrt_rerank.train.cloze import cloze_groups, sentences
    from lrt_rerank.train.lists import HeldOut, held_out_queries, normalise

    train = load_dataset(tiny, "train")
    first_stage = cached_index(train, progress=False)
    held_out = held_out_queries(tiny)
    extended, groups, priors = cloze_groups(train, first_stage, 10, 5, 30, 7, held_out, progress=False)
    assert len(groups) == 10 and len({g.query_id for g in groups}) == 10
    assert set(train.queries) < set(extended.queries) and set(train.corpus) < set(extended.corpus)
    for group in groups:
        source = train.corpus[group.query_id.removeprefix("cloze:")]
        sentence = extended.queries[group.query_id]
        assert sentence in sentences(source.text)
        positive = extended.corpus[group.positive]
        assert positive.title == source.title and sentence not in positive.text
        assert sorted(sentences(positive.text) + [sentence]) == sorted(sentences(source.text))
        listed = [c.id for c in first_stage.search(sentence, 30, "rrf")]
        assert len(group.negatives) == 5 and set(group.negatives) <= set(listed) and source.id not in group.negatives
        assert priors[group.query_id][group.positive] == 0.0 and priors[group.query_id][group.negatives[0]] == 0.0
    # a sentence that is a held-out query text is never used, whatever the seed picks
    taken = extended.queries[groups[0].query_id]
    blocked = HeldOut(dict(held_out.ids), {**held_out.texts, normalise(taken): ("test", "q-taken")})
    again, regroups, _ = cloze_groups(train, first_stage, 10, 5, 30, 7, blocked, progress=False)
    assert taken not in {again.queries[g.query_id] for g in regroups}


# ------------------------------------------------------------------------------ clicks as weak labels
def test_click_log_errors_name_the_file_line_and_field(tiny: Path, tmp_path: Path) -> None:
    from lrt_rerank.datasets import DatasetError
    from lrt_rerank.train.clicks import read_clicks
    from lrt_rerank.train.lists import held_out_queries

    corpus = load_dataset(tiny, "train").corpus
    held_out = held_out_queries(tiny)
    doc = next(iter(corpus))
    dev = load_dataset(tiny, "dev")
    good = json.dumps({"query": "statins and muscle pain", "shown": [doc], "clicked": []})
    cases = {
        "not json": r":2: malformed JSON",
        json.dumps({"shown": [doc], "clicked": []}): r":2: field 'query' is missing",
        json.dumps({"query": "q", "shown": doc, "clicked": []}): r":2: field 'shown' is not a list of document ids",
        json.dumps({"query": "q", "shown": [doc]}): r":2: field 'clicked' is missing",
        json.dumps({"query": "q", "shown": [doc, "no-such-doc"], "clicked": []}): r":2: field 'shown' names 'no-such-doc', not a document",
        json.dumps({"query": "q", "shown": [doc, doc], "clicked": []}): r":2: field 'shown' repeats",
        json.dumps({"query": "q", "shown": [doc], "clicked": [list(corpus)[1]]}): r":2: field 'clicked' names .* not in 'shown'",
        json.dumps({"query": dev.queries[next(iter(dev.qrels))].lower(), "shown": [doc], "clicked": []}): r":2: query .* is dev query",
    }
    for n, (line, message) in enumerate(cases.items()):
        path = tmp_path / f"clicks{n}.jsonl"
        path.write_text(good + "\n" + line + "\n", encoding="utf-8")
        with pytest.raises(DatasetError, match=f"{path}{message}"):
            read_clicks(path, corpus, held_out)
    assert len(read_clicks(write_click_log(tiny, tmp_path / "ok.jsonl"), corpus, held_out)) == 3


def test_click_groups_take_the_lowest_click_as_positive_and_skipped_documents_as_negatives(tiny: Path) -> None:
    _need_torch()
    from lrt_rerank.train.clicks import ClickRecord, click_groups

    train = load_dataset(tiny, "train")
    ids = list(train.corpus)[:10]
    records = [
        ClickRecord(1, "q one", tuple(ids), frozenset({ids[1], ids[6]})),  # skipped above the last click: 0, 2, 3, 4, 5
        ClickRecord(2, "q two", tuple(ids[:4]), frozenset({ids[0]})),  # 3 unclicked, too few for 5 negatives
        ClickRecord(3, "q three", tuple(ids), frozenset()),  # no click
    ]
    extended, groups, priors = click_groups(train, records, negatives=5, seed=3)
    assert len(groups) == 1 and extended.queries["click:1"] == "q one"
    group = groups[0]
    assert group.positive == ids[6] and set(group.negatives) == {ids[0], ids[2], ids[3], ids[4], ids[5]}
    minus_log = -np.log(np.arange(1, 11))
    expected = (minus_log - minus_log.mean()) / minus_log.std()
    assert [priors["click:1"][d] for d in ids] == pytest.approx(expected)

    _, groups, _ = click_groups(train, records[:1], negatives=7, seed=3)  # 5 skipped above + 2 of the 2 unclicked below
    negatives = groups[0].negatives
    assert len(negatives) == 7 and set(negatives[:5]) == {ids[0], ids[2], ids[3], ids[4], ids[5]}
    assert len(set(negatives[5:]) & {ids[7], ids[8], ids[9]}) == 2


# ------------------------------------------------------------------------------ teacher-score cache
def test_teacher_scores_are_cached_pair_by_pair_and_an_interrupted_run_resumes(factory_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lrt_rerank.train.score_cache import ScoreCache
    from lrt_rerank.train.teachers import Teacher, open_teacher, score_lists

    teacher_dir = factory_run / "teacher-fp32"
    reference = CrossEncoder.load(teacher_dir, threads=1)
    passages = [f"Statin therapy case {i}: muscle symptoms were reported in {i * 3} patients." for i in range(6)]
    lists = [("statins and muscle pain", passages[:4]), ("vitamin D in the elderly", passages[2:])]
    asked: list[list[str]] = []
    engine = Teacher.engine

    class Failing:
        def __init__(self, inner: CrossEncoder, fail_after: int | None) -> None:
            self.inner, self.fail_after = inner, fail_after

        def score(self, query: str, texts: list[str]) -> Any:
            if self.fail_after is not None and len(asked) >= self.fail_after:
                raise RuntimeError("stopped")
            asked.append(list(texts))
            return self.inner.score(query, texts)

    fail_after: list[int | None] = [1]

    @contextmanager
    def recorded(self: Teacher, threads: int) -> Iterator[Failing]:
        with engine(self, threads) as encoder:
            yield Failing(encoder, fail_after[0])

    monkeypatch.setattr(Teacher, "engine", recorded)
    teacher = open_teacher(teacher_dir, threads=1)
    with pytest.raises(RuntimeError, match="stopped"):  # stopped after the first query
        score_lists(teacher, lists, tmp_path, threads=1, progress=False)
    assert len(asked) == 1
    fail_after[0] = None
    got = score_lists(teacher, lists, tmp_path, threads=1, progress=False)
    assert len(asked) == 2 and sorted(asked[1]) == sorted(lists[1][1]), "only the unscored query is scored on resume"
    for (query, texts), row in zip(lists, got):
        np.testing.assert_allclose(row, reference.score(query, texts), atol=1e-5)
    extended = [("statins and muscle pain", passages)]  # two new passages for a cached query
    again = score_lists(teacher, extended, tmp_path, threads=1, progress=False)
    assert sorted(asked[2]) == sorted(passages[4:]) and len(asked) == 3
    np.testing.assert_allclose(again[0][:4], got[0], atol=0)

    cache = ScoreCache(tmp_path, teacher.sha256, teacher.max_length)
    assert cache.count() == 10 and cache.get("statins and muscle pain", passages[:1])[0] == pytest.approx(got[0][0])
    assert ScoreCache(tmp_path, "another-teacher", teacher.max_length).get("statins and muscle pain", passages[:1]) == [None]
    assert ScoreCache(tmp_path, teacher.sha256, teacher.max_length + 1).get("statins and muscle pain", passages[:1]) == [None]


# ------------------------------------------------------------------------------ the two losses
def test_kd_losses_match_their_definitions() -> None:
    _need_torch()
    import torch

    from lrt_rerank.train.loop import LoopConfig, kd_loss

    rng = np.random.default_rng(4)
    s, t = rng.normal(size=(3, 6)), rng.normal(scale=3.0, size=(3, 6))
    pairs = np.mean([np.mean([((s[b, i] - s[b, j]) - (t[b, i] - t[b, j])) ** 2 for i in range(6) for j in range(6)]) for b in range(3)])
    got = kd_loss(torch.tensor(s), torch.tensor(t), LoopConfig(loss="margin-mse"))
    assert float(got) == pytest.approx(pairs, rel=1e-9)
    temp = 2.0
    p = np.exp(t / temp) / np.exp(t / temp).sum(1, keepdims=True)
    q = np.exp(s / temp) / np.exp(s / temp).sum(1, keepdims=True)
    kl = np.mean(np.sum(p * np.log(p / q), axis=1)) * temp**2
    assert float(kd_loss(torch.tensor(s), torch.tensor(t), LoopConfig(loss="kl", temperature=temp))) == pytest.approx(kl, rel=1e-9)
    with pytest.raises(ValueError, match="unknown distillation loss 'mse'"):
        kd_loss(torch.tensor(s), torch.tensor(t), LoopConfig(loss="mse"))


@pytest.mark.parametrize("loss", ["kl", "margin-mse"])
def test_each_loss_teaches_a_student_the_teachers_order(loss: str, nfcorpus_sample: tuple[list[str], list[str]]) -> None:
    _need_torch()
    import torch
    from scipy.stats import spearmanr

    from lrt_rerank.train.data import PairEncoder
    from lrt_rerank.train.lists import QueryList, train_on_lists
    from lrt_rerank.train.loop import LoopConfig
    from lrt_rerank.train.model import from_backbone

    queries, passages = nfcorpus_sample
    texts = {f"d{i}": p for i, p in enumerate(passages[:32])}
    lists = [QueryList("pseudo-title", queries[i], tuple(f"d{i * 8 + j}" for j in range(8))) for i in range(4)]
    rng = np.random.default_rng(11)
    teacher = [rng.normal(scale=3.0, size=8) for _ in lists]  # an order the backbone has no reason to know
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model, tokenizer = from_backbone(layer_map=[0])
    encoder = PairEncoder(tokenizer, 48)

    def agreement() -> float:
        model.eval()
        with torch.no_grad():
            return float(np.mean([
                spearmanr(model(**encoder.encode([q.query] * 8, [texts[d] for d in q.doc_ids])).numpy(), t).statistic
                for q, t in zip(lists, teacher)
            ]))

    start = agreement()
    cfg = LoopConfig(lr=3e-4, head_lr=1e-2, warmup=0.1, batch_groups=4, epochs=12, seed=1, loss=loss, temperature=1.0)
    result = train_on_lists(model, encoder, lists, teacher, texts.__getitem__, cfg, list_size=8, progress=False)
    assert result.steps == 12 and result.pairs == 12 * 4 * 8
    assert np.mean(result.losses[-3:]) < 0.5 * np.mean(result.losses[:2]), result.losses
    assert agreement() > max(0.6, start + 0.3), (start, agreement())
