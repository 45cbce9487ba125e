"""Families of issue 25: engine latency against sentence-transformers, and the > 2 GB import.

Default: for each family (XLM-R, ModernBERT, DeBERTa-v3, Qwen3-Reranker template) a small random-init
model (4 layers x 256) is saved, imported (FP32 and INT8) and timed re-ranking 1 query x 32 passages,
interleaved with sentence-transformers' CrossEncoder in FP32 and bf16 (Qwen3: transformers with the
card's prompt and its last-token logits, as sentence-transformers has no such head), best of ``--repeats``
per round. Each call's FLOPs are counted from the model (2 x tokens x the transformer layers' weight-matrix
entries, plus 4 x layers x tokens^2 x attention width for scores and context, on each pair's real tokens) and
reported as achieved GFLOP/s next to a torch matmul probe (FP32 and bf16, [2048, hidden] x [hidden, 4 hidden])
timed in the same interleaved rounds. The card's ``optimization`` (the ORT fusions kept) is printed per family.

``--large``: an XLM-R-large-shaped random model (24 x 1024, ~2.2 GB FP32) saved in 500 MB shards, then
``models import`` in a child process: wall time and the child's peak RSS, FP32 and INT8; then each
imported directory is loaded by the engine and scores 1 query x 8 passages in a child process (load time,
scoring time, peak RSS).

    python benches/bench_families.py [--repeats 5] [--threads 2]
    python benches/bench_families.py --large --work /var/tmp/lrt-large
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

#: Sequence limit of every engine and peer (the Qwen3 prompt included).
MAX_LENGTH = 256
#: Rows of the matmul probe's left operand.
PROBE_ROWS = 2048
WORDS = "vitamin d bone health calcium risk fracture heart disease coffee trial patients study dose daily".split()


def _passages(n: int, words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(n)]


def _snapshots(root: Path, layers: int, hidden: int) -> dict[str, tuple[Path, Any, Any]]:
    """name -> (snapshot folder, the transformers model, its tokenizer)."""
    import torch
    from transformers import (
        DebertaV2Config, DebertaV2ForSequenceClassification, ModernBertConfig,
        ModernBertForSequenceClassification, Qwen3Config, Qwen3ForCausalLM, XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )  # fmt: skip

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_families import _byte_level_bpe  # the tests' tokenizer builders
    from test_import import _unigram_vocab, _vocab_file
    from transformers import BertTokenizer, DebertaV2Tokenizer, XLMRobertaTokenizer

    from lrt_rerank.models.prompts import QWEN3_RERANKER

    torch.manual_seed(0)
    size = dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=hidden // 64, intermediate_size=4 * hidden)
    out: dict[str, tuple[Path, Any, Any]] = {}
    unigram = XLMRobertaTokenizer(vocab=_unigram_vocab())
    models: dict[str, tuple[Any, Any]] = {
        "xlm-roberta": (XLMRobertaForSequenceClassification(XLMRobertaConfig(
            vocab_size=len(unigram), max_position_embeddings=514, type_vocab_size=1, num_labels=1, pad_token_id=1,
            bos_token_id=0, eos_token_id=2, **size)), unigram),
    }
    wordpiece = BertTokenizer(vocab=str(_vocab_file(root / "vocab.txt")))
    models["modernbert"] = (ModernBertForSequenceClassification(ModernBertConfig(
        vocab_size=len(wordpiece), max_position_embeddings=512, num_labels=1, pad_token_id=0, bos_token_id=2,
        eos_token_id=3, cls_token_id=2, sep_token_id=3, **size)), wordpiece)
    deberta_tok = DebertaV2Tokenizer(vocab=_unigram_vocab())
    models["deberta-v2"] = (DebertaV2ForSequenceClassification(DebertaV2Config(
        vocab_size=len(deberta_tok), max_position_embeddings=512, type_vocab_size=0, num_labels=1, relative_attention=True,
        position_buckets=256, pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", share_att_key=True,
        position_biased_input=False, pad_token_id=0, **size)), deberta_tok)
    corpus = _passages(300, 8) + [QWEN3_RERANKER[k] for k in ("prefix", "format", "suffix", "instruction")] * 20 + ["yes", "no"] * 50
    bpe = _byte_level_bpe(corpus, 1200)
    models["qwen3"] = (Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(bpe), max_position_embeddings=1024, num_key_value_heads=hidden // 128, head_dim=64,
        pad_token_id=bpe.pad_token_id, architectures=["Qwen3ForCausalLM"], **size)), bpe)
    for name, (model, tokenizer) in models.items():
        model.eval().save_pretrained(str(root / name))
        tokenizer.save_pretrained(str(root / name))
        out[name] = (root / name, model, tokenizer)
    return out


def _best(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def _qwen_prompts(query: str, passages: list[str]) -> list[str]:
    """The card's whole prompt for each pair (prefix, format with the default instruction, suffix)."""
    from lrt_rerank.models.prompts import QWEN3_RERANKER as T

    body = [T["format"].format(instruction=T["instruction"], query=query, document=p) for p in passages]
    return [T["prefix"] + b + T["suffix"] for b in body]


