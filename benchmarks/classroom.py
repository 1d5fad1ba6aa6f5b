"""Classroom load benchmark: many browserless tabs moving sliders on one server.

    python benchmarks/classroom.py [--sessions 1,4,8,16] [--finetune 8] [--moves 15]
                                   [--rounds 2] [--url URL] [--token SECRET] [--classroom]

Starts the app (`streamlit run app.py` on a free localhost port, PRUNEVIZ_HOME in a temp
folder; or uses `--url`) and drives it with websocket clients that send what a browser
tab sends (benchmarks/streamlit_client.py). A session opens the Prune page of the default
sample and moves its first layer's sparsity slider once a second, alternating between two
values so that every move changes the plan. Per move it measures, from sending the
BackMsg:

- `first_metric_ms`: until the first delta of the accuracy metric (`--metric`) drawn by
  the first whole-page run that started after the move;
- `rerun_ms`: until that run (or the run the app chained after it with st.rerun)
  finished: the page is done;
- `start_ms`: until that run started (the time the request waited on the server).

A session waits for its move's page to be done before the next move (at most one a
second; a slow server slows its students down, as a real page would). The first move
of every session is a warm-up, not counted.

Configurations: 1 session alone (always: it is the reference), each count of
`--sessions`, and `--finetune` sessions (default 8) while one more session fine-tunes on
the Fine-tune page: it sets the epochs (`--finetune-epochs`) and the patience (early
stopping would end a run after a few epochs), presses Train, and presses it again
whenever a run ends, so that it trains during the whole measurement. That it trains is
checked on its progress text and on the CPU use of the server's child processes (the
app runs a fine-tuning job in a child process of its own). The configurations are
interleaved, round after round (alone, 4, 8, 16, 8+finetune, alone, 4, ...), because
these machines are shared and noisy; each gets fresh sessions, and between them the
server is left to settle (background measurements of closed tabs finish).

`--classroom` starts the server as `python -m pruneviz serve --classroom` with a generated
secret (PRUNEVIZ_CLASSROOM_SECRET) and first checks that a session without the token,
and one with a wrong token, get only the login form (no slider, no metric, an "Access
code" password input), and that a session with `?token=SECRET` gets the Prune page; then
it runs the configurations with the token.

Every wait has a timeout (`--timeout` to open a page, `--move-timeout` per move) and a
configuration stops moving after `--config-limit` seconds; the errors say what the
session saw meanwhile. The server is started in a process group of its own and stopped
(with its job processes) on exit, error or Ctrl-C.

Prints one JSON object: per configuration the median, p90 and max of the times, the
number of moves, the errors, each median's ratio to the alone median, the CPU use of the
server process, of its children and of this client; a profile of one move's server CPU
alone; and `target.meets` for "8 sessions + fine-tune: median first_metric_ms <= 2 x
alone".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from streamlit_client import ClientError, Element, StreamlitSession, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
PRUNE_PAGE = "prune"
FINETUNE_PAGE = "finetune"
SLIDER_KEY = "pv_w_sp::"  # the per-layer sparsity sliders' widget keys (pruneviz.app.keys)
QUIET_WINDOWS = 4  # half seconds of an idle server that make it settled (> REFINE_SETTLE)
TRAIN_KEY = "pv_ft_run"  # the Fine-tune page's Train and Cancel buttons
CANCEL_KEY = "pv_ft_cancel"
EPOCHS_KEY = "pv_ft_epochs"
PATIENCE_KEY = "pv_ft_patience"
MAX_PATIENCE = 100  # the Patience input's maximum
SECRET_ENV = "PRUNEVIZ_CLASSROOM_SECRET"
LOGIN_LABEL = "Access code"
TARGET_FACTOR = 2.0
INTERVAL_S = 1.0  # one move a second per session
SLIDER_FRACTIONS = (0.3, 0.6)  # the two values a slider alternates between


def log(text: str) -> None:
    """Progress, on stderr (stdout is the JSON)."""
    print(f"[classroom {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- the server ------------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_table() -> dict[int, tuple[int, float]]:
    """Every live process: pid -> (parent pid, user + system CPU seconds so far)."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        # the fields after the name: state ppid pgrp ... utime (12th) stime (13th)
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return table


