"""The Fine-tune page's sections: the introduction, the recipe and training controls, the
schedule chart, the live run, the measured result and the comparison with Han et al. 2015."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import streamlit as st
from streamlit.delta_generator import DeltaGenerator
from torch import nn

from pruneviz.app import keys, state
from pruneviz.app.state import seed
from pruneviz.app.widgets import criterion_select, show_metric, shows_percent, user_errors
from pruneviz.app.worker import FinetuneJob, FinetuneOutcome, FinetuneWorker
from pruneviz.core.granularity import parse_granularity
from pruneviz.core.session import PruningSession
from pruneviz.errors import PrunevizError
from pruneviz.i18n import N_, _
from pruneviz.measure.meter import Report
from pruneviz.measure.metrics import Latency
from pruneviz.output.figures import weight_histogram
from pruneviz.output.run_figures import schedule_chart, training_curves
from pruneviz.workflows.experiments import ORIGINAL, Experiment, describe_plan
from pruneviz.workflows.finetune import FinetuneRecipe, PruneSpec, Regularizer
from pruneviz.workflows.finetune_job import (
    DEFAULT_RECIPE,
    DISTILL_WEIGHT,
    POWER,
    ROUNDS,
    default_lr,
    has_batchnorm,
    stop_reason,
)
from pruneviz.workflows.jobqueue import waiting_text
from pruneviz.workflows.schedules import Schedule, ScheduleKind
from pruneviz.workflows.workbench import Workbench

RECIPES = {
    "oneshot": N_("One-shot + fine-tune"),
    "iterative": N_("Iterative"),
    "poly": N_("Polynomial schedule"),
    "regularize": N_("Regularize, then prune"),
}
GRANULARITIES = ["unstructured", "filter", "channel"]
GRANULARITY_NAMES = {"unstructured": N_("unstructured"), "filter": N_("filter"),
                     "channel": N_("channel")}
SCOPES = {"local": N_("same % per layer"), "global": N_("one global ranking")}
LEARNING_RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
BATCH_SIZES = [16, 32, 64, 128, 256]
REGULARIZERS = {
    Regularizer.L1: N_("L1 on the weights"),
    Regularizer.GROUP_LASSO: N_("group lasso on filters"),
    Regularizer.BN_L1: N_("L1 on BatchNorm scales"),
}
METRIC_NAMES = {"accuracy": N_("accuracy")}  # the metrics the app names in the reader's words


def recipe_name(kind: str) -> str:
    """A recipe's name in the reader's language."""
    return _(RECIPES[kind])


def granularity_name(granularity: str) -> str:
    """A granularity in the reader's language (one the page does not offer as it is)."""
    return _(GRANULARITY_NAMES[granularity]) if granularity in GRANULARITY_NAMES else granularity


def weights_text(weights: str) -> str:
    """A set of weights' name in the reader's language: "fine-tuned #2" (the name the
    workspace keeps it under is the English one)."""
    found = re.fullmatch(r"fine-tuned #(\d+)", weights)
    return _("fine-tuned #{run}").format(run=found.group(1)) if found else weights


def metric_text(name: str) -> str:
    """The evaluation metric's name in the reader's language (a scorer's own name as it is)."""
    return _(METRIC_NAMES[name]) if name in METRIC_NAMES else name


def percent(value: float) -> str:
    """A sparsity in percent, for a run's label."""
    return f"{value:.4g}%"


