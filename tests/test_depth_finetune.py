"""Depth pruning that can recover: fine-tuning a plan that removes blocks.

The removed blocks are the identity while the model trains (the other masks of the plan
held as always), distillation learns from the unpruned model with every block, and the
result — a state dict of the whole architecture, the removed blocks' original weights in
it — re-applies to a fresh session with the same plan, slims with the masked model's
output and exports with its checks passing. On digits_resnet without `layer1` one-shot
accuracy collapses to about 21-24%; ten training steps (about half an epoch) bring it
back, by far more than the sampling noise of the test set (computed, not assumed).

Each fine-tune here is as short as still proves its point: one run of the library (with
distillation) shared by the tests of its result, one of the command line (without), one
of the page; the torchrun case is in tests/test_distributed.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fixtures import apptest, zoo
from fixtures.apptest import bench_of, rerun_while_running, workspace_of
from safetensors.torch import load_file
from torch import Tensor, nn

from pruneviz.app.keys import BENCH_ID_KEY, FINETUNE_WORKERS_KEY
from pruneviz.app.worker import FinetuneWorker
from pruneviz.cli import main
from pruneviz.core.plan import Plan
from pruneviz.core.session import PruningSession
from pruneviz.core.slim import max_abs_diff, slim
from pruneviz.data.samples import load_sample
from pruneviz.data.tasks import Task
from pruneviz.data.tensors import TensorData
from pruneviz.errors import ModelError, PlanError
from pruneviz.measure.metrics import EvalResult, evaluate
from pruneviz.output.bundle import export_bundle
from pruneviz.output.deploy_files import ONNX, PASSED, PROGRAM
from pruneviz.workflows.finetune import FinetuneRecipe, FinetuneResult, PruneSpec, finetune
from pruneviz.workflows.schedules import Schedule, ScheduleKind
from pruneviz.workflows.workbench import Workbench, build_workbench, load_weights, open_workbench

MODEL = "sample:digits_resnet"
BLOCK = "layer1"
STEPS = 10  # enough to recover beyond noise (measured: 21% -> 60-64% on 450 samples)
RECIPE = FinetuneRecipe(epochs=1, lr=1e-3, max_steps=STEPS, distill=0.5)


def beyond_noise(before: float, after: float, samples: int) -> float:
    """How far `after` exceeds `before` (accuracies on the same `samples` test samples)
    in excess of four standard errors of the difference (binomial; > 0: a real gain)."""
    se = math.sqrt((before * (1 - before) + after * (1 - after)) / samples)
    return after - before - 4 * se


def plan_of(bench: Workbench, sparsity: float = 0.3) -> Plan:
    """`sparsity` unstructured on every layer by l1, and BLOCK removed."""
    session = bench.session
    return session.stamp(session.uniform_plan(sparsity, "unstructured", "l1")[0]
                         .with_blocks([BLOCK]))


def outputs(model: nn.Module, x: Tensor) -> Tensor:
    model.eval()
    with torch.no_grad():
        out: Tensor = model(x)
    return out


@dataclass(frozen=True)
class Tuned:
    """The library's fine-tune of the depth-pruned plan, shared by the tests of its result."""

    bench: Workbench
    plan: Plan
    oneshot: EvalResult
    result: FinetuneResult
    teacher_calls: int  # forward passes through the teacher's copy of the removed block


@pytest.fixture(scope="module")
def tuned() -> Tuned:
    """digits_resnet, 30% unstructured and layer1 removed, fine-tuned STEPS steps with
    distillation from the unpruned model (whose removed block counts its calls)."""
    bench = open_workbench(MODEL)
    plan = plan_of(bench)
    bench.session.apply(plan)
    oneshot = evaluate(bench.model, bench.eval_data)
    assert bench.train_data is not None
    calls = [0]

    def count(module: nn.Module, inputs: object, output: object) -> None:
        calls[0] += 1

    teacher = bench.pristine  # the unpruned model; finetune copies it (with this hook)
    handle = teacher.get_submodule(BLOCK).register_forward_hook(count)
    try:
        result = finetune(bench.session, bench.train_data, RECIPE, teacher=teacher)
    finally:
        handle.remove()
    return Tuned(bench, plan, oneshot, result, calls[0])


