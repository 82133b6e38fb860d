"""One micro-batch of consumed records → the messages to produce, the offsets to commit, the counts to export.

Decoding is per record (each record is its own JSON object), but scoring is one model call for the whole
batch (on a GPU, one call per :data:`PIPELINE_ROWS` decoded flows, so that decoding the next rows overlaps the
model on the previous ones: the GPU backend's calls return before it has finished). Records that cannot be
decoded become dead letters with their original bytes. A :class:`BatchProcessor` serves one bundle at a time;
:meth:`BatchProcessor.serve` swaps it between batches (:meth:`BatchProcessor.prepare` builds the new one
where it cannot hold up scoring, :meth:`BatchProcessor.install` swaps it in).

What becomes an alert is decided in stages, on arrays of the whole batch, before any message is built:

1. **flagged** (``--emit``): attack verdicts; with ``flagged`` (and ``all``) also novel flows whatever their label;
   with ``novel`` only novel flows (the classifier's labels raise nothing: flows from another meter);
2. **thresholds** (:mod:`detector.stream.thresholds`): an attack verdict below its class's least confidence is
   not an alert (unless it is flagged as novel);
3. **allowlist** (:mod:`detector.stream.allowlist`): a flagged flow an entry matches is not an alert;
4. **explain** (``--explain K``): the published flows only get their K most pushing features
   (:mod:`detector.core.explain`);
5. **encode** (:mod:`detector.core.alertformats`): one message per alert in ``--alert-format``, or with
   ``--emit all`` one per verdict, alerts or not (ECS ``event.kind``/OCSF ``is_alert`` tell them apart);
6. **aggregate** (``--aggregate-window-s``, :mod:`detector.stream.aggregate`): the per-flow messages of 5 go to
   ``--verdicts-topic`` (none when it is not set), the alerts are folded into their window, and the windows
   the batch closed are published, one aggregated alert each, with the changelog records of every window the
   batch changed (:mod:`detector.stream.aggregate_state`). :meth:`BatchProcessor.flush` closes windows on a
   timer when no record comes to close them.

Verdicts stopped by 2 or 3 are counted by class and reason in :attr:`ScoredBatch.suppressed`, never dropped
silently; verdict objects are built only for the records that become messages.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from detector.core.alertformats import AlertEncoder
from detector.core.alerts import alert_key, build_alert, flow_identity, utc_now
from detector.core.bundle import Bundle
from detector.core.decode import DecodedFlow, FlowDecoder, Rejected
from detector.core.scorer import PendingScores, Scorer, Scores
from detector.stream.aggregate_state import Aggregator
from detector.stream.allowlist import Allowlist
from detector.stream.deadletter import dead_letter_headers, dead_letter_value
from detector.stream.drift import DriftMonitor
from detector.stream.logs import get_logger
from detector.stream.thresholds import Thresholds

TopicPartitionKey = tuple[str, int]
PIPELINE_ROWS = 256  # an asynchronous (GPU) scorer gets the batch in parts of this many decoded flows


@dataclass(frozen=True, slots=True)
class Output:
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    partition: int | None = None  # None: the producer's partitioner chooses


@dataclass(slots=True)
class ScoredBatch:
    """What one batch produces, and what committing it means.

    ``next_offsets`` is, per input partition, the last offset of the batch + 1 (what to commit);
    ``first_offsets`` the first offset (where to seek back to when the batch must be redone).
    ``alert_timestamps`` are the input records' Kafka timestamps (epoch seconds) of the alerts, for the
    end-to-end latency once they are acknowledged.
    """

    outputs: list[Output]
    next_offsets: dict[TopicPartitionKey, int]
    first_offsets: dict[TopicPartitionKey, int]
    records: int
    alert_timestamps: np.ndarray
    verdicts: Counter[tuple[str, bool]] = field(default_factory=Counter)
    alerts: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    novel: Counter[str] = field(default_factory=Counter)  # novel flows by predicted class
    suppressed: Counter[tuple[str, str]] = field(default_factory=Counter)  # (class, reason): not alerts
    aggregates: Counter[str] = field(default_factory=Counter)  # aggregated alerts published, by label
    model_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Selection:
    """Which scored flows of a batch become messages: ``alert`` (one flag per scored flow) and ``published``
    (positions of the flows to publish, in order: the alerts, or with ``--emit all`` every flow);
    ``by_classifier`` and ``by_novelty`` say which signal raised each alert (both may)."""

    alert: np.ndarray
    published: np.ndarray
    by_classifier: np.ndarray
    by_novelty: np.ndarray

    def raised_by(self, index: int) -> list[str]:
        """The alert's ``raised_by``: the signals that made flow ``index`` an alert."""
        return [name for name, hit in (("classifier", self.by_classifier), ("novelty", self.by_novelty)) if hit[index]]