def intro(bench: Workbench, worker: FinetuneWorker) -> None:
    """What fine-tuning does here, the last action's message, and which weights the tab
    prunes (with the way back to the original ones)."""
    st.caption(_(
        "Pruning removes weights; retraining lets the ones left make up for them. Training runs "
        "in the background — other pages stay usable, and leaving this one does not stop or lose "
        "the run. It always starts from the original weights, on the {samples} training samples "
        "of {data} ({held_out} of them held out to pick the best epoch); the result is measured "
        "on the {eval_samples} evaluation samples and recorded on Trade-offs next to the same "
        "plan without retraining. The same seed gives the same weights."
    ).format(samples=f"{len(worker.train_data):,}", data=worker.train_data.name,
             held_out=f"{FinetuneRecipe().val_fraction:.0%}",
             eval_samples=f"{len(bench.eval_data):,}"))
    flash = st.session_state.pop(keys.FT_FLASH_KEY, None)
    if flash:
        st.success(flash)
    weights_now = state.current_weights()
    if weights_now != ORIGINAL:
        cols = st.columns([4, 1], vertical_alignment="center")
        cols[0].info(_("This tab prunes the **{weights}** weights (Prune, Deploy, Trade-offs "
                       "and Inspect use them). The original weights are kept, bit for bit.")
                     .format(weights=weights_text(weights_now)),
                     icon=":material/model_training:")
        if cols[1].button(_("Back to the original weights"), key=keys.FT_BACK_KEY,
                          width="stretch"):
            with user_errors(_("The original weights could not be restored")):
                state.use_weights(ORIGINAL)
            st.session_state[keys.FT_FLASH_KEY] = _("This tab prunes the original weights "
                                                    "again, with the same plan.")
            st.rerun()


def training_defaults(recipe: str) -> dict[str, object]:
    """The training and schedule controls' starting values for the page's `recipe`: the
    CLI's defaults (workflows.finetune_job), by widget key."""
    return {
        keys.FT_ROUNDS_KEY: ROUNDS,
        keys.FT_INITIAL_KEY: 0.0,  # percent, as the CLI's --initial
        keys.FT_POWER_KEY: int(POWER),
        keys.FT_WINDOW_KEY: (0, 50),  # as the CLI: ends halfway, the rest recovers
        keys.FT_PRUNE_UNTIL_KEY: 50,
        keys.FT_STRENGTH_KEY: DEFAULT_RECIPE.strength,
        keys.FT_EPOCHS_KEY: DEFAULT_RECIPE.epochs,
        keys.FT_LR_KEY: default_lr(scheduled=recipe != "oneshot"),
        keys.FT_BATCH_KEY: DEFAULT_RECIPE.batch_size,
        keys.FT_SEED_KEY: DEFAULT_RECIPE.seed,
        keys.FT_PATIENCE_KEY: DEFAULT_RECIPE.patience,
        keys.FT_DISTILL_WEIGHT_KEY: DISTILL_WEIGHT,
        keys.FT_TEMPERATURE_KEY: DEFAULT_RECIPE.temperature,
        keys.FT_MAX_STEPS_KEY: 0,  # no limit
    }


def seed_controls(bench: Workbench) -> None:
    """The controls' values kept from the last visit, else their defaults."""
    session = bench.session
    for key, value in st.session_state.get(keys.FT_SAVED_KEY, {}).items():
        seed(key, value)
    mlp = bench.name == "sample:digits_mlp"
    seed(keys.FT_RECIPE_KEY, "iterative" if session.plan.is_empty else "oneshot")
    seed(keys.FT_FINAL_KEY, 92.0 if mlp else 80.0)
    seed(keys.FT_AGP_KEY, False)
    seed(keys.FT_FREQUENCY_KEY, 20)
    seed(keys.FT_REG_KEY, Regularizer.L1.value)
    seed(keys.FT_REG_UNTIL_KEY, 50)
    seed(keys.FT_GRAN_KEY, "unstructured")
    seed(keys.FT_SCOPE_KEY, "global" if mlp else "local")
    seed(keys.FT_CAP_KEY, 98)
    seed(keys.FT_DISTILL_KEY, False)
    for key, value in training_defaults(str(st.session_state[keys.FT_RECIPE_KEY])).items():
        seed(key, value)


@dataclass
class Draft:
    """The job the controls describe (None if they describe none), and its schedule."""

    job: FinetuneJob | None = None
    batch: int = 64
    curve: list[float] = field(default_factory=list)
    events: list[tuple[int, float]] = field(default_factory=list)
    regularize_until: int | None = None