# -- the session: whole state dicts while blocks are removed ----------------------------------
class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc(x)


def test_the_session_takes_and_gives_whole_state_dicts_while_a_block_is_removed() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(4, 6), Residual(), nn.Linear(6, 3))
    x = torch.randn(20, 4)
    session = PruningSession(model, x)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    session.apply(session.stamp(Plan(blocks=("1",))))
    assert "1.fc.weight" not in session.model.state_dict()
    whole = session.state_dict()
    assert set(whole) == set(original)
    assert torch.equal(whole["1.fc.weight"], original["1.fc.weight"])
    # trained weights without the block (as a training loop's state dict has them)
    trained = {k: v + 1 for k, v in session.model.state_dict().items()}
    session.rebase(trained, keep_decisions=True)
    assert session.removed_blocks() == ["1"]
    assert torch.equal(session.model.state_dict()["0.weight"], trained["0.weight"])
    assert torch.equal(session.state_dict()["1.fc.weight"], original["1.fc.weight"])
    # the whole state back, as a fresh session of the same plan gets it
    again = PruningSession(model, x)
    again.rebase(session.state_dict())
    again.apply(session.plan)
    with torch.no_grad():
        assert torch.equal(again.model(x), session.model(x))
    session.reset()  # the block back, with its original weights
    assert torch.equal(session.model.state_dict()["1.fc.weight"], original["1.fc.weight"])
    with pytest.raises(ModelError, match="do not fit"):  # other keys missing: refused
        session.rebase({"0.weight": trained["0.weight"]})

@pytest.mark.slow
def test_a_plan_removing_a_block_fine_tunes_and_recovers(tuned: Tuned) -> None:
    bench, plan, oneshot, result = tuned.bench, tuned.plan, tuned.oneshot, tuned.result
    session = bench.session
    assert result.steps == STEPS
    after = evaluate(bench.model, bench.eval_data)
    assert after.samples == oneshot.samples
    assert beyond_noise(oneshot.metric, after.metric, after.samples) > 0, (oneshot, after)
    assert session.removed_blocks() == [BLOCK]
    assert session.plan.key() == plan.key()
    # measured on the model that runs: the block's layers count in neither MACs figure
    gone = sum(layer.macs for layer in session.layers
               if layer.module_name.startswith(BLOCK + "."))
    assert gone > 0
    assert bench.meter.report().macs_dense == bench.baseline.macs_dense - gone
    # trained without the block: the identity in the model, its weights the originals
    assert isinstance(bench.model.get_submodule(BLOCK), nn.Identity)
    pristine = bench.pristine.state_dict()
    assert set(result.state) == set(pristine)  # the whole architecture
    inside = [k for k in pristine if k.startswith(BLOCK + ".")]
    assert inside
    for key in inside:
        assert torch.equal(result.state[key], pristine[key]), key
    assert not torch.equal(result.state["fc.weight"], pristine["fc.weight"])
    # the plan's other masks were held: pruned entries exactly zero, none inside the block
    assert result.masks
    assert not any(k.startswith(BLOCK + ".") for k in result.masks)
    live = dict(bench.model.named_parameters())
    for name, keep in result.masks.items():
        assert (live[name][~keep] == 0).all(), name
        assert torch.equal(result.state[name], live[name].detach()), name


@pytest.mark.slow
def test_distillation_learns_from_the_model_with_every_block(tuned: Tuned) -> None:
    """The teacher ran its copy of the removed block at every step (the recovery of this
    run: the test above); the model being trained cannot be its own teacher."""
    assert tuned.teacher_calls == tuned.result.steps == STEPS
    bench = tuned.bench
    assert bench.train_data is not None
    with pytest.raises(PlanError, match="the distillation teacher is the model being trained"):
        finetune(bench.session, bench.train_data, RECIPE, teacher=bench.session.model)
    assert bench.session.removed_blocks() == [BLOCK]


