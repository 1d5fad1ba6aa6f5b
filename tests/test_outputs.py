"""Issue 18, "never claim what does not hold": the model's outputs are found through the
traced graph (whatever functions follow the output layer), every slim is checked against
the masked model before anyone sees it, unused layers are recognised as dead.
"""

from __future__ import annotations

import importlib.util
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from fixtures import zoo
from fixtures.outputs import ENDINGS, images
from safetensors.torch import load_file
from torch import nn

from pruneviz.cli import main
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
        assert "model's output" in skipped["pooler.dense"]  # the pooled output's layer


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


def test_an_unused_layer_is_not_ranked_by_sensitivity_or_global_allocation() -> None:
    from pruneviz.workflows.sensitivity import sensitivity_items

    model = zoo.bert(100, 32, 2, 4, 64, 16, output="hidden").eval()
    session = PruningSession(model, torch.randint(1, 100, (2, 8)))
    for granularity in ("unstructured", "filter"):
        items = sensitivity_items(session, granularity)
        assert items
        assert all("pooler.dense" not in item.layers for item in items)
    plan, skipped = session.global_plan(0.3, "unstructured")
    assert plan.global_ is not None
    assert plan.global_.layers is not None
    assert "pooler.dense" not in plan.global_.layers
    assert "model's output" in skipped["pooler.dense"]  # the pooled output's layer


# -- local and global scope skip alike -------------------------------------------------------
def test_global_scope_skips_what_local_scope_skips() -> None:
    model = zoo.bert(100, 32, 2, 4, 64, 16).eval()
    session = PruningSession(model, torch.randint(1, 100, (2, 8)))
    local_plan, local_skipped = session.uniform_plan(0.3, "filter", "l1")
    global_plan, global_skipped = session.global_plan(0.3, "filter", "l1")
    assert local_skipped  # the residual stream's writers, the pooler (the output)
    assert global_skipped == local_skipped
    assert global_plan.global_ is not None
    assert set(global_plan.global_.layers or ()) == set(local_plan.layers)
    session.apply(global_plan)  # once exited with a PlanError on the first unsupported group
    assert sum(r.structures_pruned for r in session.results()) > 0


# -- strict JSON -------------------------------------------------------------------------------
def test_safe_json_turns_non_finite_numbers_into_null_with_a_reason() -> None:


    from pruneviz.output.json_safe import safe_json

    text = safe_json({"max_abs_diff": float("nan"), "ok": 1.5,
                      "rows": [float("inf"), 2, {"x": float("-inf")}], "s": "NaN"})
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert data["max_abs_diff"] is None
    assert "NaN" in data["max_abs_diff_reason"]
    assert data["ok"] == 1.5
    assert data["rows"][0] is None
    assert data["rows"][2] == {"x": None, "x_reason": data["rows"][2]["x_reason"]}
    assert "infinity" in data["rows"][2]["x_reason"]
    assert data["s"] == "NaN"


# -- the command line ----------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
OUTPUT_FIXTURES = ROOT / "tests" / "fixtures" / "outputs.py"
BERT = USER_MODELS / "flexible_bert.py"


@dataclass(frozen=True)
class Run:
    """A finished CLI run."""

    returncode: int
    stdout: str
    stderr: str


def run_all(commands: dict[str, list[str]], home: Path) -> dict[str, Run]:
    """Run the CLI's `main` on each command in this process (saved files under `home`).
    The command as a subprocess, `python -m pruneviz`, is tests/test_cli.py's subject;
    here what matters is what each verb prints and writes."""
    results: dict[str, Run] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("PRUNEVIZ_DEBUG", raising=False)  # errors as users see them
        patch.setenv("PRUNEVIZ_HOME", str(home))
        for key, args in commands.items():
            stdout, stderr = io.StringIO(), io.StringIO()
            with redirect_stdout(stdout), redirect_stderr(stderr):
                code = main(args)
            results[key] = Run(code, stdout.getvalue(), stderr.getvalue())
    return results