def prune_spec_controls(blocks: Sequence[str] = ()) -> PruneSpec:
    """Granularity, criterion and scope of the schedule's pruning events; the tab's removed
    `blocks` stay removed (the identity) from the first step."""
    if blocks:
        st.caption(_("Removed blocks ({blocks}) stay removed throughout: the model trains "
                     "without them, and the schedule prunes the rest.")
                   .format(blocks=", ".join(blocks)))
    cols = st.columns([1.1, 1, 1.4])
    granularity = cols[0].selectbox(_("Granularity"), GRANULARITIES, key=keys.FT_GRAN_KEY,
                                    format_func=granularity_name,
                                    help=_("unstructured: single weights; filter: output "
                                           "channels (neurons); channel: input channels."))
    criterion = criterion_select(cols[1], granularity, keys.FT_CRIT_KEY)
    scope = cols[2].radio(_("Amounts"), list(SCOPES), format_func=lambda s: _(SCOPES[s]),
                          key=keys.FT_SCOPE_KEY,
                          help=_("The same sparsity in every layer, or one ranking of all "
                                 "layers' weights (layers with many small weights lose more)."))
    cap = None
    if scope == "global":
        cap = st.slider(_("No layer above (%)"), 50, 100, key=keys.FT_CAP_KEY,
                        help=_("So that the global ranking empties no layer.")) / 100
    return PruneSpec(parse_granularity(granularity), criterion, scope=scope,
                     max_layer_sparsity=None if cap is None or cap >= 1 else cap,
                     blocks=tuple(blocks))


def spec_text(spec: PruneSpec) -> str:
    """The pruning events' granularity, criterion and scope, for a run's label."""
    text = f"{granularity_name(spec.granularity.value)} {spec.criterion}"
    if spec.scope == "global":
        text = _("{pruning} global").format(pruning=text)
    if spec.blocks:
        text = _("{pruning}, {blocks} removed").format(pruning=text, blocks=", ".join(spec.blocks))
    return text


def with_distillation(label: str, distill: bool) -> str:
    """A run's label, saying so when it distils from the unpruned model."""
    return _("{label} + distillation").format(label=label) if distill else label


def plan_sparsity(session: PruningSession) -> float:
    """The share of the prunable layers' weights this tab's plan prunes."""
    results = session.results()
    total = sum(r.params for r in results)
    return sum(r.params - r.nonzero for r in results) / total if total else 0.0


