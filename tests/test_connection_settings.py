"""Connection settings towards OpenSearch: flags, password sources, refusals, and no secret in any output."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest
from lrt_rerank.opensearch.connection import (
    PASSWORD_ENV,
    ConnectionSettings,
    ConnectionSettingsError,
    add_connection_args,
    read_secret_file,
    resolve_settings,
    settings_from_args,
)

SECRET = "pw-Zq81-never-shown"


def _parse(argv: list[str], url_flag: str | None = "--url") -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_connection_args(parser, url_flag=url_flag)
    return parser.parse_args(argv)


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(SECRET + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def test_flags_give_settings_with_the_password_from_the_file(password_file: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    args = _parse(["--url", "https://127.0.0.1:9200", "--user", "admin", "--password-file", str(password_file), "--ca-certs", str(ca)])
    settings = settings_from_args(args)
    assert (settings.url, settings.user, settings.password, settings.ca_certs) == ("https://127.0.0.1:9200", "admin", SECRET, ca)
    kwargs = settings.client_kwargs()
    assert kwargs["http_auth"] == ("admin", SECRET)
    assert kwargs["use_ssl"] is True and kwargs["verify_certs"] is True and kwargs["ca_certs"] == str(ca)
    assert SECRET not in repr(settings) and SECRET not in str(settings.to_json())
    assert settings.to_json()["password_file"] == str(password_file)


def test_password_from_the_environment_when_no_file() -> None:
    settings = resolve_settings("https://h:9200", user="admin", environ={PASSWORD_ENV: SECRET})
    assert settings.password == SECRET and settings.password_file is None
    assert settings.to_json()["password_from"] == PASSWORD_ENV
    assert SECRET not in repr(settings)


def test_the_file_wins_over_the_environment(password_file: Path) -> None:
    settings = resolve_settings("https://h:9200", user="admin", password_file=password_file, environ={PASSWORD_ENV: "other"})
    assert settings.password == SECRET


def test_no_flags_is_the_local_unsecured_node() -> None:
    settings = settings_from_args(_parse([]))
    assert settings == ConnectionSettings()
    assert settings.client_kwargs() == {"hosts": ["http://127.0.0.1:9200"], "timeout": 60.0, "http_compress": False}


def test_eval_takes_the_url_from_first_stage(password_file: Path) -> None:
    args = _parse(["--user", "admin", "--password-file", str(password_file)], url_flag=None)
    assert not hasattr(args, "url")
    assert settings_from_args(args, url="https://127.0.0.1:9201").url == "https://127.0.0.1:9201"


@pytest.mark.parametrize(
    "url",
    [f"https://admin:{SECRET}@127.0.0.1:9200", f"http://{SECRET}@localhost:9200", f"https://admin:{SECRET}@[::1"],
)
def test_a_url_with_credentials_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ConnectionSettingsError) as info:
        ConnectionSettings(url)
    assert "credentials in the URL are refused" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("url", ["127.0.0.1:9200", "ftp://h:21", "https://", "embedded"])
def test_a_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ConnectionSettingsError, match="expected http://host:port or https://host:port"):
        ConnectionSettings(url)


def test_user_without_password_names_both_sources() -> None:
    with pytest.raises(ConnectionSettingsError, match=rf"--user admin: no password; give --password-file FILE or set \${PASSWORD_ENV}"):
        resolve_settings("https://h:9200", user="admin", environ={})


def test_password_without_user_is_refused(password_file: Path) -> None:
    with pytest.raises(ConnectionSettingsError, match="without --user"):
        resolve_settings("https://h:9200", password_file=password_file, environ={})


def test_missing_and_empty_password_files_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConnectionSettingsError, match=f"--password-file {missing}: no such file"):
        resolve_settings("https://h:9200", user="admin", password_file=missing)
    empty = tmp_path / "empty"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ConnectionSettingsError, match=f"--password-file {empty}: empty"):
        resolve_settings("https://h:9200", user="admin", password_file=empty)


def test_a_world_readable_secret_file_warns_without_the_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "key"
    path.write_text(SECRET, encoding="utf-8")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert read_secret_file(path, "--service-api-key-file") == SECRET
    assert "--service-api-key-file" in caplog.text and "chmod 600" in caplog.text
    assert SECRET not in caplog.text


def test_insecure_warns_and_turns_verification_off(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        settings = settings_from_args(_parse(["--url", "https://10.0.0.5:9200", "--insecure"]))
    assert settings.client_kwargs()["verify_certs"] is False
    assert "--insecure" in caplog.text and "https://10.0.0.5:9200" in caplog.text
    assert settings.trust() == "none (--insecure)"


def test_contradictions_and_missing_files_are_refused(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("x", encoding="utf-8")
    with pytest.raises(ConnectionSettingsError, match="--client-cert and --client-key go together"):
        ConnectionSettings("https://h:9200", client_cert=cert)
    with pytest.raises(ConnectionSettingsError, match="--insecure and --ca-certs"):
        ConnectionSettings("https://h:9200", insecure=True, ca_certs=cert)
    with pytest.raises(ConnectionSettingsError, match=f"--ca-certs {tmp_path / 'ca.pem'}: no such file"):
        ConnectionSettings("https://h:9200", ca_certs=tmp_path / "ca.pem")


def test_client_certificates_reach_the_client(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("c", encoding="utf-8")
    key.write_text("k", encoding="utf-8")
    kwargs = ConnectionSettings("https://h:9200", client_cert=cert, client_key=key).client_kwargs()
    assert (kwargs["client_cert"], kwargs["client_key"]) == (str(cert), str(key))


def test_with_url_keeps_credentials_and_trust(password_file: Path) -> None:
    settings = resolve_settings("https://127.0.0.1:9200", user="admin", password_file=password_file)
    other = settings.with_url("https://127.0.0.1:9201")
    assert (other.url, other.user, other.password, other.password_file) == ("https://127.0.0.1:9201", "admin", SECRET, password_file)


def test_the_connection_flags_load_no_opensearch_client() -> None:
    import subprocess
    import sys

    code = "import sys, lrt_rerank.opensearch.connection; print('opensearchpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
