"""The faults of a chaos run: a seeded plan, and what each kind does to the system under test.

Kinds (each fault returns once the system is back in shape, so faults never overlap):

* ``worker_kill9``: ``kill -9`` one worker; its supervisor restarts it in the same slot at once.
* ``worker_sigterm``: SIGTERM one worker (it finishes its batch, commits, exits 0); restarted in place.
* ``worker_added``: a third worker slot joins the group (a rebalance), serves a while, then is stopped for
  good (a second rebalance; its partitions go back after the session timeout: a static member sends no
  LeaveGroup). The fault returns once the two permanent slots own every partition again.
* ``worker_lost`` (never drawn: :func:`plan` appends one as the last fault): ``kill -9`` a permanent worker and
  do not restart it, a node lost for good; its partitions wait for the session timeout, then move to the
  other worker. The fault returns once they have moved.
* ``network_cut``: every connection between the proxied worker and the brokers is reset and refused for
  ``cut_seconds``, then restored (the worker reconnects on its own).
* ``broker_kill9``: ``kill -9`` the leader of input partition 0, restart it ``down_seconds`` later.
* ``hot_swap``: a new bundle version is published to the registry every worker follows.
* ``slow_output``: the proxied worker's next produce request, and everything after it on that connection,
  is held in the proxy for ``slow_seconds`` (a slow or saturated output path: back-pressure), then released.

Broker faults and the two proxy faults need the cluster this run started; with ``--bootstrap`` they are
left out of the plan and reported as skipped.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka.admin import AdminClient

from tests.chaos.rig import Brokers, Slot
from tests.support.tcpproxy import PRODUCE_API_KEY, TcpProxy

KINDS = (
    "worker_kill9",
    "worker_sigterm",
    "worker_added",
    "network_cut",
    "broker_kill9",
    "hot_swap",
    "slow_output",
)
NEED_OWN_CLUSTER = ("network_cut", "broker_kill9", "slow_output")
LOST = "worker_lost"
LOST_SLOT = "w0"  # the worker lost for good: the one that does not go through the proxies


@dataclass
class Fault:
    """One planned fault: when (seconds after the replay starts), what, and what happened."""

    at: float
    kind: str
    started: float = 0.0  # wall-clock seconds
    ended: float = 0.0
    target: str = ""
    affected: set[int] = field(default_factory=set)  # input partitions of the worker hit (empty: none)
    error: str | None = None


def plan(count: int, duration: float, seed: int, kinds: tuple[str, ...], lose_at: float | None = None) -> list[Fault]:
    """``count`` faults spread evenly over ``duration`` s (seeded jitter), every kind at least once when
    ``count`` allows, the rest drawn at random; then, when ``lose_at`` is given, a ``worker_lost`` fault at
    ``lose_at`` s (after ``duration``: the last fault, as nothing can follow the loss of a worker)."""
    rng = random.Random(seed)
    chosen = list(kinds) * (count // len(kinds)) + rng.sample(kinds, count % len(kinds))
    rng.shuffle(chosen)
    spacing = duration / (count + 1)
    faults = [Fault(at=spacing * (i + 1) + rng.uniform(-0.2, 0.2) * spacing, kind=k) for i, k in enumerate(chosen)]
    if lose_at is not None:
        faults.append(Fault(at=max(lose_at, duration), kind=LOST))
    return faults


@dataclass
class Target:
    """What the faults act on (built by run.py)."""

    slots: dict[str, Slot]  # the permanent ones, by name
    proxied: str  # the slot whose traffic goes through the proxies
    add_slot: Callable[[str], Slot]  # starts a temporary slot, returns it
    publish_next: Callable[[], str]  # publishes the next bundle version, returns its name
    brokers: Brokers
    input_topic: str
    rng: random.Random
    partitions: int  # of the input topic
    cut_seconds: float = 5.0
    down_seconds: float = 5.0
    slow_seconds: float = 5.0
    added_seconds: float = 10.0
    moved_timeout: float = 180.0  # for a lost worker's partitions to move (its session timeout and more)


def inject(fault: Fault, target: Target) -> None:
    """Carry out ``fault`` (blocking until the system is back in shape); errors are recorded, not raised."""
    fault.started = time.time()
    try:
        ACTIONS[fault.kind](fault, target)
    except Exception as exc:  # a fault that could not be injected is reported, the run goes on
        fault.error = f"{type(exc).__name__}: {exc}"
    fault.ended = time.time()


def _crash(how: str) -> Callable[[Fault, Target], None]:
    def act(fault: Fault, target: Target) -> None:
        name = target.rng.choice(sorted(target.slots))
        slot = target.slots[name]
        fault.target, fault.affected = name, slot.assignment()
        slot.crash(how)
        slot.wait_assigned()

    return act


def _worker_added(fault: Fault, target: Target) -> None:
    slot = target.add_slot("extra")
    fault.target = "extra"
    try:
        slot.wait_assigned()
        time.sleep(target.added_seconds)
        fault.affected = slot.assignment()
    finally:
        slot.stop()
        slot.close()
    _wait_owned(target, target.slots.values())


def _worker_lost(fault: Fault, target: Target) -> None:
    slot = target.slots[LOST_SLOT]
    fault.target, fault.affected = LOST_SLOT, slot.assignment()
    slot.lose()
    _wait_owned(target, [s for name, s in target.slots.items() if name != LOST_SLOT])


def _wait_owned(target: Target, slots: Iterable[Slot]) -> None:
    """Until ``slots`` own every input partition between them (read from their logs every 0.5 s)."""
    slots = list(slots)
    deadline = time.monotonic() + target.moved_timeout
    while set().union(*(slot.assignment() for slot in slots)) != set(range(target.partitions)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the partitions did not move to {[s.name for s in slots]} in {target.moved_timeout} s")
        time.sleep(0.5)


def _proxies(target: Target) -> list[TcpProxy]:
    proxies = target.brokers.proxies
    if not proxies:
        raise RuntimeError("no proxies: an external cluster")
    return proxies


def _network_cut(fault: Fault, target: Target) -> None:
    proxies = _proxies(target)
    slot = target.slots[target.proxied]
    fault.target, fault.affected = target.proxied, slot.assignment()
    for proxy in proxies:
        proxy.cut()
    time.sleep(target.cut_seconds)
    for proxy in proxies:
        proxy.restore()


def _slow_output(fault: Fault, target: Target) -> None:
    proxies = _proxies(target)
    slot = target.slots[target.proxied]
    fault.target, fault.affected = target.proxied, slot.assignment()
    for proxy in proxies:
        proxy.hold_next(PRODUCE_API_KEY)
    time.sleep(target.slow_seconds)
    for proxy in proxies:
        proxy.release()


def _broker_kill9(fault: Fault, target: Target) -> None:
    cluster = target.brokers.cluster
    if cluster is None:
        raise RuntimeError("an external cluster: brokers are not ours to kill")
    metadata = AdminClient({"bootstrap.servers": cluster.bootstrap_servers}).list_topics(target.input_topic, timeout=10)
    leader = metadata.topics[target.input_topic].partitions[0].leader
    node = leader if leader in {n.node_id for n in cluster.nodes} else target.rng.choice(cluster.nodes).node_id
    fault.target = f"broker {node}"
    cluster.kill(node)
    time.sleep(target.down_seconds)
    cluster.restart(node)


def _hot_swap(fault: Fault, target: Target) -> None:
    fault.target = target.publish_next()


ACTIONS: dict[str, Callable[[Fault, Target], None]] = {
    "worker_kill9": _crash("kill"),
    "worker_sigterm": _crash("term"),
    "worker_added": _worker_added,
    "network_cut": _network_cut,
    "broker_kill9": _broker_kill9,
    "hot_swap": _hot_swap,
    "slow_output": _slow_output,
    LOST: _worker_lost,
}
