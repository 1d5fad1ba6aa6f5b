"""Reconstruction (workflows.refit): refit lowers each layer's output error on the
calibration data, keeps pruned entries at exactly zero, feeds each layer the pruned model's
inputs, leaves the originals bit for bit, and a refit plan repeats bit for bit."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import pytest
import torch
from fixtures.models import assert_bit_identical
from safetensors.torch import load_file
from torch import nn

from pruneviz import Plan
from pruneviz.cli import main
from pruneviz.core.plan import Refit
from pruneviz.core.session import PruningSession
from pruneviz.data.tasks import Task
from pruneviz.data.tensors import TensorData
from pruneviz.errors import PlanError
from pruneviz.measure.meter import Report
from pruneviz.measure.metrics import EvalResult
from pruneviz.measure.storage import FileSizes
from pruneviz.output.tradeoff_figures import RECOVERY_STAGES, recovery_figure, recovery_plans
from pruneviz.workflows.experiments import ExperimentLog
from pruneviz.workflows.refit import RefitError, refit


def _data(x: torch.Tensor) -> TensorData:
    return TensorData(x, torch.zeros(x.shape[0], dtype=torch.long), Task.CLASSIFICATION)


def _correlated(n: int, features: int, seed: int = 0) -> torch.Tensor:
    """Inputs whose features are correlated (as real activations are): refit has
    something to exploit that masking throws away."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, max(2, features // 4), generator=g)
    mix = torch.randn(base.shape[1], features, generator=g)
    return base @ mix + 0.1 * torch.randn(n, features, generator=g)


def _session(model: nn.Module, x: torch.Tensor) -> PruningSession:
    torch.manual_seed(0)
    return PruningSession(model, x[:2])


def _applied(session: PruningSession, sparsity: float, granularity: str = "unstructured",
             criterion: str = "l1") -> Plan:
    plan, _ = session.uniform_plan(sparsity, granularity, criterion)
    session.apply(plan)
    return plan


def _set_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    model.load_state_dict(state)
    return model


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm())


@pytest.mark.parametrize("granularity", ["unstructured", "2:4"])
def test_linear_refit_lowers_the_output_error_and_keeps_zeros(granularity: str) -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(32, 16))
    x = _correlated(400, 32)
    session = _session(model, x)
    _applied(session, 0.6, granularity)
    masked = session.model[0].weight.detach().clone()
    want = model(x).detach()
    result = refit(session, _data(x), Refit())
    refit_model = _set_weights(nn.Sequential(nn.Linear(32, 16)), result.state)
    before = _relative_error(session.model(x).detach(), want)
    after = _relative_error(refit_model(x).detach(), want)
    assert after < before  # strictly
    assert result.layers[0].refit
    assert result.layers[0].after == pytest.approx(after, rel=1e-4)
    assert result.layers[0].before == pytest.approx(before, rel=1e-4)
    pruned = masked == 0
    assert int(pruned.sum()) > 0
    assert torch.equal(refit_model[0].weight.detach()[pruned],
                       torch.zeros(int(pruned.sum())))
    assert not torch.equal(refit_model[0].weight.detach()[~pruned], masked[~pruned])


def test_conv2d_refit_on_unfolded_patches_lowers_the_output_error() -> None:
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1, stride=1)
    model = nn.Sequential(conv)
    g = torch.Generator().manual_seed(3)
    x = torch.nn.functional.avg_pool2d(torch.randn(64, 3, 10, 10, generator=g), 3, 1, 1)
    session = _session(model, x)
    _applied(session, 0.7)
    masked = session.model[0].weight.detach().clone()
    result = refit(session, _data(x), Refit())
    refit_model = _set_weights(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1)), result.state)
    want = model(x).detach()
    assert (_relative_error(refit_model(x).detach(), want)
            < _relative_error(session.model(x).detach(), want))
    layer = result.layers[0]
    assert layer.refit
    assert layer.after is not None
    assert layer.before is not None
    assert layer.after < layer.before
    pruned = masked == 0
    assert torch.count_nonzero(refit_model[0].weight.detach()[pruned]) == 0


