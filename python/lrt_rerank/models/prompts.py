"""Prompt templates that turn a causal LM into a one-logit re-ranker (``models import --template NAME``).

A template is the model card's prompt: a ``prefix`` and a ``suffix`` tokenized on their own, and a
``format`` holding ``{instruction}``, ``{query}`` and ``{document}``, tokenized as one sequence and cut
at its tail so that prefix + format + suffix fit ``max_length`` (the document's tail goes first). The
score is the last token's logit of ``yes`` minus that of ``no``: its sigmoid is P(yes) of the card's
two-way softmax. The card's ``prompt`` field holds all of it; the Rust core formats and tokenizes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lrt_rerank import _core

#: Qwen/Qwen3-Reranker-0.6B / -4B / -8B, as their model card scores pairs.
QWEN3_RERANKER = {
    "prefix": (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
        'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
    ),
    "format": "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}",
    "suffix": "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    "instruction": "Given a web search query, retrieve relevant passages that answer the query",
    "yes": "yes",
    "no": "no",
}
TEMPLATES: dict[str, dict[str, str]] = {"qwen3-reranker": QWEN3_RERANKER}
#: The architectures a template applies to (causal LMs whose next-token logits it reads).
CAUSAL_ARCHITECTURES = ("Qwen3ForCausalLM",)
PLACEHOLDERS = ("{instruction}", "{query}", "{document}")


@dataclass(frozen=True)
class Prompt:
    template: str
    prefix: str
    format: str
    suffix: str
    instruction: str
    yes_token_id: int
    no_token_id: int

    def card(self) -> dict[str, Any]:
        """The card's ``prompt`` field."""
        return asdict(self)

    @classmethod
    def from_card(cls, data: Any, path: Path) -> "Prompt":
        if not isinstance(data, dict):
            raise _core.ModelError(f"{path}: field 'prompt' must be an object")
        try:
            prompt = cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except KeyError as exc:
            raise _core.ModelError(f"{path}: field 'prompt' lacks {exc.args[0]!r}") from exc
        strings = (prompt.template, prompt.prefix, prompt.format, prompt.suffix, prompt.instruction)
        if not all(isinstance(s, str) for s in strings) or not all(p in prompt.format for p in PLACEHOLDERS[1:]):
            raise _core.ModelError(f"{path}: field 'prompt' needs strings and a format with {{query}} and {{document}}")
        return prompt

    def core_args(self) -> tuple[str, str, str, str]:
        """(prefix, format, suffix, instruction) as the Rust core takes them."""
        return self.prefix, self.format, self.suffix, self.instruction


def single_token(tokenizer_path: Path, text: str) -> int:
    """The id of ``text`` if the tokenizer has it as one token (and encodes it so), else a ModelError naming the file."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    token_id = tokenizer.token_to_id(text)
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    if token_id is None or ids != [token_id]:
        raise _core.ModelError(
            f"{tokenizer_path}: {text!r} is not a single token of this tokenizer (it encodes as {ids}); "
            "the template scores the logits of single 'yes' / 'no' tokens"
        )
    return token_id


def make_prompt(name: str, instruction: str | None, architecture: str, config_path: Path, tokenizer_path: Path) -> Prompt:
    """The prompt of template ``name`` for the snapshot whose config.json is ``config_path``."""
    if name not in TEMPLATES:
        raise _core.ModelError(f"{config_path}: template {name!r} is unknown (known: {', '.join(TEMPLATES)})")
    if architecture not in CAUSAL_ARCHITECTURES:
        raise _core.ModelError(
            f"{config_path}: template {name!r} needs a causal LM ({', '.join(CAUSAL_ARCHITECTURES)}); "
            f"this snapshot is a {architecture or 'model without architectures'}"
        )
    spec = TEMPLATES[name]
    return Prompt(
        template=name,
        prefix=spec["prefix"],
        format=spec["format"],
        suffix=spec["suffix"],
        instruction=spec["instruction"] if instruction is None else instruction,
        yes_token_id=single_token(tokenizer_path, spec["yes"]),
        no_token_id=single_token(tokenizer_path, spec["no"]),
    )
