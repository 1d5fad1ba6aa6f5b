"""Plans: lossless JSON round trip, and refusals that name the entry and the allowed values."""

from __future__ import annotations

import json
import math

import pytest
from fixtures.models import ZOO
from fixtures.sessions import session_for
from hypothesis import given
from hypothesis import strategies as st

from pruneviz import GlobalPlan, Granularity, LayerPlan, Plan, PlanError, PruningSession
from pruneviz.core.criteria import criterion_names
from pruneviz.core.plan import PLAN_FORMAT, PLAN_VERSION, ModelRef


def _full_plan() -> Plan:
    return Plan(
        {
            "fc1": LayerPlan(Granularity.FILTER, "l2", sparsity=0.25),
            "fc2": LayerPlan("channel", "fpgm", threshold=0.125),
            "fc3": LayerPlan("2:4", "l1"),
            "conv.weight_ih_l0": LayerPlan("unstructured", "random", sparsity=1.0),
        },
        GlobalPlan("filter", "lsh", sparsity=0.4, layers=("a", "b"), max_layer_sparsity=0.9),
        ModelRef("sample:whatever", "0123456789abcdef"),
    )


def test_json_round_trip_keeps_everything() -> None:
    plan = _full_plan()
    text = plan.to_json()
    back = Plan.from_json(text)
    assert back == plan
    assert back.key() == plan.key()
    assert hash(back) == hash(plan)
    assert back.model == ModelRef("sample:whatever", "0123456789abcdef")
    assert back.global_ == plan.global_
    assert back.global_ is not None
    assert back.global_.layers == ("a", "b")
    assert back.to_json() == text
    data = json.loads(text)
    assert data["format"] == PLAN_FORMAT
    assert data["version"] == PLAN_VERSION
    assert data["layers"]["fc3"] == {"granularity": "2:4", "criterion": "l1"}


def test_global_with_all_layers_and_threshold_round_trips() -> None:
    plan = Plan(global_=GlobalPlan("unstructured", "l1", threshold=0.5))
    back = Plan.from_json(plan.to_json(indent=None))
    assert back == plan
    assert back.global_ is not None
    assert back.global_.layers is None
    assert back.model is None


def test_key_ignores_model_ref_and_layer_order() -> None:
    a = Plan({"x": LayerPlan(sparsity=0.5), "y": LayerPlan(sparsity=0.1)})
    b = Plan({"y": LayerPlan(sparsity=0.1), "x": LayerPlan(sparsity=0.5)}).for_model("m", "f")
    assert a.key() == b.key()
    assert a.key() != a.with_layer("x", LayerPlan(sparsity=0.6)).key()
    assert a.key() != a.with_layer("x", LayerPlan(threshold=0.5)).key()


def test_empty_plan() -> None:
    assert Plan().is_empty
    assert Plan.from_json(Plan().to_json()) == Plan()
    assert not Plan({"a": LayerPlan(sparsity=0.0)}).is_empty
    assert not Plan(global_=GlobalPlan(sparsity=0.0)).is_empty


# -- hypothesis: any valid plan round-trips --------------------------------------------------

_finite_amount = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
_threshold = st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False)


@st.composite
def layer_plans(draw: st.DrawFn) -> LayerPlan:
    granularity = draw(st.sampled_from(list(Granularity)))
    criterion = draw(st.sampled_from(criterion_names()))
    if granularity.n_m is not None:
        return LayerPlan(granularity, criterion)
    if draw(st.booleans()):
        return LayerPlan(granularity, criterion, sparsity=draw(_finite_amount))
    return LayerPlan(granularity, criterion, threshold=draw(_threshold))


@st.composite
def global_plans(draw: st.DrawFn) -> GlobalPlan:
    granularity = draw(st.sampled_from([g for g in Granularity if g.n_m is None]))
    criterion = draw(st.sampled_from(criterion_names()))
    layers = draw(st.none() | st.lists(st.text(min_size=1, max_size=12), max_size=4).map(tuple))
    cap = draw(st.none() | _finite_amount)
    if draw(st.booleans()):
        return GlobalPlan(granularity, criterion, sparsity=draw(_finite_amount), layers=layers,
                          max_layer_sparsity=cap)
    return GlobalPlan(granularity, criterion, threshold=draw(_threshold), layers=layers,
                      max_layer_sparsity=cap)


plans = st.builds(
    Plan,
    st.dictionaries(st.text(min_size=1, max_size=20), layer_plans(), max_size=5),
    st.none() | global_plans(),
    st.none() | st.builds(ModelRef, st.text(max_size=20), st.text(min_size=1, max_size=16)),
)