def recipe_controls(bench: Workbench, worker: FinetuneWorker, kind: str) -> Draft:
    """The recipe's own controls and the training settings; the job they describe."""
    session = bench.session
    accuracy = shows_percent(bench.eval_data)
    batchnorm = has_batchnorm(session.model)
    problem: str | None = None
    job: FinetuneJob | None = None
    curve: list[float] = []
    events: list[tuple[int, float]] = []
    regularize_until: int | None = None
    recipe_box = st.container()
    st.markdown(_("**Training**"))
    cols: Sequence[DeltaGenerator] = st.columns(5)
    epochs = cols[0].number_input(_("Epochs"), 1, 500, step=1, key=keys.FT_EPOCHS_KEY)
    batch = cols[1].selectbox(_("Batch size"), BATCH_SIZES, key=keys.FT_BATCH_KEY)
    seed_value = cols[2].number_input(_("Seed"), 0, 2**31 - 1, step=1, key=keys.FT_SEED_KEY,
                                      help=_("Shuffling and the validation split: the same "
                                             "seed gives the same weights."))
    patience = cols[3].number_input(_("Patience"), 1, 100, step=1, key=keys.FT_PATIENCE_KEY,
                                    help=_("Stop after this many epochs without a better "
                                           "validation metric (counted once the final sparsity "
                                           "is reached)."))
    max_steps = cols[4].number_input(_("Max steps"), 0, 1_000_000, step=10,
                                     key=keys.FT_MAX_STEPS_KEY,
                                     help=_("Stop after this many steps at most (0: no limit)."))
    cols = st.columns([2, 3])
    lr = cols[0].select_slider(_("Learning rate"), LEARNING_RATES, key=keys.FT_LR_KEY,
                               format_func=lambda v: f"{v:g}", help=_("Adam's step size."))
    with cols[1]:
        distill = st.checkbox(_("Distil from the unpruned model"), key=keys.FT_DISTILL_KEY,
                              help=_("Also learn the original model's softened outputs "
                                     "(knowledge distillation, Hinton et al. 2015)."))
        inner = st.columns(2)
        distill_weight = inner[0].slider(_("Distillation weight"), 0.05, 1.0, step=0.05,
                                         key=keys.FT_DISTILL_WEIGHT_KEY, disabled=not distill,
                                         help=_("0: labels only; 1: the teacher only."))
        temperature = inner[1].slider(_("Temperature"), 1.0, 10.0, step=0.5,
                                      key=keys.FT_TEMPERATURE_KEY,
                                      disabled=not distill or not accuracy,
                                      help=_("Softens the teacher's class probabilities."))

    with recipe_box:
        try:
            recipe = FinetuneRecipe(
                epochs=int(epochs), lr=float(lr), batch_size=int(batch), seed=int(seed_value),
                patience=int(patience), distill=float(distill_weight) if distill else 0.0,
                temperature=float(temperature), max_steps=int(max_steps) or None)
            total = worker.steps(recipe)
            distilled = bool(distill)
            if kind == "oneshot":
                plan = session.stamp(session.plan)
                if plan.is_empty:
                    st.warning(_("This tab's plan prunes nothing: set one on the Prune page (or "
                                 "take a proposal from Sensitivity), then come back."))
                else:
                    st.markdown(_("This tab's plan, held fixed while retraining: **{plan}** "
                                  "({share} of the prunable weights).")
                                .format(plan=describe_plan(plan),
                                        share=f"{plan_sparsity(session):.1%}"))
                st.page_link("app_pages/prune.py", label=_("Change the plan on the Prune page"),
                             icon=":material/content_cut:")
                curve = [plan_sparsity(session)] * total
                label = _("one-shot {plan} + fine-tune").format(plan=describe_plan(plan))
                job = FinetuneJob(kind, with_distillation(label, distilled), recipe, plan=plan)
            elif kind == "iterative":
                cols = st.columns(3)
                final = cols[0].number_input(_("Final sparsity (%)"), 0.0, 100.0, step=1.0,
                                             format="%.1f", key=keys.FT_FINAL_KEY)
                rounds = cols[1].number_input(_("Rounds"), 1, 50, step=1, key=keys.FT_ROUNDS_KEY,
                                              help=_("Each round prunes the same share of "
                                                     "what is left, then training goes on."))
                until = cols[2].slider(_("Prune in the first (% of steps)"), 1, 100,
                                       key=keys.FT_PRUNE_UNTIL_KEY,
                                       help=_("The rounds are spread over these steps; the "
                                              "rest retrains at the final sparsity."))
                spec = prune_spec_controls(bench.session.removed_blocks())
                end = max(1, round(total * until / 100))
                schedule = Schedule(ScheduleKind.ITERATIVE, final / 100, begin_step=0, end_step=end,
                                    rounds=int(rounds))
                label = _("iterative {rounds}x to {sparsity} {pruning} + fine-tune").format(
                    rounds=rounds, sparsity=percent(final), pruning=spec_text(spec))
                job = FinetuneJob(kind, with_distillation(label, distilled), recipe,
                                  schedule=schedule, prune=spec)
            elif kind == "poly":
                cols = st.columns([1, 1, 1, 1.2], vertical_alignment="bottom")
                agp = cols[0].checkbox("AGP", key=keys.FT_AGP_KEY,
                                       help=_("Automated gradual pruning (Zhu & Gupta 2017): "
                                              "cubic, from 0 — s(t) = final (1 - (1 - t)^3), "
                                              "fast at first, slow near the end."))
                initial = cols[1].number_input(_("Initial sparsity (%)"), 0.0, 100.0, step=1.0,
                                               format="%.1f", key=keys.FT_INITIAL_KEY,
                                               disabled=agp)
                final = cols[2].number_input(_("Final sparsity (%)"), 0.0, 100.0, step=1.0,
                                             format="%.1f", key=keys.FT_FINAL_KEY)
                power = cols[3].selectbox(_("Power"), [1, 2, 3], key=keys.FT_POWER_KEY,
                                          disabled=agp,
                                          help=_("1: a straight ramp; 3: the cubic of AGP."))
                cols = st.columns([2, 1])
                cols[0].slider(_("Prune between (% of steps)"), 0, 100, key=keys.FT_WINDOW_KEY)
                begin_pct, end_pct = st.session_state[keys.FT_WINDOW_KEY]
                frequency = cols[1].number_input(_("Every (steps)"), 1, 100_000, step=1,
                                                 key=keys.FT_FREQUENCY_KEY)
                spec = prune_spec_controls(bench.session.removed_blocks())
                begin = round(total * begin_pct / 100)
                end = round(total * end_pct / 100)
                start_at = 0.0 if agp else initial
                schedule = Schedule(ScheduleKind.AGP if agp else ScheduleKind.POLY, final / 100,
                                    initial=start_at / 100, begin_step=begin, end_step=end,
                                    frequency=int(frequency), power=3.0 if agp else power)
                name = "AGP" if agp else _("poly")
                label = _("{schedule} {initial}→{sparsity} {pruning} + fine-tune").format(
                    schedule=name, initial=f"{start_at:.4g}", sparsity=percent(final),
                    pruning=spec_text(spec))
                job = FinetuneJob(kind, with_distillation(label, distilled), recipe,
                                  schedule=schedule, prune=spec)
            else:
                offered = [r.value for r in REGULARIZERS if batchnorm or r is not Regularizer.BN_L1]
                if st.session_state[keys.FT_REG_KEY] not in offered:
                    st.session_state[keys.FT_REG_KEY] = offered[0]
                cols = st.columns([1.7, 1, 1.4, 1])
                regularizer = Regularizer(cols[0].selectbox(
                    _("Regulariser"), offered, key=keys.FT_REG_KEY,
                    format_func=lambda v: _(REGULARIZERS[Regularizer(v)]),
                    help=_("L1 pushes single weights to zero; group lasso whole filters "
                           "(prune them with filter granularity); L1 on BatchNorm scales "
                           "switches channels off (Network Slimming).")))
                strength = cols[1].number_input(_("Strength"), 0.0, 1.0, step=1e-4,
                                                format="%.4f", key=keys.FT_STRENGTH_KEY,
                                                help=_("The penalty's weight in the loss."))
                until = cols[2].slider(_("Regularise for (% of steps)"), 1, 99,
                                       key=keys.FT_REG_UNTIL_KEY,
                                       help=_("Then prune once, and retrain without it."))
                final = cols[3].number_input(_("Then prune to (%)"), 0.0, 100.0, step=1.0,
                                             format="%.1f", key=keys.FT_FINAL_KEY)
                spec = prune_spec_controls(bench.session.removed_blocks())
                regularize_until = max(1, round(total * until / 100))
                recipe = replace(recipe, regularizer=regularizer, strength=float(strength))
                schedule = Schedule(ScheduleKind.ONESHOT, final / 100, begin_step=regularize_until)
                label = _("{regularizer} then {sparsity} {pruning} + fine-tune").format(
                    regularizer=regularizer.value, sparsity=percent(final),
                    pruning=spec_text(spec))
                job = FinetuneJob(kind, with_distillation(label, distilled), recipe,
                                  schedule=schedule, prune=spec)
            if job.schedule is not None:
                curve = job.schedule.curve(total)
                events = job.schedule.events(total)
        except PrunevizError as exc:
            problem = str(exc)
            job = None
        if problem:
            st.error(_("This recipe cannot run: {problem}").format(problem=problem))
    return Draft(job, int(batch), curve, events, regularize_until)


