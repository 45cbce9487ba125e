"""Late interaction: ColBERT snapshots in PyLate's and colbert-ai's layouts, imported and scored by the engine,
checked against PyLate (its own encode and MaxSim) and against torch for colbert-ai; bad inputs name the file.

The models are tiny random BERTs (2 layers, hidden 32) made here with transformers; the PyLate side runs
in a subprocess (tests/pylate_reference.py: PyLate pins an older sentence-transformers than the train extra's).
"""

from __future__ import annotations

import json
import os
import shutil
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lrt_rerank
from lrt_rerank import ModelError
from lrt_rerank.models.importers.colbert import import_colbert, is_colbert_snapshot
from train_extra import require

pytestmark = pytest.mark.train
torch = require("torch")

HERE = Path(__file__).resolve().parent
PYLATE_PATH = Path(os.environ.get("LRT_PYLATE_PATH", Path(sys.prefix) / "pylate-reference"))
WORDS = (
    "vitamin d and bone health the of a is in to fracture calcium sun light risk older adults statins "
    "cholesterol heart disease coffee blood pressure diet fibre cancer study trial patients women men"
).split()
QUERY = "vitamin d and bone fracture risk"
DOCUMENTS = [
    "Vitamin D supplements reduced fracture risk in older women.",
    "Coffee intake and blood pressure: a trial!",
    "Statins lower cholesterol.",
    "Sun light, calcium and bone health; " * 12,  # longer than document_length: truncated
    "diet",
    "",
    "   padded   with spaces   ",
]


