"""slim(): removing the pruned channel units leaves a smaller model computing what the masked
model computes, built the way Torch-Pruning builds it.

Every check compares two things computed independently: the slimmed model's outputs with
the masked model's; its shapes and kept weights with what the session's masks and group
decisions say; its whole state with Torch-Pruning's own result for the same channels.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import cache

import pytest
import torch
import torch_pruning as tp
from fixtures.models import ZOO, ZooEntry, assert_bit_identical, snapshot
from fixtures.sessions import bench_for, session_for
from fixtures.unseen import UNSEEN
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from pruneviz.core.attention import SlimAttention
from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.core.session import PruningSession
from pruneviz.core.slim import SlimResult, _check_grouped, max_abs_diff, slim
from pruneviz.data.samples import load_sample, sample_names
from pruneviz.errors import ModelError
from pruneviz.workflows.workbench import open_workbench

TOLERANCE = 1e-5  # max |slimmed - masked| / max |masked|
FILTER, CHANNEL = Granularity.FILTER, Granularity.CHANNEL
# Zoo models whose coupled groups slim() removes. The others: see
# test_every_zoo_model_with_groups_is_covered.
SLIMMABLE_ZOO = ("mlp", "conv_bn", "grouped", "residual", "conv1d", "lstm", "gru", "attention")
FIXTURES: dict[str, ZooEntry] = {**UNSEEN, **{n: ZOO[n] for n in SLIMMABLE_ZOO}}


def fixture_session(name: str) -> PruningSession:
    return session_for(name, calibration=True, batch=4)


def fixture_batch(name: str, batch: int = 16) -> Tensor:
    return {**UNSEEN, **ZOO}[name].example(batch, seed=7)


def relative_diff(masked: nn.Module, slimmed: nn.Module, x: Tensor) -> float:
    """max |slimmed - masked| over max |masked| on `x` (shapes must agree)."""
    with torch.inference_mode():
        scale = float(masked(x).abs().max())
    assert scale > 0
    return max_abs_diff(masked, slimmed, x) / scale


def grouped_plan(session: PruningSession, sparsity: float, granularity: Granularity,
                 criterion: str = "l1") -> Plan:
    """The same entry on every layer whose channels at `granularity` belong to a group.

    (A uniform channel plan would also hold first layers, whose inputs are the model's
    own and belong to no group: slim() rightly refuses those, see test_slim_refuses_...)
    """
    entry = LayerPlan(granularity, criterion, sparsity=sparsity)
    return session.stamp(Plan({
        n: entry for n in session.layer_names
        if (group := session.group_of(n, granularity)) is not None and not group.unsupported
        and not (granularity is FILTER and n in session.output_layers)
    }))


def removed_channels(session: PruningSession) -> dict[tuple[str, str], set[int]]:
    """(module, "out"/"in"/"norm") -> the module's own channel indices the decisions remove."""
    removed: dict[tuple[str, str], set[int]] = {}
    for gid, units in session.pruned_units().items():
        for m in session.groups[gid].members:
            idxs = {i for i, r in zip(m.idxs, m.root, strict=True) if r in set(units)}
            if idxs:
                removed.setdefault((m.module, m.kind), set()).update(idxs)
    return removed