def schedule_section(draft: Draft, kind: str) -> None:
    """The sparsity the job's schedule sets at each step."""
    curve, events, regularize_until = draft.curve, draft.events, draft.regularize_until
    if draft.job is not None and curve:
        title = (_("Sparsity held fixed while retraining") if kind == "oneshot"
                 else _("Sparsity schedule"))
        st.plotly_chart(schedule_chart(curve, events=events, regularize_until=regularize_until,
                                       title=title), key=keys.FT_SCHEDULE_CHART_KEY)
        st.caption(_("{steps} training steps of batch {batch}, fewer if early stopping ends the "
                     "run. The sparsity drawn is the pruned layers' share of zero weights.")
                   .format(steps=len(curve), batch=draft.batch))


def save_controls() -> None:
    """Keep the controls' values while other pages are shown."""
    st.session_state[keys.FT_SAVED_KEY] = {
        k: v for k, v in st.session_state.items()
        if str(k).startswith(keys.FT_PREFIX) and k not in keys.FT_NOT_SAVED}


def stop_text(outcome: FinetuneOutcome, metric_name: str) -> str:
    """How the run ended, as the CLI's report says it (in the reader's language: the
    summary's own text was written by the worker, in English)."""
    text = stop_reason(outcome.result, outcome.job.recipe, outcome.summary.steps_planned,
                       metric_text(metric_name))
    if outcome.result.stopped == "cancelled":
        return _("{reason}: the best weights so far are kept").format(reason=text)
    return text


