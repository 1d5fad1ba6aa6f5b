"""The hidden width of a residual stream as one coupled group (pruneviz/core/width.py).

On a BERT in Hugging Face layout, torchvision's and timm's ViT, Llama and a ConvNeXt:
the group holds the embeddings, every residual writer, every LayerNorm and every reader;
masking a channel zeroes all of them; slimming removes them, and — because LayerNorm
normalises over all channels — says the slimmed model differs from the masked one
(`SlimResult.differs`) instead of claiming they match. With BatchNorm instead, it must
match.
"""

from __future__ import annotations

import contextlib
import io
import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import zoo
from fixtures.convnext import BatchNormResidual, ConvNeXt
from torch import Tensor, nn

from pruneviz.cli import main
from pruneviz.core.attention import SlimAttention
from pruneviz.core.coupling import Group
from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.core.session import PruningSession
from pruneviz.core.slim import max_abs_diff, slim
from pruneviz.data.tasks import Task
from pruneviz.data.tensors import TensorData
from pruneviz.errors import ModelError, PlanError
from pruneviz.measure.forms import measure_forms
from pruneviz.measure.metrics import evaluate
from pruneviz.output.model_files import architecture_card, build_from_card, save_slimmed
from pruneviz.output.verify import verify_bundle
from pruneviz.workflows.workbench import Workbench, build_workbench


def _images() -> Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _tokens() -> Tensor:
    return torch.randint(1, 100, (2, 8), generator=torch.Generator().manual_seed(2))


MODELS = {
    "bert": (lambda: zoo.bert(100, 32, 2, 4, 64, 16), _tokens),
    "vit_b_16": (lambda: zoo.vit_b_16(32, 8, 32, 2, 4, 64, num_classes=10), _images),
    "vit_timm": (lambda: zoo.vit_timm(32, 8, 32, 2, 4, 64, num_classes=10), _images),
    "llama": (lambda: zoo.llama_gqa(100, 32, 2, 4, 4, 48), _tokens),
    "convnext": (lambda: ConvNeXt(16, 2, 10), _images),
    "bn_residual": (lambda: BatchNormResidual(16, 2, 10), _images),
}

# A writer of the residual stream in each model: its filters are the hidden width.
WRITER = {
    "bert": "encoder.layer.0.output.dense",
    "vit_b_16": "encoder.layers.encoder_layer_0.mlp.3",
    "vit_timm": "blocks.0.mlp.fc2",
    "llama": "model.layers.0.mlp.down_proj",
    "convnext": "blocks.0.block.5",
    "bn_residual": "blocks.0.4",
}

