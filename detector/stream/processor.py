"""One micro-batch of consumed records → the messages to produce, the offsets to commit, the counts to export.

Decoding is per record (each record is its own JSON object), but scoring is one model call for the whole
batch (on a GPU, one call per :data:`PIPELINE_ROWS` decoded flows, so that decoding the next rows overlaps the
model on the previous ones: the GPU backend's calls return before it has finished), and verdict objects are
built only for the records that become alerts (``--emit attacks`` skips the benign majority; ``--emit flagged``
keeps the flows classified as attacks *or* novel). Records that cannot be decoded become dead letters with
their original bytes. A :class:`BatchProcessor` serves one bundle at a time; :meth:`BatchProcessor.serve`
swaps it between batches.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import orjson
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from detector.core.alerts import alert_key, build_alert, utc_now
from detector.core.bundle import Bundle
from detector.core.decode import DecodedFlow, FlowDecoder, Rejected
from detector.core.scorer import PendingScores, Scorer, Scores
from detector.stream.deadletter import dead_letter_headers, dead_letter_value

TopicPartitionKey = tuple[str, int]
PIPELINE_ROWS = 256  # an asynchronous (GPU) scorer gets the batch in parts of this many decoded flows


@dataclass(frozen=True, slots=True)
class Output:
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


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
    model_seconds: float = 0.0


class BatchProcessor:
    """Turns batches of Kafka messages into alerts and dead letters with one bundle's model."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        output_topic: str,
        dlq_topic: str,
        emit: Literal["attacks", "flagged", "all"] = "attacks",
        device: str = "auto",
        max_record_bytes: int | None = None,
        backend: str = "auto",
    ) -> None:
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.emit = emit
        self.device = device
        self.backend = backend
        self.max_record_bytes = max_record_bytes
        self.serve(bundle)

    def serve(self, bundle: Bundle) -> None:
        """Score every later batch with ``bundle`` (raises :class:`~detector.core.scorer.DeviceError`)."""
        scorer = Scorer(bundle, self.device, backend=self.backend)
        pre = bundle.preprocessor
        limit = {} if self.max_record_bytes is None else {"max_record_bytes": self.max_record_bytes}
        self.decoder = FlowDecoder(pre.numeric, tuple(pre.categories), **limit)
        self.scorer = scorer
        self.bundle = bundle
        self.model = {"name": bundle.name, "version": bundle.version, "bundle_sha256": bundle.sha256}
        self._classes = bundle.classes
        self._benign = bundle.classes.index(bundle.benign_class)

    def process(self, messages: Sequence[Message]) -> ScoredBatch:
        """Decode, score and build the outputs of ``messages`` (in offset order within each partition)."""
        decode = self.decoder.decode_bytes
        flows: list[DecodedFlow] = []
        scoring = _Scoring(self.scorer, flows)
        sources: list[tuple[str, int, int]] = []
        timestamps: list[float] = []
        rejected: list[tuple[Message, Rejected, tuple[str, int, int]]] = []
        next_offsets: dict[TopicPartitionKey, int] = {}
        first_offsets: dict[TopicPartitionKey, int] = {}
        for message in messages:
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            tp = (topic, partition)
            if tp not in first_offsets:
                first_offsets[tp] = offset
            next_offsets[tp] = offset + 1
            result = decode(message.value())
            if type(result) is DecodedFlow:
                flows.append(result)
                sources.append((topic, partition, offset))
                kind, stamp = message.timestamp()
                timestamps.append(stamp / 1000.0 if kind != TIMESTAMP_NOT_AVAILABLE else np.nan)
                scoring.added()
            else:
                rejected.append((message, result, (topic, partition, offset)))  # type: ignore[arg-type]

        batch = ScoredBatch([], next_offsets, first_offsets, len(messages), np.empty(0))
        scores = scoring.finish()
        batch.model_seconds = scoring.seconds
        detected_at = utc_now()
        if scores is not None:
            self._score(scores, flows, sources, np.asarray(timestamps), detected_at, batch)
        for message, reason, source in rejected:
            value, extra = dead_letter_value(message.value())
            headers = dead_letter_headers(reason, source, detected_at) + extra
            batch.outputs.append(Output(self.dlq_topic, message.key(), value, headers))
            batch.dead_letters[reason.code] += 1
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
        chosen = self._chosen(best, novel)
        verdicts = self.scorer.verdicts(scores.take(chosen))
        model, topic = self.model, self.output_topic
        for index, verdict in zip(chosen.tolist(), verdicts, strict=True):
            flow, source = flows[index], sources[index]
            alert = build_alert(verdict, flow.flow, flow.label, model, source, detected_at)
            batch.outputs.append(Output(topic, alert_key(alert["flow"], source), orjson.dumps(alert)))
            batch.alerts[verdict.label] += 1
        batch.alert_timestamps = timestamps[chosen]

    def _per_class(self, classes: np.ndarray) -> list[tuple[int, int]]:
        """(class index, count) for each class that occurs in ``classes``."""
        counts = np.bincount(classes, minlength=len(self._classes))
        return [(int(index), int(counts[index])) for index in np.flatnonzero(counts)]

    def _chosen(self, best: np.ndarray, novel: np.ndarray) -> np.ndarray:
        """Positions of the flows that become messages under the ``--emit`` policy."""
        if self.emit == "all":
            return np.arange(len(best))
        flagged = best != self._benign
        if self.emit == "flagged":
            flagged |= novel
        return np.flatnonzero(flagged)


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
