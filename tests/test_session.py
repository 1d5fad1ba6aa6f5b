"""PruningSession: the invariants of applying plans to a model, checked against references."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from fixtures.models import ZOO, assert_bit_identical, snapshot, with_nan_weights
from fixtures.sessions import session_for
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
from pruneviz.core.coupling import Group, Member


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


# -- coupled groups, seen from the outside ---------------------------------------------------
#
# A group's "units" are its root channels; `member.idxs[i]` is the member's own channel that
# belongs to unit `member.root[i]`. Out members are pruned by rows (filters), in members by
# columns (input channels), norm members and out members' biases by entries.

SIDE = {"out": Granularity.FILTER, "in": Granularity.CHANNEL}


def lowest(scores: Tensor, k: int) -> set[int]:
    """The ids of the `k` lowest scores (ties: the earlier id first)."""
    return set(torch.argsort(scores, stable=True)[:k].tolist())


def keep_one(sparsity: float, size: int) -> int:
    """Units a coupled group loses at `sparsity`: round(s * size), but never all of them."""
    return min(round(sparsity * size), size - 1)


def group_layers_note(session: PruningSession, group: Group) -> list[str]:
    """The notes saying that `group` kept one unit instead of losing them all."""
    notes = []
    for note in session.notes:
        names, _, rest = note.partition(": ")
        if set(names.split(", ")) == set(group.layers) and f"kept 1 of {group.size}" in rest:
            notes.append(note)
    return notes


def _channel_tensors(session: PruningSession, member: Member) -> list[str]:
    """The 1-D per-channel tensors a member's pruned channels zero: bias, norm affine."""
    params = dict(session.model.named_parameters())
    if member.kind == "out" and member.layer:
        bias = session.layer_by_name[member.layer].bias
        return [bias] if bias else []
    if member.kind == "norm":
        return [f"{member.module}.{p}" for p in ("weight", "bias")
                if f"{member.module}.{p}" in params]
    return []


def _alive_channels(session: PruningSession, member: Member) -> list[Tensor]:
    """For each tensor of a member, which of its channels still hold anything."""
    params = dict(session.model.named_parameters())
    flags = []
    if member.kind in SIDE and member.layer:
        mask = session.mask(member.layer)
        if mask.any():  # (a weight its own decision emptied tells nothing about channels)
            structures = session.structures(member.layer, SIDE[member.kind])
            flags.append(structures.vectors(mask).any(dim=1))
    for name in _channel_tensors(session, member):
        assert (session.original(name) != 0).all(), name  # else zero tells nothing
        flags.append(params[name].detach() != 0)
    return flags


def coupled_units_pruned(session: PruningSession, group: Group) -> set[int]:
    """The units of `group` the session prunes — and every member's weights and channel
    tensors are zero on all of them (one decision masks every member consistently). A
    member may show more zero channels than that (a grouped conv whose whole group of
    inputs went with another group's units), never fewer."""
    decided = set(session.pruned_units().get(group.id, []))
    seen: dict[str, set[int]] = {}
    for member in group.members:
        for i, alive in enumerate(_alive_channels(session, member)):
            kept = {u for idx, u in zip(member.idxs, member.root, strict=True) if alive[idx]}
            seen[f"{member.module}/{member.kind}/{i}"] = set(member.root) - kept
    assert seen, group
    assert all(decided <= units for units in seen.values()), (decided, seen)
    return decided


def member_keep(session: PruningSession, member: Member, pruned_units: set[int]) -> Tensor:
    """Keep-vector over a member's own channels when `pruned_units` of its group go."""
    if member.kind in SIDE:
        assert member.layer is not None
        size = session.structures(member.layer, SIDE[member.kind]).count
    else:
        size = session.original(_channel_tensors(session, member)[0]).numel()
    keep = torch.ones(size, dtype=torch.bool)
    for idx, unit in zip(member.idxs, member.root, strict=True):
        if unit in pruned_units:
            keep[idx] = False
    return keep


def unit_weights(session: PruningSession, group: Group, side: Granularity) -> list[int]:
    """Weights of each unit on one side: its filters (filter) or input columns (channel)."""
    kind = "out" if side is Granularity.FILTER else "in"
    weights = [0] * group.size
    for member in group.members:
        if member.kind == kind and member.layer:
            size = session.structures(member.layer, side).size
            for _, unit in set(zip(member.idxs, member.root, strict=True)):
                weights[unit] += size
    return weights


def touching(name: str, decided: dict[int, Group]) -> list[Group]:
    """The decided groups that mask part of `name`'s weight (its rows or its columns)."""
    return [g for g in decided.values()
            if any(m.layer == name and m.kind in SIDE for m in g.members)]


def member_side(group: Group, name: str) -> Granularity:
    """How `group` cuts layer `name`: its filters or its input channels."""
    # An LSTM's weight_hh is cut on both sides by its own hidden units: rows count.
    kinds = {m.kind for m in group.members if m.layer == name and m.kind in SIDE}
    kind = "out" if "out" in kinds else kinds.pop()
    return SIDE[kind]


def scope(session: PruningSession, granularity: Granularity, criterion: str) -> list[str]:
    """The layers that can be pruned at `granularity` (not the output layer's filters)."""
    return [n for n in session.layer_names
            if session.unsupported(n, granularity, criterion) is None]


# -- weight == original * mask, on every zoo model ------------------------------------------