def expected_params(session: PruningSession) -> int:
    """The slimmed model's parameter count, computed from the group decisions alone."""
    removed = removed_channels(session)

    def cut(name: str, kind: str) -> int:
        return len(removed.get((name, kind), ()))

    total = 0
    for name, module in session.model.named_modules():
        own = list(module.parameters(recurse=False))
        if isinstance(module, nn.Linear):
            out, inp = module.out_features - cut(name, "out"), module.in_features - cut(name, "in")
            total += out * inp + (out if module.bias is not None else 0)
        elif isinstance(module, nn.modules.conv._ConvNd):
            kernel = module.weight[0, 0].numel()
            groups = module.groups
            out, inp = module.out_channels - cut(name, "out"), module.in_channels - cut(name, "in")
            if groups > 1 and groups == module.in_channels:  # depthwise: channel = filter
                out = inp = groups = module.out_channels - cut(name, "out")
            total += out * (inp // groups) * kernel + (out if module.bias is not None else 0)
        elif isinstance(module, nn.RNNBase):  # hidden units: a row per gate, and a column
            gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[type(module).__name__]
            hidden = module.hidden_size - cut(name, "rnn")
            inputs = module.input_size - cut(name, "rnn_in")
            total += gates * hidden * (inputs + hidden + (2 if module.bias else 0))
        elif isinstance(module, nn.MultiheadAttention):  # heads: d rows of q, k and v each
            # (out_proj, a Linear, is counted on its own)
            rows = cut(name, "out") // (3 if module._qkv_same_embed_dim else 1)
            inner = module.embed_dim - rows
            total += inner * (module.embed_dim + module.kdim + module.vdim)
            total += 3 * inner if module.in_proj_bias is not None else 0
        else:  # norms lose the entries of their removed channels, other modules nothing
            total += sum(p.numel() - cut(name, "norm") for p in own)
    return total


def assert_structure(session: PruningSession, result: SlimResult) -> None:
    """Shapes, kept weights and counts of the slimmed model are what the session decided."""
    slimmed = dict(result.model.named_modules())
    removed = removed_channels(session)
    masked = session.model
    for layer in session.layers:
        module = slimmed[layer.module_name]
        if not isinstance(module, nn.Linear | nn.modules.conv._ConvNd):
            continue
        original = masked.get_submodule(layer.module_name)
        weight = original.weight.detach()
        mask = session.mask(layer.name)
        # Kept structures: those with a weight the mask keeps (a pruned unit's are all off).
        keep_out = mask.movedim(layer.out_dim, 0).flatten(1).any(1).nonzero().view(-1)
        expected = weight.index_select(layer.out_dim, keep_out)
        if layer.groups == 1:
            keep_in = mask.movedim(layer.in_dim, 0).flatten(1).any(1).nonzero().view(-1)
            expected = expected.index_select(layer.in_dim, keep_in)
        assert module.weight.shape == expected.shape, layer.name
        assert torch.equal(module.weight.detach(), expected), layer.name
        if original.bias is not None:
            assert torch.equal(module.bias.detach(), original.bias.detach()[keep_out]), layer.name
        out_cut = len(removed.get((layer.module_name, "out"), ()))
        assert result.removed.get(layer.name, 0) == out_cut, layer.name
        assert module.weight.shape[layer.out_dim] == weight.shape[layer.out_dim] - out_cut
    for name, module in slimmed.items():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            kept = module.num_features
            assert module.weight.shape == module.running_mean.shape == (kept,), name
    params = sum(p.numel() for p in result.model.parameters())
    assert result.params == params == expected_params(session)
    if session.pruned_units():
        assert params < sum(p.numel() for p in masked.parameters())


def assert_slims_exactly(session: PruningSession, x: Tensor) -> SlimResult:
    result = slim(session)
    assert relative_diff(session.model, result.model, x) <= TOLERANCE
    assert_structure(session, result)
    return result


# -- the shipped samples ------------------------------------------------------------------
@pytest.mark.parametrize("sparsity", [0.3, 0.6])
@pytest.mark.parametrize("name", sample_names())
def test_uniform_filter_plan_on_every_sample_slims_to_the_same_function(
    name: str, sparsity: float
) -> None:
    bench = bench_for(name)
    session = bench.session
    plan, skipped = session.uniform_plan(sparsity, "filter", "l1")
    assert set(skipped) == session.output_layers  # the classifier / the last decoder conv
    session.apply(plan)
    # Every sample's filters are coupled, the LSTM's hidden units included.
    assert not session.uncoupled_structured()
    assert session.pruned_units()
    assert_slims_exactly(session, bench.eval_data.x[:64])


# -- unseen fixtures and the zoo ----------------------------------------------------------
@pytest.mark.parametrize("sparsity", [0.3, 0.6])
@pytest.mark.parametrize("granularity", [FILTER, CHANNEL])
@pytest.mark.parametrize("name", list(FIXTURES))
def test_grouped_plan_on_fixture_models_slims_to_the_same_function(
    name: str, granularity: Granularity, sparsity: float
) -> None:
    session = fixture_session(name)
    plan = grouped_plan(session, sparsity, granularity)
    assert plan.layers
    session.apply(plan)
    assert session.pruned_units()
    result = assert_slims_exactly(session, fixture_batch(name))
    with torch.inference_mode():
        assert result.model(fixture_batch(name, 3)).shape[0] == 3


def test_every_zoo_model_with_groups_is_covered() -> None:
    with_groups = {n for n in ZOO if fixture_session(n).groups}
    # decoder has its own test below (its forward has a channel count written into it).
    assert with_groups == {*SLIMMABLE_ZOO, "decoder"}


def test_concatenated_branches_lose_their_own_halves_of_the_reader() -> None:
    # fuse reads cat([branch_a (16), depthwise (8)]) and cat_bn normalises both halves:
    # cutting one group's indices must not shift the other's.
    session = fixture_session("unseen")
    session.apply(session.stamp(Plan({
        "branch_a": LayerPlan(FILTER, "l1", sparsity=0.5),
        "depthwise": LayerPlan(FILTER, "l2", sparsity=0.5),
    })))
    result = assert_slims_exactly(session, fixture_batch("unseen"))
    model: nn.Module = result.model
    assert (model.branch_a.out_channels, model.depthwise.out_channels) == (8, 4)
    assert model.fuse.in_channels == model.cat_bn.num_features == 12
    assert model.depthwise.groups == model.depthwise.in_channels == 4


def test_linear_viewed_as_channels_is_cut_in_whole_channels() -> None:
    session = fixture_session("linear_to_conv")
    group = session.group_of("fc")
    assert group is not None
    assert group.size == 16  # 64 features = 16 channels of 2x2
    session.apply(session.stamp(Plan({"fc": LayerPlan(FILTER, "l2", sparsity=0.3)})))
    result = assert_slims_exactly(session, fixture_batch("linear_to_conv"))
    assert result.removed["fc"] == 4 * round(0.3 * 16)
    assert result.model.conv.in_channels == 16 - round(0.3 * 16)


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.75, 1.0])
def test_grouped_conv_loses_the_same_positions_in_every_conv_group(sparsity: float) -> None:
    # grouped: 8 filters in 2 conv groups of 4, read one to one by the depthwise conv.
    # Filter p and filter 4 + p are one unit: each conv group loses the same count.
    session = fixture_session("grouped")
    group = session.group_of("grouped")
    assert group is not None
    assert group.size == 4
    session.apply(grouped_plan(session, sparsity, FILTER))
    result = assert_slims_exactly(session, fixture_batch("grouped"))
    kept = 4 - min(3, round(sparsity * 4))
    assert result.model.grouped.out_channels == 2 * kept
    assert result.model.grouped.groups == 2
    assert result.model.depthwise.groups == result.model.depthwise.in_channels == 2 * kept


