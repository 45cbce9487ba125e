"""Read checkpoint tensors as numpy arrays: safetensors (one file or shards; no extra dependencies) or
pytorch_model.bin (torch).

A safetensors file is checked by the ``safetensors`` package (``safe_open`` validates the header and the
data offsets): :class:`SafetensorsWeights` is a read-only mapping whose tensors are read from the file when
looked up (into a buffer of their own: no memory map stays resident) and never kept, so that a converter
holds one copy of the weights (the graph's) rather than two. A sharded checkpoint (``model.safetensors.index.json``) is one such mapping over
all its shards. bfloat16, which numpy cannot represent, is widened to float32.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open

from lrt_rerank import _core
from lrt_rerank.jsonfile import read_json

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip
_ITEM_BYTES = {"BF16": 2, **{k: np.dtype(v).itemsize for k, v in _DTYPES.items()}}
#: The index of a sharded safetensors checkpoint.
SHARD_INDEX = "model.safetensors.index.json"


class _SafetensorsFile:
    """One safetensors file: its tensor table (dtype, shape, byte range) and a read-only memory map."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with safe_open(str(path), framework="numpy") as checked:  # validates header and offsets
                checked.keys()
            with open(path, "rb") as fh:
                (header_len,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(header_len))
        except FileNotFoundError as exc:
            raise _core.ModelError(f"{path}: safetensors weights not found") from exc
        except (SafetensorError, OSError, ValueError, struct.error) as exc:
            raise _core.ModelError(f"{path}: truncated or not a safetensors file: {exc}") from exc
        header.pop("__metadata__", None)
        self.start = 8 + header_len
        self.entries: dict[str, dict[str, Any]] = header

    def tensor(self, name: str) -> np.ndarray:
        info = self.entries[name]
        dtype, shape = str(info["dtype"]).upper(), tuple(int(d) for d in info["shape"])
        begin, end = (int(x) for x in info["data_offsets"])
        if dtype not in _ITEM_BYTES:
            raise _core.ModelError(f"{self.path}: tensor {name!r} has dtype {dtype}, which is not supported")
        if end - begin != _ITEM_BYTES[dtype] * int(np.prod(shape, dtype=np.int64)):
            raise _core.ModelError(f"{self.path}: tensor {name!r}: {end - begin} bytes do not make shape {list(shape)}")
        raw = np.empty(end - begin, dtype=np.uint8)
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.start + begin)
                got = fh.readinto(memoryview(raw))
        except OSError as exc:
            raise _core.ModelError(f"{self.path}: cannot read tensor {name!r}: {exc}") from exc
        if got != end - begin:
            raise _core.ModelError(f"{self.path}: tensor {name!r} is truncated ({got} of {end - begin} bytes)")
        if dtype == "BF16":  # the upper half of a float32
            array = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = raw.view(np.dtype(_DTYPES[dtype]).newbyteorder("<"))
        array = array.reshape(shape)
        return array.astype(np.float32, copy=False) if array.dtype.kind == "f" else array


class SafetensorsWeights(Mapping[str, np.ndarray]):
    """The tensors of one safetensors file or of the shards of an index, read on lookup (float32 for floats)."""

    def __init__(self, files: list[Path]) -> None:
        self.files = [_SafetensorsFile(f) for f in files]
        self._where: dict[str, _SafetensorsFile] = {}
        for f in self.files:
            for name in f.entries:
                self._where.setdefault(name, f)

    def __getitem__(self, name: str) -> np.ndarray:
        return self._where[name].tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self._where[name].entries[name]["shape"])

    @property
    def nbytes(self) -> int:
        """Bytes of the tensors as float32 (as the converter holds them)."""
        total = 0
        for f in self.files:
            for info in f.entries.values():
                total += 4 * int(np.prod([int(d) for d in info["shape"]], dtype=np.int64))
        return total


def shard_files(index: Path) -> list[Path]:
    """The shards ``model.safetensors.index.json`` names (in order of first appearance), each checked to exist."""
    data = read_json(index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise _core.ModelError(f"{index}: field 'weight_map' must be a non-empty object of tensor -> shard file")
    shards: list[Path] = []
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard:
            raise _core.ModelError(f"{index}: tensor {name!r} maps to {shard!r}, not a file name beside the index")
        path = index.parent / shard
        if path not in shards:
            if not path.is_file():
                raise _core.ModelError(f"{path}: shard listed in {index.name} (tensor {name!r}) not found")
            shards.append(path)
    return shards


def open_weights(path: Path) -> Mapping[str, np.ndarray]:
    """Named tensors of ``*.safetensors``, a shard index or ``pytorch_model.bin``; floating tensors as float32."""
    if path.name == SHARD_INDEX:
        weights = SafetensorsWeights(shard_files(path))
        index_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
        missing = sorted(set(index_map) - set(weights))
        if missing:
            raise _core.ModelError(f"{path}: tensor {missing[0]!r} is in no shard it names ({len(missing)} missing)")
        return weights
    if path.suffix == ".safetensors":
        return SafetensorsWeights([path])
    return read_torch_bin(path)


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of ``path`` in memory (see :func:`open_weights` for the streamed mapping)."""
    return dict(open_weights(path))


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    return dict(SafetensorsWeights([path]))


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
