"""The demo's inputs: which labelled data to train on, and which held-out rows to replay.

The replayed rows come from the run's own held-out split (``test_split.csv.gz``), never from training data,
and ``test_predictions.csv.gz`` holds the trainer's prediction for each of them in the same order. When the
demo replays only a sample (``--limit``), it takes the trainer's predictions for exactly those rows, so the
streamed verdicts are compared like for like, not with a score on other rows.
"""

from __future__ import annotations

import csv
import gzip
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from detector.core.csvfile import csv_files, read_header, read_rows

DATA_ENV = "FLOWWARDEN_DATA"
SHARED_SAMPLE = "cicids2017_improved_sample"
TEST_SPLIT = "test_split.csv.gz"
TEST_PREDICTIONS = "test_predictions.csv.gz"
HOW_TO_GET_DATA = f"""\
The demo trains on labelled flow CSVs and none were found. Get one of:
  * CICIDS2017 (improved, Engelen et al.): https://intrusion-detection.distrinet-research.be/CNS2022/
    or the original: https://www.unb.ca/cic/datasets/ids-2017.html (MachineLearningCSV.zip)
  * UNSW-NB15: https://research.unsw.edu.au/projects/unsw-nb15-dataset (training/testing-set CSVs)
then point the demo at the folder of CSVs (.csv or .csv.gz):
  make demo DATA=/path/to/csvs      or      {DATA_ENV}=/path/to/csvs make demo
(the research datasets are free for research use with citation; see their pages)."""


class DemoDataError(ValueError):
    """No usable data or run; the message says what to do."""


def find_training_data(data: str | Path | None) -> Path:
    """The labelled data to train on, from ``$FLOWWARDEN_DATA`` when set, else from ``data``: in either, the
    ``cicids2017_improved_sample`` folder when it holds CSVs, else the path itself when it is or holds CSVs.

    ``$FLOWWARDEN_DATA`` set but holding no CSVs is an error rather than a fall-back to ``data``: the user
    asked for that data, and training on something else instead would be a surprise.
    """
    chosen = os.environ.get(DATA_ENV)
    root = Path(chosen) if chosen else Path(data) if data is not None else None
    for candidate in [] if root is None else [root / SHARED_SAMPLE, root]:
        if candidate.is_file() or (candidate.is_dir() and any(_csvs(candidate))):
            return candidate
    if chosen:
        raise DemoDataError(f"{DATA_ENV}={chosen} holds no .csv or .csv.gz files.\n{HOW_TO_GET_DATA}")
    raise DemoDataError(HOW_TO_GET_DATA)


def check_run(run: Path) -> None:
    """A run directory the demo can serve and replay: a bundle, the held-out split, its predictions, a report."""
    needed = ["bundle/manifest.json", TEST_SPLIT, TEST_PREDICTIONS, "report.json"]
    missing = [name for name in needed if not (run / name).is_file()]
    if missing:
        raise DemoDataError(
            f"run {run} lacks {', '.join(missing)}: pass a directory written by a recent `trainer fit`, "
            "or leave out --run to train one"
        )


@dataclass(frozen=True)
class ReplaySet:
    """The CSV to replay and the trainer's (ground truth, prediction) counts for exactly its rows."""

    path: Path
    rows: int
    held_out: int
    offline: Counter[tuple[str, str]]


def prepare_replay_set(run: Path, out_dir: Path, limit: int | None, seed: int = 0) -> ReplaySet:
    """The held-out rows to replay: all of them, or a seeded random sample of ``limit`` rows."""
    split, predictions = run / TEST_SPLIT, run / TEST_PREDICTIONS
    truth_and_guess = [(row["label"], row["predicted"]) for row in read_rows(predictions)]
    held_out = len(truth_and_guess)
    if not limit or limit >= held_out:
        return ReplaySet(split, held_out, held_out, Counter(truth_and_guess))
    chosen = set(random.Random(seed).sample(range(held_out), limit))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"replay_{limit}_of_{held_out}.csv.gz"
    header = read_header(split)
    with gzip.open(target, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        written = 0
        for index, row in enumerate(read_rows(split)):
            if index in chosen:
                writer.writerow([row.get(name, "") for name in header])
                written += 1
    if written != limit:
        raise DemoDataError(f"{split} has {written} of the {limit} rows {predictions} lists: the run is inconsistent")
    offline = Counter(pair for index, pair in enumerate(truth_and_guess) if index in chosen)
    return ReplaySet(target, limit, held_out, offline)


def _csvs(folder: Path) -> list[Path]:
    try:
        return csv_files([folder])
    except ValueError:
        return []
