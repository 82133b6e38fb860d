"""Site adaptation measured on the shared captures: ``make site-check`` (never ``make test``; README "Site
adaptation").

    .venv/bin/python -m tests.bench.site_check [--pcaps DIR] [--bundle B] [--work DIR] [--flows DIR]

1. Converts every capture to a flow CSV with the Python ``cicflowmeter`` exactly as ``make pcap-check`` does
   (:mod:`tests.bench.pcap_check`: its venv, its ``session`` meter path). ``--flows DIR`` takes CSVs already
   converted instead (named ``<capture>.csv``).
2. Takes the base bundle: ``--bundle``, else the portable quick bundle trained once on the improved-CICIDS2017
   sample and cached by data hash (:func:`tests.bench.bundle.portable_bundle`).
3. Adapts it with ``trainer adapt`` on the trusted captures :data:`TRUSTED`: the benign LAN baseline and the
   larger of the two browsing captures (``web_browsing_jsu``, 109 flows against 42; a rule fixed before any
   result was seen, so that the autoencoder sees as much of the site as the captures allow). The other browsing
   capture is the held-out one: nothing of it is used to fit or to set anything.
4. Scores every capture with ``detector score`` under the base and the adapted bundle and prints one Markdown
   table: per capture the flows and the share flagged by the classifier (an attack label), by the novelty flag
   (``novelty.is_novel``: the base bundle's deciding signal, or the site-fitted autoencoder), and by either;
   for the base bundle also by its autoencoder's score, whichever signal decides.
   Then the issue's targets, each with what was measured.

Exit status 0 when it ran (whatever it measured), 2 when a step failed; no captures or no Python >= 3.12 is a
skip (status 0).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.bench.bundle import portable_bundle
from tests.bench.pcap_check import (
    DEFAULT_PCAPS,
    DEFAULT_VENV,
    EXIT_FAILED,
    EXIT_OK,
    REPO,
    CheckError,
    _run,
    _share,
    convert,
    ensure_meter_venv,
    find_python312,
    score,
)

TRUSTED = ("no_flood_lan_baseline", "web_browsing_jsu")
HELD_OUT_BROWSING = "web_browsing_dailymail"
SCAN, LARGE_FLOOD = "portscan_nmap_syn_192.168.56.x", "syn_flood_lan"
# The acceptance targets: (capture, "at most" or "at least", share of its flows flagged by either signal).
TARGETS = ((HELD_OUT_BROWSING, "at most", 0.05), (SCAN, "at least", 0.90), (LARGE_FLOOD, "at least", 0.90))


@dataclass
class Shares:
    """Counts of one capture's verdicts under one bundle."""

    flows: int = 0
    scored: int = 0
    attack: int = 0
    anomaly: int = 0  # by the deciding novelty signal (is_novel)
    autoencoder: int = 0  # by the autoencoder's score, whichever signal decides
    either: int = 0  # by the classifier or the deciding signal

    def share(self, part: int) -> float:
        return part / self.scored if self.scored else 0.0


def count_verdicts(jsonl: Path) -> dict[str, Shares]:
    """Per capture (the CSV's stem): rows, scored rows, and how many the classifier, the anomaly signal and
    either flagged."""
    counts: dict[str, Shares] = {}
    with open(jsonl, "rb") as handle:
        for line in handle:
            row = json.loads(line)
            shares = counts.setdefault(Path(row["source"]["file"]).stem, Shares())
            shares.flows += 1
            if "error" in row:
                continue
            shares.scored += 1
            attack = bool(row["is_attack"])
            novelty = row.get("novelty", {})
            anomaly = bool(novelty.get("is_novel", False))
            shares.autoencoder += novelty.get("scores", {}).get("autoencoder", novelty.get("score", 0.0)) > 1.0
            shares.attack += attack
            shares.anomaly += anomaly
            shares.either += attack or anomaly
    return counts


def deciding_signal(jsonl: Path) -> str:
    """The novelty signal that decides ``is_novel`` in these verdicts (``autoencoder`` for bundles from before the
    choice existed)."""
    with open(jsonl, "rb") as handle:
        for line in handle:
            novelty = json.loads(line).get("novelty")
            if novelty is not None:
                return str(novelty.get("signal", "autoencoder"))
    return "none"


