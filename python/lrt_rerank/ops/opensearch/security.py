"""A secured node (``lrt-rerank opensearch up --secure``): the security plugin, certificates, the admin user.

* **Plugin.** ``org.opensearch.plugin:opensearch-security`` from Maven Central, the node's version
  where it is published; for 2.19.6, whose build is not on Maven Central, the newest 2.19 build
  there (2.19.4.0, :data:`PUBLISHED_PLUGIN`), its descriptor's ``opensearch.version`` set to the
  node's (a patch release keeps the plugin API). It goes into its own home, ``node-<v>-secure``,
  so an unsecured node is assembled and runs exactly as before.
* **Certificates** (Python ``cryptography``, RSA 2048, 10 years): a CA, one node certificate
  (``CN=lrt-node``, SAN ``127.0.0.1``/``localhost``, server and client use) on HTTP and transport,
  and an admin certificate (``CN=lrt-admin``, the ``authcz.admin_dn``) for ``securityadmin.sh``.
* **Users.** ``internal_users.yml`` holds one user, ``admin`` (all_access through the plugin's
  default role mapping), whose password is generated once and kept in ``admin-password`` (0600).
  The hash is made by the plugin's own ``tools/hash.sh -env`` (the password in its environment,
  never on a command line).
* **How the configuration is applied:** by the plugin itself at the first start
  (``plugins.security.allow_default_init_securityindex``): the node that finds no security index
  creates it from the files in ``config/opensearch-security/``. securityadmin is not run; later
  changes can be pushed with it and the admin certificate kept in the credentials directory.

The credentials directory (:attr:`NodeSpec.credentials_dir`, 0700) holds ``root-ca.pem``,
``admin.pem``, ``admin-key.pem``, ``admin-password`` and ``admin-password.hash``; the node's config
directory gets copies of the CA, the node certificate and its key (0600, the JVM's user).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import pwd
import secrets
import ssl
import subprocess
import urllib.request
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from lrt_rerank.ops.opensearch.java import java_env
from lrt_rerank.ops.opensearch.spec import NodeError, NodeSpec

if TYPE_CHECKING:
    from http.client import HTTPResponse

    from lrt_rerank.opensearch.connection import ConnectionSettings

PLUGIN = "opensearch-security"
PUBLISHED_PLUGIN = {"2.19.5": "2.19.4.0", "2.19.6": "2.19.4.0"}
"""Node version -> the security plugin build used, where Maven Central has none of the node's own."""
ADMIN_USER = "admin"
ORG = "lrt-rerank"
NODE_CN = "lrt-node"
ADMIN_CN = "lrt-admin"
CA_FILE = "root-ca.pem"
NODE_CERT = "lrt-node.pem"
NODE_KEY = "lrt-node-key.pem"
ADMIN_CERT = "admin.pem"
ADMIN_KEY = "admin-key.pem"
PASSWORD_FILE = "admin-password"
HASH_ENV = "LRT_SECURITY_HASH_INPUT"


def plugin_version(version: str) -> str:
    """The opensearch-security build a node of ``version`` gets."""
    return PUBLISHED_PLUGIN.get(version, f"{version}.0")


def node_dn() -> str:
    return f"CN={NODE_CN},O={ORG}"


def admin_dn() -> str:
    return f"CN={ADMIN_CN},O={ORG}"


def password_file(spec: NodeSpec) -> Path:
    return spec.credentials_dir / PASSWORD_FILE


def ca_file(spec: NodeSpec) -> Path:
    return spec.credentials_dir / CA_FILE


def admin_password(spec: NodeSpec) -> str:
    """The generated admin password (raises :class:`NodeError` naming the file when it is missing)."""
    path = password_file(spec)
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        raise NodeError(f"{path}: the secured node's admin password file is missing; was the node started with --secure?") from None


