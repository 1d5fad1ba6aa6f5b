"""The three forms of a pruned model, measured side by side.

- masked: the session's model — dense shapes with zeros written in (what sliders make);
- slimmed: pruned channel units removed (slim.py) — smaller tensors, fewer MACs;
- sparse-deployed: mostly-zero Linear / 1x1 conv layers run as CSR where measured faster
  (deploy.py), stored sparsely.

Each form is measured as a `Report` (its `form` set): the parameters it actually stores,
the weight MACs per sample it actually computes, the bytes of its saved file, and the
largest output difference from the masked model (which the other two must reproduce).
The one exception is by design: a slimmed model whose removed channels ran through a
LayerNorm (or RMSNorm) normalises over fewer channels than the masked one
(`SlimResult.differs`); it is then measured on its own — its metric on the evaluation
data next to the masked model's — and its note says so, never that they match.
`measure_forms` builds all three and times them together, interleaved round by round
(`timing.time_against`, the masked model as the reference: it has the unpruned model's
shapes, so it runs as fast), so each form's speed-up over the masked model comes with an
interval and a verdict; `fastest` names a form only when the intervals say it beats all
the others.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor, nn

from pruneviz.core.layers import find_prunable_layers
from pruneviz.core.session import PruningSession
from pruneviz.core.slim import max_abs_diff, slim
from pruneviz.data.tensors import TensorData
from pruneviz.errors import ModelError
from pruneviz.i18n import N_
from pruneviz.measure.meter import NOT_EVALUATED, Report
from pruneviz.measure.metrics import EvalResult, evaluate
from pruneviz.measure.sparse import deployed_state_bytes, sparse_deploy
from pruneviz.measure.storage import FileSizes, dense_bytes
from pruneviz.measure.timing import FASTER, Stop, Timing, time_against

TOLERANCE = 1e-4  # largest output difference from the masked model a form may have
# Fixed notes (shown through _() by the pages; the CLI prints them as they are)
SAME_SHAPES = N_("no coupled channels are pruned: same shapes as masked")
ALL_DENSE = N_("no layer ran faster as CSR: all kept dense, the same computation as masked")

# How a slimmed form's note starts when the slim by design computes another function
# (`SlimResult.differs`): it is measured as it is, and never called equivalent.
NOT_EQUIVALENT = "not the masked model, by design"


def _form(session: PruningSession, form: str, *, params: int, macs: int, file_bytes: int,
          max_abs_diff: float, note: str | None = None,
          evaluation: EvalResult = NOT_EVALUATED) -> Report:
    """The record of one form: what it stores, computes and saves (timed later)."""
    return Report(
        model=session.name, plan=session.stamp(session.plan).to_dict(),
        evaluation=evaluation, params_total=params, params_nonzero=params,
        macs_dense=macs, macs_effective=macs,
        sizes=FileSizes(file_bytes, file_bytes, file_bytes), latency=None,
        notes=() if note is None else (note,), form=form, file_bytes=file_bytes,
        max_abs_diff=max_abs_diff,
    )


def _refused(session: PruningSession, form: str, why: str) -> Report:
    return _form(session, form, params=0, macs=0, file_bytes=0, max_abs_diff=float("nan"),
                 note=why)


def masked_form(session: PruningSession) -> Report:
    """The masked model as it is: dense shapes, zeros stored as zeros."""
    model = session.model
    return _form(session, "masked", params=sum(p.numel() for p in model.parameters()),
                 macs=sum(layer.macs for layer in session.layers),
                 file_bytes=len(dense_bytes(model.state_dict())), max_abs_diff=0.0)


def slimmed_form(
    session: PruningSession, batch: Tensor, data: TensorData | None = None,
) -> tuple[Report, nn.Module | None, tuple[str, ...]]:
    """The model with pruned channel units removed, checked on `batch` (evaluation data)
    to compute what the masked model computes, or why it cannot be built or kept (a
    slim that does not match: slim.SlimMismatchError, naming the layers); and why it is
    by design not the masked model (`SlimResult.differs`; empty: it must match). Then,
    with `data`, the slimmed model's own metric on it is the report's evaluation, and its
    note gives it next to the masked model's."""
    try:
        result = slim(session, batch)
    except ModelError as exc:
        return _refused(session, "slimmed", str(exc)), None, ()
    model = result.model
    macs = sum(layer.macs for layer in find_prunable_layers(model, batch))
    note = None if result.removed else SAME_SHAPES
    evaluation = NOT_EVALUATED
    if result.differs:
        note = differs_note(result.differs)
        if data is not None:
            evaluation = evaluate(model, data)
            masked = evaluate(session.model, data)
            note += (f"; measured on its own: {evaluation.metric_name} {evaluation.metric:.4g} "
                     f"on {evaluation.samples:,} samples (masked model: {masked.metric:.4g})")
    return _form(session, "slimmed", params=result.params, macs=macs,
                 file_bytes=len(dense_bytes(model.state_dict())),
                 max_abs_diff=max_abs_diff(session.model, model, batch), note=note,
                 evaluation=evaluation), model, result.differs