@pytest.mark.parametrize("model", ZOO.keys())
@pytest.mark.parametrize("granularity", ["unstructured", "filter", "channel"])
def test_weight_is_original_times_mask(model: str, granularity: str,
                                       request: pytest.FixtureRequest) -> None:
    session = session_for(model)
    originals = snapshot(ZOO[model].build())
    g = Granularity(granularity)
    plan, skipped = session.uniform_plan(0.4, granularity, "l2")
    if g is Granularity.FILTER:
        # Only the output layer's filters are refused: they are the model's outputs.
        assert set(skipped) == session.output_layers
        assert all("model's output" in reason for reason in skipped.values())
    else:
        assert not skipped
    session.apply(plan)
    assert_weights_are_original_times_mask(session)

    # Every coupled group an entry decides loses the same lowest-scoring units in all of
    # its members: round(0.4 * size) of them, but never all.
    decided = {}
    for name in plan.layers:
        group = session.group_of(name, g)
        if group is not None:
            decided[group.id] = group
    assert bool(decided) == (g.structured and bool(session.groups))
    for group in decided.values():
        units = coupled_units_pruned(session, group)
        assert len(units) == keep_one(0.4, group.size)
        assert units == lowest(session.group_scores(group.id, "l2", g).scores, len(units))

    params = dict(session.model.named_parameters())
    for layer in session.layers:
        assert torch.equal(session.original(layer.weight), originals[layer.weight])
        result = session.result(layer.name)
        assert result.nonzero == int(torch.count_nonzero(params[layer.weight]))
        groups = touching(layer.name, decided)
        if layer.name in plan.layers and session.group_of(layer.name, g) is None:
            # Decided alone, in its own structures.
            count = session.structures(layer.name, g).count
            assert (result.granularity, result.structures) == (granularity, count)
            assert result.structures_pruned == round(0.4 * count)
            assert pruned_structures_from_mask(session, layer.name, granularity) == round(
                0.4 * count)
        elif len(groups) == 1:
            # Decided by its group (its own entry, or a coupled layer's): counted in units,
            # as filters or channels by its own side of the group.
            assert result.granularity == member_side(groups[0], layer.name).value
            assert result.structures == groups[0].size
            assert result.structures_pruned == keep_one(0.4, groups[0].size)
        elif not groups:
            assert layer.name not in plan.layers
            assert result.structures_pruned == 0
            assert session.mask(layer.name).all()
        # A layer in two decided groups: test_result_of_a_layer_in_two_groups_...
    assert torch.isfinite(run(session)).all()


def test_coupled_with_lists_the_whole_group_itself_first() -> None:
    for model in ZOO:
        session = session_for(model)
        for name in session.layer_names:
            group = session.group_of(name)
            coupled = session.coupled_with(name)
            assert coupled[0] == name
            assert len(set(coupled)) == len(coupled)
            if group is None:
                assert coupled == [name]
            else:
                assert set(coupled) == set(group.layers)
    session = session_for("residual")
    # The residual add couples the stem's filters, the block's last conv's filters, and
    # both readers of the sum; the block's first conv's filters only feed the second.
    coupled = session.coupled_with("conv2")
    assert coupled[0] == "conv2"
    assert sorted(coupled[1:]) == ["conv1", "fc", "stem"]
    assert sorted(session.coupled_with("conv1")) == ["conv1", "conv2"]
    assert session.coupled_with("fc") == ["fc"]


# -- against torch.nn.utils.prune -------------------------------------------------------------


@pytest.mark.parametrize("amount", [0.1, 0.3, 0.5, 0.77, 1.0])
@pytest.mark.parametrize(("model", "layer"), [("mlp", "fc1"), ("conv_bn", "conv2"),
                                              ("conv1d", "conv2"), ("lstm", "lstm.weight_hh_l0")])
def test_unstructured_l1_matches_torch_prune(model: str, layer: str, amount: float) -> None:
    session = session_for(model)
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
    session = session_for(model)
    info = session.layer_by_name[layer]
    module = dict(session.model.named_modules())[info.module_name]
    for granularity, n, dim in [("filter", 2, info.out_dim), ("channel", 1, info.in_dim)]:
        g = Granularity(granularity)
        session.apply(Plan({layer: LayerPlan(granularity, f"l{n}", sparsity=amount)}))
        count = session.structures(layer, g).count
        pruned = round(amount * count)
        group = session.group_of(layer, g)
        if group is not None:
            # The layer is alone on its side of its group, one channel per unit: the
            # group's scores are exactly its own, so torch picks the same structures —
            # except that a group never loses all of its units.
            side = [m for m in group.members if m.kind == ("out" if n == 2 else "in")]
            assert [m.layer for m in side] == [layer]
            assert sorted(side[0].idxs) == list(range(count)) == list(range(group.size))
            assert torch.equal(session.group_scores(group.id, f"l{n}", g).scores,
                               session.scores(layer, g, f"l{n}").scores)
            pruned = keep_one(amount, group.size)
            assert bool(group_layers_note(session, group)) == (pruned < round(amount * count))
            assert len(coupled_units_pruned(session, group)) == pruned
        reference = copy.deepcopy(module)
        with torch.no_grad():
            reference.weight.copy_(session.original(info.weight))
        prune.ln_structured(reference, "weight", amount=pruned, n=n, dim=dim)
        assert torch.equal(session.mask(layer), reference.weight_mask.bool()), granularity


