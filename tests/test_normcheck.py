"""A slim that cuts the width a LayerNorm / RMSNorm normalises together is still checked:
against the masked model with those norms' statistics over the kept channels only
(kept_statistics_reference), which is what a correct slim computes. A wrong slim is
caught even then; a norm no such reference can be built for is said to be unchecked."""

from __future__ import annotations

import pytest
import torch
from fixtures import zoo
from torch import Tensor, nn

from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.core.session import PruningSession
from pruneviz.core.slim import (
    SLIM_TOLERANCE,
    SlimMismatchError,
    check_equivalent,
    kept_statistics_reference,
    max_abs_diff,
    slim,
)
from pruneviz.core.width import KeptStatisticsNorm, kept_statistics_norm


def _tokens(samples: int = 2, seed: int = 2) -> Tensor:
    return torch.randint(1, 100, (samples, 8), generator=torch.Generator().manual_seed(seed))


def _bert_session() -> PruningSession:
    torch.manual_seed(0)
    session = PruningSession(zoo.bert(100, 32, 2, 4, 64, 16).eval(), _tokens())
    session.apply(session.uniform_plan(0.25, "filter", "l1")[0])
    return session


def _scale(model: nn.Module, x: Tensor) -> float:
    with torch.no_grad():
        return SLIM_TOLERANCE * max(1.0, float(model(x).abs().max()))


def test_bert_width_and_heads_slim_matches_the_kept_statistics_reference() -> None:
    session = _bert_session()
    units = {session.groups[g].unit for g in session.pruned_units()}
    assert {"channel", "head"} <= units
    ids = _tokens(16, seed=5)
    result = slim(session, ids)  # checked inside: a mismatch would raise
    assert result.differs
    assert not any("not checked" in why for why in result.differs)
    reference = kept_statistics_reference(session)
    assert reference is not None
    assert reference is not session.model
    replaced = {n for n, m in reference.named_modules() if isinstance(m, KeptStatisticsNorm)}
    assert replaced == {why.split(" ")[0] for why in result.differs}
    assert check_equivalent(session, result.model, ids, reference) <= _scale(reference, ids)
    # The reference matters: the plain masked model is beyond tolerance from the slim.
    assert max_abs_diff(session.model, result.model, ids) > _scale(session.model, ids)
    # The masked model itself is untouched by building the reference.
    assert not any(isinstance(m, KeptStatisticsNorm) for m in session.model.modules())


def test_a_corrupted_slim_is_caught_although_the_norms_differ_by_design() -> None:
    session = _bert_session()
    ids = _tokens(16, seed=5)
    result = slim(session, ids)
    assert result.differs
    reference = kept_statistics_reference(session)
    assert reference is not None
    with torch.no_grad():  # a kept FFN neuron's weight, changed after slimming
        result.model.get_submodule("encoder.layer.1.intermediate.dense").weight[0, 0] += 1.0
    with pytest.raises(SlimMismatchError, match=r"encoder\.layer\.1\.intermediate\.dense"):
        check_equivalent(session, result.model, ids, reference)


def test_llama_rmsnorm_width_slim_matches_the_kept_statistics_reference() -> None:
    torch.manual_seed(0)
    ids = _tokens()
    session = PruningSession(zoo.llama_gqa(100, 32, 2, 4, 4, 48).eval(), ids)
    session.apply(Plan().with_layer("model.layers.0.mlp.down_proj",
                                    LayerPlan("filter", "l1", 0.25)))
    data = _tokens(16, seed=7)
    result = slim(session, data)
    assert {why.split(" ")[0] for why in result.differs} == {
        "model.norm", *(f"model.layers.{i}.{n}" for i in range(2)
                        for n in ("input_layernorm", "post_attention_layernorm"))}
    assert not any("not checked" in why for why in result.differs)
    reference = kept_statistics_reference(session)
    assert reference is not None
    assert check_equivalent(session, result.model, data, reference) <= _scale(reference, data)
    assert max_abs_diff(session.model, result.model, data) > _scale(session.model, data)


def test_kept_statistics_layer_norm_is_the_smaller_layer_norm() -> None:
    torch.manual_seed(0)
    norm = nn.LayerNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
        norm.weight[[1, 4]] = 0.0  # masked entries
        norm.bias[[1, 4]] = 0.0
    keep = [0, 2, 3, 5, 6, 7]
    made = kept_statistics_norm("n", norm, keep)
    assert isinstance(made, KeptStatisticsNorm)
    small = nn.LayerNorm(6, eps=1e-6)
    with torch.no_grad():
        small.weight.copy_(norm.weight[keep])
        small.bias.copy_(norm.bias[keep])
    x = torch.randn(3, 8)
    x[:, [1, 4]] = 0.0
    with torch.no_grad():
        out = made(x)
        assert torch.allclose(out[:, keep], small(x[:, keep]), atol=1e-6)
        assert torch.equal(out[:, [1, 4]], torch.zeros(3, 2))
        assert not torch.allclose(norm(x)[:, keep], small(x[:, keep]), atol=1e-3)


class GemmaRMSNorm(nn.Module):
    """Gemma's RMSNorm scales by (1 + weight): not the formula the reference knows."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        rms = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x * rms * (1.0 + self.weight)


def test_a_norm_of_another_formula_is_said_to_be_unchecked() -> None:
    made = kept_statistics_norm("block.norm", GemmaRMSNorm(8), list(range(6)))
    assert isinstance(made, str)
    assert made.startswith("not checked: block.norm (GemmaRMSNorm)")
    llama = zoo.LlamaRMSNorm(8)
    assert isinstance(kept_statistics_norm("n", llama, list(range(6))), KeptStatisticsNorm)
