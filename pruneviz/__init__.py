"""pruneviz: an interactive, visual pruning workbench for PyTorch models.

The library is usable on its own (this API, and the CLI `python -m pruneviz`); the
Streamlit app in app.py and app_pages/ is a thin layer on top of it.

    from pruneviz import open_workbench, LayerPlan
    bench = open_workbench("sample:digits_cnn")
    plan = bench.session.stamp(bench.session.plan.with_layer(
        "conv2", LayerPlan("filter", "l1", sparsity=0.5)))
    bench.session.apply(plan)
    print(bench.meter.report().to_dict())
"""

from pruneviz.core.attention import SlimAttention
from pruneviz.core.criteria import (
    CriterionSpec,
    ScoreInputs,
    Structures,
    criterion_names,
    get_criterion,
    register_criterion,
    simhash_buckets,
)
from pruneviz.core.granularity import Granularity
from pruneviz.core.layers import PrunableLayer, find_prunable_layers, fingerprint
from pruneviz.core.plan import GlobalPlan, LayerPlan, Plan, Refit
from pruneviz.core.results import LayerResult
from pruneviz.core.scores import ScoreTable
from pruneviz.core.session import PruningSession
from pruneviz.data.readers import load_data
from pruneviz.data.samples import SAMPLES, load_sample, sample_names
from pruneviz.data.sources import Source, load_source, resolve_device
from pruneviz.data.tasks import Task
from pruneviz.data.tensors import TensorData, load_digits
from pruneviz.errors import (
    DataError,
    DeviceError,
    ModelError,
    PlanError,
    PrunevizError,
    SampleNotFoundError,
)
from pruneviz.measure.compression import (
    low_rank,
    quantize_dynamic_int8,
    quantize_int4,
    quantize_static_int8,
)
from pruneviz.measure.meter import Meter, Report
from pruneviz.measure.metrics import EvalResult, Latency, count_params, evaluate, measure_latency
from pruneviz.measure.quantize import load_int4, load_static_int8
from pruneviz.measure.storage import FileSizes, decode_sparse, dense_bytes, file_sizes, sparse_bytes
from pruneviz.measure.timing import Speedup, Timing, time_against
from pruneviz.output.bundle import ExportResult, export_bundle
from pruneviz.output.sparse_file import load_sparse
from pruneviz.workflows.allocation import (
    Budget,
    BudgetKind,
    Method,
    Outcome,
    allocate,
    plan_for_budget,
)
from pruneviz.workflows.finetune import REFERENCES, FinetuneRecipe, FinetuneResult, PruneSpec
from pruneviz.workflows.floor import FloorResult, plan_for_floor
from pruneviz.workflows.live_bench import bench_live_model
from pruneviz.workflows.refit import RefitResult, refit, refit_bench
from pruneviz.workflows.schedules import Schedule, ScheduleKind
from pruneviz.workflows.sensitivity import (
    SensitivityCache,
    SensitivityResult,
    SensitivityRun,
    sensitivity_items,
)
from pruneviz.workflows.workbench import Workbench, build_workbench, open_workbench
from pruneviz.workflows.workspace import Workspace

__all__ = [
    "REFERENCES",
    "SAMPLES",
    "FinetuneRecipe",
    "FinetuneResult",
    "PruneSpec",
    "Schedule",
    "ScheduleKind",
    "Budget",
    "BudgetKind",
    "Method",
    "Outcome",
    "SensitivityCache",
    "SensitivityResult",
    "SensitivityRun",
    "SlimAttention",
    "allocate",
    "plan_for_budget",
    "FloorResult",
    "plan_for_floor",
    "sensitivity_items",
    "CriterionSpec",
    "DataError",
    "DeviceError",
    "EvalResult",
    "FileSizes",
    "GlobalPlan",
    "Granularity",
    "LayerPlan",
    "LayerResult",
    "Latency",
    "Meter",
    "ModelError",
    "Plan",
    "PlanError",
    "Refit",
    "RefitResult",
    "refit",
    "refit_bench",
    "PrunableLayer",
    "PrunevizError",
    "PruningSession",
    "Report",
    "SampleNotFoundError",
    "ScoreInputs",
    "ScoreTable",
    "Speedup",
    "Structures",
    "Task",
    "TensorData",
    "Timing",
    "Workbench",
    "Workspace",
    "build_workbench",
    "bench_live_model",
    "Source",
    "load_source",
    "resolve_device",
    "load_data",
    "export_bundle",
    "load_sparse",
    "ExportResult",
    "quantize_dynamic_int8",
    "quantize_static_int8",
    "quantize_int4",
    "load_static_int8",
    "load_int4",
    "low_rank",
    "count_params",
    "criterion_names",
    "decode_sparse",
    "dense_bytes",
    "evaluate",
    "file_sizes",
    "find_prunable_layers",
    "fingerprint",
    "get_criterion",
    "load_digits",
    "load_sample",
    "measure_latency",
    "open_workbench",
    "register_criterion",
    "sample_names",
    "simhash_buckets",
    "sparse_bytes",
    "time_against",
]
