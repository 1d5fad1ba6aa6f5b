"""Session state for the app: one cached pristine copy per process, one workbench per tab.

The pristine sample (model weights and data) is loaded once per process with
st.cache_resource and never changed; every browser session builds its own Workbench
(a private model copy) and its own experiment log in st.session_state, so two tabs
never see each other's pruning.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import streamlit as st
from torch import Tensor

from pruneviz.allocation import Budget, BudgetKind, Method, Outcome, plan_for_budget
from pruneviz.errors import PrunevizError
from pruneviz.experiments import ORIGINAL, Experiment, ExperimentLog, describe_plan
from pruneviz.forms import FormReport, all_forms, best_form
from pruneviz.models.samples import DEFAULT_SAMPLE, Sample, load_sample
from pruneviz.plan import Plan
from pruneviz.report import Report, latency_batch
from pruneviz.sensitivity import SensitivityResult
from pruneviz.session import PruningSession
from pruneviz.workbench import Workbench, build_workbench, measure_plans

# Session-state keys, in one place. Widget keys of the Prune page are built by the
# functions below so that other pages (Trade-offs) can reset them.
MODEL_KEY = "pv_model_ref"
MODEL_WIDGET_KEY = "pv_model_picker"
WORKBENCH_KEY = "pv_workbench"
LOG_KEY = "pv_experiments"
SELECTED_LAYER_KEY = "pv_selected_layer"
COMPARISON_KEY = "pv_budget_comparison"  # the Sensitivity page's last budget comparison
WEIGHTS_KEY = "pv_weights"  # which weights the tab's session prunes: ORIGINAL or fine-tuned
TUNED_KEY = "pv_tuned_weights"  # {model ref: {name: state dict}}: this tab's fine-tuned weights
# Above this many prunable layers the Prune page shows one layer's controls at a time.
MANY_LAYERS = 16
LATENCY_RUNS = 10  # pairs (masked, reference) timed per slider move


@st.cache_resource(show_spinner="Loading the sample model ...", max_entries=8)
def pristine_sample(name: str) -> Sample:
    """The shipped sample, loaded once per process; shared by all tabs and never changed."""
    return load_sample(name)


def current_model_ref() -> str:
    """The model this tab works on (the default sample until the user picks another)."""
    ref = st.session_state.get(MODEL_KEY)
    return ref if isinstance(ref, str) else f"sample:{DEFAULT_SAMPLE}"


def workbench() -> Workbench:
    """This tab's workbench, built on first use and whenever the chosen model changes."""
    ref = current_model_ref()
    bench = st.session_state.get(WORKBENCH_KEY)
    if not isinstance(bench, Workbench) or bench.name != ref:
        sample = pristine_sample(ref.removeprefix("sample:"))
        bench = build_workbench(
            ref, sample.model, sample.example_input(), sample.test_data(), sample.train_data()
        )
        bench.meter.latency_runs = LATENCY_RUNS
        bench.baseline = bench.meter.report(latency=True)
        st.session_state[WORKBENCH_KEY] = bench
        log = ExperimentLog(bench.eval_data.task.higher_is_better)
        log.record(bench.baseline, bench.session.stamp(Plan()), "baseline (unpruned)")
        st.session_state[LOG_KEY] = log
        clear_prune_widgets()
        st.session_state[BEST_FORMS_KEY] = {}
        st.session_state.pop(COMPARISON_KEY, None)  # its experiments were in the old log
        st.session_state[WEIGHTS_KEY] = ORIGINAL
    return bench


def experiment_log() -> ExperimentLog:
    """This tab's record of every configuration evaluated (baseline first)."""
    workbench()
    log = st.session_state[LOG_KEY]
    assert isinstance(log, ExperimentLog)
    return log


def measure_and_record(label: str | None = None) -> Report:
    """Measure the current plan (cached per plan) and record it as an experiment."""
    bench = workbench()
    report = bench.meter.report(latency=True)
    plan = bench.session.stamp(bench.session.plan)
    experiment_log().record(report, plan, label or describe_plan(plan), current_weights())
    return report


# -- which weights the tab prunes: the original ones, or fine-tuned ones -------------------
def current_weights() -> str:
    """The name of the weights this tab's session prunes (ORIGINAL unless fine-tuned
    weights were taken from the Fine-tune page)."""
    workbench()
    name = st.session_state.get(WEIGHTS_KEY, ORIGINAL)
    return name if isinstance(name, str) else ORIGINAL


def remember_weights(name: str, state: dict[str, Tensor]) -> None:
    """Keep fine-tuned weights under `name`, for experiments that were measured on them."""
    bench = workbench()
    st.session_state.setdefault(TUNED_KEY, {}).setdefault(bench.name, {})[name] = state


def weights_state(name: str) -> dict[str, Tensor]:
    """The weights called `name` in this tab (ORIGINAL: the shipped sample's)."""
    bench = workbench()
    if name == ORIGINAL:
        return pristine_sample(bench.name.removeprefix("sample:")).model.state_dict()
    found = st.session_state.get(TUNED_KEY, {}).get(bench.name, {}).get(name)
    if found is None:
        raise PrunevizError(f"the {name} weights are not kept in this tab any more; "
                            "run the fine-tuning again")
    assert isinstance(found, dict)
    return found


def load_weights(session: PruningSession, state: dict[str, Tensor]) -> None:
    """Make `state` the session's original weights, with nothing pruned (bit-exact)."""
    session.apply(session.stamp(Plan()))  # no removed blocks: rebase refuses them
    session.rebase(state)