#: Called with a batch's suppressed counts as soon as the batch is scored (the worker's metrics).
SuppressedSink = Callable[[Counter[tuple[str, str]]], None]


@dataclass(frozen=True, slots=True)
class PreparedModel:
    """A bundle made ready to serve (:meth:`BatchProcessor.prepare`), not yet served."""

    bundle: Bundle
    scorer: Scorer
    decoder: FlowDecoder


class BatchProcessor:
    """Turns batches of Kafka messages into alerts and dead letters with one bundle's model."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        output_topic: str,
        dlq_topic: str,
        emit: Literal["attacks", "flagged", "novel", "all"] = "attacks",
        device: str = "auto",
        max_record_bytes: int | None = None,
        backend: str = "auto",
        encoder: AlertEncoder | None = None,
        thresholds: Thresholds | None = None,
        allowlist: Allowlist | None = None,
        on_suppressed: SuppressedSink | None = None,
        aggregator: Aggregator | None = None,
        verdicts_topic: str | None = None,
        state_topic: str | None = None,
        drift: DriftMonitor | None = None,
        explain: int = 0,
    ) -> None:
        """``encoder`` writes the alerts (native by default); ``thresholds`` and ``allowlist`` decide which
        verdicts are alerts (none stopped by default); ``on_suppressed`` receives each batch's suppressed counts
        when it is scored (so a batch redone after a failed delivery counts again, as records read do).
        ``aggregator`` turns alerts into one aggregated alert per window (``state_topic`` its changelog; per-flow
        messages then go to ``verdicts_topic``, or nowhere when it is None). ``drift`` counts each batch's
        decoded flows into the served bundle's training histograms. ``explain`` > 0 adds to each published
        message the features that pushed its label most (:meth:`Scorer.explain`: one backward pass for the
        batch's published flows only)."""
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.emit = emit
        self.device = device
        self.backend = backend
        self.max_record_bytes = max_record_bytes
        self.encoder = encoder or AlertEncoder()
        self.thresholds = thresholds or Thresholds()
        self.allowlist = allowlist or Allowlist()
        self.on_suppressed = on_suppressed
        self.aggregator = aggregator
        self.verdicts_topic = verdicts_topic
        self.state_topic = state_topic
        if aggregator is not None and state_topic is None:
            raise ValueError("aggregation needs a state topic")
        self._flush_every = 0.0 if aggregator is None else min(1.0, aggregator.length / 4)
        self._next_flush = time.monotonic() + self._flush_every
        self.drift = drift
        self.explain = explain
        self.serve(bundle)

    def serve(self, bundle: Bundle) -> None:
        """Score every later batch with ``bundle`` (raises :class:`~detector.core.scorer.DeviceError`)."""
        self.install(self.prepare(bundle))

    def prepare(self, bundle: Bundle) -> PreparedModel:
        """Build what serving ``bundle`` needs: its scorer (the backend's build or compile, the slow part) and
        decoder. It reads only the processor's fixed settings, so a hot swap runs it on a thread of its own
        while batches are scored (raises :class:`~detector.core.scorer.DeviceError`)."""
        scorer = Scorer(bundle, self.device, backend=self.backend)
        pre = bundle.preprocessor
        limit = {} if self.max_record_bytes is None else {"max_record_bytes": self.max_record_bytes}
        return PreparedModel(bundle, scorer, FlowDecoder(pre.numeric, tuple(pre.categories), **limit))

    def install(self, prepared: PreparedModel) -> None:
        """Serve ``prepared`` from the next batch on (quick: call it between batches, on the loop's thread)."""
        bundle = prepared.bundle
        self.decoder = prepared.decoder
        self.scorer = prepared.scorer
        self.bundle = bundle
        self.model = {"name": bundle.name, "version": bundle.version, "bundle_sha256": bundle.sha256}
        self._classes = bundle.classes
        self._benign = bundle.classes.index(bundle.benign_class)
        self._least_confidence = self.thresholds.for_classes(bundle.classes)
        if self.drift is not None:
            self.drift.serve(bundle)
        unknown = self.thresholds.unknown(bundle.classes)
        if unknown:
            get_logger("processor").warning(
                "class thresholds name classes the bundle does not have", classes=unknown, version=bundle.version
            )

    def process(self, messages: Sequence[Message]) -> ScoredBatch:
        """Decode, score and build the outputs of ``messages`` (in offset order within each partition)."""
        decoded = self.decoder.decode_many([message.value() for message in messages])
        flows: list[DecodedFlow] = []
        scoring = _Scoring(self.scorer, flows)
        sources: list[tuple[str, int, int]] = []
        timestamps: list[float] = []
        rejected: list[tuple[Message, Rejected, tuple[str, int, int]]] = []
        next_offsets: dict[TopicPartitionKey, int] = {}
        first_offsets: dict[TopicPartitionKey, int] = {}
        for message, result in zip(messages, decoded, strict=True):
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            tp = (topic, partition)
            if tp not in first_offsets:
                first_offsets[tp] = offset
            next_offsets[tp] = offset + 1
            if type(result) is DecodedFlow:
                flows.append(result)
                sources.append((topic, partition, offset))
                kind, stamp = message.timestamp()
                timestamps.append(stamp / 1000.0 if kind != TIMESTAMP_NOT_AVAILABLE else np.nan)
                scoring.added()
            else:
                rejected.append((message, result, (topic, partition, offset)))  # type: ignore[arg-type]

        batch = ScoredBatch([], next_offsets, first_offsets, len(messages), np.empty(0))
        if self.drift is not None and flows:
            self.drift.observe(np.stack([flow.numeric for flow in flows]))
        scores = scoring.finish()
        batch.model_seconds = scoring.seconds
        detected_at = utc_now()
        stamps = np.asarray(timestamps, dtype=float)
        if scores is not None:
            self._score(scores, flows, sources, stamps, detected_at, batch)
        if self.aggregator is not None:
            self._fold_batch(sources, stamps, batch)
        for message, reason, source in rejected:
            value, extra = dead_letter_value(message.value())
            headers = dead_letter_headers(reason, source, detected_at) + extra
            batch.outputs.append(Output(self.dlq_topic, message.key(), value, headers))
            batch.dead_letters[reason.code] += 1
        if batch.suppressed and self.on_suppressed is not None:
            self.on_suppressed(batch.suppressed)
        return batch

    def _score(
        self,
        scores: Scores,
        flows: list[DecodedFlow],
        sources: list[tuple[str, int, int]],
        timestamps: np.ndarray,
        detected_at: str,
        batch: ScoredBatch,
    ) -> None:
        best = scores.ranked(1)[:, 0]  # Scorer.verdicts ranks the same way: the counted label is the alert's
        for index, count in self._per_class(best):
            batch.verdicts[(self._classes[index], index != self._benign)] += count
        novel = scores.novel()
        for index, count in self._per_class(best[novel]):
            batch.novel[self._classes[index]] += count
        confidence = scores.probabilities[np.arange(len(best)), best]
        selection = self._select(best, confidence, novel, flows, batch)
        verdicts = self.scorer.verdicts(scores.take(selection.published))
        if self.explain:
            published = [flows[index] for index in selection.published.tolist()]
            verdicts = self.scorer.explained(verdicts, published, self.explain)
        model, encode, aggregator = self.model, self.encoder.encode, self.aggregator
        topic = self.output_topic if aggregator is None else self.verdicts_topic
        for index, verdict in zip(selection.published.tolist(), verdicts, strict=True):
            flow, source = flows[index], sources[index]
            alert = build_alert(verdict, flow.flow, flow.label, model, source, detected_at)
            is_alert = bool(selection.alert[index])
            if is_alert:
                alert["raised_by"] = selection.raised_by(index)
            if topic is not None:
                batch.outputs.append(Output(topic, alert_key(alert["flow"], source), encode(alert, is_alert=is_alert)))
            if aggregator is not None and is_alert:
                stamp = float(timestamps[index])
                identity = alert["flow"]
                key = (str(identity.get("src_ip") or ""), str(identity.get("dst_ip") or ""), verdict.label)
                aggregator.add(source[:2], key, time.time() if np.isnan(stamp) else stamp, source[2], alert)
            batch.alerts[verdict.label] += 1
        batch.alert_timestamps = timestamps[selection.published]

    def _fold_batch(self, sources: list[tuple[str, int, int]], stamps: np.ndarray, batch: ScoredBatch) -> None:
        """Move each partition's watermark to its latest record, then publish the windows that closed."""
        assert self.aggregator is not None
        latest: dict[TopicPartitionKey, float] = {}
        for (topic, partition, _offset), stamp in zip(sources, stamps.tolist(), strict=True):
            if not np.isnan(stamp):
                latest[(topic, partition)] = max(stamp, latest.get((topic, partition), stamp))
        for tp, next_offset in batch.next_offsets.items():
            self.aggregator.seen(tp, latest.get(tp, np.nan), next_offset)
        self._publish_closed(batch)

    def _publish_closed(self, batch: ScoredBatch) -> None:
        assert self.aggregator is not None and self.state_topic is not None
        folded = self.aggregator.take()
        for (topic, partition), window in folded.closed:
            alert = window.aggregated_alert(topic, partition)
            value = self.encoder.encode(alert, is_alert=True)
            batch.outputs.append(Output(self.output_topic, alert["alert_id"].encode(), value))
            batch.aggregates[window.key[2]] += 1
        for record in folded.changelog:
            batch.outputs.append(Output(self.state_topic, record.key, record.value, partition=record.partition))

    def flush_due(self) -> ScoredBatch | None:
        """On a timer: a batch of the windows that wall-clock time closed (an idle partition's), or None.

        A window closes here once wall-clock time is one window length past its end. The batch reads no
        record: it commits each partition it touches at the offset already reached (and is rewound there if
        its transaction is aborted)."""
        if self.aggregator is None or time.monotonic() < self._next_flush:
            return None
        self._next_flush = time.monotonic() + self._flush_every
        self.aggregator.advance(time.time() - self.aggregator.length)
        batch = ScoredBatch([], {}, {}, 0, np.empty(0))
        touched = [tp for tp in self.aggregator.positions if tp in self.aggregator.pending()]
        self._publish_closed(batch)
        if not batch.outputs:
            return None
        for tp in touched:
            batch.next_offsets[tp] = batch.first_offsets[tp] = self.aggregator.positions[tp]
        return batch

    def forget_state(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Partitions assigned, released or rewound: their windows are read back from the changelog when needed."""
        if self.aggregator is not None:
            self.aggregator.forget(partitions)

    def _select(
        self,
        best: np.ndarray,
        confidence: np.ndarray,
        novel: np.ndarray,
        flows: list[DecodedFlow],
        batch: ScoredBatch,
    ) -> Selection:
        """Stages 1-3 of the module docstring: flagged, thresholds, allowlist (suppressed counts into ``batch``)."""
        attack = best != self._benign
        flagged_novel = novel if self.emit != "attacks" else np.zeros_like(novel)
        confident = confidence >= self._least_confidence[best]
        by_classifier = attack & confident if self.emit != "novel" else np.zeros_like(attack)
        alert = by_classifier | flagged_novel
        if self.emit != "novel":  # there the classifier raises nothing: its labels are not alerts to suppress
            for index, count in self._per_class(best[attack & ~alert]):
                batch.suppressed[(self._classes[index], "below_threshold")] += count
        if len(self.allowlist):
            for index in np.flatnonzero(alert).tolist():
                label = self._classes[best[index]]
                if self.allowlist.allows(flow_identity(flows[index].flow), label):
                    alert[index] = False
                    batch.suppressed[(label, "allowlist")] += 1
        published = np.arange(len(best)) if self.emit == "all" else np.flatnonzero(alert)
        return Selection(alert, published, alert & by_classifier, alert & flagged_novel)

    def _per_class(self, classes: np.ndarray) -> list[tuple[int, int]]:
        """(class index, count) for each class that occurs in ``classes``."""
        counts = np.bincount(classes, minlength=len(self._classes))
        return [(int(index), int(counts[index])) for index in np.flatnonzero(counts)]


class _Scoring:
    """Hands a batch's decoded flows to the scorer: all at once at the end, or, when the scorer is asynchronous
    (a GPU), every :data:`PIPELINE_ROWS` flows as they are decoded, so the device scores while the CPU decodes.
    ``seconds`` is the time spent in the scorer's calls (preprocessing, and waiting for the device)."""

    def __init__(self, scorer: Scorer, flows: list[DecodedFlow]) -> None:
        self.scorer = scorer
        self.flows = flows
        self.part = PIPELINE_ROWS if scorer.asynchronous else 0
        self.sent = 0
        self.pending: list[PendingScores] = []
        self.seconds = 0.0

    def added(self) -> None:
        """Call after each flow appended to ``flows``."""
        if self.part and len(self.flows) - self.sent >= self.part:
            self._send()

    def finish(self) -> Scores | None:
        """The scores of every flow, in order (None when there are none)."""
        if not self.flows:
            return None
        if self.sent < len(self.flows):
            self._send()
        started = time.perf_counter()
        scores = Scores.joined([pending.wait() for pending in self.pending])
        self.seconds += time.perf_counter() - started
        return scores

    def _send(self) -> None:
        started = time.perf_counter()
        self.pending.append(self.scorer.start(self.flows[self.sent :]))
        self.sent = len(self.flows)
        self.seconds += time.perf_counter() - started
