"""The snapshot's tokenizer as a ``tokenizer.json`` without stored padding/truncation (the engine sets its own).

``tokenizer.json`` is copied; ``vocab.txt`` (WordPiece) is turned into one with the ``tokenizers``
library, honouring ``tokenizer_config.json`` (``do_lower_case``, ``strip_accents``,
``tokenize_chinese_chars``, special tokens); ``sentencepiece.bpe.model`` is converted by
transformers (the [train] extra) with the sentencepiece package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from lrt_rerank import _core
from lrt_rerank.jsonfile import read_json
from lrt_rerank.models.store import write_clean_tokenizer

TOKENIZER_CONFIG = "tokenizer_config.json"


def _token(config: dict[str, Any], key: str, default: str) -> str:
    """A special token as tokenizer_config.json stores it: a string or an AddedToken object."""
    value = config.get(key, default)
    return str(value.get("content", default)) if isinstance(value, dict) else str(value)


def _wordpiece(vocab: Path) -> Tokenizer:
    """What transformers' BertTokenizerFast builds from vocab.txt (its BertConverter)."""
    config_path = vocab.parent / TOKENIZER_CONFIG
    config = read_json(config_path) if config_path.is_file() else {}
    cls, sep, unk, pad, mask = (
        _token(config, f"{name}_token", f"[{name.upper()}]") for name in ("cls", "sep", "unk", "pad", "mask")
    )
    try:
        tokenizer = Tokenizer(models.WordPiece.from_file(str(vocab), unk_token=unk, max_input_chars_per_word=100))
    except Exception as exc:  # tokenizers raises a bare Exception for a bad file
        raise _core.ModelError(f"{vocab}: not a readable WordPiece vocabulary: {exc}") from exc
    missing = [t for t in (cls, sep, unk) if tokenizer.token_to_id(t) is None]
    if missing:
        raise _core.ModelError(f"{vocab}: special tokens {missing} are not in the vocabulary")
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
        strip_accents=config.get("strip_accents"),
        lowercase=bool(config.get("do_lower_case", True)),
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.add_special_tokens([t for t in (pad, unk, cls, sep, mask) if tokenizer.token_to_id(t) is not None])
    return tokenizer


def _sentencepiece(model: Path) -> Tokenizer:
    missing = [name for name in ("transformers", "sentencepiece") if importlib.util.find_spec(name) is None]
    if missing:
        raise _core.ModelError(
            f"{model}: converting a sentencepiece model without tokenizer.json needs {' and '.join(missing)}: "
            "pip install 'lrt-rerank[train]' sentencepiece"
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model.parent)).backend_tokenizer
    except Exception as exc:  # transformers raises many types (missing sentencepiece/protobuf, bad files)
        raise _core.ModelError(f"{model}: transformers could not convert it to a tokenizer.json: {exc}") from exc


def write_tokenizer(source: Path, dst: Path) -> int:
    """Write ``dst`` (tokenizer.json) from ``source``; return the vocabulary size (added tokens included)."""
    if source.name == "tokenizer.json":
        try:
            write_clean_tokenizer(source, dst)
            tokenizer = Tokenizer.from_file(str(dst))
        except Exception as exc:  # bad JSON, or tokenizers' bare Exception for a bad file
            raise _core.ModelError(f"{source}: not a valid tokenizer.json: {exc}") from exc
    else:
        tokenizer = _wordpiece(source) if source.name == "vocab.txt" else _sentencepiece(source)
        tokenizer.no_padding()
        tokenizer.no_truncation()
        tokenizer.save(str(dst))
    return tokenizer.get_vocab_size(with_added_tokens=True)
