"""Windows of long passages (issue 23) against an independent reference: HF `tokenizers` (Python) and
onnxruntime's Python session on the same FP32 model, each window built and scored as its own pair
here, then aggregated here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from lrt_rerank import CrossEncoder
from lrt_rerank._core import ScoreCache

MAX_LENGTH = 64  # the small_cross_encoder_dir fixture's


class Reference:
    """Windows and scores computed without the engine: the pair template written out by hand."""

    def __init__(self, model_dir: Path, max_length: int, xlmr: bool = False):
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.no_truncation()
        self.cls, self.sep = self.tok.token_to_id("[CLS]"), self.tok.token_to_id("[SEP]")
        self.xlmr = xlmr
        self.specials = 4 if xlmr else 3
        self.max_length = max_length
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self.session = ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.with_types = "token_type_ids" in {i.name for i in self.session.get_inputs()}

    def pair(self, q: list[int], window: list[int]) -> tuple[list[int], list[int]]:
        if self.xlmr:  # <s> Q </s> </s> P </s>, type ids all 0
            ids = [self.cls, *q, self.sep, self.sep, *window, self.sep]
            return ids, [0] * len(ids)
        ids = [self.cls, *q, self.sep, *window, self.sep]
        return ids, [0] * (len(q) + 2) + [1] * (len(window) + 1)

    def windows(self, query: str, passage: str, stride: int | None, cap: int) -> tuple[list, list, int]:
        """(pairs, character spans, total windows before the cap)."""
        q = self.tok.encode(query, add_special_tokens=False).ids
        p = self.tok.encode(passage, add_special_tokens=False)
        width = self.max_length - len(q) - self.specials
        assert width >= 1
        stride = stride or max(width // 2, 1)
        starts = [0]
        while starts[-1] + width < len(p.ids):
            starts.append(starts[-1] + stride)
        total = len(starts)
        pairs, spans = [], []
        for s in starts[:cap]:
            e = min(s + width, len(p.ids))
            pairs.append(self.pair(q, p.ids[s:e]))
            spans.append((p.offsets[s][0], p.offsets[e - 1][1]) if e > s else (0, 0))
        return pairs, spans, total

    def score_pair(self, ids: list[int], types: list[int]) -> float:
        feeds = {"input_ids": np.array([ids], dtype=np.int64), "attention_mask": np.ones((1, len(ids)), dtype=np.int64)}
        if self.with_types:
            feeds["token_type_ids"] = np.array([types], dtype=np.int64)
        return float(np.asarray(self.session.run(None, feeds)[0]).reshape(-1)[0])

    def score(self, query: str, passage: str, stride: int | None, cap: int, aggregate: str) -> tuple[float, int, tuple]:
        pairs, spans, _ = self.windows(query, passage, stride, 1 if aggregate == "first" else cap)
        s = np.array([self.score_pair(*p) for p in pairs], dtype=np.float64)
        best = int(np.argmax(s))
        value = {"max": s[best], "mean": s.mean(), "sum": s.sum(), "first": s[0]}[aggregate]
        win = 0 if aggregate == "first" else best
        return float(value), win, spans[win]


@pytest.fixture(scope="module")
def ref(small_cross_encoder_dir: Path) -> Reference:
    return Reference(small_cross_encoder_dir, MAX_LENGTH)


@pytest.fixture(scope="module")
def passages(nfcorpus_sample) -> list[str]:
    _, docs = nfcorpus_sample
    # real abstracts (most past 64 tokens: several windows each), a short one, an empty one
    return docs[:6] + ["Vitamin D and bone health.", ""]


@pytest.fixture(scope="module")
def query(nfcorpus_sample) -> str:
    return nfcorpus_sample[0][0]


def load(model_dir: Path, **kw) -> CrossEncoder:
    return CrossEncoder.load(model_dir, threads=2, **kw)


@pytest.fixture(scope="module")
def truncating(small_cross_encoder_dir: Path) -> CrossEncoder:
    return load(small_cross_encoder_dir)


@pytest.mark.parametrize("aggregate", ["max", "mean", "sum", "first"])
@pytest.mark.parametrize(("stride", "cap"), [(None, 8), (7, 8), (30, 8), (None, 2), (13, 3)])
def test_windows_match_the_reference(small_cross_encoder_dir, ref, query, passages, aggregate, stride, cap) -> None:
    ce = load(small_cross_encoder_dir, long_documents="windows", window_stride=stride, max_windows=cap, aggregate=aggregate)
    ours = ce.score(query, passages)
    details = ce.score_details(query, passages)
    for i, p in enumerate(passages):
        value, win, span = ref.score(query, p, stride, cap, aggregate)
        assert ours[i] == pytest.approx(value, abs=2e-4), (i, aggregate, stride, cap)
        assert details[i].score == pytest.approx(value, abs=2e-4)
        if aggregate in ("first", "max") or details[i].windows_scored == 1:
            assert (details[i].window, details[i].span) == (win, span), i
        pairs, _, total = ref.windows(query, p, stride, 1 if aggregate == "first" else cap)
        assert details[i].windows_scored == len(pairs)
        assert details[i].windows_dropped == total - len(pairs)
        assert details[i].tokens == len(ref.tok.encode(p, add_special_tokens=False).ids)
    # the windows fed are the reference's, token for token
    fed = ce.encode_windows(query, passages)
    for p, windows in zip(passages, fed):
        pairs, _, _ = ref.windows(query, p, stride, 1 if aggregate == "first" else cap)
        assert windows == [(list(i), list(t)) for i, t in pairs]
    assert all(len(ids) <= MAX_LENGTH for w in fed for ids, _ in w)


@pytest.mark.parametrize(("stride", "cap"), [(None, 8), (13, 3)])
def test_padding_stats_count_the_windows_fed(small_cross_encoder_dir, ref, truncating, query, passages, stride, cap) -> None:
    ce = load(small_cross_encoder_dir, long_documents="windows", window_stride=stride, max_windows=cap)
    real = sum(len(ids) for p in passages for ids, _ in ref.windows(query, p, stride, cap)[0])
    bucketed, longest, counted = ce.padding_stats(query, passages)
    assert counted == real
    assert longest >= bucketed >= real
    # truncation feeds one pair per passage, fewer tokens than the windows of these long abstracts
    assert truncating.padding_stats(query, passages)[2] < real


def test_several_windows_are_scored_and_spans_point_into_the_passage(small_cross_encoder_dir, query, passages) -> None:
    ce = load(small_cross_encoder_dir, long_documents="windows")
    details = ce.score_details(query, passages)
    assert max(d.windows_scored for d in details) > 1
    width = ce.window_width(query)
    assert width is not None and width == MAX_LENGTH - len(ce.encode(query, [""])[0][0])
    for p, d in zip(passages, details):
        start, end = d.span
        assert 0 <= start <= end <= len(p)
        assert d.tokens_scored <= d.tokens
        assert d.tokens_dropped == d.tokens - d.tokens_scored
        if p:
            assert p[start:end].strip()


def test_first_is_truncation_with_telemetry(small_cross_encoder_dir, truncating, query, passages) -> None:
    first = load(small_cross_encoder_dir, long_documents="windows", aggregate="first")
    np.testing.assert_array_equal(first.score(query, passages), truncating.score(query, passages))
    trunc = truncating.score_details(query, passages)
    np.testing.assert_array_equal([d.score for d in trunc], truncating.score(query, passages))
    assert [d.windows_scored for d in trunc] == [1] * len(passages)
    assert [d.windows_dropped for d in trunc] == [d.windows_dropped for d in first.score_details(query, passages)]
    assert any(d.tokens_dropped > 0 for d in trunc)


def test_a_fitting_passage_is_unchanged(small_cross_encoder_dir, truncating, query) -> None:
    short = ["Vitamin D and bone health.", "Statins lower cholesterol.", ""]
    windows = load(small_cross_encoder_dir, long_documents="windows", window_stride=1, max_windows=3)
    np.testing.assert_array_equal(windows.score(query, short), truncating.score(query, short))
    for d in windows.score_details(query, short):
        assert (d.window, d.windows_scored, d.windows_dropped, d.tokens_dropped) == (0, 1, 0, 0)
    empty = windows.score_details(query, [""])[0]
    assert (empty.tokens, empty.tokens_scored, empty.span) == (0, 0, (0, 0))


def test_a_huge_passage_keeps_windows_bounded(small_cross_encoder_dir, query) -> None:
    ce = load(small_cross_encoder_dir, long_documents="windows", max_windows=4)
    huge = ("Omega-3 fatty acids and cardiovascular outcomes in a randomized trial. " * 1500)[:100_000]
    assert len(huge) == 100_000
    d = ce.score_details(query, [huge, "short"])[0]
    assert d.windows_scored == 4
    width = ce.window_width(query)
    assert width is not None
    assert d.windows_dropped == 1 + -(-(d.tokens - width) // (width // 2)) - 4
    assert d.tokens > 10_000 and d.tokens_scored == width + 3 * (width // 2)
    assert d.span[1] < 2_000
    assert np.isfinite(ce.score(query, [huge])).all()


def test_a_query_longer_than_max_length_keeps_todays_rule(small_cross_encoder_dir, truncating, passages) -> None:
    long_query = "what is the effect of dietary fiber on colon cancer risk " * 12
    ce = load(small_cross_encoder_dir, long_documents="windows")
    assert ce.window_width(long_query) is None
    np.testing.assert_array_equal(ce.score(long_query, passages), truncating.score(long_query, passages))
    for d in ce.score_details(long_query, passages):
        assert (d.windows_scored, d.windows_dropped) == (1, 0)
    assert ce.encode_windows(long_query, passages) == [[e] for e in truncating.encode(long_query, passages)]


@pytest.fixture(scope="module")
def xlmr_dir(small_cross_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small model with an XLM-R-style pair template: [CLS] Q [SEP] [SEP] P [SEP], type ids 0."""
    out = tmp_path_factory.mktemp("xlmr") / "ce-xlmr"
    shutil.copytree(small_cross_encoder_dir, out)
    tok = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    cls, sep = tok["post_processor"]["special_tokens"]["[CLS]"], tok["post_processor"]["special_tokens"]["[SEP]"]
    special = lambda name: {"SpecialToken": {"id": name, "type_id": 0}}  # noqa: E731
    seq = lambda name: {"Sequence": {"id": name, "type_id": 0}}  # noqa: E731
    tok["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [special("[CLS]"), seq("A"), special("[SEP]")],
        "pair": [special("[CLS]"), seq("A"), special("[SEP]"), special("[SEP]"), seq("B"), special("[SEP]")],
        "special_tokens": {"[CLS]": cls, "[SEP]": sep},
    }
    (out / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    return out


@pytest.mark.parametrize("aggregate", ["max", "mean"])
def test_an_xlmr_style_template_has_four_special_tokens(xlmr_dir, query, passages, aggregate) -> None:
    ref = Reference(xlmr_dir, MAX_LENGTH, xlmr=True)
    ce = load(xlmr_dir, long_documents="windows", aggregate=aggregate, window_stride=20)
    assert ce.pair_special_tokens == 4
    assert ce.window_width(query) == MAX_LENGTH - len(ref.tok.encode(query, add_special_tokens=False).ids) - 4
    ours = ce.score(query, passages)
    for i, p in enumerate(passages):
        assert ours[i] == pytest.approx(ref.score(query, p, 20, 8, aggregate)[0], abs=2e-4)
    for p, windows in zip(passages, ce.encode_windows(query, passages)):
        assert windows == [(list(i), list(t)) for i, t in ref.windows(query, p, 20, 8)[0]]


def test_the_cache_tells_window_settings_apart(small_cross_encoder_dir, query, passages) -> None:
    cache = ScoreCache(1000)
    plain = load(small_cross_encoder_dir, cache=cache)
    a = load(small_cross_encoder_dir, cache=cache, long_documents="windows")
    b = load(small_cross_encoder_dir, cache=cache, long_documents="windows", aggregate="mean")
    c = load(small_cross_encoder_dir, cache=cache, long_documents="windows", window_stride=9)
    d = load(small_cross_encoder_dir, cache=cache, long_documents="windows", max_windows=2)
    fps = {e.fingerprint for e in (plain, a, b, c, d)}
    assert len(fps) == 5
    assert plain.fingerprint == plain.sha256 and a.sha256 == plain.sha256
    for enc in (plain, a, b, c, d):
        cache.reset_counters()
        first = enc.score(query, passages)
        assert cache.misses == len(passages) and cache.hits == 0
        np.testing.assert_array_equal(enc.score(query, passages), first)
        assert cache.hits == len(passages)
        fresh = load(small_cross_encoder_dir, **{k: getattr(enc, k) for k in ("long_documents", "max_windows", "aggregate", "window_stride")})
        np.testing.assert_array_equal(fresh.score(query, passages), first)
    assert not np.array_equal(plain.score(query, passages), a.score(query, passages))


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"long_documents": "chunk"}, "long_documents"),
        ({"aggregate": "median"}, "aggregate"),
        ({"max_windows": 0}, "max_windows"),
        ({"window_stride": 0}, "window_stride"),
        ({"window_stride": -3}, "window_stride"),
    ],
)
def test_bad_window_options_name_the_argument(small_cross_encoder_dir, kw, name) -> None:
    with pytest.raises(ValueError, match=name):
        load(small_cross_encoder_dir, **kw)


def test_the_options_are_visible(small_cross_encoder_dir) -> None:
    ce = load(small_cross_encoder_dir, long_documents="windows", window_stride=12, max_windows=3, aggregate="sum")
    assert (ce.long_documents, ce.window_stride, ce.max_windows, ce.aggregate) == ("windows", 12, 3, "sum")
    assert "windows" in repr(ce) and ce.pair_special_tokens == 3
    plain = load(small_cross_encoder_dir)
    assert (plain.long_documents, plain.window_stride, plain.max_windows, plain.aggregate) == ("truncate", None, 8, "max")
