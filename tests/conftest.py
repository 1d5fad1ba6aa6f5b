"""Shared test settings and fixtures.

Provides:
- a hypothesis profile ("pruneviz") sized for a 2-core CI machine, loaded for every test;
- the `slow` marker (registered in pyproject.toml) for tests over ~3 s: `make test-fast`
  (`pytest -m "not slow"`) leaves them out, `make test` runs everything;
- the fixture `bench`: a fresh workbench on the digits_mlp sample;
- for every test, long jobs (sensitivity, sweeps, fine-tuning) run in threads of the test
  process (`processes.RUN_IN_PROCESSES = False`: the page and job tests hold them with
  gates patched into this process) on a queue of the test's own, so that a job left by
  one test never makes another's wait. tests/test_processes.py asks for child processes
  explicitly;
- for every test, a tab's background measurements start as soon as a plan is applied
  (`workspace.REFINE_SETTLE = 0`, `refine.QUIET = 0`), not once the plan has stayed a
  second and the sliders have paused as in the served app, so that page tests waiting for
  them do not wait that long each. tests/test_live.py checks the settling and the pause
  themselves; the browser test runs the app as served.

Helpers to import (tests/ is on the path, so `from fixtures.... import ...`):
- fixtures/models.py: the zoo of tiny fixture models (ZOO), snapshot/assert_bit_identical;
- fixtures/unseen.py: graphs mixing couplings (UNSEEN);
- fixtures/sessions.py: session_for / session_and_data (a PruningSession on a fixture
  model, with or without calibration data), bench_for (a workbench on a sample),
  pruned_bench (one with a uniform l1 plan applied);
- fixtures/apptest.py: the page tests' helpers: start (the app on a model and a page,
  optionally with a plan applied or the user's start arguments), bench_of,
  rerun_while_running, figure, array.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.sessions import bench_for
from hypothesis import HealthCheck, settings

from pruneviz.workflows import jobqueue, processes, refine, workspace
from pruneviz.workflows.workbench import Workbench

settings.register_profile(
    "pruneviz",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile("pruneviz")


@pytest.fixture
def bench() -> Workbench:
    """A fresh workbench on the digits_mlp sample."""
    return bench_for("digits_mlp")


@pytest.fixture(autouse=True)
def jobs_in_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long jobs in threads of this process, on a fresh queue (see the docstring above)."""
    monkeypatch.setattr(processes, "RUN_IN_PROCESSES", False)
    monkeypatch.setattr(jobqueue, "JOBS", jobqueue.JobQueue(max_running=4))


@pytest.fixture(autouse=True)
def measure_without_settling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Background measurements start at once (see the docstring above)."""
    monkeypatch.setattr(workspace, "REFINE_SETTLE", 0.0)
    monkeypatch.setattr(refine, "QUIET", 0.0)


@pytest.fixture(autouse=True)
def own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Saved workspaces and exports go into the test's own folder, never the user's."""
    monkeypatch.setenv("PRUNEVIZ_HOME", str(tmp_path / "pruneviz-home"))
