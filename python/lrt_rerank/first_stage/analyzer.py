"""The BM25 analyzer, defined once: bm25s + PyStemmer in the embedded index, the same chain in the OpenSearch mapping.

Text is cut into runs of two or more word characters, lower-cased, stripped of the 33 English stop
words (bm25s's ``en`` list, which is Lucene's ``_english_``) and, by default, stemmed with the
Snowball English stemmer (Porter2: PyStemmer ``english`` in bm25s, Lucene's ``snowball`` filter
with ``language: English`` in OpenSearch).

An index records its analyzer (:meth:`Analyzer.record`: the embedded manifest's ``bm25`` object,
the OpenSearch mapping's ``_meta``). An index that records none was built before stemming was an
option: it is read as ``none``, the unstemmed analyzer it was built with.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from bm25s.stopwords import STOPWORDS_EN

STEMMERS = ("english", "none")
"""Values of ``--stemmer``: Snowball English (Porter2) or no stemming."""
DEFAULT_STEMMER = "english"
STOPWORDS = "en"
"""bm25s's name of the stop-word list (``STOPWORDS_EN``)."""
OPENSEARCH_ANALYZER = "lrt_bm25"
"""The analyzer name the mapping's text fields use."""


@dataclass(frozen=True)
class Analyzer:
    """Stop words (always English) and an optional stemmer; ``stemmer`` is "english" or "none"."""

    stemmer: str = DEFAULT_STEMMER

    def __post_init__(self) -> None:
        if self.stemmer not in STEMMERS:
            raise ValueError(f"--stemmer {self.stemmer}: expected one of {', '.join(STEMMERS)}")

    @classmethod
    def from_record(cls, record: dict[str, Any] | None, source: str) -> Analyzer:
        """The analyzer an index recorded (``stemmer`` null, absent or "none": unstemmed); ``source``
        names the index in the error for a value this version does not know."""
        stemmer = (record or {}).get("stemmer")
        try:
            return cls(stemmer if stemmer is not None else "none")
        except ValueError:
            raise ValueError(f"{source}: records BM25 stemmer {stemmer!r}, expected one of {', '.join(STEMMERS)}") from None

    def record(self) -> dict[str, Any]:
        """What an index stores about its analyzer (the manifest's ``bm25`` keys, the mapping's ``_meta``)."""
        return {"stopwords": STOPWORDS, "stemmer": None if self.stemmer == "none" else self.stemmer}

    def describe(self) -> str:
        """One line for `eval` and `index`: which tokenization BM25 ran."""
        stem = "Snowball English (Porter2) stemming" if self.stemmer == "english" else "no stemming"
        return f"BM25 analyzer: {stem}, {len(STOPWORDS_EN)} English stop words"

    def tokenize(self, texts: str | list[str], return_ids: bool = True) -> Any:
        """``bm25s.tokenize`` with this analyzer (ids + vocabulary, or token lists without ``return_ids``)."""
        import bm25s

        stemmer = _stemmer(self.stemmer) if self.stemmer != "none" else None
        return bm25s.tokenize(texts, stopwords=STOPWORDS, stemmer=stemmer, return_ids=return_ids, show_progress=False)

    def opensearch_analysis(self) -> dict[str, Any]:
        """The index ``settings.analysis`` that defines ``lrt_bm25`` as this analyzer in Lucene."""
        filters: dict[str, Any] = {
            "lrt_stop": {"type": "stop", "stopwords": list(STOPWORDS_EN)},
            "lrt_min_two_chars": {"type": "length", "min": 2},
        }
        chain = ["lowercase", "lrt_stop", "lrt_min_two_chars"]
        if self.stemmer == "english":
            filters["lrt_english_stem"] = {"type": "snowball", "language": "English"}
            chain.append("lrt_english_stem")
        return {
            "tokenizer": {"lrt_word_runs": {"type": "pattern", "pattern": "\\W+", "flags": "UNICODE_CHARACTER_CLASS"}},
            "filter": filters,
            "analyzer": {OPENSEARCH_ANALYZER: {"type": "custom", "tokenizer": "lrt_word_runs", "filter": chain}},
        }


@cache
def _stemmer(name: str) -> Any:
    """One PyStemmer stemmer per language (it keeps a cache of the words it has stemmed)."""
    import Stemmer

    return Stemmer.Stemmer(name)