def test_group_scores_normalise_each_member_when_several_share_a_side() -> None:
    session = session_for("residual")
    group = session.group_of("conv2")
    assert group is not None
    assert group is session.group_of("stem")
    parts = []
    for name in ["stem", "conv2"]:  # both produce the channels of the residual sum
        own = session.scores(name, Granularity.FILTER, "l1").scores.double()
        parts.append(own / own.mean())
    expected = torch.stack(parts).mean(0).float()
    torch.testing.assert_close(session.group_scores(group.id, "l1").scores, expected)
    # Its readers' side: conv1's and fc's input columns.
    parts = []
    for name in ["conv1", "fc"]:
        own = session.scores(name, Granularity.CHANNEL, "l1").scores.double()
        parts.append(own / own.mean())
    expected = torch.stack(parts).mean(0).float()
    torch.testing.assert_close(
        session.group_scores(group.id, "l1", Granularity.CHANNEL).scores, expected)


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
    session = session_for("conv_bn")
    plan = Plan({"conv1": LayerPlan("filter", "l1", sparsity=0.5),
                 "conv2": LayerPlan("unstructured", "l2", sparsity=0.7)})
    session.apply(plan)
    first = snapshot(session.model)
    session.apply(Plan({"fc": LayerPlan("channel", "l1", sparsity=0.5)}))
    session.apply(plan)
    assert_bit_identical(snapshot(session.model), first)


# -- what a masked filter feeds ---------------------------------------------------------------


def test_masked_filters_zero_bias_and_batchnorm_so_their_output_is_zero() -> None:
    session = session_for("conv_bn")
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
    session = session_for("mlp")
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
    session = session_for("conv_bn")
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


@pytest.mark.parametrize("layer", ["stem", "conv2"])
def test_masked_filter_groups_zero_whole_channels_across_a_residual_add(layer: str) -> None:
    session = session_for("residual")
    group = session.group_of(layer)
    assert group is not None
    assert set(group.out_layers) == {"stem", "conv2"}  # both branches of the add
    assert set(group.in_layers) == {"conv1", "fc"}  # both readers of the sum
    session.apply(Plan({layer: LayerPlan("filter", "l1", sparsity=0.5)}))
    units = coupled_units_pruned(session, group)
    assert len(units) == group.size // 2 == 4
    assert units == lowest(session.group_scores(group.id, "l1").scores, 4)

    # The same channel indices, in every member: producers' rows and biases, the norms'
    # affine parameters, readers' columns — and nothing else.
    model = session.model
    params = dict(model.named_parameters())
    channels: dict[str, set[int]] = {}
    for member in group.members:
        dropped = {idx for idx, unit in zip(member.idxs, member.root, strict=True)
                   if unit in units}
        channels[f"{member.module}/{member.kind}"] = dropped
        if member.kind in SIDE:
            assert member.layer is not None
            info = session.layer_by_name[member.layer]
            weight = params[info.weight].detach()
            dim = info.out_dim if member.kind == "out" else info.in_dim
            original = session.original(info.weight)
            for c in range(weight.shape[dim]):
                expected = original.select(dim, c) * (c not in dropped)
                assert torch.equal(weight.select(dim, c), expected), (member.module, c)
        for name in _channel_tensors(session, member):
            keep = torch.tensor([c not in dropped for c in range(params[name].numel())])
            assert torch.equal(params[name].detach(), session.original(name) * keep), name
    assert len({frozenset(c) for c in channels.values()}) == 1, channels
    pruned = torch.tensor(sorted(next(iter(channels.values()))))
    # conv1's filters, and bn1, are another group's: untouched.
    assert torch.equal(model.bn1.weight, session.original("bn1.weight"))

    # So the residual sum is zero on those channels, whatever the input.
    x = ZOO["residual"].example(batch=5, seed=11)
    with torch.no_grad():
        h = model.relu(model.stem_bn(model.stem(x)))
        branch = model.bn2(model.conv2(model.relu(model.bn1(model.conv1(h)))))
        out = model.relu(h + branch)
    assert (h[:, pruned] == 0).all()
    assert (branch[:, pruned] == 0).all()
    assert (out[:, pruned] == 0).all()
    assert torch.isfinite(run(session)).all()


def test_two_entries_for_one_group_must_agree() -> None:
    session = session_for("residual")
    first = Plan({"conv1": LayerPlan("filter", "l1", sparsity=0.5)})
    session.apply(first)
    before = snapshot(session.model)
    results = session.results()
    # stem and conv2 produce the two branches of one residual sum: one decision for both.
    for plan in [
        Plan({"stem": LayerPlan("filter", "l1", sparsity=0.25),
              "conv2": LayerPlan("filter", "l1", sparsity=0.5)}),
        Plan({"stem": LayerPlan("filter", "l1", sparsity=0.5),
              "conv2": LayerPlan("filter", "l2", sparsity=0.5)}),
        # conv1's input channels are the same channels, read from the other side.
        Plan({"stem": LayerPlan("filter", "l1", sparsity=0.5),
              "conv1": LayerPlan("channel", "l1", sparsity=0.25)}),
    ]:
        with pytest.raises(PlanError, match="coupled") as info:
            session.apply(plan)
        assert "share channels" in str(info.value)
        assert_bit_identical(snapshot(session.model), before)
        assert session.plan == first
        assert session.results() == results
    # Entries that agree are one decision, given twice.
    both = Plan({"stem": LayerPlan("filter", "l1", sparsity=0.5),
                 "conv2": LayerPlan("filter", "l1", sparsity=0.5)})
    session.apply(both)
    twice = snapshot(session.model)
    session.apply(Plan({"conv2": LayerPlan("filter", "l1", sparsity=0.5)}))
    assert_bit_identical(snapshot(session.model), twice)


# -- N:M -----------------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["2:4", "4:8"])
@pytest.mark.parametrize(("model", "layers"), [("mlp", ["fc2", "fc3"]),
                                               ("conv_bn", ["conv2", "fc"]),
                                               ("lstm", ["lstm.weight_hh_l0", "fc"])])
