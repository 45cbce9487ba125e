"""The node home, assembled once from the resolved artifacts, and each node's configuration.

:func:`install` unpacks the core zip, adds the jar-only modules (their jars plus the descriptor
and security policy kept in ``assets/modules/<name>/``) and installs the plugins with
``opensearch-plugin install --batch`` in dependency order. The home is rebuilt only when its
inputs (version, ``pom.xml``, module descriptors, plugin list) change.

:func:`write_config` writes ``opensearch.yml`` and the heap options on every start.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from lrt_rerank.opensearch.templates import assets_dir
from lrt_rerank.ops.opensearch.java import java_env
from lrt_rerank.ops.opensearch import security
from lrt_rerank.ops.opensearch.maven import jar_modules_for, plugins_for, pom_for, resolve_artifacts, resolve_security_plugin
from lrt_rerank.ops.opensearch.spec import CLUSTER_NAME, NodeError, NodeSpec, Progress

INSTALLED_MARKER = ".lrt-installed.json"


def install(spec: NodeSpec, java_home: Path, say: Progress) -> None:
    """Assemble the node home once per (version, assets); reuse it (and its data) afterwards."""
    fingerprint = _install_fingerprint(spec)
    marker = spec.home / INSTALLED_MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")).get("fingerprint") == fingerprint:
                return
        except (OSError, ValueError):
            pass
        say(f"{spec.home}: assembled from other inputs; rebuilding it (its data is discarded)")
    artifacts = resolve_artifacts(spec, say)
    plugins = {name: artifacts[name] for name in plugins_for(spec.version)}
    if spec.secure:
        plugins[security.PLUGIN] = resolve_security_plugin(spec, say)
    say(f"assembling the node in {spec.home}")
    staging = Path(tempfile.mkdtemp(prefix=f"node-{spec.version}.", dir=spec.work_dir))
    try:
        home = _unpack_core(artifacts["opensearch"], staging, spec.version)
        for module, jars in jar_modules_for(spec.version).items():
            _add_jar_module(home, module, jars, artifacts, spec.version)
        env = java_env(java_home)
        for plugin, archive in plugins.items():
            say(f"installing plugin {plugin}")
            if plugin == security.PLUGIN:
                archive = security.plugin_zip_for(archive, spec.version, staging)
            command = [str(home / "bin" / "opensearch-plugin"), "install", "--batch", archive.resolve().as_uri()]
            result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                log = spec.work_dir / f"plugin-install-{plugin}.log"
                log.write_text(result.stdout + result.stderr, encoding="utf-8")
                raise NodeError(f"installing {plugin} failed (exit {result.returncode})", log)
        (home / INSTALLED_MARKER).write_text(
            json.dumps({"fingerprint": fingerprint, "version": spec.version, "plugins": list(plugins)}, indent=2) + "\n",
            encoding="utf-8",
        )
        if spec.home.exists():
            shutil.rmtree(spec.home)
        home.rename(spec.home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unpack_core(archive: Path, staging: Path, version: str) -> Path:
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(staging)
        # zipfile drops the Unix mode bits: restore them (bin/ scripts must stay executable).
        for info in zf.infolist():
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(staging / info.filename, mode)
    home = staging / f"opensearch-{version}"
    if not (home / "bin" / "opensearch").is_file():
        raise NodeError(f"{archive}: no opensearch-{version}/bin/opensearch inside; not the integ-test-zip distribution")
    return home


def _add_jar_module(home: Path, module: str, jars: tuple[str, ...], artifacts: dict[str, Path], version: str) -> None:
    target = home / "modules" / module
    target.mkdir(parents=True)
    for name in jars:
        shutil.copy2(artifacts[name], target / artifacts[name].name)
    for template in sorted((assets_dir() / "modules" / module).iterdir()):
        text = template.read_text(encoding="utf-8")
        (target / template.name).write_text(text.replace("@OPENSEARCH_VERSION@", version), encoding="utf-8")


def _install_fingerprint(spec: NodeSpec) -> str:
    digest = hashlib.sha256(spec.version.encode())
    digest.update(pom_for(spec.version).read_bytes())
    for template in sorted((assets_dir() / "modules").rglob("*")):
        if template.is_file():
            digest.update(template.relative_to(assets_dir()).as_posix().encode())
            digest.update(template.read_bytes())
    digest.update(",".join(plugins_for(spec.version)).encode())
    if spec.secure:
        digest.update(f"+{security.PLUGIN}:{security.plugin_version(spec.version)}".encode())
    return digest.hexdigest()


def write_config(spec: NodeSpec, run_as: pwd.struct_passwd | None = None) -> None:
    """opensearch.yml and the heap options; rewritten on every start (port/heap may change).

    A cluster node gets its own config directory (a copy of the home's on its first start) with
    its name, ports, data and log paths and the discovery settings. A secured node also gets its
    certificates, users file and the security plugin's settings (:mod:`~lrt_rerank.ops.opensearch.security`;
    its files are handed to ``run_as``, the JVM's user under root).
    """
    lines = [
        "# Written by lrt-rerank (python/lrt_rerank/ops/opensearch/assemble.py) on every `opensearch up`.",
        f"cluster.name: {CLUSTER_NAME}",
        f"node.name: {spec.name}",
        "network.host: 127.0.0.1",
        f"http.port: {spec.port}",
    ]
    if spec.member is None:
        lines.append("discovery.type: single-node")
    else:
        if not spec.config_dir.is_dir():
            spec.node_dir.mkdir(parents=True, exist_ok=True)
            shutil.copytree(spec.home / "config", spec.config_dir)
        for sub in ("data", "logs"):
            (spec.node_dir / sub).mkdir(exist_ok=True)
        seeds = ", ".join(f'"127.0.0.1:{port}"' for port in spec.member.seed_transport_ports)
        managers = ", ".join(f'"lrt-node-{i + 1}"' for i in range(len(spec.member.seed_transport_ports)))
        lines += [
            f"transport.port: {spec.member.transport_port}",
            f"discovery.seed_hosts: [{seeds}]",
            f"cluster.initial_cluster_manager_nodes: [{managers}]",
            f"path.data: {spec.node_dir / 'data'}",
            f"path.logs: {spec.node_dir / 'logs'}",
        ]
    if spec.secure:
        lines += security.write_node_security(spec, run_as)
    lines += ["cluster.routing.allocation.disk.threshold_enabled: false", ""]
    (spec.config_dir / "opensearch.yml").write_text("\n".join(lines), encoding="utf-8")
    options = spec.config_dir / "jvm.options.d"
    options.mkdir(exist_ok=True)
    (options / "lrt-heap.options").write_text(f"-Xms{spec.heap_mb}m\n-Xmx{spec.heap_mb}m\n", encoding="utf-8")
