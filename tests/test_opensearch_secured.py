"""A secured OpenSearch node (`lrt-rerank opensearch up --secure`): TLS, basic authentication, the
connector's credential, and no secret in any log or output.

One secured single node serves the whole module, on 127.0.0.1:$LRT_OPENSEARCH_SECURE_PORT (default
9250; transport port + 100), started by the fixture unless it already runs there, stopped at the end
only if the fixture started it. Everything talks to it the way a user would: the `lrt-rerank` command
in a subprocess, with the generated credentials from files.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import time
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from lrt_rerank.datasets import Dataset, load_dataset
from lrt_rerank.opensearch.connection import ConnectionSettings
from service_fixtures import ServeProcess, key_file, serving

pytestmark = pytest.mark.integration

SECURE_PORT = int(os.environ.get("LRT_OPENSEARCH_SECURE_PORT", "9250"))
INDEX = "lrt-secured-msmarco"
SERVICE_KEY = "svc-key-6f0c2b7e1d"  # written to a 0600 file; must appear in no log or output
NO_ROLES_PASSWORD = "Unprivileged-7c1e-pw"  # of a user the tests create without any role


@dataclass(frozen=True)
class SecuredNode:
    url: str
    password_file: Path
    ca_certs: Path
    password: str
    log_dir: Path
    credentials_dir: Path

    @property
    def flags(self) -> list[str]:
        return self.flags_for("admin", self.password_file)

    def flags_for(self, user: str, password_file: Path | str) -> list[str]:
        """The connection flags of ``user``, whose password is in ``password_file``."""
        return ["--user", user, "--password-file", str(password_file), "--ca-certs", str(self.ca_certs)]

    @property
    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_certs))

    @property
    def settings(self) -> ConnectionSettings:
        return ConnectionSettings(self.url, "admin", self.password, self.password_file, self.ca_certs)


@dataclass
class Outputs:
    """Everything the module's commands printed, to be searched for secrets at the end."""

    texts: list[str]

    def run(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        exe = Path(sys.executable).with_name("lrt-rerank")
        result = subprocess.run([str(exe), *argv], capture_output=True, text=True, env=env, timeout=timeout, check=False)
        self.texts += [result.stdout, result.stderr]
        return result


@pytest.fixture(scope="module")
def outputs() -> Outputs:
    return Outputs([])


@pytest.fixture(scope="module")
def secured_node(outputs: Outputs) -> Iterator[SecuredNode]:
    from lrt_rerank.ops.opensearch import ClusterSpec, cluster_status, down_cluster

    cluster = ClusterSpec(1, port=SECURE_PORT, secure=True)
    already = cluster_status(cluster).running
    result = outputs.run("opensearch", "up", "--secure", "--port", str(SECURE_PORT), "--timeout", "600", timeout=900)
    if result.returncode != 0:
        pytest.fail(f"the secured node did not start:\n{result.stderr[-4000:]}", pytrace=False)
    status = outputs.run("opensearch", "status", "--port", str(SECURE_PORT), "--json")
    assert status.returncode == 0, status.stderr
    reported = json.loads(status.stdout)
    spec = cluster.members()[0]
    password_file = Path(reported["password_file"])
    try:
        yield SecuredNode(
            reported["url"],
            password_file,
            Path(reported["ca_certs"]),
            password_file.read_text(encoding="utf-8").strip(),
            spec.node_dir / "logs",
            spec.credentials_dir,
        )
    finally:
        if not already:
            down_cluster(cluster)


@pytest.fixture(scope="module")
def msmarco_dir(shared_data: Path) -> Path:
    return shared_data / "msmarco-sample"


@pytest.fixture(scope="module")
def msmarco(msmarco_dir: Path) -> Dataset:
    return load_dataset(msmarco_dir, "test")


@pytest.fixture(scope="module")
def embedded_msmarco(msmarco: Dataset):  # -> EmbeddedFirstStage
    from lrt_rerank.first_stage.index_cache import cached_index

    return cached_index(msmarco, progress=False)


@pytest.fixture(scope="module")
def indexed(secured_node: SecuredNode, embedded_msmarco, outputs: Outputs) -> str:
    result = outputs.run(
        "opensearch", "index", "--from-embedded-index", str(embedded_msmarco.path), "--index", INDEX,
        "--url", secured_node.url, *secured_node.flags, "--recreate",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"indexed 5000 of 5000 documents into {INDEX} at {secured_node.url}" in result.stdout
    return INDEX


@pytest.fixture(scope="module")
def service_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secured-keys") / "service-key"
    path.write_text(SERVICE_KEY + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def keyed_service(tmp_path_factory: pytest.TempPathFactory, cross_encoder_dir: Path, service_key_file: Path) -> Iterator[ServeProcess]:
    log = tmp_path_factory.mktemp("secured-serve") / "serve.log"
    with serving(["--model", str(cross_encoder_dir), "--api-key-file", str(service_key_file)], log) as server:
        yield server


def test_anonymous_and_plain_http_requests_are_refused(secured_node: SecuredNode) -> None:
    anonymous = httpx.get(secured_node.url + "/", verify=secured_node.tls, timeout=30)
    assert anonymous.status_code == 401
    assert httpx.get(secured_node.url + "/", verify=secured_node.tls, auth=("admin", "wrong"), timeout=30).status_code == 401
    with pytest.raises(httpx.TransportError):
        httpx.get(secured_node.url.replace("https://", "http://") + "/", timeout=30)
    answer = httpx.get(secured_node.url + "/", verify=secured_node.tls, auth=("admin", secured_node.password), timeout=30)
    assert answer.status_code == 200 and answer.json()["version"]["number"].startswith("2.19.")


def test_the_node_runs_the_security_plugin_and_reports_paths_not_the_secret(secured_node: SecuredNode, outputs: Outputs) -> None:
    from lrt_rerank.opensearch.client import connect

    client = connect(secured_node.settings)
    (node,) = client.nodes.info(metric="plugins")["nodes"].values()
    assert "opensearch-security" in {p["name"] for p in node["plugins"]}
    account = client.transport.perform_request("GET", "/_plugins/_security/authinfo")
    assert account["user_name"] == "admin" and "all_access" in account["roles"]
    client.close()
    assert secured_node.password_file.stat().st_mode & 0o777 == 0o600
    assert secured_node.credentials_dir.stat().st_mode & 0o777 == 0o700
    status = outputs.run("opensearch", "status", "--port", str(SECURE_PORT), "--json")
    reported = json.loads(status.stdout)
    assert {k: reported[k] for k in ("url", "user", "password_file", "ca_certs")} == {
        "url": secured_node.url,
        "user": "admin",
        "password_file": str(secured_node.password_file),
        "ca_certs": str(secured_node.ca_certs),
    }
    assert reported["health"] in ("green", "yellow")
    text = outputs.run("opensearch", "status", "--port", str(SECURE_PORT))
    assert f"password in {secured_node.password_file}" in text.stdout


def failed_pipeline(outputs: Outputs, secured_node: SecuredNode, flags: list[str], password: str) -> list[str]:
    """The stderr lines of `opensearch pipeline` run with ``flags``, which must fail without showing ``password``."""
    result = outputs.run("opensearch", "pipeline", "--url", secured_node.url, *flags)
    assert result.returncode != 0
    assert password not in result.stdout + result.stderr
    return result.stderr.strip().splitlines()


def test_a_wrong_password_is_one_line_and_a_failure(secured_node: SecuredNode, tmp_path: Path, outputs: Outputs, msmarco_dir: Path) -> None:
    flags = secured_node.flags_for("admin", key_file(tmp_path, "not-the-password"))
    assert failed_pipeline(outputs, secured_node, flags, "not-the-password") == [
        f"lrt-rerank opensearch pipeline: error: OpenSearch at {secured_node.url}: authentication failed (401) "
        "for user 'admin'; check --user and the password"
    ]
    evaluated = outputs.run("eval", "--dataset", str(msmarco_dir), "--first-stage", secured_node.url, *flags, "--reranker", "none")
    assert evaluated.returncode != 0 and "authentication failed" in evaluated.stderr and "Traceback" not in evaluated.stderr


def test_a_user_without_permissions_is_forbidden_in_one_line(secured_node: SecuredNode, tmp_path: Path, outputs: Outputs) -> None:
    from lrt_rerank.opensearch.client import connect

    password = NO_ROLES_PASSWORD
    client = connect(secured_node.settings)
    client.transport.perform_request(
        "PUT", "/_plugins/_security/api/internalusers/lrt-no-roles", body={"password": password, "backend_roles": []}
    )
    client.close()
    flags = secured_node.flags_for("lrt-no-roles", key_file(tmp_path, password))
    assert failed_pipeline(outputs, secured_node, flags, password) == [
        f"lrt-rerank opensearch pipeline: error: OpenSearch at {secured_node.url}: forbidden (403) for user 'lrt-no-roles': "
        "it lacks cluster:monitor/main"
    ]


def test_tls_failure_names_the_url_and_the_trust(secured_node: SecuredNode, tmp_path: Path, outputs: Outputs) -> None:
    env = {**os.environ, "LRT_OPENSEARCH_PASSWORD": secured_node.password}
    result = outputs.run("opensearch", "pipeline", "--url", secured_node.url, "--user", "admin", env=env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"OpenSearch at {secured_node.url}: TLS handshake failed, trusting the system's CA bundle" in line
    assert "CERTIFICATE_VERIFY_FAILED" in line
    # another CA: named in the message
    from lrt_rerank.ops.opensearch.security import _write_certificates

    other = tmp_path / "other-ca"
    other.mkdir()
    _write_certificates(other)
    result = outputs.run("opensearch", "pipeline", "--url", secured_node.url, "--user", "admin", "--ca-certs", str(other / "root-ca.pem"), env=env)
    assert f"trusting CA {other / 'root-ca.pem'}" in result.stderr


def test_index_and_eval_over_https_match_the_embedded_first_stage(
    secured_node: SecuredNode, indexed: str, outputs: Outputs, embedded_msmarco, msmarco_dir: Path
) -> None:
    common = ["eval", "--dataset", str(msmarco_dir), "--reranker", "none", "--json"]
    remote = outputs.run(*common, "--first-stage", secured_node.url, "--opensearch-index", indexed, *secured_node.flags)
    assert remote.returncode == 0, remote.stderr[-3000:]
    local = outputs.run(*common, "--index", str(embedded_msmarco.path))
    assert local.returncode == 0, local.stderr[-3000:]

    def rows(stdout: str) -> dict[str, dict[str, float]]:
        return {row["system"]: row for row in map(json.loads, stdout.splitlines()) if row.get("system")}

    remote_rows, local_rows = rows(remote.stdout), rows(local.stdout)
    for metric in ("MRR@10", "NDCG@10", "R@50"):
        assert abs(remote_rows["rrf"][metric] - local_rows["rrf"][metric]) <= 0.03, (metric, remote_rows["rrf"], local_rows["rrf"])
    assert remote_rows["rrf"]["queries"] == local_rows["rrf"]["queries"] > 0


def test_pipeline_over_https_calls_the_key_protected_service(
    secured_node: SecuredNode, indexed: str, keyed_service: ServeProcess, service_key_file: Path, bi_encoder_dir: Path, outputs: Outputs
) -> None:
    from lrt_rerank import BiEncoder
    from lrt_rerank.opensearch.client import connect
    from lrt_rerank.opensearch.searcher import embed_query, search_server_side

    # The service refuses a caller without its key.
    probe = httpx.post(keyed_service.url + "/v1/rerank", json={"query": "q", "documents": ["d"]}, timeout=30)
    assert probe.status_code == 401
    result = outputs.run(
        "opensearch", "pipeline", "--url", secured_node.url, *secured_node.flags, "--service-url", keyed_service.url,
        "--service-api-key-file", str(service_key_file), "--read-timeout", "120",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    installed = json.loads(result.stdout)
    client = connect(secured_node.settings)
    connector = client.transport.perform_request("GET", f"/_plugins/_ml/connectors/{installed['connector_id']}")
    assert connector["actions"][0]["headers"]["Authorization"] == "Bearer ${credential.api_key}"
    assert SERVICE_KEY not in json.dumps(connector)  # stored encrypted, not given back

    before = _rerank_calls(keyed_service.url)
    encoder = BiEncoder.load(str(bi_encoder_dir))
    query = "what is a corporation"
    hits = search_server_side(client, indexed, query, embed_query(encoder, query), 20, installed["rerank_pipeline"])
    client.close()
    assert len(hits) == 20
    after = _rerank_calls(keyed_service.url)
    assert after["200"] == before["200"] + 1, (before, after)  # the connector called it with the key ...
    assert after["401"] == before["401"]  # ... and was never refused


def test_serve_over_tls_with_a_key_from_a_file(secured_node: SecuredNode, cross_encoder_dir: Path, service_key_file: Path, tmp_path: Path) -> None:
    """`serve --ssl-certfile/--ssl-keyfile`: https with the node's certificate (CA-signed, SAN 127.0.0.1)."""
    from lrt_rerank.ops.opensearch.security import NODE_CERT, NODE_KEY

    server = ServeProcess(
        [
            "--model", str(cross_encoder_dir), "--api-key-file", str(service_key_file),
            "--ssl-certfile", str(secured_node.credentials_dir / NODE_CERT), "--ssl-keyfile", str(secured_node.credentials_dir / NODE_KEY),
        ],
        tmp_path / "serve-tls.log",
    )  # fmt: skip
    try:
        url = server.url.replace("http://", "https://")
        ready = False
        for _ in range(600):
            if server.proc.poll() is not None:
                pytest.fail(f"serve exited: {server.log_tail()}")
            try:
                ready = httpx.get(url + "/health", verify=secured_node.tls, timeout=2).status_code == 200
            except httpx.TransportError:
                ready = False
            if ready:
                break
            time.sleep(0.5)
        assert ready, server.log_tail()
        body = {"query": "a corporation", "documents": ["A corporation is a legal entity.", "Bananas."]}
        headers = {"authorization": f"Bearer {SERVICE_KEY}"}
        answer = httpx.post(url + "/v1/rerank", json=body, headers=headers, verify=secured_node.tls, timeout=60)
        assert answer.status_code == 200 and answer.json()["results"][0]["index"] == 0
        assert httpx.post(url + "/v1/rerank", json=body, verify=secured_node.tls, timeout=60).status_code == 401
        with pytest.raises(httpx.TransportError):
            httpx.get(server.url + "/health", timeout=5)  # plain http is not served
    finally:
        server.stop()
    assert SERVICE_KEY not in (tmp_path / "serve-tls.log").read_text(encoding="utf-8", errors="replace")


def test_no_log_or_output_holds_a_secret(
    secured_node: SecuredNode, keyed_service: ServeProcess, outputs: Outputs, request: pytest.FixtureRequest
) -> None:
    """Runs last in the module: the node's logs, the service's log, every command's output."""
    secrets = [secured_node.password, SERVICE_KEY, NO_ROLES_PASSWORD]
    searched = 0
    files = [path for path in secured_node.log_dir.rglob("*") if path.is_file()]
    files += [keyed_service.log_path, *sorted(Path(str(request.config.rootpath)).glob("*.log"))]
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        searched += 1
        for secret in secrets:
            assert secret not in text, f"{path} holds a secret"
    for text in outputs.texts:
        for secret in secrets:
            assert secret not in text, "a command printed a secret"
    assert searched >= 2 and len(outputs.texts) >= 4  # at least the fixture's `up` and `status`


def _rerank_calls(service_url: str) -> dict[str, float]:
    """POST /v1/rerank requests the service counted, by status."""
    metrics = httpx.get(service_url + "/metrics", timeout=30).text
    counts = {"200": 0.0, "401": 0.0}
    for match in re.finditer(r'^lrt_rerank_requests_total\{([^}]*)\} ([0-9.e+]+)$', metrics, re.MULTILINE):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if labels.get("route") == "/v1/rerank" and labels.get("status") in counts:
            counts[labels["status"]] += float(match.group(2))
    return counts