def test_n_m_keeps_at_most_n_of_every_m(model: str, layers: list[str], granularity: str) -> None:
    session = session_for(model)
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
    session = session_for(model)
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


def ranked_units(
    session: PruningSession, g: Granularity, criterion: str, names: list[str]
) -> list[tuple[Group | None, Tensor, list[int], set[int]]]:
    """What a global plan ranks: the units of each coupled group (once) and the structures
    of each uncoupled layer — with their scores, weights, and which ones are gone."""
    units: list[tuple[Group | None, Tensor, list[int], set[int]]] = []
    seen: set[int] = set()
    for name in names:
        group = session.group_of(name, g) if g.structured else None
        if group is None:
            structures = session.structures(name, g)
            dropped = ~structures.vectors(session.mask(name)).any(dim=1)
            units.append((None, session.scores(name, g, criterion).scores,
                          [structures.size] * structures.count,
                          set(torch.nonzero(dropped).flatten().tolist())))
        elif group.id not in seen:
            seen.add(group.id)
            units.append((group, session.group_scores(group.id, criterion, g).scores,
                          unit_weights(session, group, g), coupled_units_pruned(session, group)))
    return units


@pytest.mark.parametrize("target", [0.0, 0.2, 0.55, 0.9, 1.0])
@pytest.mark.parametrize(("model", "granularity", "criterion"), [
    ("mlp", "unstructured", "l1"), ("conv_bn", "filter", "l2"), ("residual", "channel", "l1"),
    ("grouped", "filter", "fpgm"),
])
def test_global_sparsity_hits_the_target(model: str, granularity: str, criterion: str,
                                         target: float, request: pytest.FixtureRequest) -> None:
    session = session_for(model)
    g = Granularity(granularity)
    names = scope(session, g, criterion)
    layers = None if names == session.layer_names else tuple(names)
    session.apply(Plan(global_=GlobalPlan(g, criterion, sparsity=target, layers=layers)))
    assert_weights_are_original_times_mask(session)
    units = ranked_units(session, g, criterion, names)
    # Every weight of the ranked layers is in exactly one unit, on the ranked side.
    total = sum(session.layer_by_name[n].params for n in names)
    assert sum(sum(weights) for _, _, weights, _ in units) == total
    accounted = sum(weights[u] for _, _, weights, gone in units for u in gone)
    largest = max(max(weights) for _, _, weights, _ in units)
    clipped = [group for group, *_ in units if group and group_layers_note(session, group)]
    if target == 1.0:
        # Everything goes, but each coupled group keeps one unit (and says so).
        for group, scores, _, gone in units:
            assert len(gone) == (len(scores) if group is None else group.size - 1)
        assert len(clipped) == sum(group is not None for group, *_ in units)
    else:
        assert abs(accounted - target * total) <= largest
    # Structured: readers' columns (filter) or producers' rows (channel) go too.
    measured = _pruned_weights(session, session.layer_names)
    assert measured == accounted if not g.structured else measured >= accounted
    # One ranking: nothing kept scores below anything pruned, across all groups and
    # layers (a group's last unit, kept because it is the last, aside). Structured scores
    # are ranked relative to their own layer's or group's mean (different scales).
    kept, pruned = [], []
    for group, raw_scores, _, gone in units:
        scores = raw_scores / float(raw_scores.mean()) if g.structured else raw_scores
        dropped = torch.tensor([i in gone for i in range(len(scores))], dtype=torch.bool)
        if group not in clipped:
            kept.append(scores[~dropped])
        pruned.append(scores[dropped])
    if kept and pruned:
        kept_all, pruned_all = torch.cat(kept), torch.cat(pruned)
        if len(kept_all) and len(pruned_all):
            assert pruned_all.max() <= kept_all.min()


def test_global_filter_plans_count_the_readers_columns_as_extra() -> None:
    session = session_for("conv_bn")
    names = scope(session, Granularity.FILTER, "l2")
    assert names == ["conv1", "conv2"]
    session.apply(Plan(global_=GlobalPlan("filter", "l2", sparsity=0.5, layers=tuple(names))))
    conv1 = session.group_of("conv1")
    conv2 = session.group_of("conv2")
    assert conv1 is not None
    assert conv2 is not None
    a, b = len(coupled_units_pruned(session, conv1)), len(coupled_units_pruned(session, conv2))
    total = sum(session.layer_by_name[n].params for n in names)
    # The target counts filters: conv1's 27 weights each, conv2's 72 each.
    assert abs(a * 27 + b * 72 - 0.5 * total) <= 72
    # conv2 also loses the input columns of conv1's pruned filters, fc those of conv2's.
    assert session.result("conv2").nonzero == (16 - b) * (8 - a) * 9
    assert session.result("fc").nonzero == 5 * (16 - b)
    assert _pruned_weights(session, names) / total >= 0.5


@pytest.mark.parametrize("cap", [0.0, 0.3, 0.5])
def test_global_respects_max_layer_sparsity(cap: float) -> None:
    session = session_for("conv_bn")
    names = scope(session, Granularity.FILTER, "l1")
    session.apply(Plan(global_=GlobalPlan("filter", "l1", sparsity=0.9, layers=tuple(names),
                                          max_layer_sparsity=cap)))
    units = ranked_units(session, Granularity.FILTER, "l1", names)
    assert [group is not None for group, *_ in units] == [True, True]
    for group, _, _, gone in units:
        assert group is not None
        # The cap counts units, and binds everywhere: 0.9 of everything cannot fit under it.
        assert len(gone) == math.floor(cap * group.size + 1e-9)
        assert not group_layers_note(session, group)
    # conv2 loses filters to its own group and input columns to conv1's: its weight
    # sparsity is 1 - (1 - cap)^2 or so, past the cap — the cap is on units.
    a = len(coupled_units_pruned(session, session.groups[session.group_of("conv1").id]))
    b = len(coupled_units_pruned(session, session.groups[session.group_of("conv2").id]))
    conv2 = session.result("conv2")
    assert conv2.nonzero == (16 - b) * (8 - a) * 9
    assert conv2.sparsity == 1 - conv2.nonzero / conv2.params
    conv1 = session.result("conv1")
    assert (conv1.structures, conv1.structures_pruned) == (8, a)
    assert conv1.structures_pruned / conv1.structures <= cap + 1e-12