def bert_snapshot(path: Path, vocab_extra: int = 8) -> Path:
    """A tiny random BERT with a WordPiece tokenizer that knows the punctuation (as hub BERTs do)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast
    from tokenizers import Tokenizer, models as tm, normalizers, pre_tokenizers, processors

    chars = string.ascii_lowercase + string.digits
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]", *chars, *string.punctuation,
              *(f"##{c}" for c in chars), *WORDS]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    tok = Tokenizer(tm.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab) + vocab_extra, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, initializer_range=0.3)
    model = BertModel(config).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    fast.save_pretrained(str(path))
    return path


def pylate(*args: str) -> None:
    if not (PYLATE_PATH / "pylate").is_dir():
        pytest.fail(f"{PYLATE_PATH}: PyLate is not installed there (./dev.sh setup test,train,all installs it)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PYLATE_PATH), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(HERE / "pylate_reference.py"), *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def pylate_colbert(tmp: Path, **settings: Any) -> tuple[Path, dict[str, np.ndarray]]:
    """A PyLate ColBERT saved in PyLate's layout, and PyLate's encodings and scores of QUERY, DOCUMENTS."""
    bert = bert_snapshot(tmp / "bert")
    job = {"hidden": 32, "dim": 8, "query_length": 16, "document_length": 24, **settings, "query": QUERY, "documents": DOCUMENTS}
    (tmp / "job.json").write_text(json.dumps(job))
    pylate(str(bert), str(tmp / "pylate"), str(tmp / "job.json"), str(tmp / "ref.npz"))
    return tmp / "pylate", dict(np.load(tmp / "ref.npz"))


def assert_close(ours: np.ndarray, ref: np.ndarray) -> None:
    spread = float(np.ptp(ref)) or 1.0
    assert np.max(np.abs(ours - ref)) <= 1e-4 * spread, (ours, ref)


@pytest.fixture(scope="module")
def default_pylate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    tmp = tmp_path_factory.mktemp("pylate")
    snapshot, ref = pylate_colbert(tmp)
    return snapshot, import_colbert(snapshot, tmp / "imported"), ref


def test_pylate_snapshot_is_recognised_and_carded(default_pylate: tuple[Path, Path, dict[str, np.ndarray]]) -> None:
    snapshot, out, _ = default_pylate
    assert is_colbert_snapshot(snapshot)
    card = json.loads((out / "card.json").read_text())
    assert card["kind"] == "late-interaction" and card["layout"] == "pylate"
    assert (card["query_prefix"], card["document_prefix"], card["query_length"], card["document_length"]) == ("[Q] ", "[D] ", 16, 24)
    assert card["query_expansion"] is True and card["attend_expansion"] is False and card["dim"] == 8
    assert card["mask_token"] == "[MASK]" and len(card["skiplist_ids"]) == len(string.punctuation)


def test_pylate_parity_scores_and_token_matrices(default_pylate: tuple[Path, Path, dict[str, np.ndarray]]) -> None:
    _, out, ref = default_pylate
    model = lrt_rerank.ColBERT.load(out)
    scores = model.score(QUERY, DOCUMENTS)
    assert scores.dtype == np.float32 and scores.shape == (len(DOCUMENTS),)
    assert_close(scores, ref["scores"])
    q = model.encode_query(QUERY)
    assert q.shape == (16, 8)  # expanded to query_length with [MASK]
    np.testing.assert_allclose(q, ref["query"], atol=1e-5)
    encoded = model.encode_documents(DOCUMENTS)
    assert encoded.lengths == ref["lengths"].tolist()  # skiplist and padding dropped, truncated at 24
    np.testing.assert_allclose(encoded.data, ref["documents"], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(encoded.data, axis=1), 1.0, atol=1e-5)
    assert_close(model.score_encoded(QUERY, encoded), ref["scores"])
    assert_close(model.score_encoded(q, encoded.matrices()), ref["scores"])


@pytest.mark.parametrize(
    "settings",
    [
        {"attend_to_expansion_tokens": True},
        {"do_query_expansion": False},
        {"query_prefix": "", "document_prefix": ""},
        {"query_prefix": "[unused0]", "document_prefix": "[unused1]", "query_length": 8, "document_length": 12},
        {"skiplist_words": [",", "."]},
    ],
    ids=["attended-expansion", "no-expansion", "no-prefixes", "markers-and-lengths", "skiplist"],
)
def test_pylate_parity_under_each_setting(settings: dict[str, Any], tmp_path: Path) -> None:
    snapshot, ref = pylate_colbert(tmp_path, **settings)
    model = lrt_rerank.ColBERT.load(import_colbert(snapshot, tmp_path / "imported"))
    assert_close(model.score(QUERY, DOCUMENTS), ref["scores"])
    assert model.encode_documents(DOCUMENTS).lengths == ref["lengths"].tolist()
    assert model.encode_query(QUERY).shape == ref["query"].shape


def imported_stanford_colbert(tmp: Path) -> Path:
    """A colbert-ai snapshot (random weights) made under ``tmp`` and imported into ``tmp/model``."""
    snapshot, _, _ = stanford_snapshot(tmp)
    return import_colbert(snapshot, tmp / "model")


def stanford_snapshot(tmp: Path, metadata: dict[str, Any] | None = None, dim: int = 8) -> tuple[Path, Any, Any]:
    """A colbert-ai checkpoint: HF_ColBERT config, `bert.*` + `linear.weight` in model.safetensors, artifact.metadata."""
    from safetensors.torch import save_file

    src = bert_snapshot(tmp / "bert", vocab_extra=0)
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(src)).eval()
    torch.manual_seed(1)
    linear = torch.nn.Linear(32, dim, bias=False)
    torch.nn.init.normal_(linear.weight, std=0.5)
    out = tmp / "colbert-ai"
    shutil.copytree(src, out)
    (out / "model.safetensors").unlink()
    tensors = {f"bert.{k}": v.contiguous() for k, v in bert.state_dict().items()}
    tensors["linear.weight"] = linear.weight.detach().contiguous()
    save_file(tensors, str(out / "model.safetensors"))
    config = json.loads((out / "config.json").read_text())
    config["architectures"] = ["HF_ColBERT"]
    (out / "config.json").write_text(json.dumps(config))
    meta = {"query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_maxlen": 12, "doc_maxlen": 20,
            "attend_to_mask_tokens": False, "mask_punctuation": True, "dim": dim, "similarity": "cosine"}
    if metadata is not None:
        meta.update(metadata)
    (out / "artifact.metadata").write_text(json.dumps(meta))
    return out, bert, linear


def torch_colbert_scores(tmp: Path, bert: Any, linear: Any, query: str, documents: list[str], attend: bool) -> np.ndarray:
    """colbert-ai's encoding written out in torch: [CLS] [unused0] query [SEP] [MASK]... (12), [CLS] [unused1] doc (20)."""
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(str(tmp / "bert"))
    punct = {tok.convert_tokens_to_ids(s) for s in string.punctuation}

    def encode(text: str, marker: str, length: int, expand: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ids = tok(text.strip(), truncation=True, max_length=length - 1)["input_ids"]
        ids = ids[:1] + [tok.convert_tokens_to_ids(marker)] + ids[1:]
        mask = [1] * len(ids)
        if expand:
            mask += [1 if attend else 0] * (length - len(ids))
            ids += [tok.mask_token_id] * (length - len(ids))
        with torch.no_grad():
            states = bert(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([mask])).last_hidden_state[0]
            return torch.nn.functional.normalize(linear(states), dim=-1), torch.tensor(ids)

    q, _ = encode(query, "[unused0]", 12, True)
    out = []
    for d in documents:
        emb, ids = encode(d, "[unused1]", 20, False)
        keep = torch.tensor([int(i) not in punct for i in ids])
        out.append(float((q @ emb[keep].T).max(dim=1).values.sum()))
    return np.array(out, dtype=np.float32)


@pytest.mark.parametrize("attend", [False, True])
def test_colbert_ai_parity_with_torch(attend: bool, tmp_path: Path) -> None:
    snapshot, bert, linear = stanford_snapshot(tmp_path, {"attend_to_mask_tokens": attend})
    assert is_colbert_snapshot(snapshot)
    model = lrt_rerank.ColBERT.load(import_colbert(snapshot, tmp_path / "imported"))
    card = model.card
    assert (card["layout"], card["query_prefix"], card["query_length"], card["document_length"]) == ("colbert-ai", "[unused0]", 12, 20)
    ref = torch_colbert_scores(tmp_path, bert, linear, QUERY, DOCUMENTS, attend)
    assert_close(model.score(QUERY, DOCUMENTS), ref)


def test_load_imports_a_snapshot_folder_once(default_pylate: tuple[Path, Path, dict[str, np.ndarray]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot, _, ref = default_pylate
    monkeypatch.setenv("LRT_RERANK_HOME", str(tmp_path / "home"))
    first = lrt_rerank.ColBERT.load(snapshot)
    assert first.model_dir.parent == tmp_path / "home" / "models" / "imported"
    assert lrt_rerank.ColBERT.load(snapshot).model_dir == first.model_dir
    assert_close(first.score(QUERY, DOCUMENTS), ref["scores"])


# ---- bad inputs: each error names the file that is wrong


def test_a_pylate_colbert_without_its_dense_layer(default_pylate: tuple[Path, Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    snapshot = shutil.copytree(default_pylate[0], tmp_path / "no-dense")
    modules = json.loads((snapshot / "modules.json").read_text())
    (snapshot / "modules.json").write_text(json.dumps([m for m in modules if "Dense" not in m["type"]]))
    with pytest.raises(ModelError, match=r"modules\.json: lists no Dense module"):
        import_colbert(snapshot, tmp_path / "out")


def test_a_projection_of_the_wrong_size(default_pylate: tuple[Path, Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    snapshot = shutil.copytree(default_pylate[0], tmp_path / "wrong-size")
    weights = snapshot / "1_Dense" / "model.safetensors"
    save_file({"linear.weight": np.zeros((8, 48), np.float32)}, str(weights))
    config = json.loads((snapshot / "1_Dense" / "config.json").read_text())
    (snapshot / "1_Dense" / "config.json").write_text(json.dumps({**config, "in_features": 48}))
    with pytest.raises(ModelError, match=rf"{weights}: the projection takes 48 features, the encoder gives 32"):
        import_colbert(snapshot, tmp_path / "out")
    (snapshot / "1_Dense" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=rf"{weights}: 'linear.weight' has shape \[8, 48\]"):
        import_colbert(snapshot, tmp_path / "out")


def test_a_colbert_ai_checkpoint_without_metadata_or_projection(tmp_path: Path) -> None:
    snapshot, _, _ = stanford_snapshot(tmp_path)
    (snapshot / "artifact.metadata").unlink()
    with pytest.raises(ModelError, match=r"artifact\.metadata: not found"):
        import_colbert(snapshot, tmp_path / "out")
    (snapshot / "artifact.metadata").write_text(json.dumps({"dim": 16}))
    with pytest.raises(ModelError, match=r"model\.safetensors: 'linear.weight' has shape \[8, 32\], .*says dim 16"):
        import_colbert(snapshot, tmp_path / "out")
    (snapshot / "artifact.metadata").write_text("{not json")
    with pytest.raises(ModelError, match=r"artifact\.metadata: cannot read JSON"):
        import_colbert(snapshot, tmp_path / "out")


def test_a_pylate_config_without_its_settings_file(default_pylate: tuple[Path, Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    snapshot = shutil.copytree(default_pylate[0], tmp_path / "no-settings")
    (snapshot / "config_sentence_transformers.json").unlink()
    with pytest.raises(ModelError, match=r"config_sentence_transformers\.json: not found"):
        import_colbert(snapshot, tmp_path / "out")


def test_a_card_of_another_kind_or_a_bad_field(default_pylate: tuple[Path, Path, dict[str, np.ndarray]], tmp_path: Path, small_bi_encoder_dir: Path) -> None:
    with pytest.raises(ModelError, match=r"card\.json: this is a bi-encoder model, expected a late-interaction"):
        lrt_rerank.ColBERT.load(small_bi_encoder_dir)
    broken = shutil.copytree(default_pylate[1], tmp_path / "bad-card")
    card = json.loads((broken / "card.json").read_text())
    (broken / "card.json").write_text(json.dumps({**card, "query_expansion": "yes"}))
    with pytest.raises(ModelError, match=r"card\.json: field 'query_expansion' must be true or false"):
        lrt_rerank.ColBERT.load(broken)
