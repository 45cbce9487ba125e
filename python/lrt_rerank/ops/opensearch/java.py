"""The JDK that Maven, ``opensearch-plugin`` and the node run on.

OpenSearch 2.x needs Java 11 or newer, 3.x Java 21 or newer (:func:`min_java`). The first JDK new
enough among ``$OPENSEARCH_JAVA_HOME``, ``$JAVA_HOME``, the ``java`` on PATH and the JDKs under
:data:`JDK_DIRS` (newest first) is used; when none is, the error names each one found and what to install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from lrt_rerank.ops.opensearch.spec import DEFAULT_VERSION, NodeError, major_version

JDK_DIRS: tuple[Path, ...] = (Path("/usr/lib/jvm"),)
"""Where JDKs are installed by Debian/Ubuntu packages (openjdk-*, temurin-*)."""


def min_java(version: str) -> int:
    """The oldest Java that OpenSearch ``version`` runs on."""
    return 21 if major_version(version) >= 3 else 11


def find_java_home(version: str = DEFAULT_VERSION, jdk_dirs: Sequence[Path] | None = None) -> Path:
    """The JDK to run OpenSearch ``version`` on (see the module docstring for the search order)."""
    need = min_java(version)
    found: list[str] = []
    seen: set[Path] = set()
    for variable in ("OPENSEARCH_JAVA_HOME", "JAVA_HOME"):
        value = os.environ.get(variable)
        if value:
            home = Path(value)
            if not (home / "bin" / "java").is_file():
                raise NodeError(f"${variable}={value}: no bin/java there")
            major = java_major(home, f"${variable}")
            if major >= need:
                return home
            seen.add(home.resolve())
            found.append(f"${variable}={value} (Java {major})")
    java = shutil.which("java")
    if java is not None:
        home = Path(java).resolve().parent.parent
        major = java_major(home, java)
        if major >= need:
            return home
        seen.add(home)
        found.append(f"{java} (Java {major})")
    installed = sorted(_installed_jdks(JDK_DIRS if jdk_dirs is None else jdk_dirs), key=lambda item: -item[1])
    for home, major in installed:
        if major >= need:
            return home
    found += [f"{home} (Java {major})" for home, major in installed if home not in seen]
    if not found:
        raise NodeError(f"Java not found: OpenSearch {version} needs a JDK >= {need}; {_install_hint(need)}")
    raise NodeError(f"OpenSearch {version} needs Java >= {need}, found only {', '.join(found)}; {_install_hint(need)}")


def java_env(java_home: Path) -> dict[str, str]:
    """This process's environment with both ``OPENSEARCH_JAVA_HOME`` and ``JAVA_HOME`` set to ``java_home``."""
    env = dict(os.environ)
    env["OPENSEARCH_JAVA_HOME"] = str(java_home)
    env["JAVA_HOME"] = str(java_home)
    return env


def java_major(home: Path, origin: str) -> int:
    """The major version ``home/bin/java -version`` reports (8 for ``1.8``)."""
    result = subprocess.run([str(home / "bin" / "java"), "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr)
    if match is None:
        raise NodeError(f"{origin}: `java -version` printed no version: {result.stderr.strip()[:200]}")
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def _installed_jdks(dirs: Sequence[Path]) -> list[tuple[Path, int]]:
    """Each distinct JDK home under ``dirs`` (symlinks resolved) with its major version."""
    homes: dict[Path, int] = {}
    for base in dirs:
        if not base.is_dir():
            continue
        for entry in sorted(base.iterdir()):
            home = entry.resolve()
            if home not in homes and (home / "bin" / "java").is_file():
                try:
                    homes[home] = java_major(home, str(home))
                except NodeError:
                    continue
    return list(homes.items())


def _install_hint(need: int) -> str:
    if need <= 17:
        return "install one (Debian: apt-get install -y openjdk-17-jdk-headless) or set OPENSEARCH_JAVA_HOME"
    return (
        f"install a JDK >= {need} (Debian bookworm packages only 17: add the Adoptium repository "
        f"https://packages.adoptium.net/artifactory/deb and apt-get install -y temurin-{need}-jdk) "
        "or set JAVA_HOME to one"
    )