def adapt(base: Path, flows: Path, out: Path, extra: list[str]) -> dict:
    """``trainer adapt`` on the trusted captures; returns its report."""
    trusted = [str(flows / f"{name}.csv") for name in TRUSTED]
    command = [sys.executable, "-m", "trainer.cli", "adapt", "--bundle", str(base), "--benign", *trusted]
    done = _run([*command, "--out", str(out), "--quiet", *extra], "trainer adapt", cwd=REPO)
    print(done.stderr.strip(), file=sys.stderr)
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def table(names: list[str], base: dict[str, Shares], adapted: dict[str, Shares]) -> str:
    def role(name: str) -> str:
        if name in TRUSTED:
            return "trusted (adapted on)"
        return "held out" if name == HELD_OUT_BROWSING else "attack" if name.startswith(("portscan", "syn")) else ""

    lines = [
        "| capture | role | flows | base: classifier | base: autoencoder | base: novelty flag | base: either "
        "| adapted: classifier | adapted: site anomaly | adapted: either |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        b, a = base.get(name, Shares()), adapted.get(name, Shares())
        cells = [_share(b.attack, b.scored), _share(b.autoencoder, b.scored), _share(b.anomaly, b.scored)]
        cells.append(_share(b.either, b.scored))
        cells += [_share(a.attack, a.scored), _share(a.anomaly, a.scored), _share(a.either, a.scored)]
        lines.append(f"| {name} | {role(name)} | {b.flows:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(adapted: dict[str, Shares]) -> list[str]:
    lines = []
    for name, direction, goal in TARGETS:
        shares = adapted.get(name)
        if shares is None:
            lines.append(f"- {name}: not measured (no flows)")
            continue
        measured = shares.share(shares.either)
        met = measured <= goal if direction == "at most" else measured >= goal
        flagged = _share(shares.either, shares.scored)
        verdict = "met" if met else "NOT met"
        lines.append(f"- {name}: flagged by either signal {flagged} (target {direction} {goal:.0%}): {verdict}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pcaps", type=Path, default=DEFAULT_PCAPS, help=f"default: {DEFAULT_PCAPS}")
    parser.add_argument("--flows", type=Path, help="flow CSVs already converted (<capture>.csv); skips the meter")
    parser.add_argument("--bundle", type=Path, help="base bundle (default: the cached portable quick bundle)")
    parser.add_argument("--python", help="Python >= 3.12 for the cicflowmeter venv (default: found)")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help=f"default: {DEFAULT_VENV}")
    parser.add_argument("--work", type=Path, help="keep the flows, verdicts and the adapt run here (default: temp)")
    parser.add_argument("--adapt-args", default="", help="extra trainer adapt options, e.g. '--budget 0.05'")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="site-check-") as tmp:
            work = args.work or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            flows = args.flows or _converted(args, work / "flows")
            if flows is None:
                return EXIT_OK
            return _check(args, flows, work)
    except CheckError as exc:
        print(f"site-check: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _converted(args: argparse.Namespace, flows: Path) -> Path | None:
    """The captures as flow CSVs through the Python cicflowmeter (as ``make pcap-check``); None: a skip."""
    pcaps = sorted(args.pcaps.glob("*.pcap")) if args.pcaps.is_dir() else []
    if not pcaps:
        print(f"site-check: SKIP: no captures (*.pcap) in {args.pcaps}")
        return None
    python = find_python312(args.python)
    if python is None:
        print("site-check: SKIP: no Python >= 3.12 found (cicflowmeter needs it); pass --python")
        return None
    venv_python = ensure_meter_venv(args.venv, python)
    flows.mkdir(parents=True, exist_ok=True)
    for pcap in pcaps:
        print(f"site-check: {pcap.name} -> flows (session)", file=sys.stderr)
        out_csv = flows / f"{pcap.stem}.csv"
        out_csv.unlink(missing_ok=True)
        convert(pcap, out_csv, venv_python, "session")
    return flows


def _check(args: argparse.Namespace, flows: Path, work: Path) -> int:
    missing = [name for name in TRUSTED if not (flows / f"{name}.csv").is_file()]
    if missing:
        raise CheckError(f"trusted captures missing in {flows}: {', '.join(missing)}")
    if args.bundle:
        base = args.bundle
    else:
        cached = portable_bundle(log=lambda text: print(f"site-check: {text}", file=sys.stderr))
        if cached is None:
            raise CheckError("no --bundle and no improved-CICIDS2017 sample to train the portable bundle on")
        base = cached.bundle
    run = work / f"adapt-{time.strftime('%Y%m%dT%H%M%S')}"
    report = adapt(base, flows, run, args.adapt_args.split())
    csvs = sorted(flows.glob("*.csv"))
    counts = {}
    for name, bundle in (("base", base), ("adapted", run / "bundle")):
        verdicts = work / f"verdicts-{name}.jsonl"
        score(csvs, bundle, verdicts)
        counts[name] = count_verdicts(verdicts)
    site = report["site"]
    signals = {name: deciding_signal(work / f"verdicts-{name}.jsonl") for name in counts}
    print(f"\nbase bundle {base} · adapted {report['bundle']['version']} ({run / 'bundle'})")
    print(f"novelty decided by: base {signals['base']}, adapted {signals['adapted']}")
    print(
        f"trusted: {', '.join(TRUSTED)}: {site['rows_decoded']} flows decoded, {site['rows_rejected']} rejected, "
        f"{site['rows_used']} fitted, {site['rows_held_out']} held out (seed {site['seed']}); autoencoder "
        f"{site['init']}, {site['epochs']} epochs; budget {site['budget']:.0%} (the held-out rows resolve "
        f"{site['resolvable_budget']:.1%}), held-out flagged {site['held_out_flagged_share']:.1%}; "
        f"candidates: "
        + ", ".join(f"{c['init']} median error {c['held_out_error_median']:.3g}" for c in report["candidates"])
    )
    print("\n" + table([csv.stem for csv in csvs], counts["base"], counts["adapted"]) + "\n")
    print("\n".join(targets(counts["adapted"])))
    rejected = Counter({name: s.flows - s.scored for name, s in counts["adapted"].items() if s.flows > s.scored})
    if rejected:
        print(f"rows detector score rejected: {dict(rejected)}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
