"""Reconstruction ("refit"): after pruning, refit each layer's kept weights so that the
pruned layer reproduces the unpruned layer's outputs on calibration data.

The method: an exact, damped least-squares solve per output row over the row's kept
inputs. For layer inputs X̃ (produced by the already pruned-and-refit layers before it),
the unpruned layer's outputs Y = X W₀ᵀ + b₀ (X: the unpruned model's inputs to it) and
row i's kept inputs K_i (the plan's mask; plus the bias, when the row keeps one),

    w_i = argmin_w ‖X̃_{K_i} w - Y_i‖² + λ‖w‖²,   λ = damping * mean diag(X̃ᵀX̃),

solved in float64 from the accumulated XᵀX and XᵀY (Cholesky; rows that share a kept set
are solved together). Pruned entries are never written: they stay exactly zero.

Why this and not the SparseGPT / OBS sequential update (Frantar & Alistarh, "SparseGPT:
Massive Language Models Can Be Accurately Pruned in One-Shot", ICML 2023): the paper
starts from exactly this problem — for a fixed mask, the optimal values of each row are
the least-squares solve above over the row's kept inputs — and replaces it by
sequential OBS updates only because at LLM scale every row's own mask needs its own
inverse of a d-by-d Hessian (d ~ 10^4, thousands of rows), which it cannot afford. On
the models pruneviz is built for (the samples, MNIST-sized user models) the exact solve
takes well under a second per model and gives the optimum the OBS update approximates.
Its cost is about rows x k^3/3 for k kept inputs per row (rows sharing a kept set, as in
structured pruning, share one factorisation): a 1024x1024 Linear at 70% unstructured
sparsity takes about 8 s on one core; layers with thousands of rows of thousands of
kept inputs take minutes, which is the scale where SparseGPT's shared-inverse update
pays. The exact solve also keeps the mask the user chose: SparseGPT chooses the mask
inside its update (adaptive mask selection), while here the engine's criterion and
granularity (unstructured, N:M, filter, channel; any criterion) decide it and the refit
only changes the kept values. The damping follows the paper's 1% of the mean Hessian
diagonal.

The target is the *unpruned* model's output of each layer, not the pruned layer's output
on its new inputs: refitting layers in model order on the inputs of the pruned model
before them, each layer also corrects what the layers before it lost (as SparseGPT and
OBC do by feeding each layer the compressed model's inputs). For structured pruning the
removed channels are zero at the next layer's input, so that layer's refit absorbs them:
its other weights (and bias) are refit to make up for the channels that are gone.

What is refit: `nn.Linear` (any leading dimensions) and `nn.Conv2d` with groups=1 and zero
padding (each output channel is a row over in_channels*kh*kw unfolded input patches).
What is not, and why (each reported with its reason):
- RNN / LSTM / GRU weights: a layer's output feeds back into it through time, so its
  output is not linear in its weights over fixed inputs — no least-squares problem.
- MultiheadAttention's input projection: its q, k, v outputs are consumed inside the
  module, which has no hook point between the projection and the attention.
- grouped / depthwise and 1-D / 3-D / transposed convolutions: not written (each would
  need its own unfolding); they keep the pruned (masked) weights.
- a module called more than once per forward (shared weights): one set of weights would
  have to fit several inputs at once.
- layers that are neither pruned nor fed by a changed layer: they already reproduce
  their outputs exactly (a damped solve would only shrink them).
Input columns that are zero on every calibration sample (a removed channel, a dead ReLU)
carry no information: they are left out of the solve and keep their (masked) values.

Deterministic: the calibration samples are a seeded, stratified subset in their original
order, processed in fixed chunks; sums and solves are float64 on the CPU; nothing random
(on a GPU the forward passes are as deterministic as its kernels:
`torch.use_deterministic_algorithms(True)` for bit-exact repeats there).
The same plan, model, data and settings give the same weights bit for bit (on the same
machine and thread count). The session's originals and the model it holds are never
written: the refit weights are a new state dict (a weight set the tab can adopt).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pruneviz.core.layers import PrunableLayer, eval_mode, model_device
from pruneviz.core.plan import Plan, Refit
from pruneviz.core.session import PruningSession
from pruneviz.data.tensors import TensorData
from pruneviz.errors import Cancelled, PlanError
from pruneviz.measure.meter import Report
from pruneviz.workflows.experiments import Experiment, describe_plan
from pruneviz.workflows.workbench import Workbench, load_weights
from pruneviz.workflows.workspace import Workspace

CHUNK = 128  # calibration samples per forward pass

Progress = Callable[[int, int, str], None]  # (layers done, layers in all, layer name)


class RefitError(PlanError):
    """A refit cannot run on this plan or model (the message says what to do)."""


@dataclass(frozen=True)
class LayerRefit:
    """One layer's reconstruction: whether it was refit (else why not) and its relative
    output error ‖Ŷ - Y‖ / ‖Y‖ on the calibration data against the unpruned model, for the
    one-shot pruned model (`before`) and the refit one (`after`); None for layer types
    whose output is not compared."""

    name: str
    type: str
    refit: bool
    reason: str | None
    before: float | None
    after: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "type": self.type, "refit": self.refit,
                "reason": self.reason, "error_before": self.before, "error_after": self.after}


@dataclass(frozen=True)
class RefitResult:
    """The refit weights (a full state dict of the model, pruned entries zero), with the
    settings and data they came from and each layer's errors."""

    settings: Refit
    state: dict[str, Tensor]
    layers: tuple[LayerRefit, ...]
    samples: int
    data_name: str
    seconds: float
    notes: tuple[str, ...] = ()

    @property
    def refit_layers(self) -> list[str]:
        """Names of the layers whose weights were refit."""
        return [layer.name for layer in self.layers if layer.refit]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the weights)."""
        return {"settings": self.settings.to_dict(), "samples": self.samples,
                "data": self.data_name, "seconds": self.seconds, "notes": list(self.notes),
                "layers": [layer.to_dict() for layer in self.layers]}


def calibration_data(train: TensorData | None, evaluation: TensorData,
                     settings: Refit) -> tuple[TensorData, tuple[str, ...]]:
    """The samples a refit fits to: a seeded stratified subset of the training data (of the
    evaluation data when there is none, which the note says: the metric is then measured
    on data the refit has seen)."""
    notes: tuple[str, ...] = ()
    source = train
    if source is None:
        source = evaluation
        notes = ("refit on the evaluation data (no training data was given): the metric "
                 "is measured on samples the refit has seen; give training data for an "
                 "honest comparison",)
    return source.subset(settings.samples, seed=settings.seed), notes


def refit(session: PruningSession, data: TensorData, settings: Refit, *,
          progress: Progress | None = None,
          cancel: threading.Event | None = None) -> RefitResult:
    """Refit the kept weights of the session's current plan on `data` (see the module
    docstring). The session, its model and originals are left as they are; the result's
    `state` is the refit model's state dict."""
    started = time.perf_counter()
    plan = session.plan
    if plan.blocks:
        raise RefitError("refit does not work with removed blocks (the removed block's "
                         "layers have no output to reproduce); refit a plan without "
                         "removed blocks")
    device = model_device(session.model)
    x = data.x.to(device)
    reference = _reference_model(session)
    work = copy.deepcopy(session.model)
    work.eval()
    reference.eval()
    keeps = session.keep_masks()
    modules = dict(work.named_modules())
    order, calls = _call_order(reference, x[:1], session.layers)
    reasons: dict[str, str] = {}
    for layer in session.layers:
        why = _unsupported(layer, modules[layer.module_name], calls.get(layer.module_name, 0))
        if why is not None:
            reasons[layer.name] = why
    targets = [layer for layer in order if layer.name not in reasons]
    before = _errors(reference, work, x, targets)
    done: set[str] = set()
    with torch.no_grad():
        for index, layer in enumerate(targets):
            if cancel is not None and cancel.is_set():
                raise Cancelled("refit cancelled")
            if progress is not None:
                progress(index, len(targets), layer.name)
            pruned = (layer.weight in keeps
                      or (layer.bias is not None and layer.bias in keeps))
            if not pruned and not _inputs_differ(reference, work, x, layer):
                reasons[layer.name] = ("unchanged: neither pruned nor fed by a changed "
                                       "layer (it already reproduces its outputs)")
                continue
            _refit_layer(reference, work, x, layer, keeps, settings.damping)
            done.add(layer.name)
    if progress is not None:
        progress(len(targets), len(targets), "")
    after = _errors(reference, work, x, targets)
    layers = tuple(
        LayerRefit(layer.name, layer.type, layer.name in done, reasons.get(layer.name),
                   before.get(layer.name), after.get(layer.name))
        for layer in session.layers)
    state = {k: v.detach().clone() for k, v in work.state_dict().items()}
    return RefitResult(settings, state, layers, len(data), data.name,
                       time.perf_counter() - started)


