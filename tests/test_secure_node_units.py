"""The secured node's pieces without a node: certificates, the patched plugin descriptor, the layout and records."""

from __future__ import annotations

import datetime
import json
import os
import ssl
import zipfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import ExtendedKeyUsageOID
from lrt_rerank.ops.opensearch import ClusterSpec, NodeError, NodeSpec, cluster_status, recorded_cluster
from lrt_rerank.ops.opensearch import security


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("credentials")
    security._write_certificates(directory)
    return directory


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_node_and_admin_certificates_are_signed_by_the_ca(credentials: Path) -> None:
    ca = _load(credentials / security.CA_FILE)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    for name, dn, usages in (
        (security.NODE_CERT, security.node_dn(), {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}),
        (security.ADMIN_CERT, security.admin_dn(), {ExtendedKeyUsageOID.CLIENT_AUTH}),
    ):
        cert = _load(credentials / name)
        assert cert.issuer == ca.subject
        ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
        assert cert.subject.rfc4514_string() == dn  # the DN the plugin's nodes_dn / admin_dn name
        assert set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == usages
        assert cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc) > datetime.timedelta(days=3000)


def test_the_node_certificate_names_the_loopback_address(credentials: Path) -> None:
    san = _load(credentials / security.NODE_CERT).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    # and Python's TLS stack accepts it as a server certificate for 127.0.0.1
    context = ssl.create_default_context(cafile=str(credentials / security.CA_FILE))
    context.load_cert_chain(credentials / security.NODE_CERT, credentials / security.NODE_KEY)


def test_private_keys_are_pkcs8_and_owner_only(credentials: Path) -> None:
    for name in (security.NODE_KEY, security.ADMIN_KEY):
        path = credentials / name
        assert path.read_text(encoding="ascii").startswith("-----BEGIN PRIVATE KEY-----")
        assert path.stat().st_mode & 0o777 == 0o600


def test_the_plugin_zip_gets_the_nodes_version(tmp_path: Path) -> None:
    archive = tmp_path / "opensearch-security-2.19.4.0.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("plugin-descriptor.properties", "name=opensearch-security\nversion=2.19.4.0\nopensearch.version=2.19.4\n")
        zf.writestr("opensearch-security-2.19.4.0.jar", b"jar bytes")
    patched = security.plugin_zip_for(archive, "2.19.6", tmp_path)
    assert patched != archive
    with zipfile.ZipFile(patched) as zf:
        assert zf.read("plugin-descriptor.properties").decode().splitlines() == [
            "name=opensearch-security",
            "version=2.19.4.0",
            "opensearch.version=2.19.6",
        ]
        assert zf.read("opensearch-security-2.19.4.0.jar") == b"jar bytes"
    assert security.plugin_zip_for(archive, "2.19.4", tmp_path) == archive  # built for that version: used as is
    assert security.plugin_version("2.19.6") == "2.19.4.0" and security.plugin_version("3.0.0") == "3.0.0.0"


def test_a_broken_plugin_zip_is_named(tmp_path: Path) -> None:
    truncated = tmp_path / "opensearch-security-2.19.4.0.zip"
    truncated.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(NodeError, match=f"{truncated}: not a readable zip"):
        security.plugin_zip_for(truncated, "2.19.6", tmp_path)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("README", "no descriptor")
    with pytest.raises(NodeError, match=f"{other}: no readable plugin-descriptor.properties"):
        security.plugin_zip_for(other, "2.19.6", tmp_path)


def test_secured_layout_is_apart_from_the_unsecured_one(tmp_path: Path) -> None:
    plain, secured = NodeSpec(port=19250, work_dir=tmp_path), NodeSpec(port=19250, work_dir=tmp_path, secure=True)
    assert (plain.url, secured.url) == ("http://127.0.0.1:19250", "https://127.0.0.1:19250")
    assert plain.home != secured.home and secured.home.name.endswith("-secure")
    cluster = ClusterSpec(3, port=19250, work_dir=tmp_path, secure=True)
    assert cluster.dir != ClusterSpec(3, port=19250, work_dir=tmp_path).dir
    assert {m.credentials_dir for m in cluster.members()} == {cluster.dir / "credentials"}
    assert cluster.urls == ["https://127.0.0.1:19250", "https://127.0.0.1:19251", "https://127.0.0.1:19252"]


def test_status_and_down_find_a_secured_cluster_from_its_port(tmp_path: Path) -> None:
    cluster = ClusterSpec(2, port=19250, heap_mb=512, work_dir=tmp_path, transport_port=19350, secure=True)
    cluster.dir.mkdir(parents=True)
    manifest = {"nodes": 2, "heap_mb": 512, "transport_port": 19350, "secure": True}
    (cluster.dir / "cluster.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert recorded_cluster(cluster.version, 19250, tmp_path) == ClusterSpec(1, cluster.version, 19250, work_dir=tmp_path)
    first = cluster.members()[0]
    first.node_dir.mkdir(parents=True)
    first.pid_file.write_text(str(os.getpid()), encoding="ascii")  # a live process stands in for the node
    assert recorded_cluster(cluster.version, 19250, tmp_path) == cluster
    single = ClusterSpec(1, port=19260, work_dir=tmp_path, secure=True)
    single.members()[0].node_dir.mkdir(parents=True)
    single.members()[0].pid_file.write_text(str(os.getpid()), encoding="ascii")
    assert recorded_cluster(single.version, 19260, tmp_path) == single


def test_status_reports_paths_and_never_the_password(tmp_path: Path) -> None:
    cluster = ClusterSpec(1, port=19270, work_dir=tmp_path, secure=True)
    spec = cluster.members()[0]
    spec.credentials_dir.mkdir(parents=True)
    (spec.credentials_dir / security.PASSWORD_FILE).write_text("s3cret-pw\n", encoding="utf-8")
    report = cluster_status(cluster).to_json()
    assert {k: report[k] for k in ("url", "user", "password_file", "ca_certs")} == {
        "url": "https://127.0.0.1:19270",
        "user": "admin",
        "password_file": str(spec.credentials_dir / security.PASSWORD_FILE),
        "ca_certs": str(spec.credentials_dir / security.CA_FILE),
    }
    assert "s3cret-pw" not in json.dumps(report)
    (spec.credentials_dir / security.CA_FILE).write_text("-----BEGIN CERTIFICATE-----\n", encoding="ascii")
    settings = security.admin_settings(spec)
    assert settings.password == "s3cret-pw" and "s3cret-pw" not in repr(settings)
