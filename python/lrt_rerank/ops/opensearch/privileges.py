"""Dropping root: OpenSearch refuses to run as root, so under root the JVM runs as another user.

That user is ``nobody`` unless ``LRT_OPENSEARCH_USER`` names another; the node's files are
handed to it, and every directory above the node home must let it pass.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

from lrt_rerank.ops.opensearch.spec import NodeError


def service_user() -> pwd.struct_passwd | None:
    """Under root, the unprivileged account the JVM runs as (OpenSearch refuses root); else None."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("LRT_OPENSEARCH_USER", "nobody")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise NodeError(f"running as root and user {name!r} does not exist; set LRT_OPENSEARCH_USER to an unprivileged user") from None


def check_traversable(home: Path, user: pwd.struct_passwd) -> None:
    """The JVM runs as ``user``: every existing directory above the node home must let it pass."""
    for directory in reversed(home.resolve().parents):
        if not directory.exists():
            break  # the rest is created by `up`, with the usual permissions
        st = directory.stat()
        if st.st_uid == user.pw_uid:
            allowed = st.st_mode & 0o100
        elif st.st_gid == user.pw_gid:
            allowed = st.st_mode & 0o010
        else:
            allowed = st.st_mode & 0o001
        if not allowed:
            raise NodeError(
                f"{directory} (mode {oct(st.st_mode & 0o777)}) does not let user {user.pw_name!r}, which runs OpenSearch "
                "under root, reach the node home; set LRT_OPENSEARCH_WORK (or --work-dir) to a directory below "
                "world-traversable ones, e.g. /var/tmp/lrt-rerank-opensearch"
            )


def chown_tree(root: Path, user: pwd.struct_passwd) -> None:
    """Hand ``root`` and everything below it to ``user`` (once: a tree it already owns is left alone)."""
    if root.stat().st_uid == user.pw_uid:
        return  # handed over when it was assembled; later writes are config files it only reads
    for path in _walk(root):
        os.lchown(path, user.pw_uid, user.pw_gid)


def _walk(root: Path) -> Iterator[Path]:
    yield root
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            yield Path(directory) / name
