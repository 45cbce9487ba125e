"""The first-stage interface every retrieval back-end implements.

A first stage turns a query into ranked candidates. It offers three systems:

``"bm25"``   lexical BM25 ranking,
``"dense"``  bi-encoder (cosine) ranking,
``"rrf"``    Reciprocal Rank Fusion of the two (the hybrid run the pipeline re-ranks).

A back-end with more than one bi-encoder (``index --dense-model A,B``) names each further one's ranking
``"dense:NAME"`` (:attr:`FirstStage.dense_signals`), and its ``"rrf"`` fuses BM25 with all of them.

Back-ends: :class:`~lrt_rerank.first_stage.embedded.EmbeddedFirstStage` (in-process, an index
directory on disk) and the OpenSearch one (a cluster). A new back-end subclasses
:class:`FirstStage` and implements :meth:`FirstStage.search` and :meth:`FirstStage.get_texts`;
``close`` is optional.

``lrt-rerank eval --first-stage URL`` opens the OpenSearch back-end as
``lrt_rerank.first_stage.opensearch.OpenSearchFirstStage.connect(url, index_name)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from lrt_rerank.first_stage.analyzer import Analyzer

System = Literal["bm25", "dense", "rrf"]
SYSTEMS: tuple[System, ...] = ("bm25", "dense", "rrf")
EXTRA_DENSE = "dense:"
"""Prefix of the system name of a further bi-encoder's ranking, ``dense:NAME``."""

RRF_K = 60
"""The ``k`` of the first stage's RRF, ``sum 1 / (k + rank)``."""
FUSION_DEPTH = 100
"""Candidates taken from each of BM25 and dense before RRF fusion (at least the ``k`` asked for)."""


@dataclass(frozen=True)
class Candidate:
    """One first-stage result: document id, the system's score, and rank (1 = best)."""

    id: str
    score: float
    rank: int


class FirstStage(ABC):
    """Retrieval back-end: ranked candidates for a query, and document texts by id."""

    analyzer: Analyzer | None = None
    """The BM25 analyzer the back-end's index was built with (None where it is not known)."""
    dense_signals: tuple[str, ...] = ("dense",)
    """The dense rankings it can search: ``"dense"``, then ``"dense:NAME"`` for each further bi-encoder."""

    @abstractmethod
    def search(self, query: str, k: int, system: System = "rrf") -> list[Candidate]:
        """Return at most ``k`` candidates of ``system`` for ``query``, best first, ranks 1..n.

        Fewer than ``k`` come back when fewer documents match (BM25 returns only documents
        sharing a term with the query). An empty or whitespace-only query returns ``[]``.
        Raises ``ValueError`` for an unknown ``system``.
        """

    @abstractmethod
    def get_texts(self, ids: Sequence[str]) -> list[str]:
        """Return the text the re-ranker should read for each id, in the order given.

        Raises ``KeyError`` naming the first id that is not in the index.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, deliberately not abstract
        """Release connections or files; the default holds nothing."""

    def __enter__(self) -> FirstStage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_system(system: str) -> System:
    """Validate a system name (one of :data:`SYSTEMS` or ``dense:NAME``), raising ``ValueError`` that lists the valid ones."""
    if system not in SYSTEMS and not (system.startswith(EXTRA_DENSE) and len(system) > len(EXTRA_DENSE)):
        raise ValueError(f"unknown first-stage system {system!r}; expected one of {', '.join(SYSTEMS)}")
    return system  # type: ignore[return-value]


def wants_search(query: str, k: int, system: str, dense_signals: Sequence[str] = ("dense",)) -> bool:
    """Shared argument checks of ``FirstStage.search``: raise ``ValueError`` for an unknown
    system (a ``dense:NAME`` not among the back-end's ``dense_signals``) or ``k < 1``; return False
    when the query is empty or blank (the answer is ``[]``)."""
    check_system(system)
    if system.startswith(EXTRA_DENSE) and system not in dense_signals:
        raise ValueError(f"unknown first-stage system {system!r}; this index has the dense signals {', '.join(dense_signals)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return bool(query.strip())