@given(plans)
def test_any_valid_plan_round_trips(plan: Plan) -> None:
    text = plan.to_json()
    back = Plan.from_json(text)
    assert back == plan
    assert back.key() == plan.key()
    assert back.to_json() == text
    assert Plan.from_dict(plan.to_dict()) == plan


# -- refusals ----------------------------------------------------------------------------------

LAYERS = ["fc1", "fc2", "fc3"]


def _plan_json(**layer_entry: object) -> str:
    return json.dumps({"format": PLAN_FORMAT, "version": PLAN_VERSION,
                       "layers": {"fc1": layer_entry}})


def test_missing_layer_is_named_with_the_prunable_layers() -> None:
    plan = Plan({"fc1": LayerPlan(sparsity=0.5), "conv9": LayerPlan(sparsity=0.5)})
    with pytest.raises(PlanError) as info:
        plan.validate_for(LAYERS)
    message = str(info.value)
    assert "conv9" in message
    assert "fc1, fc2, fc3" in message
    Plan({"fc1": LayerPlan(sparsity=0.5)}).validate_for(LAYERS)


def test_missing_layer_in_global_section_is_named() -> None:
    plan = Plan(global_=GlobalPlan(sparsity=0.5, layers=("fc1", "head")))
    with pytest.raises(PlanError, match="head"):
        plan.validate_for(LAYERS)


@pytest.mark.parametrize("sparsity", [1.5, -0.1, math.nan, math.inf, True, "0.5"])
def test_sparsity_outside_unit_interval_refused(sparsity: object) -> None:
    with pytest.raises(PlanError, match="sparsity"):
        LayerPlan(sparsity=sparsity)  # type: ignore[arg-type]
    with pytest.raises(PlanError, match="sparsity"):
        GlobalPlan(sparsity=sparsity)  # type: ignore[arg-type]


def test_sparsity_error_from_json_names_the_layer() -> None:
    with pytest.raises(PlanError) as info:
        Plan.from_json(_plan_json(granularity="filter", criterion="l1", sparsity=1.5))
    assert str(info.value).startswith("layer 'fc1'")
    assert "1.5" in str(info.value)


@pytest.mark.parametrize("threshold", [-1.0, -1e-9, math.nan, math.inf, False])
def test_bad_threshold_refused(threshold: float) -> None:
    with pytest.raises(PlanError, match="threshold"):
        LayerPlan(threshold=threshold)
    with pytest.raises(PlanError) as info:
        Plan.from_dict({"format": PLAN_FORMAT, "version": PLAN_VERSION,
                        "layers": {"fc1": {"threshold": threshold}}})
    assert "layer 'fc1'" in str(info.value)


@pytest.mark.parametrize(
    "kwargs", [{}, {"sparsity": 0.5, "threshold": 0.1}], ids=["neither", "both"]
)
def test_exactly_one_amount(kwargs: dict[str, float]) -> None:
    with pytest.raises(PlanError, match="exactly one"):
        LayerPlan("filter", "l1", **kwargs)


def test_unknown_criterion_names_entry_and_allowed_values() -> None:
    with pytest.raises(PlanError) as info:
        Plan.from_json(_plan_json(criterion="magnitude", sparsity=0.5))
    message = str(info.value)
    assert "layer 'fc1'" in message
    assert "'magnitude'" in message
    for name in criterion_names():
        assert name in message
    with pytest.raises(PlanError, match=r"global.*'magnitude'"):
        Plan.from_dict({"format": PLAN_FORMAT, "version": PLAN_VERSION,
                        "global": {"criterion": "magnitude", "sparsity": 0.5}})


def test_unknown_granularity_names_entry_and_allowed_values() -> None:
    with pytest.raises(PlanError) as info:
        Plan.from_json(_plan_json(granularity="block", sparsity=0.5))
    message = str(info.value)
    assert "layer 'fc1'" in message
    assert "'block'" in message
    for g in Granularity:
        assert g.value in message
    with pytest.raises(PlanError, match="unknown granularity 'kernel'"):
        LayerPlan("kernel", sparsity=0.5)  # type: ignore[arg-type]