def test_uneven_grouped_conv_cut_is_refused_with_the_layer_named() -> None:
    # Coupled units never make one, but the check stays as a guard: build the cut by hand.
    conv = nn.Conv2d(4, 8, 3, groups=2)
    with pytest.raises(ModelError, match="'g', a convolution with 2 groups"):
        _check_grouped("g", conv, "out", {0, 1, 2})


def test_hard_coded_view_is_refused() -> None:
    # Decoder.forward does x.view(-1, 8, 2, 2): with fewer channels it would mix samples.
    session = fixture_session("decoder")
    session.apply(grouped_plan(session, 0.5, FILTER))
    assert session.pruned_units()
    with pytest.raises(ModelError, match=r"view\(-1, 8, 2, 2\)"):
        slim(session)


# -- random structured plans --------------------------------------------------------------
@cache
def unseen_candidates() -> list[tuple[str, Granularity]]:
    """(layer, granularity) pairs of the unseen model that a group decides."""
    session = fixture_session("unseen")
    return [(n, g) for n in session.layer_names for g in (FILTER, CHANNEL)
            if session.group_of(n, g) is not None
            and not (g is FILTER and n in session.output_layers)]


@st.composite
def structured_plans(draw: st.DrawFn) -> dict[str, LayerPlan]:
    """A random subset of the unseen model's layers, each filter or channel, any
    criterion and sparsity; one entry per coupled group (two entries for one group
    must agree, which random entries would not)."""
    picked = draw(st.lists(st.sampled_from(unseen_candidates()), unique=True, max_size=8))
    entries = {}
    for name, granularity in picked:
        criterion = draw(st.sampled_from(["l1", "l2", "fpgm", "random"]))
        sparsity = draw(st.floats(0.0, 1.0))
        entries[(name, granularity)] = LayerPlan(granularity, criterion, sparsity=sparsity)
    return {name: entry for (name, _), entry in entries.items()}


