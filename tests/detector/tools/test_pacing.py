"""Pacing arithmetic with an injected clock: no test here measures wall-clock time."""

import pytest

from detector.tools.pacing import TimelinePacer, TokenBucket


class FakeClock:
    """A clock that only moves when slept on; ``overshoot`` makes every sleep last longer than asked."""

    def __init__(self, overshoot: float = 0.0) -> None:
        self.now = 100.0
        self.overshoot = overshoot
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "a pacer must never ask for a zero or negative sleep"
        self.sleeps.append(seconds)
        self.now += seconds + self.overshoot


def acquired_within(bucket: TokenBucket, clock: FakeClock, seconds: float) -> int:
    """How many tokens the bucket hands out before the fake clock passes ``seconds`` from now."""
    end, count = clock.now + seconds, 0
    while True:
        bucket.acquire()
        if clock.now > end:
            return count
        count += 1


def test_the_bucket_hands_out_the_rate_per_second():
    clock = FakeClock()
    bucket = TokenBucket(250, clock=clock, sleep=clock.sleep)
    count = acquired_within(bucket, clock, 20.0)
    assert 250 * 20 <= count <= 250 * 20 + bucket.capacity + 1


def test_oversleeping_does_not_make_the_rate_drift():
    # Each sleep lasts 3 ms longer than asked, three times the 1 ms between flows at 1000/s: pacing by
    # "sleep one interval per flow" would reach 250 flows/s. The bucket banks the lost time and catches up.
    clock = FakeClock(overshoot=0.003)
    bucket = TokenBucket(1000, clock=clock, sleep=clock.sleep)
    count = acquired_within(bucket, clock, 60.0)
    assert count == pytest.approx(60_000, rel=0.01)


def test_a_stall_is_made_up_only_up_to_the_burst():
    clock = FakeClock()
    bucket = TokenBucket(100, burst=10, clock=clock, sleep=clock.sleep)
    bucket.acquire()
    clock.now += 60.0  # the producer stalled for a minute
    sleeps_before = len(clock.sleeps)
    for _ in range(10):
        bucket.acquire()
    assert len(clock.sleeps) == sleeps_before, "the banked burst is handed out at once"
    bucket.acquire()
    assert len(clock.sleeps) == sleeps_before + 1, "beyond the burst, the rate applies again"


def test_a_bucket_needs_a_positive_rate():
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_the_timeline_releases_flows_at_their_recorded_offsets_divided_by_the_speedup():
    clock = FakeClock()
    pacer = TimelinePacer(10, clock=clock, sleep=clock.sleep)
    start = clock.now
    released = []
    for flow_time in (1_000.0, 1_010.0, 1_010.0, 1_050.0):
        pacer.wait_for(flow_time)
        released.append(round(clock.now - start, 9))
    assert released == [0.0, 1.0, 1.0, 5.0]


def test_the_timeline_restarts_when_time_goes_back_as_on_the_next_loop_pass():
    clock = FakeClock()
    pacer = TimelinePacer(2, clock=clock, sleep=clock.sleep)
    start = clock.now
    released = []
    for flow_time in (0.0, 4.0, 0.0, 2.0):
        pacer.wait_for(flow_time)
        released.append(round(clock.now - start, 9))
    assert released == [0.0, 2.0, 2.0, 3.0]


def test_the_timeline_catches_up_after_a_slow_send():
    clock = FakeClock()
    pacer = TimelinePacer(1, clock=clock, sleep=clock.sleep)
    pacer.wait_for(0.0)
    clock.now += 5.0  # sending took five seconds
    pacer.wait_for(3.0)
    assert clock.sleeps == [], "a flow that is already due goes out at once"
