"""A lesson's own copy of its sample model: loaded once per process, then a fresh pruning
session or workbench (a private copy of the model) for every measurement, so that a lesson
never touches the tab's workbench and a rerun starts from the same unpruned weights."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache

from torch import Tensor, nn

from pruneviz.core.session import PruningSession
from pruneviz.data.sources import Loaded, Source, load_source
from pruneviz.data.tensors import TensorData
from pruneviz.workflows.workbench import Workbench, build_workbench

_LOCK = threading.Lock()


@cache
def _loaded(ref: str) -> Loaded:
    return load_source(Source(model=ref))


def loaded(ref: str) -> Loaded:
    """The sample as loaded (its model is only read, never changed)."""
    with _LOCK:
        return _loaded(ref)


@dataclass(frozen=True)
class Copy:
    """A fresh session on the model, the evaluation data, and the unpruned model."""

    session: PruningSession
    data: TensorData
    pristine: nn.Module

    def batch(self, size: int = 64) -> Tensor:
        """The first `size` evaluation inputs (what latency is timed on)."""
        return self.data.x[:size]


def open_copy(ref: str) -> Copy:
    """A new pruning session on `ref`'s model (seed 0), its evaluation data and the
    unpruned model it was copied from."""
    source = loaded(ref)
    session = PruningSession(source.model, source.example_input, name=ref,
                             calibration=(source.train_data or source.eval_data).head(256), seed=0)
    return Copy(session, source.eval_data, source.model)


def lesson_bench(model_ref: str) -> Workbench:
    """A fresh workbench on `model_ref` (its loaded model is copied, never changed): the
    whole evaluation set, calibration from the training data, no slow baseline figures."""
    source = loaded(model_ref)
    return build_workbench(source.name, source.model, source.example_input, source.eval_data,
                           source.train_data, live=True)
