"""Packet captures to verdicts, end to end: ``make pcap-check`` (never ``make test``; see docs/pcap.md).

    .venv/bin/python tests/bench/pcap_check.py --bundle runs/paper/bundle [--pcaps DIR] [--meter session|cli|patched]

1. Makes (or reuses) a Python 3.12 virtual environment at ``.cache/cicflowmeter-venv`` with the PyPI
   ``cicflowmeter`` pinned below (it needs Python >= 3.12; the project's own venv may be 3.11).
2. Turns each capture into a flow CSV with that package, one capture at a time:
   * ``--meter session`` (default): the package's own ``FlowSession`` fed by scapy's ``PcapReader`` with the
     CLI's capture filter (IPv4, TCP or UDP) applied in Python, then ``flush_flows()``. Same flow and feature
     code as the CLI, but deterministic and without tcpdump/libpcap.
   * ``--meter cli``: the command users run, ``cicflowmeter -d DIR -c OUTDIR`` (``-f FILE`` crashes in
     0.5.0). It needs ``tcpdump`` and libpcap on the machine (scapy compiles the filter with them), and its
     background garbage collector expires flows by wall-clock time, which splits flows of recorded captures.
   * ``--meter patched``: a diagnostic, ``session`` with three differences from CICFlowMeter patched out
     (see :data:`CIC_PATCHES`); not what users run.
3. Scores every CSV with ``detector score`` (a subprocess of this interpreter), as a user would.
4. Prints one Markdown table: per capture the flows, rows the decoder rejected, the share of scored flows
   per predicted label, the share flagged as attack, and what the capture's content says it should be.

Exit status: 0 when every flow was scored, 1 when the decoder rejected rows (the table says why), 2 when a
step could not run; a missing capture folder or Python 3.12 is a skip (a message, status 0).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PCAPS = Path(os.environ.get("FLOWWARDEN_DATA") or REPO.parent / "shared" / "data") / "pcap"
DEFAULT_VENV = REPO / ".cache" / "cicflowmeter-venv"
# The versions this check was verified with (docs/pcap.md); numpy and scipy only compute the statistics.
METER_REQUIREMENTS = ("cicflowmeter==0.5.0", "scapy==2.8.0", "numpy==2.5.5", "scipy==1.18.1")
STAMP_NAME = ".flowwarden-requirements"
EXIT_OK, EXIT_REJECTED, EXIT_FAILED = 0, 1, 2

# Runs inside the cicflowmeter venv: argv = pcap, output mode (csv or url), output (a CSV file or a URL).
# Mirrors the CLI's per-file path (sniffer.py process_directory; with "url", what `-f FILE -u URL` would do
# if 0.5.0's `-f` did not crash) minus the wall-clock garbage-collector thread and the BPF filter. Prints
# {"written": flows the meter's writer wrote, "failed": {reason: flows}}. In url mode a flow is written when
# its POST was answered 2xx. The meter's HttpWriter raises on anything else (its error handler calls a
# `self.logger` it does not have), with the cause as the exception's context: requests' JSON encoder refusing
# a scapy Decimal timestamp, an HTTP error status, a timeout. The driver counts those and goes on.
SESSION_DRIVER = """
import collections, json, sys
from cicflowmeter.flow_session import FlowSession
from scapy.layers.inet import IP, TCP, UDP
from scapy.utils import PcapReader
{patches}
session = FlowSession(output_mode=sys.argv[2], output=sys.argv[3])
written, failed = 0, collections.Counter()
write = session.output_writer.write
def counted(data):
    global written
    try:
        write(data)
    except Exception as exc:
        cause = exc.__context__ or exc
        failed[f"{{type(cause).__name__}}: {{cause}}"] += 1
    else:
        written += 1
session.output_writer.write = counted
with PcapReader(sys.argv[1]) as packets:
    for packet in packets:
        if IP in packet and (TCP in packet or UDP in packet):
            session.process(packet)
session.flush_flows()
print(json.dumps({{"written": written, "failed": failed}}))
"""

# ``--meter patched`` (a diagnostic, not what users run): cicflowmeter 0.5.0 moved toward CICFlowMeter's
# semantics in three places, to measure how much of the result the meter's differences explain.
CIC_PATCHES = """
from cicflowmeter import flow as flow_module
from cicflowmeter.features import flow_bytes, packet_count, packet_length

