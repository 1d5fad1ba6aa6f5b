"""An export's files for running the pruned model elsewhere, each verified before it is
written: ONNX, the torch.export program, the masked model's ONNX with sparse weights, and
the sparse-deployed (CSR) model.

`deployment_files(...)` builds every file in memory and checks it on the evaluation data
against the model in memory; a file whose check fails is not written (its row says why,
and the export fails), a file that cannot be made at all (the model does not export, the
ONNX packages are missing, no layer is sparse enough) is skipped with the reason. So
nothing on disk claims more than was checked.

- `model.onnx`: the deployed model (the slimmed one when there is one, else the masked
  one), opset >= 17, dynamic batch; run in onnxruntime on the whole evaluation data and at
  batch 1 and 64, outputs within tolerance of the model in memory, same predictions.
- `model.pt2`: the same model as a `torch.export` program with a dynamic batch; reloaded
  and run at batch 1, 64 and on the evaluation data; it must not contain the evaluation
  data's bytes (its example input is a fresh tensor).
- `masked_sparse.onnx`: the masked model, its mostly-zero weights as ONNX sparse
  initializers; written only when smaller than the masked model's dense ONNX.
- `model.csr.safetensors`: the masked model with every Linear / 1x1 conv at >= 50% zeros
  as CSR (pruneviz.output.sparse_file; `pruneviz.load_sparse` rebuilds it).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pruneviz.core.layers import eval_mode, output_tensors
from pruneviz.i18n import N_
from pruneviz.output.html_report import Check
from pruneviz.output.model_files import program, program_bytes
from pruneviz.output.onnx_file import OnnxUnavailable, onnx_bytes, run_onnx, sparse_initializers
from pruneviz.output.sparse_file import csr_model, load_sparse_bytes, save_sparse

ONNX = "model.onnx"
PROGRAM = "model.pt2"
SPARSE_ONNX = "masked_sparse.onnx"
CSR_FILE = "model.csr.safetensors"
DEPLOY_NAMES = (ONNX, PROGRAM, SPARSE_ONNX, CSR_FILE)
TOLERANCE = 1e-4  # max abs difference allowed, relative to max(1, largest |output|)
SPARSE_DENSITY = 1 / 3  # ONNX sparse initializers: only tensors with fewer non-zeros
CSR_MIN_SPARSITY = 0.5  # a Linear / 1x1 conv with at least this many zeros is stored as CSR
RUN_BATCH = 256
PASSED, FAILED, SKIPPED = N_("passed"), N_("failed"), N_("skipped")  # shown translated


@dataclass(frozen=True)
class DeployFile:
    """One deployment file: written and checked (passed), not written because its check
    failed (failed), or not made (skipped); `detail` says what was checked, or why not."""

    name: str
    status: str  # PASSED, FAILED or SKIPPED
    detail: str
    size: int | None = None  # bytes, when written

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"name": self.name, "status": self.status, "detail": self.detail,
                "size": self.size}

    def check(self) -> Check | None:
        """The export check this file adds (None when skipped)."""
        if self.status == SKIPPED:
            return None
        return Check(f"{self.name} runs elsewhere", self.status == PASSED, self.detail)


def _outputs(model: nn.Module | Callable[[Tensor], Any], x: Tensor) -> list[Tensor]:
    """The model's output tensors on `x`, run in batches and concatenated."""
    parts: list[list[Tensor]] = []
    context = eval_mode(model) if isinstance(model, nn.Module) else nullcontext()
    with context, torch.inference_mode():
        for start in range(0, x.shape[0], RUN_BATCH):
            out = model(x[start: start + RUN_BATCH])
            parts.append([t.detach().cpu() for t in output_tensors(out)])
    return [torch.cat([p[i] for p in parts]) for i in range(len(parts[0]))]


def agreement(outputs: Sequence[Tensor], reference: Sequence[Tensor]) -> tuple[bool, str]:
    """Whether `outputs` match `reference` (every tensor within TOLERANCE x max(1, largest
    |reference|), and for class scores (N, C) the same predicted class wherever the
    reference's top two differ by more than the tolerance); and the measured figures."""
    if len(outputs) != len(reference) or any(
            a.shape != b.shape for a, b in zip(outputs, reference, strict=True)):
        return False, (f"output shapes {[tuple(a.shape) for a in outputs]} differ from the "
                       f"model's {[tuple(b.shape) for b in reference]}")
    worst, allowed, flips, compared = 0.0, 0.0, 0, 0
    for a, b in zip(outputs, reference, strict=True):
        if not b.is_floating_point():
            if not torch.equal(a, b):
                return False, "integer outputs differ"
            continue
        tolerance = TOLERANCE * max(1.0, float(b.abs().max()) if b.numel() else 1.0)
        diff = float((a.double() - b.double()).abs().max()) if b.numel() else 0.0
        if not np.isfinite(diff):
            return False, "the outputs are not finite"
        worst, allowed = max(worst, diff), max(allowed, tolerance)
        if diff > tolerance:
            return False, f"max abs difference {diff:.3g} (tolerance {tolerance:.1g})"
        if b.dim() == 2 and b.shape[1] > 1:
            top = b.topk(2, dim=1).values
            clear = (top[:, 0] - top[:, 1]) > 2 * tolerance
            flips += int((a.argmax(1) != b.argmax(1))[clear].sum())
            compared += int(clear.sum())
    if flips:
        return False, f"{flips} of {compared} predictions differ"
    same = f"; same prediction on {compared:,} of {compared:,}" if compared else ""
    return True, f"max abs difference {worst:.2g} (tolerance {allowed:.1g}){same}"