def refit_bench(bench: Workbench, settings: Refit, *, progress: Progress | None = None,
                cancel: threading.Event | None = None) -> RefitResult:
    """Refit the bench's current plan on its calibration samples: `settings.samples` drawn
    with `settings.seed` from the training data (else the whole evaluation set — never the
    live subset, so the app and the CLI fit the same samples)."""
    data, notes = calibration_data(bench.train_data, bench.full_data, settings)
    result = refit(bench.session, data, settings, progress=progress, cancel=cancel)
    return replace(result, notes=notes)


@dataclass(frozen=True)
class RefitRun:
    """A refit of a tab's plan, kept as the weight set `name` ("refit #N"): its report and
    that of the same plan without refit (`twin`), both recorded in the experiment log."""

    name: str
    plan: Plan  # the plan (stamped) whose masks the refit kept
    weights: str  # the weights the plan pruned (ORIGINAL, or a fine-tuned set)
    result: RefitResult
    report: Report
    twin: Report
    experiment: Experiment


REFIT_PREFIX = "refit #"


def record_refit(space: Workspace, settings: Refit, *, progress: Progress | None = None,
                 cancel: threading.Event | None = None) -> RefitRun:
    """Refit the tab's current plan, keep the refit weights as the weight set "refit #N",
    measure them (the same masks: pruned entries are zero in them) and record the
    experiment on them; the tab's session is left on the weights and plan it had. Adopt
    the weights with `space.use_weights(run.name, run.plan)`, or leave them."""
    space.settle()
    bench, session = space.bench, space.bench.session
    plan, weights = session.stamp(session.plan), space.weights
    if plan.is_empty:
        raise RefitError("the plan prunes nothing: there is nothing to refit; prune "
                         "something first")
    twin = bench.meter.report(gzip=False)
    result = refit_bench(bench, settings, progress=progress, cancel=cancel)
    taken = [n for n in space.weight_sets() if n.startswith(REFIT_PREFIX)]
    name = f"{REFIT_PREFIX}{len(taken) + 1}"
    space.remember_weights(name, result.state)
    try:
        session.rebase(result.state, keep_decisions=True)  # the refit weights, same masks
        report = bench.meter.report(gzip=False)
    finally:
        load_weights(session, space.weights_state(weights))
        session.apply(plan)
    label = (f"{describe_plan(plan)} + refit (damping {settings.damping:g}, "
             f"{result.samples:,} samples, seed {settings.seed})")
    # the log keeps the plan with its refit: downloaded, `prune --plan` repeats the refit
    experiment = space.log.record(report, plan.with_refit(settings), label, name,
                                  parent=space.head)
    return RefitRun(name, plan, weights, result, report, twin, experiment)


