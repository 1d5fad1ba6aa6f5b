"""ONNX files of a pruned model, and running them in onnxruntime.

`onnx_bytes(model, example)` exports through `torch.onnx.export(..., dynamo=True)` from the
same `torch.export` program as the .pt2 file (pruneviz.output.model_files.program: a
dynamic batch dimension, traced on a fresh example, never the user's data), at opset
`OPSET`; the batch dimension is named "batch" in the graph's input and outputs.
Why the dynamo exporter, not the TorchScript one (`dynamo=False` with `dynamic_axes`):
since torch 2.9 the TorchScript exporter warns that it will be removed, and the dynamo
one reuses the program we capture for the .pt2 anyway, so both files come from one graph.
It needs `onnxscript`; it is slower (about 1-3 s per small model here).

`sparse_initializers(data)` rewrites an ONNX model's mostly-zero weights as
`sparse_initializer`s (SparseTensorProto: the non-zero values and their flat int64
positions), which onnxruntime densifies when it loads the model. ONNX requires int64
indices, so a tensor is stored sparse only when fewer than a third of its entries are
non-zero (12 bytes per non-zero against 4 per entry); the file is offered only when it
is smaller than the dense one.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from pruneviz.output.model_files import BATCH, program

OPSET = 18
INPUT = "input"
RUN_BATCH = 256  # samples per onnxruntime call when a whole data set is run


class OnnxUnavailable(ImportError):
    """onnx, onnxscript or onnxruntime is not installed."""


def _require() -> None:
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime")
               if not _importable(name)]
    if missing:
        raise OnnxUnavailable(f"{', '.join(missing)} not installed: `pip install onnx "
                              "onnxscript onnxruntime` to get the ONNX files")


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def onnx_bytes(model: nn.Module | torch.export.ExportedProgram,
               example: Tensor | None = None) -> bytes:
    """The ONNX file (opset OPSET, dynamic batch dimension "batch") of `model`, traced on a
    fresh tensor shaped like `example` (or of a program from
    pruneviz.output.model_files.program). Raises OnnxUnavailable without the packages,
    and what the exporter raises when the model cannot be exported."""
    _require()
    if isinstance(model, torch.export.ExportedProgram):
        exported = model
    elif example is None:
        raise ValueError("an example input is needed to export a model")
    else:
        exported = program(model, example)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping ..." per op
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
            onnx_program = torch.onnx.export(
                exported, (), None, dynamo=True, opset_version=OPSET, input_names=[INPUT],
                verbose=False, external_data=False, optimize=True)
    finally:
        quiet.setLevel(level)
    if onnx_program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    proto = onnx_program.model_proto
    for value in (*proto.graph.input, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].dim_param = BATCH
    data: bytes = proto.SerializeToString()
    return data


def sparse_initializers(data: bytes, max_density: float = 1 / 3) -> tuple[bytes, int]:
    """`data` (an ONNX model) with every initializer whose fraction of non-zeros is below
    `max_density` stored as a sparse initializer; and how many were. The values are the
    same, bit for bit (a -0.0 weight becomes +0.0)."""
    _require()
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(data)
    graph = model.graph
    count = 0
    for init in list(graph.initializer):
        array = numpy_helper.to_array(init)
        if array.size < 16 or not np.issubdtype(array.dtype, np.floating):
            continue
        flat = array.reshape(-1)
        positions = np.flatnonzero(flat)
        if positions.size >= max_density * flat.size:
            continue
        values = numpy_helper.from_array(flat[positions], init.name)
        indices = numpy_helper.from_array(positions.astype(np.int64), f"{init.name}.indices")
        graph.initializer.remove(init)
        graph.sparse_initializer.append(
            helper.make_sparse_tensor(values, indices, list(array.shape)))
        count += 1
    onnx.checker.check_model(model)
    result: bytes = model.SerializeToString()
    return result, count


def run_onnx(data: bytes, x: Tensor) -> list[NDArray[Any]]:
    """The outputs of ONNX model `data` run in onnxruntime (CPU) on `x`, in batches of
    RUN_BATCH samples, each output concatenated over the batches."""
    _require()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    array = x.detach().cpu().numpy()
    parts: list[list[NDArray[Any]]] = []
    for start in range(0, max(len(array), 1), RUN_BATCH):
        outputs = session.run(None, {name: array[start: start + RUN_BATCH]})
        parts.append([np.asarray(o) for o in outputs])
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]


__all__ = ["OPSET", "OnnxUnavailable", "onnx_bytes", "run_onnx", "sparse_initializers"]
