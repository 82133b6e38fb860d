"""``make chaos`` shortened: a few thousand flows through two exactly-once workers on a 3-node Apache Kafka
cluster while a worker is killed with -9, a new bundle version is hot-swapped in and the proxied worker is
cut off from the brokers, then one worker is lost for good; nothing lost, nothing duplicated, every hostile
record dead-lettered, every verdict the label ``detector score`` gives with the version it names, and the
stalls reported. Apache Kafka only (it starts its own cluster)."""

from __future__ import annotations

import pytest

from tests.chaos.run import parse_args, run_once
from tests.support import apache_kafka

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(900)]


def test_a_short_chaos_run_loses_duplicates_and_mislabels_nothing():
    reason = apache_kafka.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    args = parse_args(
        ["--records", "2000", "--faults", "3", "--rate", "25", "--kinds", "worker_kill9,hot_swap,network_cut"]
    )
    result = run_once(args, "exactly-once")
    assert result["checks_failed"] == [], result
    assert result["faults"] == {"worker_kill9": 1, "hot_swap": 1, "network_cut": 1, "worker_lost": 1}, result
    assert result["records"] == 2000 and result["lost"] == 0 and result["duplicated"] == 0
    assert result["dead_lettered"] == result["hostile"] > 0
    assert result["bundle_versions"] == ["v1", "v2"] and result["mismatched_verdicts"] == 0
    assert result["verdicts_by_version"].get("v2", 0) > 0, "verdicts after the swap come from v2"

    # The stalls are reported (their sizes depend on the machine: make chaos shows them, no test judges them).
    for group in ("restarts_in_place", "other_faults"):
        assert set(result["max_stall_s"][group]) == {"survivors", "all"}
        assert result["max_stall_s"][group]["all"] >= result["max_stall_s"][group]["survivors"] >= 0
    by_kind = result["stall_by_fault"]
    assert set(by_kind) == {"worker_kill9", "hot_swap", "network_cut", "worker_lost"}
    assert all(stall["count"] == 1 and stall["all"] >= 0 for stall in by_kind.values())
    assert by_kind["hot_swap"]["survivors"] is None and by_kind["network_cut"]["survivors"] >= 0
    lost = result["lost_for_good"]
    assert lost["session_timeout_s"] == 20.0 and lost["all"] >= lost["survivors"] >= 0 and lost["moved_after_s"] > 0
