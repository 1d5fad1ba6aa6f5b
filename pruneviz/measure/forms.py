"""The three forms of a pruned model, measured side by side.

- masked: the session's model — dense shapes with zeros written in (what sliders make);
- slimmed: pruned channel units removed (slim.py) — smaller tensors, fewer MACs;
- sparse-deployed: mostly-zero Linear / 1x1 conv layers run as CSR where measured faster
  (deploy.py), stored sparsely.

Each form is measured as a `Report` (its `form` set): the parameters it actually stores,
the weight MACs per sample it actually computes, the bytes of its saved file, measured
latency, and the largest output difference from the masked model (which the other two
must reproduce).
"""

from __future__ import annotations

from torch import Tensor, nn

from pruneviz.core.layers import find_prunable_layers
from pruneviz.core.session import PruningSession
from pruneviz.core.slim import max_abs_diff, slim
from pruneviz.errors import ModelError
from pruneviz.measure.meter import NOT_EVALUATED, Report
from pruneviz.measure.metrics import Latency, measure_latency
from pruneviz.measure.sparse import deployed_state_bytes, sparse_deploy
from pruneviz.measure.storage import FileSizes, dense_bytes


def _form(session: PruningSession, form: str, *, params: int, macs: int, file_bytes: int,
          latency: Latency | None, max_abs_diff: float, note: str | None = None) -> Report:
    """The record of one form: what it stores, computes, saves and how fast it runs."""
    return Report(
        model=session.name, plan=session.stamp(session.plan).to_dict(),
        evaluation=NOT_EVALUATED, params_total=params, params_nonzero=params,
        macs_dense=macs, macs_effective=macs,
        sizes=FileSizes(file_bytes, file_bytes, file_bytes), latency=latency,
        notes=() if note is None else (note,), form=form, file_bytes=file_bytes,
        max_abs_diff=max_abs_diff,
    )


def _refused(session: PruningSession, form: str, why: str) -> Report:
    return _form(session, form, params=0, macs=0, file_bytes=0, latency=None,
                 max_abs_diff=float("nan"), note=why)


def _latency(model: nn.Module, batch: Tensor, runs: int, latency: bool) -> Latency | None:
    return measure_latency(model, batch, runs=runs) if latency else None


def masked_form(session: PruningSession, batch: Tensor, *, latency: bool = True,
                runs: int = 20) -> Report:
    """The masked model as it is: dense shapes, zeros stored as zeros."""
    model = session.model
    return _form(session, "masked", params=sum(p.numel() for p in model.parameters()),
                 macs=sum(layer.macs for layer in session.layers),
                 file_bytes=len(dense_bytes(model.state_dict())),
                 latency=_latency(model, batch, runs, latency), max_abs_diff=0.0)


def slimmed_form(session: PruningSession, batch: Tensor, *, latency: bool = True,
                 runs: int = 20) -> tuple[Report, nn.Module | None]:
    """The model with pruned channel units removed, or why it cannot be built."""
    try:
        result = slim(session)
    except ModelError as exc:
        return _refused(session, "slimmed", str(exc)), None
    model = result.model
    macs = sum(layer.macs for layer in find_prunable_layers(model, batch))
    note = None if result.removed else "no coupled channels are pruned: same shapes as masked"
    return _form(session, "slimmed", params=result.params, macs=macs,
                 file_bytes=len(dense_bytes(model.state_dict())),
                 latency=_latency(model, batch, runs, latency),
                 max_abs_diff=max_abs_diff(session.model, model, batch), note=note), model


def sparse_form(session: PruningSession, batch: Tensor, *, latency: bool = True,
                runs: int = 20) -> tuple[Report, nn.Module]:
    """Mostly-zero Linear / 1x1 conv layers as CSR where it measured faster."""
    try:
        deployment = sparse_deploy(session.model, batch)
    except ModelError as exc:
        return _refused(session, "sparse-deployed", str(exc)), session.model
    converted = set(deployment.converted)
    macs = 0
    for layer in session.layers:
        result = session.result(layer.name)
        macs += round(layer.macs * result.nonzero / layer.params) if layer.module_name in \
            converted else layer.macs
    # CSR layers hold their non-zero values as parameters: this counts what is stored.
    params = sum(p.numel() for p in deployment.model.parameters())
    note = (f"CSR: {', '.join(sorted(converted))}" if converted
            else "no layer ran faster as CSR: all kept dense")
    return _form(session, "sparse-deployed", params=params, macs=macs,
                 file_bytes=deployed_state_bytes(deployment),
                 latency=_latency(deployment.model, batch, runs, latency),
                 max_abs_diff=max_abs_diff(session.model, deployment.model, batch),
                 note=note), deployment.model


def all_forms(session: PruningSession, batch: Tensor, *, runs: int = 20) -> list[Report]:
    """The masked, slimmed and sparse-deployed forms of the current plan, measured."""
    slimmed, _ = slimmed_form(session, batch, runs=runs)
    sparse, _ = sparse_form(session, batch, runs=runs)
    return [masked_form(session, batch, runs=runs), slimmed, sparse]


def best_form(
    forms: list[Report], tolerance: float = 1e-4, margin: float = 0.95
) -> Report:
    """The fastest form that computes what the masked model (`forms[0]`) computes; another
    form wins only if it is at least 5% faster (`margin`): timing noise is not a reason
    to ship something more complicated."""
    masked = forms[0]
    usable = [f for f in forms[1:] if f.latency_ms is not None and f.max_abs_diff is not None
              and f.max_abs_diff <= tolerance]
    if masked.latency_ms is None or not usable:
        return masked
    fastest = min(usable, key=lambda f: f.latency_ms or 0.0)
    return fastest if (fastest.latency_ms or 0.0) < margin * masked.latency_ms else masked
