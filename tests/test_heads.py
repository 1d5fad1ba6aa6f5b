"""Attention heads in the common styles (pruneviz/core/heads.py): found with the right
count, masked as whole heads, slimmed to the masked function with fewer heads, and ranked
by measured importance."""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from fixtures import zoo
from torch import Tensor, nn

from pruneviz.cli import main
from pruneviz.core.coupling import Group
from pruneviz.core.criteria import collect_calibration_stats
from pruneviz.core.granularity import Granularity
from pruneviz.core.heads import FusedHeadAttention, find_attention, head_taylor
from pruneviz.core.layers import find_prunable_layers
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.core.session import PruningSession
from pruneviz.core.slim import slim
from pruneviz.data.tasks import Task
from pruneviz.data.tensors import TensorData
from pruneviz.output.model_files import architecture_card, build_from_card


def _tokens(n: int = 2) -> Tensor:
    return torch.randint(1, 100, (n, 8), generator=torch.Generator().manual_seed(2))


def _images(n: int = 2) -> Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


# name -> (builder, input, attention modules, units per module, query heads per unit,
#          the q/k/v projection layers of layer 0, its output projection)
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[int], Tensor], list[str], int, int,
                       list[str], str]] = {
    "bert": (lambda: zoo.bert(100, 32, 2, 4, 64, 16, output="hidden"), _tokens,
             ["encoder.layer.0.attention.self", "encoder.layer.1.attention.self"], 4, 1,
             [f"encoder.layer.0.attention.self.{p}" for p in ("query", "key", "value")],
             "encoder.layer.0.attention.output.dense"),
    "vit_timm": (lambda: zoo.vit_timm(32, 8, 32, 2, 4, 64, num_classes=10), _images,
                 ["blocks.0.attn", "blocks.1.attn"], 4, 1, ["blocks.0.attn.qkv"],
                 "blocks.0.attn.proj"),
    "llama_mha": (lambda: zoo.llama_gqa(100, 32, 2, 4, 4, 48), _tokens,
                  ["model.layers.0.self_attn", "model.layers.1.self_attn"], 4, 1,
                  [f"model.layers.0.self_attn.{p}_proj" for p in "qkv"],
                  "model.layers.0.self_attn.o_proj"),
    "llama_gqa": (lambda: zoo.llama_gqa(100, 32, 2, 4, 2, 48), _tokens,
                  ["model.layers.0.self_attn", "model.layers.1.self_attn"], 2, 2,
                  [f"model.layers.0.self_attn.{p}_proj" for p in "qkv"],
                  "model.layers.0.self_attn.o_proj"),
}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return CASES[name][0]().eval()


def _heads(session: PruningSession) -> list[Group]:
    return [g for g in session.groups if g.unit == "head"]


def _head_plan(session: PruningSession, sparsity: float, criterion: str = "l1") -> Plan:
    """Prune `sparsity` of every attention module's units (through its query layer)."""
    return Plan({g.root: LayerPlan(Granularity.FILTER, criterion, sparsity=sparsity)
                 for g in _heads(session)})


@pytest.mark.parametrize("name", CASES)
def test_heads_are_found_with_their_count_and_how(name: str) -> None:
    _, make, modules, units, _, qkv, out = CASES[name]
    session = PruningSession(_model(name), make(2))
    heads = _heads(session)
    assert [next(m.module for m in g.members if m.kind == "heads") for g in heads] == modules
    assert [g.size for g in heads] == [units, units]
    assert all("from the module's attributes" in g.note for g in heads)
    first = heads[0]
    assert {m.module for m in first.members if m.kind == "out"} == set(qkv)
    assert [m.module for m in first.members if m.kind == "in"] == [out]
    assert not first.unsupported
    # the projections' rows are units of the head group only: no channel group has them
    for g in session.groups:
        if g.unit != "head":
            assert not {m.module for m in g.members if m.kind == "out"} & set(qkv)


def test_grouped_query_unit_is_a_key_value_head_with_its_query_heads() -> None:
    session = PruningSession(_model("llama_gqa"), _tokens())
    group = _heads(session)[0]
    rows = {m.module.rsplit(".", 1)[1]: dict(zip(m.idxs, m.root, strict=True))
            for m in group.members if m.kind == "out"}
    # head_dim 8: unit 0 is query heads 0-1 (q rows 0-15) and key/value head 0 (rows 0-7)
    assert {r for r, u in rows["q_proj"].items() if u == 0} == set(range(16))
    assert {r for r, u in rows["k_proj"].items() if u == 0} == set(range(8))
    assert {r for r, u in rows["v_proj"].items() if u == 1} == set(range(8, 16))
    assert "grouped-query attention: 2 key/value heads, each with 2 query heads" in group.note