_init = flow_module.Flow.__init__
def _init_without_first_packet(self, packet, direction):
    _init(self, packet, direction)
    self.packets = []  # FlowSession.process() adds a new flow's first packet again: it would count twice
flow_module.Flow.__init__ = _init_without_first_packet

def _payload_length(packet):  # from the IP/UDP length fields, so Ethernet padding does not count
    ip = packet[IP]
    if TCP in packet:
        return ip.len - ip.ihl * 4 - packet[TCP].dataofs * 4
    return packet[UDP].len - 8

def _lengths(self, packet_direction=None):  # CIC packet lengths are payload bytes, not frame bytes
    return [_payload_length(p) for p, d in self.flow.packets if packet_direction in (None, d)]
packet_length.PacketLength.get_packet_length = _lengths
packet_count.PacketCount.get_payload = staticmethod(lambda packet: b"\\0" * _payload_length(packet))
# CIC header lengths are transport (TCP incl. options / UDP) headers, not IP headers
flow_bytes.FlowBytes._header_size = lambda self, packet: packet[TCP].dataofs * 4 if TCP in packet else 8
"""


class CheckError(Exception):
    """A step that could not run; the message says which and why."""


@dataclass(frozen=True)
class Expectation:
    content: str
    kind: str  # "scan", "flood" or "benign"


# What DATA.md section 5 says each capture holds, by file-name prefix.
EXPECTATIONS: tuple[tuple[str, Expectation], ...] = (
    ("portscan", Expectation("SYN port scan: Portscan", "scan")),
    ("syn_flood", Expectation("SYN flood: a DoS/DDoS class", "flood")),
    ("synflood", Expectation("SYN flood: a DoS/DDoS class", "flood")),
    ("no_flood", Expectation("benign LAN traffic: BENIGN", "benign")),
    ("web_browsing", Expectation("benign web browsing: BENIGN", "benign")),
)


def expectation_for(name: str) -> Expectation | None:
    return next((exp for prefix, exp in EXPECTATIONS if name.startswith(prefix)), None)


def agrees(label: str, is_attack: bool, kind: str) -> bool:
    """Whether one verdict is what the capture's content calls for."""
    if kind == "scan":
        return "portscan" in label.lower()
    if kind == "flood":
        return label == "DDoS" or label.startswith("DoS")
    return not is_attack


@dataclass
class CaptureResult:
    name: str
    flows: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    attacks: int = 0
    novel: int | None = None  # None: the bundle has no novelty model
    agreeing: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    reasons: set[str] = field(default_factory=set)
    note: str = ""

    @property
    def scored(self) -> int:
        return sum(self.labels.values())


# ---------------------------------------------------------------------------------------------- meter venv


def find_python312(explicit: str | None) -> str | None:
    """A Python >= 3.12 interpreter: ``--python``, ``python3.12`` on PATH, or pyenv's 3.12 versions."""
    candidates = [explicit] if explicit else []
    candidates += [shutil.which("python3.12"), shutil.which("python3.13")]
    roots = [os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv")]
    if shutil.which("pyenv"):
        probe = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False)
        roots.insert(0, probe.stdout.strip() or None)
    for root in filter(None, roots):
        candidates += sorted(glob.glob(os.path.join(root, "versions", "3.1[2-9]*", "bin", "python3")))
    for candidate in filter(None, candidates):
        try:
            probe = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info >= (3, 12))"],
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError:
            probe = None
        if probe is not None and probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
        if explicit and candidate == explicit:
            raise CheckError(f"--python {explicit} is not a working Python >= 3.12")
    return None


def ensure_meter_venv(venv: Path, python: str) -> Path:
    """The venv's python, with :data:`METER_REQUIREMENTS` installed (once; a stamp records them)."""
    venv_python = venv / "bin" / "python"
    stamp = venv / STAMP_NAME
    wanted = "\n".join(METER_REQUIREMENTS)
    if venv_python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return venv_python
    print(f"pcap-check: setting up {venv} with {python} ({', '.join(METER_REQUIREMENTS)})", file=sys.stderr)
    if not venv_python.exists():
        _run([python, "-m", "venv", str(venv)], "creating the cicflowmeter venv")
    _run([str(venv_python), "-m", "pip", "install", "-q", *METER_REQUIREMENTS], "installing cicflowmeter")
    stamp.write_text(wanted)
    return venv_python


