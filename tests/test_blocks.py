"""Whole blocks and layers replaced by the identity: found, ranked, removed, restored."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from pruneviz.core.plan import Plan
from pruneviz.core.slim import max_abs_diff, slim
from pruneviz.data.samples import load_sample
from pruneviz.errors import PlanError
from pruneviz.measure.metrics import count_params
from pruneviz.output.model_files import save_slimmed
from pruneviz.workflows.workbench import open_workbench


@pytest.fixture(scope="module")
def resnet():  # type: ignore[no-untyped-def]
    return open_workbench("sample:digits_resnet")


def test_only_shape_preserving_modules_are_removable(resnet) -> None:  # type: ignore[no-untyped-def]
    names = [b.name for b in resnet.session.blocks()]
    assert "layer1" in names  # identity-shortcut residual block
    assert "layer2" not in names  # changes width and resolution
    importances = [b.importance for b in resnet.session.blocks()]
    assert importances == sorted(importances)
    assert all(i > 0 for i in importances)


def test_removing_a_block_is_real_and_reversible(resnet) -> None:  # type: ignore[no-untyped-def]
    session = resnet.session
    pristine = load_sample("digits_resnet").model
    before = count_params(session.model).total
    session.apply(Plan(blocks=("layer1",)))
    assert session.removed_blocks() == ["layer1"]
    assert isinstance(session.model.layer1, torch.nn.Identity)
    layer1_params = sum(p.numel() for p in pristine.layer1.parameters())
    assert count_params(session.model).total == before - layer1_params
    assert session.result("layer1.conv1").nonzero == 0
    x = resnet.eval_data.x[:16]
    with torch.no_grad():
        expected = pristine.layer2(pristine.stem(pristine.upsample(x)))
        got = session.model.layer2(session.model.stem(session.model.upsample(x)))
    assert torch.equal(expected, got)  # layer1 is skipped, nothing else changed
    session.apply(Plan())
    assert session.removed_blocks() == []
    for key, tensor in session.model.state_dict().items():
        assert torch.equal(tensor, pristine.state_dict()[key]), key


def test_blocks_round_trip_through_json_slim_and_the_card(resnet) -> None:  # type: ignore[no-untyped-def]
    session = resnet.session
    plan, _ = session.uniform_plan(0.25, "filter", "l2")
    with pytest.raises(PlanError, match="changes which channels"):
        # conv1's outputs would be replaced by its inputs: the coupling changes.
        session.apply(session.stamp(plan.with_blocks(["layer1.conv1"])))
    plan = session.stamp(plan.with_blocks(["layer1"]))
    assert Plan.from_json(plan.to_json()) == plan
    session.apply(plan)
    result = slim(session)
    x = resnet.eval_data.x[:32]
    assert max_abs_diff(session.model, result.model, x) <= 1e-5 * float(
        session.model(x).detach().abs().max())
    out = Path(tempfile.mkdtemp())
    written = save_slimmed("sample:digits_resnet", load_sample("digits_resnet").model,
                           result.model, x[:4], out)
    assert written["reload_identical"] is True
    # slim.pt2: dynamic batch, reloaded and checked at batch 1 and 64 (it was batch 4 only)
    assert written["program_error"] is None
    program = torch.export.load(written["program"]).module()
    assert program(x[:1]).shape[0] == 1
    assert program(x[:32]).shape[0] == 32
    session.apply(Plan())


def test_unknown_or_unremovable_block_is_refused(resnet) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PlanError, match="layer2"):
        resnet.session.apply(Plan(blocks=("layer2",)))
    assert resnet.session.removed_blocks() == []
