"""Wanda (|W|·‖X‖ over calibration inputs, compared within output rows), the outlier-
weighted allocation (OWL), and the notes that say what a criterion did.

The scores are checked against an explicit computation: the inputs a layer sees, captured
by a hook, and for convolutions unfolded with `F.unfold` (im2col)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixtures.sessions import bench_for
from torch import Tensor, nn

import pruneviz.core.criteria as criteria
from pruneviz.core.criteria import (
    Comparison,
    get_criterion,
    input_sq,
    iter_criteria,
    register_criterion,
)
from pruneviz.core.explain import compare_criteria, identical_choices, lsh_note, plan_notes
from pruneviz.core.granularity import Granularity
from pruneviz.core.masks import lowest_pruned_per_row, row_counts
from pruneviz.core.plan import GlobalPlan, LayerPlan, Plan
from pruneviz.core.session import PruningSession
from pruneviz.data.tasks import Task
from pruneviz.data.tensors import TensorData
from pruneviz.errors import PlanError
from pruneviz.measure.metrics import count_params
from pruneviz.output.figures import outlier_ratio_bars
from pruneviz.workflows.allocation import (
    Budget,
    BudgetKind,
    Method,
    outlier_ratio,
    outlier_ratios,
    owl_sparsities,
    plan_for_budget,
)

U = Granularity.UNSTRUCTURED


def _data(x: Tensor, classes: int) -> TensorData:
    y = torch.arange(len(x)) % classes
    return TensorData(x, y, Task.CLASSIFICATION)


def _inputs_of(model: nn.Module, module: nn.Module, x: Tensor) -> Tensor:
    """What `module` receives when `model` runs on `x` (the calibration batch)."""
    seen: list[Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return torch.cat(seen)


class _Net(nn.Module):
    """Linear features with very different scales (so wanda and l1 must differ)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 12)
        self.fc2 = nn.Linear(12, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class _ConvNet(nn.Module):
    """Convolutions with stride, padding, dilation and groups, then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2)
        self.conv2 = nn.Conv2d(6, 8, (2, 3), padding=(1, 0), padding_mode="reflect")
        self.fc = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(h.mean(dim=(2, 3)))


def _linear_session() -> tuple[PruningSession, _Net, Tensor]:
    torch.manual_seed(0)
    model = _Net()
    x = torch.randn(40, 8) * torch.tensor([10.0, 0.1, 1, 1, 5, 0.2, 1, 3])
    return PruningSession(model, x[:2], calibration=_data(x, 4)), model, x


def test_wanda_is_abs_weight_times_input_norm_on_a_linear() -> None:
    session, model, x = _linear_session()
    for name, module in (("fc1", model.fc1), ("fc2", model.fc2)):
        inputs = _inputs_of(model, module, x).double()
        expected = module.weight.detach().double().abs() * inputs.norm(dim=0)
        scores = session.scores(name, U, "wanda").scores
        torch.testing.assert_close(scores.double(), expected.reshape(-1), rtol=1e-5, atol=1e-6)
        filters = session.scores(name, Granularity.FILTER, "wanda").scores
        torch.testing.assert_close(filters.double(), expected.sum(dim=1), rtol=1e-5, atol=1e-6)
        channels = session.scores(name, Granularity.CHANNEL, "wanda").scores
        torch.testing.assert_close(channels.double(), expected.sum(dim=0), rtol=1e-5,
                                   atol=1e-6)


def _unfolded_norms(conv: nn.Conv2d, inputs: Tensor) -> Tensor:
    """Per (input channel, kernel position): the L2 norm of that column of im2col."""
    if conv.padding_mode != "zeros":
        inputs = F.pad(inputs, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding: tuple[int, ...] = (0, 0)
    else:
        padding = conv.padding  # type: ignore[assignment]
    cols = F.unfold(inputs.double(), conv.kernel_size, dilation=conv.dilation,
                    padding=padding, stride=conv.stride)  # (N, C*kh*kw, L)
    norms = cols.pow(2).sum(dim=(0, 2)).sqrt()
    return norms.reshape(conv.in_channels, *conv.kernel_size)


def test_wanda_on_convolutions_equals_the_unfolded_inputs_norms() -> None:
    torch.manual_seed(1)
    model = _ConvNet()
    x = torch.randn(24, 4, 9, 9)
    session = PruningSession(model, x[:2], calibration=_data(x, 3))
    for conv, name in ((model.conv1, "conv1"), (model.conv2, "conv2")):
        norms = _unfolded_norms(conv, _inputs_of(model, conv, x))
        w = conv.weight.detach().double()
        groups, per_group = conv.groups, conv.in_channels // conv.groups
        rows_per_group = conv.out_channels // groups
        expected = torch.stack([
            w[o].abs() * norms[(o // rows_per_group) * per_group:][:per_group]
            for o in range(conv.out_channels)])
        scores = session.scores(name, U, "wanda").scores
        torch.testing.assert_close(scores.double(), expected.reshape(-1), rtol=1e-5,
                                   atol=1e-6)
        filters = session.scores(name, Granularity.FILTER, "wanda").scores
        torch.testing.assert_close(filters.double(), expected.flatten(1).sum(dim=1),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("padding", [0, 2, "same"])
def test_input_sq_of_conv1d_equals_unfold(padding: int | str) -> None:
    conv = nn.Conv1d(3, 5, 4, stride=1 if padding == "same" else 3, dilation=2,
                     padding=padding)
    x = torch.randn(6, 3, 20)
    sq = input_sq(conv, x)
    assert sq is not None
    padded = F.pad(x, conv._reversed_padding_repeated_twice)
    cols = F.unfold(padded.double().unsqueeze(2), (1, 4), dilation=(1, 2),
                    stride=(1, conv.stride[0]))
    expected = cols.pow(2).sum(dim=(0, 2)).reshape(3, 4)
    torch.testing.assert_close(sq, expected)


def test_wanda_differs_from_l1_when_the_input_norms_differ() -> None:
    session, _model, _x = _linear_session()
    wanda = session.scores("fc1", U, "wanda").scores
    l1 = session.scores("fc1", U, "l1").scores
    assert not torch.equal(torch.argsort(wanda), torch.argsort(l1))
    entry_w, entry_l = LayerPlan(U, "wanda", sparsity=0.5), LayerPlan(U, "l1", sparsity=0.5)
    assert not torch.equal(session.preview("fc1", entry_w)[0], session.preview("fc1", entry_l)[0])
    # the loud input feature 0 keeps more of its weights under wanda
    kept_w = session.preview("fc1", entry_w)[0][:, 0].sum()
    kept_l = session.preview("fc1", entry_l)[0][:, 0].sum()
    assert kept_w > kept_l


def test_wanda_declares_row_comparison_and_needs_data() -> None:
    spec = get_criterion("wanda")
    assert spec.comparison is Comparison.ROW
    assert spec.needs_data
    assert spec.unstructured
    assert get_criterion("l1").comparison is Comparison.LAYER
    assert "wanda" in [s.name for s in iter_criteria(U)]
    assert "wanda" in [s.name for s in iter_criteria(Granularity.FILTER)]


def test_a_users_criterion_can_compare_within_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(criteria, "_REGISTRY", dict(criteria._REGISTRY))
    session, _model, _x = _linear_session()
    spec = register_criterion("row_l1", lambda i: i.weight.abs().reshape(-1),
                              unstructured=True, comparison="row")
    assert spec.comparison is Comparison.ROW
    session.apply(session.stamp(Plan({"fc1": LayerPlan(U, "row_l1", sparsity=0.25)})))
    assert ((~session.mask("fc1")).sum(dim=1) == 2).all()
    with pytest.raises(ValueError, match="comparison must be one of layer, row"):
        register_criterion("bad", lambda i: i.weight, unstructured=True, comparison="column")


# -- comparison within output rows ---------------------------------------------------------------
def test_row_counts_and_per_row_selection_on_a_hand_example() -> None:
    scores = torch.tensor([[5.0, 1.0, 3.0, 3.0],
                           [0.5, 9.0, 8.0, 7.0],
                           [2.0, 2.0, 2.0, 2.0]])
    # 7 of 12: two from every row, and the one extra from the row whose third-lowest
    # score is lowest (row 2: 2.0, against 5.0 and 8.0)
    counts = row_counts(scores, 7)
    assert counts.tolist() == [2, 2, 3]
    keep = lowest_pruned_per_row(scores, counts)
    assert keep.tolist() == [[True, False, False, True],   # ties: the earlier goes first
                             [False, True, True, False],
                             [False, False, False, True]]


@pytest.mark.parametrize("sparsity", [0.5, 0.7, 0.9])
def test_unstructured_wanda_prunes_each_row_its_share(sparsity: float) -> None:
    bench = bench_for("digits_mlp")
    session = bench.session
    plan, skipped = session.uniform_plan(sparsity, U, "wanda")
    assert not skipped
    session.apply(plan)
    for layer in session.layers:
        rows = (~session.mask(layer.name)).reshape(layer.shape[0], -1).sum(dim=1)
        width = layer.params // layer.shape[0]
        total = round(sparsity * layer.params)
        assert int(rows.sum()) == total
        # every row its share: floor or ceil of it, exactly when it is a whole number
        assert set(rows.tolist()) <= {total // layer.shape[0], -(-total // layer.shape[0])}
        if (sparsity * width).is_integer():
            assert set(rows.tolist()) == {int(sparsity * width)}
        assert session.result(layer.name).threshold is None  # no one threshold


def test_n_m_wanda_keeps_n_of_every_m_by_wanda_scores() -> None:
    session, _model, _x = _linear_session()
    session.apply(session.stamp(Plan({"fc1": LayerPlan(Granularity.NM_2_4, "wanda")})))
    mask = session.mask("fc1")
    runs = mask.reshape(12, 2, 4)
    assert (runs.sum(dim=2) == 2).all()
    scores = session.scores("fc1", U, "wanda").scores.view(12, 2, 4)
    kept = torch.where(runs, scores, torch.inf).amin(dim=2)
    dropped = torch.where(~runs, scores, -torch.inf).amax(dim=2)
    assert (kept >= dropped).all()


def test_a_threshold_with_a_row_criterion_is_refused_with_what_to_do() -> None:
    session, _model, _x = _linear_session()
    with pytest.raises(PlanError, match=r"within each output row.*sparsity"):
        session.apply(session.stamp(Plan({"fc1": LayerPlan(U, "wanda", threshold=0.1)})))
    assert session.changed_tensors() == []


def test_a_global_ranking_with_wanda_takes_each_layers_share_row_by_row() -> None:
    bench = bench_for("digits_mlp")
    session = bench.session
    session.apply(session.stamp(Plan(global_=GlobalPlan(U, "wanda", sparsity=0.6,
                                                         max_layer_sparsity=0.95))))
    assert count_params(session.model).sparsity == pytest.approx(0.6, abs=0.01)
    for layer in session.layers:
        rows = (~session.mask(layer.name)).reshape(layer.shape[0], -1).sum(dim=1)
        assert int(rows.max() - rows.min()) <= 1


def test_wanda_refuses_layers_whose_inputs_it_cannot_see() -> None:
    bench = bench_for("digits_lstm")
    session = bench.session
    _plan, skipped = session.uniform_plan(0.5, U, "wanda")
    recurrent = [n for n in session.layer_names if "weight_" in n]
    assert recurrent
    assert set(recurrent) <= set(skipped)
    for name in recurrent:
        assert "Linear and Conv1d/2d/3d" in skipped[name]


# -- OWL -------------------------------------------------------------------------------------------
def test_outlier_ratio_counts_scores_above_m_times_the_mean() -> None:
    scores = torch.ones(1000)
    scores[:7] = 100.0  # mean ~1.69: only the planted ones exceed 5x it
    assert outlier_ratio(scores) == pytest.approx(0.007)
    assert outlier_ratio(torch.ones(10)) == 0.0


def test_owl_ratios_find_the_layer_with_planted_outliers() -> None:
    session, model, _x = _linear_session()
    plain = outlier_ratios(session)
    with torch.no_grad():
        model.fc2.weight[:, :3] *= 50.0  # a few huge weights on fc2's inputs
    session_out = PruningSession(model, _x[:2], calibration=_data(_x, 4))
    planted = outlier_ratios(session_out)
    assert planted["fc2"] > plain["fc2"]
    assert planted["fc2"] == pytest.approx(
        outlier_ratio(session_out.scores("fc2", U, "wanda").scores))
    levels = owl_sparsities(planted, {n: session_out.layer_by_name[n].params
                                      for n in session_out.layer_names}, 0.5)
    assert levels["fc2"] < levels["fc1"]  # more outliers, pruned less


def test_owl_sparsities_meet_the_target_by_parameter_count_within_the_cap() -> None:
    ratios = {"a": 0.001, "b": 0.02, "c": 0.005, "d": None}
    params = {"a": 1000, "b": 200, "c": 5000, "d": 50}
    for target in (0.3, 0.7, 0.9):
        levels = owl_sparsities(ratios, params, target, lam=0.08, cap=0.95)
        mean = sum(levels[n] * params[n] for n in params) / sum(params.values())
        assert mean == pytest.approx(target, abs=1e-9)
        assert all(0.0 <= v <= 0.95 for v in levels.values())
        assert levels["b"] < levels["c"] < levels["a"]  # more outliers, less pruned
        if target <= 0.7:  # no cap reached: spread exactly 2 lambda
            assert levels["a"] - levels["b"] == pytest.approx(0.16)
    capped = owl_sparsities(ratios, params, 0.9, lam=0.2, cap=0.92)
    assert max(capped.values()) == pytest.approx(0.92)
    assert sum(capped[n] * params[n] for n in params) / sum(params.values()) == \
        pytest.approx(0.9)
    assert owl_sparsities({"a": 0.1, "b": 0.1}, {"a": 1, "b": 3}, 0.5) == {"a": 0.5, "b": 0.5}


def test_owl_meets_a_sparsity_budget_as_measured_on_digits_mlp() -> None:
    bench = bench_for("digits_mlp")
    outcome = plan_for_budget(bench, Budget(BudgetKind.SPARSITY, 0.7), Method.OWL,
                              criterion="wanda")
    assert outcome.met
    assert outcome.measured >= 0.7
    assert outcome.outlier_ratios is not None
    assert set(outcome.outlier_ratios) == set(bench.session.layer_names)
    levels = {n: e.sparsity for n, e in outcome.plan.layers.items()}
    assert len(set(levels.values())) > 1  # not uniform
    most = max(outcome.outlier_ratios, key=lambda n: outcome.outlier_ratios[n])  # type: ignore[index]
    assert levels[most] == min(levels.values())
    assert outcome.to_dict()["outlier_ratios"] == outcome.outlier_ratios
    with pytest.raises(PlanError, match="nothing for owl to allocate"):
        plan_for_budget(bench, Budget(BudgetKind.SPARSITY, 0.5), Method.OWL,
                        granularity="2:4")


def test_outlier_ratio_figure() -> None:
    fig = outlier_ratio_bars(["a", "b"], [0.01, 0.002], [0.6, 0.8])
    assert list(fig.data[0].x) == ["a", "b"]
    assert fig.layout.meta["ratios_percent"] == pytest.approx([1.0, 0.2])
    assert fig.layout.meta["sparsity_percent"] == pytest.approx([60.0, 80.0])
    assert fig.layout.title.text
    assert fig.layout.xaxis.title.text
    fig.to_json()
    with pytest.raises(ValueError, match="differ in length"):
        outlier_ratio_bars(["a"], [0.1, 0.2])
    with pytest.raises(ValueError, match="fraction"):
        outlier_ratio_bars(["a"], [2.0])


# -- saying what a criterion did -------------------------------------------------------------------
def test_lsh_says_it_found_no_near_duplicates_on_trained_digits_cnn() -> None:
    session = bench_for("digits_cnn").session
    note = lsh_note(session, "conv2", Granularity.FILTER)
    assert note is not None
    assert "no near-duplicate filters among its 64" in note
    assert "exactly as l2 does" in note
    compared = compare_criteria(session, "conv2", Granularity.FILTER, 0.25)
    assert note in compared.notes
    # ... and indeed it removes what l2 removes
    assert torch.equal(compared.pruned_by["lsh"], compared.pruned_by["l2"])
    assert any("lsh" in n and "l2" in n and "the same 16 of 64 filters" in n
               for n in compared.notes)


def test_lsh_says_nothing_where_it_finds_duplicates() -> None:
    torch.manual_seed(3)
    base = torch.randn(4, 2, 3, 3)
    filters = torch.cat([base, base * 1.01, torch.randn(4, 2, 3, 3)])
    conv = nn.Conv2d(2, 12, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(filters)
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(12, 3))
    session = PruningSession(model, torch.randn(2, 2, 5, 5))
    assert lsh_note(session, "0", Granularity.FILTER) is None


def test_identical_choices_groups_criteria_with_the_same_structures() -> None:
    a = torch.tensor([True, False, True])
    b = torch.tensor([True, True, False])
    none = torch.zeros(3, dtype=torch.bool)
    groups = identical_choices({"l1": a, "x": b, "l2": a.clone(), "y": none, "z": none,
                                "w": b.clone(), "v": a.clone()})
    assert groups == [["l1", "l2", "v"], ["x", "w"]]


def test_the_prune_notes_name_the_criteria_that_agree() -> None:
    session = bench_for("digits_cnn").session
    session.apply(session.uniform_plan(0.25, "filter", "lsh")[0])
    notes = plan_notes(session)
    assert any(n.startswith("conv2: lsh found no near-duplicate") for n in notes)
    assert any(n.startswith("conv2: ") and "would remove the same 16 of 64 filters as lsh"
               in n and "l2" in n for n in notes)
