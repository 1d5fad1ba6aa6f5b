"""PruningSession: the invariants of applying plans to a model, checked against references."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from fixtures.models import ZOO, assert_bit_identical, snapshot, with_nan_weights
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn.utils import prune

from pruneviz import (
    DataError,
    GlobalPlan,
    Granularity,
    LayerPlan,
    ModelError,
    Plan,
    PlanError,
    PruningSession,
)


def make_session(name: str, *, calibration: bool = False) -> PruningSession:
    entry = ZOO[name]
    data = entry.data() if calibration else None
    return PruningSession(entry.build(), entry.example(), calibration=data, name=name)


def run(session: PruningSession) -> Tensor:
    with torch.no_grad():
        return session.model(session.example_input)


def assert_weights_are_original_times_mask(session: PruningSession) -> None:
    params = dict(session.model.named_parameters())
    for layer in session.layers:
        weight = params[layer.weight].detach()
        mask = session.mask(layer.name)
        assert mask.dtype == torch.bool
        assert mask.shape == weight.shape, layer.name
        assert torch.equal(weight, session.original(layer.weight) * mask), layer.name


def pruned_structures_from_mask(session: PruningSession, name: str, granularity: str) -> int:
    g = Granularity(granularity)
    mask = session.mask(name)
    if not g.structured:
        return int((~mask).sum())
    rows = session.structures(name, g).vectors(mask)
    return int((~rows.any(dim=1)).sum())


# -- weight == original * mask, on every zoo model ------------------------------------------


@pytest.mark.parametrize("model", ZOO.keys())
@pytest.mark.parametrize("granularity", ["unstructured", "filter", "channel"])
def test_weight_is_original_times_mask(model: str, granularity: str) -> None:
    session = make_session(model)
    originals = snapshot(ZOO[model].build())
    plan, skipped = session.uniform_plan(0.4, granularity, "l2")
    assert not skipped
    session.apply(plan)
    assert_weights_are_original_times_mask(session)
    for layer in session.layers:
        assert torch.equal(session.original(layer.weight), originals[layer.weight])
        result = session.result(layer.name)
        count = session.structures(layer.name, Granularity(granularity)).count
        assert result.structures_pruned == round(0.4 * count)
        assert pruned_structures_from_mask(session, layer.name, granularity) == round(0.4 * count)
    assert torch.isfinite(run(session)).all()


# -- against torch.nn.utils.prune -------------------------------------------------------------


@pytest.mark.parametrize("amount", [0.1, 0.3, 0.5, 0.77, 1.0])
@pytest.mark.parametrize(("model", "layer"), [("mlp", "fc1"), ("conv_bn", "conv2"),
                                              ("conv1d", "conv2"), ("lstm", "lstm.weight_hh_l0")])
def test_unstructured_l1_matches_torch_prune(model: str, layer: str, amount: float) -> None:
    session = make_session(model)
    session.apply(Plan({layer: LayerPlan("unstructured", "l1", sparsity=amount)}))
    info = session.layer_by_name[layer]
    reference = copy.deepcopy(dict(session.model.named_modules())[info.module_name])
    with torch.no_grad():
        getattr(reference, info.param_name).copy_(session.original(info.weight))
    prune.l1_unstructured(reference, info.param_name, amount=amount)
    expected = getattr(reference, f"{info.param_name}_mask").bool()
    assert torch.equal(session.mask(layer), expected)


@pytest.mark.parametrize("amount", [0.25, 0.5, 0.6, 0.9])
@pytest.mark.parametrize(("model", "layer"), [("mlp", "fc2"), ("conv_bn", "conv2"),
                                              ("conv1d", "conv1"), ("decoder", "deconv1")])
def test_structured_masks_match_torch_ln_structured(model: str, layer: str, amount: float) -> None:
    session = make_session(model)
    info = session.layer_by_name[layer]
    module = dict(session.model.named_modules())[info.module_name]
    for granularity, n, dim in [("filter", 2, info.out_dim), ("channel", 1, info.in_dim)]:
        session.apply(Plan({layer: LayerPlan(granularity, f"l{n}", sparsity=amount)}))
        reference = copy.deepcopy(module)
        with torch.no_grad():
            reference.weight.copy_(session.original(info.weight))
        prune.ln_structured(reference, "weight", amount=amount, n=n, dim=dim)
        assert torch.equal(session.mask(layer), reference.weight_mask.bool()), granularity


# -- reversibility ---------------------------------------------------------------------------


def _model_with_negative_zeros(name: str) -> nn.Module:
    model = ZOO[name].build()
    with torch.no_grad():
        for p in model.parameters():
            p.view(-1)[::7] = -0.0  # bit patterns a careless restore would turn into +0.0
    return model


@pytest.mark.parametrize("model", ["conv_bn", "residual", "lstm", "attention"])
def test_reset_and_empty_plan_restore_bit_identical_state(model: str) -> None:
    pristine = _model_with_negative_zeros(model)
    pristine.train()
    before = snapshot(pristine)
    session = PruningSession(pristine, ZOO[model].example())
    dense = snapshot(session.model)
    assert_bit_identical(dense, before)

    for granularity in ["filter", "unstructured", "channel"]:
        session.apply(session.uniform_plan(0.6, granularity, "l1")[0])
    session.reset()
    assert_bit_identical(snapshot(session.model), dense)
    assert session.plan == Plan()
    assert all(r.sparsity == pytest.approx(1 - r.nonzero / r.params) for r in session.results())

    session.apply(session.uniform_plan(0.8, "filter", "l2")[0])
    session.apply(session.uniform_plan(0.3, "unstructured", "random")[0])
    session.apply(Plan())
    assert_bit_identical(snapshot(session.model), dense)
    assert all(session.mask(name).all() for name in session.layer_names)

    # The model handed to the session was never touched, nor its train/eval flag.
    assert_bit_identical(snapshot(pristine), before)
    assert pristine.training


def test_reapplying_a_plan_gives_the_same_weights() -> None:
    session = make_session("conv_bn")
    plan = Plan({"conv1": LayerPlan("filter", "l1", sparsity=0.5),
                 "conv2": LayerPlan("unstructured", "l2", sparsity=0.7)})
    session.apply(plan)
    first = snapshot(session.model)
    session.apply(Plan({"fc": LayerPlan("channel", "l1", sparsity=0.5)}))
    session.apply(plan)
    assert_bit_identical(snapshot(session.model), first)


# -- what a masked filter feeds ---------------------------------------------------------------


def test_masked_filters_zero_bias_and_batchnorm_so_their_output_is_zero() -> None:
    session = make_session("conv_bn")
    model = session.model
    bias0, gamma0, beta0 = (t.detach().clone() for t in (model.conv1.bias, model.bn1.weight,
                                                         model.bn1.bias))
    session.apply(Plan({"conv1": LayerPlan("filter", "l1", sparsity=0.5)}))
    pruned = ~session.mask("conv1").flatten(1).any(dim=1)
    assert int(pruned.sum()) == 4
    for tensor, original in [(model.conv1.bias, bias0), (model.bn1.weight, gamma0),
                             (model.bn1.bias, beta0)]:
        assert (tensor[pruned] == 0).all()
        assert torch.equal(tensor[~pruned], original[~pruned])
    x = ZOO["conv_bn"].example(batch=6, seed=7)
    with torch.no_grad():
        after_bn = model.bn1(model.conv1(x))
    assert (after_bn[:, pruned] == 0).all()
    assert (after_bn[:, ~pruned] != 0).any(dim=(0, 2, 3)).all()

    # Switching the layer to unstructured pruning gives bias and BatchNorm back.
    session.apply(Plan({"conv1": LayerPlan("unstructured", "l1", sparsity=0.5)}))
    assert torch.equal(model.conv1.bias, bias0)
    assert torch.equal(model.bn1.weight, gamma0)
    assert torch.equal(model.bn1.bias, beta0)


def test_masked_neurons_compute_what_removed_neurons_compute() -> None:
    session = make_session("mlp")
    session.apply(Plan({"fc1": LayerPlan("filter", "l2", sparsity=0.5)}))
    keep = session.mask("fc1").any(dim=1)
    original = ZOO["mlp"].build()
    slim = copy.deepcopy(original)
    slim.fc1 = nn.Linear(12, int(keep.sum()))
    slim.fc2 = nn.Linear(int(keep.sum()), 8)
    with torch.no_grad():
        slim.fc1.weight.copy_(original.fc1.weight[keep])
        slim.fc1.bias.copy_(original.fc1.bias[keep])
        slim.fc2.weight.copy_(original.fc2.weight[:, keep])
        slim.fc2.bias.copy_(original.fc2.bias)
    x = ZOO["mlp"].example(batch=16, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(session.model(x), slim(x), rtol=1e-5, atol=1e-6)


def test_masked_conv_filters_compute_what_removed_filters_compute() -> None:
    session = make_session("conv_bn")
    session.apply(Plan({"conv1": LayerPlan("filter", "fpgm", sparsity=0.375)}))
    keep = session.mask("conv1").flatten(1).any(dim=1)
    k = int(keep.sum())
    assert k == 5
    original = ZOO["conv_bn"].build()
    slim = copy.deepcopy(original)
    slim.conv1 = nn.Conv2d(3, k, 3, padding=1)
    slim.bn1 = nn.BatchNorm2d(k).eval()
    slim.conv2 = nn.Conv2d(k, 16, 3, padding=1, bias=False)
    with torch.no_grad():
        slim.conv1.weight.copy_(original.conv1.weight[keep])
        slim.conv1.bias.copy_(original.conv1.bias[keep])
        for name in ["weight", "bias", "running_mean", "running_var"]:
            getattr(slim.bn1, name).copy_(getattr(original.bn1, name)[keep])
        slim.conv2.weight.copy_(original.conv2.weight[:, keep])
    x = ZOO["conv_bn"].example(batch=4, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(session.model(x), slim(x), rtol=1e-5, atol=1e-5)


# -- N:M -----------------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["2:4", "4:8"])
@pytest.mark.parametrize(("model", "layers"), [("mlp", ["fc2", "fc3"]),
                                               ("conv_bn", ["conv2", "fc"]),
                                               ("lstm", ["lstm.weight_hh_l0", "fc"])])
def test_n_m_keeps_at_most_n_of_every_m(model: str, layers: list[str], granularity: str) -> None:
    session = make_session(model)
    g = Granularity(granularity)
    n, m = g.n_m or (0, 0)
    session.apply(Plan({name: LayerPlan(g, "l1") for name in layers}))
    assert_weights_are_original_times_mask(session)
    params = dict(session.model.named_parameters())
    for name in layers:
        info = session.layer_by_name[name]
        weight = params[info.weight].detach()
        groups_w = weight.movedim(info.in_dim, -1).reshape(-1, m)
        groups_mask = session.mask(name).movedim(info.in_dim, -1).reshape(-1, m)
        assert ((groups_w != 0).sum(dim=1) <= n).all()
        assert (groups_mask.sum(dim=1) == n).all()
        # The kept ones are the largest |w| of their group.
        scores = session.original(info.weight).abs().movedim(info.in_dim, -1).reshape(-1, m)
        kept_min = torch.where(groups_mask, scores, torch.inf).min(dim=1).values
        dropped_max = torch.where(groups_mask, -torch.inf, scores).max(dim=1).values
        assert (kept_min >= dropped_max).all()
        result = session.result(name)
        assert result.sparsity == pytest.approx(1 - n / m)
        assert result.structures_pruned == info.params * (m - n) // m
        assert result.threshold is None
    assert torch.isfinite(run(session)).all()


@pytest.mark.parametrize(("model", "layer", "granularity"), [
    ("mlp", "fc1", "4:8"),  # 12 inputs
    ("conv_bn", "conv1", "2:4"),  # 3 input channels
    ("lstm", "lstm.weight_ih_l0", "4:8"),  # 6 inputs
])
def test_n_m_refuses_layers_not_divisible(model: str, layer: str, granularity: str) -> None:
    session = make_session(model)
    before = snapshot(session.model)
    with pytest.raises(PlanError, match=f"layer {layer!r}"):
        session.apply(Plan({layer: LayerPlan(granularity, "l1")}))  # type: ignore[arg-type]
    assert_bit_identical(snapshot(session.model), before)
    assert session.unsupported(layer, Granularity(granularity), "l1") is not None
    plan, skipped = session.uniform_plan(0.0, granularity, "l1")
    assert layer in skipped
    assert layer not in plan.layers


# -- global plans ----------------------------------------------------------------------------


def _pruned_weights(session: PruningSession, names: list[str]) -> int:
    return sum(int((~session.mask(n)).sum()) for n in names)


@pytest.mark.parametrize("target", [0.0, 0.2, 0.55, 0.9, 1.0])
@pytest.mark.parametrize(("model", "granularity", "criterion"), [
    ("mlp", "unstructured", "l1"), ("conv_bn", "filter", "l2"), ("residual", "channel", "l1"),
    ("grouped", "filter", "fpgm"),
])
def test_global_sparsity_hits_the_target(model: str, granularity: str, criterion: str,
                                         target: float) -> None:
    session = make_session(model)
    g = Granularity(granularity)
    session.apply(Plan(global_=GlobalPlan(g, criterion, sparsity=target)))
    names = session.layer_names
    total = sum(session.layer_by_name[n].params for n in names)
    largest = max(session.structures(n, g).size for n in names)
    assert abs(_pruned_weights(session, names) - target * total) < largest
    assert_weights_are_original_times_mask(session)
    # One ranking: nothing kept scores below anything pruned, across all layers.
    kept, pruned = [], []
    for name in names:
        scores = session.scores(name, g, criterion).scores
        dropped = ~session.structures(name, g).vectors(session.mask(name)).any(dim=1)
        kept.append(scores[~dropped])
        pruned.append(scores[dropped])
    kept_all, pruned_all = torch.cat(kept), torch.cat(pruned)
    if len(kept_all) and len(pruned_all):
        assert pruned_all.max() <= kept_all.min()


@pytest.mark.parametrize("cap", [0.0, 0.3, 0.5])
def test_global_respects_max_layer_sparsity(cap: float) -> None:
    session = make_session("conv_bn")
    session.apply(Plan(global_=GlobalPlan("filter", "l1", sparsity=0.9, max_layer_sparsity=cap)))
    for result in session.results():
        assert result.structures_pruned / result.structures <= cap + 1e-12
        assert result.sparsity <= cap + 1e-12
    # The cap binds: some layer is at it (0.9 of everything cannot fit under 0.5 each).
    assert max(r.structures_pruned / r.structures for r in session.results()) == pytest.approx(
        max(int(cap * r.structures) / r.structures for r in session.results())
    )


@pytest.mark.parametrize("cap", [0.0, 0.25, 0.5])
def test_global_threshold_respects_max_layer_sparsity(cap: float) -> None:
    session = make_session("conv_bn")
    # A threshold above every score would prune everything without the cap.
    plan = Plan(global_=GlobalPlan("filter", "l1", threshold=1e6, max_layer_sparsity=cap))
    session.apply(plan)
    for result in session.results():
        assert result.structures_pruned == int(cap * result.structures)
        assert result.sparsity <= cap + 1e-12


def test_global_threshold_is_applied_per_structure() -> None:
    session = make_session("mlp")
    session.apply(Plan(global_=GlobalPlan("filter", "l2", threshold=1.0)))
    for name in session.layer_names:
        scores = session.scores(name, Granularity.FILTER, "l2").scores
        assert session.result(name).structures_pruned == int((scores < 1.0).sum())


@pytest.mark.parametrize("list_it", [False, True], ids=["all-layers", "listed"])
def test_explicit_layer_entries_override_the_global_section(list_it: bool) -> None:
    session = make_session("mlp")
    members = ("fc1", "fc2", "fc3") if list_it else None
    explicit = LayerPlan("filter", "l2", sparsity=0.25)
    plan = Plan({"fc1": explicit},
                GlobalPlan("unstructured", "l1", sparsity=0.5, layers=members))
    session.apply(plan)
    fc1 = session.result("fc1")
    assert (fc1.granularity, fc1.criterion, fc1.structures_pruned) == ("filter", "l2", 4)
    # The global section covers the other layers only, and hits its target on them.
    rest = ["fc2", "fc3"]
    total = sum(session.layer_by_name[n].params for n in rest)
    assert _pruned_weights(session, rest) == round(0.5 * total)
    assert all(session.result(n).granularity == "unstructured" for n in rest)


# -- thresholds and extremes -----------------------------------------------------------------


@pytest.mark.parametrize(("model", "layer", "granularity", "criterion"), [
    ("conv_bn", "conv2", "filter", "l1"), ("mlp", "fc1", "unstructured", "l2"),
    ("grouped", "grouped", "channel", "fpgm"), ("lstm", "lstm.weight_ih_l0", "filter", "l2"),
])
def test_threshold_prunes_the_scores_strictly_below(model: str, layer: str, granularity: str,
                                                    criterion: str) -> None:
    session = make_session(model)
    g = Granularity(granularity)
    scores = session.scores(layer, g, criterion).scores
    ordered = scores.sort().values
    s3 = float(ordered[3])
    # Thresholds a hair above or below a score (closer than float32 can tell apart).
    for threshold in [0.0, s3, math.nextafter(s3, math.inf), math.nextafter(s3, -math.inf),
                      float(ordered[len(ordered) // 2]) + 1e-4, float(ordered[-1]) + 1.0]:
        session.apply(Plan({layer: LayerPlan(g, criterion, threshold=threshold)}))
        result = session.result(layer)
        expected = int((scores.double() < threshold).sum())  # exact comparison
        assert result.structures_pruned == expected
        assert pruned_structures_from_mask(session, layer, granularity) == expected
        assert result.threshold == threshold


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 1.0])
def test_reported_threshold_reproduces_a_sparsity_plan(sparsity: float) -> None:
    session = make_session("conv_bn")
    session.apply(Plan({"conv2": LayerPlan("filter", "l2", sparsity=sparsity)}))
    mask = session.mask("conv2").clone()
    threshold = session.result("conv2").threshold
    assert threshold is not None
    session.apply(Plan({"conv2": LayerPlan("filter", "l2", threshold=threshold)}))
    assert torch.equal(session.mask("conv2"), mask)


@pytest.mark.parametrize("model", ZOO.keys())
@pytest.mark.parametrize("granularity", ["unstructured", "filter"])
def test_full_sparsity_model_still_runs(model: str, granularity: str) -> None:
    session = make_session(model)
    dense_shape = run(session).shape
    session.apply(session.uniform_plan(1.0, granularity, "l1")[0])
    out = run(session)
    assert out.shape == dense_shape
    assert torch.isfinite(out).all()
    for result in session.results():
        assert result.sparsity == 1.0
        assert result.nonzero == 0
        assert result.structures_pruned == result.structures


# -- failures leave everything as it was -----------------------------------------------------


def test_failed_apply_leaves_weights_unchanged() -> None:
    session = make_session("conv_bn")
    first = Plan({"conv1": LayerPlan("filter", "l1", sparsity=0.5)})
    session.apply(first)
    before = snapshot(session.model)
    results = session.results()
    masks = {n: session.mask(n).clone() for n in session.layer_names}
    # conv1 and conv2 are fine and sort before 'fc', whose entry cannot be applied.
    bad = Plan({"conv1": LayerPlan("unstructured", "l1", sparsity=0.9),
                "conv2": LayerPlan("filter", "l2", sparsity=0.5),
                "fc": LayerPlan("filter", "bn_scale", sparsity=0.5)})
    with pytest.raises(PlanError, match="'fc'"):
        session.apply(bad)
    assert_bit_identical(snapshot(session.model), before)
    assert session.plan == first
    assert session.results() == results
    assert all(torch.equal(session.mask(n), masks[n]) for n in session.layer_names)
    with pytest.raises(PlanError, match="conv9"):
        session.apply(Plan({"conv2": LayerPlan(sparsity=0.5), "conv9": LayerPlan(sparsity=0.5)}))
    assert_bit_identical(snapshot(session.model), before)


@pytest.mark.parametrize("inf", [False, True])
def test_non_finite_weights_are_refused(inf: bool) -> None:
    with pytest.raises(ModelError, match="non-finite"):
        PruningSession(with_nan_weights(inf=inf), ZOO["mlp"].example())


@pytest.mark.parametrize("criterion", ["taylor", "apoz", "activation"])
def test_data_criteria_without_calibration_raise(criterion: str) -> None:
    session = make_session("mlp")
    before = snapshot(session.model)
    with pytest.raises(DataError, match="calibration"):
        session.apply(Plan({"fc1": LayerPlan("filter", criterion, sparsity=0.5)}))
    assert_bit_identical(snapshot(session.model), before)


def test_data_criteria_gather_statistics_on_the_original_weights() -> None:
    a = make_session("mlp", calibration=True)
    b = make_session("mlp", calibration=True)
    a.apply(Plan({"fc1": LayerPlan("unstructured", "l1", sparsity=0.9)}))
    a_scores = a.scores("fc2", Granularity.FILTER, "taylor").scores
    b_scores = b.scores("fc2", Granularity.FILTER, "taylor").scores
    assert torch.equal(a_scores, b_scores)
    assert a.result("fc1").sparsity == pytest.approx(0.9, abs=0.01)  # still pruned afterwards


# -- property: any valid plan ----------------------------------------------------------------

_PROPERTY_SESSIONS: dict[str, PruningSession] = {}


def _property_session(name: str) -> PruningSession:
    if name not in _PROPERTY_SESSIONS:
        _PROPERTY_SESSIONS[name] = make_session(name)
    return _PROPERTY_SESSIONS[name]


@st.composite
def model_and_plan(draw: st.DrawFn) -> tuple[str, Plan]:
    model = draw(st.sampled_from(["conv_bn", "grouped", "mlp", "residual", "decoder"]))
    names = _property_session(model).layer_names
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    layers = {}
    for name in chosen:
        granularity = draw(st.sampled_from(["filter", "channel", "unstructured"]))
        criteria = ["l1", "l2", "random"] + ([] if granularity == "unstructured" else ["fpgm"])
        criterion = draw(st.sampled_from(criteria))
        sparsity = draw(st.floats(min_value=0.0, max_value=1.0))
        layers[name] = LayerPlan(granularity, criterion, sparsity=sparsity)  # type: ignore[arg-type]
    return model, Plan(layers)


@given(model_and_plan())
def test_any_valid_plan_leaves_a_running_model_with_honest_counts(case: tuple[str, Plan]) -> None:
    model, plan = case
    session = _property_session(model)
    session.apply(plan)
    results = session.results()
    out = run(session)
    assert torch.isfinite(out).all()
    assert_weights_are_original_times_mask(session)
    params = dict(session.model.named_parameters())
    for result in results:
        weight = params[session.layer_by_name[result.name].weight]
        numel = weight.numel()
        assert result.nonzero == int(torch.count_nonzero(weight))
        assert result.sparsity == 1 - int(torch.count_nonzero(weight)) / numel
        entry = plan.layers.get(result.name)
        if entry is None:
            assert result.structures_pruned == 0
            assert session.mask(result.name).all()
            continue
        assert result.granularity == entry.granularity.value
        counted = pruned_structures_from_mask(session, result.name, entry.granularity.value)
        assert result.structures_pruned == counted
        assert entry.sparsity is not None
        assert counted == min(result.structures, round(entry.sparsity * result.structures))
