"""--device: the option and its resolution, a CPU run through the CLI, latency that names
its device, the whole device path on a pretend accelerator (fixtures/fake_device.py: no
GPU needed), and the same on a real GPU where there is one."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fixtures.fake_device import FAKE, FakeAccelerator, iter_problems
from safetensors.torch import load_file
from torch import nn

import pruneviz.data.sources as sources
import pruneviz.measure.metrics as metrics
import pruneviz.measure.timing as timing
from pruneviz import Plan, open_workbench
from pruneviz.cli import main
from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import GlobalPlan, LayerPlan
from pruneviz.data.sources import (
    Source,
    add_source_arguments,
    resolve_device,
    source_from_args,
    source_options,
    with_model,
)
from pruneviz.errors import DeviceError, PrunevizError
from pruneviz.measure.metrics import Latency, measure_latency
from pruneviz.measure.timing import time_against
from pruneviz.output.bundle import export_bundle
from pruneviz.workflows.workbench import Workbench

NO_CUDA = not torch.cuda.is_available()


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_source_arguments(parser)
    return parser.parse_args(["sample:digits_mlp", *argv])


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


# -- the option -----------------------------------------------------------------------------
def test_auto_is_cuda_when_available_else_the_cpu() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device() == resolve_device("auto")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(("argv", "device"), [((), "auto"), (("--device", "cpu"), "cpu"),
                                              (("--device", "cuda"), "cuda"),
                                              (("--device", "cuda:1"), "cuda:1")])
def test_the_option_names_the_sources_device(argv: tuple[str, ...], device: str) -> None:
    source = source_from_args(_parse(*argv))
    assert source.device == device
    # Reopening it names the device it was asked for (auto: nothing to say).
    options = source_options(source)
    assert options == ([] if device == "auto" else ["--device", device])
    assert ("device" in source.describe()) == (device != "auto")
    # Another model in the app keeps the device, not the user's data options.
    other = with_model(source, "sample:digits_cnn")
    assert (other.model, other.device) == ("sample:digits_cnn", device)


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:x", "mps", ""])
def test_other_device_names_are_refused(name: str) -> None:
    with pytest.raises(argparse.ArgumentError, match="use auto, cpu, cuda or cuda:N"):
        _parse("--device", name)
    with pytest.raises(DeviceError, match=f"unknown device {name!r}"):
        resolve_device(name)


def test_a_gpu_is_named_with_its_index(monkeypatch: pytest.MonkeyPatch) -> None:
    # A machine with two GPUs, the second one current, as torch would report it.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match=r"2 CUDA device\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:2")


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_says_to_use_the_cpu(name: str) -> None:
    with pytest.raises(DeviceError) as caught:
        resolve_device(name)
    message = str(caught.value)
    assert isinstance(caught.value, PrunevizError)
    assert "CUDA is not available here" in message
    assert "use --device cpu" in message
    assert "\n" not in message
    with pytest.raises(DeviceError, match="CUDA is not available here"):
        sources.load_source(Source(device=name))


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_the_cli_refuses_cuda_without_a_gpu_in_one_line() -> None:
    code, out, err = _cli("evaluate", "sample:digits_mlp", "--device", "cuda", "--json")
    assert code == 2
    assert out == ""
    assert err.strip().count("\n") == 0
    assert "CUDA is not available here" in err
    assert "--device cpu" in err


# -- a CPU run --------------------------------------------------------------------------------
@pytest.mark.slow
def test_evaluate_on_the_cpu_through_the_cli() -> None:
    code, out, err = _cli("evaluate", "sample:digits_cnn", "--device", "cpu", "--sparsity",
                          "0.5", "--granularity", "filter", "--latency", "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["latency"]["device"] == "cpu"
    assert data["latency_reference"]["device"] == "cpu"
    assert 0.5 < data["metric"] <= 1.0
    code, text, _ = _cli("evaluate", "sample:digits_mlp", "--device", "cpu", "--latency")
    assert code == 0
    assert "ms median (on CPU, batch 64," in text


def test_load_source_puts_model_and_data_on_the_device() -> None:
    loaded = sources.load_source(Source(model="sample:digits_mlp", device="cpu"))
    assert loaded.device == torch.device("cpu")
    assert loaded.eval_data.device == loaded.example_input.device == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in loaded.model.parameters())


# -- latency ----------------------------------------------------------------------------------
def test_latency_says_where_it_was_measured() -> None:
    model, example = nn.Linear(6, 3), torch.randn(4, 6)
    latency = measure_latency(model, example, runs=3, warmup=1)
    assert latency.device == "cpu"
    assert latency.conditions() == f"on CPU, batch 4, {latency.threads} threads, 3 runs"
    timing = time_against([model], nn.Linear(6, 3), example, runs=2, warmup=0)
    assert [lat.device for lat in (timing.reference, *timing.candidates)] == ["cpu", "cpu"]
    gpu = Latency(1.0, 0.9, 1.1, 64, 2, 20, device="cuda:0")
    assert gpu.conditions() == "on cuda:0, batch 64, 20 runs"  # CPU threads do not run it


def test_every_timed_pass_waits_for_its_device(monkeypatch: pytest.MonkeyPatch) -> None:
    waited: list[torch.device] = []
    monkeypatch.setattr(timing, "synchronize", waited.append)
    measure_latency(nn.Linear(6, 3), torch.randn(4, 6), runs=5, warmup=2)
    # before and after each pass (the 2 warm-up ones too: they are run the same way)
    assert waited == [torch.device("cpu")] * 14


def test_synchronize_waits_for_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "synchronize", calls.append)
    metrics.synchronize(torch.device("cpu"))
    metrics.synchronize(torch.device("cuda:1"))
    assert calls == [torch.device("cuda:1")]


# -- the device path on a pretend accelerator ---------------------------------------------------
def test_the_pretend_accelerator_catches_device_mixups() -> None:
    mode = FakeAccelerator()
    with mode:
        on = torch.arange(4.0, device=FAKE)
        moved = torch.ones(4).to(on.device)
        assert on.device == moved.device == FAKE
        assert torch.equal(on + moved, torch.arange(1.0, 5.0).to(FAKE))
        assert not mode.problems
        _ = on + torch.ones(4)
        _ = torch.ones(4)[torch.tensor([1, 2], device=FAKE)]
        _ = on.numpy()
        _ = on.cpu().numpy() + on[torch.tensor([0])].cpu().numpy()  # allowed
        assert torch.ones(3)[:2].device == torch.device("cpu")
    problems = list(iter_problems(mode))
    assert len(problems) == 3, problems
    assert "mixes" in problems[0]
    assert "indexed" in problems[1]
    assert "numpy" in problems[2]


@pytest.fixture
def accelerator(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAccelerator]:
    """load_source puts models and data on the pretend accelerator."""
    monkeypatch.setattr(sources, "resolve_device", lambda name="auto": FAKE)
    mode = FakeAccelerator()
    with mode:
        yield mode


PLANS = {
    "digits_resnet": [  # coupled groups, global ranking, data-driven and random criteria
        Plan(global_=GlobalPlan(sparsity=0.4, granularity=Granularity.FILTER, criterion="l2")),
        Plan(global_=GlobalPlan(sparsity=0.3, granularity=Granularity.CHANNEL,
                                criterion="taylor")),
        Plan({"fc": LayerPlan(Granularity.UNSTRUCTURED, "l1", sparsity=0.5)},
             blocks=("layer1",)),  # a residual block removed
    ],
    "digits_cnn": [
        Plan({"conv2": LayerPlan(Granularity.FILTER, "apoz", sparsity=0.5),
              "fc": LayerPlan(Granularity.UNSTRUCTURED, "random", sparsity=0.6)}),
        Plan({"conv1": LayerPlan(Granularity.FILTER, "fpgm", sparsity=0.25),
              "conv2": LayerPlan(Granularity.FILTER, "lsh", sparsity=0.3),
              "fc": LayerPlan(Granularity.NM_2_4, "l1")}),
    ],
}


def _run_plans(bench: Workbench, plans: list[Plan]) -> None:
    bench.meter.latency_runs = 3
    for plan in plans:
        bench.session.apply(bench.session.stamp(plan))
        report = bench.meter.report(latency=True)
        assert report.latency is not None
        assert report.latency.device == str(FAKE)
        assert report.params_nonzero < bench.baseline.params_nonzero
        for layer in bench.session.layers:
            assert bench.session.mask(layer.name).device == FAKE


@pytest.mark.slow
@pytest.mark.parametrize("sample", sorted(PLANS))
def test_prune_measure_and_export_on_the_device(accelerator: FakeAccelerator, tmp_path: Path,
                                                sample: str) -> None:
    bench = open_workbench(f"sample:{sample}")
    assert bench.eval_data.device == bench.session.example_input.device == FAKE
    _run_plans(bench, PLANS[sample])
    result = export_bundle(bench, tmp_path)
    assert result.passed, [c.detail for c in result.checks if not c.passed]
    problems = list(iter_problems(accelerator))
    assert not problems, "\n".join(problems)
    weights = load_file(str(tmp_path / "weights.safetensors"))
    assert all(t.device.type == "cpu" for t in weights.values())


@pytest.mark.slow
def test_cli_verbs_on_the_device(accelerator: FakeAccelerator, tmp_path: Path) -> None:
    runs = [
        ("evaluate", "sample:digits_lstm", "--sparsity", "0.3", "--granularity", "filter",
         "--int8", "--low-rank", "0.5", "--latency", "--json"),
        ("prune", "sample:digits_mlp", "--sparsity", "0.9", "--slim", "--latency", "--out",
         str(tmp_path / "prune"), "--json"),
        ("sensitivity", "sample:digits_mlp", "--levels", "0.5", "--granularity", "filter",
         "--criterion", "activation", "--json"),
        ("finetune", "sample:digits_cnn", "--sparsity", "0.5", "--granularity", "filter",
         "--epochs", "1", "--max-steps", "3", "--distill", "--out", str(tmp_path / "ft"),
         "--json"),
    ]
    outputs = []
    for argv in runs:
        code, out, err = _cli(*argv)
        assert (code, err) == (0, ""), argv
        outputs.append(json.loads(out))
    problems = list(iter_problems(accelerator))
    assert not problems, "\n".join(problems)
    combined = {m["technique"]: m for m in outputs[0]["combined"]}
    assert combined["prune+int8"]["latency_device"] == "cpu"  # quantized kernels: CPU only
    assert combined["prune+svd r=50%"]["latency_device"] == str(FAKE)
    assert outputs[1]["slim"]["latency_device"] == str(FAKE)


# -- a real GPU ----------------------------------------------------------------------------------
@pytest.mark.skipif(NO_CUDA, reason="needs CUDA: the device path on a real GPU")
def test_prune_measure_and_export_on_cuda(tmp_path: Path) -> None:
    bench = open_workbench(Source(model="sample:digits_resnet", device="cuda"))
    assert bench.eval_data.device.type == "cuda"
    assert next(bench.model.parameters()).device.type == "cuda"
    bench.session.apply(bench.session.uniform_plan(0.4, Granularity.FILTER, "taylor")[0])
    assert bench.session.mask(bench.session.layer_names[0]).device.type == "cuda"
    bench.session.apply(bench.session.uniform_plan(0.4, Granularity.FILTER, "l1")[0])
    report = bench.meter.report(latency=True)
    assert report.latency is not None
    assert report.latency.device.startswith("cuda:")
    assert report.evaluation.metric > 0.5
    result = export_bundle(bench, tmp_path, latency=True)
    assert result.passed, [c.detail for c in result.checks if not c.passed]
    weights = load_file(str(tmp_path / "weights.safetensors"))
    assert all(t.device.type == "cpu" for t in weights.values())
    # The same plan on the CPU prunes (nearly: float sums in another order) the same.
    cpu = open_workbench(Source(model="sample:digits_resnet", device="cpu"))
    cpu.session.apply(cpu.session.stamp(bench.session.plan))
    assert cpu.evaluate_full().metric == pytest.approx(bench.evaluate_full().metric, abs=0.02)


# -- the app --------------------------------------------------------------------------------------
def test_the_apps_start_arguments_take_a_device() -> None:
    from pruneviz.app import state

    source, problem = state.startup_source(("--model", "sample:digits_mlp", "--device", "cpu"))
    assert (source.model, source.device, problem) == ("sample:digits_mlp", "cpu", None)
    assert state.with_model(source, "sample:digits_cnn").device == "cpu"
    _, problem = state.startup_source(("--device", "gpu"))
    assert problem is not None
    assert "unknown device 'gpu'" in problem
    if NO_CUDA:
        source, problem = state.startup_source(("--model", "sample:digits_mlp", "--device",
                                                "cuda"))
        assert source == Source()  # the default sample, on the default device
        assert problem is not None
        assert "CUDA is not available here" in problem
    assert state.device_label(torch.device("cpu")) == "the CPU"


@pytest.mark.slow
def test_the_model_page_says_where_the_tab_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from fixtures import apptest

    at = apptest.start(None, argv=["--model", "sample:digits_mlp", "--device", "cpu"],
                       monkeypatch=monkeypatch, no_errors=True)
    bench = apptest.bench_of(at)
    assert bench.eval_data.device == next(bench.model.parameters()).device == torch.device("cpu")
    assert bench.source is not None
    assert bench.source.device == "cpu"
    assert any("This tab runs on **the CPU**" in c.value for c in at.caption)


# -- torchrun ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "environ", "gpus", "device"), [
    ("cuda", {"WORLD_SIZE": "4", "LOCAL_RANK": "3"}, 2, "cuda:1"),  # the GPU of its rank
    ("auto", {"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, 2, "cuda:1"),
    ("auto", {"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, 0, "auto"),  # no GPU: the CPU
    ("cuda:0", {"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, 2, "cuda:0"),  # asked for: kept
    ("cpu", {"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, 2, "cpu"),
    ("cuda", {}, 2, "cuda"),  # one process
])
def test_each_torchrun_process_takes_the_gpu_of_its_local_rank(
        name: str, environ: dict[str, str], gpus: int, device: str) -> None:
    from pruneviz.cli.distributed import rank_device

    assert rank_device(name, environ, gpus) == device
