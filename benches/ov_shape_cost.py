"""OpenVINO's cost of a new input shape: one infer request (1 thread, as each session of the engine's pool)
runs batches of 3 rows at lengths it has not seen, then each again; prints the median of both.

    python benches/ov_shape_cost.py MODEL_DIR_OR_IR [--lengths 150:170] [--precision bf16] [--config KEY=VALUE]

The gap is what the OpenVINO backend saves by padding each batch's length up to a multiple of 16 tokens
(rust/src/openvino.rs, SEQ_BUCKET): with length-sorted batches nearly every batch of a call is a new shape.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import openvino as ov


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a model directory with openvino_model.xml (or an .xml / .onnx file)")
    parser.add_argument("--lengths", default="150:170", help="first:last sequence length (exclusive), each run new then again")
    parser.add_argument("--rows", type=int, default=3)
    parser.add_argument("--precision", default="bf16", choices=("bf16", "f32"))
    parser.add_argument("--config", action="append", default=[], help="another CPU plugin property, KEY=VALUE")
    args = parser.parse_args()
    path = args.model / "openvino_model.xml" if args.model.is_dir() else args.model
    config = {"INFERENCE_NUM_THREADS": "1", "NUM_STREAMS": "1", "ENABLE_CPU_PINNING": "NO", "INFERENCE_PRECISION_HINT": args.precision}
    config.update(item.split("=", 1) for item in args.config)
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    names = {name for port in compiled.inputs for name in port.get_names()}

    def feed(length: int) -> dict[str, np.ndarray]:
        ids = np.full((args.rows, length), 1000, dtype=np.int64)
        row = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        return {k: v for k, v in row.items() if k in names}

    request.infer(feed(64))  # first-run allocations
    first, again = [], []
    start_len, end_len = (int(v) for v in args.lengths.split(":"))
    for length in range(start_len, end_len):
        for times in (first, again):
            batch = feed(length)
            start = time.perf_counter()
            request.infer(batch)
            times.append((time.perf_counter() - start) * 1e3)
    print(
        f"{path.name}: {args.rows} rows x {start_len}..{end_len - 1} tokens, 1 thread, {args.precision}: "
        f"new shape {statistics.median(first):.1f} ms, same shape again {statistics.median(again):.1f} ms (medians)"
    )


if __name__ == "__main__":
    main()