def plugin_zip_for(archive: Path, version: str, out_dir: Path) -> Path:
    """``archive`` itself when it was built for ``version``; else a copy whose descriptor says ``version``.
    Raises :class:`NodeError` naming ``archive`` when it is not a plugin zip (e.g. a truncated download)."""
    try:
        zf = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as exc:
        raise NodeError(f"{archive}: not a readable zip ({exc}); delete it so that Maven downloads it again") from None
    with zf:
        try:
            descriptor = zf.read("plugin-descriptor.properties").decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            raise NodeError(f"{archive}: no readable plugin-descriptor.properties; not an OpenSearch plugin zip") from None
        lines = descriptor.splitlines()
        if f"opensearch.version={version}" in lines:
            return archive
        target = out_dir / f"{archive.stem}-for-{version}.zip"
        patched = "\n".join(f"opensearch.version={version}" if line.startswith("opensearch.version=") else line for line in lines) + "\n"
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as out:
            for info in zf.infolist():
                data = patched.encode("utf-8") if info.filename == "plugin-descriptor.properties" else zf.read(info)
                out.writestr(info, data)
    return target


def ensure_credentials(spec: NodeSpec, java_home: Path) -> None:
    """Create the CA, certificates, admin password and its hash once (kept across restarts)."""
    directory = spec.credentials_dir
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    if not (directory / CA_FILE).is_file():
        _write_certificates(directory)
    pw_path = directory / PASSWORD_FILE
    if not pw_path.is_file():
        _write_private(pw_path, secrets.token_urlsafe(24) + "\n")
    hash_path = directory / (PASSWORD_FILE + ".hash")
    if not hash_path.is_file():
        _write_private(hash_path, _bcrypt_hash(spec, java_home, admin_password(spec)) + "\n")


def write_node_security(spec: NodeSpec, run_as: pwd.struct_passwd | None) -> list[str]:
    """Copy the CA and node certificate into the node's config dir, write its users file; return the
    ``opensearch.yml`` lines of the plugin."""
    source = spec.credentials_dir
    config = spec.config_dir
    for name in (CA_FILE, NODE_CERT, NODE_KEY):  # 0600: the plugin warns about anything wider
        _copy(source / name, config / name, 0o600, run_as)
    bcrypt = (source / (PASSWORD_FILE + ".hash")).read_text(encoding="utf-8").strip()
    users = (
        "# Written by lrt-rerank (ops/opensearch/security.py): the only user; its password is in\n"
        f"# {source / PASSWORD_FILE}\n"
        '_meta:\n  type: "internalusers"\n  config_version: 2\n'
        f'{ADMIN_USER}:\n  hash: "{bcrypt}"\n  reserved: true\n  backend_roles: ["admin"]\n'
        '  description: "lrt-rerank admin"\n'
    )
    security_config = config / "opensearch-security"
    if not security_config.is_dir():
        raise NodeError(f"{security_config}: missing; the node home was not assembled with the security plugin")
    target = security_config / "internal_users.yml"
    target.write_text(users, encoding="utf-8")
    os.chmod(target, 0o600)
    if run_as is not None:
        os.chown(target, run_as.pw_uid, run_as.pw_gid)
    return [
        f"plugins.security.ssl.transport.pemcert_filepath: {NODE_CERT}",
        f"plugins.security.ssl.transport.pemkey_filepath: {NODE_KEY}",
        f"plugins.security.ssl.transport.pemtrustedcas_filepath: {CA_FILE}",
        "plugins.security.ssl.transport.enforce_hostname_verification: false",
        "plugins.security.ssl.http.enabled: true",
        f"plugins.security.ssl.http.pemcert_filepath: {NODE_CERT}",
        f"plugins.security.ssl.http.pemkey_filepath: {NODE_KEY}",
        f"plugins.security.ssl.http.pemtrustedcas_filepath: {CA_FILE}",
        "plugins.security.allow_default_init_securityindex: true",
        f'plugins.security.authcz.admin_dn: ["{admin_dn()}"]',
        f'plugins.security.nodes_dn: ["{node_dn()}"]',
        'plugins.security.restapi.roles_enabled: ["all_access"]',
    ]