@pytest.mark.parametrize("name", CASES)
def test_a_head_plan_masks_whole_heads_and_slims_to_the_masked_function(name: str) -> None:
    _, make, modules, units, per_unit, qkv, out = CASES[name]
    model = _model(name)
    session = PruningSession(model, make(2))
    session.apply(_head_plan(session, 0.5))
    pruned = session.pruned_units()[_heads(session)[0].id]
    assert len(pruned) == units // 2
    params = dict(session.model.named_parameters())
    modules_by_name = dict(model.named_modules())
    head_dim = 8
    width = head_dim * per_unit
    for unit in range(units):
        gone = unit in pruned
        cols = params[f"{out}.weight"][:, unit * width:(unit + 1) * width]
        assert bool((cols == 0).all()) is gone
        q_rows = params[f"{qkv[0]}.weight"][unit * width:(unit + 1) * width]
        assert bool((q_rows == 0).all()) is gone
    x = make(3)
    result = slim(session)
    with torch.no_grad():
        masked, slimmed, original = session.model(x), result.model(x), model(x)
    assert not torch.allclose(masked, original)  # the plan did something
    scale = float(masked.abs().max())
    assert float((masked - slimmed).abs().max()) <= 1e-5 * scale
    assert result.params < sum(p.numel() for p in model.parameters())
    slim_modules = dict(result.model.named_modules())
    for module in modules:
        before, after = modules_by_name[module], slim_modules[module]
        for attr in ("num_heads", "num_attention_heads"):
            if hasattr(before, attr):
                assert getattr(after, attr) == getattr(before, attr) // 2
        if hasattr(before, "num_key_value_heads"):
            assert after.num_key_value_heads == before.num_key_value_heads // 2
            assert after.num_key_value_groups == before.num_key_value_groups
        if hasattr(before, "all_head_size"):
            assert after.all_head_size == before.all_head_size // 2
    assert isinstance(slim_modules[modules[0]], FusedHeadAttention) is (name == "vit_timm")
    out_proj = slim_modules[out]
    assert isinstance(out_proj, nn.Linear)
    assert out_proj.in_features == modules_by_name[out].in_features // 2


@pytest.mark.parametrize("name", ["bert", "vit_timm", "llama_gqa"])
def test_the_slimmed_model_exports_and_runs_at_another_batch_size(name: str) -> None:
    _, make, *_ = CASES[name]
    session = PruningSession(_model(name), make(2))
    session.apply(_head_plan(session, 0.5))
    slimmed = slim(session).model
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(slimmed, (make(2),), dynamic_shapes=({0: batch},))
    with torch.no_grad():
        for n in (1, 5):
            torch.testing.assert_close(program.module()(make(n)), slimmed(make(n)))


