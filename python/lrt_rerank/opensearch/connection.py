"""How to reach an OpenSearch cluster: URL, credentials, TLS trust: one settings object for every caller.

:class:`ConnectionSettings` is what :func:`lrt_rerank.opensearch.client.connect` takes, and what every
command that talks to a cluster builds from the same flags (:func:`add_connection_args`,
:func:`settings_from_args`): ``opensearch index|pipeline``, ``eval --first-stage``, the stack.

* ``--url https://host:9200`` and ``--user NAME``;
* the password from ``--password-file FILE`` (first line) or ``$LRT_OPENSEARCH_PASSWORD``, never from
  an argument (``ps`` shows arguments to every user);
* ``--ca-certs PEM`` to trust a private CA; ``--insecure`` skips certificate checks (with a warning);
* ``--client-cert PEM`` / ``--client-key PEM`` for clusters that authenticate clients by certificate.

The password stays out of ``repr``, :meth:`ConnectionSettings.to_json` and every message here. A URL
that carries credentials (``https://user:pass@host``) is refused without echoing it.
AWS SigV4 (Amazon OpenSearch Service with IAM) is not supported.
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:9200"
PASSWORD_ENV = "LRT_OPENSEARCH_PASSWORD"

log = logging.getLogger(__name__)


class ConnectionSettingsError(ValueError):
    """The connection settings are unusable; the message names the flag, file or variable."""


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything needed to open a client to one cluster. ``password`` never shows in ``repr``."""

    url: str = DEFAULT_URL
    user: str | None = None
    password: str | None = field(default=None, repr=False, compare=False)
    password_file: Path | None = None
    """Where the password came from (reported instead of it); None when it came from the environment."""
    ca_certs: Path | None = None
    insecure: bool = False
    client_cert: Path | None = None
    client_key: Path | None = None
    timeout: float = 60.0

    def __post_init__(self) -> None:
        try:
            parts = urlsplit(self.url)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            parts = None
        authority = parts.netloc if parts is not None else self.url.split("//", 1)[-1].split("/", 1)[0]
        if "@" in authority:
            # Not echoed: the URL holds a secret.
            raise ConnectionSettingsError(
                "OpenSearch URL: credentials in the URL are refused (they end up in logs and `ps`); "
                f"use --user and --password-file or ${PASSWORD_ENV}"
            )
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectionSettingsError(f"OpenSearch URL {self.url!r}: expected http://host:port or https://host:port")
        if self.password is not None and self.user is None:
            raise ConnectionSettingsError(f"a password was given (--password-file or ${PASSWORD_ENV}) without --user")
        if self.user is not None and not self.password:
            raise ConnectionSettingsError(
                f"--user {self.user}: no password; give --password-file FILE or set ${PASSWORD_ENV}"
            )
        if (self.client_cert is None) != (self.client_key is None):
            raise ConnectionSettingsError("--client-cert and --client-key go together")
        if self.insecure and self.ca_certs is not None:
            raise ConnectionSettingsError("--insecure and --ca-certs contradict each other: pick one")
        for flag, path in (("--ca-certs", self.ca_certs), ("--client-cert", self.client_cert), ("--client-key", self.client_key)):
            if path is not None and not Path(path).is_file():
                raise ConnectionSettingsError(f"{flag} {path}: no such file")
        if self.timeout <= 0:
            raise ConnectionSettingsError(f"timeout must be > 0 s, got {self.timeout}")

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "https"

    def trust(self) -> str:
        """Which certificates the client trusts, in words (for error messages)."""
        if not self.tls:
            return "no TLS"
        if self.insecure:
            return "none (--insecure)"
        return f"CA {self.ca_certs}" if self.ca_certs is not None else "the system's CA bundle (no --ca-certs given)"

    def with_url(self, url: str) -> ConnectionSettings:
        """The same credentials and trust towards another node (e.g. each node of a cluster)."""
        return ConnectionSettings(
            url, self.user, self.password, self.password_file, self.ca_certs, self.insecure, self.client_cert, self.client_key, self.timeout
        )

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``opensearchpy.OpenSearch`` for these settings."""
        kwargs: dict[str, Any] = {"hosts": [self.url], "timeout": self.timeout, "http_compress": False}
        if self.user is not None:
            kwargs["http_auth"] = (self.user, self.password)
        if self.tls:
            kwargs["use_ssl"] = True
            kwargs["verify_certs"] = not self.insecure
            kwargs["ssl_show_warn"] = False  # --insecure warns once, in settings_from_args / connect
            if self.ca_certs is not None:
                kwargs["ca_certs"] = str(self.ca_certs)
            if self.client_cert is not None:
                kwargs["client_cert"] = str(self.client_cert)
                kwargs["client_key"] = str(self.client_key)
        return kwargs

    def to_json(self) -> dict[str, object]:
        """What a status line may show: paths and names, never the password."""
        return {
            "url": self.url,
            "user": self.user,
            "password_file": str(self.password_file) if self.password_file is not None else None,
            "password_from": "file" if self.password_file is not None else (PASSWORD_ENV if self.password else None),
            "ca_certs": str(self.ca_certs) if self.ca_certs is not None else None,
            "insecure": self.insecure,
            "client_cert": str(self.client_cert) if self.client_cert is not None else None,
        }


def read_secret_file(path: Path, flag: str = "--password-file") -> str:
    """The first line of ``path`` (spaces and the newline stripped), for ``flag``. Warns when other
    users may read the file. Messages name the flag and the file, never the content."""
    try:
        raw = Path(path).read_text(encoding="utf-8")
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        raise ConnectionSettingsError(f"{flag} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConnectionSettingsError(f"{flag} {path}: unreadable ({type(exc).__name__})") from None
    lines = raw.splitlines()
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise ConnectionSettingsError(f"{flag} {path}: empty; the secret goes on its first line")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s %s is readable by other users (mode %s); chmod 600 it", flag, path, oct(mode & 0o777))
    return secret


def resolve_settings(
    url: str = DEFAULT_URL,
    user: str | None = None,
    password_file: Path | None = None,
    ca_certs: Path | None = None,
    insecure: bool = False,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    timeout: float = 60.0,
    environ: dict[str, str] | None = None,
) -> ConnectionSettings:
    """Settings with the password read from ``password_file``, else ``$LRT_OPENSEARCH_PASSWORD`` (when
    ``user`` is given). ``--insecure`` logs a warning naming the URL."""
    env = os.environ if environ is None else environ
    password = None
    if password_file is not None:
        password = read_secret_file(password_file)
    elif user is not None:
        password = env.get(PASSWORD_ENV) or None
    settings = ConnectionSettings(url, user, password, password_file, ca_certs, insecure, client_cert, client_key, timeout)
    if settings.insecure and settings.tls:
        log.warning("--insecure: the certificate of %s is not verified; anyone on the path can read the credentials", url)
    return settings


class _RefusedSecret(argparse.Action):
    """An option that would put a secret on the command line: refused, and its value never echoed
    (argparse would otherwise take ``--password X`` for ``--password-file X`` and name ``X``)."""

    def __init__(self, option_strings: list[str], dest: str, instead: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS)
        self.instead = instead

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object, option_string: str | None = None) -> None:
        parser.error(f"{option_string} is not accepted: every user can read a process's arguments (`ps`); use {self.instead}")


def refuse_secret_args(parser: argparse.ArgumentParser, *flags: str, instead: str) -> None:
    """Refuse each of ``flags`` (e.g. ``--password``) in one line pointing to ``instead``, never echoing its value."""
    for flag in flags:
        parser.add_argument(flag, action=_RefusedSecret, instead=instead, dest=f"refused_{flag.lstrip('-').replace('-', '_')}")


def add_connection_args(parser: argparse.ArgumentParser, url_flag: str | None = "--url") -> None:
    """The connection flags, the same on every command. ``url_flag=None`` leaves the URL to the
    command's own flag (``eval --first-stage URL``)."""
    group = parser.add_argument_group("OpenSearch connection")
    if url_flag is not None:
        group.add_argument(url_flag, dest="url", default=DEFAULT_URL, help="OpenSearch URL, http:// or https:// (default: %(default)s)")
    group.add_argument("--user", help=f"user for HTTP basic authentication (password: --password-file or ${PASSWORD_ENV})")
    group.add_argument("--password-file", type=Path, metavar="FILE", help=f"file whose first line is the password (else ${PASSWORD_ENV})")
    refuse_secret_args(parser, "--password", instead=f"--password-file FILE or ${PASSWORD_ENV}")
    group.add_argument("--ca-certs", type=Path, metavar="PEM", help="CA certificate(s) that signed the cluster's HTTP certificate")
    group.add_argument("--insecure", action="store_true", help="do not verify the cluster's certificate (warns; for tests only)")
    group.add_argument("--client-cert", type=Path, metavar="PEM", help="client certificate, for clusters that authenticate by certificate")
    group.add_argument("--client-key", type=Path, metavar="PEM", help="private key of --client-cert (PKCS#8 or PKCS#1 PEM, unencrypted)")


def settings_from_args(args: argparse.Namespace, url: str | None = None) -> ConnectionSettings:
    """:class:`ConnectionSettings` from the flags of :func:`add_connection_args` (absent ones default);
    ``url`` overrides ``args.url``."""
    return resolve_settings(
        url=url if url is not None else getattr(args, "url", DEFAULT_URL),
        user=getattr(args, "user", None),
        password_file=getattr(args, "password_file", None),
        ca_certs=getattr(args, "ca_certs", None),
        insecure=bool(getattr(args, "insecure", False)),
        client_cert=getattr(args, "client_cert", None),
        client_key=getattr(args, "client_key", None),
    )