def ssl_context(spec: NodeSpec) -> ssl.SSLContext:
    """Trusts the node's CA only; checks the host name (the certificate names 127.0.0.1)."""
    return ssl.create_default_context(cafile=str(ca_file(spec)))


def open_url(spec: NodeSpec, url: str, timeout: float) -> HTTPResponse:
    """GET ``url`` on a node: plain for an unsecured one, https + the admin's basic auth for a secured one."""
    if not spec.secure:
        return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (loopback URL built here)
    token = base64.b64encode(f"{ADMIN_USER}:{admin_password(spec)}".encode()).decode("ascii")
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    return urllib.request.urlopen(request, timeout=timeout, context=ssl_context(spec))  # noqa: S310


def connection_json(spec: NodeSpec) -> dict[str, object]:
    """How to reach a secured node, as ``status --json`` reports it: paths, never the password."""
    return {
        "url": spec.url,
        "user": ADMIN_USER,
        "password_file": str(password_file(spec)),
        "ca_certs": str(ca_file(spec)),
    }


# ------------------------------------------------------------------------------ internals
def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def _copy(source: Path, target: Path, mode: int, run_as: pwd.struct_passwd | None) -> None:
    data = source.read_bytes()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(target, mode)
    if run_as is not None:
        os.chown(target, run_as.pw_uid, run_as.pw_gid)


def _bcrypt_hash(spec: NodeSpec, java_home: Path, password: str) -> str:
    tool = spec.home / "plugins" / PLUGIN / "tools" / "hash.sh"
    env = java_env(java_home)
    env[HASH_ENV] = password
    result = subprocess.run(["bash", str(tool), "-env", HASH_ENV], env=env, capture_output=True, text=True, check=False)
    hashes = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("$2")]
    if result.returncode != 0 or not hashes:
        log = spec.work_dir / "security-hash.log"
        log.write_text(result.stdout.replace(password, "***") + result.stderr.replace(password, "***"), encoding="utf-8")
        raise NodeError(f"hashing the admin password with {tool} failed (exit {result.returncode})", log)
    return hashes[-1]


def _write_certificates(directory: Path) -> None:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        from lrt_rerank.extras import MissingExtra

        raise MissingExtra("opensearch", "opensearch up --secure", "cryptography") from None

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG), x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def pem_key(private: rsa.RSAPrivateKey) -> str:
        return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()

    ca_key = key()
    ca_name = name("lrt-rerank local CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usages: list[x509.ObjectIdentifier], san: bool) -> tuple[str, str]:
        private = key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_name)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if san:
            names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM).decode(), pem_key(private)

    node_cert, node_key = leaf(NODE_CN, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], san=True)
    admin_cert, admin_key = leaf(ADMIN_CN, [ExtendedKeyUsageOID.CLIENT_AUTH], san=False)
    (directory / NODE_CERT).write_text(node_cert, encoding="utf-8")
    _write_private(directory / NODE_KEY, node_key)
    (directory / ADMIN_CERT).write_text(admin_cert, encoding="utf-8")
    _write_private(directory / ADMIN_KEY, admin_key)
    # Last: its presence says the set is complete. The CA's key is not kept: nothing else gets signed.
    (directory / CA_FILE).write_text(ca.public_bytes(serialization.Encoding.PEM).decode(), encoding="utf-8")


def admin_settings(spec: NodeSpec, url: str | None = None) -> ConnectionSettings:
    """Connection settings of the admin user towards a secured local node (``url``: another node of its cluster)."""
    from lrt_rerank.opensearch.connection import ConnectionSettings

    return ConnectionSettings(url or spec.url, ADMIN_USER, admin_password(spec), password_file(spec), ca_file(spec))
