"""Read checkpoint tensors as numpy arrays: safetensors (no extra dependencies) or pytorch_model.bin (torch).

safetensors files are parsed by the ``safetensors`` package (``deserialize``, which checks the header
and the data offsets); this module only turns each tensor's bytes into a numpy array, widening
bfloat16, which numpy cannot represent, to float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import SafetensorError, deserialize

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
        content = path.read_bytes()
    except OSError as exc:
        raise _core.ModelError(f"{path}: cannot read safetensors weights: {exc}") from exc
    try:
        entries = deserialize(content)
    except (SafetensorError, ValueError) as exc:
        raise _core.ModelError(f"{path}: truncated or not a safetensors file: {exc}") from exc
    return {name: _tensor(path, name, info) for name, info in entries}


def _tensor(path: Path, name: str, info: dict[str, object]) -> np.ndarray:
    dtype, shape, raw = str(info["dtype"]).upper(), tuple(info["shape"]), bytes(info["data"])  # type: ignore[call-overload]
    if dtype == "BF16":  # the upper half of a float32
        array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    elif dtype in _DTYPES:
        array = np.frombuffer(raw, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<"))
    else:
        raise _core.ModelError(f"{path}: tensor {name!r} has dtype {dtype}, which is not supported")
    try:
        array = array.reshape(shape)
    except ValueError as exc:
        raise _core.ModelError(f"{path}: tensor {name!r}: {len(raw)} bytes do not make shape {list(shape)}") from exc
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