def _batch_of(x: Tensor, n: int) -> Tensor:
    """`n` samples of `x` (repeated when it has fewer)."""
    reps = -(-n // max(x.shape[0], 1))
    return x.repeat(reps, *([1] * (x.dim() - 1)))[:n] if x.shape[0] < n else x[:n]


def _check_runs(run: Callable[[Tensor], list[Tensor]], model: nn.Module, x: Tensor,
                what: str) -> tuple[bool, str]:
    """Run on the evaluation data and at batch 1 and 64; compare with `model`."""
    details = []
    for label, batch in (("evaluation data", x), ("batch 1", _batch_of(x, 1)),
                         ("batch 64", _batch_of(x, 64))):
        ok, detail = agreement(run(batch), _outputs(model, batch))
        if not ok:
            return False, f"{what} on {label} ({len(batch):,} samples): {detail}"
        details.append(detail if label == "evaluation data" else label)
    return True, (f"{what} on {len(x):,} eval samples: {details[0]}; also runs at "
                  f"{' and '.join(details[1:])}")


def _data_chunk(x: Tensor) -> bytes:
    """The bytes of one evaluation sample with many distinct values (to search a file for)."""
    rows = x.detach().cpu().contiguous()
    best = max(range(min(len(rows), 16)), key=lambda i: len(set(rows[i].reshape(-1).tolist())),
               default=None)
    return b"" if best is None else rows[best].numpy().tobytes()


def _capture(model: nn.Module, x: Tensor) -> tuple[Any, str | None]:
    """`program(model, x)`, or why torch.export cannot capture it."""
    try:
        return program(model, x), None
    except Exception as exc:  # noqa: BLE001 - torch.export fails in many ways: say which
        return None, (f"torch.export cannot capture the model with a dynamic batch "
                      f"dimension: {type(exc).__name__}: {str(exc)[:300]}")


def _onnx_file(exported: Any, model: nn.Module, x: Tensor, what: str
               ) -> tuple[bytes | None, DeployFile]:
    try:
        data = onnx_bytes(exported)
    except OnnxUnavailable as exc:
        return None, DeployFile(ONNX, SKIPPED, str(exc))
    except Exception as exc:  # noqa: BLE001 - the exporter fails in many ways: say which
        return None, DeployFile(ONNX, SKIPPED, f"the {what} model does not export to ONNX: "
                                f"{type(exc).__name__}: {str(exc)[:300]}")
    try:
        ok, detail = _check_runs(lambda b: [torch.from_numpy(o) for o in run_onnx(data, b)],
                                 model, x, f"onnxruntime runs the {what} model")
    except Exception as exc:  # noqa: BLE001 - a bad graph fails in many ways: say which
        ok, detail = False, f"onnxruntime cannot run it: {type(exc).__name__}: {exc}"
    return data, DeployFile(ONNX, PASSED if ok else FAILED, detail, len(data) if ok else None)


def _program_file(exported: Any, model: nn.Module, x: Tensor, what: str
                  ) -> tuple[bytes | None, DeployFile]:
    try:
        data = program_bytes(exported)
        chunk = _data_chunk(x)
        if chunk and chunk in data:
            return None, DeployFile(PROGRAM, FAILED,
                                    "the program holds evaluation data's bytes")
        reloaded = torch.export.load(io.BytesIO(data)).module()
        ok, detail = _check_runs(lambda b: _outputs(lambda t: reloaded(t), b), model, x,
                                 f"reloaded, it runs the {what} model")
    except Exception as exc:  # noqa: BLE001 - a damaged program fails in many ways
        return None, DeployFile(PROGRAM, FAILED, f"the program does not reload and run: "
                                f"{type(exc).__name__}: {exc}")
    if ok:
        detail += "; holds no evaluation data (example input: a fresh tensor)"
    return data, DeployFile(PROGRAM, PASSED if ok else FAILED, detail,
                            len(data) if ok else None)


def _mostly_zero(model: nn.Module) -> bool:
    """True when some float tensor of `model` (16+ entries) has under a third non-zero:
    only such a tensor is smaller as an ONNX sparse initializer."""
    return any(t.is_floating_point() and t.numel() >= 16
               and int(torch.count_nonzero(t)) < SPARSE_DENSITY * t.numel()
               for t in model.state_dict().values())


def _sparse_onnx_file(masked: nn.Module, x: Tensor, dense: bytes | None
                      ) -> tuple[bytes | None, DeployFile]:
    if not _mostly_zero(masked):
        return None, DeployFile(SPARSE_ONNX, SKIPPED, (
            "not smaller: no weight has under a third of its entries non-zero, and ONNX "
            "stores each sparse entry with an int64 index (12 bytes against 4 dense)"))
    try:
        if dense is None:
            exported, error = _capture(masked, x)
            if error is not None:
                return None, DeployFile(SPARSE_ONNX, SKIPPED, error)
            dense = onnx_bytes(exported)
        data, count = sparse_initializers(dense, SPARSE_DENSITY)
    except OnnxUnavailable as exc:
        return None, DeployFile(SPARSE_ONNX, SKIPPED, str(exc))
    except Exception as exc:  # noqa: BLE001 - the exporter fails in many ways: say which
        return None, DeployFile(SPARSE_ONNX, SKIPPED, f"the masked model does not export to "
                                f"ONNX: {type(exc).__name__}: {str(exc)[:300]}")
    if not count or len(data) >= len(dense):
        return None, DeployFile(SPARSE_ONNX, SKIPPED, (
            f"not smaller: no weight has under a third of its entries non-zero (ONNX "
            f"stores each sparse entry with an int64 index), so it would be {len(data):,} "
            f"bytes against {len(dense):,} for the masked model's dense ONNX"))
    try:
        ok, detail = _check_runs(lambda b: [torch.from_numpy(o) for o in run_onnx(data, b)],
                                 masked, x, "onnxruntime runs the masked model")
    except Exception as exc:  # noqa: BLE001 - a bad graph fails in many ways: say which
        ok, detail = False, f"onnxruntime cannot run it: {type(exc).__name__}: {exc}"
    detail += (f"; {count} weight tensor(s) as sparse initializers: {len(data):,} bytes "
               f"against {len(dense):,} dense")
    return data, DeployFile(SPARSE_ONNX, PASSED if ok else FAILED, detail,
                            len(data) if ok else None)


def _csr_file(masked: nn.Module, x: Tensor, card: dict[str, Any],
              base_model: nn.Module) -> tuple[bytes | None, DeployFile]:
    converted, names = csr_model(masked, CSR_MIN_SPARSITY)
    if not names:
        return None, DeployFile(CSR_FILE, SKIPPED, (
            f"no Linear or 1x1 convolution has {CSR_MIN_SPARSITY:.0%} or more of its weights "
            "zero: there is nothing to run as CSR"))
    try:
        data = save_sparse(converted, card)
        reloaded = load_sparse_bytes(data, base_model)  # on the CPU, as load_sparse loads
        ok, detail = _check_runs(lambda b: _outputs(reloaded, b.cpu()), masked, x,
                                 "reloaded with pruneviz.load_sparse, it runs the masked "
                                 "model")
    except Exception as exc:  # noqa: BLE001 - a damaged file fails in many ways: say which
        return None, DeployFile(CSR_FILE, FAILED, f"{type(exc).__name__}: {exc}")
    detail += f"; {len(names)} layer(s) as CSR: {', '.join(names[:6])}"
    return data, DeployFile(CSR_FILE, PASSED if ok else FAILED, detail,
                            len(data) if ok else None)


def deployment_files(deployed: nn.Module, masked: nn.Module, x: Tensor, *, what: str,
                     card: dict[str, Any], base_model: nn.Module
                     ) -> tuple[dict[str, bytes], list[DeployFile]]:
    """The deployment files that passed their checks (name -> bytes) and a row for every
    one. `deployed` is the model model.onnx and model.pt2 hold (`what`: "slimmed" or
    "masked"), `masked` the pruned model at full shape, `x` the evaluation inputs, `card`
    the masked model's architecture card (its base: `base_model`)."""
    files: dict[str, bytes] = {}
    rows: list[DeployFile] = []
    exported, error = _capture(deployed, x)
    dense_masked: bytes | None = None
    if error is not None:
        rows += [DeployFile(ONNX, SKIPPED, error), DeployFile(PROGRAM, SKIPPED, error)]
    else:
        data, row = _onnx_file(exported, deployed, x, what)
        rows.append(row)
        if data is not None and row.status == PASSED:
            files[ONNX] = data
            dense_masked = data if deployed is masked else None
        program, program_row = _program_file(exported, deployed, x, what)
        rows.append(program_row)
        if program is not None and program_row.status == PASSED:
            files[PROGRAM] = program
    for name, (content, entry) in ((SPARSE_ONNX, _sparse_onnx_file(masked, x, dense_masked)),
                                   (CSR_FILE, _csr_file(masked, x, card, base_model))):
        rows.append(entry)
        if content is not None and entry.status == PASSED:
            files[name] = content
    return files, rows


__all__ = [
    "CSR_FILE",
    "DEPLOY_NAMES",
    "ONNX",
    "PROGRAM",
    "SPARSE_ONNX",
    "DeployFile",
    "agreement",
    "deployment_files",
]
