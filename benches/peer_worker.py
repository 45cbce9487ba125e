"""One sentence-transformers system in its own process, for bench_peers: JSON lines in, scores and ms out.

Run by a peer venv's python (it imports neither lrt_rerank nor anything of this repository):

    python benches/peer_worker.py SYSTEM --snapshot DIR --calibration PAIRS.json --cache DIR

SYSTEM is ``st-ov`` (``CrossEncoder(backend="openvino")`` with OpenVINO's default precision: bf16 where
the CPU has AVX512-BF16 or AMX) or ``st-ov-int8`` (the static INT8 IR that ST's
``export_static_quantized_openvino_model`` makes: optimum-intel's ``OVQuantizer`` with the default
``OVQuantizationConfig``, calibrated here on a local ``datasets.Dataset`` of the given (query, passage)
pairs instead of glue/sst2 from the hub). The first output line is ``{"ready": ..., "versions": ...}``;
then each input line ``{"query": str, "passages": [str]}`` gets ``{"scores": [float], "ms": float}``,
``ms`` being the ``predict`` call alone. An empty line or end of input stops the worker.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SYSTEMS = ("st-ov", "st-ov-int8")
INT8_FILE = "openvino_model_qint8_quantized.xml"


def quantize_static(snapshot: Path, pairs: list[list[str]], out: Path, max_length: int, ov_config: dict[str, str]) -> None:
    """What ``export_static_quantized_openvino_model`` does, on local calibration pairs: ``out`` gets
    the snapshot plus ``openvino/openvino_model_qint8_quantized.xml/.bin``."""
    import datasets
    from optimum.intel.openvino import OVConfig, OVQuantizationConfig, OVQuantizer
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(snapshot), backend="openvino", max_length=max_length, model_kwargs={"ov_config": ov_config})
    tokenized = model.tokenizer(
        [q for q, _ in pairs], [p for _, p in pairs], padding="max_length", max_length=max_length, truncation=True
    )
    calibration = datasets.Dataset.from_dict(dict(tokenized))
    config = OVConfig(quantization_config=OVQuantizationConfig(num_samples=len(pairs)))
    quantizer = OVQuantizer.from_pretrained(model.model)
    staged = out.with_name(out.name + ".partial")
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(snapshot, staged)
    save_dir = staged / "ov-export"
    quantizer.quantize(calibration, save_directory=save_dir, ov_config=config)
    xml = next(save_dir.rglob("openvino_model.xml"))  # optimum-intel 2 writes it under openvino/
    (staged / "openvino").mkdir(exist_ok=True)
    shutil.move(xml, staged / "openvino" / INT8_FILE)
    shutil.move(xml.with_suffix(".bin"), (staged / "openvino" / INT8_FILE).with_suffix(".bin"))
    shutil.rmtree(save_dir)
    os.replace(staged, out)


def load(args: argparse.Namespace) -> Any:
    from sentence_transformers import CrossEncoder

    ov_config = {"INFERENCE_NUM_THREADS": str(args.threads)}
    kwargs: dict[str, Any] = {"ov_config": ov_config}
    path = args.snapshot
    if args.system == "st-ov-int8":
        path = args.cache / f"{args.snapshot.name}-st-ov-int8-{args.calibration.stem}"
        if not (path / "openvino" / INT8_FILE).is_file():
            pairs = json.loads(args.calibration.read_text(encoding="utf-8"))
            quantize_static(args.snapshot, pairs, path, args.max_length, ov_config)
        kwargs["file_name"] = f"openvino/{INT8_FILE}"
    import torch

    return CrossEncoder(
        str(path), backend="openvino", max_length=args.max_length, model_kwargs=kwargs, activation_fn=torch.nn.Identity()
    )


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("sentence-transformers", "optimum-intel", "openvino", "nncf", "transformers")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=SYSTEMS)
    parser.add_argument("--snapshot", type=Path, required=True)
    parser.add_argument("--calibration", type=Path, required=True, help="JSON list of [query, passage] pairs")
    parser.add_argument("--cache", type=Path, required=True, help="folder for the INT8 model this worker makes")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    # the protocol owns the real stdout; whatever the libraries print goes to stderr
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    model = load(args)
    out.write(json.dumps({"ready": args.system, "versions": versions()}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            break
        request = json.loads(line)
        pairs = [(request["query"], p) for p in request["passages"]]
        start = time.perf_counter()
        scores = model.predict(pairs, show_progress_bar=False)
        ms = 1e3 * (time.perf_counter() - start)
        out.write(json.dumps({"scores": [float(s) for s in scores], "ms": ms}) + "\n")


if __name__ == "__main__":
    main()