class _Anonymous(nn.Module):
    """Attention keeping no head attributes: the count is only in its reshape."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.o = nn.Linear(16, 16)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        q, k, v = (p(x).reshape(b, t, -1, 4).transpose(1, 2) for p in (self.q, self.k, self.v))
        w = (q @ k.transpose(-1, -2) / math.sqrt(4)).softmax(-1)
        return self.o((w @ v).transpose(1, 2).reshape(b, t, -1))  # type: ignore[no-any-return]


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = _Anonymous()
        self.head = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.attn(x).mean(1))  # type: ignore[no-any-return]


def test_heads_without_attributes_are_found_by_tracing_the_reshape() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    specs = find_attention(_Net().eval(), x)
    assert [(s.module, s.heads, s.head_dim) for s in specs] == [("attn", 4, 4)]
    assert "from tracing the forward (reshape into 4 heads of 4)" in specs[0].note
    session = PruningSession(_Net().eval(), x)
    session.apply(_head_plan(session, 0.5))
    result = slim(session)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), session.model(x), rtol=1e-5, atol=1e-6)


def _pretrained_like_bert() -> nn.Module:
    """A BERT whose head 0 in each layer has the largest q/k/v weights but writes almost
    nothing (its output-projection columns scaled by 1e-3), and whose head 1 has small
    q/k/v weights but a large output: norms rank head 0 first, what the heads do ranks it
    last — as in trained transformers, where a head's weight norm does not say what
    removing it costs."""
    model = _model("bert")
    with torch.no_grad():
        for layer in model.encoder.layer:  # type: ignore[union-attr]
            attention = layer.attention
            for proj in (attention.self.query, attention.self.key, attention.self.value):
                proj.weight[0:8] *= 4.0
                proj.weight[8:16] *= 0.5
            attention.output.dense.weight[:, 0:8] *= 1e-3
            attention.output.dense.weight[:, 8:16] *= 3.0
    return model


def test_measured_head_importance_differs_from_magnitude_and_costs_less() -> None:
    model = _pretrained_like_bert()
    x = torch.randint(1, 100, (64, 8), generator=torch.Generator().manual_seed(5))
    y = torch.randn(64, 8, 32, generator=torch.Generator().manual_seed(6))
    data = TensorData(x, y, Task.REGRESSION)
    session = PruningSession(model, x[:2], calibration=data)
    group = _heads(session)[0]
    magnitude = session.group_scores(group.id, "l1").scores
    measured = session.group_scores(group.id, "taylor").scores
    assert int(magnitude.argmax()) == 0
    assert int(measured.argmin()) == 0
    assert int(measured.argmax()) == 1
    with torch.no_grad():
        reference = model(x)
    costs = {}
    for criterion in ("l1", "taylor"):
        session.apply(_head_plan(session, 0.25, criterion))  # one head of four per layer
        with torch.no_grad():
            costs[criterion] = float((session.model(x) - reference).pow(2).mean())
    assert costs["taylor"] < costs["l1"] / 10


@pytest.mark.parametrize("name", ["bert", "vit_timm", "llama_gqa"])
def test_the_slim_card_rebuilds_the_slimmed_model(name: str) -> None:
    _, make, modules, *_ = CASES[name]
    model = _model(name)
    session = PruningSession(model, make(2))
    session.apply(_head_plan(session, 0.5))
    slimmed = slim(session).model
    card = architecture_card("user:model", model, slimmed)
    assert any("heads" in card["modules"].get(m, {}) or
               card["modules"].get(m, {}).get("type") == "FusedHeadAttention" for m in modules)
    rebuilt = build_from_card(json.loads(json.dumps(card)), base_model=model)
    rebuilt.load_state_dict(slimmed.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(make(3)), slimmed(make(3)))
    assert _model(name).state_dict().keys() == model.state_dict().keys()  # base unchanged
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 _model(name).state_dict().values(), strict=True))


_CLI_MODEL = '''
import sys
sys.path.insert(0, {tests!r})
import torch
from torch import nn
from fixtures import zoo


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.bert = zoo.bert(100, 32, 2, 4, 64, 16)
        self.classifier = nn.Linear(32, 3)

    def forward(self, ids):
        return self.classifier(self.bert(ids))


def build():
    torch.manual_seed(0)
    return Classifier()


def load(split="test"):
    g = torch.Generator().manual_seed(3)
    x = torch.randint(1, 100, (64, 8), generator=g)
    return torch.utils.data.TensorDataset(x, torch.randint(0, 3, (64,), generator=g))
'''


def test_the_cli_prunes_heads_by_measured_importance_and_says_how_it_found_them(
        tmp_path: Path) -> None:
    file = tmp_path / "bert_classifier.py"
    file.write_text(_CLI_MODEL.format(tests=str(Path(__file__).parent)), encoding="utf-8")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["prune", f"{file}:build", "--data", f"{file}:load", "--sparsity", "0.25",
                     "--granularity", "filter", "--criterion", "taylor", "--out",
                     str(tmp_path / "out"), "--json"])
    assert code == 0
    report = json.loads(out.getvalue())
    notes = report["notes"]
    assert any(n.startswith("1 of 4 units removed by taylor: bert.encoder.layer.0.attention."
                            "self (separate q/k/v): 4 heads of 8; head count from the module's "
                            "attributes") for n in notes), notes
    assert not any("of 32 heads" in n for n in notes), notes  # heads counted as heads
    plan = json.loads((tmp_path / "out" / "plan.json").read_text(encoding="utf-8"))
    assert plan["layers"]["bert.encoder.layer.0.attention.self.query"]["criterion"] == "taylor"


def test_head_taylor_is_the_gradient_of_a_gate_on_the_head() -> None:
    """The reference: a gate g_h multiplying head h's output (1 = unchanged); dL/dg_h by
    autograd must be what head_taylor sums over the head's output-projection columns."""
    model = _model("bert")
    x = torch.randint(1, 100, (16, 8), generator=torch.Generator().manual_seed(5))
    y = torch.randn(16, 8, 32, generator=torch.Generator().manual_seed(6))
    data = TensorData(x, y, Task.REGRESSION)
    layers = find_prunable_layers(model, x[:2])
    stats = collect_calibration_stats(model, layers, data, max_batches=1, batch_size=16)
    out = "encoder.layer.0.attention.output.dense"
    cols = tuple(range(32))
    units = tuple(c // 8 for c in cols)
    measured = head_taylor(stats.signed_in[out], cols, units, 4)

    gate = torch.ones(4, requires_grad=True)
    dense = model.get_submodule(out)
    hook = dense.register_forward_pre_hook(
        lambda _m, args: (args[0] * gate.repeat_interleave(8),))
    try:
        Task.REGRESSION.loss(model(x), y).backward()  # type: ignore[no-untyped-call]
    finally:
        hook.remove()
    assert gate.grad is not None
    torch.testing.assert_close(measured.float(), gate.grad.abs(), rtol=1e-4, atol=1e-7)
