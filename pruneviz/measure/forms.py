"""The three forms of a pruned model, measured side by side.

- masked: the session's model — dense shapes with zeros written in (what sliders make);
- slimmed: pruned channel units removed (slim.py) — smaller tensors, fewer MACs;
- sparse-deployed: mostly-zero Linear / 1x1 conv layers run as CSR where measured faster
  (deploy.py), stored sparsely.

Each form reports parameters it actually stores, weight MACs per sample it actually
computes, the bytes of its saved file, measured latency, and the largest output
difference from the masked model (which the other two must reproduce).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from pruneviz.core.layers import find_prunable_layers
from pruneviz.core.session import PruningSession
from pruneviz.core.slim import max_abs_diff, slim
from pruneviz.errors import ModelError
from pruneviz.measure.metrics import measure_latency
from pruneviz.measure.sparse import deployed_state_bytes, sparse_deploy
from pruneviz.measure.storage import dense_bytes


@dataclass(frozen=True)
class FormReport:
    """Measurements of one deployable form of the pruned model."""

    form: str
    params: int
    macs: int
    size_bytes: int
    latency_ms: float | None
    max_abs_diff: float
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI's `slim` / `sparse_deployed` objects)."""
        return dict(self.__dict__)


def _latency(model: nn.Module, batch: Tensor, runs: int, latency: bool) -> float | None:
    return measure_latency(model, batch, runs=runs).median_ms if latency else None


def masked_form(session: PruningSession, batch: Tensor, *, latency: bool = True,
                runs: int = 20) -> FormReport:
    """The masked model as it is: dense shapes, zeros stored as zeros."""
    model = session.model
    return FormReport(
        "masked", sum(p.numel() for p in model.parameters()),
        sum(layer.macs for layer in session.layers),
        len(dense_bytes(model.state_dict())), _latency(model, batch, runs, latency), 0.0,
    )


def slimmed_form(session: PruningSession, batch: Tensor, *, latency: bool = True,
                 runs: int = 20) -> tuple[FormReport, nn.Module | None]:
    """The model with pruned channel units removed, or why it cannot be built."""
    try:
        result = slim(session)
    except ModelError as exc:
        return FormReport("slimmed", 0, 0, 0, None, float("nan"), str(exc)), None
    model = result.model
    macs = sum(layer.macs for layer in find_prunable_layers(model, batch))
    note = None if result.removed else "no coupled channels are pruned: same shapes as masked"
    return FormReport(
        "slimmed", result.params, macs, len(dense_bytes(model.state_dict())),
        _latency(model, batch, runs, latency), max_abs_diff(session.model, model, batch), note,
    ), model


def sparse_form(session: PruningSession, batch: Tensor, *, latency: bool = True,
                runs: int = 20) -> tuple[FormReport, nn.Module]:
    """Mostly-zero Linear / 1x1 conv layers as CSR where it measured faster."""
    try:
        deployment = sparse_deploy(session.model, batch)
    except ModelError as exc:
        return FormReport("sparse-deployed", 0, 0, 0, None, float("nan"), str(exc)), \
            session.model
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
    return FormReport(
        "sparse-deployed", params, macs, deployed_state_bytes(deployment),
        _latency(deployment.model, batch, runs, latency),
        max_abs_diff(session.model, deployment.model, batch), note,
    ), deployment.model


def all_forms(session: PruningSession, batch: Tensor, *, runs: int = 20) -> list[FormReport]:
    """The masked, slimmed and sparse-deployed forms of the current plan, measured."""
    slimmed, _ = slimmed_form(session, batch, runs=runs)
    sparse, _ = sparse_form(session, batch, runs=runs)
    return [masked_form(session, batch, runs=runs), slimmed, sparse]


def best_form(
    forms: list[FormReport], tolerance: float = 1e-4, margin: float = 0.95
) -> FormReport:
    """The fastest form that computes what the masked model (`forms[0]`) computes; another
    form wins only if it is at least 5% faster (`margin`): timing noise is not a reason
    to ship something more complicated."""
    masked = forms[0]
    usable = [f for f in forms[1:] if f.latency_ms is not None and f.max_abs_diff <= tolerance]
    if masked.latency_ms is None or not usable:
        return masked
    fastest = min(usable, key=lambda f: f.latency_ms or 0.0)
    return fastest if (fastest.latency_ms or 0.0) < margin * masked.latency_ms else masked