def start_time(pid: int) -> str | None:
    """When process `pid` started (clock ticks after boot), or None if it is gone: the
    same pid with another start time is another process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def descendants(root: int, table: dict[int, tuple[int, float]]) -> list[int]:
    """The live processes below `root` (the app starts its long jobs, such as a
    fine-tuning run, in child processes of their own session)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


class Server:
    """The app's server in a process group of its own: `stop()` ends the whole group."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_split(self) -> tuple[float, float]:
        """CPU seconds so far of the server process and of its live descendants (a child
        that has ended no longer counts)."""
        table = process_table()
        own = table.get(self.proc.pid, (0, 0.0))[1]
        return own, sum(table[pid][1] for pid in descendants(self.proc.pid, table))

    def cpu_seconds(self) -> float:
        return sum(self.cpu_split())

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL after 10 s; then SIGKILL to the server's
        descendants still alive (its job processes, in sessions of their own, end by
        themselves when the server does: this is only in case)."""
        below = {pid: start_time(pid) for pid in descendants(self.proc.pid, process_table())}
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError):  # leftovers of the group, if any
            os.killpg(self.proc.pid, signal.SIGKILL)
        time.sleep(0.5)
        for pid, started in below.items():
            if started is not None and start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self._log.close()


def serve_available() -> str | None:
    """None if `python -m pruneviz serve --classroom` exists here, else why not."""
    try:
        done = subprocess.run([PYTHON, "-m", "pruneviz", "serve", "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`python -m pruneviz serve --help` failed: {exc!r}"
    if done.returncode != 0 or "--classroom" not in done.stdout:
        return ("`python -m pruneviz serve --classroom` is not available yet "
                f"(exit {done.returncode}): {(done.stderr or done.stdout).strip()[-300:]}")
    return None


def server_command(port: int, classroom: bool) -> list[str]:
    if classroom:
        return [PYTHON, "-m", "pruneviz", "serve", "--classroom", "--address", "127.0.0.1",
                "--port", str(port)]
    return [PYTHON, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
            "--server.headless", "true"]


# -- statistics ------------------------------------------------------------------------------

def p90(values: list[float]) -> float:
    """The 90th percentile, nearest rank: the smallest value with >= 90% at or below it."""
    return sorted(values)[math.ceil(0.9 * len(values)) - 1]


def spread(values: list[float]) -> dict[str, float] | None:
    """Median, p90 and max in ms (rounded), or None without values."""
    if not values:
        return None
    return {"median": round(statistics.median(values), 1), "p90": round(p90(values), 1),
            "max": round(max(values), 1)}


# -- one student -----------------------------------------------------------------------------

@dataclass
class Move:
    start_ms: float
    first_metric_ms: float
    rerun_ms: float
    changed: bool  # the metric's text differs from before the move


@dataclass
class Tally:
    """What the sessions of one configuration measured."""

    moves: list[Move] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    open_ms: list[float] = field(default_factory=list)
    auto_reruns: int = 0
    bytes_in: int = 0


def slider_values(slider: Element) -> tuple[float, float]:
    """Two values of the slider's range, on its step, that a session alternates between."""
    p = slider.proto
    lo, hi, step = float(p.min), float(p.max), float(p.step) or 1.0
    low, high = (lo + round(f * (hi - lo) / step) * step for f in SLIDER_FRACTIONS)
    return low, high


def current_value(session: StreamlitSession, slider: Element) -> float | None:
    state = session.widget_states.get(slider.id)
    if state is None or state.WhichOneof("value") != "double_array_value":
        return None
    data = list(state.double_array_value.data)
    return data[0] if data else None


def prune_slider(session: StreamlitSession) -> Element | None:
    """The first layer's sparsity slider, else the page's first slider."""
    found = session.find("slider", id_part=SLIDER_KEY) or session.find("slider")
    return found[0] if found else None


async def open_prune(base: str, query: str, name: str, metric: str,
                     timeout: float) -> tuple[StreamlitSession, float]:
    """A session on the Prune page, its page complete; and the ms it took."""
    session = StreamlitSession(base, page=PRUNE_PAGE, query=query, name=name)
    started = time.perf_counter()
    try:
        await session.open(timeout)
        await session.wait_page(0.0, timeout)
        if prune_slider(session) is None or not session.find("metric", label=metric):
            kinds = sorted({f"{e['kind']}:{e['label'][:30]}" for e in session.summary()})
            raise ClientError(f"{name}: the Prune page has no slider or no {metric!r} "
                              f"metric; it shows {kinds[:12]}")
    except BaseException:
        await session.close()
        raise
    return session, (time.perf_counter() - started) * 1000.0


def metric_after(session: StreamlitSession, since: int, t0: float, label: str) -> Any:
    """The first `label` metric drawn by the first whole-page run started after `t0` (or a
    later run), among the metrics seen from index `since`."""
    run = session.first_full_run_after(t0)
    if run is None:
        return None
    return next((m for m in session.metrics[since:]
                 if m.label == label and m.run >= run.number and m.at > t0), None)


async def student(session: StreamlitSession, moves: int, delay: float, metric: str,
                  timeout: float, tally: Tally, deadline: float = float("inf")) -> None:
    """Move the slider `moves` + 1 times (the first is a warm-up), at most once a second;
    no new move after `deadline` (a time.perf_counter() value)."""
    await asyncio.sleep(delay)
    next_at = time.perf_counter()
    for i in range(moves + 1):
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        if time.perf_counter() > deadline:
            tally.errors.append(f"{session.name}: the configuration's time limit ended it "
                                f"after {i} of {moves + 1} moves")
            return
        slider = prune_slider(session)
        if slider is None:
            tally.errors.append(f"{session.name}: the slider is gone (page: "
                                f"{[e['label'][:20] for e in session.summary()[:4]]})")
            return
        a, b = slider_values(slider)
        value = b if current_value(session, slider) == a else a
        before = next((m.body for m in reversed(session.metrics) if m.label == metric), None)
        since = len(session.metrics)
        t0: float | None = None
        try:
            t0 = await session.set_widget(slider, value)
            next_at = t0 + INTERVAL_S
            seen = await session.wait_for(partial(metric_after, session, since, t0, metric),
                                          timeout, f"{metric!r} metric after move {i}")
            done = await session.wait_page(t0, timeout)
        except ClientError as exc:
            tally.errors.append(str(exc) if t0 is None
                                else f"{exc}; {session.describe_since(t0)}")
            if session.closed:
                return
            continue
        if i == 0:
            continue  # warm-up
        first_run = session.first_full_run_after(t0)
        assert first_run is not None  # metric_after found one
        tally.moves.append(Move(
            start_ms=(first_run.started - t0) * 1000.0,
            first_metric_ms=(seen.at - t0) * 1000.0,
            rerun_ms=((done.finished or seen.at) - t0) * 1000.0,
            changed=seen.body != before))


# -- the fine-tuning session -----------------------------------------------------------------

@dataclass
class Trainer:
    """One session on the Fine-tune page that keeps a training run going."""

    session: StreamlitSession
    timeout: float
    restarts: int = 0
    training_seen: int = 0  # progress texts seen that say it trains
    last_progress: str = ""
    max_step: int = 0
    errors: list[str] = field(default_factory=list)

    def _button(self, key: str) -> Element | None:
        found = self.session.find("button", id_part=key)
        return found[0] if found else None

    def _progress(self) -> str:
        found = self.session.find("progress")
        return str(found[-1].proto.text) if found else ""

    def look(self) -> None:
        text = self._progress()
        if text and text != self.last_progress:
            self.last_progress = text
            if "training" in text:
                self.training_seen += 1
            words = text.split()
            if len(words) > 1 and words[0] == "step" and words[1].isdigit():
                self.max_step = max(self.max_step, int(words[1]))

    def running(self) -> bool:
        """Whether a run goes on: the Train button is drawn disabled while one does."""
        train = self._button(TRAIN_KEY)
        return train is not None and bool(train.proto.disabled)

    async def press_train(self) -> None:
        train = self._button(TRAIN_KEY)
        if train is None:
            raise ClientError(f"{self.session.name}: no Train button on the Fine-tune page")
        t0 = await self.session.click(train)
        await self.session.wait_page(t0, self.timeout)

    async def start(self, epochs: int) -> None:
        """Open the page, set the epochs and the patience, press Train and wait until it
        trains."""
        s = self.session
        await s.open(self.timeout)
        await s.wait_page(0.0, self.timeout)
        for key, value in ((EPOCHS_KEY, epochs), (PATIENCE_KEY, MAX_PATIENCE)):
            found = s.find("number_input", id_part=key)
            if found and value > 0:  # (early stopping would end a run after a few epochs)
                await s.wait_page(await s.set_widget(found[0], float(value)), self.timeout)
        await self.press_train()
        await s.wait_for(lambda: "training" in self._progress(), self.timeout,
                         "training progress on the Fine-tune page")
        self.look()

    async def keep_training(self, stop: asyncio.Event) -> None:
        """Until `stop`: note the progress; press Train again when a run has ended."""
        while not stop.is_set():
            self.look()
            try:
                if not self.running() and self._button(TRAIN_KEY) is not None:
                    self.restarts += 1
                    await self.press_train()
            except ClientError as exc:
                self.errors.append(str(exc))
                if self.session.closed:
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    async def finish(self) -> None:
        """Cancel the run (so it does not load the next configuration) and close."""
        with contextlib.suppress(ClientError):
            cancel = self._button(CANCEL_KEY)
            if cancel is not None and not cancel.proto.disabled:
                await self.session.wait_page(await self.session.click(cancel), self.timeout)
                await self.session.wait_for(lambda: not self.running(), self.timeout,
                                            "the cancelled run to end")
        await self.session.close()


# -- one configuration -----------------------------------------------------------------------

@dataclass
class Bench:
    """The run's settings and what it collects."""

    base: str
    query: str
    metric: str
    moves: int
    timeout: float  # opening a page, starting the training
    move_timeout: float  # one move's metric and page
    config_limit: float  # no new move after this many seconds of a configuration
    finetune_epochs: int
    server: Server | None
    tallies: dict[str, list[Tally]] = field(default_factory=dict)
    extras: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def cpu(self) -> tuple[float, float] | None:
        """CPU seconds so far of the server process and of its children (None with --url)."""
        return self.server.cpu_split() if self.server is not None else None

    @staticmethod
    def cpu_percents(before: tuple[float, float] | None, after: tuple[float, float] | None,
                     wall: float) -> dict[str, int]:
        """The server's and its children's CPU use between two `cpu()` readings, in %
        of one core."""
        if before is None or after is None:
            return {}
        return {"server_cpu_percent": round(100 * (after[0] - before[0]) / wall),
                "children_cpu_percent": round(100 * (after[1] - before[1]) / wall)}

    async def settle(self, limit: float = 30.0) -> None:
        """Wait until the server is nearly idle (CPU < 15% over each of QUIET_WINDOWS
        half seconds in a row), at most `limit` seconds: closed tabs' background
        measurements end first. The app waits a second (REFINE_SETTLE) before it
        measures a plan's slow figures, so a shorter quiet spell proves nothing."""
        if self.server is None:
            await asyncio.sleep(3.0)
            return
        deadline = time.perf_counter() + limit
        quiet = 0
        while time.perf_counter() < deadline and quiet < QUIET_WINDOWS:
            before, t = self.server.cpu_seconds(), time.perf_counter()
            await asyncio.sleep(0.5)
            busy = (self.server.cpu_seconds() - before) / (time.perf_counter() - t) >= 0.15
            quiet = 0 if busy else quiet + 1

    async def run_config(self, name: str, count: int, finetune: bool) -> None:
        """Open `count` sessions (and a trainer), let them move, record, close them."""
        tally = Tally()
        extra: dict[str, Any] = {}
        sessions: list[StreamlitSession] = []
        trainer: Trainer | None = None
        stop = asyncio.Event()
        keeper: asyncio.Task[None] | None = None
        try:
            if finetune:
                trainer = Trainer(StreamlitSession(self.base, page=FINETUNE_PAGE,
                                                   query=self.query, name="trainer"),
                                  self.timeout)
                await trainer.start(self.finetune_epochs)
                cpu0, t = self.cpu(), time.perf_counter()
                await asyncio.sleep(3.0)
                extra["training_alone"] = self.cpu_percents(cpu0, self.cpu(),
                                                            time.perf_counter() - t)
                keeper = asyncio.create_task(trainer.keep_training(stop))
            opened = await asyncio.gather(
                *(open_prune(self.base, self.query, f"{name}#{i}", self.metric, self.timeout)
                  for i in range(count)), return_exceptions=True)
            for result in opened:
                if isinstance(result, BaseException):
                    tally.errors.append(f"open: {result}")
                else:
                    sessions.append(result[0])
                    tally.open_ms.append(result[1])
            cpu0, wall0, client0 = self.cpu(), time.perf_counter(), time.process_time()
            auto0 = sum(s.stats.auto_reruns_sent for s in sessions)
            reruns0 = sum(s.stats.reruns_sent for s in sessions)
            bytes0 = sum(s.stats.bytes_in for s in sessions)
            deadline = wall0 + self.config_limit
            await asyncio.gather(*(
                student(s, self.moves, INTERVAL_S * i / max(len(sessions), 1), self.metric,
                        self.move_timeout, tally, deadline) for i, s in enumerate(sessions)))
            wall = time.perf_counter() - wall0
            cpu1 = self.cpu()
            extra.update(self.cpu_percents(cpu0, cpu1, wall))
            if cpu0 is not None and cpu1 is not None:
                sent = sum(s.stats.reruns_sent for s in sessions) - reruns0  # the moves
                extra["server_cpu_ms_per_move"] = round(
                    1000 * (cpu1[0] - cpu0[0]) / max(sent, 1), 1)
            extra["client_cpu_percent"] = round(100 * (time.process_time() - client0) / wall)
            extra["moves_wall_s"] = round(wall, 1)
            tally.auto_reruns = sum(s.stats.auto_reruns_sent for s in sessions) - auto0
            tally.bytes_in = sum(s.stats.bytes_in for s in sessions) - bytes0
            if trainer is not None:
                trainer.look()
                extra["finetune"] = {
                    "training_seen": trainer.training_seen > 0,
                    "still_training_at_end": trainer.running(),
                    "progress_texts_seen_training": trainer.training_seen,
                    "last_progress": trainer.last_progress,
                    "max_step_seen": trainer.max_step,
                    "restarts": trainer.restarts,
                    "errors": trainer.errors[:3],
                }
        finally:
            stop.set()
            if keeper is not None:
                with contextlib.suppress(Exception):
                    await keeper
            await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
            if trainer is not None:
                with contextlib.suppress(Exception):
                    await trainer.finish()
        self.tallies.setdefault(name, []).append(tally)
        self.extras.setdefault(name, []).append(extra)
        moves = [m.first_metric_ms for m in tally.moves]
        log(f"{name}: {len(moves)} moves, median first metric "
            f"{statistics.median(moves) if moves else float('nan'):.0f} ms, "
            f"{len(tally.errors)} errors, {extra}")

    def report(self, name: str, count: int, alone: dict[str, float] | None) -> dict[str, Any]:
        """One configuration's JSON, pooled over the rounds."""
        tallies = self.tallies.get(name, [])
        moves = [m for t in tallies for m in t.moves]
        errors = [e for t in tallies for e in t.errors]
        out: dict[str, Any] = {
            "sessions": count,
            "finetune": name.endswith("finetune"),
            "moves": len(moves),
            "moves_expected": count * self.moves * len(tallies),
            "errors": len(errors),
            "error_samples": sorted(set(errors))[:5],
        }
        for key in ("first_metric_ms", "rerun_ms", "start_ms"):
            values = [getattr(m, key) for m in moves]
            out[key] = spread(values)
            rounds = [round(statistics.median([getattr(m, key) for m in t.moves]), 1)
                      for t in tallies if t.moves]
            out[f"{key}_round_medians"] = rounds
            if alone and key in alone and values:
                out[f"{key}_ratio_vs_alone"] = round(statistics.median(values) / alone[key], 2)
        out["metric_changed_moves"] = sum(m.changed for m in moves)
        out["open_ms"] = spread([v for t in tallies for v in t.open_ms])
        out["auto_reruns_sent"] = sum(t.auto_reruns for t in tallies)
        out["mib_received"] = round(sum(t.bytes_in for t in tallies) / 2**20, 2)
        out["per_round"] = self.extras.get(name, [])
        return out


def medians(tallies: list[Tally]) -> dict[str, float] | None:
    moves = [m for t in tallies for m in t.moves]
    if not moves:
        return None
    return {key: statistics.median([getattr(m, key) for m in moves])
            for key in ("first_metric_ms", "rerun_ms", "start_ms")}


async def cpu_profile(bench: Bench, session: StreamlitSession,
                      moves: int = 5) -> dict[str, Any]:
    """One session alone, moves far apart: the server CPU of a move's page run, and of
    what follows it in the background (the app's latency, file size and whole-set
    measurements, and the metrics box redrawing itself until they are in)."""
    assert bench.server is not None
    rerun_cpu, background_cpu, background_wall = [], [], []
    for _ in range(moves):
        await bench.settle()
        slider = prune_slider(session)
        if slider is None:
            return {"error": "the slider is gone"}
        a, b = slider_values(slider)
        value = b if current_value(session, slider) == a else a
        cpu0 = bench.server.cpu_seconds()
        t0 = await session.set_widget(slider, value)
        done = await session.wait_page(t0, bench.move_timeout)
        cpu1 = bench.server.cpu_seconds()
        await bench.settle()
        end = time.perf_counter()
        cpu2 = bench.server.cpu_seconds()
        rerun_cpu.append(1000 * (cpu1 - cpu0))
        background_cpu.append(1000 * (cpu2 - cpu1))
        background_wall.append(1000 * (end - (done.finished or end)))
    return {
        "moves": moves,
        "page_run_cpu_ms": spread(rerun_cpu),
        "background_cpu_ms": spread(background_cpu),
        "background_until_idle_ms": spread(background_wall),
        "note": "background: the app's measurements after the page run (they start once "
                "the plan has stayed a second), and the metrics box polling until they "
                "are in (settled: CPU < 15% over 2 s)",
    }


# -- the classroom checks --------------------------------------------------------------------

async def login_only(base: str, query: str, name: str, timeout: float) -> dict[str, Any]:
    """What a session with `query` gets: it must be the login form and nothing else."""
    session = StreamlitSession(base, page=PRUNE_PAGE, query=query, name=name)
    try:
        await session.open(timeout)
        await session.wait_page(0.0, timeout)
        await asyncio.sleep(1.0)  # anything drawn late (a fragment) would show up now
        shown = session.summary()
    finally:
        await session.close()
    kinds = {row["kind"] for row in shown}
    login = [r for r in shown if r["kind"] == "text_input" and r["label"] == LOGIN_LABEL]
    return {
        "ok": bool(login) and "slider" not in kinds and "metric" not in kinds,
        "has_access_code_input": bool(login),
        "sliders": sum(r["kind"] == "slider" for r in shown),
        "metrics": sum(r["kind"] == "metric" for r in shown),
        "elements": [f"{r['kind']}: {r['label'][:60]}" for r in shown],
        "app_errors": session.stats.app_errors[:3],
    }


async def classroom_checks(base: str, token: str, metric: str,
                           timeout: float) -> dict[str, Any]:
    """(a) no token and a wrong token: only the login; (b) the token: the Prune page."""
    out: dict[str, Any] = {
        "no_token": await login_only(base, "", "no-token", timeout),
        "wrong_token": await login_only(base, "token=" + secrets.token_urlsafe(16),
                                        "wrong-token", timeout),
    }
    try:
        session, open_ms = await open_prune(base, f"token={token}", "with-token", metric,
                                            timeout)
    except ClientError as exc:
        out["with_token"] = {"ok": False, "error": str(exc)}
    else:
        tally = Tally()
        await student(session, 1, 0.0, metric, timeout, tally)
        await session.close()
        out["with_token"] = {
            "ok": bool(tally.moves) and not tally.errors, "open_ms": round(open_ms),
            "first_metric_ms": round(tally.moves[0].first_metric_ms) if tally.moves else None,
            "errors": tally.errors[:3]}
    out["ok"] = all(out[k]["ok"] for k in ("no_token", "wrong_token", "with_token"))
    return out


# -- main ------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", default="1,4,8,16",
                        help="session counts to run, comma-separated (1 is always run)")
    parser.add_argument("--finetune", type=int, default=8, metavar="N",
                        help="sessions moving sliders while one more fine-tunes (0: skip)")
    parser.add_argument("--finetune-epochs", type=int, default=200, metavar="E",
                        help="the fine-tuning run's epochs (it is restarted when it ends)")
    parser.add_argument("--moves", type=int, default=15, help="timed moves per session")
    parser.add_argument("--rounds", type=int, default=2,
                        help="times every configuration runs, interleaved")
    parser.add_argument("--url", help="use this running server instead of starting one")
    parser.add_argument("--token", help="the classroom secret: ?token=... on every session")
    parser.add_argument("--classroom", action="store_true",
                        help="start `pruneviz serve --classroom` with a generated secret and "
                        "check that sessions without it get only the login")
    parser.add_argument("--metric", default="accuracy",
                        help="the label of the st.metric timed (default: accuracy)")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="seconds opening a page or starting the training may take")
    parser.add_argument("--move-timeout", type=float, default=60.0,
                        help="seconds one move may take before it counts as an error")
    parser.add_argument("--config-limit", type=float, default=300.0,
                        help="seconds of moving per configuration and round: no new move "
                        "after that (an overloaded server would otherwise take hours)")
    args = parser.parse_args(argv)
    try:
        counts = sorted({int(c) for c in args.sessions.split(",") if c.strip()} | {1})
    except ValueError:
        parser.error(f"--sessions wants numbers like 1,4,8,16, not {args.sessions!r}")
    if any(c < 1 for c in counts) or args.moves < 1 or args.rounds < 1 or args.finetune < 0:
        parser.error("--sessions, --moves and --rounds must be positive, --finetune >= 0")
    if args.classroom and args.url and not args.token:
        parser.error("--classroom with --url needs the server's --token")
    args.counts = counts
    return args