def differs_note(differs: tuple[str, ...]) -> str:
    """What to say of a slimmed model that is by design not the masked one."""
    norms = [reason.split(" ")[0] for reason in differs]
    shown = ", ".join(norms[:3]) + (f" and {len(norms) - 3} more" if len(norms) > 3 else "")
    return (f"{NOT_EQUIVALENT}: {shown} normalise over fewer channels once "
            "the pruned ones are removed (a masked channel still counts in their statistics), "
            "so its outputs differ from the masked model's")


def sparse_form(session: PruningSession, batch: Tensor) -> tuple[Report, nn.Module | None]:
    """Mostly-zero Linear / 1x1 conv layers as CSR where it measured faster, or why it
    cannot be built."""
    try:
        deployment = sparse_deploy(session.model, batch)
    except ModelError as exc:
        return _refused(session, "sparse-deployed", str(exc)), None
    converted = set(deployment.converted)
    macs = 0
    for layer in session.layers:
        result = session.result(layer.name)
        macs += round(layer.macs * result.nonzero / layer.params) if layer.module_name in \
            converted else layer.macs
    # CSR layers hold their non-zero values as parameters: this counts what is stored.
    params = sum(p.numel() for p in deployment.model.parameters())
    note = (f"CSR: {', '.join(sorted(converted))}" if converted
            else ALL_DENSE)
    return _form(session, "sparse-deployed", params=params, macs=macs,
                 file_bytes=deployed_state_bytes(deployment),
                 max_abs_diff=max_abs_diff(session.model, deployment.model, batch),
                 note=note), deployment.model


def not_equivalent(form: Report) -> bool:
    """Whether a form was built but by design computes another function than the masked
    model (a slim whose `differs` is not empty): measured, never called equivalent."""
    return form.params > 0 and any(note.startswith(NOT_EQUIVALENT) for note in form.notes)


def _usable(form: Report, tolerance: float = TOLERANCE) -> bool:
    """Whether a form was built and computes what the masked model computes (or is a
    slim declared not equivalent, which is measured as it is)."""
    return form.params > 0 and form.max_abs_diff is not None and (
        form.max_abs_diff <= tolerance or not_equivalent(form))


@dataclass(frozen=True)
class Forms:
    """The three forms of one plan: `reports` (masked, slimmed, sparse-deployed; with
    latency when timed), the slimmed model (None when it cannot be built), and the timing
    that measured them together (None when not timed)."""

    reports: list[Report]
    slim_model: nn.Module | None
    timing: Timing | None = None
    # Why the slimmed model is by design not the masked one (SlimResult.differs).
    slim_differs: tuple[str, ...] = ()

    @property
    def masked(self) -> Report:
        return self.reports[0]

    @property
    def slimmed(self) -> Report:
        return self.reports[1]

    @property
    def sparse(self) -> Report:
        return self.reports[2]

    def fastest(self) -> Report | None:
        """The form the intervals say is faster than every other (see `fastest_form`)."""
        return fastest_form(self)

    def choice(self) -> Report:
        """The form to ship for speed: the fastest if one is measurably fastest; else the
        first of slimmed and sparse-deployed measurably faster than masked (slimmed is plain
        dense layers); else masked: noise is not a reason to ship something else."""
        found = self.fastest()
        if found is not None:
            return found
        for form in self.reports[1:]:
            if form.latency_speedup is not None and form.latency_speedup.verdict == FASTER:
                return form
        return self.masked


def measure_forms(session: PruningSession, batch: Tensor, *, latency: bool = True,
                  runs: int = 20, stop: Stop | None = None,
                  data: TensorData | None = None) -> Forms:
    """Build the masked, slimmed and sparse-deployed forms of the current plan and, if
    `latency`, time the usable ones together on `batch`: `runs` interleaved rounds against
    the masked model (`timing.time_against`), each form's `latency_speedup` its speed-up
    over the masked model, with interval and verdict. A slimmed model that is by design
    not the masked one is evaluated on `data` (see `slimmed_form`)."""
    masked = masked_form(session)
    slimmed, slim_model, differs = slimmed_form(session, batch, data)
    sparse, sparse_model = sparse_form(session, batch)
    reports = [masked, slimmed, sparse]
    if not latency:
        return Forms(reports, slim_model, slim_differs=differs)
    timed = [(i, model) for i, model in ((1, slim_model), (2, sparse_model))
             if model is not None and _usable(reports[i])]
    timing = time_against([model for _, model in timed], session.model, batch, runs=runs,
                          stop=stop)
    reports[0] = replace(masked, latency=timing.reference)
    for k, (i, _) in enumerate(timed):
        reports[i] = replace(reports[i], latency=timing.candidates[k],
                             latency_reference=timing.reference,
                             latency_speedup=timing.speedups[k])
    return Forms(reports, slim_model, timing, differs)


def fastest_form(forms: Forms) -> Report | None:
    """The form that is measurably the fastest: faster than the masked model and than each
    other usable timed form, every time by an interval that excludes 1 (`Timing.between`,
    from the same rounds). None when no form is measurably faster than all the others:
    timing noise is not a reason to ship something more complicated."""
    timing = forms.timing
    if timing is None:
        return None
    timed = [form for form in forms.reports[1:] if form.latency_speedup is not None]
    for k, form in enumerate(timed):
        gain = form.latency_speedup
        if gain is None or gain.verdict != FASTER:
            continue
        if all(timing.between(k, j).verdict == FASTER for j in range(len(timed)) if j != k):
            return form
    return None
