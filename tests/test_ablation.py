"""The `ablation` criterion: an attention head's importance measured exactly, as the
calibration loss increase with that head alone masked (criteria.ablation)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from fixtures import zoo
from torch import Tensor, nn

from pruneviz.cli import main
from pruneviz.core.coupling import Group
from pruneviz.core.granularity import Granularity
from pruneviz.core.session import PruningSession
from pruneviz.data.tasks import Task
from pruneviz.data.tensors import TensorData
from pruneviz.errors import DataError


def _tokens(n: int, seed: int = 2) -> Tensor:
    return torch.randint(1, 100, (n, 8), generator=torch.Generator().manual_seed(seed))


def _own_outputs(model: nn.Module, x: Tensor) -> TensorData:
    """Calibration data whose targets are the model's own outputs (no labels)."""
    with torch.no_grad():
        y = model(x)
    return TensorData(x, y, Task.REGRESSION)


def _heads(session: PruningSession) -> list[Group]:
    return [g for g in session.groups if g.unit == "head"]


def _by_hand(model: nn.Module, data: TensorData, weight: Tensor, cols: slice) -> float:
    """Loss increase, averaged over calibration batches of 64, with `weight`'s input
    columns `cols` (one head's, in the output projection) zeroed by hand."""
    increases = []
    for x, y in data.batches(64):
        with torch.no_grad():
            base = float(data.task.loss(model(x), y))
            saved = weight[:, cols].clone()
            weight[:, cols] = 0.0
            masked = float(data.task.loss(model(x), y))
            weight[:, cols] = saved
        increases.append(masked - base)
    return sum(increases) / len(increases)


def _bert_with_a_useless_head() -> nn.Module:
    """zoo BERT (hidden 32, 2 layers, 4 heads of 8) whose layer-0 head 2 has its
    output-projection columns scaled near 0: it hardly changes the output."""
    torch.manual_seed(0)
    model = zoo.bert(100, 32, 2, 4, 64, 16, output="hidden").eval()
    dense = model.get_submodule("encoder.layer.0.attention.output.dense")
    assert isinstance(dense, nn.Linear)
    with torch.no_grad():
        dense.weight[:, 16:24] *= 1e-3
    return model


def test_ablation_ranks_heads_where_taylor_is_zero_on_the_models_own_outputs() -> None:
    model = _bert_with_a_useless_head()
    data = _own_outputs(model, _tokens(100))
    session = PruningSession(model, data.x[:2], calibration=data)
    before = {n: p.detach().clone() for n, p in session.model.named_parameters()}
    layer0 = _heads(session)[0]
    assert layer0.root == "encoder.layer.0.attention.self.query"
    taylor = session.group_scores(layer0.id, "taylor").scores
    ablation = session.group_scores(layer0.id, "ablation").scores
    assert float(taylor.abs().max()) < 1e-12  # the loss is at its minimum: no gradient
    assert bool((ablation > 0).all()), ablation
    assert int(ablation.argmin()) == 2  # the useless head ranks last
    assert float(ablation[2]) < 0.01 * float(torch.cat([ablation[:2], ablation[3:]]).min())
    # the same as masking the head by hand (its output-projection columns only)
    dense = model.get_submodule("encoder.layer.0.attention.output.dense")
    assert isinstance(dense, nn.Linear)
    for head in range(4):
        hand = _by_hand(model, data, dense.weight, slice(head * 8, head * 8 + 8))
        assert float(ablation[head]) == pytest.approx(hand, rel=1e-4, abs=1e-9)
    # either side of the group reads the one measured table; the originals are untouched
    channel = session.group_scores(layer0.id, "ablation", Granularity.CHANNEL).scores
    assert torch.equal(channel, ablation)
    for name, p in session.model.named_parameters():
        assert torch.equal(p, before[name]), name


def test_an_ablation_plan_removes_the_useless_head() -> None:
    model = _bert_with_a_useless_head()
    data = _own_outputs(model, _tokens(64))
    session = PruningSession(model, data.x[:2], calibration=data)
    plan, skipped = session.uniform_plan(0.25, Granularity.FILTER, "ablation")
    layer0 = _heads(session)[0]
    assert layer0.root in plan.layers
    session.apply(plan)
    assert session.pruned_units()[layer0.id] == [2]
    # other layers are refused with the reason and the alternatives
    ffn = "encoder.layer.0.intermediate.dense"
    assert ffn in skipped
    for word in ("attention heads", "taylor", "l2"):
        assert word in skipped[ffn], skipped[ffn]


