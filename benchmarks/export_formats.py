"""Export formats benchmark: what the files that run elsewhere weigh, and how fast they run.

    python benchmarks/export_formats.py [--runs N] [--threads N]

1. digits_cnn pruned by a uniform 50% filter plan and slimmed: the deployment files an
   export writes (pruneviz.output.deploy_files: model.onnx, model.pt2, masked_sparse.onnx
   when smaller, model.csr.safetensors), each checked as the export checks it, with
   their sizes against the dense weights; then the slimmed model in torch (eager)
   against model.onnx in onnxruntime (CPU), at batch 1 and 64, timed in the same
   interleaved rounds (`timing.interleaved_times`, medians).
2. digits_mlp pruned by a uniform 90% unstructured plan: the CSR file's model
   (`pruneviz.load_sparse` of model.csr.safetensors) against the masked dense model, and
   masked_sparse.onnx in onnxruntime, at batch 1 and 64, interleaved the same way.

Prints one JSON object, with the machine's load before and after (it is shared: a load
above the core count means other programs competed; read the ratios, not the times).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor, nn

from pruneviz.core.slim import slim
from pruneviz.measure.storage import dense_bytes
from pruneviz.measure.timing import interleaved_times
from pruneviz.output.deploy_files import CSR_FILE, ONNX, SPARSE_ONNX, deployment_files
from pruneviz.output.model_files import architecture_card
from pruneviz.output.sparse_file import load_sparse_bytes
from pruneviz.workflows.workbench import open_workbench


class OnnxModule(nn.Module):
    """An onnxruntime session behind nn.Module's call, so it is timed like the others."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same threads as torch
        # Its threads would otherwise spin after each run, starving the torch model timed
        # right after it (seen: torch 100x slower when interleaved with a spinning session).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(data, options,
                                            providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name

    def forward(self, x: Tensor) -> Tensor:
        return torch.from_numpy(np.asarray(self.session.run(None, {self.name: x.numpy()})[0]))


def _batch(x: Tensor, n: int) -> Tensor:
    return x.repeat(-(-n // len(x)), *([1] * (x.dim() - 1)))[:n].contiguous()


def _timed(named: dict[str, nn.Module], x: Tensor, runs: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for n in (1, 64):
        inputs = [_batch(x, n)] * (32 if n == 1 else 4)  # a round: a few passes
        times = interleaved_times(list(named.values()), inputs, runs=runs)
        medians = {name: statistics.median(t) / len(inputs)
                   for name, t in zip(named, times, strict=True)}
        first = next(iter(medians))
        result[f"batch_{n}"] = {
            "ms_per_pass": {k: round(v, 4) for k, v in medians.items()},
            "speedup_vs_" + first: {k: round(medians[first] / v, 2)
                                    for k, v in medians.items() if k != first},
        }
    return result


def _files(deployed: nn.Module, masked: nn.Module, bench: Any) -> tuple[dict[str, bytes],
                                                                         list[Any]]:
    card = architecture_card(bench.name, bench.pristine, masked)
    return deployment_files(deployed, masked, bench.eval_data.x, what="deployed", card=card,
                            base_model=bench.pristine)


def slimmed_cnn(runs: int) -> dict[str, Any]:
    bench = open_workbench("sample:digits_cnn")
    bench.session.apply(bench.session.uniform_plan(0.5, "filter", "l1")[0])
    masked = bench.model.eval()
    slimmed = slim(bench.session).model.eval()
    files, rows = _files(slimmed, masked, bench)
    return {
        "model": "sample:digits_cnn, uniform 50% filters (l1), slimmed",
        "dense_weights_bytes": len(dense_bytes(bench.pristine.state_dict())),
        "slimmed_weights_bytes": len(dense_bytes(slimmed.state_dict())),
        "files": {row.name: {"bytes": row.size, "check": row.status,
                             "detail": row.detail} for row in rows},
        "latency": _timed({"torch_slimmed": slimmed, "onnxruntime": OnnxModule(files[ONNX])},
                          bench.eval_data.x, runs),
    }


def csr_mlp(runs: int) -> dict[str, Any]:
    bench = open_workbench("sample:digits_mlp")
    bench.session.apply(bench.session.uniform_plan(0.9, "unstructured", "l1")[0])
    masked = bench.model.eval()
    files, rows = _files(masked, masked, bench)
    named: dict[str, nn.Module] = {"torch_dense_masked": masked,
                                   "torch_csr": load_sparse_bytes(files[CSR_FILE])}
    named["onnxruntime_dense"] = OnnxModule(files[ONNX])
    if SPARSE_ONNX in files:
        named["onnxruntime_sparse_initializers"] = OnnxModule(files[SPARSE_ONNX])
    return {
        "model": "sample:digits_mlp, uniform 90% unstructured (l1), masked",
        "dense_weights_bytes": len(dense_bytes(masked.state_dict())),
        "files": {row.name: {"bytes": row.size, "check": row.status} for row in rows},
        "latency": _timed(named, bench.eval_data.x, runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="interleaved rounds per batch")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and onnxruntime threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    result = {
        "torch": torch.__version__, "onnxruntime": ort.__version__,
        "threads": torch.get_num_threads(),
        "slimmed": slimmed_cnn(args.runs),
        "csr": csr_mlp(args.runs),
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
        "cores": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