def _strict(text: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(
        text, parse_constant=lambda c: pytest.fail(f"--json printed {c}: not JSON"))
    return data


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Run]]:
    root = tmp_path_factory.mktemp("outputs_cli")
    x = images(24, seed=7)
    np.savez(root / "images.npz", x=x.numpy(),
             y=(torch.arange(24) % 10).numpy())
    ids, target = _flexible_bert().sample_data(32)
    np.savez(root / "bert.npz", x=ids.numpy(), y=target.numpy())
    images_npz, bert_npz = str(root / "images.npz"), str(root / "bert.npz")
    commands = {
        name: ["prune", f"{OUTPUT_FIXTURES}:{name}", "--data", images_npz, "--sparsity",
               "0.3", "--granularity", "filter", "--slim", "--json", "--out",
               str(root / name)]
        for name in ENDINGS
    }
    commands["bert_slim"] = ["prune", f"{BERT}:build", "--data", bert_npz, "--sparsity", "0.25",
                             "--granularity", "filter", "--slim", "--json", "--out",
                             str(root / "bert_slim")]
    commands["bert_export"] = ["export", f"{BERT}:build", "--data", bert_npz, "--sparsity",
                               "0.25", "--granularity", "filter", "--json", "--out",
                               str(root / "bert_export")]
    commands["bert_global"] = ["prune", f"{BERT}:build", "--data", bert_npz, "--sparsity",
                               "0.3", "--granularity", "filter", "--scope", "global",
                               "--json", "--out", str(root / "bert_global")]
    commands["sensitivity"] = ["sensitivity", f"{OUTPUT_FIXTURES}:squeezenet", "--data",
                               images_npz, "--granularity", "filter", "--levels", "0.5",
                               "--json"]
    return root, run_all(commands, root / "home")


@pytest.mark.parametrize("name", ENDINGS)
def test_cli_filter_plan_keeps_every_output_filter(cli_runs: tuple[Path, dict[str, Run]],
                                                    name: str) -> None:
    root, runs = cli_runs
    run = runs[name]
    assert run.returncode == 0, run.stderr
    data = _strict(run.stdout)
    output = ENDINGS[name][1]
    skipped = data["skipped_layers"]
    assert isinstance(skipped, dict)
    assert "model's output" in skipped[output]
    weights = load_file(str(root / name / "weights.safetensors"))
    rows = weights[f"{output}.weight"].flatten(1)
    assert (rows != 0).any(dim=1).all()  # not one class filter zeroed
    assert (root / name / "slim").is_dir()  # and the slim, checked, was written


def test_cli_slim_that_does_not_match_fails_and_writes_nothing(
        cli_runs: tuple[Path, dict[str, Run]]) -> None:
    root, runs = cli_runs
    run = runs["bert_slim"]
    assert run.returncode == 2
    assert run.stdout == ""
    assert "does not compute what the masked model computes" in run.stderr
    assert "encoder.layer.0.attention.self" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (root / "bert_slim").exists()


def test_cli_export_of_a_slim_that_does_not_match_fails_and_writes_nothing(
        cli_runs: tuple[Path, dict[str, Run]]) -> None:
    root, runs = cli_runs
    run = runs["bert_export"]
    assert run.returncode == 2
    assert "encoder.layer.0.attention.self" in run.stderr
    assert "--no-slim" in run.stderr
    assert not (root / "bert_export").exists()


def test_cli_global_scope_skips_unsupported_layers(cli_runs: tuple[Path, dict[str, Run]]) -> None:
    run = cli_runs[1]["bert_global"]
    assert run.returncode == 0, run.stderr
    data = _strict(run.stdout)
    skipped = data["skipped_layers"]
    assert isinstance(skipped, dict)
    assert "model's output" in skipped["pooler.dense"]  # the pooled output's layer
    assert "encoder.layer.0.intermediate.dense" not in skipped  # the rest is ranked


def test_cli_sensitivity_json_is_strict(cli_runs: tuple[Path, dict[str, Run]]) -> None:
    run = cli_runs[1]["sensitivity"]
    assert run.returncode == 0, run.stderr
    _strict(run.stdout)


# -- the Deploy page -----------------------------------------------------------------------------
def test_deploy_page_shows_a_mismatching_slim_in_red_without_a_download(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fixtures import apptest
    from fixtures.apptest import bench_of

    ids, target = _flexible_bert().sample_data(32)
    np.savez(tmp_path / "bert.npz", x=ids.numpy(), y=target.numpy())
    at = apptest.start(None, "app_pages/deploy.py", timeout=120, monkeypatch=monkeypatch,
                       argv=["--model", f"{BERT}:build", "--data", str(tmp_path / "bert.npz")])
    session = bench_of(at).session
    session.apply(_attention_plan(session, 0.25))
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("does not compute what the masked model computes" in e
               and "encoder.layer.0.attention.self" in e for e in errors), errors
    assert not at.get("download_button")
