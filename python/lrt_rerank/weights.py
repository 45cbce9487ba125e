"""Read checkpoint tensors as numpy arrays: safetensors (no extra dependencies) or pytorch_model.bin (torch).

The safetensors reader is this module's own (the format is an 8-byte header length, a JSON header,
raw little-endian data) so that bfloat16 checkpoints, which numpy cannot represent, are widened to
float32, and a truncated file is named as such.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from lrt_rerank import _core

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """Named tensors of ``*.safetensors`` or ``pytorch_model.bin``; floating tensors as float32."""
    return read_safetensors(path) if path.suffix == ".safetensors" else read_torch_bin(path)


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        data = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as exc:  # ValueError: an empty file cannot be mapped
        raise _core.ModelError(f"{path}: cannot read safetensors weights: {exc}") from exc
    if len(data) < 8:
        raise _core.ModelError(f"{path}: not a safetensors file ({len(data)} bytes)")
    (size,) = struct.unpack("<Q", data[:8].tobytes())
    try:
        header = json.loads(data[8 : 8 + size].tobytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _core.ModelError(f"{path}: not a safetensors file (truncated, or no JSON header): {exc}") from exc
    if not isinstance(header, dict):
        raise _core.ModelError(f"{path}: not a safetensors file (its header is not a JSON object)")
    body = data[8 + size :]
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name != "__metadata__":
            tensors[name] = _tensor(path, name, info, body)
    return tensors


def _tensor(path: Path, name: str, info: Any, body: np.ndarray) -> np.ndarray:
    try:
        dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
    except (KeyError, TypeError, ValueError) as exc:
        raise _core.ModelError(f"{path}: malformed header entry for tensor {name!r}: {info!r}") from exc
    if end > len(body):
        raise _core.ModelError(
            f"{path}: truncated: tensor {name!r} ends at byte {end} of the data, the file holds {len(body)}"
        )
    raw = body[begin:end]
    if dtype == "BF16":  # the upper half of a float32
        array = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    elif dtype in _DTYPES:
        array = raw.view(np.dtype(_DTYPES[dtype]).newbyteorder("<"))
    else:
        raise _core.ModelError(f"{path}: tensor {name!r} has dtype {dtype}, which is not supported")
    try:
        array = array.reshape(shape)
    except ValueError as exc:
        raise _core.ModelError(f"{path}: tensor {name!r}: {end - begin} bytes do not make shape {list(shape)}") from exc
    return array.astype(np.float32) if array.dtype.kind == "f" else np.array(array)


def read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as exc:
        raise _core.ModelError(
            f"{path}: reading pytorch_model.bin needs torch: pip install 'lrt-rerank[train]' "
            "(model.safetensors needs nothing extra)"
        ) from exc
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad pickle / zip
        raise _core.ModelError(f"{path}: cannot read PyTorch weights (truncated, or not a state dict?): {exc}") from exc
    if not isinstance(state, dict):
        raise _core.ModelError(f"{path}: holds a {type(state).__name__}, expected a state dict of tensors")
    return {
        str(k): v.detach().to(torch.float32).numpy() if v.is_floating_point() else v.numpy()
        for k, v in state.items()
        if isinstance(v, torch.Tensor)
    }