def test_unknown_keys_refused_everywhere() -> None:
    with pytest.raises(PlanError) as info:
        Plan.from_json(_plan_json(sparsity=0.5, amount=0.5))
    assert "layer 'fc1'" in str(info.value)
    assert "'amount'" in str(info.value)
    top = {"format": PLAN_FORMAT, "version": PLAN_VERSION, "layer": {}}
    with pytest.raises(PlanError, match="'layer'"):
        Plan.from_dict(top)
    glob = {"format": PLAN_FORMAT, "version": PLAN_VERSION,
            "global": {"sparsity": 0.5, "cap": 0.9}}
    with pytest.raises(PlanError, match=r"global.*'cap'"):
        Plan.from_dict(glob)


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"format": "other", "version": 1}, "not a pruneviz plan"),
        ({"version": 1}, "not a pruneviz plan"),
        ({"format": PLAN_FORMAT, "version": 2}, "version 2"),
        ({"format": PLAN_FORMAT}, "version None"),
        ([1, 2], "JSON object"),
        ({"format": PLAN_FORMAT, "version": 1, "layers": [1]}, "'layers'"),
        ({"format": PLAN_FORMAT, "version": 1, "layers": {"fc1": 0.5}}, "layer 'fc1'"),
        ({"format": PLAN_FORMAT, "version": 1, "model": "m"}, "'model'"),
        ({"format": PLAN_FORMAT, "version": 1, "global": {"layers": "fc1", "sparsity": 0.5}},
         "global"),
    ],
)
def test_malformed_documents_refused(data: object, pattern: str) -> None:
    with pytest.raises(PlanError, match=pattern):
        Plan.from_dict(data)


def test_not_json_refused() -> None:
    with pytest.raises(PlanError, match="not valid JSON"):
        Plan.from_json("{layers: ")


def test_plan_for_another_model_refused() -> None:
    plan = Plan({"fc1": LayerPlan(sparsity=0.5)}).for_model("sample:a", "aaaa")
    with pytest.raises(PlanError) as info:
        plan.validate_for(LAYERS, fingerprint="bbbb")
    assert "'sample:a'" in str(info.value)
    assert "aaaa" in str(info.value)
    assert "bbbb" in str(info.value)
    plan.validate_for(LAYERS, fingerprint="aaaa")


def test_session_refuses_a_plan_stamped_for_another_model() -> None:
    mlp = session_for("mlp")
    other = PruningSession(ZOO["conv_bn"].build(), ZOO["conv_bn"].example(), name="cnn")
    plan = other.stamp(Plan({"fc": LayerPlan(sparsity=0.5)}))
    with pytest.raises(PlanError, match="made for model 'cnn'"):
        mlp.apply(plan)
    # The same layers, stamped for the right model, are fine.
    mlp.apply(mlp.stamp(Plan({"fc1": LayerPlan(sparsity=0.5)})))


@pytest.mark.parametrize("granularity", ["2:4", "4:8"])
def test_n_m_entries_refuse_an_amount(granularity: str) -> None:
    with pytest.raises(PlanError, match="fixed"):
        LayerPlan(granularity, "l1", sparsity=0.5)  # type: ignore[arg-type]
    with pytest.raises(PlanError, match="fixed"):
        LayerPlan(granularity, "l1", threshold=0.1)  # type: ignore[arg-type]
    with pytest.raises(PlanError) as info:
        Plan.from_json(_plan_json(granularity=granularity, sparsity=0.5))
    assert "layer 'fc1'" in str(info.value)
    LayerPlan(granularity, "l1")  # type: ignore[arg-type]


def test_n_m_is_refused_in_the_global_section() -> None:
    with pytest.raises(PlanError, match="global"):
        GlobalPlan("2:4", "l1")  # type: ignore[arg-type]


def test_max_layer_sparsity_outside_unit_interval_refused() -> None:
    with pytest.raises(PlanError, match="max_layer_sparsity"):
        GlobalPlan(sparsity=0.5, max_layer_sparsity=1.2)


def test_uniform_plan_and_edits_are_new_objects() -> None:
    plan = Plan.uniform(LAYERS, 0.3, "filter", "l2")
    assert set(plan.layers) == set(LAYERS)
    assert all(e == LayerPlan("filter", "l2", sparsity=0.3) for e in plan.layers.values())
    nm = Plan.uniform(LAYERS, 0.3, "2:4")
    assert all(e.sparsity is None for e in nm.layers.values())
    smaller = plan.with_layer("fc2", None)
    assert set(smaller.layers) == {"fc1", "fc3"}
    assert set(plan.layers) == set(LAYERS)
    with pytest.raises(TypeError):
        plan.layers["fc9"] = LayerPlan(sparsity=0.1)  # type: ignore[index]


def test_file_format_tags_are_those_files_in_the_wild_carry() -> None:
    """Plans and slimmed-model cards already written say "pruneviz.plan" / "pruneviz.slim":
    the tags are data, not module paths, and must not follow a move of the code."""
    from pruneviz.output.model_files import CARD_FORMAT

    assert PLAN_FORMAT == "pruneviz.plan"
    assert CARD_FORMAT == "pruneviz.slim"
    old = '{"format": "pruneviz.plan", "version": 1, "layers": {}, "global": null}'
    assert Plan.from_json(old) == Plan()
