"""Pacing a replay: a fixed rate (token bucket) or the recorded inter-flow times, sped up.

Both pacers decide from an absolute clock, never by sleeping a fixed interval per record: a sleep that
overshoots, or a slow broker round trip, is made up by the next records instead of accumulating. Over a long
run the achieved rate therefore converges on the requested one (no drift). Clock and sleep are injectable,
so tests check the arithmetic without measuring wall-clock time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
Sleep = Callable[[float], object]
_EPSILON = 1e-9


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` banked; :meth:`acquire` takes one, waiting if needed.

    ``burst`` bounds how far the bucket catches up after a stall (default: 50 ms of tokens, at least one):
    large enough to absorb sleep overshoot, small enough that a paused producer does not flood the topic.
    """

    def __init__(
        self, rate: float, *, burst: float | None = None, clock: Clock = time.monotonic, sleep: Sleep = time.sleep
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = float(rate)
        self.capacity = max(1.0, float(burst) if burst is not None else self.rate * 0.05)
        self._clock = clock
        self._sleep = sleep
        self._tokens = 1.0
        self._last = clock()

    def acquire(self) -> None:
        """Take one token, sleeping until one has accrued."""
        self._refill()
        while self._tokens < 1.0 - _EPSILON:  # without a tolerance, rounding can leave 0.99999… forever
            self._sleep((1.0 - self._tokens) / self.rate)
            self._refill()
        self._tokens -= 1.0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now


class TimelinePacer:
    """Releases each flow at its recorded time divided by ``speedup``, counted from the first flow.

    ``speedup=60`` replays an hour of traffic in a minute. Flows should come in time order: a flow stamped
    earlier than the one before (the next pass of a ``--loop``) starts the timeline afresh.
    """

    def __init__(self, speedup: float, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> None:
        if speedup <= 0:
            raise ValueError(f"speedup must be positive, got {speedup}")
        self.speedup = float(speedup)
        self._clock = clock
        self._sleep = sleep
        self._origin: tuple[float, float] | None = None
        self._previous = float("-inf")

    def wait_for(self, flow_time: float) -> None:
        """Sleep until the moment ``flow_time`` (epoch seconds) maps to."""
        if self._origin is None or flow_time < self._previous:
            self._origin = (flow_time, self._clock())
        self._previous = flow_time
        first_flow, started = self._origin
        due = started + (flow_time - first_flow) / self.speedup
        while (delay := due - self._clock()) > _EPSILON:
            self._sleep(delay)