@pytest.mark.parametrize("cap", [None, 0.0, 0.25, 0.5])
def test_global_threshold_respects_max_layer_sparsity(cap: float | None) -> None:
    session = session_for("conv_bn")
    names = scope(session, Granularity.FILTER, "l1")
    # A threshold above every score would prune everything without the cap.
    plan = Plan(global_=GlobalPlan("filter", "l1", threshold=1e6, layers=tuple(names),
                                   max_layer_sparsity=cap))
    session.apply(plan)
    for name in names:
        group = session.group_of(name)
        assert group is not None
        gone = coupled_units_pruned(session, group)
        if cap is None:
            assert len(gone) == group.size - 1  # never all of a group
            assert group_layers_note(session, group)
        else:
            assert len(gone) == int(cap * group.size)
            assert not group_layers_note(session, group)
    conv1 = session.result("conv1")  # in one group only: its filters'
    assert conv1.structures_pruned == len(coupled_units_pruned(session, session.group_of("conv1")))
    assert torch.isfinite(run(session)).all()


def test_global_threshold_is_applied_per_structure() -> None:
    session = session_for("mlp")
    names = scope(session, Granularity.FILTER, "l2")
    assert names == ["fc1", "fc2"]  # fc3's filters are the model's outputs
    session.apply(Plan(global_=GlobalPlan("filter", "l2", threshold=1.0, layers=tuple(names))))
    for name in names:
        group = session.group_of(name)
        assert group is not None
        assert group.out_layers == [name]
        scores = session.scores(name, Granularity.FILTER, "l2").scores
        # Alone on its side, the group's scores are the layer's own.
        assert torch.equal(session.group_scores(group.id, "l2").scores, scores)
        below = {i for i, s in enumerate(scores.tolist()) if s < 1.0}
        gone = coupled_units_pruned(session, group)
        if len(below) < group.size:
            assert gone == below
        else:
            assert len(gone) == group.size - 1
            assert gone < below
        assert session.result(name).structures_pruned == len(gone)


@pytest.mark.parametrize("list_it", [False, True], ids=["all-layers", "listed"])
def test_explicit_layer_entries_override_the_global_section(list_it: bool) -> None:
    session = session_for("mlp")
    members = ("fc1", "fc2", "fc3") if list_it else None
    explicit = LayerPlan("filter", "l2", sparsity=0.25)
    plan = Plan({"fc1": explicit},
                GlobalPlan("unstructured", "l1", sparsity=0.5, layers=members))
    session.apply(plan)
    fc1 = session.result("fc1")
    assert (fc1.granularity, fc1.criterion, fc1.structures, fc1.structures_pruned) == (
        "filter", "l2", 16, 4)
    # The global section decides the other layers only, and hits its target with their
    # own decisions...
    rest = ["fc2", "fc3"]
    total = sum(session.layer_by_name[n].params for n in rest)
    assert all(session.result(n).granularity == "unstructured" for n in rest)
    assert sum(session.result(n).structures_pruned for n in rest) == round(0.5 * total)
    # ...while fc1's pruned filters still take fc2's input columns with them.
    alone = session_for("mlp")
    alone.apply(Plan(global_=GlobalPlan("unstructured", "l1", sparsity=0.5, layers=("fc2", "fc3"))))
    group = session.group_of("fc1")
    assert group is not None
    reader = next(m for m in group.members if m.layer == "fc2" and m.kind == "in")
    columns = member_keep(session, reader, coupled_units_pruned(session, group))
    assert int((~columns).sum()) == 4
    assert torch.equal(session.mask("fc2"), alone.mask("fc2") & columns)
    assert torch.equal(session.mask("fc3"), alone.mask("fc3"))
    params = dict(session.model.named_parameters())
    assert session.result("fc2").nonzero == int(torch.count_nonzero(params["fc2.weight"]))


# -- thresholds and extremes -----------------------------------------------------------------


