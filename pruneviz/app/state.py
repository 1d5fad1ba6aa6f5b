"""Session state for the app: one cached pristine copy per process, one workbench per tab.

The pristine sample (model weights and data) is loaded once per process with
st.cache_resource and never changed; every browser session builds its own Workbench
(a private model copy) and its own experiment log in st.session_state, so two tabs
never see each other's pruning.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st
from torch import Tensor, nn

from pruneviz.app.keys import (
    BENCH_ID_KEY,
    BEST_FORMS_KEY,
    COMPARISON_KEY,
    FULL_EVAL_KEY,
    LOG_KEY,
    MODEL_KEY,
    PREFIX,
    SUBSET_KEY,
    TECHNIQUES_KEY,
    TUNED_KEY,
    UPLOAD_KEY,
    WEIGHTS_KEY,
    WORKBENCH_KEY,
)
from pruneviz.core.plan import Plan
from pruneviz.core.session import PruningSession
from pruneviz.data.samples import SAMPLES
from pruneviz.data.sources import (
    DEFAULT_EVAL_SUBSET,
    Loaded,
    Source,
    add_source_arguments,
    check_fit,
    check_model_ref,
    load_source,
    source_from_args,
    with_model,
)
from pruneviz.data.user_models import fit_weights, read_weights
from pruneviz.errors import PrunevizError
from pruneviz.measure.forms import FormReport, all_forms, best_form
from pruneviz.measure.meter import Report, latency_batch
from pruneviz.measure.metrics import EvalResult
from pruneviz.workflows.allocation import Budget, BudgetKind, Method, Outcome, plan_for_budget
from pruneviz.workflows.experiments import ORIGINAL, Experiment, ExperimentLog, describe_plan
from pruneviz.workflows.sensitivity import SensitivityResult
from pruneviz.workflows.workbench import Workbench, build_workbench, measure_plans

# Above this many prunable layers the Prune page shows one layer's controls at a time.
MANY_LAYERS = 16
LATENCY_RUNS = 10  # pairs (masked, reference) timed per slider move


# -- the model this tab works on: a sample, or the one the app was started with ---------------
# The command line this process was started with, as this module first saw it: under
# `streamlit run app.py -- --model ...` it is [app.py, --model, ...]; under pytest (AppTest)
# it is pytest's own, and runpy may later put app.py in sys.argv[0] for a while.
LAUNCH_ARGV: list[str] = list(sys.argv)


def app_arguments() -> list[str]:
    """The arguments after `--` of `streamlit run app.py -- --model ...` (none otherwise)."""
    return LAUNCH_ARGV[1:] if LAUNCH_ARGV and Path(LAUNCH_ARGV[0]).name == "app.py" else []


@st.cache_resource(show_spinner=False)
def startup_source(argv: tuple[str, ...]) -> tuple[Source, str | None]:
    """The source the app was started with, and the reason if the arguments are wrong
    (then the default sample)."""
    parser = argparse.ArgumentParser(prog="streamlit run app.py --", add_help=False,
                                     exit_on_error=False)
    parser.add_argument("--model", default=None)
    add_source_arguments(parser, model=False)
    try:
        args, unknown = parser.parse_known_args(list(argv))
        if unknown:
            raise PrunevizError(f"unknown option(s) {' '.join(unknown)}")
        source = source_from_args(args)
        check_model_ref(source.model)
        return source, None
    except (argparse.ArgumentError, PrunevizError) as exc:
        return Source(), f"the app's start arguments were not used: {exc}"


def started_with() -> tuple[Source, str | None]:
    """The source this app process was started with (and any problem with it)."""
    return startup_source(tuple(app_arguments()))


def model_choices() -> list[str]:
    """The models the sidebar offers: the one the app was started with, then the samples."""
    first = started_with()[0].model
    samples = [f"sample:{name}" for name in SAMPLES]
    return [first, *(ref for ref in samples if ref != first)]


def source_for(ref: str) -> Source:
    """The full source of model `ref`: the start arguments for the model the app was
    started with, the sample with its own data otherwise."""
    return with_model(started_with()[0], ref)


@st.cache_resource(show_spinner="Loading the model and its data ...", max_entries=8)
def _pristine(key: str) -> Loaded:
    return load_source(Source(**json.loads(key)))


def pristine(source: Source) -> Loaded:
    """The model and data of `source`, loaded once per process; shared by all tabs and
    never changed (each tab's session prunes its own copy)."""
    return _pristine(json.dumps(dataclasses.asdict(source), sort_keys=True))


def model_title(ref: str) -> str:
    """A short name for the sidebar: the sample's title, or the user's factory."""
    spec = SAMPLES.get(ref.removeprefix("sample:")) if ref.startswith("sample:") else None
    if spec is not None:
        return spec.title
    path, _, factory = ref.rpartition(":")
    return f"{Path(path).name}:{factory} (yours)"


def current_model_ref() -> str:
    """The model this tab works on (the model the app was started with until the user
    picks another)."""
    ref = st.session_state.get(MODEL_KEY)
    return ref if isinstance(ref, str) else started_with()[0].model


def current_loaded() -> Loaded:
    """The pristine model and data of this tab's model."""
    return pristine(source_for(current_model_ref()))


# -- weights uploaded in this tab, for the current architecture ----------------------------
@dataclass(frozen=True)
class Upload:
    """Weights a user uploaded for model `ref` (kept per tab, never written anywhere)."""

    ref: str
    name: str
    digest: str
    model: nn.Module  # the architecture with these weights, eval mode, never changed


def upload_weights(name: str, data: bytes) -> Upload:
    """Read uploaded weights (nothing unpickled), fit them to this tab's architecture and
    make them the tab's original weights. Raises with a message; nothing changes then."""
    loaded = current_loaded()
    model = copy.deepcopy(loaded.model)
    fit_weights(model, read_weights(data, name), name)
    check_fit(model.eval(), loaded.eval_data, "the evaluation data")
    upload = Upload(current_model_ref(), name, hashlib.sha256(data).hexdigest()[:16], model)
    st.session_state[UPLOAD_KEY] = upload
    return upload


def current_upload() -> Upload | None:
    """The weights uploaded for this tab's model, if any."""
    upload = st.session_state.get(UPLOAD_KEY)
    if isinstance(upload, Upload) and upload.ref == current_model_ref():
        return upload
    return None


def forget_upload() -> None:
    """Go back to the model's own weights (the shipped or start-argument ones)."""
    st.session_state.pop(UPLOAD_KEY, None)


def eval_subset_size() -> int | None:
    """How many evaluation samples each live update measures (None: all of them)."""
    chosen = st.session_state.get(SUBSET_KEY, {}).get(current_model_ref(), 0)
    if chosen is None or (isinstance(chosen, int) and chosen > 0):
        return chosen
    source = source_for(current_model_ref())
    if source.eval_subset is not None:
        return source.eval_subset
    size = len(current_loaded().eval_data)
    return DEFAULT_EVAL_SUBSET if size > DEFAULT_EVAL_SUBSET else None


def set_eval_subset(n: int | None) -> None:
    """Measure this model's live updates on `n` samples (None: the whole evaluation set)."""
    st.session_state.setdefault(SUBSET_KEY, {})[current_model_ref()] = n


def workbench() -> Workbench:
    """This tab's workbench, built on first use and whenever the chosen model, its
    weights or the evaluation subset change."""
    ref = current_model_ref()
    upload = current_upload()
    subset = eval_subset_size()
    identity = (ref, upload.digest if upload else None, subset)
    bench = st.session_state.get(WORKBENCH_KEY)
    if not isinstance(bench, Workbench) or st.session_state.get(BENCH_ID_KEY) != identity:
        loaded = current_loaded()
        model = upload.model if upload is not None else loaded.model
        bench = build_workbench(ref, model, loaded.example_input, loaded.eval_data,
                                loaded.train_data, eval_subset=subset)
        source = source_for(ref)  # the options that reopen it (an upload: its file name)
        bench.source = dataclasses.replace(source, weights=upload.name) if upload else source
        bench.meter.latency_runs = LATENCY_RUNS
        bench.baseline = bench.meter.report(latency=True)
        st.session_state[WORKBENCH_KEY] = bench
        st.session_state[BENCH_ID_KEY] = identity
        log = ExperimentLog(bench.eval_data.higher_is_better)
        log.record(bench.baseline, bench.session.stamp(Plan()), "baseline (unpruned)")
        st.session_state[LOG_KEY] = log
        clear_prune_widgets()
        st.session_state[BEST_FORMS_KEY] = {}
        st.session_state.pop(COMPARISON_KEY, None)  # its experiments were in the old log
        st.session_state.pop(FULL_EVAL_KEY, None)
        st.session_state[WEIGHTS_KEY] = ORIGINAL
    return bench


def bench_key() -> str:
    """What this tab's workbench was built from (model, uploaded weights, eval subset):
    background workers are kept per key, so a result never mixes two of them."""
    workbench()
    return str(st.session_state[BENCH_ID_KEY])


def full_evaluation() -> EvalResult | None:
    """The current plan's metric on the whole evaluation set, if measured for this plan."""
    found = st.session_state.get(FULL_EVAL_KEY)
    bench = workbench()
    if isinstance(found, tuple) and found[0] == (bench.session.plan, current_weights()):
        result = found[1]
        assert isinstance(result, EvalResult)
        return result
    return None


def evaluate_full() -> EvalResult:
    """Measure the current plan on the whole evaluation set (on demand: it may be slow)."""
    bench = workbench()
    result = bench.evaluate_full()
    st.session_state[FULL_EVAL_KEY] = ((bench.session.plan, current_weights()), result)
    return result


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
    st.session_state.setdefault(TUNED_KEY, {}).setdefault(bench_key(), {})[name] = state


def weights_state(name: str) -> dict[str, Tensor]:
    """The weights called `name` in this tab (ORIGINAL: the model's own, or uploaded)."""
    bench = workbench()
    if name == ORIGINAL:
        return bench.pristine.state_dict()
    found = st.session_state.get(TUNED_KEY, {}).get(bench_key(), {}).get(name)
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
    # int8 / SVD points are measured as they are, not as deployable forms of a plan
    todo = [e for e in experiment_log() if e.id not in found and e.is_pruning]
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


# -- other techniques on the Trade-offs page: dynamic int8 and low-rank SVD ------------------
def record_compression(kind: str, apply_to: str, rank: float | None = None) -> None:
    """Measure technique `kind` ("int8", or "svd" at `rank`, a fraction of full rank) on the
    unpruned model and/or the current plan (`apply_to`, one of compress.APPLY_TO) and
    record the points; `last_compression()` says what was done."""
    from pruneviz.workflows.techniques import record_technique

    bench = workbench()
    st.session_state[TECHNIQUES_KEY] = record_technique(
        bench, experiment_log(), kind, apply_to=apply_to, weights=current_weights(),
        rank=rank, runs=LATENCY_RUNS)


def last_compression() -> list[tuple[str, tuple[str, ...]]]:
    """What the last int8 / SVD form measured: per point, a sentence and its notes."""
    done = st.session_state.get(TECHNIQUES_KEY, [])
    lines: list[tuple[str, tuple[str, ...]]] = []
    log = experiment_log()
    for item in done:
        experiment = item.experiment
        if experiment.id >= len(log) or log.get(experiment.id) != experiment:
            continue  # from a log since replaced (another model or weights)
        verb = "measured" if item.new else "already measured"
        latency = "-" if experiment.latency_ms is None else f"{experiment.latency_ms:.3g}"
        lines.append((f"#{experiment.id} {experiment.technique} ({experiment.weights} weights)"
                      f" {verb}: {experiment.metric_name} {experiment.metric:.4g}, "
                      f"{experiment.size_dense_bytes:,} B weight file, {latency} ms",
                      item.notes))
    return lines
