"""Which Maven Central artifacts make a node, and resolving them with ``mvn``.

The packaged ``pom.xml`` (2.x) and ``pom-3.xml`` (3.x) in :func:`lrt_rerank.opensearch.templates.assets_dir`
list them (:func:`pom_for`):

* core: ``org.opensearch.distribution.integ-test-zip:opensearch:<v>`` (no JDK, no security
  plugin: plain HTTP);
* 2.x only: the ``lang-painless`` and ``analysis-common`` modules, which are published only as jars
  (:data:`JAR_MODULES`); the 3.x integ-test zip has them (and ``transport-grpc``, which k-NN 3.x extends);
* the plugin zips of :func:`plugins_for` (``<v>.0``): on 3.x k-NN alone. k-NN from Maven carries no
  native engines (no faiss/nmslib JNI libraries in the zip), so vectors must use the ``lucene`` engine.

Maven downloads them once into the local repository ``<work dir>/m2``; nothing is copied out of it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from lrt_rerank.opensearch.templates import assets_dir
from lrt_rerank.ops.opensearch.java import find_java_home, java_env
from lrt_rerank.ops.opensearch.spec import NodeError, NodeSpec, Progress, major_version

PLUGINS = ("opensearch-job-scheduler", "opensearch-ml-plugin", "opensearch-knn", "neural-search")
"""Plugin zip artifactIds in install order: ml-commons extends job-scheduler, k-NN extends
lang-painless, neural-search extends k-NN. (neural-search's artifactId has no ``opensearch-``
prefix on Maven Central.)"""
PLUGINS_3 = ("opensearch-knn",)
"""The 3.x plugins on Maven Central (k-NN 3.5.0.0 extends lang-painless and transport-grpc, both core modules)."""
JAR_MODULES: dict[str, tuple[str, ...]] = {
    "lang-painless": (
        "lang-painless",
        "opensearch-scripting-painless-spi",
        "antlr4-runtime",
        "asm",
        "asm-util",
        "asm-tree",
        "asm-commons",
        "asm-analysis",
    ),
    "analysis-common": ("analysis-common",),
}
"""Modules assembled from jars: module name -> artifactIds of its jars. Their descriptors live in
``assets/modules/<name>/``. The integ-test-zip ships transport-netty4 only; k-NN needs
lang-painless, and the index's analyzer (pattern tokenizer, length filter) needs analysis-common."""


def plugins_for(version: str) -> tuple[str, ...]:
    """Plugin zip artifactIds of a node of ``version``, in install order."""
    return PLUGINS if major_version(version) < 3 else PLUGINS_3


def jar_modules_for(version: str) -> dict[str, tuple[str, ...]]:
    """Modules assembled from jars for ``version`` (none on 3.x: its core zip has them)."""
    return JAR_MODULES if major_version(version) < 3 else {}


def pom_for(version: str) -> Path:
    """The packaged pom listing the artifacts of ``version``."""
    return assets_dir() / ("pom.xml" if major_version(version) < 3 else "pom-3.xml")


def resolve_artifacts(spec: NodeSpec, say: Progress) -> dict[str, Path]:
    """Resolve every artifact in :func:`pom_for` ``spec.version`` into the local Maven repository.

    Returns artifactId -> file in that repository (nothing is copied). Raises
    :class:`NodeError` with the Maven log when ``mvn`` is missing or resolution fails.
    """
    mvn = shutil.which("mvn")
    if mvn is None:
        raise NodeError("Maven not found: install it (Debian: apt-get install -y maven) so `mvn` is on PATH")
    log = spec.work_dir / f"mvn-{spec.version}.log"
    classpath_file = spec.work_dir / f"artifacts-{spec.version}.txt"
    command = [
        mvn,
        "--batch-mode",
        "--no-transfer-progress",
        "-f",
        str(pom_for(spec.version)),
        f"-Dmaven.repo.local={spec.work_dir / 'm2'}",
        f"-Dopensearch.version={spec.version}",
        "dependency:build-classpath",
        f"-Dmdep.outputFile={classpath_file}",
    ]
    say(f"resolving OpenSearch {spec.version} artifacts from Maven Central (cache {spec.work_dir / 'm2'})")
    with log.open("w", encoding="utf-8") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=java_env(find_java_home(spec.version)), check=False)
    if result.returncode != 0 or not classpath_file.is_file():
        raise NodeError(f"Maven could not resolve the OpenSearch {spec.version} artifacts (exit {result.returncode})", log)
    files = [Path(p) for p in classpath_file.read_text(encoding="utf-8").strip().split(os.pathsep) if p]
    by_name: dict[str, Path] = {}
    for path in files:
        # <repo>/<group path>/<artifactId>/<version>/<artifactId>-<version>.<ext>
        by_name[path.parent.parent.name] = path
    wanted = ("opensearch", *plugins_for(spec.version), *(jar for jars in jar_modules_for(spec.version).values() for jar in jars))
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise NodeError(f"Maven resolved no file for {', '.join(missing)} (see {classpath_file})", log)
    return by_name


def resolve_security_plugin(spec: NodeSpec, say: Progress) -> Path:
    """The opensearch-security plugin zip for ``spec.version`` (see
    :func:`lrt_rerank.ops.opensearch.security.plugin_version`), resolved into the same local repository."""
    from lrt_rerank.ops.opensearch.security import PLUGIN, plugin_version

    mvn = shutil.which("mvn")
    if mvn is None:
        raise NodeError("Maven not found: install it (Debian: apt-get install -y maven) so `mvn` is on PATH")
    version = plugin_version(spec.version)
    repo = spec.work_dir / "m2"
    target = repo / "org" / "opensearch" / "plugin" / PLUGIN / version / f"{PLUGIN}-{version}.zip"
    if target.is_file():
        return target
    log = spec.work_dir / f"mvn-{PLUGIN}-{version}.log"
    command = [
        mvn,
        "--batch-mode",
        "--no-transfer-progress",
        f"-Dmaven.repo.local={repo}",
        "dependency:get",
        f"-Dartifact=org.opensearch.plugin:{PLUGIN}:{version}:zip",
        "-Dtransitive=false",
    ]
    say(f"resolving org.opensearch.plugin:{PLUGIN}:{version} from Maven Central")
    with log.open("w", encoding="utf-8") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=java_env(find_java_home(spec.version)), cwd=spec.work_dir, check=False)
    if result.returncode != 0 or not target.is_file():
        if re.search(r"Could not find artifact|was not found in", log.read_text(encoding="utf-8", errors="replace")):
            raise NodeError(
                f"org.opensearch.plugin:{PLUGIN}:{version}:zip is not on Maven Central, so `up --secure` cannot run "
                f"OpenSearch {spec.version} (on 2026-12-07 its newest 3.x there was 3.4.0.0); run {spec.version} without "
                "--secure, or --secure with the default version",
                log,
            )
        raise NodeError(f"Maven could not resolve org.opensearch.plugin:{PLUGIN}:{version}:zip (exit {result.returncode})", log)
    return target