@pytest.mark.parametrize(("model", "layer", "granularity", "criterion"), [
    ("conv_bn", "conv2", "filter", "l1"), ("mlp", "fc1", "unstructured", "l2"),
    ("grouped", "grouped", "channel", "fpgm"), ("lstm", "lstm.weight_ih_l0", "unstructured", "l2"),
    ("attention", "attn.out_proj", "filter", "l2"),  # out_proj's rows: decided per layer
])
def test_threshold_prunes_the_scores_strictly_below(model: str, layer: str, granularity: str,
                                                    criterion: str) -> None:
    session = session_for(model)
    g = Granularity(granularity)
    scores = session.scores(layer, g, criterion).scores
    group = session.group_of(layer, g)
    if group is not None:  # conv2's filters: alone on their side of the group
        assert torch.equal(session.group_scores(group.id, criterion, g).scores, scores)
    ordered = scores.sort().values
    s3 = float(ordered[3])
    # Thresholds a hair above or below a score (closer than float32 can tell apart).
    for threshold in [0.0, s3, math.nextafter(s3, math.inf), math.nextafter(s3, -math.inf),
                      float(ordered[len(ordered) // 2]) + 1e-4, float(ordered[-1]) + 1.0]:
        session.apply(Plan({layer: LayerPlan(g, criterion, threshold=threshold)}))
        result = session.result(layer)
        expected = int((scores.double() < threshold).sum())  # exact comparison
        if group is not None:
            # Above every score, a coupled group still keeps one unit, and says so.
            assert bool(group_layers_note(session, group)) == (expected >= group.size)
            expected = min(expected, group.size - 1)
            assert len(coupled_units_pruned(session, group)) == expected
        assert result.structures_pruned == expected
        assert pruned_structures_from_mask(session, layer, granularity) == expected
        assert result.threshold == threshold


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 1.0])
def test_reported_threshold_reproduces_a_sparsity_plan(sparsity: float) -> None:
    session = session_for("conv_bn")
    session.apply(Plan({"conv2": LayerPlan("filter", "l2", sparsity=sparsity)}))
    mask = session.mask("conv2").clone()
    threshold = session.result("conv2").threshold
    assert threshold is not None
    session.apply(Plan({"conv2": LayerPlan("filter", "l2", threshold=threshold)}))
    assert torch.equal(session.mask("conv2"), mask)


@pytest.mark.parametrize("model", ZOO.keys())
@pytest.mark.parametrize("granularity", ["unstructured", "filter"])
def test_full_sparsity_model_still_runs(model: str, granularity: str) -> None:
    session = session_for(model)
    dense_shape = run(session).shape
    g = Granularity(granularity)
    plan, skipped = session.uniform_plan(1.0, granularity, "l1")
    session.apply(plan)
    out = run(session)
    assert out.shape == dense_shape
    assert torch.isfinite(out).all()
    params = dict(session.model.named_parameters())
    for result in session.results():
        weight = params[session.layer_by_name[result.name].weight]
        assert result.nonzero == int(torch.count_nonzero(weight))
    if not g.structured:
        assert not skipped
        assert not session.notes
        for result in session.results():
            assert result.sparsity == 1.0
            assert result.nonzero == 0
            assert result.structures_pruned == result.structures
        return
    assert set(skipped) == session.output_layers
    # Filters decided alone (an LSTM's gate rows, attention projections) all go; every
    # coupled group keeps exactly one unit — a channel through which the model still runs —
    # and the notes say so.
    decided = {}
    for name in plan.layers:
        group = session.group_of(name, g)
        if group is None:
            result = session.result(name)
            assert (result.sparsity, result.nonzero) == (1.0, 0)
            assert result.structures_pruned == result.structures
        else:
            decided[group.id] = group
    assert bool(decided) == bool(session.groups)
    for group in decided.values():
        assert len(coupled_units_pruned(session, group)) == group.size - 1
        assert group_layers_note(session, group)
        for member in group.members:
            # (attention's out_proj: its rows decided alone, its columns by the heads)
            own = member.layer in plan.layers and session.group_of(member.layer, g) != group
            if member.kind in SIDE and member.layer and not own:
                alive = session.structures(member.layer, SIDE[member.kind]).vectors(
                    session.mask(member.layer)).any(dim=1)
                # The channels of the one kept unit (several, for a Linear viewed as
                # a conv's channels), and no more.
                assert int(alive.sum()) == len(member.idxs) // group.size
                result = session.result(member.layer)
                assert result.nonzero > 0
                assert result.sparsity < 1.0
    for note in session.notes:
        assert any(note in group_layers_note(session, gr) for gr in decided.values()), note


# -- failures leave everything as it was -----------------------------------------------------


def test_failed_apply_leaves_weights_unchanged() -> None:
    session = session_for("conv_bn")
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
    session = session_for("mlp")
    before = snapshot(session.model)
    with pytest.raises(DataError, match="calibration"):
        session.apply(Plan({"fc1": LayerPlan("filter", criterion, sparsity=0.5)}))
    assert_bit_identical(snapshot(session.model), before)


def test_data_criteria_gather_statistics_on_the_original_weights() -> None:
    a = session_for("mlp", calibration=True)
    b = session_for("mlp", calibration=True)
    a.apply(Plan({"fc1": LayerPlan("unstructured", "l1", sparsity=0.9)}))
    a_scores = a.scores("fc2", Granularity.FILTER, "taylor").scores
    b_scores = b.scores("fc2", Granularity.FILTER, "taylor").scores
    assert torch.equal(a_scores, b_scores)
    assert a.result("fc1").sparsity == pytest.approx(0.9, abs=0.01)  # still pruned afterwards


# -- property: any valid plan ----------------------------------------------------------------

_PROPERTY_SESSIONS: dict[str, PruningSession] = {}


def _property_session(name: str) -> PruningSession:
    if name not in _PROPERTY_SESSIONS:
        _PROPERTY_SESSIONS[name] = session_for(name)
    return _PROPERTY_SESSIONS[name]


@st.composite
def model_and_plan(draw: st.DrawFn) -> tuple[str, Plan]:
    model = draw(st.sampled_from(["conv_bn", "grouped", "mlp", "residual", "decoder"]))
    session = _property_session(model)
    names = session.layer_names
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    layers: dict[str, LayerPlan] = {}
    by_group: dict[int, LayerPlan] = {}
    for name in chosen:
        granularity = draw(st.sampled_from(["filter", "channel", "unstructured"]))
        criteria = ["l1", "l2", "random"] + ([] if granularity == "unstructured" else ["fpgm"])
        criterion = draw(st.sampled_from(criteria))
        sparsity = draw(st.floats(min_value=0.0, max_value=1.0))
        entry = LayerPlan(granularity, criterion, sparsity=sparsity)  # type: ignore[arg-type]
        g = Granularity(granularity)
        if session.unsupported(name, g, criterion) is not None:
            entry = LayerPlan("unstructured", "l1", sparsity=sparsity)  # the output's filters
        group = session.group_of(name, entry.granularity)
        if group is not None:
            # Entries for one group must agree: give a second layer the same entry, or,
            # from the group's other side, an unstructured one.
            earlier = by_group.setdefault(group.id, entry)
            if earlier.granularity is entry.granularity:
                entry = earlier
            else:
                entry = LayerPlan("unstructured", criterion if criterion != "fpgm" else "l2",
                                  sparsity=sparsity)
        layers[name] = entry
    return model, Plan(layers)


def expected_masks(
    session: PruningSession, plan: Plan
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[int, tuple[Group, int, bool]]]:
    """The masks the design promises for a plan of per-layer sparsity entries: every
    weight keeps what its own (uncoupled) entry and every group decision touching it keep;
    every bias / norm entry what its group keeps. Also each decided group, with how many
    units it loses and whether the keep-one rule cut that down."""
    weight_keep = {n: torch.ones(session.layer_by_name[n].shape, dtype=torch.bool)
                   for n in session.layer_names}
    channel_keep: dict[str, Tensor] = {}
    decided: dict[int, tuple[Group, int, bool]] = {}
    for name, entry in plan.layers.items():
        g = entry.granularity
        assert entry.sparsity is not None
        group = session.group_of(name, g)
        if group is None:
            count = session.structures(name, g).count
            k = min(count, round(entry.sparsity * count))
            keep = torch.ones(count, dtype=torch.bool)
            keep[list(lowest(session.scores(name, g, entry.criterion).scores, k))] = False
            weight_keep[name] &= session.structures(name, g).expand(keep)
            continue
        k = keep_one(entry.sparsity, group.size)
        units = lowest(session.group_scores(group.id, entry.criterion, g).scores, k)
        decided[group.id] = (group, k, k < round(entry.sparsity * group.size))
        for member in group.members:
            keep = member_keep(session, member, units) if (
                member.kind not in SIDE or member.layer) else None
            if member.kind in SIDE and member.layer:
                assert keep is not None
                weight_keep[member.layer] &= session.structures(
                    member.layer, SIDE[member.kind]).expand(keep)
            for tensor in _channel_tensors(session, member):
                assert keep is not None
                channel_keep[tensor] = channel_keep.get(tensor, keep) & keep
    return weight_keep, channel_keep, decided


@given(model_and_plan())
def test_any_valid_plan_leaves_a_running_model_with_honest_counts(case: tuple[str, Plan]) -> None:
    model, plan = case
    session = _property_session(model)
    session.apply(plan)
    results = session.results()
    out = run(session)
    assert torch.isfinite(out).all()
    assert_weights_are_original_times_mask(session)
    weight_keep, channel_keep, decided = expected_masks(session, plan)
    params = dict(session.model.named_parameters())
    for name, keep in weight_keep.items():
        assert torch.equal(session.mask(name), keep), name
    for tensor, keep in channel_keep.items():
        assert torch.equal(params[tensor].detach(), session.original(tensor) * keep), tensor
    for group in session.groups:  # bias and norm entries no decision touches: original
        for member in group.members:
            for tensor in _channel_tensors(session, member):
                if tensor not in channel_keep:
                    assert torch.equal(params[tensor], session.original(tensor)), tensor
    for group, _, clipped in decided.values():
        assert bool(group_layers_note(session, group)) == clipped
    for result in results:
        weight = params[session.layer_by_name[result.name].weight]
        numel = weight.numel()
        assert result.nonzero == int(torch.count_nonzero(weight))
        assert result.sparsity == 1 - int(torch.count_nonzero(weight)) / numel
        entry = plan.layers.get(result.name)
        groups = [gr for gr, _, _ in decided.values()
                  if any(m.layer == result.name and m.kind in SIDE for m in gr.members)]
        if entry is not None and session.group_of(result.name, entry.granularity) is None:
            # Decided alone: counted in its own structures.
            assert entry.sparsity is not None
            assert result.granularity == entry.granularity.value
            count = session.structures(result.name, entry.granularity).count
            assert result.structures == count
            assert result.structures_pruned == min(count, round(entry.sparsity * count))
        elif len(groups) == 1:
            # Decided by its one group (from its entry or a coupled layer's): in units.
            group, k, _ = decided[groups[0].id]
            assert result.structures == group.size
            assert result.structures_pruned == k
            assert result.granularity == member_side(group, result.name).value
        elif not groups:
            assert entry is None
            assert result.structures_pruned == 0
            assert session.mask(result.name).all()
        # Two groups: test_result_of_a_layer_in_two_groups_describes_its_own_entry.


_FULL_WRITES: dict[str, PruningSession] = {}


@given(st.lists(model_and_plan(), min_size=2, max_size=6))
def test_moves_rewrite_only_what_changed_and_match_whole_writes(
        cases: list[tuple[str, Plan]]) -> None:
    """A session moving from plan to plan rewrites changed rows and columns only; its
    weights equal, bit for bit, those of a session writing every tensor whole."""
    from pruneviz.core import writes

    for model, plan in cases:
        moving = _property_session(model)
        moving.apply(plan)
        if model not in _FULL_WRITES:
            _FULL_WRITES[model] = session_for(model)
        whole = _FULL_WRITES[model]
        original = writes.SLICE_SHARE
        writes.SLICE_SHARE = 0.0  # every write whole
        try:
            whole.apply(plan)
        finally:
            writes.SLICE_SHARE = original
        assert_bit_identical(snapshot(moving.model), snapshot(whole.model))


# -- known bugs ------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "plan", "layer", "side"), [
    ("mlp", {"fc2": LayerPlan("channel", "l1", sparsity=0.5),
             "fc3": LayerPlan("channel", "l1", sparsity=0.25)}, "fc2", Granularity.CHANNEL),
    ("residual", {"conv1": LayerPlan("filter", "l2", sparsity=0.25),
                  "conv2": LayerPlan("filter", "l2", sparsity=0.5)}, "conv1",
     Granularity.FILTER),
])
def test_result_of_a_layer_in_two_groups_describes_its_own_entry(
    model: str, plan: dict[str, LayerPlan], layer: str, side: Granularity
) -> None:
    session = session_for(model)
    session.apply(Plan(plan))
    entry = plan[layer]
    group = session.group_of(layer, side)
    assert group is not None
    assert entry.sparsity is not None
    gone = coupled_units_pruned(session, group)
    assert len(gone) == keep_one(entry.sparsity, group.size)
    result = session.result(layer)
    assert result.granularity == entry.granularity.value
    assert result.threshold == session.group_scores(group.id, entry.criterion, side).sorted[
        len(gone)].item()
    assert (result.structures, result.structures_pruned) == (group.size, len(gone))