@pytest.mark.slow
def test_the_fine_tuned_weights_reapply_to_a_fresh_session_with_the_same_plan(
        tuned: Tuned) -> None:
    bench, plan, result = tuned.bench, tuned.plan, tuned.result
    fresh = open_workbench(MODEL)
    load_weights(fresh.session, result.state)  # the whole model's weights, nothing pruned
    assert fresh.session.removed_blocks() == []
    fresh.session.apply(plan)
    x = bench.eval_data.x[:64]
    assert torch.equal(outputs(fresh.model, x), outputs(bench.model, x))
    whole = fresh.session.state_dict()
    assert set(whole) == set(result.state)
    for key, value in result.state.items():
        assert torch.equal(whole[key], value), key
    # and the session takes its own whole state back (rebase while the block is removed)
    fresh.session.rebase(fresh.session.state_dict(), keep_decisions=True)
    assert fresh.session.removed_blocks() == [BLOCK]
    assert torch.equal(outputs(fresh.model, x), outputs(bench.model, x))


@pytest.mark.slow
def test_the_fine_tuned_result_slims_and_exports(tuned: Tuned, tmp_path: Path) -> None:
    bench = tuned.bench
    slimmed = slim(bench.session)
    assert not any(k.startswith(BLOCK + ".") for k in slimmed.model.state_dict())
    assert slimmed.params < sum(p.numel() for p in bench.pristine.parameters())
    assert max_abs_diff(bench.model, slimmed.model, bench.eval_data.x[:128]) < 1e-4
    result = export_bundle(bench, tmp_path / "out", weights="fine-tuned #1")
    assert result.passed, result.checks
    # the deployment files of the model without the block (the CLI test exports without)
    rows = {row.name: row.status for row in result.deploy}
    assert rows[ONNX] == rows[PROGRAM] == PASSED, result.deploy
    assert "layer1 removed" in result.slim_note
    assert bench.session.removed_blocks() == [BLOCK]  # the export put nothing back


@pytest.mark.slow
def test_a_schedule_trains_without_the_blocks_from_the_first_step() -> None:
    bench = open_workbench(MODEL)
    session = bench.session
    assert bench.train_data is not None
    seen: list[bool] = []
    result = finetune(
        session, bench.train_data, FinetuneRecipe(epochs=1, lr=1e-3, max_steps=6),
        schedule=Schedule(ScheduleKind.ITERATIVE, 0.5, begin_step=2, end_step=4, rounds=2),
        prune=PruneSpec("filter", "l1", blocks=(BLOCK,)),
        progress=lambda r: seen.append(session.removed_blocks() == [BLOCK]),
        record_every=1)
    assert seen
    assert all(seen)
    assert result.final_plan.blocks == (BLOCK,)
    assert session.removed_blocks() == [BLOCK]
    assert slim(session).removed  # filters removed as well as the block


