"""One sentence-transformers system in its own process, for bench_peers: JSON lines in, scores and ms out.

Run by a peer venv's python (it imports neither lrt_rerank nor anything of this repository):

    python benches/peer_worker.py SYSTEM --snapshot DIR --calibration PAIRS.json --cache DIR

SYSTEM is ``st-ov`` (``CrossEncoder(backend="openvino")`` with OpenVINO's default precision: bf16 where
the CPU has AVX512-BF16 or AMX), ``st-ov-int8`` (the static INT8 IR that ST's
``export_static_quantized_openvino_model`` makes: optimum-intel's ``OVQuantizer`` with the default
``OVQuantizationConfig``, calibrated here on a local ``datasets.Dataset`` of the given (query, passage)
pairs instead of glue/sst2 from the hub) or ``st-onnx-qint8`` (``CrossEncoder(backend="onnx")`` on the
graph ``export_dynamic_quantized_onnx_model`` writes with the CPU's configuration: ``avx512_vnni`` where
the CPU has it, else ``avx2``; sentence-transformers 5.7 with optimum-onnx, a venv of its own). The first output line is ``{"ready": ..., "versions": ...}``;
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

SYSTEMS = ("st-ov", "st-ov-int8", "st-onnx-qint8")
INT8_FILE = "openvino_model_qint8_quantized.xml"
PACKAGES = {
    "st-ov": ("sentence-transformers", "optimum-intel", "openvino", "nncf", "transformers"),
    "st-onnx-qint8": ("sentence-transformers", "optimum-onnx", "onnxruntime", "transformers"),
}


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


def onnx_quantization_config() -> str:
    """``avx512_vnni`` where the CPU has it (the configuration ST's docs name for such CPUs), else ``avx2``."""
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    return "avx512_vnni" if "avx512_vnni" in flags.split() else "avx2"


def load_onnx_qint8(args: argparse.Namespace) -> Any:
    """ST's ONNX backend on its dynamic INT8 export of the snapshot, made once into the cache."""
    import onnxruntime as ort
    import torch
    from sentence_transformers import CrossEncoder, export_dynamic_quantized_onnx_model

    config = onnx_quantization_config()
    path = args.cache / f"{args.snapshot.name}-st-onnx-qint8-{config}"
    file_name = f"onnx/model_qint8_{config}.onnx"
    if not (path / file_name).is_file():
        staged = path.with_name(path.name + ".partial")
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(args.snapshot, staged)
        exported = CrossEncoder(str(staged), backend="onnx", max_length=args.max_length)  # optimum exports the FP32 graph
        exported.save_pretrained(str(staged))
        export_dynamic_quantized_onnx_model(exported, config, str(staged))
        os.replace(staged, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    kwargs = {"file_name": file_name, "provider": "CPUExecutionProvider", "session_options": options}
    return CrossEncoder(
        str(path), backend="onnx", max_length=args.max_length, model_kwargs=kwargs, activation_fn=torch.nn.Identity()
    )


def load(args: argparse.Namespace) -> Any:
    from sentence_transformers import CrossEncoder

    if args.system == "st-onnx-qint8":
        return load_onnx_qint8(args)
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


def versions(system: str) -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in PACKAGES.get(system, PACKAGES["st-ov"])}


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
    out.write(json.dumps({"ready": args.system, "versions": versions(args.system)}) + "\n")
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
