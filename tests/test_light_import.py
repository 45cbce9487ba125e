"""What works without the optional dependencies: a light ``import lrt_rerank``, the one-line "needs the
X extra" errors, and a snapshot import fused by ONNX Runtime's transformer optimizer without torch.

Each check runs in a fresh interpreter, since this one has the test and train extras loaded.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: Top-level modules that ``import lrt_rerank`` must not load (extras, or heavy and not needed to score).
HEAVY = ("onnx", "torch", "fastapi", "uvicorn", "redis", "opensearchpy", "matplotlib", "transformers")

#: Makes each named module unimportable in the child interpreter (``import x`` raises ImportError).
BLOCK = "import sys\nfor _name in {names!r}:\n    sys.modules[_name] = None\n"


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)


def _loaded_after(statement: str) -> list[str]:
    code = f"{statement}\nimport sys, json\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = _python(code)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    "statement",
    [
        "import lrt_rerank",
        "from lrt_rerank import CrossEncoder, BiEncoder, ScoreCache, rrf",
        "import lrt_rerank.models",
    ],
)
def test_import_loads_no_optional_or_heavy_module(statement: str) -> None:
    loaded = _loaded_after(statement)
    assert "lrt_rerank" in loaded
    assert not [m for m in HEAVY if m in loaded], f"{statement} loaded {[m for m in HEAVY if m in loaded]}"


def test_scoring_with_the_packaged_model_loads_no_extra() -> None:
    statement = (
        "from lrt_rerank import CrossEncoder\n"
        "scores = CrossEncoder.load().score('vitamin d', ['Vitamin D is made in the skin.', 'Cars have wheels.'])\n"
        "assert scores[0] > scores[1], scores"
    )
    loaded = _loaded_after(statement)
    assert not [m for m in HEAVY if m in loaded], [m for m in HEAVY if m in loaded]


@pytest.mark.parametrize(
    ("argv", "blocked", "message"),
    [
        (["serve"], ["fastapi", "uvicorn", "redis"], "lrt-rerank serve: needs the serve extra: pip install 'lrt-rerank[serve]'"),
        (
            # up/down/status run the local node without opensearch-py; what talks to a cluster needs it
            ["opensearch", "pipeline", "--url", "http://127.0.0.1:1"],
            ["opensearchpy"],
            "lrt-rerank opensearch: needs the opensearch extra: pip install 'lrt-rerank[opensearch]'",
        ),
    ],
)
def test_a_command_without_its_extra_says_which_in_one_line(argv: list[str], blocked: list[str], message: str) -> None:
    code = BLOCK.format(names=blocked) + "from lrt_rerank.cli import main\nsys.exit(main(sys.argv[1:]))"
    result = _python(code, *argv)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.strip() == message


def test_eval_plot_without_matplotlib_fails_before_evaluating(tmp_path: Path) -> None:
    code = BLOCK.format(names=["matplotlib"]) + "from lrt_rerank.cli import main\nsys.exit(main(sys.argv[1:]))"
    dataset = Path(__file__).resolve().parents[1] / "python" / "lrt_rerank" / "data" / "nfcorpus-test"
    result = _python(code, "eval", "--dataset", str(dataset), "--reranker", "none", "--plot", str(tmp_path / "p.png"))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.strip() == "lrt-rerank eval: --plot: needs the plot extra: pip install 'lrt-rerank[plot]'"
    assert result.stdout == ""


def test_snapshot_import_is_fused_without_torch(tmp_path: Path) -> None:
    """onnxruntime's ``optimize_model(opt_level=1)`` imports torch; the importer runs its fusions without it."""
    from lrt_rerank.models.store import minilm_source_dir

    snapshot = tmp_path / "all-MiniLM-L6-v2"
    snapshot.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copyfile(minilm_source_dir() / name, snapshot / name)
    code = BLOCK.format(names=["torch", "transformers", "sentence_transformers"]) + (
        "import json\nfrom pathlib import Path\n"
        "from lrt_rerank.models.importers import import_snapshot\n"
        "out = import_snapshot(Path(sys.argv[1]), Path(sys.argv[2]))\n"
        "print(json.dumps({k: json.loads((out / 'card.json').read_text()).get(k) for k in ('optimization', 'measured')}))\n"
        "assert 'torch' not in {m.split('.')[0] for m in sys.modules if sys.modules[m] is not None}\n"
    )
    result = _python(code, str(snapshot), str(tmp_path / "imported"))
    assert result.returncode == 0, result.stderr
    card = json.loads(result.stdout.splitlines()[-1])
    optimization = card["optimization"]
    assert optimization["fused"] is True, optimization
    assert optimization["ops"]["Attention"] == 6 and optimization["ops"]["EmbedLayerNormalization"] == 1, optimization
    assert "reason" not in optimization
    assert card["measured"]["fusion_parity_max_rel_error"] <= optimization["parity_rtol"]


def test_extras_in_pyproject_match_the_module_map() -> None:
    """pyproject.toml's extras and lrt_rerank.extras (which names them in errors) list the same things."""
    tomllib = pytest.importorskip("tomllib")
    from lrt_rerank.extras import EXTRAS

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    extras = {name: {req.split(">")[0].split("[")[0].lower() for req in reqs} for name, reqs in project["optional-dependencies"].items()}
    core = {req.split(">")[0].lower() for req in project["dependencies"]}
    assert extras["all"] == extras["serve"] | extras["opensearch"] | extras["plot"]
    assert not core & extras["all"], "an extra's package is also a core dependency"
    distributions = {"opensearchpy": "opensearch-py", "prometheus_client": "prometheus-client", "sentence_transformers": "sentence-transformers"}
    for extra in ("serve", "opensearch", "plot", "train"):
        named = {distributions.get(module, module) for module in EXTRAS[extra]} - {"pydantic", "starlette"}  # fastapi's own
        assert named <= extras[extra], (extra, named - extras[extra])