def test_n_m_counts_survive_a_coupled_group() -> None:
    session = session_for("conv_bn")
    session.apply(Plan({"conv2": LayerPlan("2:4", "l1")}))
    alone = session.result("conv2")
    assert alone.structures_pruned == alone.params // 2
    # conv1's filters are conv2's input channels: its group masks conv2's columns too.
    session.apply(Plan({"conv2": LayerPlan("2:4", "l1"),
                        "conv1": LayerPlan("filter", "l1", sparsity=0.5)}))
    result = session.result("conv2")
    params = dict(session.model.named_parameters())
    assert result.nonzero == int(torch.count_nonzero(params["conv2.weight"]))
    assert result.granularity == "2:4"
    assert result.structures == result.params
    assert result.structures_pruned == alone.structures_pruned


def test_depthwise_channel_entries_prune_the_coupled_channels() -> None:
    session = session_for("grouped")
    group = session.group_of("depthwise")
    assert group is not None
    assert set(group.layers) == {"grouped", "depthwise", "pointwise"}
    # Input channel c of a depthwise conv is its filter c: the same coupled channel.
    assert session.group_of("depthwise", Granularity.CHANNEL) is group
    session.apply(Plan({"depthwise": LayerPlan("channel", "l1", sparsity=0.5)}))
    units = coupled_units_pruned(session, group)  # rows, bias, producer, reader agree
    # grouped (8 filters in 2 conv groups) loses position p of both: unit p is channels
    # p and 4 + p, so the conv groups stay equal.
    assert group.size == 4
    assert len(units) == 2
    channels = sorted(u + 4 * block for u in units for block in range(2))
    dw = session.model.depthwise
    assert (dw.bias[channels] == 0).all()
    assert int((dw.bias != 0).sum()) == 4