# (module, kind) members the hidden-width group must have, and its norms sharing statistics.
BERT_LAYERS = [f"encoder.layer.{i}" for i in range(2)]
EXPECTED: dict[str, tuple[set[tuple[str, str]], set[str]]] = {
    "bert": (
        {("embeddings.word_embeddings", "embed"), ("embeddings.position_embeddings", "embed"),
         ("embeddings.token_type_embeddings", "embed"), ("embeddings.LayerNorm", "norm"),
         ("pooler.dense", "in")}
        | {(f"{b}.{m}", "out") for b in BERT_LAYERS
           for m in ("attention.output.dense", "output.dense")}
        | {(f"{b}.{m}", "norm") for b in BERT_LAYERS
           for m in ("attention.output.LayerNorm", "output.LayerNorm")}
        | {(f"{b}.{m}", "in") for b in BERT_LAYERS
           for m in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "intermediate.dense")},
        {"embeddings.LayerNorm"} | {f"{b}.{m}" for b in BERT_LAYERS
                                    for m in ("attention.output.LayerNorm", "output.LayerNorm")},
    ),
    "vit_b_16": (
        {("conv_proj", "out"), ("class_token", "param"), ("encoder.pos_embedding", "param"),
         ("encoder.ln", "norm"), ("heads.head", "in")}
        | {(f"encoder.layers.encoder_layer_{i}.{m}", k) for i in range(2)
           for m, k in (("ln_1", "norm"), ("ln_2", "norm"), ("self_attention", "in"),
                        ("self_attention.out_proj", "out"), ("self_attention", "width"),
                        ("mlp.0", "in"), ("mlp.3", "out"))},
        {"encoder.ln"} | {f"encoder.layers.encoder_layer_{i}.ln_{j}" for i in range(2)
                          for j in (1, 2)},
    ),
    "vit_timm": (
        {("patch_embed.proj", "out"), ("cls_token", "param"), ("pos_embed", "param"),
         ("norm", "norm"), ("head", "in")}
        | {(f"blocks.{i}.{m}", k) for i in range(2)
           for m, k in (("norm1", "norm"), ("norm2", "norm"), ("attn.qkv", "in"),
                        ("attn.proj", "out"), ("mlp.fc1", "in"), ("mlp.fc2", "out"))},
        {"norm"} | {f"blocks.{i}.norm{j}" for i in range(2) for j in (1, 2)},
    ),
    "llama": (
        {("model.embed_tokens", "embed"), ("model.norm.weight", "param"), ("lm_head", "in")}
        | {(f"model.layers.{i}.{m}", k) for i in range(2)
           for m, k in (("input_layernorm.weight", "param"),
                        ("post_attention_layernorm.weight", "param"),
                        ("self_attn.q_proj", "in"), ("self_attn.o_proj", "out"),
                        ("mlp.up_proj", "in"), ("mlp.down_proj", "out"))},
        {"model.norm"} | {f"model.layers.{i}.{n}" for i in range(2)
                          for n in ("input_layernorm", "post_attention_layernorm")},
    ),
    "convnext": (
        {("stem", "out"), ("norm", "norm"), ("head", "in")}
        | {(f"blocks.{i}.{m}", k) for i in range(2)
           for m, k in (("block.0", "out"), ("block.2", "norm"), ("block.3", "in"),
                        ("block.5", "out"), ("layer_scale", "param"))},
        {"norm", "blocks.0.block.2", "blocks.1.block.2"},
    ),
    "bn_residual": (
        {("stem.0", "out"), ("stem.1", "norm"), ("head", "in")}
        | {(f"blocks.{i}.{m}", k) for i in range(2)
           for m, k in (("0", "out"), ("1", "norm"), ("2", "in"), ("4", "out"))},
        set(),
    ),
}


@cache
def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[name][0]().eval()


def _session(name: str) -> PruningSession:
    return PruningSession(_model(name), MODELS[name][1]())


def _hidden(session: PruningSession, name: str) -> Group:
    group = session.group_of(WRITER[name])
    assert group is not None
    assert group.unsupported is None
    return group


def _width_plan(name: str, sparsity: float = 0.25) -> Plan:
    return Plan().with_layer(WRITER[name], LayerPlan("filter", "l1", sparsity))


@pytest.mark.parametrize("name", EXPECTED)
def test_hidden_width_is_one_group_with_its_embeddings_norms_and_readers(name: str) -> None:
    group = _hidden(_session(name), name)
    members, norms = EXPECTED[name]
    assert members <= {(m.module, m.kind) for m in group.members}
    assert set(group.shared_norms) == norms


@pytest.mark.parametrize("name", ["bert", "vit_b_16", "vit_timm", "llama", "convnext"])
def test_width_plan_masks_norm_entries_embedding_columns_and_parameters(name: str) -> None:
    session = _session(name)
    group = _hidden(session, name)
    session.apply(_width_plan(name))
    pruned = session.pruned_units()[group.id]
    assert len(pruned) == round(0.25 * group.size)
    params = dict(session.model.named_parameters())
    originals = dict(_model(name).named_parameters())
    checked = set()
    for m in group.members:
        if m.kind == "norm":
            tensors = [f"{m.module}.weight", f"{m.module}.bias"]
        elif m.kind == "embed":
            tensors = [f"{m.module}.weight"]
        elif m.kind == "param":
            tensors = [m.module]
        else:
            continue
        for t in tensors:
            if t not in params:
                continue
            gone = [i for i, r in zip(m.idxs, m.root, strict=True) if r in pruned]
            kept = [i for i, r in zip(m.idxs, m.root, strict=True) if r not in pruned]
            value = params[t].detach()
            assert bool((value.index_select(m.dim, torch.tensor(gone)) == 0).all()), t
            torch.testing.assert_close(value.index_select(m.dim, torch.tensor(kept)),
                                       originals[t].detach().index_select(m.dim,
                                                                          torch.tensor(kept)))
            checked.add(m.kind)
    assert "norm" in checked or name == "llama"
    assert checked & {"embed", "param"}
    assert any(group.layers[0] in note and "normalise all its channels" in note
               for note in session.notes)
    session.reset()
    for n, p in session.model.named_parameters():
        assert torch.equal(p, originals[n]), n


