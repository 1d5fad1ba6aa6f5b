"""The fine-tuning job's rules, defaults and report, shared by the CLI and the app: each
rule refuses its bad input with the message the CLI prints, the app's controls start
from the CLI's defaults, and a run's summary is built the same for both (no Streamlit
run here: the app's modules are only imported)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pruneviz.app import keys
from pruneviz.app.finetune_view import training_defaults
from pruneviz.app.worker import FinetuneJob, FinetuneWorker, session_factory
from pruneviz.cli import build_parser, main
from pruneviz.cli.finetune import read_finetune_args
from pruneviz.core.plan import Plan
from pruneviz.errors import PrunevizError
from pruneviz.workflows.finetune import FinetuneRecipe, PruneSpec, Regularizer, total_steps
from pruneviz.workflows.finetune_job import (
    LR_MASKED,
    LR_SCHEDULE,
    ROUNDS,
    default_schedule,
    epoch_steps,
    summarize_run,
    validate_plan_prunes,
    validate_prunable,
    validate_regularizer_fits,
    validate_schedule_fits,
    validate_train_data,
)
from pruneviz.workflows.schedules import Schedule, ScheduleKind
from pruneviz.workflows.workbench import Workbench, open_workbench

MODEL = "sample:digits_mlp"


@pytest.fixture(scope="module")
def bench() -> Workbench:
    return open_workbench(MODEL)


def cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The message the CLI prints for `argv`, which must fail as a user error."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pruneviz: error: "), err
    return err.removeprefix("pruneviz: error: ")


def worker(bench: Workbench) -> FinetuneWorker:
    assert bench.train_data is not None
    return FinetuneWorker(session_factory(bench), bench.pristine, bench.train_data,
                          bench.eval_data, latency_runs=1)


def test_a_schedule_past_the_training_is_refused_alike(
        bench: Workbench, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = cli_error(capsys, ["finetune", MODEL, "--schedule", "poly", "--final", "0.5",
                                 "--end-step", "500", "--epochs", "1", "--out", str(tmp_path)])
    assert message.startswith("--schedule poly prunes until step 500")
    recipe = FinetuneRecipe(epochs=1, lr=LR_SCHEDULE)
    assert bench.train_data is not None
    steps = total_steps(bench.train_data, recipe)
    schedule = default_schedule(ScheduleKind.POLY, 0.5, steps, end_step=500)
    with pytest.raises(PrunevizError) as refused:
        validate_schedule_fits(schedule, recipe, steps)
    assert str(refused.value) == message
    job = FinetuneJob("poly", "too long", recipe, schedule=schedule, prune=PruneSpec())
    with pytest.raises(PrunevizError) as refused_by_app:
        worker(bench).start(job)
    assert str(refused_by_app.value) == message


def test_a_regularizer_needs_a_step_before_pruning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = cli_error(capsys, ["finetune", MODEL, "--schedule", "oneshot", "--final", "0.5",
                                 "--regularizer", "l1", "--out", str(tmp_path)])
    recipe = FinetuneRecipe(lr=LR_SCHEDULE, regularizer=Regularizer.L1)
    with pytest.raises(PrunevizError) as refused:
        validate_schedule_fits(Schedule(ScheduleKind.ONESHOT, 0.5), recipe, 100)
    assert str(refused.value) == message


def test_batchnorm_l1_without_batchnorm_is_refused_alike(
        bench: Workbench, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = cli_error(capsys, ["finetune", MODEL, "--schedule", "oneshot", "--final", "0.5",
                                 "--begin-step", "5", "--regularizer", "bn_l1",
                                 "--max-steps", "10", "--out", str(tmp_path)])
    recipe = FinetuneRecipe(regularizer=Regularizer.BN_L1)
    with pytest.raises(PrunevizError) as refused:
        validate_regularizer_fits(recipe, bench.model)
    assert str(refused.value) == message
    job = FinetuneJob("regularize", "bn", recipe, prune=PruneSpec(),
                      schedule=Schedule(ScheduleKind.ONESHOT, 0.5, begin_step=5))
    with pytest.raises(PrunevizError) as refused_by_app:
        worker(bench).start(job)
    assert str(refused_by_app.value) == message


def test_an_unprunable_choice_is_refused_alike(
        bench: Workbench, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = cli_error(capsys, ["finetune", MODEL, "--schedule", "iterative", "--final",
                                 "0.5", "--granularity", "channel", "--criterion", "bn_scale",
                                 "--out", str(tmp_path)])
    assert message.startswith(f"no layer of {MODEL} can be pruned with --granularity channel")
    spec = PruneSpec("channel", "bn_scale")
    with pytest.raises(PrunevizError) as refused:
        validate_prunable(bench.session, spec, 0.5)
    assert str(refused.value) == message
    job = FinetuneJob("iterative", "x", FinetuneRecipe(lr=LR_SCHEDULE), prune=spec,
                      schedule=Schedule(ScheduleKind.ITERATIVE, 0.5, end_step=20, rounds=2))
    with pytest.raises(PrunevizError) as refused_by_app:
        worker(bench).start(job)
    assert str(refused_by_app.value) == message


def test_plans_removing_only_blocks_are_taken_and_missing_training_data_refused() -> None:
    plan = Plan(blocks=["fc2"])
    assert validate_plan_prunes(plan, "this tab's plan") is plan
    with pytest.raises(PrunevizError, match=r"^m has no training data to fine-tune on$"):
        validate_train_data("m", None)


def cli_recipe(tmp_path: Path, *options: str) -> FinetuneRecipe:
    args = build_parser().parse_args(["finetune", MODEL, *options, "--out", str(tmp_path)])
    return read_finetune_args(args)[1]


def test_the_app_starts_from_the_cli_defaults(tmp_path: Path) -> None:
    for recipe_kind, options in [("oneshot", ["--sparsity", "0.5"]),
                                 ("iterative", ["--schedule", "iterative", "--final", "0.5"])]:
        cli = cli_recipe(tmp_path, *options)
        app = training_defaults(recipe_kind)
        assert app[keys.FT_EPOCHS_KEY] == cli.epochs
        assert app[keys.FT_LR_KEY] == cli.lr
        assert app[keys.FT_BATCH_KEY] == cli.batch_size
        assert app[keys.FT_SEED_KEY] == cli.seed
        assert app[keys.FT_PATIENCE_KEY] == cli.patience
        assert app[keys.FT_STRENGTH_KEY] == cli.strength
        assert app[keys.FT_TEMPERATURE_KEY] == cli.temperature
    assert training_defaults("oneshot")[keys.FT_LR_KEY] == LR_MASKED
    assert training_defaults("poly")[keys.FT_LR_KEY] == LR_SCHEDULE
    distilled = cli_recipe(tmp_path, "--sparsity", "0.5", "--distill")
    assert training_defaults("oneshot")[keys.FT_DISTILL_WEIGHT_KEY] == distilled.distill
    # the CLI's schedule defaults: rounds, power, initial, end halfway through training
    cli_schedule = default_schedule(ScheduleKind.ITERATIVE, 0.5, 100)
    app = training_defaults("iterative")
    assert app[keys.FT_ROUNDS_KEY] == cli_schedule.rounds == ROUNDS
    assert app[keys.FT_PRUNE_UNTIL_KEY] == cli_schedule.end_step  # % of the 100 steps
    assert app[keys.FT_WINDOW_KEY] == (0, 50)
    poly = default_schedule(ScheduleKind.POLY, 0.5, 100)
    assert app[keys.FT_POWER_KEY] == poly.power
    assert app[keys.FT_INITIAL_KEY] == poly.initial * 100


def test_a_run_is_summarized_the_same_for_both(bench: Workbench, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The app's outcome carries the summary the CLI's report is made of."""
    recipe = FinetuneRecipe(epochs=1, lr=LR_MASKED, max_steps=6)
    session = bench.session
    plan = session.uniform_plan(0.5, "unstructured", "l1")[0]
    runner = worker(bench)
    runner.start(FinetuneJob("oneshot", "one-shot", recipe, plan=plan))
    assert runner.wait(60)
    outcome = runner.snapshot().outcome
    assert outcome is not None, runner.snapshot().error
    assert bench.train_data is not None
    steps = total_steps(bench.train_data, recipe)
    expected = summarize_run(outcome.result, recipe, steps,
                             epoch_steps(bench.train_data, recipe), "accuracy")
    assert outcome.summary == expected
    assert expected.stopped_reason == "ran to --max-steps 6"

    assert main(["finetune", MODEL, "--sparsity", "0.5", "--epochs", "1", "--max-steps", "6",
                 "--json", "--out", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    for key, value in outcome.summary.to_dict().items():
        assert report[key] == value, key
