"""Wheel smoke test: the pip product, as a new user gets it, outside the checkout.

1. Runs the README's install block (marker ``smoke-install``) in the checkout: maturin builds the
   abi3 wheel into ``dist/`` and installs it into a fresh virtualenv ``~/lrt``, where ``HOME`` is
   a new temporary folder; the sdist is built too.
2. Runs the README's quickstart block (marker ``smoke``) verbatim with bash ``-euo pipefail``, in
   a temporary folder outside the checkout (with ``../shared`` beside it, as in CI), with that
   virtualenv first on PATH and no other environment variables: ``--version``, index, search,
   eval, ``serve`` with ``/health`` and ``/v1/rerank``, and ``opensearch up|status|index|pipeline``,
   eval through OpenSearch, ``opensearch down``.

Exit status 0 only if every command succeeded; the wheel's size is printed. Run by
``./dev.sh test`` after pytest (OpenSearch's port 9200 must be free).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

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
    finally:
        lrt = home / "lrt" / "bin" / "lrt-rerank"
        if lrt.exists():  # a failed block may have left the node running
            subprocess.run([str(lrt), "opensearch", "down"], env={"PATH": SYSTEM_PATH, "HOME": str(home)}, check=False)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
