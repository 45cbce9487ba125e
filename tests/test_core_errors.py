"""Bad model directories raise Python exceptions that name the file and the problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from safetensors.numpy import save_file

from lrt_rerank import BiEncoder, CrossEncoder, ModelError
from lrt_rerank.models.checkpoint import BertConfig
from lrt_rerank.models.convert import build_bert_onnx


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model directory not found"):
        CrossEncoder.load(tmp_path / "nope")


def test_missing_card(small_cross_encoder_dir: Path, tmp_path: Path) -> None:
    d = copy_model(small_cross_encoder_dir, tmp_path / "m")
    (d / "card.json").unlink()
    with pytest.raises(ModelError, match=r"card\.json: model card not found"):
        CrossEncoder.load(d)


@pytest.mark.parametrize(
    "card, message",
    [
        ("{not json", "not valid JSON"),
        ('{"kind": "llm", "max_length": 64}', "field 'kind'"),
        ('{"kind": "cross-encoder", "max_length": "long"}', "field 'max_length'"),
    ],
)
def test_bad_card(small_cross_encoder_dir: Path, tmp_path: Path, card: str, message: str) -> None:
    d = copy_model(small_cross_encoder_dir, tmp_path / "m")
    (d / "card.json").write_text(card)
    with pytest.raises(ModelError, match=message):
        CrossEncoder.load(d)


def test_wrong_kind(bi_encoder_dir: Path) -> None:
    with pytest.raises(ModelError, match="bi-encoder model, expected a cross-encoder"):
        CrossEncoder.load(bi_encoder_dir)


def test_missing_model_file(small_cross_encoder_dir: Path, tmp_path: Path) -> None:
    d = copy_model(small_cross_encoder_dir, tmp_path / "m")
    (d / "model.onnx").unlink()
    with pytest.raises(ModelError, match=r"model\.onnx: model file not found"):
        CrossEncoder.load(d)


def test_truncated_model_file(small_cross_encoder_dir: Path, tmp_path: Path) -> None:
    d = copy_model(small_cross_encoder_dir, tmp_path / "m")
    data = (d / "model.onnx").read_bytes()
    (d / "model.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match=r"model\.onnx: not a loadable ONNX model"):
        CrossEncoder.load(d)


def test_non_onnx_model_file(small_cross_encoder_dir: Path, tmp_path: Path) -> None:
    d = copy_model(small_cross_encoder_dir, tmp_path / "m")
    (d / "model.onnx").write_text("this is not a protobuf\n" * 100)
    with pytest.raises(ModelError, match=r"model\.onnx"):
        CrossEncoder.load(d)
    (d / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="model file is empty"):
        CrossEncoder.load(d)


def test_bad_tokenizer_file(small_cross_encoder_dir: Path, tmp_path: Path) -> None:
    d = copy_model(small_cross_encoder_dir, tmp_path / "m")
    (d / "tokenizer.json").write_text('{"version": "1.0", "model": 42}')
    with pytest.raises(ModelError, match=r"tokenizer\.json: not a valid tokenizer\.json"):
        CrossEncoder.load(d)
    (d / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match=r"tokenizer\.json: tokenizer file not found"):
        CrossEncoder.load(d)


def tiny_bert(tmp_path: Path, vocab: int, max_position: int) -> tuple[Path, BertConfig]:
    rng = np.random.default_rng(0)
    h, inter = 16, 32
    w = {
        "embeddings.word_embeddings.weight": rng.normal(size=(vocab, h)),
        "embeddings.position_embeddings.weight": rng.normal(size=(max_position, h)),
        "embeddings.token_type_embeddings.weight": rng.normal(size=(2, h)),
        "embeddings.LayerNorm.weight": np.ones(h),
        "embeddings.LayerNorm.bias": np.zeros(h),
    }
    p = "encoder.layer.0"
    for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
        w[f"{p}.{name}.weight"] = rng.normal(size=(h, h))
        w[f"{p}.{name}.bias"] = np.zeros(h)
    w[f"{p}.intermediate.dense.weight"] = rng.normal(size=(inter, h))
    w[f"{p}.intermediate.dense.bias"] = np.zeros(inter)
    w[f"{p}.output.dense.weight"] = rng.normal(size=(h, inter))
    w[f"{p}.output.dense.bias"] = np.zeros(h)
    for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
        w[f"{p}.{ln}.weight"] = np.ones(h)
        w[f"{p}.{ln}.bias"] = np.zeros(h)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.astype(np.float32) for k, v in w.items()}, str(path))
    return path, BertConfig(vocab, h, 1, 2, inter, max_position, 1e-12)


def test_tokenizer_that_does_not_fit_the_model(small_cross_encoder_dir: Path, tmp_path: Path) -> None:
    """A 30,522-token tokenizer with a model whose embedding table has 1,000 rows."""
    weights, config = tiny_bert(tmp_path, vocab=1000, max_position=128)
    d = copy_model(small_cross_encoder_dir, tmp_path / "m")
    onnx.save(build_bert_onnx(weights, config, "cross-encoder"), str(d / "model.onnx"))
    with pytest.raises(ModelError, match=r"tokenizer\.json: does not fit .*model\.onnx \(vocabulary of 30522"):
        CrossEncoder.load(d)


def test_max_length_beyond_position_embeddings(small_cross_encoder_dir: Path, tmp_path: Path) -> None:
    weights, config = tiny_bert(tmp_path, vocab=30522, max_position=32)
    d = copy_model(small_cross_encoder_dir, tmp_path / "m")
    onnx.save(build_bert_onnx(weights, config, "cross-encoder"), str(d / "model.onnx"))
    with pytest.raises(ModelError, match="max_length 64"):
        CrossEncoder.load(d)
    assert CrossEncoder.load(d, max_length=32).score("q", ["p"]).shape == (1,)


def test_graph_without_expected_inputs(small_cross_encoder_dir: Path, tmp_path: Path) -> None:
    d = copy_model(small_cross_encoder_dir, tmp_path / "m")
    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["b", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3])
    graph = helper.make_graph([helper.make_node("Identity", ["pixels"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(d / "model.onnx"))
    with pytest.raises(ModelError, match="graph input 'pixels' is not one of input_ids"):
        CrossEncoder.load(d)


def test_cross_encoder_graph_loaded_as_bi_encoder_output_check(small_cross_encoder_dir: Path, tmp_path: Path) -> None:
    d = copy_model(small_cross_encoder_dir, tmp_path / "m")
    card = json.loads((d / "card.json").read_text())
    card["kind"] = "bi-encoder"
    card["pooling"] = "mean"
    (d / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="a bi-encoder must output"):
        BiEncoder.load(d)


def test_invalid_numbers(small_cross_encoder_dir: Path) -> None:
    from lrt_rerank import _core
    from lrt_rerank.models.store import file_sha256

    fingerprint = file_sha256(small_cross_encoder_dir / "model.onnx")
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        _core.CrossEncoderCore(str(small_cross_encoder_dir), 64, fingerprint, batch_size=0)
    with pytest.raises(ValueError, match="max_length must be at least 4"):
        CrossEncoder.load(small_cross_encoder_dir, max_length=2)
