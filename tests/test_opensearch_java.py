"""Finding a JDK for the node: Java 11+ for OpenSearch 2.x, 21+ for 3.x, and one line naming what to install."""

from __future__ import annotations

from pathlib import Path

import pytest
from lrt_rerank.ops.opensearch import NodeError, find_java_home
from service_fixtures import free_port


def fake_jdk(root: Path, name: str, version: str) -> Path:
    """A directory with a bin/java that reports ``version`` as `java -version` does (on stderr)."""
    home = root / name
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f'#!/bin/sh\necho \'openjdk version "{version}" 2025-01-01\' >&2\n', encoding="utf-8")
    java.chmod(0o755)
    return home


@pytest.fixture
def no_java(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No JDK in the environment or on PATH; returns an empty directory to use as the JDK search path."""
    monkeypatch.delenv("OPENSEARCH_JAVA_HOME", raising=False)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    empty = tmp_path / "bin-empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    jvm = tmp_path / "jvm"
    jvm.mkdir()
    return jvm


def test_java_17_home_is_skipped_for_35_and_a_newer_jdk_found(no_java: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = fake_jdk(no_java.parent, "jdk-17", "17.0.12")
    monkeypatch.setenv("JAVA_HOME", str(old))
    fake_jdk(no_java, "temurin-21", "21.0.5")
    newest = fake_jdk(no_java, "temurin-25", "25.0.1")
    (no_java / "default-java").symlink_to(old)
    assert find_java_home("3.5.0", [no_java]) == newest
    assert find_java_home("2.19.6", [no_java]) == old  # JAVA_HOME is new enough for 2.x


def test_missing_java_21_is_one_line_naming_what_to_install(no_java: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = fake_jdk(no_java.parent, "jdk-17", "17.0.12")
    monkeypatch.setenv("JAVA_HOME", str(old))
    fake_jdk(no_java, "java-17-openjdk-amd64", "17.0.9")
    with pytest.raises(NodeError) as caught:
        find_java_home("3.5.0", [no_java])
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("OpenSearch 3.5.0 needs Java >= 21, found only ")
    assert f"$JAVA_HOME={old} (Java 17)" in message and f"{no_java / 'java-17-openjdk-amd64'} (Java 17)" in message
    assert "apt-get install -y temurin-21-jdk" in message and "packages.adoptium.net" in message


def test_no_java_at_all_is_reported(no_java: Path) -> None:
    with pytest.raises(NodeError, match=r"^Java not found: OpenSearch 3\.5\.0 needs a JDK >= 21; install a JDK >= 21"):
        find_java_home("3.5.0", [no_java])
    with pytest.raises(NodeError, match=r"openjdk-17-jdk-headless"):
        find_java_home("2.19.6", [no_java])


def test_up_reports_the_missing_java_in_one_line(
    no_java: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lrt_rerank.cli import main
    from lrt_rerank.ops.opensearch import java

    monkeypatch.setattr(java, "JDK_DIRS", (no_java,))
    monkeypatch.setenv("JAVA_HOME", str(fake_jdk(tmp_path, "jdk-17", "17.0.12")))
    argv = ["opensearch", "up", "--version", "3.5.0", "--port", str(free_port()), "--work-dir", str(tmp_path / "w")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs Java >= 21" in err and "temurin-21-jdk" in err


def test_java_home_without_java_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENSEARCH_JAVA_HOME", str(tmp_path))
    with pytest.raises(NodeError, match=r"OPENSEARCH_JAVA_HOME=.*no bin/java"):
        find_java_home()
