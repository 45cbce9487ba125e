"""Request and response bodies of the rerank HTTP service.

Two wire formats are served:

* ``POST /v1/rerank`` follows Cohere's rerank API (v1), so Cohere clients and OpenSearch
  ml-commons' built-in ``connector.pre_process.cohere.rerank`` /
  ``connector.post_process.cohere.rerank`` functions work unchanged.
* ``POST /rerank`` follows Hugging Face text-embeddings-inference (TEI).

The request models carry the per-request document limit in their schema (``maxItems``), so
they are built per application by :func:`request_models`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from lrt_rerank.inputs import check_text

SCORES_DOC = (
    "By default a score is the calibrated probability that the document is relevant, in [0, 1]: "
    "sigmoid(a * logit + b) of the cross-encoder's logit, with (a, b) fitted on a tuning split and "
    "recorded in the model card's `calibration` (`GET /v1/models` shows them; a card without one "
    "gives the logistic sigmoid of the logit, uncalibrated). Send `raw_scores: true` to get the raw "
    "logit instead (any real number). Both orders are identical; ties keep input order. With "
    "`first_stage_order` the order follows the interpolated value (see that field) while a default "
    "score stays the calibrated probability of the model's own logit, so it need not decrease down "
    "the list; `raw_scores` then returns the interpolated value that sets the order."
)

FIRST_STAGE_ORDER_DOC = (
    "Extension: the documents are in first-stage order, best first (as an OpenSearch rerank "
    "processor sends them). The results are then ordered by the model card's interpolation with that "
    "order: logit + w * z(-log position) (lrt_rerank.interpolation; w = 0 for models without one). "
    "Default scores stay the calibrated probability of the logit; raw scores are the interpolated value."
)


LONG_DOCUMENTS_DOC = (
    "Extension: how a document longer than the model's window is read. `truncate` (the server's default "
    "unless `serve --long-documents` says otherwise) cuts it; `windows` scores windows of its tokens and "
    "aggregates them (see `aggregate`). See docs/long-documents.md."
)


class LongDocumentFields(BaseModel):
    """Request fields that choose how long documents are read (all optional: the server's defaults)."""

    long_documents: Literal["truncate", "windows"] | None = Field(default=None, description=LONG_DOCUMENTS_DOC)
    window_stride: int | None = Field(
        default=None, ge=1, description="Extension: tokens between window starts (default: half a window)."
    )
    max_windows: int | None = Field(
        default=None, ge=1, le=64, description="Extension: most windows scored per document (default 8)."
    )
    aggregate: Literal["max", "mean", "sum", "first"] | None = Field(
        default=None, description="Extension: how window scores make a document's score (default `max`)."
    )


FIRST_STAGE_SCORES_DOC = (
    "Extension: the documents' first-stage scores, for a service started with `serve --fusion F` (a tuned "
    "fusion of `lrt-rerank tune`, docs/tuned-fusion.md). The documents are then taken to be in first-stage "
    "order, best first, and ordered by the fusion (its re-ranker weight applied to the model's logit). "
    "A service without a fusion answers 422."
)


class FirstStageScores(BaseModel):
    """Each document's first-stage signals, in the order of the request's documents (one value each)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    bm25: list[float] = Field(
        description="BM25 score of each document; a document BM25 did not retrieve gets BM25's lowest retrieved score."
    )
    dense: list[float] = Field(
        description="Dense (bi-encoder cosine) score of each document; one dense did not retrieve gets dense's lowest retrieved score."
    )
    bm25_rank: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None,
        description="Rank (1 = best) of each document in BM25's top 100, 0 when not in it; needed by a fusion whose RRF k "
        "is not 60.",
    )
    dense_rank: list[Annotated[int, Field(ge=0)]] | None = Field(default=None, description="The same for dense.")
    bm25_range: tuple[float, float] | None = Field(
        default=None,
        description="(lowest, highest) BM25 score of the retrieved pool (its top 200), the range of a `minmax` fusion; "
        "default: the range of the documents sent.",
    )
    dense_range: tuple[float, float] | None = Field(default=None, description="The same for dense.")


class RerankMeta(BaseModel):
    """What was read of the documents (Cohere clients ignore unknown `meta` fields)."""

    long_documents: str = Field(description="`truncate` or `windows`: how long documents were read.")
    documents_truncated: int = Field(description="Documents with tokens that no scored window read.")
    documents_windowed: int = Field(description="Documents scored as more than one window.")
    tokens_dropped: int = Field(description="Document tokens, over all documents, that no scored window read.")
    windows_scored: int = Field(description="Windows (model pairs) scored, over all documents.")
    windows_dropped: int = Field(description="Windows not scored because of `max_windows`.")


def _encodable(text: str) -> str:
    return check_text("text", text)


Text = Annotated[str, AfterValidator(_encodable)]
"""A request string. JSON can carry lone surrogates (an unpaired \\ud800-\\udfff escape), which have no
UTF-8 encoding and cannot be tokenized: such a string is a 422 naming the field."""


class CohereDocument(BaseModel):
    """A document given as an object; only `text` is read, other fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    text: Text = Field(description="The document text.")


class CohereResultDocument(BaseModel):
    text: str = Field(description="The document text, as sent.")


class CohereResult(BaseModel):
    index: int = Field(description="Position of the document in the request's `documents`.")
    relevance_score: float = Field(description="Relevance score, always a JSON float. " + SCORES_DOC)
    document: CohereResultDocument | None = Field(
        default=None, description="The document, present only when `return_documents` is true."
    )


class CohereRerankResponse(BaseModel):
    id: str = Field(description="A unique id for this response.")
    results: list[CohereResult] = Field(
        description="Documents best first: by `relevance_score`, descending, unless `first_stage_order` was sent "
        "(then by the interpolated score)."
    )
    meta: RerankMeta | None = Field(default=None, description="What was read of the documents.")


class ErrorResponse(BaseModel):
    detail: str = Field(description="What went wrong.")


class HealthResponse(BaseModel):
    status: Literal["ok", "loading", "failed"] = Field(description="`ok` once the model is loaded.")
    error: str | None = Field(default=None, description="Why loading the model failed (status `failed` only).")


class ModelCalibration(BaseModel):
    formula: str = Field(description="How a default score is made from the model's logit.")
    a: float = Field(description="Slope of the logit in the formula.")
    b: float = Field(description="Intercept in the formula.")
    calibrated: bool = Field(description="True when (a, b) come from a fit recorded in the card, not a bare sigmoid.")
    source: str = Field(description="Where (a, b) come from.")
    fitted_on: str | None = Field(default=None, description="dataset/split of the fit, when calibrated.")


class ModelObject(BaseModel):
    id: str = Field(description="The model's name (its card's `name`, else its directory's).")
    object: Literal["model"] = "model"
    kind: str = Field(description="The card's `kind`: `cross-encoder`, or `late-interaction` for a ColBERT.")
    sha256: str = Field(description="sha256 of the model's ONNX graph.")
    card: dict[str, Any] = Field(description="The whole model card (card.json).")
    calibration: ModelCalibration | None = Field(
        default=None, description="The score calibration in use (none for a late-interaction model: its scores are MaxSim sums)."
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject] = Field(description="The served model (one).")


class TeiResult(BaseModel):
    index: int = Field(description="Position of the text in the request's `texts`.")
    score: float = Field(description="Relevance score, always a JSON float. " + SCORES_DOC)
    text: str | None = Field(default=None, description="The text, present only when `return_text` is true.")


class CohereRerankRequestBase(LongDocumentFields):
    model_config = ConfigDict(extra="ignore")

    query: Text = Field(description="The search query.")
    documents: list[Text | CohereDocument]
    top_n: int | None = Field(
        default=None, ge=1, description="Return only the `top_n` best documents (all when absent)."
    )
    return_documents: bool = Field(default=False, description="Echo each document's text in the results.")
    model: str | None = Field(
        default=None,
        description="Accepted for compatibility with Cohere clients and ignored: the service serves one model.",
    )
    raw_scores: bool = Field(
        default=False, description="Extension to Cohere's API: return raw logits instead of calibrated probabilities."
    )
    first_stage_order: bool = Field(default=False, description=FIRST_STAGE_ORDER_DOC)
    first_stage_scores: FirstStageScores | None = Field(default=None, description=FIRST_STAGE_SCORES_DOC)
    max_tokens_per_doc: int | None = Field(
        default=None,
        ge=1,
        description="As in Cohere's API: read at most this many tokens of each document (then truncation or "
        "windows apply as usual).",
    )


class TeiRerankRequestBase(LongDocumentFields):
    model_config = ConfigDict(extra="ignore")

    query: Text = Field(description="The search query.")
    texts: list[Text]
    raw_scores: bool = Field(default=False, description="Return raw logits instead of calibrated probabilities.")
    first_stage_order: bool = Field(default=False, description=FIRST_STAGE_ORDER_DOC)
    first_stage_scores: FirstStageScores | None = Field(default=None, description=FIRST_STAGE_SCORES_DOC)
    return_text: bool = Field(default=False, description="Echo each text in the results.")
    truncate: bool | None = Field(
        default=None,
        description=(
            "As in TEI: `false` answers 413 when a text has tokens that would not be read (longer than the "
            "model's window, or than all its scored windows); `true` or absent reads what fits (the server "
            "truncates, or scores windows with `long_documents: windows`)."
        ),
    )


@dataclass(frozen=True)
class RequestModels:
    cohere: type[CohereRerankRequestBase]
    tei: type[TeiRerankRequestBase]


def request_models(max_documents: int) -> RequestModels:
    """Request models whose document lists are limited to ``max_documents`` items."""
    limit_doc = f"At most {max_documents} per request; an empty list is answered with no results."

    class CohereRerankRequest(CohereRerankRequestBase):
        documents: list[Text | CohereDocument] = Field(
            max_length=max_documents,
            description="Documents to rank: strings, or objects with a `text` field. " + limit_doc,
        )

    class TeiRerankRequest(TeiRerankRequestBase):
        texts: list[Text] = Field(max_length=max_documents, description="Texts to rank. " + limit_doc)

    return RequestModels(cohere=CohereRerankRequest, tei=TeiRerankRequest)