@pytest.mark.parametrize("name", ["bert", "vit_b_16", "llama", "convnext"])
def test_width_plan_slims_and_says_the_layernorms_differ(name: str) -> None:
    session = _session(name)
    group = _hidden(session, name)
    session.apply(_width_plan(name))
    width = group.size - len(session.pruned_units()[group.id])
    result = slim(session)
    assert result.params < sum(p.numel() for p in session.model.parameters())
    modules = dict(result.model.named_modules())
    for norm in group.shared_norms:
        module = modules[norm]
        if isinstance(module, nn.LayerNorm):
            assert module.normalized_shape == (width,)
        assert getattr(module, "weight").shape == (width,)  # noqa: B009
    for m in group.members:
        if m.kind == "embed":
            assert modules[m.module].embedding_dim == width
    named = {reason.split(" ")[0] for reason in result.differs}
    assert named == set(group.shared_norms)
    assert all(f"over all {group.size} channels" in r and f"use {width}" in r
               for r in result.differs)
    x = MODELS[name][1]()
    with torch.no_grad():
        out = result.model(x)
    assert torch.isfinite(out).all()
    # By design not the masked model: the LayerNorms' statistics changed.
    assert max_abs_diff(session.model, result.model, x) > 1e-4


def test_vit_b_16_attention_takes_the_new_width() -> None:
    session = _session("vit_b_16")
    session.apply(_width_plan("vit_b_16"))
    model = slim(session).model
    attention = model.get_submodule("encoder.layers.encoder_layer_0.self_attention")
    assert isinstance(attention, SlimAttention)
    assert attention.embed_dim == 24
    assert attention.num_heads == 4
    assert getattr(model, "hidden_dim") == 24  # noqa: B009 - its forward reads it
    assert getattr(model, "class_token").shape == (1, 1, 24)  # noqa: B009


def test_timm_attention_with_a_fixed_reshape_is_refused_not_slimmed_wrong() -> None:
    # timm's Attention reshapes its heads' output to the *input's* width (reshape(B, N, C)):
    # with the hidden width cut, its inner width no longer matches; slim says so.
    session = _session("vit_timm")
    session.apply(_width_plan("vit_timm"))
    with pytest.raises(ModelError, match="does not run"):
        slim(session)


def test_batchnorm_residual_width_slims_to_the_masked_model() -> None:
    session = _session("bn_residual")
    group = _hidden(session, "bn_residual")
    session.apply(_width_plan("bn_residual", 0.5))
    result = slim(session)
    assert result.differs == ()
    x = _images()
    with torch.no_grad():
        scale = float(session.model(x).abs().max())
    assert max_abs_diff(session.model, result.model, x) <= 1e-5 * scale
    assert result.params < sum(p.numel() for p in session.model.parameters())
    assert not any("normalise" in note for note in session.notes)
    assert group.shared_norms == ()


def test_layernorm_width_without_the_shared_statistics_matches() -> None:
    # The same ConvNeXt without its LayerNorms: masking is removing again, and differs
    # stays empty.
    torch.manual_seed(0)
    model = ConvNeXt(16, 2, 10).eval()
    for block in model.blocks:
        block.block[2] = nn.Identity()
    model.norm = nn.Identity()
    session = PruningSession(model, _images())
    session.apply(_width_plan("convnext", 0.5))
    result = slim(session)
    assert result.differs == ()
    x = _images()
    with torch.no_grad():
        scale = float(session.model(x).abs().max())
    assert max_abs_diff(session.model, result.model, x) <= 1e-5 * scale


class _GroupNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.norm = nn.GroupNorm(2, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.norm(self.conv(x)).mean(dim=(2, 3)))


