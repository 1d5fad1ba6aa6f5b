"""Garbage collection off the slider's path, and a closed tab's memory freed: Streamlit's
full collection after every page run is off when the app is served, and nothing keeps a
tab's model once the tab is gone."""

from __future__ import annotations

import gc
import tomllib
import weakref
from pathlib import Path

from fixtures.apptest import start, workspace_of

from pruneviz.cli.serve import config_flags

CONFIG = Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml"


def test_streamlit_does_not_collect_after_every_run_when_served() -> None:
    settings = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    assert settings["runner"]["postScriptGC"] is False
    flags = config_flags(CONFIG)  # what `pruneviz serve` passes to streamlit
    assert flags[flags.index("--runner.postScriptGC") + 1] == "false"


def test_a_closed_tabs_workspace_and_model_are_freed() -> None:
    at = start(page="app_pages/prune.py")
    space = workspace_of(at)
    space.refiner.stop()  # what a closed tab's background measurement does when it ends
    gone = weakref.ref(space)
    model = weakref.ref(space.bench.session.model)  # summarised by torchinfo on opening
    del space, at
    gc.collect()
    assert gone() is None
    assert model() is None
