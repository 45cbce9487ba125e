"""The JDK that Maven, ``opensearch-plugin`` and the node run on.

``$OPENSEARCH_JAVA_HOME``, else ``$JAVA_HOME``, else the ``java`` on PATH; it must be Java
:data:`MIN_JAVA` or newer.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from lrt_rerank.ops.opensearch.spec import NodeError

MIN_JAVA = 11


def find_java_home() -> Path:
    """The JDK to run OpenSearch on: $OPENSEARCH_JAVA_HOME, $JAVA_HOME, or the ``java`` on PATH."""
    for variable in ("OPENSEARCH_JAVA_HOME", "JAVA_HOME"):
        value = os.environ.get(variable)
        if value:
            home = Path(value)
            if not (home / "bin" / "java").is_file():
                raise NodeError(f"${variable}={value}: no bin/java there")
            _check_java_version(home, f"${variable}")
            return home
    java = shutil.which("java")
    if java is None:
        raise NodeError(
            f"Java not found: install a JDK >= {MIN_JAVA} (Debian: apt-get install -y openjdk-17-jdk-headless) "
            "or set OPENSEARCH_JAVA_HOME"
        )
    home = Path(java).resolve().parent.parent
    _check_java_version(home, java)
    return home


def java_env(java_home: Path) -> dict[str, str]:
    """This process's environment with both ``OPENSEARCH_JAVA_HOME`` and ``JAVA_HOME`` set to ``java_home``."""
    env = dict(os.environ)
    env["OPENSEARCH_JAVA_HOME"] = str(java_home)
    env["JAVA_HOME"] = str(java_home)
    return env


def _check_java_version(home: Path, origin: str) -> None:
    result = subprocess.run([str(home / "bin" / "java"), "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr)
    if match is None:
        raise NodeError(f"{origin}: `java -version` printed no version: {result.stderr.strip()[:200]}")
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise NodeError(f"{origin}: Java {major} is too old; OpenSearch 2.19 needs Java >= {MIN_JAVA} (17 or 21 recommended)")