# -- the two models ------------------------------------------------------------------------
def _reference_model(session: PruningSession) -> nn.Module:
    """A copy of the session's model with its original (unpruned) values."""
    reference = copy.deepcopy(session.model)
    params = dict(reference.named_parameters())
    with torch.no_grad():
        for name in session.changed_tensors():
            params[name].copy_(session.original(name))
    return reference


def _unsupported(layer: PrunableLayer, module: nn.Module, calls: int) -> str | None:
    """Why `layer` is not refit, or None when it is."""
    if calls == 0:
        return "not used by a forward pass of the calibration data"
    if calls > 1:
        return (f"called {calls} times per forward (shared weights): one set of weights "
                "cannot be refit to several inputs")
    if isinstance(module, nn.Linear):
        return None
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return "grouped / depthwise convolution: not refit (keeps the pruned weights)"
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            return ("convolution with non-zero or 'same'/'valid' padding mode: not refit "
                    "(keeps the pruned weights)")
        return None
    if isinstance(module, nn.RNNBase):
        return ("recurrent layer: its output feeds back through time, so it is not "
                "linear in its weights (no least-squares refit)")
    if isinstance(module, nn.MultiheadAttention):
        return "attention input projection: its outputs are not visible outside the module"
    return f"{type(module).__name__}: only Linear and Conv2d layers are refit"


