"""Writing and re-writing model.onnx, with its weights in model.onnx_data when the graph passes protobuf's 2 GB.

ONNX Runtime (and so the engine) loads the external data file named inside the graph, relative to it.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from lrt_rerank import _core
from lrt_rerank.models.store import MODEL_DATA

#: protobuf's limit on one serialized message, with room for the graph itself.
MAX_GRAPH_BYTES = 2_000_000_000
#: Tensors at least this large go to the external data file.
EXTERNAL_THRESHOLD = 1024


def weight_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def has_external_data(path: Path) -> bool:
    graph = onnx.load(str(path), load_external_data=False).graph
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer)


def save(model: onnx.ModelProto, path: Path) -> bool:
    """Write ``model`` to ``path``: one file, or ``path`` + model.onnx_data beside it when its weights pass
    :data:`MAX_GRAPH_BYTES`. Checked with onnx's checker (on the file); returns whether data went external."""
    external = weight_bytes(model) > MAX_GRAPH_BYTES
    data = path.with_name(MODEL_DATA)
    if data.exists():
        data.unlink()
    if external:
        onnx.save_model(
            model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=MODEL_DATA,
            size_threshold=EXTERNAL_THRESHOLD,
        )
        onnx.checker.check_model(str(path))
    else:
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return external


def external_files(path: Path) -> list[Path]:
    """The external data files the graph at ``path`` names (sorted; empty for a single-file graph), each checked
    to exist beside it: a missing one, or a graph that does not parse, is a ModelError naming the file."""
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise _core.ModelError(f"{path}: not a loadable ONNX model: {exc}") from exc
    names = sorted({
        entry.value for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
        for entry in t.external_data if entry.key == "location"
    })  # fmt: skip
    files = [path.parent / name for name in names]
    for f in files:
        if not f.is_file():
            raise _core.ModelError(f"{path}: its weights' external data file {f} not found")
    return files


def consolidate(path: Path) -> bool:
    """Re-write the graph at ``path`` (with whatever external files it names) as :func:`save` writes it,
    removing the files it no longer needs; returns whether data went external."""
    old = external_files(path)
    if not old:
        return False
    model = onnx.load(str(path))  # loads the external data into memory
    for f in old:
        if f != path.parent / MODEL_DATA:
            f.unlink(missing_ok=True)
    return save(model, path)
