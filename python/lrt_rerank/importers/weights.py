"""Read checkpoint tensors: safetensors (no extra dependencies) or pytorch_model.bin (needs torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lrt_rerank import _core
from lrt_rerank.convert import load_safetensors


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """Named float32 tensors of ``model.safetensors`` or ``pytorch_model.bin``."""
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    return _read_torch_bin(path)


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
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
