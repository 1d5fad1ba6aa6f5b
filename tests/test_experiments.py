"""Experiment log: one entry per plan, CSV that reads back, a correct Pareto front."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import GlobalPlan, LayerPlan, Plan
from pruneviz.measure.meter import Report
from pruneviz.measure.metrics import EvalResult, Latency
from pruneviz.measure.storage import FileSizes
from pruneviz.workflows.experiments import (
    PRUNE,
    ROW_FIELDS,
    TECHNIQUES,
    ExperimentLog,
    describe_plan,
    pareto_front,
    technique_family,
)


# -- pareto_front -------------------------------------------------------------------------------
def test_pareto_front_keeps_only_undominated_points_sorted_by_x() -> None:
    xs = [3.0, 1.0, 2.0, 2.0, 4.0]
    ys = [0.9, 0.5, 0.7, 0.6, 0.9]
    # 3 is beaten by 2 (same x, lower y); 4 by 0 (same y, more cost).
    assert pareto_front(xs, ys, higher_is_better=True) == [1, 2, 0]


def test_pareto_front_direction_of_the_metric() -> None:
    xs, ys = [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]
    assert pareto_front(xs, ys, higher_is_better=True) == [0, 1, 2]
    assert pareto_front(xs, ys, higher_is_better=False) == [0]
    assert pareto_front(xs, [3.0, 2.0, 1.0], higher_is_better=False) == [0, 1, 2]


def test_pareto_front_ties_keep_the_first_of_identical_points() -> None:
    assert pareto_front([1.0, 1.0, 2.0], [0.5, 0.5, 0.6], higher_is_better=True) == [0, 2]
    assert pareto_front([2.0, 1.0, 1.0], [0.5, 0.5, 0.5], higher_is_better=True) == [1]
    assert pareto_front([], [], higher_is_better=True) == []


def test_pareto_front_skips_nan_and_refuses_mismatched_lengths() -> None:
    assert pareto_front([1.0, 2.0], [math.nan, 0.5], higher_is_better=True) == [1]
    with pytest.raises(ValueError, match="differ in length"):
        pareto_front([1.0], [1.0, 2.0], higher_is_better=True)


def _brute_force(xs: list[float], ys: list[float], higher_is_better: bool) -> set[int]:
    sign = 1 if higher_is_better else -1
    keep = set()
    for i in range(len(xs)):
        beaten = any(
            xs[j] <= xs[i] and sign * ys[j] >= sign * ys[i]
            and (xs[j] < xs[i] or sign * ys[j] > sign * ys[i] or j < i)
            for j in range(len(xs)) if j != i
        )
        if not beaten:
            keep.add(i)
    return keep


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_pareto_front_matches_brute_force(higher_is_better: bool) -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(0, 12))
        xs = rng.integers(0, 5, n).astype(float).tolist()  # small ranges: many ties
        ys = rng.integers(0, 5, n).astype(float).tolist()
        front = pareto_front(xs, ys, higher_is_better)
        assert set(front) == _brute_force(xs, ys, higher_is_better), (xs, ys)
        assert [xs[i] for i in front] == sorted(xs[i] for i in front)


# -- describe_plan ------------------------------------------------------------------------------
def test_describe_plan_examples() -> None:
    assert describe_plan(Plan()) == "unpruned"
    assert describe_plan(Plan(blocks=("layer2", "layer1"))) == "layer1 removed, layer2 removed"
    plan = Plan({"conv2": LayerPlan(Granularity.UNSTRUCTURED, "l1", sparsity=0.8),
                 "conv1": LayerPlan(Granularity.FILTER, "l1", sparsity=0.5)})
    assert describe_plan(plan) == "conv1 filter l1 50%, conv2 unstructured l1 80%"
    glob = Plan(global_=GlobalPlan(Granularity.UNSTRUCTURED, "l1", sparsity=0.8,
                                   max_layer_sparsity=0.95))
    assert describe_plan(glob) == "global unstructured l1 80% (cap 95%)"
    assert describe_plan(Plan.uniform(["a", "b", "c"], 0.5)) == "3 layers unstructured l1 50%"
    assert describe_plan(Plan({"fc": LayerPlan(Granularity.NM_2_4, "l1")})) == "fc 2:4 l1"
    assert describe_plan(Plan({"c": LayerPlan(Granularity.FILTER, "l2", threshold=0.05)})) == (
        "c filter l2 t<0.05"
    )
    assert describe_plan(Plan({"c": LayerPlan(Granularity.FILTER, "l1", sparsity=0.125)})) == (
        "c filter l1 12.5%"
    )


def test_describe_plan_truncates_long_plans() -> None:
    entries = [LayerPlan(Granularity.UNSTRUCTURED, "l1", sparsity=i / 10) for i in range(5)]
    plan = Plan({f"l{i}": entry for i, entry in enumerate(entries)})
    text = describe_plan(plan)
    assert text.endswith(", +2 more")
    assert text.count(",") == 3
    assert describe_plan(plan, max_parts=5).count(",") == 4


# -- the log ------------------------------------------------------------------------------------
def _report(plan: Plan, metric: float, nonzero: int, latency: float | None = None) -> Report:
    return Report(
        model="m",
        plan=plan.for_model("m", "f00d").to_dict(),
        evaluation=EvalResult("accuracy", metric, 0.25, 100),
        params_total=1000,
        params_nonzero=nonzero,
        macs_dense=5000,
        macs_effective=5 * nonzero,
        sizes=FileSizes(4000, 6 * nonzero, 3 * nonzero),
        latency=None if latency is None else Latency(latency, latency, latency, 64, 2, 20),
        layers=[],
    )


PLAN_A = Plan({"conv1": LayerPlan(Granularity.FILTER, "l1", sparsity=0.5)})
PLAN_B = Plan.uniform(["conv1", "fc"], 0.8)


@pytest.fixture
def log() -> ExperimentLog:
    log = ExperimentLog(higher_is_better=True)
    log.record(_report(Plan(), 0.95, 1000), Plan())
    log.record(_report(PLAN_A, 0.93, 700), PLAN_A)
    log.record(_report(PLAN_B, 0.80, 300, latency=1.5), PLAN_B, label="aggressive")
    return log


def test_record_numbers_entries_from_zero_and_copies_the_report(log: ExperimentLog) -> None:
    assert len(log) == 3
    assert [e.id for e in log] == [0, 1, 2]
    base, a, b = log
    assert base.label == "unpruned"
    assert a.label == "conv1 filter l1 50%"
    assert b.label == "aggressive"
    assert (a.metric, a.loss, a.params_nonzero, a.macs_effective) == (0.93, 0.25, 700, 3500)
    assert a.sparsity == pytest.approx(0.3)
    assert (a.size_dense_bytes, a.size_sparse_bytes, a.size_gzip_bytes) == (4000, 4200, 2100)
    assert a.latency_ms is None
    assert b.latency_ms == 1.5


def test_record_dedupes_by_plan_key_and_fills_in_latency_once(log: ExperimentLog) -> None:
    again = log.record(_report(PLAN_A, 0.5, 1), PLAN_A.for_model("m", "f00d"), label="x")
    assert again.id == 1
    assert again.metric == 0.93
    assert again.label == "conv1 filter l1 50%"
    assert len(log) == 3
    timed = log.record(_report(PLAN_A, 0.93, 700, latency=2.0), PLAN_A)
    assert timed.id == 1
    assert timed.latency_ms == 2.0
    assert timed.latency_device == "cpu"  # where it was timed
    assert log.get(1).latency_ms == 2.0
    later = log.record(_report(PLAN_A, 0.93, 700, latency=9.0), PLAN_A)
    assert later.latency_ms == 2.0
    assert log.find(PLAN_A) == log.get(1)
    assert log.find(Plan.uniform(["fc"], 0.1)) is None


def test_the_same_plan_on_other_weights_is_another_experiment(log: ExperimentLog) -> None:
    tuned = log.record(_report(PLAN_A, 0.97, 700), PLAN_A, "A, fine-tuned",
                       weights="fine-tuned #1")
    assert (tuned.id, tuned.metric, tuned.weights) == (3, 0.97, "fine-tuned #1")
    assert tuned.plan_key == log.get(1).plan_key  # the same plan ...
    assert log.get(1).weights == "original"  # ... on other weights
    assert log.find(PLAN_A) == log.get(1)
    assert log.find(PLAN_A, "fine-tuned #1") == tuned
    assert log.find(PLAN_A, "fine-tuned #2") is None
    again = log.record(_report(PLAN_A, 0.5, 700), PLAN_A, weights="fine-tuned #1")
    assert again == tuned
    assert log.plan(3) == PLAN_A
    rows = list(csv.DictReader(io.StringIO(log.to_csv())))
    assert [row["weights"] for row in rows] == ["original"] * 3 + ["fine-tuned #1"]


def test_record_refuses_a_report_of_another_plan(log: ExperimentLog) -> None:
    with pytest.raises(ValueError, match="measured for plan"):
        log.record(_report(PLAN_A, 0.9, 700), PLAN_B)


def test_plan_reads_back_equal_to_the_recorded_plan(log: ExperimentLog) -> None:
    assert log.plan(0) == Plan()
    assert log.plan(1) == PLAN_A
    assert log.plan(2) == PLAN_B
    with pytest.raises(KeyError, match="no experiment"):
        log.get(3)


def test_csv_round_trips_through_dictreader(log: ExperimentLog) -> None:
    rows = list(csv.DictReader(io.StringIO(log.to_csv())))
    assert len(rows) == len(log)
    assert list(rows[0]) == list(ROW_FIELDS)
    assert "plan_json" not in rows[0]
    for row, experiment in zip(rows, log, strict=True):
        expected = experiment.to_row()
        assert "plan_json" not in expected
        assert int(row["id"]) == experiment.id
        assert row["label"] == experiment.label
        assert float(row["metric"]) == experiment.metric
        assert int(row["params_nonzero"]) == experiment.params_nonzero
        assert float(row["sparsity"]) == experiment.sparsity
        assert row["plan_key"] == experiment.plan_key
        assert Plan.from_json(row["plan_key"]) == log.plan(experiment.id)
    assert rows[1]["latency_ms"] == ""
    assert float(rows[2]["latency_ms"]) == 1.5


def test_log_pareto_ids_use_the_cost_field(log: ExperimentLog) -> None:
    assert log.pareto_ids("params_nonzero") == [2, 1, 0]
    assert log.pareto_ids("latency_ms") == [2]  # only B has a latency
    log.record(_report(Plan.uniform(["fc"], 0.1), 0.5, 800), Plan.uniform(["fc"], 0.1))
    assert log.pareto_ids("params_nonzero") == [2, 1, 0]  # the new one is dominated by A
    with pytest.raises(ValueError, match="not a cost"):
        log.pareto_ids("metric")


# -- other techniques (int8, low-rank) -------------------------------------------------------
def _measurement(technique: str, metric: float, nonzero: int, total: int = 1000,
                 latency: float | None = 0.5) -> Report:
    return Report(
        model="m",
        plan={},
        technique=technique,
        evaluation=EvalResult("accuracy", metric, 0.3, 100),
        params_total=total,
        params_nonzero=nonzero,
        macs_dense=5000,
        macs_effective=5 * nonzero,
        sizes=FileSizes(1100, 2 * nonzero, nonzero),
        latency=None if latency is None else Latency(latency, latency, latency, 64, 2, 10),
    )


def test_pruning_experiments_are_technique_prune(log: ExperimentLog) -> None:
    assert {e.technique for e in log} == {PRUNE}
    assert all(e.is_pruning for e in log)
    rows = list(csv.DictReader(io.StringIO(log.to_csv())))
    assert "technique" in ROW_FIELDS
    assert [row["technique"] for row in rows] == ["prune"] * 3


def test_a_measurement_of_another_technique_is_its_own_experiment(log: ExperimentLog) -> None:
    int8 = log.record_measurement(_measurement("int8", 0.94, 990), Plan())
    both = log.record_measurement(_measurement("prune+int8", 0.92, 690), PLAN_A)
    svd = log.record_measurement(_measurement("svd r=50%", 0.90, 600, total=600), Plan(),
                                 label="half rank", weights="fine-tuned #1")
    assert [(e.id, e.technique) for e in (int8, both, svd)] == [
        (3, "int8"), (4, "prune+int8"), (5, "svd r=50%")]
    assert int8.label == "int8 (unpruned)"
    assert both.label == "prune+int8: conv1 filter l1 50%"
    assert svd.label == "half rank"
    assert (both.metric, both.loss, both.params_nonzero, both.macs_effective) == (
        0.92, 0.3, 690, 3450)
    assert (both.size_dense_bytes, both.size_sparse_bytes, both.size_gzip_bytes) == (
        1100, 1380, 690)
    assert both.sparsity == pytest.approx(0.31)
    assert both.latency_ms == 0.5
    assert not both.is_pruning
    assert log.plan(4) == PLAN_A  # its pruning plan, what restoring it applies
    # found by plan, weights and technique; the plain pruning entry stays the default
    assert log.find(PLAN_A) == log.get(1)
    assert log.find(PLAN_A, technique="prune+int8") == both
    assert log.find(Plan(), "fine-tuned #1", "svd r=50%") == svd
    assert log.find(Plan(), technique="svd r=50%") is None
    again = log.record_measurement(_measurement("int8", 0.1, 1), Plan())
    assert again == int8
    assert len(log) == 6
    rows = list(csv.DictReader(io.StringIO(log.to_csv())))
    assert [row["technique"] for row in rows] == [
        "prune", "prune", "prune", "int8", "prune+int8", "svd r=50%"]
    assert rows[5]["weights"] == "fine-tuned #1"


def test_the_pareto_front_is_over_every_technique(log: ExperimentLog) -> None:
    # int8 of A: fewer non-zeros than A at the same metric; it takes A's place
    log.record_measurement(_measurement("prune+int8", 0.93, 650), PLAN_A)
    assert log.pareto_ids("params_nonzero") == [2, 3, 0]


def test_a_pruned_model_is_not_recorded_as_a_measurement(log: ExperimentLog) -> None:
    with pytest.raises(ValueError, match="from its Report"):
        log.record_measurement(_measurement(PRUNE, 0.9, 10), PLAN_B)


def test_technique_families() -> None:
    assert [technique_family(t) for t in
            ["prune", "int8", "prune+int8", "svd r=50%", "prune+svd r=12.5%", "svd r=custom"]
            ] == ["prune", "int8", "prune+int8", "svd", "prune+svd", "svd"]
    assert set(TECHNIQUES) == {"prune", "int8", "prune+int8", "int8-static",
                               "prune+int8-static", "int4-w", "prune+int4-w", "svd",
                               "prune+svd"}
    assert technique_family("prune+int4-w g=64") == "prune+int4-w"


# -- one record type: the masked model, another technique, a deployable form -------------------
def test_every_measurement_is_a_report_and_one_function_makes_its_log_row() -> None:
    from fixtures.models import ZOO

    from pruneviz.measure.compression import measure_model, quantize_dynamic_int8
    from pruneviz.measure.forms import masked_form, sparse_form
    from pruneviz.measure.meter import latency_batch
    from pruneviz.measure.metrics import count_params
    from pruneviz.measure.storage import dense_bytes
    from pruneviz.workflows.experiments import experiment_from
    from pruneviz.workflows.workbench import build_workbench

    entry = ZOO["mlp"]
    bench = build_workbench("mlp", entry.build(), entry.example(), entry.data(), None)
    plan, _ = bench.session.uniform_plan(0.5)
    batch = latency_batch(bench.eval_data, 8)
    with bench.applied(plan):
        pruned = bench.meter.report()
        int8 = measure_model(quantize_dynamic_int8(bench.model), bench.eval_data,
                             technique="prune+int8", latency=False, name=bench.name,
                             plan=plan.to_dict())
        masked = masked_form(bench.session)
        sparse, _ = sparse_form(bench.session, batch)
        state = bench.model.state_dict()
    assert all(isinstance(r, Report) for r in (pruned, int8, masked, sparse))
    log = ExperimentLog(higher_is_better=True)
    assert log.record(pruned, plan, "p") == experiment_from(pruned, 0, "p", plan)
    assert log.record_measurement(int8, plan, "q") == experiment_from(int8, 1, "q", plan)
    assert [e.technique for e in log] == [PRUNE, "prune+int8"]
    assert log.get(1).metric == int8.evaluation.metric
    with pytest.raises(ValueError, match="record_measurement"):
        log.record(int8, plan)
    # A form: what it stores and saves, in the CLI's JSON shape; not a log row.
    assert (masked.form, sparse.form) == ("masked", "sparse-deployed")
    assert masked.to_dict() == {
        "form": "masked", "params": count_params(bench.model).total,
        "macs": sum(layer.macs for layer in bench.session.layers),
        "size_bytes": len(dense_bytes(state)), "latency_ms": None, "latency_device": None,
        "latency_vs_masked": None,
        "max_abs_diff": 0.0, "note": None}
    assert sparse.note is not None
    assert sparse.to_dict()["note"] == sparse.note
    assert sparse.max_abs_diff is not None
    assert sparse.max_abs_diff <= 1e-4
    with pytest.raises(ValueError, match="not an experiment"):
        experiment_from(masked, 2, "m", plan)