def test_groupnorm_with_several_channels_per_group_is_refused_with_the_reason() -> None:
    session = PruningSession(_GroupNormNet().eval(), _images())
    with pytest.raises(PlanError, match=r"GroupNorm.*2 groups"):
        session.apply(Plan().with_layer("conv", LayerPlan("filter", "l1", 0.25)))


def _convnext_bench(norms: bool = True) -> Workbench:
    torch.manual_seed(0)
    model = ConvNeXt(16, 2, 4).eval()
    if not norms:
        for block in model.blocks:
            block.block[2] = nn.Identity()
        model.norm = nn.Identity()
    g = torch.Generator().manual_seed(3)
    data = TensorData(torch.randn(48, 3, 32, 32, generator=g), torch.randint(0, 4, (48,),
                      generator=g), Task.CLASSIFICATION, "images")
    bench = build_workbench("convnext", model, data.x[:2], data, None)
    bench.session.apply(_width_plan("convnext", 0.5))
    return bench


def test_forms_measure_a_differing_slim_on_its_own() -> None:
    bench = _convnext_bench()
    forms = measure_forms(bench.session, bench.eval_data.x[:8], latency=False,
                          data=bench.eval_data)
    assert {r.split(" ")[0] for r in forms.slim_differs} == {"norm", "blocks.0.block.2",
                                                             "blocks.1.block.2"}
    slimmed = forms.slimmed
    assert slimmed.params > 0
    assert slimmed.max_abs_diff is not None
    assert slimmed.max_abs_diff > 1e-4
    assert forms.slim_model is not None
    own = evaluate(forms.slim_model, bench.eval_data)
    assert slimmed.evaluation.samples == 48
    assert slimmed.evaluation.metric == own.metric
    note = slimmed.note or ""
    assert "not the masked model, by design" in note
    assert f"accuracy {own.metric:.4g} on 48 samples" in note
    assert slimmed.to_dict()["metric"] == own.metric


def test_forms_of_an_exact_slim_are_not_evaluated_apart() -> None:
    bench = _convnext_bench(norms=False)
    forms = measure_forms(bench.session, bench.eval_data.x[:8], latency=False,
                          data=bench.eval_data)
    assert forms.slim_differs == ()
    assert forms.slimmed.evaluation.samples == 0
    assert forms.slimmed.max_abs_diff is not None
    assert forms.slimmed.max_abs_diff <= 1e-4
    assert "metric" not in forms.slimmed.to_dict()


def test_export_check_states_the_difference_instead_of_failing(tmp_path: Path) -> None:
    bench = _convnext_bench()
    result = slim(bench.session)
    save_slimmed(bench.name, bench.pristine, result.model, bench.eval_data.x[:2],
                 tmp_path / "slim")
    checks = {c.name: c for c in verify_bundle(bench, tmp_path, slim_model=result.model)}
    assert checks["slimmed model reloads from slim/"].passed
    own = checks["slimmed model measured on its own (by design not the masked model)"]
    assert own.passed
    assert "blocks.0.block.2 normalises over all 16 channels; after removal its statistics " \
        "use 8" in own.detail
    assert "slimmed model computes what the masked model computes" not in checks


@pytest.mark.parametrize("name", ["bert", "vit_b_16", "llama", "convnext"])
def test_slimmed_width_reloads_from_its_card(name: str) -> None:
    session = _session(name)
    session.apply(_width_plan(name))
    slimmed = slim(session).model
    card = architecture_card(name, _model(name), slimmed)
    rebuilt = build_from_card(card, _model(name))
    rebuilt.load_state_dict(slimmed.state_dict(), strict=True)
    x = MODELS[name][1]()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), slimmed(x))
    assert sum(p.numel() for p in rebuilt.parameters()) == card["params"]


