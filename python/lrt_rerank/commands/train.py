"""``lrt-rerank train teacher|distill|export|report|all`` (need the ``train`` extra: torch, transformers);
``lrt-rerank export`` is kept as an alias of ``train export``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_DATASET = Path("../shared/data/nfcorpus")


def _layer_map(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers {text!r}: expected comma-separated layer numbers, e.g. 0,5") from None


def _labelled_dir(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"--model {text!r}: expected LABEL=DIR, e.g. 'LRT INT8=runs/lrt-int8'")
    if not (Path(path) / "card.json").is_file():
        raise argparse.ArgumentTypeError(f"--model {text!r}: {Path(path) / 'card.json'} not found (not a model directory)")
    return label.strip(), Path(path)


def _common(p: argparse.ArgumentParser, out_default: str, max_length: int, negatives: int, epochs: float, lr: float) -> None:
    p.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="BEIR dataset folder with qrels/train.tsv and qrels/dev.tsv (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path(out_default), help="checkpoint directory to write (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=max_length, help="tokens per (query, passage) pair (default: %(default)s)")
    p.add_argument("--negatives", type=int, default=negatives, help="hard negatives per positive (default: %(default)s)")
    p.add_argument("--negative-depth", type=int, default=50, help="negatives are drawn from this many RRF candidates (default: %(default)s)")
    p.add_argument("--groups-per-query", type=int, default=1, help="positives (groups) per train query and epoch (default: %(default)s)")
    p.add_argument("--train-queries", type=int, default=0, help="use only the first N train queries (0 = all)")
    p.add_argument("--epochs", type=float, default=epochs, help="passes over the groups (default: %(default)s)")
    p.add_argument("--batch-groups", type=int, default=4, help="groups per optimizer step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=lr, help="encoder learning rate, warm-up then linear decay (default: %(default)s)")
    p.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the scoring head (default: %(default)s)")
    p.add_argument("--warmup", type=float, default=0.1, help="share of the steps spent warming up (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate on the dev subset every N steps (0 = only at the end)")
    p.add_argument("--dev-queries", type=int, default=40, help="dev queries for model selection (default: %(default)s)")
    p.add_argument("--dev-depth", type=int, default=30, help="RRF candidates re-ranked per dev query (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    p.add_argument(
        "--prior-weight", type=float, default=0.0,
        help="train as a residual of the first stage: the loss sees logit + W * z(-log first-stage rank) (default: %(default)s = logit alone)",
    )
    p.add_argument("--seed", type=int, default=13, help="random seed (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    train = sub.add_parser("train", help="train re-rankers (needs the train extra: pip install .[train])")
    tsub = train.add_subparsers(dest="train_command", metavar="RECIPE", required=True)

    teacher = tsub.add_parser("teacher", help="fine-tune a 6-layer cross-encoder from all-MiniLM-L6-v2 on train qrels + hard negatives")
    _common(teacher, "runs/teacher", max_length=128, negatives=7, epochs=1.0, lr=5e-5)
    teacher.add_argument("--layers", type=int, default=6, help="backbone layers to keep (default: %(default)s)")
    teacher.add_argument("--lexical-init", type=float, default=15.0, help="starting weight of the exact-match term (default: %(default)s, chosen on dev)")
    teacher.add_argument("--clicks", type=Path, help="a click log (JSONL: query, shown, clicked) whose records become weak-label groups")
    teacher.add_argument("--cloze", type=int, default=0, help="add N inverse-cloze groups made from the corpus: a sentence as query, "
                         "the rest of its document as positive (default: %(default)s)")
    teacher.set_defaults(func=cmd_teacher)

    student = tsub.add_parser("distill", help="distill the LRT: a few layers, taught by a teacher's scores")
    _common(student, "runs/lrt", max_length=128, negatives=7, epochs=1.0, lr=1e-4)
    student.add_argument(
        "--teacher", type=Path, required=True,
        help="a checkpoint from `train teacher`, a cross-encoder model directory (card.json, FP32 or INT8, e.g. from "
        "`models import`) or a Hugging Face snapshot folder; the last two are scored with their own tokenizer and max length",
    )
    student.add_argument(
        "--layers", type=_layer_map, default=[0, 5],
        help="layers the student keeps, of the teacher checkpoint or, for other teachers, of all-MiniLM-L6-v2, e.g. 0,5 (default: 0,5)",
    )
    student.add_argument(
        "--lexical-init", type=float, default=15.0,
        help="starting weight of the exact-match term of a student that starts from all-MiniLM-L6-v2 (default: %(default)s)",
    )
    student.add_argument("--kd-weight", type=float, default=0.5, help="weight of the distillation loss against the label loss (default: %(default)s)")
    student.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of the distillation loss (default: %(default)s)")
    student.set_defaults(func=cmd_distill)

    _register_export(tsub.add_parser("export", help=EXPORT_HELP))
    # the factory's commands live under `train`; the top-level name is kept for older scripts
    _register_export(sub.add_parser("export", help=f"{EXPORT_HELP} (alias of `train export`)"))

    report = tsub.add_parser("report", help="re-rank dev/test/out-of-domain with model directories; choose interpolation on dev; write figures")
    report.add_argument("--model", action="append", type=_labelled_dir, required=True, metavar="LABEL=DIR",
                        help="a model directory to report, e.g. 'LRT INT8=runs/lrt-int8' (repeat; rows keep this order)")
    report.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="in-domain BEIR dataset: dev tunes, test reports (default: %(default)s)")
    report.add_argument("--ood", type=Path, action="append", default=[], help="out-of-domain BEIR dataset(s), test split (repeatable)")
    report.add_argument("--cache", type=Path, default=Path("runs/.candidates"), help="where first-stage candidates are cached (default: %(default)s)")
    report.add_argument("--threads", type=int, default=2, help="engine threads per model (default: %(default)s)")
    report.add_argument("--out", type=Path, required=True, help="JSON report to write (a Markdown table is printed)")
    report.add_argument("--write-cards", action="store_true", help="also record each model's figures and dev-chosen weight in its card.json")
    report.add_argument("--teacher", metavar="LABEL", help="the --model label of the teacher: the other models' rows gain their retention of its gain")
    report.add_argument("--quiet", action="store_true", help="no progress bars")
    report.set_defaults(func=cmd_report)

    _register_all(tsub)


EXPORT_HELP = "checkpoint -> ONNX model directory (fused, FP32) and its INT8 copy"


def _register_export(export: argparse.ArgumentParser) -> None:
    export.add_argument("checkpoint", type=Path, help="checkpoint directory from `train teacher` or `train distill`")
    export.add_argument("--out", type=Path, required=True, help="FP32 model directory to write")
    export.add_argument("--int8", type=Path, help="also write the INT8 (dynamic, per-channel) model directory here")
    export.add_argument("--max-length", type=int, help="card max_length (default: the training max length)")
    export.add_argument("--name", help="model name in the card (default: the output folder name)")
    export.add_argument("--no-optimize", action="store_true", help="skip ONNX Runtime's transformer fusions")
    export.set_defaults(func=cmd_export)


def _register_all(tsub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from lrt_rerank.train.factory import FactoryConfig

    d = FactoryConfig(dataset=Path("."), out=Path("."))
    p = tsub.add_parser(
        "all", help="the whole factory: teacher, teacher-scored lists, distill, export + INT8, report (resumable)",
        description="Writes RUN/teacher-fp32/ and RUN/lrt-int8/ (model directories for --reranker), RUN/report.json and "
        "RUN/report.md. A rerun with the same RUN skips finished stages and reuses the cached teacher scores.",
    )
    p.add_argument("--dataset", type=Path, required=True, help="BEIR dataset folder with qrels/train.tsv and qrels/dev.tsv (test.tsv, if present, is reported)")
    p.add_argument("--out", type=Path, required=True, metavar="RUN", help="run directory")
    p.add_argument("--teacher", type=Path, help="use this teacher instead of training one: a checkpoint, a cross-encoder model directory or a Hugging Face snapshot")
    p.add_argument("--queries", type=Path, help="unlabelled in-domain queries for the teacher to score: one per line, or BEIR queries.jsonl; "
                   "refused if it holds a dev or test query")
    p.add_argument("--cache", type=Path, help="where mined candidates and teacher scores are kept (default: RUN/.candidates); share it between runs")
    p.add_argument("--pseudo-queries", type=int, default=d.pseudo_queries, help="pseudo-queries from corpus titles and first sentences (default: %(default)s; 0 = none)")
    p.add_argument("--max-length", type=int, default=d.max_length, help="tokens per pair, teacher and student (default: %(default)s)")
    p.add_argument("--teacher-layers", type=int, default=d.teacher_layers, help="teacher layers of all-MiniLM-L6-v2 (default: %(default)s)")
    p.add_argument("--teacher-epochs", type=float, default=d.teacher_epochs, help="(default: %(default)s)")
    p.add_argument("--teacher-lr", type=float, default=d.teacher_lr, help="(default: %(default)s)")
    p.add_argument("--clicks", type=Path, help="a click log, JSONL lines {\"query\", \"shown\": [ids], \"clicked\": [ids]}: weak-label teacher "
                   "groups (clicked vs skipped-above) and more queries for the teacher to score; refused if it holds a dev or test query")
    p.add_argument("--teacher-cloze", type=int, default=d.teacher_cloze,
                   help="inverse-cloze groups from the corpus added to the teacher's judged ones (default: %(default)s)")
    p.add_argument("--teacher-fusion", action="store_true",
                   help="distil the fusion teacher: the teacher's z-scored logit plus the first stage's z-scored BM25 and dense scores, "
                   "weights chosen on train (first stage) and dev (teacher); see docs/model-factory.md")
    p.add_argument("--layers", type=_layer_map, default=d.student_layers, help="teacher layers the student keeps (default: 0,5)")
    p.add_argument("--student-epochs", type=float, default=d.student_epochs, help="passes over the lists (default: %(default)s)")
    p.add_argument("--student-lr", type=float, default=d.student_lr, help="(default: %(default)s)")
    p.add_argument("--list-size", type=int, default=d.list_size, help="passages of a list per step, a judged positive among them (default: %(default)s)")
    p.add_argument("--loss", choices=("kl", "margin-mse"), default=d.loss, help="distillation loss (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=d.temperature, help="softmax temperature of the KL loss (default: %(default)s)")
    p.add_argument("--kd-weight", type=float, default=d.kd_weight, help="on labelled lists, distillation vs label cross-entropy (default: %(default)s)")
    p.add_argument("--prior-weight", type=float, default=d.prior_weight, help="train both as residuals of the first stage (default: %(default)s)")
    p.add_argument("--head-lr", type=float, default=d.head_lr, help="(default: %(default)s)")
    p.add_argument("--batch", type=int, default=d.batch, help="groups or lists per step (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="dev evaluation every N steps, best kept (default: %(default)s)")
    p.add_argument("--dev-queries", type=int, default=d.dev_queries, help="dev queries for model selection (default: %(default)s)")
    p.add_argument("--dev-depth", type=int, default=d.dev_depth, help="candidates re-ranked per dev query in model selection (default: %(default)s)")
    p.add_argument("--train-queries", type=int, default=0, help="use only the first N train queries (0 = all)")
    p.add_argument("--threads", type=int, default=d.threads, help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_all)


def cmd_all(args: argparse.Namespace) -> int:
    from lrt_rerank.train.factory import FactoryConfig, run_factory

    cfg = FactoryConfig(
        dataset=args.dataset, out=args.out, teacher=args.teacher, queries=args.queries, cache=args.cache, pseudo_queries=args.pseudo_queries,
        max_length=args.max_length, teacher_layers=args.teacher_layers, teacher_epochs=args.teacher_epochs, teacher_lr=args.teacher_lr,
        teacher_cloze=args.teacher_cloze, clicks=args.clicks, teacher_fusion=args.teacher_fusion, dev_depth=args.dev_depth,
        student_layers=args.layers, student_epochs=args.student_epochs, student_lr=args.student_lr, list_size=args.list_size,
        loss=args.loss, temperature=args.temperature, kd_weight=args.kd_weight, prior_weight=args.prior_weight, head_lr=args.head_lr,
        batch=args.batch, eval_every=args.eval_every, dev_queries=args.dev_queries, train_queries=args.train_queries,
        threads=args.threads, seed=args.seed,
    )
    _train_imports()
    from lrt_rerank.train.report import markdown

    report = run_factory(cfg, progress=not args.quiet)
    print(markdown(report))
    print(json.dumps(report["targets"], indent=2))
    return 0


def _recipe(args: argparse.Namespace, layers: int):  # type: ignore[no-untyped-def]
    from lrt_rerank.train.loop import LoopConfig
    from lrt_rerank.train.recipes import Recipe

    if not (args.dataset / "qrels" / "train.tsv").is_file():
        raise FileNotFoundError(f"{args.dataset / 'qrels' / 'train.tsv'}: --dataset needs train (and dev) qrels")
    loop = LoopConfig(
        lr=args.lr, head_lr=args.head_lr, warmup=args.warmup, batch_groups=args.batch_groups, epochs=args.epochs,
        eval_every=args.eval_every, seed=args.seed, prior_weight=args.prior_weight,
        kd_weight=getattr(args, "kd_weight", 0.0), temperature=getattr(args, "temperature", 1.0),
    )
    return Recipe(
        dataset=args.dataset, out=args.out, layers=layers, max_length=args.max_length, negatives=args.negatives,
        negative_depth=args.negative_depth, groups_per_query=args.groups_per_query, train_queries=args.train_queries,
        dev_queries=args.dev_queries, dev_depth=args.dev_depth, threads=args.threads, loop=loop,
        lexical_init=getattr(args, "lexical_init", 15.0), cloze=getattr(args, "cloze", 0), clicks=getattr(args, "clicks", None),
    )


def _train_imports() -> None:
    from lrt_rerank.extras import require

    require("train")


def cmd_teacher(args: argparse.Namespace) -> int:
    _train_imports()
    from lrt_rerank.train.recipes import train_teacher

    out = train_teacher(_recipe(args, args.layers), progress=not args.quiet)
    print(out)
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    _train_imports()
    from lrt_rerank.train.recipes import distill

    out = distill(_recipe(args, len(args.layers)), args.teacher, args.layers, progress=not args.quiet)
    print(out)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    _train_imports()
    from lrt_rerank.train.export import quantize, write_model_dir

    meta_path = args.checkpoint / "lrt-train.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: not a training checkpoint")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    max_length = args.max_length or int(meta["recipe"]["max_length"])
    out = write_model_dir(args.checkpoint, args.out, args.name or args.out.name, max_length, {}, optimize=not args.no_optimize)
    print(out)
    if args.int8:
        print(quantize(out, args.int8))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from lrt_rerank.train.report import Split, build_report, markdown, write_card_figures

    models = dict(args.model)
    if len(models) != len(args.model):
        raise ValueError("--model labels must be unique")
    from lrt_rerank.datasets import DatasetError

    dev_qrels = args.dataset / "qrels" / "dev.tsv"
    if not dev_qrels.is_file():
        raise DatasetError(f"{dev_qrels}: missing; the report chooses interpolation weights on dev")
    for ood in args.ood:
        if not (ood / "qrels" / "test.tsv").is_file():
            raise DatasetError(f"{ood / 'qrels' / 'test.tsv'}: missing; --ood datasets are reported on their test split")
    splits = [Split(args.dataset, "dev", "tune")]
    if (args.dataset / "qrels" / "test.tsv").is_file():
        splits.append(Split(args.dataset, "test", "test"))
    else:
        print(f"note: {args.dataset / 'qrels' / 'test.tsv'} not found: the report covers dev only", file=sys.stderr)
    splits += [Split(d, "test", "out-of-domain") for d in args.ood]
    report = build_report(models, splits, args.cache, threads=args.threads, progress=not args.quiet, teacher=args.teacher)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.write_cards:
        for label, path in models.items():
            write_card_figures(path, label, report)
    print(markdown(report))
    return 0
