"""The one timing routine: candidates timed against a reference, interleaved, with a verdict.

Timing one model now and another later compares two moments of the machine as much as
two models: another program, a browser redrawing or another session's work changes a
forward pass's time by tens of percent (an unpruned model timed against itself in two
separate runs read 0.89 ms and 5.89 ms). So every latency comparison in pruneviz goes
through `time_against`: each round times the reference and every candidate once, back
to back in one compute turn (no other pass of this process overlaps them), the order
reversed every other round so that neither always runs on a warmer cache. Each round
gives one ratio per candidate, reference ms / candidate ms, measured under the same load.

The change is the `Speedup`: the median of those per-round ratios (above 1: the candidate
is faster) with a distribution-free confidence interval, and a verdict that says
"faster" or "slower" only when the interval excludes 1, else "within noise". A change
whose median is under MIN_CHANGE (2%) is within noise too, whatever its interval: it is
no reason to ship a different form, and systematic effects the interval cannot see
(where tensors sit in memory, caches) can be of that size.

Why this interval. Timings are skewed (a pass is never faster than the machine allows,
but can be much slower when something else runs), so a mean +- standard error would be
pulled by outliers and a normal approximation is poor for 10-30 rounds. The interval of
the *median* from order statistics (the sign test's interval for a median, as in
Conover, *Practical Nonparametric Statistics*) assumes only that the rounds are
independent: for n sorted ratios r(1) <= ... <= r(n), [r(k), r(n+1-k)] holds the true
median with probability 1 - 2 P(Binomial(n, 1/2) <= k - 1), and k is the largest that
keeps this at least the confidence asked for. It is exact, needs no random numbers (so
the same timings always give the same verdict, unlike a bootstrap), and is the same for
the ratios and their logarithms. Below 6 rounds no k reaches 95%: the interval is then
unbounded and the verdict always "within noise" — too few rounds to tell.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pruneviz.core.layers import eval_mode, model_device
from pruneviz.errors import Cancelled
from pruneviz.i18n import N_, _
from pruneviz.measure.machine import compute_turn, load_per_core

FASTER = "faster"
SLOWER = "slower"
WITHIN_NOISE = N_("within noise")  # a verdict; shown as _(WITHIN_NOISE)
CONFIDENCE = 0.95
WARMUP = 3
# The machine is called busy when the reference's own timings spread (p10 to p90) over
# more than this fraction of their median, or when more threads wait to run than it has
# cores (the 1-minute load average per core; a measurement's own threads count about 1).
MIN_CHANGE = 0.02  # a median speed-up within 1 +- this is never called a change
BUSY_SPREAD = 0.30
BUSY_LOAD = 1.5

Stop = Callable[[], bool]  # returns True when a long measurement should stop


@dataclass(frozen=True)
class Latency:
    """Latency of a forward pass on `device` ("cpu", "cuda:0", ...): median and spread over
    timed runs; `threads` are the CPU threads torch uses; `load_per_core` the machine's
    1-minute load average per core when it was timed (None where the system does not say)."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    batch_size: int
    threads: int
    runs: int
    device: str = "cpu"
    load_per_core: float | None = None

    @property
    def where(self) -> str:
        """The device for a sentence: "CPU" or the GPU's name ("cuda:0")."""
        return "CPU" if self.device == "cpu" else self.device

    @property
    def spread(self) -> float:
        """The p10-p90 width as a fraction of the median: how much the runs varied."""
        return (self.p90_ms - self.p10_ms) / self.median_ms if self.median_ms > 0 else 0.0

    def conditions(self) -> str:
        """How it was measured, for people: "on CPU, batch 64, 2 threads, 20 runs" (on a
        GPU without the threads, which do not run it)."""
        if self.device == "cpu":
            return _("on {device}, batch {batch}, {threads} threads, {runs} runs").format(
                device=self.where, batch=self.batch_size, threads=self.threads, runs=self.runs)
        return _("on {device}, batch {batch}, {runs} runs").format(
            device=self.where, batch=self.batch_size, runs=self.runs)

    def busy(self) -> str | None:
        """Why the machine was too busy for these timings to be trusted, or None: the runs
        varied more than BUSY_SPREAD of the median, or the load was above BUSY_LOAD per core."""
        reasons = []
        if self.spread > BUSY_SPREAD:
            reasons.append(_("the same model's timed runs varied by {spread} (p10 {p10} ms to "
                             "p90 {p90} ms)").format(spread=f"{self.spread:.0%}",
                                                     p10=f"{self.p10_ms:.2f}",
                                                     p90=f"{self.p90_ms:.2f}"))
        if self.load_per_core is not None and self.load_per_core > BUSY_LOAD:
            reasons.append(_("its load was {load} runnable threads per core")
                           .format(load=f"{self.load_per_core:.1f}"))
        if not reasons:
            return None
        return _("The machine is busy: {reasons}. Latency figures measured now are unreliable "
                 "and can disagree between tabs; close other programs or tabs, wait, and "
                 "measure again.").format(reasons=_(" and ").join(reasons))


