"""Importance criteria: shapes, reference values, what each can score, and the registry."""

from __future__ import annotations

import threading

import pytest
import torch
from fixtures import sessions
from fixtures.models import ZOO, ZooEntry
from torch import Tensor, nn

import pruneviz.core.criteria as criteria
from pruneviz import (
    DataError,
    Granularity,
    LayerPlan,
    Plan,
    PlanError,
    PruningSession,
    ScoreInputs,
    criterion_names,
    register_criterion,
    simhash_buckets,
)
from pruneviz.core.criteria import get_criterion, lsh_scores
from pruneviz.data.tasks import Task

BUILTIN = ["l1", "l2", "random", "taylor", "apoz", "activation", "bn_scale", "fpgm", "lsh"]
UNSTRUCTURED_OK = {"l1", "l2", "random", "taylor"}
ACTIVATION = {"apoz", "activation"}

_SESSIONS: dict[str, PruningSession] = {}


def session_for(name: str) -> PruningSession:
    """One session per zoo model (with calibration data), shared by the tests here."""
    if name not in _SESSIONS:
        _SESSIONS[name] = sessions.session_for(name, calibration=True)
    return _SESSIONS[name]


def test_builtin_criteria_are_registered() -> None:
    assert criterion_names()[: len(BUILTIN)] == BUILTIN
    for name in BUILTIN:
        spec = get_criterion(name)
        assert spec.unstructured == (name in UNSTRUCTURED_OK)
        assert spec.needs_data == (name in {"taylor", "apoz", "activation"})
        assert spec.description


def _expected_refusal(entry: ZooEntry, name: str, layer_type: str, bn: str | None,
                      criterion: str, granularity: Granularity) -> bool:
    if criterion == "bn_scale":
        return granularity is not Granularity.FILTER or bn is None
    if criterion in ACTIVATION:
        # Recurrent matrices have no per-channel input/output to observe, and attention
        # applies its projections functionally, so their hooks never fire.
        return layer_type in {"LSTM", "GRU"} or (entry.name == "attention" and name != "fc")
    return False


@pytest.mark.parametrize("granularity", [Granularity.FILTER, Granularity.CHANNEL], ids=str)
@pytest.mark.parametrize("criterion", BUILTIN)
@pytest.mark.parametrize("model", ZOO.keys())
def test_structured_scores_are_finite_one_per_structure(
    model: str, criterion: str, granularity: Granularity
) -> None:
    session = session_for(model)
    for layer in session.layers:
        count = session.structures(layer.name, granularity).count
        expected_count = (
            layer.out_structures if granularity is Granularity.FILTER else layer.in_structures
        )
        assert count == expected_count
        if _expected_refusal(ZOO[model], layer.name, layer.type, layer.bn, criterion, granularity):
            with pytest.raises(PlanError, match=repr(layer.name)):
                session.scores(layer.name, granularity, criterion)
            continue
        scores = session.scores(layer.name, granularity, criterion).scores
        assert scores.shape == (count,)
        assert scores.dtype == torch.float32
        assert torch.isfinite(scores).all()


@pytest.mark.parametrize("criterion", BUILTIN)
@pytest.mark.parametrize("model", ["conv_bn", "lstm"])
def test_unstructured_only_for_weight_level_criteria(model: str, criterion: str) -> None:
    session = session_for(model)
    for layer in session.layers:
        if criterion in UNSTRUCTURED_OK:
            scores = session.scores(layer.name, Granularity.UNSTRUCTURED, criterion).scores
            assert scores.shape == (layer.params,)
            assert torch.isfinite(scores).all()
        else:
            with pytest.raises(PlanError) as info:
                session.scores(layer.name, Granularity.UNSTRUCTURED, criterion)
            message = str(info.value)
            assert repr(layer.name) in message
            for usable in UNSTRUCTURED_OK:
                assert usable in message


def test_l1_per_weight_is_the_magnitude() -> None:
    session = session_for("conv_bn")
    for layer in session.layers:
        weight = session.original(layer.weight)
        scores = session.scores(layer.name, Granularity.UNSTRUCTURED, "l1").scores
        assert torch.equal(scores, weight.abs().reshape(-1))