# -- applied(): a plan for the length of a block ------------------------------------------------
def test_applied_restores_the_previous_plan_and_weights_after_an_error() -> None:
    session = session_for("conv_bn")
    before_plan = session.stamp(Plan({session.layer_names[0]: LayerPlan(
        Granularity.FILTER, "l1", sparsity=0.25)}))
    session.apply(before_plan)
    weights = snapshot(session.model)
    inside, _ = session.uniform_plan(0.7)

    def fail_inside() -> None:
        with session.applied(inside):
            assert session.plan is inside
            assert not torch.equal(session.model.state_dict()[session.layers[1].weight],
                                   weights[session.layers[1].weight])  # other weights inside
            raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        fail_inside()
    assert session.plan is before_plan
    assert_bit_identical(snapshot(session.model), weights)
    assert_weights_are_original_times_mask(session)


def test_applied_refusing_a_plan_changes_nothing() -> None:
    session = session_for("conv_bn")
    plan, _ = session.uniform_plan(0.5)
    session.apply(plan)
    weights = snapshot(session.model)
    refused = Plan({"no_such_layer": LayerPlan(Granularity.UNSTRUCTURED, "l1", sparsity=0.5)})

    def enter() -> None:
        with session.applied(refused):
            pytest.fail("the block must not run when the plan is refused")

    with pytest.raises(PlanError):
        enter()
    assert session.plan is plan
    assert_bit_identical(snapshot(session.model), weights)


def test_background_passes_stop_before_the_original_model_is_shown() -> None:
    """Calibration statistics and block ranking run the original weights on the session's
    own model: a background measurement of the current (pruned) model is stopped first
    (`on_change`, as before any write), then the pruned weights are back, bit for bit."""
    entry = ZOO["residual"]
    session = PruningSession(entry.build(), entry.example(), calibration=entry.data())
    session.apply(session.uniform_plan(0.5, Granularity.FILTER)[0])
    pruned = snapshot(session.model)
    seen: list[dict[str, Tensor]] = []
    session.on_change.append(lambda: seen.append(snapshot(session.model)))

    session.scores(session.layer_names[0], Granularity.FILTER, "taylor")
    assert len(seen) == 1
    assert_bit_identical(seen[0], pruned)  # stopped while the model was still the pruned one
    assert_bit_identical(snapshot(session.model), pruned)

    seen.clear()
    session.blocks()
    assert len(seen) == 1
    assert_bit_identical(seen[0], pruned)
    assert_bit_identical(snapshot(session.model), pruned)
