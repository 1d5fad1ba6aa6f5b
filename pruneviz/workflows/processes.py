"""Long jobs in child processes, so that a sensitivity analysis, a sweep or a fine-tuning
run never makes interactive work (a slider move, measured in the server) wait.

A `Job` waits for its turn in the server's queue (pruneviz.workflows.jobqueue), then runs
its work (a `run_*` function of pruneviz.workflows.long_jobs) in a fresh Python process
started for it, `python -c CHILD_CODE`, whose entry is `child_main`:

- it runs at a lower OS priority (`JOB_NICENESS`) with `job_threads()` torch threads, so
  that the server's own threads (the pages' forward passes) come first;
- it is a fresh interpreter, not a fork: forking a process in which torch has run while
  another thread runs torch hangs the child in its first parallel op (OpenMP after
  fork). Nor is it multiprocessing's "spawn", which runs the parent's main script again
  in the child — in the server, the Streamlit app. The child imports this library and
  what the job needs, never streamlit;
- what it works on goes to it pickled, by this module, as bytes through a pipe: our own
  objects (the pristine model, the data, the plan, the recipe), with the tensors' values
  in the bytes — no shared memory, so nothing depends on the size of /dev/shm and no file
  descriptor is held per tensor. A child costs about 2 s to start (importing torch); a
  ResNet-50 with 256 64x64 images (a 122 MB task) sends its first message about 4 s after
  `start()` (benchmarks/job_startup.py). A model whose classes come from the user's own
  file (`file.py:factory`) is read after the child imported that file the way the server
  did (pruneviz.data.userfile), under the same private module name. Nothing a user
  supplied is unpickled, anywhere: only bytes this module wrote, in the server or in the
  child;
- it reports through a second pipe: each message pickled (progress, partial results,
  training records, the outcome with its weights bit for bit), read by the job's thread
  in the server and handed to the worker that owns the job (pruneviz.app.worker), which
  keeps what its pages show;
- Cancel is a message to the child, whose loops check it between points and steps (a
  cancelled fine-tune still measures and sends its best weights so far). A child that
  sends nothing for `CANCEL_GRACE_S` after a cancel (a point that takes too long) is
  killed, unless it said it is finishing (measuring a fine-tune's result);
- an exception in the child comes back as a message: a PrunevizError's text as it is,
  anything else with its type's name. A child that dies without a word (killed, out of
  memory) becomes "the worker process stopped unexpectedly (signal 9, SIGKILL): ...";
- no child outlives what it works for: when the worker that owns the job is garbage
  collected (its Streamlit session ended) or the server exits, the child is killed; a
  child whose server died finds its pipe closed and exits.

A job runs in a thread of this process instead — the way every job ran before — when its
model is on a GPU (CUDA tensors do not travel this way; the worker decides), when what it
needs cannot be pickled (a model class defined inside a function, say), or when
`RUN_IN_PROCESSES` is False (the page tests, which hold jobs with gates patched into this
process; a system without POSIX pipes). Either way it waits for its turn in the same queue
and sends the same messages.
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import json
import os
import pickle  # noqa: TID251 - only bytes this module wrote are ever read back (see above)
import signal
import subprocess
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import torch

from pruneviz.core.session import PruningSession
from pruneviz.data import userfile
from pruneviz.data.tasks import Scorer, Task, parse_metric
from pruneviz.errors import DataError, PrunevizError
from pruneviz.measure.machine import as_background
from pruneviz.workflows import jobqueue
from pruneviz.workflows.jobqueue import JobQueue, cores

# False: every job runs in a thread of this process (the page tests; and where there are
# no POSIX pipes and niceness to run a child with)
RUN_IN_PROCESSES = os.name == "posix"
JOB_NICENESS = 10  # added to the server's niceness in a job's process: lower priority
CANCEL_GRACE_S = 20.0  # a cancelled child silent this long is killed
POLL_S = 0.05  # how often the job's thread looks at its cancel flag while it waits
CANCEL = b"cancel"  # the message that cancels the child's work
CHILD_CODE = "from pruneviz.workflows.processes import child_main; child_main()"

Emit = Callable[[object], None]
Work = Callable[[PruningSession, Any, Emit, threading.Event], None]


def job_threads(queue: JobQueue | None = None) -> int:
    """Torch threads a job's process uses by default: its share of the cores when `queue`
    (the server's) runs as many jobs as it may, so that running jobs together use every
    core once (at a lower priority than the server) instead of oversubscribing them."""
    running = (queue if queue is not None else jobqueue.JOBS).max_running
    return max(1, cores() // running)


def failure_text(exc: BaseException) -> str:
    """A job's failure for the page: a user problem's message as it is, anything else
    with its type."""
    return str(exc) if isinstance(exc, PrunevizError) else f"{type(exc).__name__}: {exc}"


def died_text(returncode: int) -> str:
    """Why a child that ended without a word ended, in plain words."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "an unknown signal"
        how = f"signal {-returncode}, {name}"
    else:
        how = f"exit code {returncode}"
    return (f"the worker process stopped unexpectedly ({how}): it may have run out of "
            "memory, or been stopped by the system; the server's log may say more. Run "
            "it again, on fewer samples or a smaller model if it happens again")


# -- messages ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChildTask:
    """What a child runs: `function(recipe(), spec, emit, cancel)`. `function` is a
    module-level function (pickled by name); `recipe` builds the job's own session."""

    function: Work
    recipe: Callable[[], PruningSession]
    spec: object


@dataclass(frozen=True)
class ChildInfo:
    """The child's first message, once it is set up: who it is and how it runs."""

    pid: int
    niceness: int
    threads: int


@dataclass(frozen=True)
class Failed:
    """The job failed: why, for the page."""

    message: str


@dataclass(frozen=True)
class Finishing:
    """Sent by a job's work once cancelling no longer applies: what follows measures the
    result it delivers (a fine-tune's best weights). The child is not killed for being
    slow from then on."""


@dataclass(frozen=True)
class Ended:
    """The last message of every job, after its results or its failure."""


@dataclass(frozen=True)
class _Completed:
    """The child's work returned (the child exits next)."""


# -- pickling our own objects ---------------------------------------------------------------
def _scorer_again(spec: str) -> Scorer:
    """The metric `spec` names ("top5", "path/file.py:f1"), made again in the child: a
    Scorer's functions are closures, which do not pickle. (Top-k exists only for
    classifiers; a file's metric takes any task.)"""
    scorer = parse_metric(spec, Task.CLASSIFICATION)
    if scorer is None:
        raise DataError(f"the metric {spec!r} cannot be made again in a worker process")
    return scorer


def _reduce_scorer(scorer: Scorer) -> tuple[Callable[[str], Scorer], tuple[str]]:
    if not scorer.spec:
        raise pickle.PicklingError(f"the metric {scorer.name} says not how it was made")
    return _scorer_again, (scorer.spec,)


def _read_only(items: dict[Any, Any]) -> types.MappingProxyType[Any, Any]:
    return types.MappingProxyType(items)


def _reduce_read_only(mapping: types.MappingProxyType[Any, Any]) -> tuple[
        Callable[[dict[Any, Any]], types.MappingProxyType[Any, Any]], tuple[dict[Any, Any]]]:
    return _read_only, (dict(mapping),)


class _Pickler(pickle.Pickler):
    """Pickles our objects for the other process: tensors with their values in the bytes,
    a Scorer as the spec it was made from, a read-only mapping (a Plan's layers) as a copy
    made read-only again; and notes the user's own modules (imported by
    pruneviz.data.userfile) whose classes or functions it pickles by name, for the child
    to import first."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.dispatch_table = {**copyreg.dispatch_table, Scorer: _reduce_scorer,
                               types.MappingProxyType: _reduce_read_only}
        self.user_modules: list[str] = []

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type | types.FunctionType):
            module = getattr(obj, "__module__", None)
            if isinstance(module, str) and module.startswith(userfile.USER_MODULE_PREFIX) \
                    and module not in self.user_modules:
                self.user_modules.append(module)
        return NotImplemented  # pickled as usual


def dumps(obj: object) -> tuple[bytes, list[str]]:
    """`obj` pickled, and the user's files its classes come from (to import first)."""
    buffer = io.BytesIO()
    pickler = _Pickler(buffer)
    pickler.dump(obj)
    files = [getattr(sys.modules.get(m), "__file__", None) for m in pickler.user_modules]
    return buffer.getvalue(), [f for f in files if isinstance(f, str)]


def loads(data: bytes) -> Any:
    """Bytes `dumps` wrote in the other process of a job (never anything a user gave)."""
    return pickle.loads(data)  # noqa: S301 - written by dumps, in this job's other process


# -- the job, in the server -------------------------------------------------------------------
class Owner(Protocol):
    """What a job runs for: a worker that receives its messages, and runs its work in the
    job's thread when it does not go to a child."""

    def receive(self, message: object) -> None: ...

    def run_here(self, emit: Emit, cancel: threading.Event) -> None: ...


class Job:
    """One long job of `owner`'s, started at once: it waits in `queue` for its turn as
    `user`'s, then runs `task` in a child process (None: `owner.run_here` in this job's
    thread), handing every message to `owner.receive`; `Ended()` is always the last.

    The job holds its owner weakly: once the owner is garbage collected, a child still
    running is killed (and a waiting job leaves the queue)."""

    def __init__(self, owner: Owner, *, name: str, user: str, queue: JobQueue,
                 task: ChildTask | None, threads: int | None = None) -> None:
        self.name = name
        self.user = user
        self._owner = weakref.ref(owner)
        self._queue = queue
        self._task = task
        self._threads = threads if threads is not None else job_threads(queue)
        self._cancel = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self.info: ChildInfo | None = None  # the child's, once it is set up
        self.in_child = False  # whether the work went to a child process
        self._ticket = queue.enter(user)
        self._finalizer = weakref.finalize(owner, self.stop)  # also when the server exits
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Waiting for its turn, or working."""
        return self._thread.is_alive()

    @property
    def pid(self) -> int | None:
        """The child's process id, once it started."""
        process = self._process
        return None if process is None else process.pid

    @property
    def queue(self) -> JobQueue:
        """The queue the job waits in."""
        return self._queue

    def position(self) -> int | None:
        """Its place in the queue (1 = next), None once it runs."""
        return self._queue.position(self._ticket)

    def jobs_running(self) -> int:
        """How many jobs of the queue run now."""
        return self._queue.running

    def cancel(self) -> None:
        """Stop the work at its next check; a waiting job leaves the queue at once."""
        self._cancel.set()
        self._queue.withdraw(self._ticket)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the job to end; False if it is still running."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Cancel, and kill the child if there is one: its owner is gone."""
        self.cancel()
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()

    def _emit(self, message: object) -> None:
        owner = self._owner()
        if owner is None:
            self.stop()
            return
        owner.receive(message)

    def _run(self) -> None:
        as_background()  # in this process (the thread fallback): slider moves go first
        try:
            if not self._queue.wait_turn(self._ticket) or self._cancel.is_set():
                return
            pickled = self._pickled()
            if pickled is None:
                self._run_here()
            else:
                self.in_child = True
                self._run_child(*pickled)
        except Exception as exc:  # noqa: BLE001 - a thread has no caller to raise to
            self._emit(Failed(failure_text(exc)))
        finally:
            self._task = None  # let go of the model and data
            self._queue.leave(self._ticket)
            self._emit(Ended())
            self._finalizer.detach()

    def _pickled(self) -> tuple[list[bytes], list[str]] | None:
        """The task for the child (in a list that sending empties, so that the bytes are
        not kept while the job runs), and the user's files to import first; None when the
        work runs here (no task, or something in it does not pickle)."""
        if self._task is None:
            return None
        try:
            payload, user_files = dumps(self._task)
        except (pickle.PicklingError, TypeError, AttributeError):
            return None  # e.g. a model class defined inside a function: run it here
        return [payload], user_files

    def _run_here(self) -> None:
        owner = self._owner()
        if owner is not None:
            owner.run_here(self._emit, self._cancel)

    def _run_child(self, outbox: list[bytes], user_files: list[str]) -> None:
        down_read, down_write = os.pipe()  # to the child: its setup, the task, a cancel
        up_read, up_write = os.pipe()  # from the child: its messages
        down = Connection(down_write, readable=False)
        up = Connection(up_read, writable=False)
        try:
            try:
                process = subprocess.Popen(
                    [sys.executable, "-c", CHILD_CODE, str(down_read), str(up_write)],
                    pass_fds=(down_read, up_write), stdin=subprocess.DEVNULL,
                    start_new_session=True)  # Ctrl-C in the server's terminal is the server's
            finally:
                os.close(down_read)
                os.close(up_write)
            self._process = process
            setup = json.dumps({"sys_path": [str(p) for p in sys.path], "user_files": user_files,
                                "threads": self._threads, "niceness": JOB_NICENESS,
                                "load_timeout": userfile.LOAD_TIMEOUT_S}).encode()
            sent = threading.Event()

            def send() -> None:  # in a thread: the child reads once it has imported torch
                try:
                    down.send_bytes(setup)
                    down.send_bytes(outbox.pop())
                except OSError:
                    pass  # the child is gone: its end says why
                finally:
                    sent.set()

            threading.Thread(target=send, name=f"{self.name}-send", daemon=True).start()
            self._pump(process, down, up, sent)
        finally:
            down.close()
            up.close()
            process_now = self._process
            if process_now is not None and process_now.poll() is None:
                process_now.kill()
                process_now.wait()

    def _pump(self, process: subprocess.Popen[bytes], down: Connection, up: Connection,
              sent: threading.Event) -> None:
        """Hand the child's messages to the owner until the child ends; pass a cancel on;
        kill a cancelled child that stays silent."""
        completed = killed = told = finishing = False
        heard: float | None = None  # after a cancel: when the child was last heard of
        while True:
            if self._cancel.is_set():
                now = time.monotonic()
                heard = now if heard is None else heard
                if not told and sent.is_set():
                    told = True
                    with contextlib.suppress(OSError):  # the child is gone: its end says why
                        down.send_bytes(CANCEL)
                if not finishing and now - heard > CANCEL_GRACE_S:
                    process.kill()
                    killed = True
                    break
            if self._owner() is None:
                process.kill()
                killed = True
                break
            if not up.poll(POLL_S):
                continue
            try:
                message = loads(up.recv_bytes())
            except EOFError:
                break  # the child ended
            if heard is not None:
                heard = time.monotonic()
            if isinstance(message, ChildInfo):
                self.info = message
            elif isinstance(message, _Completed):
                completed = True
            else:
                finishing = finishing or isinstance(message, Finishing)
                completed = completed or isinstance(message, Failed)
                self._emit(message)
        returncode = process.wait()
        if not completed and not killed:
            self._emit(Failed(died_text(returncode)))


# -- the child ------------------------------------------------------------------------------
def child_main() -> None:
    """A job's process (`python -c CHILD_CODE DOWN UP`, DOWN and UP the pipes' file
    descriptors): set up as the server says (its import path, priority, threads), import
    the user's files, read the task, run it, send what it sends, exit."""
    down = Connection(int(sys.argv[1]), writable=False)
    up = Connection(int(sys.argv[2]), readable=False)

    def emit(message: object) -> None:
        up.send_bytes(dumps(message)[0])

    code = 0
    try:
        setup = json.loads(down.recv_bytes())
        sys.path[:] = [*setup["sys_path"], *(p for p in sys.path if p not in setup["sys_path"])]
        os.nice(int(setup["niceness"]))
        torch.set_num_threads(int(setup["threads"]))
        emit(ChildInfo(os.getpid(), os.nice(0), torch.get_num_threads()))
        userfile.set_load_timeout(float(setup["load_timeout"]))
        for path in setup["user_files"]:
            userfile.import_file(Path(path))
        task = loads(down.recv_bytes())
        if not isinstance(task, ChildTask):
            raise TypeError(f"a job's process was sent a {type(task).__name__}")
        cancel = threading.Event()
        threading.Thread(target=_listen, args=(down, cancel), name="pruneviz-cancel",
                         daemon=True).start()
        task.function(task.recipe(), task.spec, emit, cancel)
        emit(_Completed())
    except Exception as exc:  # noqa: BLE001 - everything goes back to the server as a message
        try:
            emit(Failed(failure_text(exc)))
        except OSError:
            code = 1  # the server is gone
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # now, even if the user's code left threads running


def _listen(down: Connection, cancel: threading.Event) -> None:
    """In the child: set `cancel` when the server says so; exit when the server is gone."""
    try:
        while True:
            if down.recv_bytes() == CANCEL:
                cancel.set()
    except (EOFError, OSError):
        os._exit(1)  # the server closed its end: it died, or gave up on this job


__all__ = [
    "CANCEL_GRACE_S",
    "JOB_NICENESS",
    "RUN_IN_PROCESSES",
    "ChildInfo",
    "ChildTask",
    "Emit",
    "Ended",
    "Failed",
    "Finishing",
    "Job",
    "Owner",
    "child_main",
    "died_text",
    "dumps",
    "failure_text",
    "job_threads",
    "loads",
    "Work",
]
