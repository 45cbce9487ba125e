"""Embedded indexes cached per corpus, bi-encoder and BM25 analyzer, and the first stage a ``--first-stage`` value names.

``eval``, ``demo``, ``models calibrate`` and the model factory (:mod:`lrt_rerank.train`) open their
first stage here: the embedded index of a dataset's corpus is built once under
``$LRT_RERANK_HOME/indexes`` (``~/.cache/lrt-rerank/indexes``) and reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lrt_rerank.datasets import Dataset
from lrt_rerank.first_stage.analyzer import DEFAULT_STEMMER, Analyzer
from lrt_rerank.first_stage.base import FirstStage
from lrt_rerank.first_stage.embedded import EMBEDDINGS, FORMAT_VERSION, EmbeddedFirstStage, IndexFormatError, embedding_key, read_manifest
from lrt_rerank.models.resolve import dense_model_dirs
from lrt_rerank.models.store import file_sha256, model_home

if TYPE_CHECKING:
    from lrt_rerank.opensearch.connection import ConnectionSettings


def cache_home() -> Path:
    """$LRT_RERANK_HOME, else ~/.cache/lrt-rerank: default models live in models/, cached indexes in indexes/."""
    return model_home().parent


def corpus_digest(dataset: Dataset) -> str:
    """sha256 over the documents as read (id, title, text, in corpus order)."""
    digest = hashlib.sha256()
    for document in dataset.corpus.values():
        for field in (document.id, document.title, document.text):
            digest.update(field.encode("utf-8", "surrogatepass"))
            digest.update(b"\x00")
    return digest.hexdigest()


def cached_index(
    dataset: Dataset,
    progress: bool = True,
    rebuild: bool = False,
    dense_model: str | None = None,
    home: Path | None = None,
    stemmer: str = DEFAULT_STEMMER,
) -> EmbeddedFirstStage:
    """Open the cached embedded index of ``dataset``'s corpus, building it on first use.

    ``dense_model``: see :func:`lrt_rerank.models.dense_model_dir` (default: bge-small); several,
    comma-separated (:func:`~lrt_rerank.models.resolve.dense_model_dirs`): the first is "dense", the
    others further dense signals, and the set is part of the key. ``home``: the
    cache root (default :func:`cache_home`); indexes live in its ``indexes/``. The cache key covers the
    corpus's documents (ids, titles and texts in order, not the file's bytes, so two copies of one corpus
    share an index), the bi-encoder, the index format version and the BM25 analyzer (``stemmer``), so a
    changed corpus, model or analyzer gets a fresh index; one built for another analyzer or another set
    of further dense models lends it the embeddings of each model they share (the same corpus and model
    give the same rows). Builds go to a temporary directory that
    is renamed into place, so an interrupted build never leaves a half index behind.
    """
    analyzer = Analyzer(stemmer)
    model_dir, *extra_dirs = dense_model_dirs(dense_model)
    key_source = "|".join([corpus_digest(dataset), file_sha256(model_dir / "model.onnx"), str(FORMAT_VERSION)])
    key = hashlib.sha256(key_source.encode()).hexdigest()[:16]
    stem = f"corpus-{len(dataset.corpus)}-{key}"
    # The unstemmed index keeps the name it had before the analyzer was an option, and one bi-encoder's
    # the name it had before several were.
    name = stem if analyzer.stemmer == "none" else f"{stem}-{analyzer.stemmer}"
    if extra_dirs:
        extra_key = hashlib.sha256("|".join(file_sha256(d / "model.onnx") for d in extra_dirs).encode()).hexdigest()[:8]
        name = f"{name}-dense{len(extra_dirs) + 1}-{extra_key}"
    target = (home or cache_home()) / "indexes" / name
    if target.is_dir() and not rebuild:
        try:
            return EmbeddedFirstStage.open(target, model_dir=model_dir)
        except IndexFormatError as exc:
            print(f"cached index unusable ({exc}); rebuilding", file=sys.stderr)
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    EmbeddedFirstStage.build(
        dataset.corpus.values(), staging, model_dir=model_dir, progress=progress, stemmer=analyzer.stemmer,
        known_embeddings=_sibling_embeddings(target.parent, stem, len(dataset.corpus)), extra_model_dirs=extra_dirs,
    )
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return EmbeddedFirstStage.open(target, model_dir=model_dir)


def _sibling_embeddings(indexes: Path, stem: str, documents: int) -> dict[str, np.ndarray]:
    """The embeddings of the finished cached indexes of the same corpus and first model (another analyzer
    or other further models), by :func:`~lrt_rerank.first_stage.embedded.embedding_key`."""
    found: dict[str, np.ndarray] = {}
    for candidate in sorted(indexes.glob(f"{stem}*")):
        if ".tmp-" in candidate.name:
            continue
        try:
            manifest = read_manifest(candidate)
        except IndexFormatError:
            continue
        for record, file in [(manifest["dense"], EMBEDDINGS)] + [(r, r["embeddings"]) for r in manifest.get("dense_extra", [])]:
            key = embedding_key(record)
            if key in found:
                continue
            try:
                embeddings = np.load(candidate / file, allow_pickle=False)
            except (OSError, ValueError):
                continue
            if embeddings.ndim == 2 and embeddings.shape[0] == documents:
                found[key] = embeddings.astype(np.float32, copy=False)
    return found


def open_first_stage(
    spec: str,
    dataset: Dataset,
    index: Path | None = None,
    dense_model: str | None = None,
    opensearch_index: str | None = None,
    connection: ConnectionSettings | None = None,
    stemmer: str | None = None,
) -> FirstStage:
    """The first stage ``spec`` names for ``dataset``: "embedded" (the cached index, or the one in
    ``index``, built there if absent) or the http(s) URL of OpenSearch (index ``opensearch_index``,
    default the dataset's name; needs the ``opensearch`` extra), reached with ``connection``'s
    credentials and trust (its URL is ``spec``). ``stemmer``: the BM25 analyzer's, for an index built
    here (default english); an existing index built with another one is refused."""
    stage = _open_first_stage(spec, dataset, index, dense_model, opensearch_index, connection, stemmer or DEFAULT_STEMMER)
    if stemmer is not None and stage.analyzer is not None and stage.analyzer.stemmer != stemmer:
        stage.close()
        raise ValueError(
            f"--stemmer {stemmer}: the first stage's index was built with stemmer {stage.analyzer.stemmer}; "
            "rebuild it or leave --stemmer out"
        )
    return stage


def _open_first_stage(
    spec: str,
    dataset: Dataset,
    index: Path | None,
    dense_model: str | None,
    opensearch_index: str | None,
    connection: ConnectionSettings | None,
    stemmer: str,
) -> FirstStage:
    if spec != "embedded":
        if not spec.startswith(("http://", "https://")):
            raise ValueError(f"--first-stage {spec}: expected 'embedded' or an http(s) URL of OpenSearch")
        from lrt_rerank.extras import require

        require("opensearch", f"--first-stage {spec}")
        from lrt_rerank.first_stage.opensearch import OpenSearchFirstStage

        target = connection.with_url(spec) if connection is not None else spec
        return OpenSearchFirstStage.connect(target, opensearch_index or dataset.name)
    if index is None:
        return cached_index(dataset, dense_model=dense_model, stemmer=stemmer)
    if (index / "manifest.json").is_file():
        return EmbeddedFirstStage.open(index)
    print(f"building index in {index}", file=sys.stderr)
    model_dir, *extra_dirs = dense_model_dirs(dense_model)
    return EmbeddedFirstStage.build(dataset.corpus.values(), index, model_dir=model_dir, stemmer=stemmer, extra_model_dirs=extra_dirs)