def _call_order(model: nn.Module, x: Tensor,
                layers: list[PrunableLayer]) -> tuple[list[PrunableLayer], dict[str, int]]:
    """The layers in the order a forward pass calls them, and how often each is called."""
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    seen: list[str] = []

    def hook(name: str) -> Callable[..., None]:
        def record(_module: nn.Module, _args: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            if name not in seen:
                seen.append(name)
        return record

    names = {layer.module_name for layer in layers}
    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        with torch.no_grad(), eval_mode(model):
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    rank = {name: i for i, name in enumerate(seen)}
    ordered = sorted(layers, key=lambda layer: rank.get(layer.module_name, len(rank)))
    return ordered, calls


# -- capturing a layer's input and output ----------------------------------------------------
class _Stop(Exception):
    """Ends a forward pass once the hooked layer has been seen."""


@contextmanager
def _captured(model: nn.Module, module_name: str, *,
              stop: bool) -> Iterator[dict[str, Tensor]]:
    """Hooks that keep the input and output of `module_name` (and end the pass there when
    `stop`) for the length of the block."""
    box: dict[str, Tensor] = {}
    module = dict(model.named_modules())[module_name]

    def keep(_module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        box["input"] = args[0].detach()
        box["output"] = output.detach()
        if stop:
            raise _Stop

    handle = module.register_forward_hook(keep)
    try:
        yield box
    finally:
        handle.remove()


def _run(model: nn.Module, x: Tensor) -> None:
    with suppress(_Stop):
        model(x)


def _chunks(x: Tensor) -> Iterator[Tensor]:
    for start in range(0, x.shape[0], CHUNK):
        yield x[start : start + CHUNK]


def _rows(module: nn.Module, inputs: Tensor) -> Tensor:
    """A layer's inputs as rows (samples x positions) of its weight's flattened columns."""
    if isinstance(module, nn.Conv2d):
        padding = module.padding
        assert not isinstance(padding, str)  # refused by _unsupported
        return patches(inputs, module.kernel_size, module.stride, padding, module.dilation)
    return inputs.reshape(-1, inputs.shape[-1])


def patches(inputs: Tensor, kernel: tuple[int, ...], stride: tuple[int, ...],
            padding: tuple[int, ...], dilation: tuple[int, ...]) -> Tensor:
    """A Conv2d's input patches as rows (sample, output row, output column) of
    in_channels*kh*kw columns, in the order of the flattened weight: what
    `F.unfold(...).transpose(1, 2)` gives, built from strided views (one copy, and no
    parallel kernel per call, which on a busy machine costs more than the work)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    padded = F.pad(inputs, (pw, pw, ph, ph)) if ph or pw else inputs
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    # (N, C, out_h, out_w, span_h, span_w) -> the kernel's taps -> (N, out_h, out_w, C, kh, kw)
    windows = padded.unfold(2, span_h, sh).unfold(3, span_w, sw)[..., ::dh, ::dw]
    n, c, out_h, out_w = windows.shape[:4]
    return windows.permute(0, 2, 3, 1, 4, 5).reshape(n * out_h * out_w, c * kh * kw)


def _out_rows(module: nn.Module, outputs: Tensor) -> Tensor:
    """A layer's outputs as rows matching `_rows` (one column per output channel)."""
    if isinstance(module, nn.Conv2d):
        return outputs.permute(0, 2, 3, 1).reshape(-1, outputs.shape[1])
    return outputs.reshape(-1, outputs.shape[-1])


def _inputs_differ(reference: nn.Module, work: nn.Module, x: Tensor,
                   layer: PrunableLayer) -> bool:
    with torch.no_grad():
        for chunk in _chunks(x):
            with _captured(reference, layer.module_name, stop=True) as ref:
                _run(reference, chunk)
            with _captured(work, layer.module_name, stop=True) as got:
                _run(work, chunk)
            if not torch.equal(ref["input"], got["input"]):
                return True
    return False


# -- the solve --------------------------------------------------------------------------------
def _refit_layer(reference: nn.Module, work: nn.Module, x: Tensor, layer: PrunableLayer,
                 keeps: dict[str, Tensor], damping: float) -> None:
    """Accumulate X̃ᵀX̃ and X̃ᵀY over the calibration data, solve each row's kept weights
    and write them into `work`'s layer."""
    module = dict(work.named_modules())[layer.module_name]
    weight: Tensor = module.weight
    out_features = weight.shape[0]
    columns = weight[0].numel()
    has_bias = getattr(module, "bias", None) is not None
    size = columns + (1 if has_bias else 0)
    gram = torch.zeros(size, size, dtype=torch.float64)
    cross = torch.zeros(size, out_features, dtype=torch.float64)
    for chunk in _chunks(x):
        with _captured(reference, layer.module_name, stop=True) as ref:
            _run(reference, chunk)
        with _captured(work, layer.module_name, stop=True) as got:
            _run(work, chunk)
        rows = _rows(module, got["input"]).to("cpu", torch.float64)
        if has_bias:
            rows = torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=torch.float64)], 1)
        target = _out_rows(module, ref["output"]).to("cpu", torch.float64)
        gram += rows.T @ rows
        cross += rows.T @ target
    diagonal = gram.diagonal()[:columns]
    scale = float(diagonal.mean()) if columns else 0.0
    if scale <= 0.0:
        return  # no input reaches the layer: nothing to fit
    lam = damping * scale
    live = gram.diagonal() > 0  # columns with some input on the calibration data
    weight_keep = keeps.get(layer.weight)
    bias_keep = keeps.get(layer.bias) if layer.bias is not None else None
    kept = (weight_keep.reshape(out_features, -1).cpu() if weight_keep is not None
            else torch.ones(out_features, columns, dtype=torch.bool))
    if has_bias:
        bias_rows = (bias_keep.cpu() if bias_keep is not None
                     else torch.ones(out_features, dtype=torch.bool))
        kept = torch.cat([kept, bias_rows[:, None]], 1)
    # the current values: what a row keeps where it is not solved
    current = weight.detach().reshape(out_features, -1).to("cpu", torch.float64)
    if has_bias:
        current = torch.cat([current, module.bias.detach().to("cpu", torch.float64)[:, None]],
                            1)
    solved = current.clone()
    by_set: dict[bytes, list[int]] = {}
    for row in range(out_features):
        if not bool(kept[row, :columns].any()):
            continue  # a removed output structure: it stays zero
        free = kept[row] & live
        by_set.setdefault(bytes(free.numpy().tobytes()), []).append(row)
    # A row's output on the calibration data depends only on its free columns: pruned
    # entries are zero and the columns left out have no input. So each solve, and the
    # comparison with the values it replaces, needs XᵀX and XᵀY on those columns only.
    for rows_of_set in by_set.values():
        index = torch.nonzero(kept[rows_of_set[0]] & live).flatten()
        if index.numel() == 0:
            continue
        rows_t = torch.tensor(rows_of_set)
        sub = gram.index_select(0, index).index_select(1, index)
        rhs = cross.index_select(0, index).index_select(1, rows_t)  # (free columns, rows)
        system = sub + lam * torch.eye(index.numel(), dtype=torch.float64)
        values = torch.cholesky_solve(rhs, torch.linalg.cholesky(system)).T  # (rows, free)
        old = current.index_select(0, rows_t).index_select(1, index)
        # keep a row's solve only where it fits better than the values it replaces (a
        # full row on unchanged inputs is already optimal: damping would only shrink it)
        better = _objective(values, sub, rhs) < _objective(old, sub, rhs)
        for position in torch.nonzero(better).flatten().tolist():
            solved[rows_of_set[position], index] = values[position]
    new_weight = solved[:, :columns].reshape(weight.shape).to(weight.dtype)
    # pruned entries are never written: they keep their exact zeros
    mask = kept[:, :columns].reshape(weight.shape).to(weight.device)
    weight.copy_(torch.where(mask, new_weight.to(weight.device), weight))
    if has_bias:
        bias: Tensor = module.bias
        bias.copy_(torch.where(kept[:, columns].to(bias.device),
                               solved[:, columns].to(bias.dtype).to(bias.device), bias))