def test_layers_in_sequence_are_refit_on_the_pruned_inputs() -> None:
    """The second layer's refit weights are the damped solve on the first layer's refit
    outputs (not on the unpruned model's), to the unpruned second layer's outputs."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(12, 10), nn.Tanh(), nn.Linear(10, 6))
    x = _correlated(300, 12)
    session = _session(model, x)
    _applied(session, 0.5)
    settings = Refit(damping=0.01)
    result = refit(session, _data(x), settings)
    refit_model = _set_weights(
        nn.Sequential(nn.Linear(12, 10), nn.Tanh(), nn.Linear(10, 6)), result.state)
    target = model(x).detach().double()
    mask = session.mask("2")

    def solve(inputs: torch.Tensor) -> torch.Tensor:
        rows = torch.cat([inputs.double(), torch.ones(inputs.shape[0], 1,
                                                      dtype=torch.float64)], 1)
        gram, cross = rows.T @ rows, rows.T @ target
        lam = settings.damping * float(gram.diagonal()[:-1].mean())
        weights = torch.zeros(6, 11, dtype=torch.float64)
        for row in range(6):
            keep = torch.cat([mask[row], torch.tensor([True])])
            index = torch.nonzero(keep).flatten()
            system = gram[index][:, index] + lam * torch.eye(index.numel(), dtype=torch.float64)
            weights[row, index] = torch.linalg.solve(system, cross[index, row])
        return weights

    pruned_inputs = torch.tanh(refit_model[0](x)).detach()
    unpruned_inputs = torch.tanh(model[0](x)).detach()
    got = torch.cat([refit_model[2].weight.detach(), refit_model[2].bias.detach()[:, None]], 1)
    expected = solve(pruned_inputs).float()
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, solve(unpruned_inputs).float(), atol=1e-3)


def test_originals_stay_bit_exact() -> None:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))
    pristine = {k: v.clone() for k, v in model.state_dict().items()}
    x = _correlated(200, 16)
    session = _session(model, x)
    _applied(session, 0.8)
    masked = {k: v.clone() for k, v in session.model.state_dict().items()}
    originals = {n: session.original(n).clone() for n in ("0.weight", "2.weight")}
    result = refit(session, _data(x), Refit())
    assert result.refit_layers == ["0", "2"]
    assert_bit_identical(model.state_dict(), pristine)
    assert_bit_identical(session.model.state_dict(), masked)
    for name, value in originals.items():
        assert torch.equal(session.original(name), value)
    session.reset()
    assert_bit_identical(session.model.state_dict(), pristine)


def test_filter_pruning_refits_the_next_layer_to_absorb_the_removed_channels() -> None:
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 6, 3, padding=1))
    g = torch.Generator().manual_seed(7)
    x = torch.nn.functional.avg_pool2d(torch.randn(64, 2, 8, 8, generator=g), 3, 1, 1)
    session = _session(model, x)
    plan = Plan({"0": session.uniform_plan(0.5, "filter")[0].layers["0"]})
    session.apply(plan)
    removed = session.mask("0").reshape(8, -1).any(1) == 0
    assert int(removed.sum()) == 4
    result = refit(session, _data(x), Refit())
    by_name = {layer.name: layer for layer in result.layers}
    nxt = by_name["2"]
    assert nxt.refit
    assert nxt.before is not None
    assert nxt.after is not None
    assert nxt.after < nxt.before
    # the removed filters stay removed (weights and bias zero)
    assert torch.count_nonzero(result.state["0.weight"][removed]) == 0
    assert torch.count_nonzero(result.state["0.bias"][removed]) == 0


def test_unsupported_layers_say_why_and_keep_their_masked_weights() -> None:
    torch.manual_seed(8)

    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(4, 8, batch_first=True)
            self.fc = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(x)
            return self.fc(out[:, -1])

    model = Recurrent()
    x = torch.randn(50, 5, 4)
    session = _session(model, x)
    _applied(session, 0.5)
    masked = {k: v.clone() for k, v in session.model.state_dict().items()}
    result = refit(session, _data(x), Refit())
    lstm = [layer for layer in result.layers if layer.name.startswith("lstm")]
    assert lstm
    assert all(not layer.refit and "recurrent" in (layer.reason or "")
                        for layer in lstm)
    for name, value in masked.items():
        if name.startswith("lstm"):
            assert torch.equal(result.state[name], value)
    assert result.refit_layers == ["fc"]


def test_removed_blocks_are_refused() -> None:
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.Linear(6, 2))
    x = torch.randn(30, 6)
    session = _session(model, x)
    session.apply(Plan(blocks=("2",)))
    with pytest.raises(RefitError, match="removed blocks"):
        refit(session, _data(x), Refit())


def test_refit_settings_in_plans_round_trip_and_old_plans_load() -> None:
    plan = Plan.uniform(["fc1"], 0.5).with_refit(Refit(0.05, 300, 7))
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert again.refit == Refit(0.05, 300, 7)
    # the key says which entries are zeroed: the refit makes other weights, not others zeros
    assert again.key() == plan.with_refit(None).key()
    old = Plan.uniform(["fc1"], 0.5)
    assert "refit" not in old.to_dict()
    assert Plan.from_dict(old.to_dict()).refit is None
    with pytest.raises(PlanError, match="damping"):
        Plan.from_dict({**old.to_dict(), "refit": {"damping": 0}})
    with pytest.raises(PlanError, match="unknown key"):
        Plan.from_dict({**old.to_dict(), "refit": {"lambda": 0.1}})


# -- the command line ------------------------------------------------------------------------
def _cli(*args: str) -> dict[str, object]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*args, "--json"]) == 0
    data: dict[str, object] = json.loads(out.getvalue())
    return data


@pytest.mark.slow
@pytest.mark.parametrize("sample", ["digits_mlp", "digits_cnn"])
def test_cli_refit_beats_one_shot_and_its_plan_repeats_bit_for_bit(
        sample: str, tmp_path: Path) -> None:
    first = _cli("prune", f"sample:{sample}", "--sparsity", "0.7", "--refit",
                 "--refit-samples", "512", "--out", str(tmp_path / "a"))
    refit_out = first["refit"]
    assert isinstance(refit_out, dict)
    assert refit_out["metric_after"] > refit_out["metric_before"]
    assert first["metric"] == refit_out["metric_after"]
    for layer in refit_out["layers"]:
        assert layer["refit"]
        assert layer["error_after"] < layer["error_before"]
    plan = json.loads((tmp_path / "a" / "plan.json").read_text())
    assert plan["refit"] == {"damping": 0.01, "samples": 512, "seed": 0}
    second = _cli("prune", f"sample:{sample}", "--plan", str(tmp_path / "a" / "plan.json"),
                  "--out", str(tmp_path / "b"))
    assert second["metric"] == first["metric"]
    a = load_file(tmp_path / "a" / "weights.safetensors")
    b = load_file(tmp_path / "b" / "weights.safetensors")
    assert_bit_identical(a, b)
    # the written weights keep the plan's zeros: as sparse as the one-shot plan
    assert first["params_nonzero"] == second["params_nonzero"]
    # evaluate --plan measures the refit weights too
    evaluated = _cli("evaluate", f"sample:{sample}", "--plan",
                     str(tmp_path / "a" / "plan.json"))
    assert evaluated["metric"] == first["metric"]


# -- the app -------------------------------------------------------------------------------
def test_prune_page_switch_makes_a_refit_weight_set_and_records_it() -> None:
    from fixtures.apptest import start, workspace_of

    from pruneviz.app.keys import REFIT_BACK_KEY, REFIT_SWITCH_KEY, REFIT_USE_KEY

    at = start("sample:digits_mlp", "app_pages/prune.py", plan=(0.7, "unstructured"),
               timeout=120)
    space = workspace_of(at)
    original = {k: v.clone() for k, v in space.bench.pristine.state_dict().items()}
    plan = space.bench.session.stamp(space.bench.session.plan)
    at.toggle(key=REFIT_SWITCH_KEY).set_value(True).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert "refit #1" in space.weight_sets()
    refit_entries = [e for e in space.log if e.weights == "refit #1"]
    assert len(refit_entries) == 1
    one_shot = space.log.find(plan)
    assert one_shot is not None
    assert refit_entries[0].metric > one_shot.metric
    assert "refit" in refit_entries[0].label
    # the log's plan says so, and `prune --plan` with it writes the same weights
    logged = space.log.plan(refit_entries[0].id)
    assert logged.refit == Refit()
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "plan.json").write_text(logged.to_json())
        _cli("prune", "sample:digits_mlp", "--plan", str(Path(folder) / "plan.json"),
             "--out", str(Path(folder) / "out"))
        written = load_file(Path(folder) / "out" / "weights.safetensors")
    assert_bit_identical(dict(sorted(written.items())),
                         dict(sorted(space.weight_sets()["refit #1"].items())))
    # the tab still prunes its own weights until the refit ones are adopted, and its
    # originals are the model's, bit for bit
    assert space.weights == "original"
    session = space.bench.session
    for layer in session.layers:
        assert torch.equal(session.original(layer.weight), original[layer.weight])
    at.button(key=REFIT_USE_KEY).click().run()
    assert not at.exception, at.exception
    assert space.weights == "refit #1"
    assert space.bench.session.plan.key() == plan.key()
    # the page's measurement of the adopted weights is the refit's experiment, not a new one
    assert [e.id for e in space.log if e.weights == "refit #1"] == [refit_entries[0].id]
    assert space.head == refit_entries[0].id
    assert_bit_identical(space.bench.pristine.state_dict(), original)
    # the page still shows the refit, now with the way back to the original weights
    assert not at.exception, at.exception
    at.button(key=REFIT_BACK_KEY).click().run()
    assert not at.exception, at.exception
    assert space.weights == "original"
    for layer in session.layers:
        assert torch.equal(session.original(layer.weight), original[layer.weight])


# -- the teaching picture ------------------------------------------------------------------
def _report(plan: Plan, metric: float, nonzero: int) -> Report:
    return Report(model="m", plan=plan.for_model("m", "f00d").to_dict(),
                  evaluation=EvalResult("accuracy", metric, 0.25, 100), params_total=1000,
                  params_nonzero=nonzero, macs_dense=5000, macs_effective=5 * nonzero,
                  sizes=FileSizes(4000, 6 * nonzero, 3 * nonzero), latency=None, layers=[])


def test_recovery_figure_puts_one_plan_one_shot_refit_and_fine_tuned_side_by_side() -> None:
    plan, other = Plan.uniform(["fc1"], 0.7), Plan.uniform(["fc1"], 0.9)
    log = ExperimentLog(higher_is_better=True)
    base = log.record(_report(Plan(), 0.97, 1000), Plan())
    one_shot = log.record(_report(plan, 0.81, 300), plan)
    log.record(_report(other, 0.30, 100), other)
    refit_entry = log.record(_report(plan, 0.96, 300), plan, "refit", "refit #1")
    tuned = log.record(_report(plan, 0.97, 300), plan, "tuned", "fine-tuned #1")
    log.record(_report(other, 0.90, 100), other, "refit", "refit #2")
    assert [e.id for e in recovery_plans(list(log))] == [other_id(log, other), one_shot.id]
    fig = recovery_figure(list(log), plan_key=plan.key(), baseline=base,
                          metric_name="accuracy", higher_is_better=True)
    stages = fig.layout.meta["stages"]
    assert stages == {"unpruned": [base.id], "one-shot": [one_shot.id],
                      "one-shot + refit": [refit_entry.id], "fine-tuned": [tuned.id]}
    by_name = {trace.name: list(trace.y) for trace in fig.data}
    assert by_name == {"unpruned": [0.97], "one-shot": [0.81], "one-shot + refit": [0.96],
                       "fine-tuned": [0.97]}
    assert list(fig.layout.xaxis.categoryarray) == list(RECOVERY_STAGES)
    # a plan never fine-tuned says so
    fig = recovery_figure(list(log), plan_key=other.key(), baseline=base,
                          metric_name="accuracy", higher_is_better=True)
    assert "fine-tuned" in fig.layout.title.subtitle.text
    assert "fine-tuned" not in {trace.name for trace in fig.data}


def other_id(log: ExperimentLog, plan: Plan) -> int:
    found = log.find(plan)
    assert found is not None
    return found.id


def test_trade_offs_draws_the_recovery_picture_after_a_refit() -> None:
    from fixtures.apptest import figure, start, workspace_of

    from pruneviz.app.keys import RECOVERY_CHART_KEY, RECOVERY_SHOW_KEY, REFIT_SWITCH_KEY

    at = start("sample:digits_mlp", "app_pages/prune.py", plan=(0.9, "unstructured"),
               timeout=120)
    at.toggle(key=REFIT_SWITCH_KEY).set_value(True).run()
    assert not at.exception, at.exception
    at.switch_page("app_pages/tradeoffs.py").run()
    assert not at.exception, at.exception
    at.checkbox(key=RECOVERY_SHOW_KEY).check().run()
    assert not at.exception, at.exception
    fig = figure(at, RECOVERY_CHART_KEY)
    space = workspace_of(at)
    stages = fig.layout.meta["stages"]
    refit_ids = [e.id for e in space.log if e.weights == "refit #1"]
    assert stages["one-shot + refit"] == refit_ids
    assert len(stages["one-shot"]) == 1
    assert stages["fine-tuned"] == []


def test_cli_refit_refusals_say_what_to_do(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prune", "sample:digits_mlp", "--sparsity", "0.5", "--refit-damping", "0.1",
                 "--out", str(tmp_path / "a")]) != 0
    assert "--refit-damping needs --refit" in capsys.readouterr().err
    assert main(["prune", "sample:digits_mlp", "--sparsity", "0.5", "--refit",
                 "--refit-samples", "0", "--out", str(tmp_path / "a")]) != 0
    assert "--refit-samples must be a whole number >= 1" in capsys.readouterr().err
    assert main(["prune", "sample:digits_mlp", "--refit", "--out", str(tmp_path / "a")]) != 0
    assert "--refit needs a plan that prunes something" in capsys.readouterr().err
    plan = tmp_path / "plan.json"
    plan.write_text(Plan.uniform(["fc1"], 0.5).with_refit(Refit()).to_json())
    assert main(["export", "sample:digits_mlp", "--plan", str(plan),
                 "--out", str(tmp_path / "e")]) != 0
    assert "export does not do yet" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_filter_refit_of_a_residual_network_slims_and_keeps_its_outputs() -> None:
    """digits_resnet at 50% filters (coupled residual groups): the refit weights keep the
    removed channels at zero, so slimming removes them and computes the same outputs."""
    from pruneviz.core.slim import max_abs_diff, slim
    from pruneviz.workflows.refit import refit_bench
    from pruneviz.workflows.workbench import open_workbench

    bench = open_workbench("sample:digits_resnet")
    session = bench.session
    plan, _ = session.uniform_plan(0.5, "filter")
    session.apply(plan)
    one_shot = bench.meter.evaluate().metric
    result = refit_bench(bench, Refit(samples=256))
    session.rebase(result.state, keep_decisions=True)
    assert bench.meter.evaluate().metric > one_shot
    slimmed = slim(session)
    assert slimmed.removed
    assert max_abs_diff(session.model, slimmed.model, bench.eval_data.x[:64]) < 1e-4


def test_prune_page_switch_says_why_a_plan_cannot_be_refit_and_draws_the_rest() -> None:
    from fixtures.apptest import bench_of, start, workspace_of

    from pruneviz.app.keys import REFIT_SWITCH_KEY

    at = start("sample:digits_resnet", None, timeout=120)
    session = bench_of(at).session
    session.apply(session.uniform_plan(0.5)[0].with_blocks(["layer1"]))
    at.switch_page("app_pages/prune.py").run()
    assert not at.exception, at.exception
    assert session.plan.blocks == ("layer1",)
    tables = len(at.dataframe)
    at.toggle(key=REFIT_SWITCH_KEY).set_value(True).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("removed blocks" in e for e in errors), errors
    assert len(at.dataframe) == tables  # the layers table is still drawn
    assert not any(n.startswith("refit #") for n in workspace_of(at).weight_sets())


@pytest.mark.parametrize(("kernel", "stride", "padding", "dilation"), [
    ((3, 3), (1, 1), (1, 1), (1, 1)), ((3, 2), (2, 1), (0, 1), (1, 2)),
    ((1, 1), (2, 2), (0, 0), (1, 1)), ((5, 3), (1, 3), (2, 0), (2, 1))])
def test_conv_patches_are_torch_unfold_s(kernel: tuple[int, int], stride: tuple[int, int],
                                         padding: tuple[int, int],
                                         dilation: tuple[int, int]) -> None:
    from pruneviz.workflows.refit import patches

    x = torch.randn(3, 4, 11, 9)
    want = torch.nn.functional.unfold(x, kernel, dilation=dilation, padding=padding,
                                      stride=stride)
    got = patches(x, kernel, stride, padding, dilation)
    assert torch.equal(got, want.transpose(1, 2).reshape(-1, want.shape[1]))
