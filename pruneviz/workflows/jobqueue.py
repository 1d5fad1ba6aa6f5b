"""The server's queue of long jobs: how many run at once, whose turn is next.

A sensitivity analysis, a uniform sweep and a fine-tuning run each take a worker (a
child process, see pruneviz.workflows.processes) for seconds to hours. So that one
user cannot take the whole machine, and so that interactive work always finds a free
core, every long job of the process passes through one `JobQueue`:

- at most `max_running` jobs run at once across the whole server (default: half the
  cores this process may use, at least one);
- at most one job per user runs at a time: a user's second job waits even while slots
  are free, so that a class of students shares the machine one job each;
- a job that cannot start waits in first-come order; its `position` (1 = the first
  waiting) is what the pages show, and withdrawing it (Cancel) takes it out at once.

A job `enter`s the queue, waits in `wait_turn` (in its own thread, never a page's), and
`leave`s when it ends, which lets the next ones in. `JOBS` is the process's queue; a
worker looks it up when a job starts, so that a test can give itself a fresh one.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from pruneviz.i18n import ENGLISH, _, language, ngettext


def cores() -> int:
    """The CPU cores this process may run on (its affinity, where the system says it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_max_running() -> int:
    """Long jobs that may run at once by default: half the cores, at least one."""
    return max(1, cores() // 2)


@dataclass(eq=False)
class Ticket:
    """One job's place in the queue (compared by identity: two jobs of a user are two
    tickets)."""

    user: str


class JobQueue:
    """First come, first served, with at most `max_running` jobs running and at most one
    per user. Thread-safe: pages read positions while job threads wait and leave."""

    def __init__(self, max_running: int | None = None) -> None:
        self.max_running = default_max_running() if max_running is None else max_running
        if self.max_running < 1:
            raise ValueError(f"max_running must be at least 1, got {self.max_running}")
        self._changed = threading.Condition()
        self._waiting: list[Ticket] = []
        self._running: list[Ticket] = []

    def enter(self, user: str) -> Ticket:
        """A new job of `user` joins the end of the queue (and runs at once if it may)."""
        ticket = Ticket(user)
        with self._changed:
            self._waiting.append(ticket)
            self._admit()
        return ticket

    def wait_turn(self, ticket: Ticket) -> bool:
        """Block until `ticket` may run (True), or until it is withdrawn (False)."""
        with self._changed:
            while ticket in self._waiting:
                self._changed.wait()
            return ticket in self._running

    def withdraw(self, ticket: Ticket) -> None:
        """Take a waiting job out of the queue (a running one keeps its slot until it
        leaves)."""
        with self._changed:
            if ticket in self._waiting:
                self._waiting.remove(ticket)
                self._changed.notify_all()

    def leave(self, ticket: Ticket) -> None:
        """The job has ended (or was withdrawn): free its slot for the next ones."""
        with self._changed:
            if ticket in self._running:
                self._running.remove(ticket)
            elif ticket in self._waiting:
                self._waiting.remove(ticket)
            self._admit()

    def position(self, ticket: Ticket) -> int | None:
        """1 for the first waiting job, 2 for the next...; None once it runs (or left)."""
        with self._changed:
            return self._waiting.index(ticket) + 1 if ticket in self._waiting else None

    @property
    def running(self) -> int:
        """How many jobs run now."""
        with self._changed:
            return len(self._running)

    @property
    def waiting(self) -> int:
        """How many jobs wait now."""
        with self._changed:
            return len(self._waiting)

    def _admit(self) -> None:
        """Start the waiting jobs that may, in order. Call it holding the lock."""
        busy = {t.user for t in self._running}
        for ticket in list(self._waiting):
            if len(self._running) >= self.max_running:
                break
            if ticket.user in busy:  # the user's other job runs: this one waits for it
                continue
            self._waiting.remove(ticket)
            self._running.append(ticket)
            busy.add(ticket.user)
        self._changed.notify_all()


JOBS = JobQueue()  # the process's queue of long jobs


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, 21st, ..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def waiting_text(position: int, running: int) -> str:
    """What a page says about a job waiting in the queue: "Waiting for a free worker: 2nd
    in the queue (1 job running)"."""
    jobs = ngettext("{count} job", "{count} jobs", running).format(count=running)
    place = ordinal(position) if language() == ENGLISH else str(position)  # "2nd" in English
    return _("Waiting for a free worker: {place} in the queue ({jobs} running; each user runs "
             "one long job at a time)").format(place=place, jobs=jobs)


__all__ = ["JOBS", "JobQueue", "Ticket", "cores", "default_max_running", "ordinal",
           "waiting_text"]
