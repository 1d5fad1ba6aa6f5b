"""Files that run the pruned model elsewhere (pruneviz/output/deploy_files.py): ONNX run
in onnxruntime, the .pt2 program with a dynamic batch and none of the user's data, the
masked model's ONNX with sparse initializers, and the CSR file that `pruneviz.load_sparse`
rebuilds; each checked against the model in memory, and one whose check fails never
written. On the four digits samples (slimmed by a 50% filter plan) and one tiny zoo model
of each kind of graph that slims today (see EXPORTED), each exported once."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from fixtures.sessions import pruned_bench
from test_zoo import SLIMS, TINY
from torch import Tensor, nn

import pruneviz
from pruneviz.cli import main
from pruneviz.core.session import PruningSession
from pruneviz.core.slim import slim
from pruneviz.errors import ModelError
from pruneviz.measure.sparse import SparseConv1x1, SparseLinear
from pruneviz.measure.storage import dense_bytes
from pruneviz.output import deploy_files
from pruneviz.output.deploy_files import (
    CSR_FILE,
    FAILED,
    ONNX,
    PASSED,
    PROGRAM,
    SKIPPED,
    SPARSE_ONNX,
    DeployFile,
    agreement,
    deployment_files,
)
from pruneviz.output.model_files import architecture_card, fresh_example, program_bytes
from pruneviz.output.sparse_file import csr_model, load_sparse_bytes, save_sparse

SAMPLES = ["digits_mlp", "digits_cnn", "digits_resnet", "digits_lstm"]
# One tiny zoo model per kind of graph (a dynamo ONNX export takes 5-30 s on 2 cores).
# Left out as the same kind as one here: resnet50 (conv/BN/ReLU blocks added to their
# shortcut: digits_resnet), vit_timm (attention as Linear, reshape/permute, matmul and
# softmax: bert; its patch embedding: vit_b_16), llama_mha and llama_gqa_norope (llama_gqa
# with fewer ops: no repeated kv heads, no rotary embedding), two_lstms (one-layer LSTMs
# and a Linear: digits_lstm, stacked_lstm). test_zoo checks every one of them slims.
ZOO_KINDS = [
    "densenet121",  # channel concatenation
    "vit_b_16",  # nn.MultiheadAttention, patch embedding
    "bert",  # token ids, embeddings, attention written out, a pooler
    "llama_gqa",  # RMSNorm, rotary embedding, repeated kv heads, causal SDPA
    "stacked_lstm",  # a 3-layer nn.LSTM
]
EXPORTED = [*SAMPLES, *ZOO_KINDS]
assert set(ZOO_KINDS) <= set(SLIMS)


@cache
def _sample(name: str) -> tuple[nn.Module, nn.Module, Tensor, dict[str, object], nn.Module]:
    """(slimmed, masked, eval inputs, masked card, pristine) of a sample pruned by a 50%
    filter plan."""
    bench = pruned_bench(f"sample:{name}", "filter")
    slimmed = slim(bench.session).model.eval()
    card = architecture_card(bench.name, bench.pristine, bench.model)
    return slimmed, bench.model.eval(), bench.eval_data.x, card, bench.pristine


@cache
def _zoo(name: str) -> tuple[nn.Module, nn.Module, Tensor, dict[str, object], nn.Module]:
    """The same for a tiny zoo model, on 64 random inputs of its kind."""
    build, inputs, _ = TINY[name]
    torch.manual_seed(0)
    model = build().eval()
    session = PruningSession(model, inputs())
    session.apply(session.uniform_plan(0.5, "filter", "l1")[0])
    x = torch.cat([inputs() for _ in range(32)])
    card = architecture_card("zoo", model, session.model)
    return slim(session).model.eval(), session.model.eval(), x, card, model


def _case(name: str) -> tuple[nn.Module, nn.Module, Tensor, dict[str, object], nn.Module]:
    return _zoo(name) if name in TINY else _sample(name)


def _ort_outputs(data: bytes, x: Tensor) -> np.ndarray:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    return np.asarray(session.run(None, {name: x.numpy()})[0])


def _rows(rows: list[DeployFile]) -> dict[str, DeployFile]:
    return {row.name: row for row in rows}


def _not_made(masked: nn.Module, x: Tensor, dense: bytes | None
              ) -> tuple[bytes | None, DeployFile]:
    return None, DeployFile(SPARSE_ONNX, SKIPPED, "not made in this test")


@dataclass(frozen=True)
class Export:
    """One model's deployment files, made once by `deployment_files`."""

    name: str
    slimmed: nn.Module
    masked: nn.Module
    x: Tensor
    base: nn.Module
    files: dict[str, bytes]
    rows: dict[str, DeployFile]