def show_run(worker: FinetuneWorker, metric_name: str, was_running: bool) -> None:
    """Progress and the live training curves; polled while training runs."""
    progress = worker.snapshot()
    if was_running and not progress.running:
        st.rerun(scope="app")  # finished: record it, show the results and the buttons
    if progress.error:
        st.error(_("The run stopped: {error}").format(error=progress.error))
    running_job = progress.job
    if running_job is None:
        st.info(_("Choose a recipe and the training settings, then press **Train**."))
        return
    outcome = progress.outcome
    if progress.queued is not None:
        what = waiting_text(progress.queued, progress.jobs_running)
    elif progress.running:
        what = (_("measuring the result on the test split ...")
                if progress.phase == "measuring" else _("training ..."))
    else:
        what = stop_text(outcome, metric_name) if outcome is not None else _("stopped")
    total = max(progress.total, 1)
    shown = outcome.result.steps if outcome is not None else progress.done
    st.progress(min(1.0, shown / total),
                text=_("step {step} of {steps} — {state}").format(
                    step=shown, steps=progress.total, state=what))
    st.caption(_("Run: {label}").format(label=running_job.label))
    planned = (running_job.schedule.curve(progress.total)
               if running_job.schedule is not None else None)
    st.plotly_chart(
        training_curves(progress.records, total_steps=progress.total,
                        metric_name=metric_text(metric_name),
                        planned=planned,
                        best_step=outcome.result.best_step if outcome is not None else None),
        key=keys.FT_CURVES_KEY)


def result_row(bench: Workbench, stage: str, report: Report, experiment: Experiment | None,
               latency: Latency | None = None) -> dict[str, str]:
    """One stage of the run as a table row: its metric, change, sparsity and latency (with
    its speed-up over the unpruned model timed in the same rounds, a verdict only when the
    interval excludes 1x)."""
    metric_name = metric_text(bench.eval_data.metric_name)
    accuracy = shows_percent(bench.eval_data)
    change = report.evaluation.metric - bench.baseline.evaluation.metric
    latency = latency or report.latency
    return {
        _("stage"): stage,
        metric_name: show_metric(report.evaluation.metric, accuracy),
        _("change"): (_("{change} pts").format(change=f"{change * 100:+.2f}") if accuracy
                      else f"{change:+.5f}"),
        _("sparsity (all parameters)"): f"{report.sparsity:.1%}",
        _("non-zero params"): f"{report.params_nonzero:,}",
        _("latency"): f"{latency.median_ms:.2f} ms" if latency else "-",
        _("latency vs unpruned"): (report.latency_speedup.text()
                                   if report.latency_speedup is not None else "-"),
        _("experiment"): "-" if experiment is None else f"#{experiment.id}",
    }