def use_weights(name: str, plan: Plan | None = None) -> None:
    """Make the weights called `name` this tab's originals, with `plan` (default: the
    current plan) applied; the Prune page re-seeds its widgets from it."""
    bench = workbench()
    session = bench.session
    target = session.plan if plan is None else plan
    load_weights(session, weights_state(name))
    bench.meter.clear()  # its measurements were of the other weights
    st.session_state[WEIGHTS_KEY] = name
    clear_prune_widgets()
    session.apply(target)


def restore_experiment(id: int) -> None:
    """Apply experiment `id`'s plan to this tab's model, on the weights it was measured
    with (restoring a fine-tuned experiment puts its fine-tuned weights in the tab)."""
    log = experiment_log()
    experiment = log.get(id)
    if experiment.weights != current_weights():
        use_weights(experiment.weights, log.plan(id))
    else:
        restore_plan(log.plan(id))


# -- Prune page widget keys ----------------------------------------------------------------
PREFIX = "pv_w_"


def widget_key(kind: str, layer: str | None = None) -> str:
    """The session-state key of a Prune page widget (per layer when `layer` is given)."""
    return f"{PREFIX}{kind}" if layer is None else f"{PREFIX}{kind}::{layer}"


def clear_prune_widgets() -> None:
    """Forget the Prune page's widget values; the page re-seeds them from the current plan."""
    for key in [k for k in st.session_state if str(k).startswith(PREFIX)]:
        del st.session_state[key]


def restore_plan(plan: Plan) -> None:
    """Apply `plan` to this tab's model and make the Prune page show it."""
    bench = workbench()
    bench.session.apply(plan)
    clear_prune_widgets()


def seed(key: str, value: Any) -> None:
    """Give a widget its starting value unless the user has already set it."""
    if key not in st.session_state:
        st.session_state[key] = value


def record_uniform_sweep(levels: list[float], granularity: str, criterion: str) -> int:
    """Measure uniform plans at `levels` (fractions) and record them; returns how many."""
    bench = workbench()
    plans = []
    for level in levels:
        plan, _ = bench.session.uniform_plan(level, granularity, criterion)
        if not plan.is_empty:
            plans.append(plan)
    log = experiment_log()
    for plan, report in zip(plans, measure_plans(bench, plans), strict=True):
        log.record(report, plan, f"uniform {granularity} {criterion} {report_sparsity(plan)}",
                   current_weights())
    return len(plans)


def report_sparsity(plan: Plan) -> str:
    """The common sparsity of a uniform plan, as a percentage label."""
    amounts = {e.sparsity for e in plan.layers.values()}
    return f"{next(iter(amounts)):.0%}" if len(amounts) == 1 and None not in amounts else "mixed"


BEST_FORMS_KEY = "pv_best_forms"


def best_forms() -> dict[int, FormReport]:
    """Best deployable form measured for each experiment id (empty until measured)."""
    found = st.session_state.setdefault(BEST_FORMS_KEY, {})
    assert isinstance(found, dict)
    return found


def measure_best_forms(runs: int = 10) -> None:
    """Measure the deployable forms of every recorded configuration, each on the weights it
    was measured with; keep the fastest."""
    bench = workbench()
    session = bench.session
    found = best_forms()
    current, weights = session.plan, current_weights()
    batch = latency_batch(bench.eval_data, bench.meter.latency_batch_size)
    todo = [e for e in experiment_log() if e.id not in found]
    # the tab's own weights first, so that most runs need no switching
    order: Iterable[str] = dict.fromkeys([weights, *(e.weights for e in todo)])
    loaded = weights
    try:
        for name in order:
            group = [e for e in todo if e.weights == name]
            if not group:
                continue
            if name != loaded:
                load_weights(session, weights_state(name))
                loaded = name
            for experiment in group:
                session.apply(experiment_log().plan(experiment.id))
                found[experiment.id] = best_form(all_forms(session, batch, runs=runs))
    finally:
        if loaded != weights:  # the same values bit for bit: the meter's cache stays valid
            load_weights(session, weights_state(weights))
        session.apply(current)


# -- budgets: uniform, global and sensitivity-guided plans side by side ---------------------
@dataclass(frozen=True)
class Compared:
    """One method's plan fitted to a budget, measured, and its entry in the experiment log."""

    outcome: Outcome
    experiment: Experiment


def budget_text(budget: Budget) -> str:
    """A short label for a budget: "80% sparsity", "50% MACs", "24.0 KiB sparse", "0.50 ms"."""
    if budget.kind is BudgetKind.SPARSITY:
        return f"{budget.value * 100:.4g}% sparsity"
    if budget.kind is BudgetKind.MACS:
        return f"{budget.value * 100:.4g}% MACs"
    if budget.kind is BudgetKind.SIZE:
        return f"{budget.value / 1024:.1f} KiB sparse"
    return f"{budget.value:.2f} ms"


def record_budget_comparison(result: SensitivityResult, budget: Budget,
                             cap: float) -> list[Compared]:
    """Fit a uniform, a global and a sensitivity-guided plan to `budget` (with the
    analysis's granularity and criterion, no layer above `cap`), measure each with latency
    and record it as an experiment. The plan applied before is applied again after."""
    bench = workbench()
    current = bench.session.plan
    compared = []
    try:
        for method in Method:
            outcome = plan_for_budget(bench, budget, method, granularity=result.granularity,
                                      criterion=result.criterion, sensitivity=result, cap=cap)
            bench.session.apply(outcome.plan)
            measure_and_record(f"{method.value} {budget_text(budget)} "
                               f"({result.granularity.value}, {result.criterion})")
            experiment = experiment_log().find(bench.session.plan, current_weights())
            assert experiment is not None  # just recorded
            compared.append(Compared(outcome, experiment))
    finally:
        bench.session.apply(current)
    return compared