def summarise(times: Sequence[float], batch_size: int, device: torch.device | str,
              load: float | None = None) -> Latency:
    """A `Latency` of timed runs (ms): median, 10th and 90th percentile."""
    if not times:
        raise ValueError("no timed runs to summarise")
    ordered = sorted(times)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]

    return Latency(median_ms=statistics.median(ordered), p10_ms=pick(0.1), p90_ms=pick(0.9),
                   batch_size=batch_size, threads=torch.get_num_threads(), runs=len(ordered),
                   device=str(device), load_per_core=load)


@dataclass(frozen=True)
class Speedup:
    """A candidate's speed against a reference timed in the same rounds: `ratio` is the
    median over rounds of reference ms / candidate ms (above 1: the candidate is faster),
    [`low`, `high`] its `confidence` interval (`math.inf` for `high` and 0 for `low` when
    there were too few rounds to bound it)."""

    ratio: float
    low: float
    high: float
    pairs: int
    confidence: float = CONFIDENCE

    @property
    def verdict(self) -> str:
        """FASTER or SLOWER only when the interval excludes 1 (and the median change is at
        least MIN_CHANGE); else WITHIN_NOISE."""
        if self.low > 1.0 and self.ratio >= 1.0 + MIN_CHANGE:
            return FASTER
        if self.high < 1.0 and self.ratio <= 1.0 / (1.0 + MIN_CHANGE):
            return SLOWER
        return WITHIN_NOISE

    @property
    def measured(self) -> bool:
        """Whether the interval says there is a change (faster or slower)."""
        return self.verdict != WITHIN_NOISE

    def interval_text(self, *, slower: bool = False) -> str:
        """"95% CI 1.62-1.81x" (`slower`: of the slow-down, 1 / the speed-up), or why
        there is none."""
        if not math.isfinite(self.high):
            return _("too few runs ({pairs}) for an interval").format(pairs=self.pairs)
        low, high = (1 / self.high, 1 / self.low) if slower else (self.low, self.high)
        return _("{confidence} CI {low}-{high}x").format(
            confidence=f"{self.confidence:.0%}", low=f"{low:.2f}", high=f"{high:.2f}")

    def text(self) -> str:
        """For people: "1.73x faster (95% CI 1.62-1.81x)", "1.25x slower (95% CI
        1.11-1.33x)" or "within noise (speed-up 0.98x, 95% CI 0.90-1.05x)"."""
        if self.verdict == FASTER:
            return _("{ratio}x faster ({interval})").format(
                ratio=f"{self.ratio:.2f}", interval=self.interval_text())
        if self.verdict == SLOWER:
            return _("{ratio}x slower ({interval})").format(
                ratio=f"{1 / self.ratio:.2f}", interval=self.interval_text(slower=True))
        return _("within noise (speed-up {ratio}x, {interval})").format(
            ratio=f"{self.ratio:.2f}", interval=self.interval_text())

    def short(self) -> str:
        """For a metric card's delta: "1.73x faster", "1.20x slower" or "within noise"."""
        if self.verdict == FASTER:
            return f"{self.ratio:.2f}x faster"
        if self.verdict == SLOWER:
            return f"{1 / self.ratio:.2f}x slower"
        return WITHIN_NOISE

    def to_dict(self) -> dict[str, object]:
        """The JSON object: the ratio, its interval (None when unbounded), the verdict."""
        bounded = math.isfinite(self.high)
        return {"speedup": self.ratio, "ci_low": self.low if bounded else None,
                "ci_high": self.high if bounded else None, "confidence": self.confidence,
                "pairs": self.pairs, "verdict": self.verdict}


def _rank(n: int, confidence: float) -> int:
    """The largest k with 1 - 2 P(Binomial(n, 1/2) <= k - 1) >= confidence; 0 if none."""
    alpha = 1.0 - confidence
    below = 0.0  # P(X <= k - 1)
    k = 0
    while k < (n + 1) // 2:
        below += math.comb(n, k) / 2**n
        if 2 * below > alpha + 1e-12:
            break
        k += 1
    return k