def test_cli_prune_slim_measures_the_width_slim_on_its_own(tmp_path: Path) -> None:
    from fixtures.user_models.embed_transformer import sample_data

    x, y = sample_data(48)
    np.savez(tmp_path / "tokens.npz", x=x.numpy(), y=y.numpy())
    plan = Plan().with_layer("encoder.linear2", LayerPlan("filter", "l1", 0.25))
    (tmp_path / "plan.json").write_text(plan.to_json())
    factory = Path(__file__).parent / "fixtures/user_models/embed_transformer.py"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["prune", f"{factory}:build", "--data", str(tmp_path / "tokens.npz"),
                     "--plan", str(tmp_path / "plan.json"), "--slim", "--json",
                     "--out", str(tmp_path / "out")])
    assert code == 0
    out = json.loads(buffer.getvalue())
    assert [r.split(" ")[0] for r in out["slim_differs"]] == ["encoder.norm1",
                                                               "encoder.norm2", "norm"]
    assert out["slim"]["metric_name"] == "accuracy"
    assert out["slim"]["eval_samples"] == 48
    assert "not the masked model, by design" in out["slim"]["note"]
    assert any("normalise all its channels together" in n for n in out["notes"])
    assert (tmp_path / "out/slim/slim.safetensors").is_file()


def test_attention_heads_and_width_slim_exactly_without_layer_norms() -> None:
    # torchvision's ViT with its LayerNorms taken out: a uniform filter plan prunes every
    # MultiheadAttention's heads *and* the hidden width through it; slimming (heads first,
    # then the width of the SlimAttention that took its place) must be exact.
    torch.manual_seed(0)
    model = zoo.vit_b_16(32, 8, 32, 2, 4, 64, num_classes=10).eval()
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.LayerNorm):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, nn.Identity())
    session = PruningSession(model, _images())
    session.apply(session.uniform_plan(0.5, "filter", "l1")[0])
    units = {session.groups[g].unit for g in session.pruned_units()}
    assert units == {"channel", "head"}
    result = slim(session)
    assert result.differs == ()
    attention = result.model.get_submodule("encoder.layers.encoder_layer_0.self_attention")
    assert isinstance(attention, SlimAttention)
    assert (attention.num_heads, attention.embed_dim) == (2, 16)
    x = _images()
    with torch.no_grad():
        scale = float(session.model(x).abs().max())
    assert max_abs_diff(session.model, result.model, x) <= 1e-5 * scale


class _RMSNormResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.norm = nn.RMSNorm(16)
        self.b = nn.Linear(16, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.a(x)
        return self.head(h + self.b(self.norm(h)))


def test_torch_rmsnorm_width_slims_with_its_normalized_shape_and_reloads() -> None:
    torch.manual_seed(0)
    model = _RMSNormResidual().eval()
    session = PruningSession(model, torch.randn(4, 8))
    group = session.group_of("a")
    assert group is not None
    assert group.shared_norms == ("norm",)
    assert ("norm.weight", "param") in {(m.module, m.kind) for m in group.members}
    session.apply(Plan().with_layer("a", LayerPlan("filter", "l1", 0.25)))
    result = slim(session)
    norm = result.model.get_submodule("norm")
    assert isinstance(norm, nn.RMSNorm)
    assert norm.normalized_shape == (12,)
    assert result.differs == ("norm normalises over all 16 channels; after removal its "
                              "statistics use 12",)
    rebuilt = build_from_card(architecture_card("rms", model, result.model), model)
    rebuilt.load_state_dict(result.model.state_dict(), strict=True)
    x = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), result.model(x))


class _EmbeddingBag(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.fc = nn.Linear(16, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(torch.relu(self.fc(self.emb(ids).mean(dim=1))))


def test_an_embedding_read_without_a_residual_is_a_group_of_its_readers_channels() -> None:
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (4, 6), generator=torch.Generator().manual_seed(0))
    session = PruningSession(_EmbeddingBag().eval(), ids)
    group = session.group_of("fc", Granularity.CHANNEL)
    assert group is not None
    assert {(m.module, m.kind) for m in group.members} == {("emb", "embed"), ("fc", "in")}
    assert group.shared_norms == ()
    session.apply(Plan().with_layer("fc", LayerPlan("channel", "l1", 0.25)))
    emb = dict(session.model.named_parameters())["emb.weight"]
    assert int((emb == 0).all(dim=0).sum()) == 4
    result = slim(session)
    assert result.differs == ()
    model = result.model
    assert model.get_submodule("emb").embedding_dim == 12
    assert max_abs_diff(session.model, model, ids) <= 1e-6