def _tokens(name: str, tokenizer: Any, query: str, passages: list[str], max_length: int) -> list[int]:
    """Real tokens of each pair as the engine sees them (special tokens included)."""
    if name == "qwen3":
        enc = tokenizer(_qwen_prompts(query, passages), truncation=True, max_length=max_length)
    else:
        enc = tokenizer([query] * len(passages), passages, truncation=True, max_length=max_length)
    return [len(ids) for ids in enc["input_ids"]]


def gflop(model: Any, tokens: list[int]) -> float:
    """FLOPs of one call in units of 1e9: every weight matrix of the transformer layers once per token (2 FLOPs
    per entry), plus attention scores and context (4 x layers x t^2 x attention width per pair). Embeddings,
    heads, norms, DeBERTa's relative-position terms and ModernBERT's window are left out (a lower bound)."""
    import re

    config = model.config
    layer = re.compile(r"\.layers?\.\d+\.")
    weights = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and layer.search(n))
    width = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    width *= config.num_attention_heads
    return sum(2 * weights * t + 4 * config.num_hidden_layers * t * t * width for t in tokens) / 1e9


def _card_optimization(path: Path) -> dict[str, Any]:
    card = json.loads((path / "card.json").read_text(encoding="utf-8"))
    return {"optimization": card.get("optimization"), "measured": card.get("measured")}