def _run(command: list[str], what: str, **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise CheckError(f"{what} failed (exit {done.returncode}): " + " | ".join(tail))
    return done


# ---------------------------------------------------------------------------------------------- conversion


def convert(pcap: Path, out_csv: Path, venv_python: Path, meter: str) -> str:
    """Write ``out_csv`` from ``pcap``; returns a note (empty when all went well)."""
    if meter in ("session", "patched"):
        result = run_session(venv_python, pcap, "csv", str(out_csv), patched=meter == "patched")
        if result.failed:
            raise CheckError(f"cicflowmeter on {pcap.name} could not write {result.failed}")
        return ""
    with tempfile.TemporaryDirectory(prefix="pcap-check-") as tmp:
        inbox, outbox = Path(tmp) / "in", Path(tmp) / "out"
        inbox.mkdir()
        (inbox / pcap.name).symlink_to(pcap.resolve())
        done = _run(
            [str(venv_python.parent / "cicflowmeter"), "-d", str(inbox), "-c", str(outbox)],
            f"cicflowmeter -d on {pcap.name}",
        )
        written = outbox / f"{pcap.stem}.csv"
        # The CLI reports a failed file on stdout and still exits 0.
        failure = next((line for line in done.stdout.splitlines() if line.startswith("Error")), "")
        if written.exists():
            shutil.move(str(written), out_csv)
        return failure


@dataclass(frozen=True)
class SessionResult:
    written: int  # flows the meter wrote (url mode: POSTs answered 2xx)
    failed: dict[str, int]  # flows it could not write, by cause


def run_session(
    venv_python: Path, pcap: Path, output_mode: str, output: str, *, patched: bool = False
) -> SessionResult:
    """Run the meter's ``FlowSession`` over ``pcap`` writing to ``output`` (``output_mode`` ``csv``: a file;
    ``url``: a URL each flow is POSTed to, as ``cicflowmeter -u URL`` does)."""
    driver = SESSION_DRIVER.format(patches=CIC_PATCHES if patched else "")
    done = _run([str(venv_python), "-c", driver, str(pcap), output_mode, output], f"cicflowmeter on {pcap.name}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return SessionResult(result["written"], dict(result["failed"]))


# ---------------------------------------------------------------------------------------------- scoring


def score(csvs: list[Path], bundle: Path, out: Path) -> str:
    """Run ``detector score`` on ``csvs``; returns its summary line."""
    command = [sys.executable, "-m", "detector.cli", "score", "--bundle", str(bundle), "--out", str(out)]
    done = _run([*command, *map(str, csvs)], "detector score", cwd=REPO)
    return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""


def read_verdicts(jsonl: Path, results: dict[str, CaptureResult], kinds: dict[str, str]) -> None:
    with open(jsonl, "rb") as handle:
        for line in handle:
            row = json.loads(line)
            result = results[Path(row["source"]["file"]).stem]
            if "error" in row:
                result.errors[row["error"]["code"]] += 1
                result.reasons.add(row["error"]["reason"])
                continue
            result.labels[row["label"]] += 1
            result.attacks += bool(row["is_attack"])
            if "novelty" in row:
                result.novel = (result.novel or 0) + bool(row["novelty"]["is_novel"])
            kind = kinds.get(result.name)
            result.agreeing += bool(kind and agrees(row["label"], row["is_attack"], kind))


# ---------------------------------------------------------------------------------------------- report


def _share(part: int, whole: int) -> str:
    """A percentage with one decimal that never rounds a count to 0 % or 100 %."""
    if not whole:
        return "–"
    text = f"{100 * part / whole:.1f} %"
    if part and text == "0.0 %":
        return "<0.1 %"
    return ">99.9 %" if part < whole and text == "100.0 %" else text


def table(results: list[CaptureResult], expectations: dict[str, Expectation | None]) -> str:
    lines = [
        "| capture | content says | flows | rejected | flagged attack | as expected | novel "
        "| predicted labels (of scored) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for result in results:
        expectation = expectations[result.name]
        labels = ", ".join(f"{label} {_share(n, result.scored)}" for label, n in result.labels.most_common())
        rejected = sum(result.errors.values())
        lines.append(
            f"| {result.name} | {expectation.content if expectation else 'unknown'} | {result.flows:,} "
            f"| {rejected:,} | {_share(result.attacks, result.scored)} "
            f"| {_share(result.agreeing, result.scored) if expectation else '–'} "
            f"| {_share(result.novel, result.scored) if result.novel is not None else '–'} "
            f"| {labels or result.note or '–'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, type=Path, help="bundle directory, .tar.gz or registry")
    parser.add_argument("--pcaps", type=Path, default=DEFAULT_PCAPS, help=f"default: {DEFAULT_PCAPS}")
    parser.add_argument("--meter", choices=("session", "cli", "patched"), default="session", help="default: session")
    parser.add_argument("--python", help="Python >= 3.12 for the cicflowmeter venv (default: found)")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help=f"default: {DEFAULT_VENV}")
    parser.add_argument("--work", type=Path, help="keep the flow CSVs and verdicts here (default: a temp dir)")
    args = parser.parse_args(argv)

    pcaps = sorted(args.pcaps.glob("*.pcap")) if args.pcaps.is_dir() else []
    if not pcaps:
        print(f"pcap-check: SKIP: no captures (*.pcap) in {args.pcaps}")
        return EXIT_OK
    try:
        python = find_python312(args.python)
        if python is None:
            print("pcap-check: SKIP: no Python >= 3.12 found (cicflowmeter needs it); pass --python")
            return EXIT_OK
        if args.meter == "cli" and not shutil.which("tcpdump"):
            raise CheckError("--meter cli needs tcpdump and libpcap (scapy filters offline captures with them)")
        venv_python = ensure_meter_venv(args.venv, python)
        with tempfile.TemporaryDirectory(prefix="pcap-check-") as tmp:
            work = args.work or Path(tmp)
            return _check(pcaps, args.bundle, work, venv_python, args.meter)
    except CheckError as exc:
        print(f"pcap-check: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _check(pcaps: list[Path], bundle: Path, work: Path, venv_python: Path, meter: str) -> int:
    work.mkdir(parents=True, exist_ok=True)
    results = {pcap.stem: CaptureResult(pcap.stem) for pcap in pcaps}
    expectations = {pcap.stem: expectation_for(pcap.stem) for pcap in pcaps}
    csvs = []
    for pcap in pcaps:
        out_csv = work / f"{pcap.stem}.csv"
        out_csv.unlink(missing_ok=True)
        print(f"pcap-check: {pcap.name} -> flows ({meter})", file=sys.stderr)
        note = convert(pcap, out_csv, venv_python, meter)
        rows = _data_rows(out_csv)
        results[pcap.stem].flows = rows
        if rows:
            csvs.append(out_csv)
        else:
            results[pcap.stem].note = f"no flows written{': ' + note if note else ''}"
    verdicts = work / "verdicts.jsonl"
    summary = score(csvs, bundle, verdicts) if csvs else "no flows to score"
    if csvs:
        kinds = {name: exp.kind for name, exp in expectations.items() if exp}
        read_verdicts(verdicts, results, kinds)

    version = _run([str(venv_python), "-m", "pip", "show", "cicflowmeter"], "pip show").stdout
    version = next((line.split(":", 1)[1].strip() for line in version.splitlines() if line.startswith("Version")), "?")
    print(f"\nbundle {bundle} · cicflowmeter {version} ({meter}) · captures {pcaps[0].parent}")
    print(f"detector score: {summary}\n")
    print(table(list(results.values()), expectations))
    reasons = sorted({reason for result in results.values() for reason in result.reasons})
    if reasons:
        print("\nrejected rows, by reason:")
        for reason in reasons:
            print(f"  {reason}")
        if any("missing_features" in result.errors for result in results.values()):
            print("the bundle needs features this meter does not write: train one with features.portable = true")
        return EXIT_REJECTED
    return EXIT_OK


def _data_rows(csv_path: Path) -> int:
    if not csv_path.exists():
        return 0
    with open(csv_path, "rb") as handle:
        return max(sum(1 for line in handle if line.strip()) - 1, 0)


if __name__ == "__main__":
    sys.exit(main())
