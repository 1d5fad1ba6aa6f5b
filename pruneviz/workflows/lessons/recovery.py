"""Lesson 5, collapse and recovery: 90% of the weights removed at once (uniform magnitude
pruning), then retrained with the masks held (the Fine-tune page's one-shot + fine-tune
recipe), then the same training budget on a gradual AGP schedule (its polynomial recipe)."""

from __future__ import annotations

from dataclasses import dataclass

from pruneviz.core.granularity import Granularity
from pruneviz.errors import PrunevizError
from pruneviz.measure.metrics import count_params, evaluate
from pruneviz.workflows.finetune import (
    FinetuneRecipe,
    PruneSpec,
    Record,
    finetune,
    total_steps,
)
from pruneviz.workflows.finetune_job import default_schedule
from pruneviz.workflows.lessons.copies import lesson_bench
from pruneviz.workflows.schedules import ScheduleKind

SPARSITY = 0.9
GRANULARITIES = (Granularity.UNSTRUCTURED, Granularity.FILTER)
# The lesson's training budget, the same for both recipes: a few epochs, small batches, a
# learning rate large enough to recover in so few steps.
RECIPE = FinetuneRecipe(epochs=5, lr=1e-2, batch_size=64, patience=5)


@dataclass(frozen=True)
class Collapse:
    """Accuracy before and right after removing `sparsity` of every layer at once, by
    magnitude, for each granularity; `granularity` is the one the lesson retrains: single
    weights (the question is about weights, and filters at the same share remove almost
    all of them, which no short retraining brings back)."""

    baseline: float
    sparsity: float
    pruned: tuple[tuple[str, float], ...]  # (granularity, accuracy)
    weights_removed: tuple[tuple[str, float], ...]  # (granularity, share of all params)
    granularity: str

    def accuracy(self, granularity: str) -> float:
        return dict(self.pruned)[granularity]

    def removed(self, granularity: str) -> float:
        return dict(self.weights_removed)[granularity]


@dataclass(frozen=True)
class Retrained:
    """One recipe's run: accuracy after it on the evaluation set, and per epoch the
    validation accuracy, mean training loss and sparsity."""

    recipe: str  # "oneshot" or "gradual"
    granularity: str
    sparsity: float
    before: float  # evaluation accuracy when training starts
    after: float  # evaluation accuracy of the kept (best) weights
    epochs: tuple[float, ...]
    validation: tuple[float, ...]
    loss: tuple[float, ...]
    sparsities: tuple[float, ...]  # of all parameters, at each epoch's end
    steps: int
    weights_removed: float  # share of all parameters zero at the end


def collapse(model_ref: str, sparsity: float = SPARSITY) -> Collapse:
    """Each layer's `sparsity` removed at once by magnitude (l1), unstructured and by
    filters, measured on the whole evaluation set."""
    bench = lesson_bench(model_ref)
    session = bench.session
    baseline = evaluate(session.model, bench.eval_data).metric
    pruned, removed = [], []
    for g in GRANULARITIES:
        session.apply(session.uniform_plan(sparsity, g, "l1")[0])
        pruned.append((g.value, evaluate(session.model, bench.eval_data).metric))
        removed.append((g.value, count_params(session.model).sparsity))
    return Collapse(baseline, sparsity, tuple(pruned), tuple(removed),
                    Granularity.UNSTRUCTURED.value)


def _retrained(kind: str, granularity: str, sparsity: float, before: float, after: float,
               result_history: list[Record], steps: int, removed: float) -> Retrained:
    epochs = [(r.epoch, r.metric, r.loss, r.sparsity) for r in result_history
              if r.metric is not None]
    return Retrained(kind, granularity, sparsity, before, after,
                     tuple(e[0] for e in epochs), tuple(e[1] for e in epochs),
                     tuple(e[2] for e in epochs), tuple(e[3] for e in epochs), steps, removed)


def retrain_oneshot(model_ref: str, granularity: str, sparsity: float = SPARSITY,
                    recipe: FinetuneRecipe = RECIPE) -> Retrained:
    """Prune once (uniform l1), then fine-tune with the masks held."""
    bench = lesson_bench(model_ref)
    session = bench.session
    if bench.train_data is None:
        raise PrunevizError(f"{model_ref} has no training data to retrain on")
    session.apply(session.uniform_plan(sparsity, granularity, "l1")[0])
    before = evaluate(session.model, bench.eval_data).metric
    result = finetune(session, bench.train_data, recipe)
    after = evaluate(session.model, bench.eval_data).metric
    return _retrained("oneshot", granularity, sparsity, before, after, result.history,
                      result.steps, count_params(session.model).sparsity)


def retrain_gradual(model_ref: str, granularity: str, sparsity: float = SPARSITY,
                    recipe: FinetuneRecipe = RECIPE) -> Retrained:
    """The same training budget, pruning on an AGP schedule (cubic, from 0 at step 0 to
    `sparsity` halfway through, about ten events: the Fine-tune page's defaults)."""
    bench = lesson_bench(model_ref)
    session = bench.session
    if bench.train_data is None:
        raise PrunevizError(f"{model_ref} has no training data to retrain on")
    before = evaluate(session.model, bench.eval_data).metric
    steps = total_steps(bench.train_data, recipe)
    schedule = default_schedule(ScheduleKind.AGP, sparsity, steps)
    result = finetune(session, bench.train_data, recipe, schedule=schedule,
                      prune=PruneSpec(Granularity(granularity), "l1"))
    after = evaluate(session.model, bench.eval_data).metric
    return _retrained("gradual", granularity, sparsity, before, after, result.history,
                      result.steps, count_params(session.model).sparsity)