def test_l2_and_l1_per_filter_and_channel_are_norms() -> None:
    for model in ["conv_bn", "mlp", "conv1d", "lstm"]:
        session = session_for(model)
        for layer in session.layers:
            w = session.original(layer.weight).double()
            filters = w.movedim(layer.out_dim, 0).reshape(w.shape[layer.out_dim], -1)
            channels = w.movedim(layer.in_dim, 0).reshape(w.shape[layer.in_dim], -1)
            l2f = session.scores(layer.name, Granularity.FILTER, "l2").scores
            l1c = session.scores(layer.name, Granularity.CHANNEL, "l1").scores
            torch.testing.assert_close(l2f.double(), filters.norm(dim=1), rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(l1c.double(), channels.abs().sum(dim=1), rtol=1e-6,
                                       atol=1e-7)


def test_transposed_conv_filters_are_output_channels() -> None:
    session = session_for("decoder")
    w = session.original("deconv1.weight")  # (in=8, out=4, 2, 2)
    l2f = session.scores("deconv1", Granularity.FILTER, "l2").scores
    torch.testing.assert_close(l2f, w.transpose(0, 1).reshape(4, -1).norm(dim=1))


def test_grouped_channel_scores_cover_every_input_channel() -> None:
    session = session_for("grouped")
    w = session.original("grouped.weight")  # (8, 2, 3, 3), groups=2
    l1c = session.scores("grouped", Granularity.CHANNEL, "l1").scores
    expected = torch.stack([
        w[0:4, 0].abs().sum(), w[0:4, 1].abs().sum(), w[4:8, 0].abs().sum(), w[4:8, 1].abs().sum()
    ])
    torch.testing.assert_close(l1c, expected)


def test_bn_scale_is_abs_gamma_and_refuses_without_bn() -> None:
    session = session_for("conv_bn")
    gamma = session.model.bn2.weight.detach()
    assert (gamma < 0).any()  # the fixture randomises gamma, so abs() matters
    scores = session.scores("conv2", Granularity.FILTER, "bn_scale").scores
    assert torch.equal(scores, gamma.abs())
    with pytest.raises(PlanError, match="not followed by a BatchNorm"):
        session.scores("fc", Granularity.FILTER, "bn_scale")
    with pytest.raises(PlanError, match="granularity 'filter'"):
        session.scores("conv2", Granularity.CHANNEL, "bn_scale")


def _conv_with_filters(filters: Tensor) -> tuple[nn.Module, Tensor]:
    count, in_ch = filters.shape[0], filters.shape[1]
    conv = nn.Conv2d(in_ch, count, filters.shape[2], bias=False)
    with torch.no_grad():
        conv.weight.copy_(filters)
    # A head after the conv: its filters are features, not the model's outputs.
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(count, 3))
    return model, torch.randn(2, in_ch, 5, 5)


def test_fpgm_filter_at_the_geometric_median_scores_lowest() -> None:
    generator = torch.Generator().manual_seed(3)
    centre = torch.randn(2, 3, 3, generator=generator)
    offsets = torch.randn(5, 2, 3, 3, generator=generator)
    # Pairs placed symmetrically around `centre`, which is therefore their geometric median.
    filters = torch.cat([centre[None], centre + offsets, centre - offsets])
    perm = torch.randperm(len(filters), generator=generator)
    filters = filters[perm]
    median_index = int((perm == 0).nonzero())
    model, example = _conv_with_filters(filters)
    session = PruningSession(model, example)
    scores = session.scores("0", Granularity.FILTER, "fpgm").scores
    assert int(scores.argmin()) == median_index
    flat = filters.reshape(len(filters), -1).double()
    reference = torch.cdist(flat, flat).sum(dim=1)
    torch.testing.assert_close(scores.double(), reference, rtol=1e-5, atol=1e-6)


def test_apoz_channel_that_never_fires_scores_zero() -> None:
    entry = ZOO["mlp"]
    model = entry.build()
    with torch.no_grad():
        model.fc1.weight[3] = 0.0
        model.fc1.bias[3] = -1.0  # neuron 3 of fc1 is negative for every input
    session = PruningSession(model, entry.example(), calibration=entry.data())
    out = session.scores("fc1", Granularity.FILTER, "apoz").scores
    assert out[3] == 0.0
    assert (out[torch.arange(16) != 3] > 0).all()
    assert ((out >= 0) & (out <= 1)).all()
    # fc2 reads fc1 after the ReLU: its input channel 3 is always zero.
    inp = session.scores("fc2", Granularity.CHANNEL, "apoz").scores
    assert inp[3] == 0.0
    assert (inp[torch.arange(16) != 3] > 0).all()
    act = session.scores("fc2", Granularity.CHANNEL, "activation").scores
    assert act[3] == 0.0


def test_apoz_equals_a_hand_count() -> None:
    entry = ZOO["conv_bn"]
    model = entry.build()
    data = entry.data()
    session = PruningSession(model, entry.example(), calibration=data)
    with torch.no_grad():
        after_bn = model.bn1(model.conv1(data.x))  # all 48 samples: one calibration batch
    expected = 1.0 - (after_bn <= 0).float().mean(dim=(0, 2, 3))
    scores = session.scores("conv1", Granularity.FILTER, "apoz").scores
    torch.testing.assert_close(scores, expected)


