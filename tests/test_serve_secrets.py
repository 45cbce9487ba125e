"""`lrt-rerank serve`: the API key from a file or the environment, TLS flags checked up front, no key in a repr."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from lrt_rerank.cli import main as cli_main
from lrt_rerank.commands.serve import API_KEY_ENV, _api_key
from lrt_rerank.service.settings import ServiceSettings

KEY = "serve-key-93be1"


def _args(**kwargs: object) -> argparse.Namespace:
    return argparse.Namespace(**{"api_key_file": None, **kwargs})


def test_the_key_comes_from_the_file_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    key_file.chmod(0o600)
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert _api_key(_args(api_key_file=key_file)) == KEY
    assert _api_key(_args()) == "from-env"
    monkeypatch.delenv(API_KEY_ENV)
    assert _api_key(_args()) is None


@pytest.mark.parametrize(
    ("argv", "instead"),
    [
        (["serve", "--api-key", KEY], "--api-key-file"),
        (["serve", f"--api-key={KEY}"], "--api-key-file"),
        (["opensearch", "pipeline", "--api-key", KEY], "--service-api-key-file"),
        (["opensearch", "index", "--index", "x", "--dataset", "d", "--user", "admin", "--password", KEY], "--password-file"),
        (["eval", "--dataset", "d", "--first-stage", "https://127.0.0.1:9200", "--password", KEY], "--password-file"),
        (["stack", "up", "--api-key", KEY], "--api-key-file"),
    ],
)
def test_a_secret_on_the_command_line_is_refused_without_echoing_it(
    argv: list[str], instead: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not taken for its --...-file prefix either (argparse abbreviates), which would name the secret as a path."""
    with pytest.raises(SystemExit) as exit_:
        cli_main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "is not accepted" in err and instead in err, err
    assert KEY not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--api-key-file", "{tmp}/absent"], "--api-key-file {tmp}/absent: no such file"),
        (["--ssl-certfile", "{tmp}/cert.pem"], "--ssl-certfile and --ssl-keyfile go together"),
        (["--ssl-certfile", "{tmp}/cert.pem", "--ssl-keyfile", "{tmp}/key.pem"], "--ssl-certfile {tmp}/cert.pem: no such file"),
    ],
)
def test_bad_secret_and_tls_flags_fail_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = ["serve", "--model", str(tmp_path / "no-model"), *(word.format(tmp=tmp_path) for word in extra)]
    assert cli_main(argv) == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


def test_settings_keep_the_key_out_of_their_repr() -> None:
    settings = ServiceSettings(api_key=KEY)
    assert KEY not in repr(settings)
    assert KEY in settings.to_env()  # handed to the workers in their environment, not on a command line