def _one_entry_per_group(session: PruningSession, entries: dict[str, LayerPlan]) -> Plan:
    seen: set[int] = set()
    kept = {}
    for name, entry in entries.items():
        group = session.group_of(name, entry.granularity)
        assert group is not None
        if group.id not in seen:
            seen.add(group.id)
            kept[name] = entry
    return session.stamp(Plan(kept))


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(entries=structured_plans())
def test_any_structured_plan_on_the_unseen_model_slims_to_the_same_function(
    entries: dict[str, LayerPlan],
) -> None:
    session = fixture_session("unseen")
    session.apply(_one_entry_per_group(session, entries))
    result = assert_slims_exactly(session, fixture_batch("unseen"))
    with torch.inference_mode():
        assert result.model(fixture_batch("unseen", 3)).shape == (3, 10)


# -- never empty --------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(UNSEEN))
def test_full_filter_plan_keeps_one_unit_per_group(name: str) -> None:
    session = fixture_session(name)
    session.apply(grouped_plan(session, 1.0, FILTER))
    pruned = session.pruned_units()
    groups = [g for g in session.groups if not g.unsupported]
    assert set(pruned) == {g.id for g in groups}
    for group in groups:
        assert len(pruned[group.id]) == group.size - 1
        said = {n for n in session.notes if n.startswith(
            f"{', '.join(group.layers)}: kept 1 of {group.size} {group.unit}s")}
        assert len(said) == 1, (group.layers, session.notes)
    assert len(set(session.notes)) == len(groups)
    result = assert_slims_exactly(session, fixture_batch(name))
    for group in groups:
        for m in group.members:
            if m.kind == "out" and m.layer:  # one unit left: its channels (1, or 4 for fc)
                module = result.model.get_submodule(m.module)
                if isinstance(module, SlimAttention):
                    assert module.num_heads == 1
                    continue
                kept = module.weight.shape[session.layer_by_name[m.layer].out_dim]
                assert kept == len(m.idxs) // group.size
    with torch.inference_mode():
        assert torch.isfinite(result.model(fixture_batch(name, 3))).all()


# -- against Torch-Pruning ----------------------------------------------------------------
def torch_pruning_slim(pristine: nn.Module, session: PruningSession) -> nn.Module:
    """Torch-Pruning's own result for the channels the session pruned: for each group,
    DependencyGraph.get_pruning_group on its root conv with our indices, then prune()."""
    model = copy.deepcopy(pristine).eval()
    example = session.example_input
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example[:1])
    for gid, units in session.pruned_units().items():
        group = session.groups[gid]
        root = session.layer_by_name[group.root].module_name
        member = next(m for m in group.members if m.module == root and m.kind == "out")
        idxs = sorted({i for i, r in zip(member.idxs, member.root, strict=True)
                       if r in set(units)})
        tp_group = graph.get_pruning_group(model.get_submodule(root),
                                           tp.prune_conv_out_channels, idxs=idxs)
        tp_group.prune()
    return model


def _state_shapes(model: nn.Module) -> Iterator[tuple[str, tuple[int, ...]]]:
    for name, tensor in model.state_dict().items():
        yield name, tuple(tensor.shape)


def test_digits_resnet_matches_torch_pruning_for_the_same_channels() -> None:
    bench = open_workbench("sample:digits_resnet")
    session = bench.session
    plan, _ = session.uniform_plan(0.5, "filter", "l2")
    session.apply(plan)
    ours = slim(session).model
    theirs = torch_pruning_slim(load_sample("digits_resnet").model, session)
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() for p in theirs.parameters())
    assert dict(_state_shapes(ours)) == dict(_state_shapes(theirs))
    for (name, a), (_, b) in zip(dict(ours.named_modules()).items(),
                                 dict(theirs.named_modules()).items(), strict=True):
        if isinstance(a, nn.modules.conv._ConvNd):
            assert (a.in_channels, a.out_channels, a.groups) == (
                b.in_channels, b.out_channels, b.groups), name
    # Same channels removed from the pristine model: the same weights, bit for bit.
    assert_bit_identical(snapshot(ours), snapshot(theirs))