def test_taylor_equals_a_hand_gradient() -> None:
    entry = ZOO["mlp"]
    model = entry.build()
    data = entry.data()
    session = PruningSession(model, entry.example(), calibration=data)
    model.zero_grad()
    Task.CLASSIFICATION.loss(model(data.x), data.y).backward()
    expected = (model.fc2.weight * model.fc2.weight.grad).abs().detach()
    scores = session.scores("fc2", Granularity.UNSTRUCTURED, "taylor").scores
    torch.testing.assert_close(scores, expected.reshape(-1))
    filters = session.scores("fc2", Granularity.FILTER, "taylor").scores
    torch.testing.assert_close(filters, expected.sum(dim=1))


def test_a_pass_of_the_model_in_another_thread_stays_out_of_the_calibration_stats() -> None:
    """A background measurement (another thread, inference mode) runs the session's model
    while its calibration statistics are gathered: its pass neither enters them nor
    leaves inference tensors that the calibration pass then updates in place (the
    Inspect page's "Inplace update to inference tensor outside InferenceMode")."""
    entry = ZOO["mlp"]
    model, data = entry.build(), entry.data()
    clean = PruningSession(model, entry.example(), calibration=data)
    session = PruningSession(model, entry.example(), calibration=data)
    other = data.x.flip(0) * 3.0  # other inputs: they would change every statistic
    passes: list[int] = []

    def background_pass(module: nn.Module, args: tuple[object, ...]) -> None:
        if passes:
            return
        passes.append(1)  # once, before the calibration pass reaches any layer

        def run() -> None:
            with torch.inference_mode():
                session.model(other)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()

    handle = session.model.register_forward_pre_hook(background_pass)
    try:
        for criterion in ["taylor", "apoz", "activation", "wanda"]:
            got = session.scores("fc2", Granularity.FILTER, criterion).scores
            want = clean.scores("fc2", Granularity.FILTER, criterion).scores
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=criterion)
    finally:
        handle.remove()
    assert passes == [1]


def test_data_criteria_need_calibration() -> None:
    session = sessions.session_for("mlp", named=False)
    for name in ["taylor", "apoz", "activation"]:
        with pytest.raises(DataError, match=repr(name)):
            session.scores("fc1", Granularity.FILTER, name)


def test_random_is_seeded_per_layer() -> None:
    entry = ZOO["mlp"]
    a = PruningSession(entry.build(), entry.example(), seed=4)
    b = PruningSession(entry.build(), entry.example(), seed=4)
    c = PruningSession(entry.build(), entry.example(), seed=5)
    ra = a.scores("fc1", Granularity.UNSTRUCTURED, "random").scores
    assert torch.equal(ra, b.scores("fc1", Granularity.UNSTRUCTURED, "random").scores)
    assert not torch.equal(ra, c.scores("fc1", Granularity.UNSTRUCTURED, "random").scores)
    fc2 = a.scores("fc2", Granularity.UNSTRUCTURED, "random").scores
    assert not torch.equal(ra[: fc2.numel()], fc2)


# -- LSH -----------------------------------------------------------------------------------


def _lsh_filters() -> tuple[Tensor, list[list[int]], list[int]]:
    """16 filters (4x3x3): three groups of duplicates of base filters, and 8 unrelated ones.

    Each group holds one scaled-up copy (its largest-norm member), exact copies and
    copies with small noise. Returns the filters, the groups and the unrelated indices.
    """
    generator = torch.Generator().manual_seed(11)
    base = torch.randn(3, 4, 3, 3, generator=generator)

    def noise() -> Tensor:
        return 1e-3 * torch.randn(4, 3, 3, generator=generator)

    rows = [
        1.1 * base[0], base[0], base[0].clone(), base[0] + noise(),  # group 0
        base[1] + noise(), 1.2 * base[1], base[1] + noise(),  # group 1
        base[2], 1.05 * base[2],  # group 2
    ]
    groups = [[0, 1, 2, 3], [4, 5, 6], [7, 8]]
    independent = list(range(9, 16))
    rows += [torch.randn(4, 3, 3, generator=generator) for _ in independent]
    filters = torch.stack(rows)
    perm = torch.randperm(16, generator=generator)
    inverse = torch.argsort(perm)
    filters = filters[perm]
    groups = [[int(inverse[i]) for i in group] for group in groups]
    independent = [int(inverse[i]) for i in independent]
    return filters, groups, independent