async def run(args: argparse.Namespace, base: str, server: Server | None,
              token: str | None) -> dict[str, Any]:
    query = f"token={token}" if token else ""
    bench = Bench(base=base, query=query, metric=args.metric, moves=args.moves,
                  timeout=args.timeout, move_timeout=args.move_timeout,
                  config_limit=args.config_limit, finetune_epochs=args.finetune_epochs,
                  server=server)
    result: dict[str, Any] = {}
    if args.classroom:
        assert token is not None
        log("classroom checks: no token, a wrong token, the token")
        result["classroom"] = await classroom_checks(base, token, args.metric, args.timeout)
        log(f"classroom checks ok: {result['classroom']['ok']}")
    log("warm-up: one session opens the Prune page and moves once")
    session, open_ms = await open_prune(base, query, "warm-up", args.metric, args.timeout)
    await student(session, 1, 0.0, args.metric, args.move_timeout, Tally())
    result["warm_up_open_ms"] = round(open_ms)
    if server is not None:
        log("alone CPU profile: where one move's server CPU goes")
        result["alone_cpu_profile"] = await cpu_profile(bench, session)
    await session.close()
    order = [(str(c), c, False) for c in args.counts]
    if args.finetune:
        order.append((f"{args.finetune}+finetune", args.finetune, True))
    for round_ in range(args.rounds):
        for name, count, finetune in order:
            await bench.settle()
            log(f"round {round_ + 1}/{args.rounds}: {name}")
            await bench.run_config(name, count, finetune)
    alone = medians(bench.tallies.get("1", []))
    result["configs"] = {name: bench.report(name, count, alone) for name, count, _ in order}
    result["order"] = [name for name, _, _ in order]
    loaded_name = f"{args.finetune}+finetune"
    loaded = medians(bench.tallies.get(loaded_name, [])) if args.finetune else None
    meets = None
    if alone and loaded:
        meets = loaded["first_metric_ms"] <= TARGET_FACTOR * alone["first_metric_ms"]
    result["target"] = {
        "rule": f"{loaded_name}: median first_metric_ms <= {TARGET_FACTOR:g} x alone"
        if args.finetune else "not measured: --finetune 0",
        "alone_ms": round(alone["first_metric_ms"], 1) if alone else None,
        "loaded_ms": round(loaded["first_metric_ms"], 1) if loaded else None,
        "ratio": round(loaded["first_metric_ms"] / alone["first_metric_ms"], 2)
        if alone and loaded else None,
        "meets": meets,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C and SIGTERM end the run through the finally below (the server is stopped).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    token = args.token
    server: Server | None = None
    home = tempfile.TemporaryDirectory(prefix="pruneviz-classroom-")
    header: dict[str, Any] = {"name": "classroom_load", "cpus": os.cpu_count(),
                              "moves_per_session": args.moves, "rounds": args.rounds,
                              "metric": args.metric}
    try:
        if args.url:
            base = args.url.rstrip("/")
            header["server"] = {"url": base, "started": False}
        else:
            if args.classroom:
                problem = serve_available()
                if problem:
                    print(json.dumps({**header, "error": problem}, indent=2))
                    log(f"cannot run --classroom: {problem}")
                    return 2
                token = token or secrets.token_urlsafe(16)
            port = free_port()
            env = {**os.environ, "PRUNEVIZ_HOME": str(Path(home.name) / "home")}
            if args.classroom:
                env[SECRET_ENV] = token or ""
            server = Server(server_command(port, args.classroom), env,
                            Path(home.name) / "server.log")
            base = f"http://127.0.0.1:{port}"
            header["server"] = {"url": base, "started": True,
                                "command": " ".join(server.command[1:])}
            log(f"starting {' '.join(server.command[1:])}")
            try:
                asyncio.run(wait_healthy(base, 120.0, server.alive))
            except ClientError as exc:
                raise SystemExit(f"the server did not start: {exc}\n{server.log_tail()}") \
                    from None
        result = asyncio.run(run(args, base, server, token))
        print(json.dumps({**header, **result}, indent=2))
        classroom_ok = result.get("classroom", {}).get("ok", True)
        return 0 if classroom_ok else 1
    finally:
        if server is not None:
            if not server.alive():
                log(f"the server had exited: {server.log_tail()}")
            server.stop()
        home.cleanup()


if __name__ == "__main__":
    sys.exit(main())
