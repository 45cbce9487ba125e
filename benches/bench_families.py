"""Families of issue 25: engine latency against sentence-transformers, and the > 2 GB import.

Default: for each family (XLM-R, ModernBERT, DeBERTa-v3, Qwen3-Reranker template) a small random-init
model (4 layers x 256) is saved, imported (FP32 and INT8) and timed re-ranking 1 query x 32 passages,
interleaved with sentence-transformers' CrossEncoder in FP32 and bf16 (Qwen3: transformers with the
card's scoring code, as sentence-transformers has no such head), best of ``--repeats`` per round.

``--large``: an XLM-R-large-shaped random model (24 x 1024, ~2.2 GB FP32) saved in 5 shards, then
``models import`` in a child process: wall time and the child's peak RSS, FP32 and INT8.

    python benches/bench_families.py [--repeats 5] [--threads 2]
    python benches/bench_families.py --large --work /var/tmp/lrt-large
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

WORDS = "vitamin d bone health calcium risk fracture heart disease coffee trial patients study dose daily".split()


def _passages(n: int, words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(n)]


def _snapshots(root: Path, layers: int, hidden: int) -> dict[str, Path]:
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
    out: dict[str, Path] = {}
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
        out[name] = root / name
    return out


def _best(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


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
        for name, src in _snapshots(work, args.layers, args.hidden).items():
            template = {"template": "qwen3-reranker"} if name == "qwen3" else {}
            runners: dict[str, Callable[[], Any]] = {}
            for variant, int8 in (("lrt fp32", False), ("lrt int8", True)):
                out = import_snapshot(src, work / f"{name}-{variant[-4:]}", int8=int8, max_length=256, **template)
                ce = CrossEncoder.load(out, threads=args.threads)
                runners[variant] = lambda ce=ce: ce.score(query, passages)
            if name == "qwen3":
                tok = AutoTokenizer.from_pretrained(str(src), padding_side="left")
                for variant, dtype in (("transformers fp32", torch.float32), ("transformers bf16", torch.bfloat16)):
                    lm = AutoModelForCausalLM.from_pretrained(str(src), dtype=dtype).eval()
                    texts = [f"<Instruct>: x\n<Query>: {query}\n<Document>: {p}" for p in passages]

                    def run(lm: Any = lm) -> Any:
                        with torch.no_grad():
                            enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
                            return lm(**enc).logits[:, -1, :]

                    runners[variant] = run
            else:
                for variant, dtype in (("sentence-transformers fp32", torch.float32), ("sentence-transformers bf16", torch.bfloat16)):
                    st = STCrossEncoder(str(src), max_length=256, model_kwargs={"dtype": dtype})
                    runners[variant] = lambda st=st: st.predict([(query, p) for p in passages], batch_size=16)
            best = {k: float("inf") for k in runners}
            for _ in range(args.rounds):  # interleaved rounds
                for k, fn in runners.items():
                    best[k] = min(best[k], _best(fn, args.repeats))
            peer = next(k for k in best if k.endswith("fp32") and not k.startswith("lrt"))
            rows[name] = {k: {"ms": round(v, 1), "vs_peer_fp32": round(best[peer] / v, 2)} for k, v in best.items()}
            print(name, json.dumps(rows[name]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def large(args: argparse.Namespace) -> dict[str, Any]:
    """Save an XLM-R-large-shaped random model in shards, then import it in a child process (peak RSS)."""
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
        )
        subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)
    report: dict[str, Any] = {}
    for variant, flags in (("fp32", []), ("int8", ["--int8"])):
        out = work / f"out-{variant}"
        shutil.rmtree(out, ignore_errors=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lrt_rerank.cli", "models", "import", str(src), "--out", str(out), *flags], check=True)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        files = {p.name: p.stat().st_size for p in out.iterdir()}
        report[variant] = {"seconds": round(seconds, 1), "peak_rss_gb": round(max(peak, before) / 1e6, 2), "files": files}
        print(variant, json.dumps(report[variant]), flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", action="store_true")
    parser.add_argument("--work", default="/var/tmp/lrt-large")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(large(args) if args.large else latency(args), indent=2))


if __name__ == "__main__":
    main()
