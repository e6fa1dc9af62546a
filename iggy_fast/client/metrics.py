"""Client-side metrics: what each producer and consumer sent, received, waited for and failed.

A `MetricsCollector` holds one `ActorStats` per named producer or consumer (the producer and
consumer record into it when given one). Each records per request, not per message: messages
and payload bytes sent or received, the request's latency, and errors. Reading is possible at any
time from any thread (`snapshot()`, `report()`), and `start(interval)` prints the report every
`interval` seconds from a daemon thread until `stop()`.

Rates are over a sliding window (the last `window` seconds, default 1): each actor keeps a
sample of its totals at most every tenth of a window, and a rate is the difference between now
and the oldest sample still in the window. Latency percentiles are over the last
`latency_samples` requests (a ring of floats, no object per request).
"""

from __future__ import annotations

import sys
import threading
import time
from array import array
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    """One actor's figures at one moment; rates are per second over the window."""
    name: str
    messages_sent: int
    bytes_sent: int
    messages_received: int
    bytes_received: int
    requests: int
    errors: int
    last_error: str | None
    messages_sent_per_sec: float
    bytes_sent_per_sec: float
    messages_received_per_sec: float
    bytes_received_per_sec: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_max_ms: float

    def line(self) -> str:
        parts = [f"{self.name}:"]
        if self.messages_sent or not self.messages_received:
            parts.append(f"sent {self.messages_sent_per_sec:,.0f} msg/s "
                         f"{self.bytes_sent_per_sec / 1e6:,.2f} MB/s (total {self.messages_sent:,})")
        if self.messages_received:
            parts.append(f"received {self.messages_received_per_sec:,.0f} msg/s "
                         f"{self.bytes_received_per_sec / 1e6:,.2f} MB/s "
                         f"(total {self.messages_received:,})")
        parts.append(f"latency p50 {self.latency_p50_ms:.2f} p90 {self.latency_p90_ms:.2f} "
                     f"p99 {self.latency_p99_ms:.2f} max {self.latency_max_ms:.2f} ms")
        parts.append(f"errors {self.errors}")
        return " ".join(parts)


def _percentile(ordered, q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class ActorStats:
    """The counters of one producer or consumer."""

    def __init__(self, name: str, window: float = 1.0, latency_samples: int = 10_000):
        self.name = name
        self.window = window
        self.messages_sent = self.bytes_sent = 0
        self.messages_received = self.bytes_received = 0
        self.requests = self.errors = 0
        self.last_error: str | None = None
        self._latencies = array("d", bytes(8 * latency_samples))
        self._next = 0                          # ring position of the next latency
        self._samples: deque = deque()          # (time, sent, sent bytes, received, bytes)
        self._lock = threading.Lock()
        self._sample(time.monotonic())

    def _sample(self, now: float) -> None:
        samples = self._samples
        if not samples or now - samples[-1][0] >= self.window / 10:
            samples.append((now, self.messages_sent, self.bytes_sent, self.messages_received,
                            self.bytes_received))
            while len(samples) > 2 and now - samples[1][0] >= self.window:
                samples.popleft()

    def _latency(self, seconds: float) -> None:
        ring = self._latencies
        ring[self._next % len(ring)] = seconds
        self._next += 1
        self.requests += 1

    def sent(self, messages: int, nbytes: int, seconds: float) -> None:
        with self._lock:
            self.messages_sent += messages
            self.bytes_sent += nbytes
            self._latency(seconds)
            self._sample(time.monotonic())

    def received(self, messages: int, nbytes: int, seconds: float) -> None:
        with self._lock:
            self.messages_received += messages
            self.bytes_received += nbytes
            self._latency(seconds)
            self._sample(time.monotonic())

    def error(self, exc: BaseException) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"

    def snapshot(self) -> Snapshot:
        with self._lock:
            now = time.monotonic()
            self._sample(now)
            t0, s0, sb0, r0, rb0 = self._samples[0]
            span = max(now - t0, 1e-9)
            filled = min(self._next, len(self._latencies))
            ordered = sorted(self._latencies[:filled])
            return Snapshot(
                self.name, self.messages_sent, self.bytes_sent, self.messages_received,
                self.bytes_received, self.requests, self.errors, self.last_error,
                (self.messages_sent - s0) / span, (self.bytes_sent - sb0) / span,
                (self.messages_received - r0) / span, (self.bytes_received - rb0) / span,
                _percentile(ordered, 0.50) * 1e3, _percentile(ordered, 0.90) * 1e3,
                _percentile(ordered, 0.99) * 1e3, (ordered[-1] if ordered else 0.0) * 1e3)


class MetricsCollector:
    """Per-actor client metrics, readable at any time and printable every second."""

    def __init__(self, window: float = 1.0, latency_samples: int = 10_000):
        self.window = window
        self.latency_samples = latency_samples
        self.actors: dict[str, ActorStats] = {}
        self._printer: threading.Thread | None = None
        self._stop = threading.Event()

    def actor(self, name: str) -> ActorStats:
        """The stats named `name`, created on first use (a producer or consumer calls this)."""
        stats = self.actors.get(name)
        if stats is None:
            stats = self.actors.setdefault(name, ActorStats(name, self.window,
                                                            self.latency_samples))
        return stats

    def snapshot(self) -> dict[str, Snapshot]:
        return {name: stats.snapshot() for name, stats in list(self.actors.items())}

    def totals(self) -> Snapshot | None:
        """Every actor summed (latencies: the worst actor's), None before any actor exists."""
        snaps = list(self.snapshot().values())
        if not snaps:
            return None
        fields = ("messages_sent", "bytes_sent", "messages_received", "bytes_received",
                  "requests", "errors", "messages_sent_per_sec", "bytes_sent_per_sec",
                  "messages_received_per_sec", "bytes_received_per_sec")
        sums = {f: sum(getattr(s, f) for s in snaps) for f in fields}
        worst = {f: max(getattr(s, f) for s in snaps) for f in
                 ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms")}
        last = next((s.last_error for s in snaps if s.last_error), None)
        return Snapshot("total", last_error=last, **sums, **worst)

    def report(self) -> str:
        return "\n".join(s.line() for s in self.snapshot().values())

    def start(self, interval: float = 1.0, file=None) -> None:
        """Print the report every `interval` seconds (to `file`, default stdout) until stop()."""
        if self._printer is not None:
            return
        self._stop.clear()

        def run():
            while not self._stop.wait(interval):
                text = self.report()
                if text:
                    print(text, file=file or sys.stdout, flush=True)

        self._printer = threading.Thread(target=run, name="iggy-metrics", daemon=True)
        self._printer.start()

    def stop(self) -> None:
        if self._printer is not None:
            self._stop.set()
            self._printer.join()
            self._printer = None
