"""The argument parser of every verb, with usage errors as one line on stderr."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from pruneviz.cli.options import (
    DEFAULT_CAP,
    GRANULARITIES,
)
from pruneviz.cli.refit import add_refit_arguments
from pruneviz.core.criteria import criterion_names
from pruneviz.data.sources import add_source_arguments
from pruneviz.workflows.allocation import (
    Method,
)
from pruneviz.workflows.finetune import (
    Regularizer,
)
from pruneviz.workflows.finetune_job import (
    DEFAULT_RECIPE,
    DISTILL_WEIGHT,
    EVENTS,
    LR_MASKED,
    LR_SCHEDULE,
    ROUNDS,
)
from pruneviz.workflows.floor import Objective
from pruneviz.workflows.schedules import ScheduleKind
from pruneviz.workflows.sensitivity import DEFAULT_LEVELS


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line on stderr like every other error."""

    def error(self, message: str) -> NoReturn:
        print(f"pruneviz: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _add_plan_args(parser: argparse.ArgumentParser, *, targets: bool = False) -> None:
    """The options that choose the plan (with `targets`: also the budgets of `prune`)."""
    source = parser.add_mutually_exclusive_group()  # one source of amounts at most
    source.add_argument("--plan", type=Path, metavar="FILE", help="a plan JSON file")
    source.add_argument(
        "--sparsity", type=float, metavar="S", help="prune every layer to this fraction (0..1)"
    )
    with_amount = "with --sparsity or a target" if targets else "with --sparsity"
    if targets:
        source.add_argument("--target-sparsity", type=float, metavar="S",
                            help="a budget: at least this fraction of all parameters zero "
                            "(0 < S <= 1)")
        source.add_argument("--target-macs", type=float, metavar="F",
                            help="a budget: at most this fraction of the unpruned model's "
                            "weight MACs per sample (0 < F <= 1)")
        source.add_argument("--target-size-bytes", type=int, metavar="N",
                            help="a budget: the sparse-encoded weights file at most N bytes")
        source.add_argument("--target-latency-ms", type=float, metavar="MS",
                            help="a budget: the fastest deployable form's measured latency "
                            "(batch of 64) at most MS milliseconds")
        source.add_argument("--min-metric", type=float, metavar="X",
                            help="an accuracy floor: prune as much as possible while the "
                            "measured metric stays >= X (<= X for lower-is-better metrics "
                            "such as mse); accuracy as a fraction (0.98)")
        parser.add_argument("--objective", choices=[o.value for o in Objective],
                            help="with --min-metric: what 'as much as possible' means, the "
                            "most sparsity, fewest MACs or smallest sparse file (default: "
                            "sparsity)")
        parser.add_argument("--allocate", choices=[m.value for m in Method],
                            help="with a target or --min-metric: how the per-layer amounts are "
                            "chosen (default: sensitivity, which runs a sensitivity analysis "
                            "first)")
    parser.add_argument("--granularity", default="unstructured", choices=GRANULARITIES,
                        help=f"{with_amount} (default: unstructured)")
    parser.add_argument("--criterion", default="l1", choices=criterion_names(),
                        help=f"{with_amount} (default: l1)")
    parser.add_argument("--scope", default="local", choices=["local", "global"],
                        help="with --sparsity: the same amount per layer (local) or one "
                        "ranking across all layers (global)")
    parser.add_argument("--max-layer-sparsity", type=float, metavar="F",
                        help="with --scope global" + (
                            f" or a target (default there: {DEFAULT_CAP})" if targets else "")
                        + ": cap on any one layer's sparsity")
    parser.add_argument("--remove-blocks", metavar="NAMES", default="",
                        help="comma-separated modules to replace by the identity (blocks or "
                        "layers whose output has their input's shape)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every verb."""
    parser = _Parser(
        prog="pruneviz", description="Prune PyTorch models and measure the result honestly."
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    samples = verbs.add_parser("samples", help="list the sample models with baseline metrics")
    samples.add_argument("--json", action="store_true", help="print one JSON object")

    evaluate = verbs.add_parser("evaluate", help="measure a model, optionally pruned")
    add_source_arguments(evaluate)
    _add_plan_args(evaluate)
    evaluate.add_argument("--latency", action="store_true", help="also time inference")
    evaluate.add_argument("--int8", action="store_true",
                          help="also measure the (pruned) model with dynamic int8 quantization "
                          "of its Linear/LSTM/GRU layers")
    evaluate.add_argument("--int8-static", action="store_true",
                          help="also measure the (pruned) model with static int8 quantization "
                          "of its Conv and Linear layers (calibrated on the calibration data; "
                          "int8 kernels; its file saved and reloaded)")
    evaluate.add_argument("--int4", action="store_true",
                          help="also measure the (pruned) model with its Linear and Conv "
                          "weights stored as group-wise int4 (storage only: no int4 kernel "
                          "on CPU, latency not measured)")
    evaluate.add_argument("--int4-group", type=int, default=128, metavar="G",
                          help="with --int4: the most weights per group sharing a scale "
                          "(default: %(default)s; smaller rows use smaller equal groups)")
    evaluate.add_argument("--quantized-out", type=Path, metavar="DIR",
                          help="with --int8-static / --int4: write each quantized model's "
                          "checked safetensors file into this folder (int8-static.safetensors, "
                          "int4-w.safetensors; pruneviz.load_static_int8 / load_int4 read "
                          "them into the model's architecture)")
    evaluate.add_argument("--low-rank", type=float, metavar="F",
                          help="also measure the (pruned) model with its Linear layers "
                          "factorized by truncated SVD, at this fraction of full rank (0..1]")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")

    prune = verbs.add_parser("prune", help="prune a model and write the weights and plan")
    add_source_arguments(prune)
    _add_plan_args(prune, targets=True)
    prune.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    prune.add_argument("--force", action="store_true",
                       help="write into --out although it holds files pruneviz did not "
                       "write there (they are left untouched)")
    prune.add_argument("--latency", action="store_true", help="also time inference")
    prune.add_argument("--slim", action="store_true",
                       help="also write the slimmed model (pruned channels removed) and "
                       "measure the slimmed and sparse-deployed forms")
    prune.add_argument("--json", action="store_true", help="print one JSON object")
    add_refit_arguments(prune)

    sensitivity = verbs.add_parser(
        "sensitivity", help="prune each layer (or coupled group) alone at a ladder of amounts "
        "and measure what the model loses")
    add_source_arguments(sensitivity)
    sensitivity.add_argument(
        "--levels", metavar="S,S,...",
        default=",".join(f"{level:g}" for level in DEFAULT_LEVELS),
        help="comma-separated sparsities in [0, 1] (default: %(default)s)")
    sensitivity.add_argument("--granularity", default="unstructured", choices=GRANULARITIES,
                             help="unstructured, filter or channel (default: unstructured)")
    sensitivity.add_argument("--criterion", default="l1", choices=criterion_names(),
                             help="default: l1")
    sensitivity.add_argument("--json", action="store_true", help="print one JSON object")

    export = verbs.add_parser(
        "export", help="prune, then write the weights, plan, slimmed model and an HTML / "
        "Markdown report into a folder, each verified on reload")
    add_source_arguments(export)
    _add_plan_args(export)
    export.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    export.add_argument("--force", action="store_true",
                        help="write into --out although it holds a complete earlier export "
                        "(replaced) or files pruneviz did not write there (left untouched)")
    export.add_argument("--latency", action="store_true",
                        help="also time the pruned model against the unpruned one")
    slim_choice = export.add_mutually_exclusive_group()
    slim_choice.add_argument("--slim", dest="slim", action="store_const", const=True,
                             help="require the slimmed model (an error if the plan removes "
                             "no structure); default: written when the plan is structured")
    slim_choice.add_argument("--no-slim", dest="slim", action="store_const", const=False,
                             help="never write the slimmed model")
    export.add_argument("--no-deploy", dest="deploy", action="store_false",
                        help="skip the deployment files (model.onnx, model.pt2, "
                        "masked_sparse.onnx, model.csr.safetensors), each checked on the "
                        "evaluation data before it is written")
    export.add_argument("--json", action="store_true", help="print one JSON object")

    _add_finetune_parser(verbs)

    bench = verbs.add_parser("bench", help="run the engine benchmarks (JSON results)")
    bench.add_argument("name", nargs="?", metavar="NAME", help="slider, live or size")
    bench.add_argument("model", nargs="?", metavar="MODEL",
                       help="live only: measure how live the workbench is on this model "
                       "(sample:NAME or path/file.py:factory, with --weights and --data): "
                       "opening, one slider move, every slider, memory")
    add_source_arguments(bench, model=False)
    bench.add_argument("--moves", type=int, default=5, metavar="N",
                       help="live MODEL: slider moves timed (median reported; default 5)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")

    serve = verbs.add_parser(
        "serve", help="start the app: on this machine only, or for a room with --classroom")
    serve.add_argument("--model", metavar="MODEL",
                       help="the model the app opens (default: the default sample)")
    add_source_arguments(serve, model=False)
    serve.add_argument("--address", default="127.0.0.1",
                       help="the address to listen on (default 127.0.0.1: this machine only; "
                       "0.0.0.0 = every interface, needs --classroom)")
    serve.add_argument("--port", type=int, default=8501, help="the port (default 8501)")
    serve.add_argument("--workspace", metavar="DIR",
                       help="the folder the tabs' work is saved in, as it happens (default: "
                       "$PRUNEVIZ_HOME/workspaces, else ~/.local/share/pruneviz/workspaces)")
    serve.add_argument("--classroom", action="store_true",
                       help="serve a room: every session must give the access secret "
                       "(PRUNEVIZ_CLASSROOM_SECRET or --secret-file) before it sees anything")
    serve.add_argument("--secret-file", type=Path, metavar="FILE",
                       help="classroom: read the access secret from this file's first line")
    serve.add_argument("--host-name", action="append", metavar="NAME",
                       help="classroom: a name students reach this machine by (repeatable); "
                       "other Host headers are refused")
    return parser


def _add_finetune_parser(verbs: argparse._SubParsersAction[_Parser]) -> None:
    finetune_ = verbs.add_parser(
        "finetune", help="prune, then retrain: masked fine-tuning of a one-shot pruning, or "
        "a schedule that prunes gradually while training",
        description="Prune MODEL and retrain it on its training data, printing the test "
        "metric before pruning, right after pruning and after retraining. Under torchrun "
        "the training is data-parallel (see the README).")
    add_source_arguments(finetune_)
    what = finetune_.add_argument_group("what to prune (exactly one of --plan, --sparsity, "
                                        "--schedule)")
    source = what.add_mutually_exclusive_group()
    source.add_argument("--plan", type=Path, metavar="FILE",
                        help="apply this plan JSON file once, then fine-tune with the pruned "
                        "entries held at zero")
    source.add_argument("--sparsity", type=float, metavar="S",
                        help="prune to this fraction (0..1) once, then fine-tune")
    source.add_argument("--schedule", choices=[k.value for k in ScheduleKind],
                        help="prune while training, by this schedule (see --final etc.)")
    what.add_argument("--granularity", choices=GRANULARITIES,
                      help="with --sparsity or --schedule (default: unstructured)")
    what.add_argument("--criterion", choices=criterion_names(),
                      help="with --sparsity or --schedule (default: l1)")
    what.add_argument("--scope", choices=["local", "global"],
                      help="with --sparsity or --schedule: the same amount per layer (local, "
                      "the default) or one ranking across all layers (global)")
    what.add_argument("--max-layer-sparsity", type=float, metavar="F",
                      help="with --scope global: cap on any one layer's sparsity")
    what.add_argument("--remove-blocks", metavar="NAMES",
                      help="comma-separated blocks to replace by the identity and train "
                      "without (depth pruning), alone or with --sparsity or --schedule")
    plan = finetune_.add_argument_group("schedule (with --schedule; steps are optimiser steps)")
    plan.add_argument("--final", type=float, metavar="S",
                      help="the sparsity it ends at, in [0, 1) (required)")
    plan.add_argument("--initial", type=float, metavar="S",
                      help="poly, agp: the sparsity at the begin step (default: 0)")
    plan.add_argument("--begin-step", type=int, metavar="N",
                      help="the first pruning event (default: 0)")
    plan.add_argument("--end-step", type=int, metavar="N",
                      help="constant, iterative, poly, agp: when the pruning ends (default: "
                      "halfway from the begin step to the end of training, leaving the "
                      "second half to recover)")
    plan.add_argument("--frequency", type=int, metavar="N",
                      help=f"constant, poly, agp: steps between pruning events (default: "
                      f"about {EVENTS} events from begin to end)")
    plan.add_argument("--power", type=float, metavar="P",
                      help="poly: the polynomial's exponent (default: 3)")
    plan.add_argument("--rounds", type=int, metavar="N",
                      help=f"iterative: prune-retrain rounds (default: {ROUNDS})")
    train = finetune_.add_argument_group("training")
    defaults = DEFAULT_RECIPE
    train.add_argument("--epochs", type=int, default=defaults.epochs, metavar="N",
                       help="passes over the training data (default: %(default)s)")
    train.add_argument("--lr", type=float, metavar="X",
                       help=f"Adam learning rate (default: {LR_MASKED:g} with --plan or "
                       f"--sparsity, {LR_SCHEDULE:g} with --schedule)")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size, metavar="N",
                       help="samples per step, over all processes (default: %(default)s)")
    train.add_argument("--seed", type=int, default=defaults.seed, metavar="N",
                       help="shuffling and validation split (default: %(default)s)")
    train.add_argument("--patience", type=int, default=defaults.patience, metavar="N",
                       help="stop after N epochs without a better validation metric "
                       "(counted after the last pruning event; default: %(default)s)")
    train.add_argument("--max-steps", type=int, metavar="N", help="stop after N steps")
    train.add_argument("--regularizer", choices=[r.value for r in Regularizer],
                       help="with --schedule: a sparsity-inducing penalty before its first "
                       "pruning event (l1 on weights, group_lasso on filters, bn_l1 on "
                       "BatchNorm scales)")
    train.add_argument("--strength", type=float, metavar="X",
                       help=f"the regulariser's weight in the loss (default: "
                       f"{defaults.strength:g})")
    train.add_argument("--distill", action="store_true",
                       help="also learn from the unpruned model's outputs (distillation)")
    train.add_argument("--distill-weight", type=float, metavar="W",
                       help=f"with --distill: the distillation term's share of the loss, in "
                       f"[0, 1] (default: {DISTILL_WEIGHT:g})")
    train.add_argument("--temperature", type=float, metavar="T",
                       help=f"with --distill: softmax temperature (default: "
                       f"{defaults.temperature:g})")
    finetune_.add_argument("--out", type=Path, required=True, metavar="DIR",
                           help="output folder")
    finetune_.add_argument("--force", action="store_true",
                       help="write into --out although it holds files pruneviz did not "
                       "write there (they are left untouched)")
    finetune_.add_argument("--json", action="store_true", help="print one JSON object")