# -- the command line ------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_fine_tunes_a_depth_pruned_plan_and_its_weights_export(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ft"
    # without distillation (the library's run above distils)
    assert main(["finetune", MODEL, "--remove-blocks", BLOCK, "--sparsity", "0.3",
                 "--epochs", "1", "--max-steps", str(STEPS), "--lr", "1e-3", "--out", str(out),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pruning"]["blocks"] == [BLOCK]
    assert report["plan"]["blocks"] == [BLOCK]
    assert report["steps"] == STEPS
    removed = [x["name"] for x in report["layers"] if x.get("removed")]
    assert removed
    assert all(n.startswith(BLOCK + ".") for n in removed)
    before, after = report["after_pruning"], report["after_retraining"]
    assert beyond_noise(before["metric"], after["metric"], after["samples"]) > 0, report
    weights = load_file(out / "weights.safetensors")
    pristine = load_sample("digits_resnet").model.state_dict()
    assert set(weights) == set(pristine)  # the whole architecture: loads into the model
    for key in (k for k in pristine if k.startswith(BLOCK + ".")):
        assert torch.equal(weights[key], pristine[key]), key

    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(report["plan"]), encoding="utf-8")
    # --no-deploy: test_the_fine_tuned_result_slims_and_exports checks the ONNX of the
    # same kind of model (a dynamo export of a few seconds on 2 cores)
    assert main(["export", MODEL, "--weights", str(out / "weights.safetensors"), "--plan",
                 str(plan_file), "--slim", "--no-deploy", "--out", str(tmp_path / "export"),
                 "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["verified"] is True, exported
    assert main(["evaluate", MODEL, "--weights", str(out / "weights.safetensors"),
                 "--plan", str(plan_file), "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["metric"] == pytest.approx(after["metric"])


@pytest.mark.slow
def test_cli_fine_tunes_and_distils_a_plan_file_that_removes_blocks_only(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(Plan(blocks=(BLOCK,)).to_json(), encoding="utf-8")
    assert main(["finetune", MODEL, "--plan", str(plan_file), "--epochs", "1",
                 "--max-steps", "3", "--distill", "--out", str(tmp_path / "ft")]) == 0
    text = capsys.readouterr().out
    assert "plan " in text
    assert "layer1.conv1 removed" in text


@pytest.mark.parametrize(("options", "message"), [
    (["--remove-blocks", " , "], "--remove-blocks ' , ' names no block"),
    (["--remove-blocks", BLOCK, "--plan", "p.json"], "--remove-blocks is for --sparsity"),
    pytest.param(["--remove-blocks", "layer9"], "cannot remove 'layer9'",
                 marks=pytest.mark.slow),  # loads the model
])
def test_cli_refuses_bad_blocks_with_a_message(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str],
        message: str) -> None:
    assert main(["finetune", MODEL, *options, "--out", str(tmp_path / "ft")]) != 0
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "ft").exists()


# -- a ResNet-50 laid out as torchvision's, tiny ---------------------------------------------
def tiny_resnet50_bench() -> Workbench:
    torch.manual_seed(0)
    model = zoo.resnet50(4, width=8, layers=(2, 1, 1, 1))
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(96, 3, 32, 32, generator=generator)
    y = torch.randint(0, 4, (96,), generator=generator)
    data = TensorData(x, y, Task.CLASSIFICATION, "noise")
    return build_workbench("tiny resnet50", model, x[:2], data, data)


@pytest.mark.slow
def test_a_tiny_resnet50_without_a_bottleneck_fine_tunes_slims_and_exports(
        tmp_path: Path) -> None:
    bench = tiny_resnet50_bench()
    session = bench.session
    block = "layer1.1"  # a bottleneck with an identity shortcut
    assert block in {b.name for b in session.blocks()}
    plan = session.stamp(session.uniform_plan(0.25, "filter", "l1")[0].with_blocks([block]))
    session.apply(plan)
    assert bench.train_data is not None
    result = finetune(session, bench.train_data,
                      FinetuneRecipe(epochs=1, lr=1e-3, distill=0.5, batch_size=32),
                      teacher=bench.pristine)
    assert result.steps == 3
    assert session.removed_blocks() == [block]
    pristine = bench.pristine.state_dict()
    assert set(result.state) == set(pristine)
    for key in (k for k in pristine if k.startswith(block + ".")):
        assert torch.equal(result.state[key], pristine[key]), key
    assert not torch.equal(result.state["conv1.weight"], pristine["conv1.weight"])
    slimmed = slim(session)
    assert slimmed.removed
    assert max_abs_diff(session.model, slimmed.model, bench.eval_data.x[:16]) < 1e-4
    exported = export_bundle(bench, tmp_path / "out")
    assert exported.passed, exported.checks


# -- the app: the Fine-tune page, its worker process, the saved workspace ----------------------
PAGE = "app_pages/finetune.py"
PAGE_STEPS = 12  # at lr 1e-3 (a plan removing layer1 only: 8 steps recover just past noise)
WAIT = 300.0  # seconds a short run of digits_resnet may take on a busy machine, at most


@pytest.mark.slow
def test_the_fine_tune_page_trains_the_tabs_depth_pruned_plan_and_reopens_it() -> None:
    at = apptest.start(MODEL)
    bench = bench_of(at)
    session = bench.session
    plan = session.stamp(Plan(blocks=(BLOCK,)))
    session.apply(plan)  # as the Prune page's block controls do
    at.switch_page("app_pages/prune.py").run()
    assert not at.exception, at.exception
    assert any("fine-tune this plan on the Fine-tune page" in c.value for c in at.caption)
    assert session.removed_blocks() == [BLOCK]
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert at.radio(key="pv_ft_recipe").value == "oneshot"  # the tab's plan removes a block
    assert any("layer1 removed" in m.value for m in at.markdown)
    at.number_input(key="pv_ft_epochs").set_value(1)
    at.number_input(key="pv_ft_max_steps").set_value(PAGE_STEPS)
    at.select_slider(key="pv_ft_lr").set_value(1e-3).run()  # the page's 1e-4 needs epochs
    at.button(key="pv_ft_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    worker = at.session_state[FINETUNE_WORKERS_KEY][str(at.session_state[BENCH_ID_KEY])]
    assert isinstance(worker, FinetuneWorker)
    rerun_while_running(at, worker, WAIT)
    assert not at.error, [e.value for e in at.error]
    outcome = worker.snapshot().outcome
    assert outcome is not None
    assert outcome.plan.blocks == (BLOCK,)
    tuned, twin = outcome.report.evaluation, outcome.twin.evaluation
    assert beyond_noise(twin.metric, tuned.metric, tuned.samples) > 0, (twin, tuned)
    whole = sum(p.numel() for p in bench.pristine.parameters())
    assert outcome.report.params_total == outcome.twin.params_total < whole  # no block
    assert outcome.report.macs_dense < bench.baseline.macs_dense
    pristine = bench.pristine.state_dict()
    assert set(outcome.result.state) == set(pristine)

    at.button(key="pv_ft_use").click().run()  # the fine-tuned weights, with the plan
    assert not at.exception, at.exception
    assert session.removed_blocks() == [BLOCK]
    for key, value in outcome.result.state.items():
        assert torch.equal(session.state_dict()[key], value), key
    assert bench.meter.report().evaluation.metric == tuned.metric
    workspace_of(at).settle()

    again = apptest.start(MODEL)  # a new session, as after a server restart
    [reopen] = [b for b in again.sidebar.button if b.label.startswith("Reopen")]
    reopen.click().run()
    assert not again.exception, again.exception
    other = workspace_of(again)
    assert other.weights == outcome.weights
    assert other.bench.session.removed_blocks() == [BLOCK]
    assert other.bench.session.plan.key() == plan.key()
    kept = other.finetuned[outcome.run]
    for key, value in outcome.result.state.items():
        assert torch.equal(kept.result.state[key], value), key
        assert torch.equal(other.bench.session.state_dict()[key], value), key
    x = bench.eval_data.x[:64]
    assert torch.equal(outputs(other.bench.model, x), outputs(session.model, x))


def test_the_fine_tune_pages_schedules_keep_the_tabs_removed_blocks() -> None:
    at = apptest.start(MODEL)
    session = bench_of(at).session
    session.apply(session.stamp(Plan(blocks=(BLOCK,))))
    at.switch_page(PAGE).run()
    for recipe in ("iterative", "poly", "regularize"):
        at.radio(key="pv_ft_recipe").set_value(recipe).run()
        assert not at.exception, (recipe, at.exception)
        assert any(f"Removed blocks ({BLOCK}) stay removed throughout" in c.value
                   for c in at.caption), recipe
