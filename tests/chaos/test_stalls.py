"""How the chaos run attributes verdict gaps to faults (tests/chaos/verify.py), on made-up timestamps."""

from __future__ import annotations

from tests.chaos.faults import Fault
from tests.chaos.verify import Outcome, stall_summary, stalls

T0 = 1_000_000  # ms


def outcome(silences: dict[int, tuple[int, int]], partitions: int = 3, until_ms: int = 60_000) -> Outcome:
    """A verdict every 100 ms on each partition, but none inside ``silences[p] = (from_ms, to_ms)``."""
    result = Outcome()
    for p in range(partitions):
        quiet = silences.get(p, (-1, -1))
        result.output_ms[p] = [T0 + t for t in range(0, until_ms, 100) if not quiet[0] < t < quiet[1]]
    return result


def fault(kind: str, start_s: float, end_s: float, affected: set[int] = frozenset()) -> Fault:
    return Fault(at=0, kind=kind, started=T0 / 1000 + start_s, ended=T0 / 1000 + end_s, affected=set(affected))


def test_a_stall_outlasting_its_fault_is_that_faults_not_the_next_ones():
    # A removed worker's partition 0 waits (10..25 s) past the hot swap that comes at 20 s.
    faults = [fault("worker_added", 9.9, 12, {0}), fault("hot_swap", 20, 20), fault("worker_kill9", 40, 41, {1})]
    per_fault = stalls(outcome({0: (10_000, 25_000), 1: (40_000, 43_000)}), faults, 3)
    assert per_fault[0].all == 15.0 and per_fault[0].survivors == 0.1
    assert per_fault[1].all == 0.1 and per_fault[1].survivors is None, "a hot swap hits no single worker"
    assert per_fault[2].all == 3.0 and per_fault[2].survivors == 0.1


def test_a_partition_that_recovered_before_the_next_fault_is_measured_from_that_fault():
    # Partition 0 is back at 15 s (before the kill at 20 s) and stalls again with it: that gap is the kill's.
    faults = [fault("broker_kill9", 9.9, 12), fault("worker_kill9", 20, 21, {0})]
    per_fault = stalls(outcome({0: (10_000, 15_000)}, until_ms=30_000), faults, 3)
    assert per_fault[0].all == 5.0
    per_fault = stalls(outcome({0: (19_950, 26_000)}, until_ms=30_000), faults, 3)
    assert per_fault[0].all == 0.1 and per_fault[1].all == 6.0 and per_fault[1].survivors == 0.1


def test_the_summary_keeps_restarts_in_place_apart_and_reports_the_lost_worker():
    faults = [
        fault("worker_sigterm", 5, 8, {0}),
        fault("network_cut", 20, 25, {1}),
        fault("hot_swap", 30, 30),
        fault("worker_lost", 40, 62, {2}),
    ]
    faults[2].error = "RuntimeError: could not publish"  # a fault that failed is left out
    silences = {0: (5_000, 9_000), 1: (20_000, 27_000), 2: (40_000, 63_000)}
    per_fault = stalls(outcome(silences, until_ms=80_000), faults, 3)
    summary = stall_summary(faults, per_fault, 20.0)
    assert summary["max_stall_s"] == {
        "restarts_in_place": {"survivors": 0.1, "all": 4.0},
        "other_faults": {"survivors": 0.1, "all": 7.0},
    }
    assert set(summary["stall_by_fault"]) == {"worker_sigterm", "network_cut", "worker_lost"}
    assert summary["stall_by_fault"]["worker_sigterm"] == {"count": 1, "survivors": 0.1, "all": 4.0}
    assert summary["lost_for_good"] == {"all": 23.0, "survivors": 0.1, "moved_after_s": 22.0, "session_timeout_s": 20.0}


def test_the_quiet_after_a_partitions_last_verdict_is_no_stall():
    # The replay ends at 30 s; partition 2's worker is lost at 25 s and its backlog is answered at 45-50 s.
    answered = outcome({2: (25_000, 45_000)}, until_ms=30_000)
    answered.output_ms[2] += [T0 + t for t in range(45_000, 50_000, 100)]
    [lost] = stalls(answered, [fault("worker_lost", 25, 44, {2})], 3)
    assert lost.all == 20.0
    assert lost.survivors == 0.1, "partitions 0 and 1 had nothing more to answer after 30 s"