def test_lsh_scores_duplicates_low_and_keeps_one_per_group() -> None:
    filters, groups, independent = _lsh_filters()
    model, example = _conv_with_filters(filters)
    session = PruningSession(model, example)
    scores = session.scores("0", Granularity.FILTER, "lsh").scores
    norms = filters.reshape(16, -1).norm(dim=1)
    for group in groups:
        keeper = max(group, key=lambda i: float(norms[i]))
        assert scores[keeper] > 0.5
        for i in group:
            if i != keeper:
                assert scores[i] < 0.5, (group, i)
    for i in independent:
        assert scores[i] > 0.5
    assert ((scores >= 0) & (scores <= 1)).all()
    # A threshold of 0.5 prunes exactly the duplicates.
    session.apply(Plan({"0": LayerPlan("filter", "lsh", threshold=0.5)}))
    duplicates = sum(len(g) - 1 for g in groups)
    assert session.result("0").structures_pruned == duplicates


def test_lsh_keeper_score_grows_with_norm() -> None:
    generator = torch.Generator().manual_seed(1)
    vectors = torch.randn(6, 40, generator=generator)
    scores = lsh_scores(vectors)
    norms = vectors.norm(dim=1)
    assert (scores > 0.5).all()
    assert torch.equal(torch.argsort(scores), torch.argsort(norms))
    assert scores[int(norms.argmax())] == 1.0


def test_simhash_buckets_copies_together_unrelated_apart() -> None:
    generator = torch.Generator().manual_seed(5)
    unrelated = torch.randn(10, 64, generator=generator)
    copies = torch.stack([unrelated[2], 3.0 * unrelated[2], unrelated[7] * 0.5])
    vectors = torch.cat([unrelated, copies])
    buckets = simhash_buckets(vectors, seed=9)
    assert buckets.shape == (13,)
    assert buckets[10] == buckets[2]
    assert buckets[11] == buckets[2]
    assert buckets[12] == buckets[7]
    assert buckets[:10].tolist() == list(range(10))  # every unrelated row alone, own id
    assert buckets[2] == 2  # a bucket is named by its smallest row


# -- the registry ------------------------------------------------------------------------------


@pytest.fixture
def private_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test disappear after it."""
    monkeypatch.setattr(criteria, "_REGISTRY", dict(criteria._REGISTRY))


@pytest.mark.usefixtures("private_registry")
def test_custom_criterion_works_in_a_plan() -> None:
    def last_weights_first(inputs: ScoreInputs) -> Tensor:
        """Scores that prune the highest-numbered structures first."""
        return -torch.arange(inputs.structures.count, dtype=torch.float32)

    spec = register_criterion("reverse_index", last_weights_first, unstructured=True)
    assert "reverse_index" in criterion_names()
    assert spec.description == "Scores that prune the highest-numbered structures first."
    plan = Plan.from_json(
        Plan({"fc1": LayerPlan("filter", "reverse_index", sparsity=0.25)}).to_json()
    )
    session = sessions.session_for("mlp", named=False)
    session.apply(plan)
    mask = session.mask("fc1")
    assert mask[:12].all()
    assert not mask[12:].any()


@pytest.mark.usefixtures("private_registry")
def test_custom_criterion_with_a_wrong_shape_is_refused() -> None:
    register_criterion("one_score", lambda inputs: torch.zeros(1), unstructured=False)
    session = sessions.session_for("mlp", named=False)
    with pytest.raises(ValueError, match=r"shape \(1,\).*'fc1'.*\(16,\)"):
        session.scores("fc1", Granularity.FILTER, "one_score")
    with pytest.raises(PlanError, match="cannot rank single weights"):
        session.scores("fc1", Granularity.UNSTRUCTURED, "one_score")


@pytest.mark.usefixtures("private_registry")
def test_custom_criterion_with_nan_scores_is_refused() -> None:
    register_criterion(
        "nan_scores", lambda i: torch.full((i.structures.count,), float("nan")),
        unstructured=True,
    )
    session = sessions.session_for("mlp", named=False)
    with pytest.raises(ValueError, match="non-finite"):
        session.scores("fc1", Granularity.FILTER, "nan_scores")


def test_registration_does_not_leak_between_tests() -> None:
    assert "reverse_index" not in criterion_names()
    assert "one_score" not in criterion_names()


@pytest.mark.parametrize("bad", ["", "has space", "dash-ed"])
def test_register_refuses_bad_names(bad: str) -> None:
    with pytest.raises(ValueError, match="alphanumeric"):
        register_criterion(bad, lambda inputs: inputs.weight, unstructured=True)


def test_unknown_criterion_error_lists_allowed_names() -> None:
    with pytest.raises(PlanError) as info:
        get_criterion("magnitude")
    for name in BUILTIN:
        assert name in str(info.value)