def latency(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from sentence_transformers import CrossEncoder as STCrossEncoder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lrt_rerank import CrossEncoder
    from lrt_rerank.models.importers import import_snapshot

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-families-"))
    query, passages = "vitamin d and bone fracture risk", _passages(32, 60)
    rows: dict[str, Any] = {}
    try:
        for name, (src, model, tokenizer) in _snapshots(work, args.layers, args.hidden).items():
            template = {"template": "qwen3-reranker"} if name == "qwen3" else {}
            work_gflop = gflop(model, _tokens(name, tokenizer, query, passages, MAX_LENGTH))
            runners: dict[str, Callable[[], Any]] = {}
            cards: dict[str, Any] = {}
            for variant, int8 in (("lrt fp32", False), ("lrt int8", True)):
                out = import_snapshot(src, work / f"{name}-{variant[-4:]}", int8=int8, max_length=MAX_LENGTH, **template)
                cards[variant] = _card_optimization(out)
                ce = CrossEncoder.load(out, threads=args.threads)
                runners[variant] = lambda ce=ce: ce.score(query, passages)
            if name == "qwen3":
                tok = AutoTokenizer.from_pretrained(str(src), padding_side="left")
                texts = _qwen_prompts(query, passages)
                for variant, dtype in (("transformers fp32", torch.float32), ("transformers bf16", torch.bfloat16)):
                    lm = AutoModelForCausalLM.from_pretrained(str(src), dtype=dtype).eval()

                    def run(lm: Any = lm, tok: Any = tok, texts: list[str] = texts) -> Any:
                        with torch.no_grad():
                            enc = tok(texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
                            return lm(**enc).logits[:, -1, :]

                    runners[variant] = run
            else:
                for variant, dtype in (("sentence-transformers fp32", torch.float32), ("sentence-transformers bf16", torch.bfloat16)):
                    st = STCrossEncoder(str(src), max_length=MAX_LENGTH, model_kwargs={"dtype": dtype})
                    runners[variant] = lambda st=st: st.predict([(query, p) for p in passages], batch_size=16)
            probe_gflop = 2 * PROBE_ROWS * args.hidden * 4 * args.hidden / 1e9
            for variant, dtype in (("matmul probe fp32", torch.float32), ("matmul probe bf16", torch.bfloat16)):
                a, b = torch.randn(PROBE_ROWS, args.hidden, dtype=dtype), torch.randn(args.hidden, 4 * args.hidden, dtype=dtype)
                runners[variant] = lambda a=a, b=b: torch.matmul(a, b)
            best = {k: float("inf") for k in runners}
            for _ in range(args.rounds):  # interleaved rounds
                for k, fn in runners.items():
                    best[k] = min(best[k], _best(fn, args.repeats))
            peer = next(k for k in best if k.endswith("fp32") and not k.startswith(("lrt", "matmul")))
            row: dict[str, Any] = {"gflop_per_call": round(work_gflop, 2)}
            for k, ms in best.items():
                flops = probe_gflop if k.startswith("matmul") else work_gflop
                row[k] = {"ms": round(ms, 2 if k.startswith("matmul") else 1), "gflop_s": round(flops / ms * 1000, 1)}
                if not k.startswith("matmul"):
                    row[k]["vs_peer_fp32"] = round(best[peer] / ms, 2)
            row["cards"] = cards
            rows[name] = row
            print(name, json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


#: Appended to a child's code: its own peak RSS and the figures it set in ``result``, as the last line of stdout.
_REPORT = """
import json as _json, resource as _resource
result["peak_rss_gib"] = round(_resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
print(_json.dumps(result))
"""


def _child(code: str) -> dict[str, Any]:
    """Run ``code`` (which fills a dict ``result``) in a fresh interpreter; its figures plus wall time and peak RSS."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "result = {}\n" + code + _REPORT], check=True, stdout=subprocess.PIPE, text=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return {"seconds": round(time.perf_counter() - start, 1), **report}


def large(args: argparse.Namespace) -> dict[str, Any]:
    """Save an XLM-R-large-shaped random model in shards, import it in a child process (FP32, INT8), then load
    and score each import in another child: wall times and each child's own peak RSS."""
    work = Path(args.work)
    src = work / "xlmr-large"
    if not (src / "config.json").is_file():
        code = (
            "import sys, torch; sys.path.insert(0, 'tests')\n"
            "from test_import import _unigram_vocab\n"
            "from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaTokenizer\n"
            "tok = XLMRobertaTokenizer(vocab=_unigram_vocab())\n"
            "c = XLMRobertaConfig(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,"
            " intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1, num_labels=1, pad_token_id=1)\n"
            f"m = XLMRobertaForSequenceClassification(c); m.save_pretrained({str(src)!r}, max_shard_size='500MB')\n"
            f"tok.save_pretrained({str(src)!r})\n"
            "result['parameters'] = sum(p.numel() for p in m.parameters())\n"
        )
        root = Path(__file__).resolve().parent.parent
        print("save", json.dumps(_child(f"import os; os.chdir({str(root)!r})\n" + code)), flush=True)
    shards = sorted(p.name for p in src.glob("*.safetensors"))
    report: dict[str, Any] = {"snapshot": {"shards": len(shards), "bytes": sum((src / n).stat().st_size for n in shards)}}
    query = "vitamin d and bone fracture risk"
    passages = _passages(8, 60)
    for variant, flags in (("fp32", []), ("int8", ["--int8"])):
        if variant not in args.variants.split(","):
            continue
        out = work / f"out-{variant}"
        shutil.rmtree(out, ignore_errors=True)
        argv = ["models", "import", str(src), "--out", str(out), *flags]
        imported = _child(f"from lrt_rerank.cli import main\nresult['rc'] = main({argv!r})\n")
        imported["files"] = {p.name: p.stat().st_size for p in out.iterdir()}
        card = json.loads((out / "card.json").read_text(encoding="utf-8"))
        imported["card"] = {k: card.get(k) for k in ("external_data", "optimization", "parameters", "quantization")}
        scored = _child(
            "import time, numpy as np\nfrom lrt_rerank import CrossEncoder\n"
            f"t = time.perf_counter(); ce = CrossEncoder.load({str(out)!r}, threads={args.threads})\n"
            "result['load_seconds'] = round(time.perf_counter() - t, 1)\n"
            f"t = time.perf_counter(); s = ce.score({query!r}, {passages!r})\n"
            "result['score_seconds'] = round(time.perf_counter() - t, 2)\n"
            "result['scores_finite'] = bool(np.all(np.isfinite(s))); result['scores'] = [round(float(x), 4) for x in s]\n"
        )
        report[variant] = {"import": imported, "load_and_score": scored}
        print(variant, json.dumps(report[variant]), flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", action="store_true")
    parser.add_argument("--work", default="/var/tmp/lrt-large")
    parser.add_argument("--variants", default="fp32,int8", help="--large: which imports to run (fp32, int8)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(large(args) if args.large else latency(args), indent=2))


if __name__ == "__main__":
    main()