@cache
def _exported(name: str) -> Export:
    """The deployment files of the slimmed `name`. The masked model's sparse ONNX (a
    second export, of the masked model) is not made: test_cli_export_... checks it."""
    slimmed, masked, x, card, base = _case(name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(deploy_files, "_sparse_onnx_file", _not_made)
        files, rows = deployment_files(slimmed, masked, x, what="slimmed", card=card,
                                       base_model=base)
    return Export(name, slimmed, masked, x, base, files, _rows(rows))


@pytest.fixture(scope="module", params=[
    pytest.param(name, marks=pytest.mark.slow) for name in EXPORTED])
def exported(request: pytest.FixtureRequest) -> Export:
    name: str = request.param
    return _exported(name)


def _batches(x: Tensor) -> list[Tensor]:
    """1 and 64 samples of `x` (repeated when it has fewer)."""
    return [x[:n] if len(x) >= n else x.repeat(n, *([1] * (x.dim() - 1)))[:n] for n in (1, 64)]


# -- every kind of model that slims: ONNX and .pt2 of the slimmed model, CSR of the masked one
def test_slimmed_model_onnx_runs_in_onnxruntime(exported: Export) -> None:
    row = exported.rows[ONNX]
    assert row.status == PASSED, row.detail
    # opset >= 17, a dynamic batch, and onnxruntime computes the slimmed model at batch 1
    # and 64 (checked here independently of the export's own check)
    data = exported.files[ONNX]
    proto = onnx.load_from_string(data)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    for batch in _batches(exported.x):
        with torch.inference_mode():
            expected = exported.slimmed(batch)
        got = torch.from_numpy(np.asarray(session.run(None, {name: batch.numpy()})[0]))
        assert got.shape == expected.shape
        assert float((got - expected).abs().max()) <= 1e-4 * max(1.0, float(expected.abs().max()))
        if expected.dim() == 2:
            assert torch.equal(got.argmax(1), expected.argmax(1))


def test_slimmed_model_program_reloads_and_runs(exported: Export) -> None:
    row = exported.rows[PROGRAM]
    assert row.status == PASSED, row.detail
    program = torch.export.load(io.BytesIO(exported.files[PROGRAM])).module()
    for batch in _batches(exported.x):
        with torch.inference_mode():
            expected = exported.slimmed(batch)
        assert torch.allclose(program(batch), expected, atol=1e-5)


def test_masked_model_csr_file_reloads_with_load_sparse(exported: Export) -> None:
    row = exported.rows[CSR_FILE]
    if row.status != PASSED:  # no layer sparse enough
        assert row.status == SKIPPED, row.detail
        assert "nothing to run as CSR" in row.detail
        return
    reloaded = load_sparse_bytes(exported.files[CSR_FILE], exported.base)
    assert any(isinstance(m, SparseLinear | SparseConv1x1) for m in reloaded.modules())
    with torch.inference_mode():
        ok, detail = agreement([reloaded(exported.x)], [exported.masked(exported.x)])
    assert ok, detail


# -- the .pt2 program ------------------------------------------------------------------------
@pytest.mark.parametrize("name", [
    "digits_mlp",
    pytest.param("digits_cnn", marks=pytest.mark.slow),
    pytest.param("digits_lstm", marks=pytest.mark.slow),
])
def test_program_has_a_dynamic_batch_and_none_of_the_data(name: str) -> None:
    slimmed, _, x, _, _ = _sample(name)
    data = x.repeat(8, *([1] * (x.dim() - 1)))  # 3,600 samples: 0.9 MB of data
    file = program_bytes(slimmed, data)
    weights = len(dense_bytes(slimmed.state_dict()))
    # the weights and the graph, not the weights and the data
    assert len(file) < weights + 200_000 < weights + data.numel() * data.element_size()
    for sample in (data[5], data[123], data[-1]):
        assert sample.numpy().tobytes() not in file
    program = torch.export.load(io.BytesIO(file)).module()
    with torch.inference_mode():
        for n in (1, 64):
            assert torch.allclose(program(data[:n]), slimmed(data[:n]), atol=1e-5)


def test_fresh_example_holds_no_data_and_valid_token_ids() -> None:
    images = torch.rand(10, 1, 8, 8)
    example = fresh_example(images)
    assert example.shape == (2, 1, 8, 8)
    assert example.dtype == images.dtype
    assert example.untyped_storage().data_ptr() != images.untyped_storage().data_ptr()
    assert not any(torch.equal(example[0], row) for row in images)
    tokens = torch.randint(0, 100, (10, 8))
    model = nn.Sequential(nn.Embedding(30, 4))
    ids = fresh_example(tokens, model)
    assert ids.dtype == tokens.dtype
    assert ids.shape == (2, 8)
    assert int(ids.min()) >= 0
    assert int(ids.max()) < 30


# -- the CSR file ----------------------------------------------------------------------------
def test_csr_file_reloads_from_disk_with_the_public_function(tmp_path: Path) -> None:
    bench = pruned_bench("sample:digits_mlp", "unstructured", 0.9)
    masked = bench.model.eval()
    converted, names = csr_model(masked, 0.5)
    assert names == ["fc1", "fc2", "fc3"]
    card = architecture_card(bench.name, bench.pristine, masked)
    path = tmp_path / CSR_FILE
    path.write_bytes(save_sparse(converted, card))
    reloaded = pruneviz.load_sparse(path)  # the card's base is a sample: no model needed
    assert [n for n, m in reloaded.named_modules() if isinstance(m, SparseLinear)] == names
    x = bench.eval_data.x
    with torch.inference_mode():
        ok, detail = agreement([reloaded(x)], [masked(x)])
    assert ok, detail
    # stored as CSR parts (no pickle): the file is smaller than the dense weights
    assert path.stat().st_size < 0.3 * len(dense_bytes(masked.state_dict()))
    header = json.loads(path.read_bytes()[8: 8 + int.from_bytes(path.read_bytes()[:8],
                                                                 "little")])
    assert {"fc1.crow_indices", "fc1.col_indices", "fc1.values"} <= set(header)
    assert "fc1.weight" not in header
    # One metadata key: safetensors writes several in an order that changes from process
    # to process, and an export must be the same bytes wherever it is written.
    assert list(header["__metadata__"]) == ["pruneviz"]


def test_a_damaged_csr_file_is_a_clear_error(tmp_path: Path) -> None:
    bench = pruned_bench("sample:digits_mlp", "unstructured", 0.9)
    converted, _ = csr_model(bench.model, 0.5)
    data = save_sparse(converted, architecture_card(bench.name, bench.pristine, bench.model))
    with pytest.raises(ModelError, match="not a safetensors file"):
        load_sparse_bytes(b"garbage")
    state = {k: v for k, v in converted.state_dict().items() if k != "fc2.col_indices"}
    from safetensors.torch import load, save
    metadata = json.loads(data[8: 8 + int.from_bytes(data[:8], "little")])["__metadata__"]
    broken = save(state, metadata=metadata)
    with pytest.raises(ModelError, match="'fc2' is damaged or incomplete"):
        load_sparse_bytes(broken)
    assert set(load(data)) > set(state)
    with pytest.raises(ModelError, match="cannot read the sparse file"):
        pruneviz.load_sparse(tmp_path / "missing.safetensors")


# -- checks that can fail ---------------------------------------------------------------------
def test_agreement_fails_on_a_difference_or_a_changed_prediction() -> None:
    ref = torch.tensor([[1.0, 0.0, 0.5], [0.0, 2.0, 1.0]])
    assert agreement([ref + 1e-6], [ref])[0]
    ok, detail = agreement([ref + 0.01], [ref])
    assert not ok
    assert "max abs difference" in detail
    ok, detail = agreement([ref[:1]], [ref])
    assert not ok
    assert "shapes" in detail
    assert not agreement([torch.full_like(ref, float("nan"))], [ref])[0]


@pytest.mark.slow
def test_an_onnx_file_that_computes_something_else_is_not_written(
        monkeypatch: pytest.MonkeyPatch) -> None:
    slimmed, masked, x, card, base = _sample("digits_mlp")
    # the real exporter's file for this model (made once), read back wrong by onnxruntime
    made = _exported("digits_mlp").files[ONNX]
    monkeypatch.setattr(deploy_files, "onnx_bytes", lambda exported: made)
    monkeypatch.setattr(deploy_files, "_sparse_onnx_file", _not_made)
    real = deploy_files.run_onnx
    monkeypatch.setattr(deploy_files, "run_onnx",
                        lambda data, b: [o + 0.5 for o in real(data, b)])
    files, rows = deployment_files(slimmed, masked, x, what="slimmed", card=card,
                                   base_model=base)
    found = _rows(rows)
    assert found[ONNX].status == FAILED
    assert "max abs difference" in found[ONNX].detail
    assert ONNX not in files
    assert found[PROGRAM].status == PASSED  # the other files are still written
    assert PROGRAM in files
    check = found[ONNX].check()
    assert check is not None
    assert not check.passed


# -- the CLI: the masked model's files ------------------------------------------------------
@pytest.mark.slow
def test_cli_export_lists_the_deployment_files_and_the_sparse_onnx_is_smaller(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "export"
    assert main(["export", "sample:digits_mlp", "--granularity", "unstructured",
                 "--sparsity", "0.9", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {row["name"]: row for row in result["deployment"]}
    assert set(rows) == {ONNX, PROGRAM, SPARSE_ONNX, CSR_FILE}
    for name, row in rows.items():
        assert row["status"] == PASSED, row
        assert (out / name).stat().st_size == row["size"] == result["sizes"][name]
    model = pruneviz.load_sparse(out / CSR_FILE)
    assert isinstance(model.fc1, SparseLinear)
    # the masked model's sparse ONNX: smaller than its dense ONNX, and it runs
    sparse = (out / SPARSE_ONNX).read_bytes()
    assert len(sparse) < 0.5 * (out / ONNX).stat().st_size
    proto = onnx.load_from_string(sparse)
    assert len(proto.graph.sparse_initializer) == 3  # fc1, fc2, fc3 weights
    bench = pruned_bench("sample:digits_mlp", "unstructured", 0.9)  # the same plan
    x = bench.eval_data.x
    with torch.inference_mode():
        expected = bench.model.eval()(x)
    got = torch.from_numpy(_ort_outputs(sparse, x))
    assert float((got - expected).abs().max()) <= 1e-4 * float(expected.abs().max())
