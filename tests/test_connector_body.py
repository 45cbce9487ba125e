"""The ml-commons connector body that `opensearch pipeline` installs: the service key travels only as
the connector's credential, and the connector's (listable) name reveals nothing about it."""

from __future__ import annotations

import hashlib
import json

from lrt_rerank.opensearch.pipeline import connector_body

URL = "http://127.0.0.1:8000"


def body(key: str | None) -> dict:
    return connector_body(URL, key, read_timeout_s=5, connection_timeout_ms=1000)


def test_the_key_is_a_credential_and_only_that() -> None:
    key = "k3y-" + "x" * 40
    b = body(key)
    assert b["credential"] == {"api_key": key}
    headers = [a["headers"]["Authorization"] for a in b["actions"]]
    assert headers and all(h == "Bearer ${credential.api_key}" for h in headers)
    without = {k: v for k, v in b.items() if k != "credential"}
    assert key not in json.dumps(without)


def test_the_name_follows_the_key_without_a_fast_hash_of_it() -> None:
    a, a_again, other, none = body("alpha-key"), body("alpha-key"), body("beta-key"), body(None)
    assert a["name"] == a_again["name"]  # idempotent re-install
    assert len({a["name"], other["name"], none["name"]}) == 3  # a new key gets a new connector
    # the name is not a plain digest of the key or of the key with the rest of the body
    fast = {hashlib.sha256(b"alpha-key").hexdigest()[:12], hashlib.sha256(json.dumps({**a, "name": None}, sort_keys=True).encode()).hexdigest()[:12]}
    assert a["name"].rsplit("-", 1)[-1] not in fast
    assert "Authorization" not in none["actions"][0]["headers"]
