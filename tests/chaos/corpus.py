"""What the chaos run replays: labelled flows with hostile records mixed in, and what each should become.

The flows are the generated ones of tests/support/generated.py (the dialect of the test bundles). About
``hostile_share`` of the records are hostile (bad JSON, wrong types, missing fields, not an object, not
UTF-8, empty): each must end in the dead-letter topic with its reason. The expected label of every flow,
per bundle version, comes from ``detector score``'s library path (:func:`detector.tools.score.score_files`
on an NDJSON file), the same decoder and scorer the worker uses.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path

import orjson

from detector.core.bundle import load_bundle
from detector.core.decode import Rejected
from detector.core.scorer import Scorer
from detector.tools.score import score_files
from tests.support.generated import FEATURES, generated_rows

ROWS_PER_SCALE = len(generated_rows(0))
BACKEND = "eager"  # fp32 eager: int8's results depend on the batch a record shares, so labels could differ


def _hostile(rng: random.Random, row: dict[str, object]) -> bytes:
    """One hostile record, of a kind picked by ``rng``; never a newline inside (NDJSON-safe)."""
    kind = rng.randrange(7)
    if kind == 0:
        return orjson.dumps(row)[:-7]  # cut short: not JSON
    if kind == 1:
        return orjson.dumps({**row, FEATURES[0]: "not a number"})
    if kind == 2:
        return orjson.dumps({k: v for k, v in row.items() if k not in FEATURES[:3]})
    if kind == 3:
        return orjson.dumps([row])
    if kind == 4:
        return b"\xff\xfe" + orjson.dumps(row)[2:]
    if kind == 5:
        return b""
    return orjson.dumps({**row, FEATURES[1]: {"nested": [1, 2]}})


@dataclass
class Corpus:
    """``values[i]`` is replayed i-th; ``hostile`` holds the indices that must be dead-lettered."""

    values: list[bytes]
    hostile: set[int]

    @classmethod
    def build(cls, records: int, seed: int, hostile_share: float = 0.012) -> Corpus:
        scale = -(-records // ROWS_PER_SCALE)
        rows = generated_rows(seed, scale=scale)[:records]
        rng = random.Random(seed)
        hostile = set(rng.sample(range(records), max(1, round(records * hostile_share))))
        values = [_hostile(rng, row) if i in hostile else orjson.dumps(row) for i, row in enumerate(rows)]
        return cls(values, hostile)

    def expected_labels(self, bundle: Path, workdir: Path) -> dict[int, str]:
        """Index -> label that ``detector score`` gives each flow with ``bundle`` (hostile ones left out)."""
        indices = [i for i in range(len(self.values)) if i not in self.hostile]
        source = workdir / f"flows-{load_bundle(bundle).version}.ndjson"
        source.write_bytes(b"\n".join(self.values[i] for i in indices) + b"\n")
        out = io.BytesIO()
        score_files([source], Scorer(load_bundle(bundle), "cpu", backend=BACKEND), out)
        labels: dict[int, str] = {}
        for line in out.getvalue().splitlines():
            result = orjson.loads(line)
            index = indices[result["source"]["line"] - 1]
            labels[index] = result["label"] if "label" in result else "!" + result["error"]["code"]
        return labels

    def not_rejected(self, bundle: Path) -> list[int]:
        """Hostile records the decoder would score after all (a defect of this corpus, reported as such)."""
        decoder = Scorer(load_bundle(bundle), "cpu", backend=BACKEND).decoder
        return sorted(i for i in self.hostile if not isinstance(decoder.decode_bytes(self.values[i]), Rejected))