def _objective(values: Tensor, gram: Tensor, cross: Tensor) -> Tensor:
    """Each row's squared output error up to a constant: wᵀGw - 2wᵀb (rows of `values`,
    columns of `cross`)."""
    return ((values @ gram) * values).sum(1) - 2 * (values * cross.T).sum(1)


# -- errors -----------------------------------------------------------------------------------
def _errors(reference: nn.Module, model: nn.Module, x: Tensor,
            layers: list[PrunableLayer]) -> dict[str, float]:
    """Each layer's relative output error of `model` against `reference` on `x`."""
    diff = {layer.name: 0.0 for layer in layers}
    norm = {layer.name: 0.0 for layer in layers}
    with torch.no_grad():
        for chunk in _chunks(x):
            ref_out = _outputs(reference, chunk, layers)
            got_out = _outputs(model, chunk, layers)
            for name, y in ref_out.items():
                y64, got64 = y.double(), got_out[name].double()
                diff[name] += float(((got64 - y64) ** 2).sum())
                norm[name] += float((y64**2).sum())
    return {name: (diff[name] / norm[name]) ** 0.5 if norm[name] > 0 else 0.0
            for name in diff}


def _outputs(model: nn.Module, x: Tensor, layers: list[PrunableLayer]) -> dict[str, Tensor]:
    modules = dict(model.named_modules())
    found: dict[str, Tensor] = {}
    by_module = {layer.module_name: layer.name for layer in layers}

    def hook(name: str) -> Callable[..., None]:
        def keep(_module: nn.Module, _args: Any, output: Any) -> None:
            found[name] = output.detach()
        return keep

    handles = [modules[m].register_forward_hook(hook(n)) for m, n in by_module.items()]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return found


__all__ = ["REFIT_PREFIX", "LayerRefit", "RefitError", "RefitResult", "RefitRun",
           "calibration_data", "record_refit", "refit", "refit_bench"]
