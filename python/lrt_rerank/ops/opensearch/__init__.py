"""A local OpenSearch node, or a cluster of several on 127.0.0.1, built only from Maven Central artifacts.

``up`` resolves the artifacts listed in the packaged ``assets/pom.xml`` with Maven (cached in a
local repository under the work directory), assembles a node home once, and starts it on the first
JDK new enough for the version (2.x: 11+, 3.x: 21+) among ``OPENSEARCH_JAVA_HOME``, ``JAVA_HOME``,
the ``java`` on PATH and ``/usr/lib/jvm/*``. Under root the JVM runs as an unprivileged user. By concern:

* :mod:`~lrt_rerank.ops.opensearch.spec`        :class:`NodeSpec`, :class:`NodeStatus`, :class:`NodeError`, the work-dir layout
* :mod:`~lrt_rerank.ops.opensearch.java`        finding and checking the JDK
* :mod:`~lrt_rerank.ops.opensearch.maven`       the artifact lists (2.x; 3.x: core + k-NN) and ``mvn dependency:build-classpath``
* :mod:`~lrt_rerank.ops.opensearch.assemble`    the node home (core, jar modules, plugins) and ``opensearch.yml``
* :mod:`~lrt_rerank.ops.opensearch.privileges`  the unprivileged service user under root
* :mod:`~lrt_rerank.ops.opensearch.launch`      ``up``/``down``/``kill``/``pid``/``status`` of one node
* :mod:`~lrt_rerank.ops.opensearch.cluster`     :class:`ClusterSpec`: several nodes, their status and manifest
* :mod:`~lrt_rerank.ops.opensearch.security`    ``up --secure``: the security plugin, certificates, the admin user
"""

from lrt_rerank.ops.opensearch.cluster import (
    ClusterSpec,
    ClusterStatus,
    cluster_status,
    down_cluster,
    recorded_cluster,
    up_cluster,
)
from lrt_rerank.ops.opensearch.java import find_java_home
from lrt_rerank.ops.opensearch.launch import down, get_json, kill, pid, status, up
from lrt_rerank.ops.opensearch.maven import resolve_artifacts
from lrt_rerank.ops.opensearch.privileges import check_traversable
from lrt_rerank.ops.opensearch.spec import DEFAULT_VERSION, NodeError, NodeSpec, NodeStatus, default_work_dir

__all__ = [
    "DEFAULT_VERSION",
    "ClusterSpec",
    "ClusterStatus",
    "NodeError",
    "NodeSpec",
    "NodeStatus",
    "check_traversable",
    "cluster_status",
    "default_work_dir",
    "down",
    "down_cluster",
    "find_java_home",
    "get_json",
    "kill",
    "pid",
    "recorded_cluster",
    "resolve_artifacts",
    "status",
    "up",
    "up_cluster",
]