def show_result(bench: Workbench, outcome: FinetuneOutcome) -> None:
    """The finished run, measured: before and after, and the weights' buttons."""
    metric_name = bench.eval_data.metric_name
    accuracy = shows_percent(bench.eval_data)
    log = state.experiment_log()
    result = outcome.result
    for note in result.notes:
        st.warning(_(note))  # the library's notes are fixed sentences (N_)
    st.subheader(_("Collapse and recovery"))
    st.dataframe(
        [result_row(bench, _("before pruning (original weights)"), bench.baseline, log.get(0),
                    # timed in the same runs as the fine-tuned model: comparable
                    outcome.report.latency_reference),
         result_row(bench, _("right after pruning, no retraining"), outcome.twin,
                    log.find(outcome.plan)),
         result_row(bench, _("after fine-tuning ({weights})").format(
                        weights=weights_text(outcome.weights)),
                    outcome.report, log.find(outcome.plan, outcome.weights))],
        hide_index=True,
    )
    text = _("{label}: {steps} steps, {stopped}. The weights kept are those of step {step}. "
             "Measured on the {samples} test images; both rows are experiments on Trade-offs.")
    if result.best_metric is not None:
        text = _("{label}: {steps} steps, {stopped}. The weights kept are those of step {step} "
                 "(validation {metric} {value}). Measured on the {samples} test images; both "
                 "rows are experiments on Trade-offs.")
    st.caption(text.format(
        label=outcome.job.label, steps=result.steps, stopped=stop_text(outcome, metric_name),
        step=result.best_step, metric=metric_text(metric_name),
        value="" if result.best_metric is None else show_metric(result.best_metric, accuracy),
        samples=f"{len(bench.eval_data):,}"))
    cols = st.columns([2, 1.5, 2.5], vertical_alignment="center")
    if cols[0].button(_("Use the fine-tuned weights in this tab"), key=keys.FT_USE_KEY,
                      type="primary", disabled=state.current_weights() == outcome.weights,
                      width="stretch",
                      help=_("The Prune, Inspect, Deploy and Trade-offs pages then work on "
                             "them, with the final plan applied. The original weights stay one "
                             "click away.")):
        with user_errors(_("The fine-tuned weights could not be used")):
            state.use_weights(outcome.weights, outcome.plan)
        st.session_state[keys.FT_FLASH_KEY] = _(
            "This tab now prunes the {weights} weights, with the final plan ({plan})."
        ).format(weights=weights_text(outcome.weights), plan=describe_plan(outcome.plan))
        st.rerun()
    with cols[1]:
        st.page_link("app_pages/tradeoffs.py", icon=":material/insights:",
                     label=_("See both on Trade-offs"))


