"""A lesson's own copy of the teaching model: a fresh workbench per measurement, so a
lesson never touches the tab's workbench and a rerun starts from the same weights."""

from __future__ import annotations

from pruneviz.data.sources import Source, load_source
from pruneviz.workflows.workbench import Workbench, build_workbench


def lesson_bench(model_ref: str) -> Workbench:
    """A fresh workbench on `model_ref` (its loaded model is copied, never changed): the
    whole evaluation set, calibration from the training data, no slow baseline figures."""
    loaded = load_source(Source(model=model_ref))
    return build_workbench(loaded.name, loaded.model, loaded.example_input, loaded.eval_data,
                           loaded.train_data, live=True)
