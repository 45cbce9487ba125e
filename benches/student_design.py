"""Student shapes: size and re-rank latency of LRTs cut from a teacher checkpoint, against the teacher.

Latency depends on the shape, not on training, so each student here is the teacher checkpoint's
chosen layers exported to INT8 untrained; the teacher runs FP32 as ``train all`` reports it. Every
model re-ranks each query's RRF top 50 in turn (:func:`lrt_rerank.train.report.interleaved_logits`),
so machine load hits them alike; the figures are p50/p95 of one ``CrossEncoder.score`` call and
the ratio of each p95 to the teacher's, taken in the same run.

    python benches/student_design.py --teacher runs/scifact/teacher --dataset ../shared/data/scifact \\
        --cache runs/scifact-cache --layers 0 0,5 0,2,5 0,2,3,5 --queries 40
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, required=True, help="teacher training checkpoint (lrt-train.json)")
    parser.add_argument("--dataset", type=Path, required=True, help="BEIR folder; its dev split's candidates are re-ranked")
    parser.add_argument("--cache", type=Path, required=True, help="candidates cache (as `train all --cache`)")
    parser.add_argument("--layers", nargs="+", required=True, help="layer maps, e.g. 0,5 0,2,5")
    parser.add_argument("--queries", type=int, default=40, help="dev queries timed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from lrt_rerank.evaluate import latency_percentiles
    from lrt_rerank.train.data import Candidates, load_or_mine
    from lrt_rerank.train.export import quantize, write_model_dir
    from lrt_rerank.train.model import keep_layers, load_checkpoint
    from lrt_rerank.train.report import interleaved_logits

    meta = json.loads((args.teacher / "lrt-train.json").read_text(encoding="utf-8"))
    max_length = int(meta["recipe"]["max_length"])
    dataset, candidates = load_or_mine(args.dataset, "dev", args.cache, progress=False)
    qids = sorted(candidates.ids)[: args.queries]
    subset = Candidates({q: candidates.ids[q] for q in qids}, {q: candidates.scores[q] for q in qids})
    with tempfile.TemporaryDirectory(prefix="lrt-design-") as tmp:
        root = Path(tmp)
        models = {"teacher FP32": write_model_dir(args.teacher, root / "teacher", "teacher", max_length, {})}
        for layer_map in args.layers:
            model, meta = load_checkpoint(args.teacher)
            keep_layers(model, [int(x) for x in layer_map.split(",")])
            ckpt = model.save(root / f"ckpt-{layer_map}", args.teacher / "tokenizer.json", meta)
            fp32 = write_model_dir(ckpt, root / f"fp32-{layer_map}", layer_map, max_length, {})
            models[f"layers {layer_map} INT8"] = quantize(fp32, root / f"int8-{layer_map}")
        cards = {label: json.loads((path / "card.json").read_text(encoding="utf-8")) for label, path in models.items()}
        _, timings = interleaved_logits(models, dataset, subset, args.threads, progress=False)
    teacher_p95 = latency_percentiles(timings["teacher FP32"])[95]
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, threads={args.threads}, "
          f"{len(qids)} queries of {dataset.name}/dev, top 50, max length {max_length}")
    print("| model | layers | parameters | p50 ms | p95 ms | p95 / teacher p95 |\n|---|---|---|---|---|---|")
    for label, times in timings.items():
        p = latency_percentiles(times)
        card = cards[label]
        print(f"| {label} | {card['layers']} | {card['parameters'] / 1e6:.2f} M | {p[50]:.0f} | {p[95]:.0f} | {p[95] / teacher_p95:.2f} |")


if __name__ == "__main__":
    main()