# -- refusals and side effects -------------------------------------------------------------
class _PackedGRU(nn.Module):
    """A GRU fed a packed sequence (not traced as one layer, so its units are not
    coupled), read by a Linear (a GRU whose hidden units are the model's output is an
    output layer, whose filters a plan refuses)."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(6, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        lengths = [x.shape[1]] * x.shape[0]
        _, h_n = self.gru(nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True))
        return self.fc(h_n[-1])


def test_slim_refuses_a_structured_decision_outside_any_group() -> None:
    # The GRU's rows can be masked one matrix at a time, but with a packed sequence its
    # hidden units are not traced, so they are not coupled.
    session = PruningSession(_PackedGRU(), torch.randn(2, 5, 6))
    assert session.group_of("gru.weight_ih_l0") is None
    session.apply(session.stamp(Plan({
        "gru.weight_ih_l0": LayerPlan(FILTER, "l1", sparsity=0.5)})))
    with pytest.raises(ModelError, match=r"'gru\.weight_ih_l0' \(GRU\)"):
        slim(session)


def test_lstm_hidden_units_slim_to_the_same_function() -> None:
    bench = open_workbench("sample:digits_lstm")
    session = bench.session
    session.apply(session.stamp(Plan({
        "lstm.weight_hh_l0": LayerPlan(FILTER, "l2", sparsity=0.5)})))
    # weight_ih and weight_hh lose the same units' gate rows; weight_hh and fc the columns.
    assert session.coupled_with("lstm.weight_hh_l0")[1:] == ["lstm.weight_ih_l0", "fc"]
    result = assert_slims_exactly(session, bench.eval_data.x[:64])
    lstm = result.model.lstm
    assert lstm.hidden_size == 32
    assert tuple(lstm.weight_ih_l0.shape) == (128, 8)
    assert tuple(lstm.weight_hh_l0.shape) == (128, 32)
    assert result.model.fc.in_features == 32


def test_attention_heads_slim_to_the_same_function() -> None:
    # encoder.self_attn: 4 heads of 4 in one in_proj; cross: 2 heads of 8, separate q/k/v
    # projections with kdim = vdim = 10. Both become SlimAttention with fewer heads.
    session = fixture_session("transformer")
    assert session.coupled_with("encoder.self_attn") == [
        "encoder.self_attn", "encoder.self_attn.out_proj"]
    assert session.coupled_with("cross.k_proj_weight")[1:] == [
        "cross.q_proj_weight", "cross.v_proj_weight", "cross.out_proj"]
    session.apply(session.stamp(Plan({
        "encoder.self_attn": LayerPlan(FILTER, "l2", sparsity=0.5),
        "cross.out_proj": LayerPlan(CHANNEL, "l1", sparsity=0.5),
        "encoder.linear1": LayerPlan(FILTER, "l1", sparsity=0.25),
    })))
    result = assert_slims_exactly(session, fixture_batch("transformer"))
    encoder_attn = result.model.encoder.self_attn
    assert isinstance(encoder_attn, SlimAttention)
    assert (encoder_attn.num_heads, encoder_attn.head_dim) == (2, 4)
    assert len(encoder_attn.kept_heads) == 2
    assert isinstance(result.model.cross, SlimAttention)
    assert (result.model.cross.num_heads, result.model.cross.kdim) == (1, 10)
    assert result.model.encoder.linear1.out_features == 24
    assert result.removed["encoder.self_attn"] == 3 * 2 * 4  # q, k, v rows of two heads


def test_empty_plan_removes_nothing() -> None:
    session = fixture_session("unseen")
    session.apply(grouped_plan(session, 0.0, FILTER))
    result = assert_slims_exactly(session, fixture_batch("unseen"))
    assert result.removed == {}
    assert result.params == sum(p.numel() for p in session.model.parameters())


@pytest.mark.parametrize("ref", ["sample:digits_resnet", "unseen"])
def test_session_model_is_unchanged_by_slim(ref: str) -> None:
    session = open_workbench(ref).session if ref.startswith("sample:") else fixture_session(ref)
    plan, _ = session.uniform_plan(0.5, "filter", "l1")
    session.apply(plan)
    before = snapshot(session.model)
    training = session.model.training
    result = slim(session)
    assert result.model is not session.model
    assert_bit_identical(before, snapshot(session.model))
    assert session.model.training == training
