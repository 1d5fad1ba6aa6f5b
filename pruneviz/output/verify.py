"""Reading an export bundle back: its weight and plan files by name, and whether those
files, reloaded from disk, reproduce the workbench's current model.

`verify_bundle(bench, out)` checks that the weights reload strictly into a fresh copy of
the architecture and give the in-app model's outputs on the evaluation data, that the
sparse file decodes to the same weights, that the plan re-applied to the unpruned weights
in a fresh session reproduces them bit for bit, and that the slimmed model rebuilt from
its files computes what the slimmed model in memory and the masked model compute. It
never raises: a failed check is a `Check` that says what differs.
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Collection
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from pruneviz.core.blocks import set_module
from pruneviz.core.layers import eval_mode
from pruneviz.core.plan import Plan
from pruneviz.core.session import PruningSession
from pruneviz.core.slim import slim as slim_session
from pruneviz.core.slim import slim_differs as differs_of
from pruneviz.data.samples import get_spec
from pruneviz.data.sources import source_options
from pruneviz.errors import ModelError
from pruneviz.measure.metrics import evaluate
from pruneviz.measure.storage import decode_sparse
from pruneviz.output.html_report import Check
from pruneviz.output.model_files import load_slimmed
from pruneviz.workflows.workbench import Workbench

WEIGHTS = "weights.safetensors"
SPARSE = "weights.sparse.safetensors"
PLAN = "plan.json"
BASE = "base_weights.safetensors"
SLIM_WEIGHTS = "slim/slim.safetensors"
SLIM_CARD = "slim/slim.json"
OUTPUT_BATCH = 256  # eval samples per forward pass when outputs are compared
SLIM_TOLERANCE = 1e-4  # slimmed vs masked outputs, relative to the largest output (>= 1)


def reference_state(bench: Workbench) -> dict[str, Tensor]:
    """The weights `bench.name` alone loads: a sample's shipped weights, else the model
    as it was loaded."""
    kind, _, name = bench.name.partition(":")
    if kind == "sample":
        return load_file(str(get_spec(name).weights_path))
    return {k: v.detach() for k, v in bench.pristine.state_dict().items()}


def _bit_equal(a: Tensor, b: Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.detach().cpu().reshape(-1).contiguous().view(torch.uint8),
                       b.detach().cpu().reshape(-1).contiguous().view(torch.uint8))


def same_state(a: dict[str, Tensor], b: dict[str, Tensor]) -> list[str]:
    """Names of tensors that differ (or are missing from one side)."""
    return sorted(k for k in a.keys() | b.keys()
                  if k not in a or k not in b or not _bit_equal(a[k], b[k]))


def reproduce_command(bench: Workbench, base: bool) -> str:
    """The CLI command that reproduces weights.safetensors from plan.json (`base`: with
    the shipped base weights)."""
    parts = ["pruneviz", "prune", bench.name]
    if base:
        parts += ["--weights", BASE]
    if bench.source is not None:
        parts += source_options(bench.source, weights=not base)
    parts += ["--plan", PLAN, "--out", "reproduced"]
    line = " ".join(shlex.quote(part) for part in parts)
    if bench.source is None and not bench.name.startswith("sample:"):
        line += "  # plus the --data (and --weights) options the model was opened with"
    return f"{line}\ncmp reproduced/{WEIGHTS} {WEIGHTS}"


# -- verification ------------------------------------------------------------------------------
def _outputs(model: nn.Module, x: Tensor) -> Tensor:
    with eval_mode(model), torch.inference_mode():
        parts = [model(x[i: i + OUTPUT_BATCH]) for i in range(0, x.shape[0], OUTPUT_BATCH)]
    return torch.cat(parts)


def _max_diff(a: Tensor, b: Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def _failed(name: str, exc: BaseException) -> Check:
    return Check(name, False, f"{type(exc).__name__}: {exc}")


def _check_weights(bench: Workbench, out: Path, masked: Tensor, x: Tensor) -> Check:
    name = f"{WEIGHTS} reloads into a fresh copy of the architecture"
    try:
        state = load_file(str(out / WEIGHTS))
        model = copy.deepcopy(bench.pristine)
        for block in bench.session.removed_blocks():
            set_module(model, block, nn.Identity())
        model.load_state_dict(state, strict=True)
        differ = same_state(state, bench.model.state_dict())
        if differ:
            return Check(name, False, f"{len(differ)} tensor(s) differ from the in-app "
                         f"model's: {', '.join(differ[:5])}")
        reloaded = _outputs(model, x)
    except Exception as exc:  # noqa: BLE001 - a damaged file can fail in any way: report it
        return _failed(name, exc)
    if not torch.equal(reloaded, masked):
        return Check(name, False, f"outputs differ from the in-app model's on {len(x):,} "
                     f"eval samples (largest difference {_max_diff(reloaded, masked):.3g})")
    return Check(name, True, f"loads strictly into a fresh {type(model).__name__}: "
                 f"{len(state)} tensors bit-identical to the in-app model; outputs "
                 f"identical on {len(x):,} eval samples")


def _check_sparse(bench: Workbench, out: Path) -> Check:
    name = f"{SPARSE} decodes to the same weights"
    try:
        state = decode_sparse((out / SPARSE).read_bytes())
        differ = same_state(state, bench.model.state_dict())
    except Exception as exc:  # noqa: BLE001 - a damaged file can fail in any way: report it
        return _failed(name, exc)
    if differ:
        return Check(name, False, f"{len(differ)} tensor(s) differ: {', '.join(differ[:5])}")
    return Check(name, True, f"{len(state)} tensors, bit for bit")


def _check_plan(bench: Workbench, out: Path, command: str, *, with_base: bool) -> Check:
    name = f"{PLAN} reproduces the weights"
    try:
        plan = Plan.from_json((out / PLAN).read_text(encoding="utf-8"))
        base = load_file(str(out / BASE)) if with_base else reference_state(bench)
        model = copy.deepcopy(bench.pristine)
        model.load_state_dict(base, strict=True)
        session = bench.session
        fresh = PruningSession(model, session.example_input, calibration=session.calibration,
                               name=bench.name, seed=session.seed)
        fresh.apply(plan)
        exported = load_file(str(out / WEIGHTS))
        differ = same_state(fresh.model.state_dict(), exported)
    except Exception as exc:  # noqa: BLE001 - a damaged file can fail in any way: report it
        return _failed(name, exc)
    if differ:
        return Check(name, False, f"the plan applied to the unpruned weights in a fresh "
                     f"session gives {len(differ)} tensor(s) other than {WEIGHTS}: "
                     f"{', '.join(differ[:5])}")
    source = BASE if with_base else "the model's own weights"
    return Check(name, True, f"applied to {source} in a fresh session, the plan gives "
                 f"{WEIGHTS} bit for bit ({len(exported)} tensors): "
                 f"`{command.splitlines()[0]}` reproduces it")


def _check_slim(bench: Workbench, out: Path, slim_model: nn.Module, masked: Tensor,
                x: Tensor, differs: tuple[str, ...] = ()) -> list[Check]:
    name = "slimmed model reloads from slim/"
    try:
        model = load_slimmed(out / SLIM_CARD, out / SLIM_WEIGHTS, bench.pristine)
        reloaded = _outputs(model, x)
        in_memory = _outputs(slim_model, x)
    except Exception as exc:  # noqa: BLE001 - a damaged file can fail in any way: report it
        return [_failed(name, exc)]
    params = sum(p.numel() for p in model.parameters())
    same = torch.equal(reloaded, in_memory)
    first = Check(name, same, (
        f"{SLIM_CARD} + {SLIM_WEIGHTS} rebuild a model with {params:,} parameters; outputs "
        + (f"identical to the slimmed model in memory on {len(x):,} eval samples" if same
           else f"differ from the slimmed model in memory (largest difference "
                f"{_max_diff(reloaded, in_memory):.3g})")))
    diff = _max_diff(reloaded, masked)
    if differs:  # by design not the masked model (LayerNorm over a pruned width)
        own, then = evaluate(model, bench.eval_data), evaluate(bench.model, bench.eval_data)
        return [first, Check(
            "slimmed model measured on its own (by design not the masked model)", True,
            f"{'; '.join(differs)}; largest output difference from the in-app (masked) "
            f"model: {diff:.3g}; {own.metric_name} of the slimmed model on {own.samples:,} "
            f"eval samples: {own.metric:.4g} (masked model: {then.metric:.4g})")]
    tolerance = SLIM_TOLERANCE * max(1.0, float(masked.abs().max()) if masked.numel() else 1.0)
    if differs:  # by design another function: measured, never called equivalent
        return [first, Check(
            "slimmed model measured, not equivalent to the masked model", True,
            f"by design: {'; '.join(differs)}; largest output difference from the in-app "
            f"(masked) model on {len(x):,} eval samples: {diff:.3g}")]
    second = Check("slimmed model computes what the masked model computes",
                   diff <= tolerance,
                   f"largest output difference from the in-app (masked) model on {len(x):,} "
                   f"eval samples: {diff:.3g} (tolerance {tolerance:.1g}; float sums in "
                   "another order)")
    return [first, second]


def verify_bundle(bench: Workbench, out: Path, *, slim_model: nn.Module | None = None,
                  command: str | None = None, written: Collection[str] | None = None,
                  slim_differs: tuple[str, ...] = ()) -> list[Check]:
    """Check the files in `out` against the workbench's current model (never raises).

    With `slim_model` (the slimmed model in memory), slim/ must be there and rebuild it;
    without it, slim/ is checked against a fresh slim of the session when present.
    `slim_differs`: why the slim is by design not the masked model's function
    (SlimResult.differs): then it is measured, and never checked as equivalent.
    `written` names the files the export wrote (None: whatever is in `out`): a file of
    the same name left beside them (written with --force) is not taken for the bundle's.
    """
    out = Path(out)

    def present(name: str) -> bool:
        return (out / name).is_file() and (written is None or name in written)

    x = bench.eval_data.x
    masked = _outputs(bench.model, x)
    command = command or reproduce_command(bench, present(BASE))
    checks = [_check_weights(bench, out, masked, x), _check_sparse(bench, out),
              _check_plan(bench, out, command, with_base=present(BASE))]
    if slim_model is None and present(SLIM_CARD):
        try:
            result = slim_session(bench.session, x)
            slim_model, slim_differs = result.model, result.differs
        except ModelError as exc:
            checks.append(_failed("slimmed model reloads from slim/", exc))
    if slim_model is not None:
        checks += _check_slim(bench, out, slim_model, masked, x,
                              slim_differs or differs_of(bench.session))
    return checks


__all__ = [
    "BASE",
    "PLAN",
    "SLIM_CARD",
    "SLIM_WEIGHTS",
    "SPARSE",
    "WEIGHTS",
    "reference_state",
    "reproduce_command",
    "same_state",
    "verify_bundle",
]