def speedup(candidate_ms: Sequence[float], reference_ms: Sequence[float], *,
            confidence: float = CONFIDENCE) -> Speedup:
    """The speed-up of a candidate over the reference from their times in the same rounds
    (`candidate_ms[i]` and `reference_ms[i]` timed back to back): the median per-round
    ratio reference / candidate and its distribution-free interval (module docstring)."""
    if len(candidate_ms) != len(reference_ms):
        raise ValueError(f"one candidate time per reference time is needed, got "
                         f"{len(candidate_ms)} and {len(reference_ms)}")
    if not candidate_ms:
        raise ValueError("no timed rounds to compare")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    ratios = sorted(r / c if c > 0 else math.inf
                    for c, r in zip(candidate_ms, reference_ms, strict=True))
    n = len(ratios)
    k = _rank(n, confidence)
    if k == 0:
        low, high = 0.0, math.inf
    else:
        low, high = ratios[k - 1], ratios[n - k]
    return Speedup(statistics.median(ratios), low, high, n, confidence)


@dataclass(frozen=True)
class Timing:
    """What one interleaved timing measured: each module's `Latency` (the reference
    first), and each candidate's `Speedup` over the reference; `times` are the raw
    per-round milliseconds, one list per module in the same order."""

    reference: Latency
    candidates: list[Latency]
    speedups: list[Speedup]
    times: list[list[float]]

    def between(self, a: int, b: int) -> Speedup:
        """Candidate `a`'s speed-up over candidate `b` (indices into `candidates`), from
        the same rounds."""
        return speedup(self.times[a + 1], self.times[b + 1])

    def busy(self) -> str | None:
        """The machine-is-busy sentence for this timing (the reference's spread), or None."""
        return self.reference.busy()


def synchronize(device: torch.device) -> None:
    """Wait until `device` has finished its queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(module: nn.Module, inputs: Sequence[Tensor], device: torch.device) -> float:
    """Milliseconds for `module` to run each of `inputs` once, on a GPU to its end."""
    synchronize(device)  # nothing queued earlier is counted
    start = time.perf_counter()
    for x in inputs:
        module(x)
    synchronize(device)  # the passes themselves, not only their launch
    return (time.perf_counter() - start) * 1000.0


def interleaved_times(modules: Sequence[nn.Module], inputs: Sequence[Tensor], *, runs: int,
                      warmup: int = WARMUP, stop: Stop | None = None) -> list[list[float]]:
    """Each module's milliseconds per round for running every one of `inputs` (eval mode,
    inference mode): `warmup` untimed rounds, then `runs` rounds, each one compute turn
    timing every module back to back, in reverse order every other round. `stop` is
    asked before each round; when it says so, `Cancelled` is raised. Modules and inputs
    must be on one device."""
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be an integer of at least 1, got {runs!r}")
    if not modules or not inputs:
        raise ValueError("nothing to time: give at least one module and one input")
    device = model_device(modules[0], default=inputs[0].device)
    times: list[list[float]] = [[] for _ in modules]
    order = list(range(len(modules)))
    with ExitStack() as stack:
        for module in modules:
            stack.enter_context(eval_mode(module))
        stack.enter_context(torch.inference_mode())
        for i in range(warmup + runs):
            if stop is not None and stop():
                raise Cancelled("the latency measurement was stopped")
            with compute_turn():  # no other pass of this process overlaps a round
                for k in order if i % 2 == 0 else order[::-1]:
                    elapsed = _timed(modules[k], inputs, device)
                    if i >= warmup:
                        times[k].append(elapsed)
    return times


def time_against(candidates: Sequence[nn.Module], reference: nn.Module, example: Tensor, *,
                 runs: int = 20, warmup: int = WARMUP, stop: Stop | None = None,
                 confidence: float = CONFIDENCE) -> Timing:
    """Time `candidates` against `reference` on `example` in interleaved rounds
    (`interleaved_times`): each one's `Latency`, and each candidate's `Speedup` over the
    reference with its verdict. With no candidates, the reference alone is timed."""
    times = interleaved_times([reference, *candidates], [example], runs=runs, warmup=warmup,
                              stop=stop)
    device = model_device(reference, default=example.device)
    batch = int(example.shape[0])
    load = load_per_core()
    latencies = [summarise(t, batch, device, load) for t in times]
    return Timing(latencies[0], latencies[1:],
                  [speedup(t, times[0], confidence=confidence) for t in times[1:]], times)


__all__ = [
    "BUSY_LOAD", "BUSY_SPREAD", "CONFIDENCE", "FASTER", "MIN_CHANGE", "SLOWER", "WITHIN_NOISE",
    "Latency", "Speedup", "Timing", "interleaved_times", "speedup", "summarise", "synchronize",
    "time_against",
]