def is_batchnorm(module: nn.Module) -> bool:
    """Whether `module` is a BatchNorm layer (its weights are the scales)."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def show_regularisation(session: PruningSession, outcome: FinetuneOutcome) -> None:
    """Weight histograms before training and just before pruning: the spike at zero."""
    st.subheader(_("What the regulariser did"))
    before = outcome.before_pruning
    schedule = outcome.job.schedule
    if before is None or schedule is None:
        st.caption(_("The run stopped before its pruning step: there is no snapshot of the "
                     "regularised weights."))
        return
    pristine = state.weights_state(ORIGINAL)
    masks = outcome.result.masks
    if outcome.job.recipe.regularizer is Regularizer.BN_L1:
        names = [f"{n}.weight" for n, m in session.model.named_modules() if is_batchnorm(m)]
        label = _("all BatchNorm scales")
        original = np.concatenate([pristine[n].cpu().numpy().ravel() for n in names])
        regularised = np.concatenate([before[n].cpu().numpy().ravel() for n in names])
        kept = np.concatenate([masks[n].cpu().numpy().ravel() if n in masks
                               else np.ones(before[n].numel(), dtype=bool) for n in names])
    else:
        label = st.selectbox(_("Layer"), session.layer_names, key=keys.FT_HIST_LAYER_KEY)
        weight = session.layer_by_name[label].weight
        original = pristine[weight].cpu().numpy()
        regularised = before[weight].cpu().numpy()
        kept = (masks[weight].cpu().numpy() if weight in masks
                else np.ones(regularised.shape, dtype=bool))
    log_y = st.checkbox(_("log-scale counts"), key=keys.FT_HIST_LOG_KEY)
    left, right = st.columns(2)
    fig = weight_histogram(original, kept, layer=label, log_y=log_y)
    fig.update_layout(title_text=_("{layer}: before training").format(layer=label),
                      title_subtitle_text=_("red: the weights pruned after regularisation"))
    left.plotly_chart(fig, key=keys.FT_HIST_BEFORE_KEY)
    fig = weight_histogram(regularised, kept, layer=label, log_y=log_y)
    fig.update_layout(title_text=_("{layer}: after {steps} regularised steps").format(
                          layer=label, steps=schedule.begin_step),
                      title_subtitle_text=_("just before pruning"))
    right.plotly_chart(fig, key=keys.FT_HIST_AFTER_KEY)
    tiny = 1e-3
    st.caption(_(
        "|w| < {tiny}: {before} of the original values, {after} after regularisation — the "
        "spike at zero. Weights the penalty already pushed to zero cost little to remove: "
        "compare the dip of the validation curve at the pruning step with the collapse of the "
        "same plan on the original weights (the table's second row)."
    ).format(tiny=f"{tiny:g}", before=f"{np.mean(np.abs(original) < tiny):.1%}",
             after=f"{np.mean(np.abs(regularised) < tiny):.1%}"))


def han_comparison(bench: Workbench, outcome: FinetuneOutcome | None) -> None:
    """Han et al. 2015's LeNet-300-100 next to the last run on the Digits MLP."""
    mlp = bench.name == "sample:digits_mlp"
    accuracy = shows_percent(bench.eval_data)
    with st.expander(_("Han et al. 2015: 92% of LeNet-300-100's weights pruned, no accuracy "
                       "lost"), expanded=mlp):
        st.markdown(_(
            "In *Learning both Weights and Connections for Efficient Neural Networks* (Han, Pool, "
            "Tran and Dally, NeurIPS 2015), a fully connected LeNet-300-100 on MNIST lost 92% of "
            "its 267K weights — 22K left, 12x fewer — by pruning the smallest weights and "
            "retraining, several times over (the **Iterative** recipe here). Its top-1 error went "
            "from 1.64% to 1.59%: nothing lost. Without retraining, the same pruning costs a lot."
            "\n\nThe Digits MLP here is far smaller: 17K weights reading 8x8 images, trained on "
            "1,347 of them. It has much less redundancy to give up — a harder test of the same "
            "ratio. Run **Iterative** on it at 92% unstructured to fill in the last column."))
        paper = [_("267K (LeNet-300-100, 28x28 MNIST)"), _("92% (22K left, 12x fewer)"), "1.64%",
                 "-", "1.59%"]
        if mlp and outcome is not None and accuracy:
            done = outcome.report
            kind_text = (granularity_name(outcome.job.prune.granularity.value)
                         if outcome.job.prune
                         else describe_plan(outcome.plan))
            mine = [_("{weights} (Digits MLP, 8x8 digits)").format(
                        weights=f"{done.params_total:,}"),
                    _("{sparsity} {pruning} ({left} left, {fewer}x fewer)").format(
                        sparsity=f"{done.sparsity:.1%}", pruning=kind_text,
                        left=f"{done.params_nonzero:,}",
                        fewer=f"{done.params_total / max(done.params_nonzero, 1):.1f}"),
                    f"{1 - bench.baseline.evaluation.metric:.2%}",
                    f"{1 - outcome.twin.evaluation.metric:.2%}",
                    f"{1 - done.evaluation.metric:.2%}"]
        else:
            mine = ["-"] * 5
        st.dataframe(
            {"": [_("weights"), _("pruned"), _("top-1 error before pruning"),
                  _("top-1 error after pruning, no retraining"),
                  _("top-1 error after retraining")],
             "Han et al. 2015": paper,
             _("your last run (Digits MLP)"): mine},
            hide_index=True,
        )
        if not mlp:
            st.caption(_("Choose the Digits MLP in the sidebar to compare a run with the "
                         "paper."))