def test_ablation_needs_calibration_data() -> None:
    torch.manual_seed(0)
    model = zoo.bert(100, 32, 2, 4, 64, 16, output="hidden").eval()
    session = PruningSession(model, _tokens(2))
    with pytest.raises(DataError, match=r"ablation.*calibration"):
        session.group_scores(_heads(session)[0].id, "ablation")


def test_ablation_of_a_grouped_query_unit_masks_the_kv_head_with_its_query_heads() -> None:
    torch.manual_seed(0)
    model = zoo.llama_gqa(100, 32, 2, 4, 2, 48).eval()  # 4 query heads of 8, 2 kv heads
    x = _tokens(24)
    data = TensorData(x, torch.randn(24, 8, 100, generator=torch.Generator().manual_seed(7)),
                      Task.REGRESSION)
    session = PruningSession(model, x[:2], calibration=data)
    group = _heads(session)[0]
    assert group.size == 2
    ablation = session.group_scores(group.id, "ablation").scores
    o_proj = model.get_submodule("model.layers.0.self_attn.o_proj")
    assert isinstance(o_proj, nn.Linear)
    for unit in range(2):  # query heads 2u, 2u+1: columns 16u .. 16u + 15
        hand = _by_hand(model, data, o_proj.weight, slice(unit * 16, unit * 16 + 16))
        assert float(ablation[unit]) == pytest.approx(hand, rel=1e-4, abs=1e-9)


class _MHAModel(nn.Module):
    """Linear -> nn.MultiheadAttention (4 heads of 4) -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        out: Tensor = self.head(self.attn(h, h, h, need_weights=False)[0])
        return out


def test_ablation_of_multihead_attention_heads() -> None:
    torch.manual_seed(0)
    model = _MHAModel().eval()
    x = torch.randn(40, 5, 6, generator=torch.Generator().manual_seed(4))
    data = _own_outputs(model, x)
    session = PruningSession(model, x[:2], calibration=data)
    group = _heads(session)[0]
    assert group.size == 4
    ablation = session.group_scores(group.id, "ablation").scores
    assert bool((ablation > 0).all()), ablation
    for head in range(4):
        hand = _by_hand(model, data, model.attn.out_proj.weight, slice(head * 4, head * 4 + 4))
        assert float(ablation[head]) == pytest.approx(hand, rel=1e-4, abs=1e-9)


_CLI_MODEL = '''
import sys
import torch
from torch import nn
sys.path.insert(0, {tests!r})
from fixtures import zoo


def build():
    torch.manual_seed(0)
    return zoo.bert(100, 32, 2, 4, 64, 16, output="hidden").eval()


def load(split="test"):
    model = build()
    x = torch.randint(1, 100, (48, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return torch.utils.data.TensorDataset(x, model(x))
'''


def test_the_cli_prunes_heads_by_ablation(tmp_path: Path) -> None:
    file = tmp_path / "bert_encoder.py"
    file.write_text(_CLI_MODEL.format(tests=str(Path(__file__).parent)), encoding="utf-8")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["prune", f"{file}:build", "--data", f"{file}:load", "--sparsity", "0.25",
                     "--granularity", "filter", "--criterion", "ablation", "--out",
                     str(tmp_path / "out"), "--json"])
    assert code == 0
    report = json.loads(out.getvalue())
    assert any(n.startswith("1 of 4 units removed by ablation: encoder.layer.0.attention.self")
               for n in report["notes"]), report["notes"]
    plan = json.loads((tmp_path / "out" / "plan.json").read_text(encoding="utf-8"))
    assert plan["layers"]["encoder.layer.0.attention.self.query"]["criterion"] == "ablation"
    assert "encoder.layer.0.intermediate.dense" not in plan["layers"]
    helped = io.StringIO()
    with contextlib.redirect_stdout(helped), pytest.raises(SystemExit):
        main(["prune", "--help"])
    assert "ablation" in helped.getvalue()
