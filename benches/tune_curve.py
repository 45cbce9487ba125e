"""How many judged queries `lrt-rerank tune` needs: the learning curve of the tuned fusion.

On a seeded random 50, 100, 200 and all judged queries of the tuning split (the sample
``tune --max-queries N`` takes), the candidate functions are chosen exactly as ``lrt-rerank tune`` chooses
them (:func:`lrt_rerank.tune.choose`: 5-fold cross-validation, the guard). Each is then reported on the
held-out split (MRR@10 of the RRF top 50 re-ordered, the figure ``eval --fusion`` prints), beside the
function that the guard would have adopted without it (the best in-sample one). The held-out split also
gets the 95% paired-bootstrap interval of the adopted function's gain over RRF.

    python benches/tune_curve.py --dataset ../shared/data/scifact --tune train --report dev
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lrt_rerank.datasets import load_dataset
from lrt_rerank.evaluate import bootstrap_gains, interval95
from lrt_rerank.first_stage.index_cache import cached_index
from lrt_rerank.tune import candidate_functions, check_split, choose, collect, per_query_mrr, sample_queries

SIZES = (50, 100, 200, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True, help="BEIR folder")
    parser.add_argument("--tune", default="train", help="split to tune on (default: %(default)s)")
    parser.add_argument("--report", default="dev", help="held-out split to report (default: %(default)s)")
    args = parser.parse_args()
    check_split(args.tune)
    tuning, held = load_dataset(args.dataset, args.tune), load_dataset(args.dataset, args.report)
    first_stage = cached_index(tuning, progress=False)
    functions = candidate_functions()
    tuning_ids = tuning.eval_query_ids()
    on_tuning = per_query_mrr(functions, collect(tuning, first_stage, progress=False))
    on_held = per_query_mrr(functions, collect(held, first_stage, progress=False))
    column = {qid: j for j, qid in enumerate(tuning_ids)}
    print(f"{args.dataset.name}: tuned on {args.tune}, reported on {args.report} ({on_held.shape[1]} queries), "
          f"RRF {on_held[0].mean():.3f} MRR@10\n")
    print(f"| {args.tune} queries | adopted | {args.report} MRR@10 | gain over RRF [95% CI] | best in-sample function | its {args.report} MRR@10 |")
    print("|---|---|---|---|---|---|")
    for size in SIZES:
        subset = [column[q] for q in sample_queries(tuning, size)]
        chosen, figures = choose(functions, on_tuning[:, subset])
        best = int(np.argmax(on_tuning[:, subset].mean(axis=1)))
        row = on_held[functions.index(chosen)]
        ci = interval95(bootstrap_gains(on_held[0], {"tuned": row})["tuned"])
        print(f"| {len(subset)} | {chosen.describe() if figures['adopted'] else 'RRF kept'} | {row.mean():.3f} | "
              f"{row.mean() - on_held[0].mean():+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}] | {functions[best].describe()} | "
              f"{on_held[best].mean():.3f} |")


if __name__ == "__main__":
    main()
