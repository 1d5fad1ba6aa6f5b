"""Issue 18, "never claim what does not hold": the model's outputs are found through the
traced graph (whatever functions follow the output layer), every slim is checked against
the masked model before anyone sees it, unused layers are recognised as dead.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch
from fixtures import zoo
from fixtures.outputs import ENDINGS, images
from torch import nn

from pruneviz.core.coupling import output_modules
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.core.reach import trace_reach
from pruneviz.core.session import PruningSession
from pruneviz.core.slim import SLIM_TOLERANCE, SlimMismatchError, max_abs_diff, slim
from pruneviz.errors import ModelError, PlanError

USER_MODELS = Path(__file__).parent / "fixtures" / "user_models"


def _flexible_bert() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flexible_bert",
                                                  USER_MODELS / "flexible_bert.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the model's outputs are always protected ----------------------------------------------------
@pytest.mark.parametrize("name", ENDINGS)
def test_the_output_layer_is_found_behind_functions(name: str) -> None:
    build, output = ENDINGS[name]
    session = PruningSession(build().eval(), images())
    assert session.output_layers == {output}


@pytest.mark.parametrize("name", ENDINGS)
def test_a_filter_plan_never_removes_the_output_layers_filters(name: str) -> None:
    build, output = ENDINGS[name]
    session = PruningSession(build().eval(), images())
    plan, skipped = session.uniform_plan(0.3, "filter", "l1")
    assert output in skipped
    assert "model's output" in skipped[output]
    assert output not in plan.layers
    session.apply(plan)
    rows = session.mask(output).flatten(1)
    assert rows.any(dim=1).all()  # every output filter keeps weights
    assert any(session.result(n).sparsity > 0.2 for n in plan.layers)  # the rest is pruned
    result = slim(session, images(16, seed=1))
    module = dict(result.model.named_modules())[session.layer_by_name[output].module_name]
    original = dict(session.model.named_modules())[session.layer_by_name[output].module_name]
    assert module.weight.shape[0] == original.weight.shape[0]
    assert result.model(images()).shape == session.model(images()).shape


def test_an_explicit_filter_plan_on_the_classifier_conv_is_refused() -> None:
    build, output = ENDINGS["squeezenet"]
    session = PruningSession(build().eval(), images())
    with pytest.raises(PlanError, match="produces the model's output"):
        session.apply(session.stamp(Plan({output: LayerPlan("filter", "l1", sparsity=0.3)})))


def test_output_modules_look_through_norms_and_residual_adds() -> None:
    model = zoo.bert(100, 32, 2, 4, 64, 16, output="hidden").eval()
    found = output_modules(model, torch.randint(1, 100, (1, 8)))
    # The hidden states are the last LayerNorm's output, and through the residual adds
    # every layer that writes the stream (whose channels are the model's output).
    assert "encoder.layer.1.output.dense" in found
    assert "encoder.layer.1.attention.output.dense" in found
    assert "pooler.dense" not in found


def test_the_trace_leaves_the_parameters_as_it_found_them() -> None:
    model = ENDINGS["softmax"][0]().eval()
    model.fc.weight.requires_grad_(False)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    trace_reach(model, images(1))
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before


# -- dead layers -------------------------------------------------------------------------------
def test_an_unused_pooler_is_dead_and_left_out_of_plans() -> None:
    model = zoo.bert(100, 32, 2, 4, 64, 16, output="hidden").eval()
    session = PruningSession(model, torch.randint(1, 100, (2, 8)))
    assert session.dead_layers == {"pooler.dense"}
    for granularity in ("unstructured", "filter"):
        plan, skipped = session.uniform_plan(0.5, granularity, "l1")
        assert "pooler.dense" not in plan.layers
        assert "unused" in skipped["pooler.dense"]


def test_a_used_pooler_is_not_dead() -> None:
    session = PruningSession(zoo.bert(100, 32, 2, 4, 64, 16).eval(),
                             torch.randint(1, 100, (2, 8)))
    assert not session.dead_layers
    # nn.MultiheadAttention reads its out_proj's weight as a function: not dead either.
    vit = PruningSession(zoo.vit_b_16(32, 8, 32, 2, 4, 64, num_classes=10).eval(),
                         torch.randn(2, 3, 32, 32))
    assert not vit.dead_layers


def test_a_dead_layer_pruned_by_hand_does_not_block_a_slim() -> None:
    model = zoo.bert(100, 32, 2, 4, 64, 16, output="hidden").eval()
    ids = torch.randint(1, 100, (4, 8))
    session = PruningSession(model, ids)
    entry = LayerPlan("filter", "l1", sparsity=0.5)
    plan = Plan({"pooler.dense": entry, "encoder.layer.0.intermediate.dense": entry})
    session.apply(session.stamp(plan))
    result = slim(session, ids)
    assert result.removed == {"encoder.layer.0.intermediate.dense": 32}


# -- every slim is checked -----------------------------------------------------------------------
def _attention_plan(session: PruningSession, sparsity: float) -> Plan:
    entry = LayerPlan("filter", "l1", sparsity=sparsity)
    return session.stamp(Plan({n: entry for n in session.layer_names
                               if ".attention.self." in n}))


@pytest.mark.parametrize("sparsity", [0.25, 0.5])
def test_bert_attention_filters_never_slim_silently_wrong(sparsity: float) -> None:
    """Issue 18's case, on the zoo's BERT (head counts fixed) and on the same BERT with
    head counts taken from the tensor (newer Hugging Face code): 25% keeps 24 = 3 heads
    of 8 channels, which runs. Either the slim refuses, naming the attention layer, or it
    matches the masked model."""
    flexible = _flexible_bert()
    ids = flexible.tokens()
    refusals: list[str] = []
    for model in (zoo.bert(100, 32, 2, 4, 64, 16).eval(), flexible.build()):
        session = PruningSession(model, ids[:2])
        session.apply(_attention_plan(session, sparsity))
        try:
            result = slim(session, ids)
        except ModelError as exc:
            refusals.append(str(exc))
            continue
        with torch.no_grad():
            scale = max(1.0, float(session.model(ids).abs().max()))
        assert max_abs_diff(session.model, result.model, ids) <= SLIM_TOLERANCE * scale
    assert all("encoder.layer.0.attention.self" in why for why in refusals)


def test_the_flexible_bert_slim_is_refused_as_a_mismatch() -> None:
    flexible = _flexible_bert()
    ids = flexible.tokens()
    session = PruningSession(flexible.build(), ids[:2])
    session.apply(_attention_plan(session, 0.25))
    with pytest.raises(SlimMismatchError) as caught:
        slim(session, ids)
    message = str(caught.value)
    assert "does not compute what the masked model computes" in message
    assert "encoder.layer.0.attention.self (FlexibleSelfAttention)" in message


def test_a_slim_that_matches_passes_the_check() -> None:
    build, _ = ENDINGS["squeezenet"]
    session = PruningSession(build().eval(), images())
    session.apply(session.uniform_plan(0.5, "filter", "l1")[0])
    result = slim(session, images(32, seed=3))
    assert result.differs == ()
    assert result.params < sum(p.numel() for p in session.model.parameters())


def test_the_check_names_the_layer_that_parts() -> None:
    """A slim made wrong on purpose (a kept filter's weights changed after slimming) is
    caught, and the layer named."""
    session = PruningSession(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8),
                                           nn.ReLU(), nn.Linear(8, 3)).eval(),
                             torch.randn(4, 6))
    session.apply(session.stamp(Plan({"0": LayerPlan("filter", "l1", sparsity=0.5)})))
    good = slim(session, torch.randn(16, 6))
    from pruneviz.core import slim as slim_module

    with torch.no_grad():
        good.model[2].weight[0] += 1.0
    with pytest.raises(SlimMismatchError, match=r"first part in 2 \(Linear\)"):
        slim_module.check_equivalent(session, good.model, torch.randn(16, 6))
