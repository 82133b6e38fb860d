"""``make bench`` (CPU) and ``make bench-gpu`` (``--device cuda``): the detector measured side by side in one run,
ending with ONE JSON line on stdout (progress goes to stderr). Never part of ``make test``; nothing asserts a time.

On the bench bundle (:mod:`tests.bench.bundle`: the quick profile trained on the real sample and cached, or the
real shapes from generated rows) and its held-out test split:

* ``model_only``: ``Scorer.scores`` (preprocessing, classifier, novelty model) on flows decoded beforehand, flows/s
  and CPU ms per 1,000 flows per batch size, for the serving backend (``auto``) and for the fp32 ``eager`` model;
* ``decode``: ``FlowDecoder.decode_many`` in batches of ``--batch`` (the worker's decoding) against
  ``orjson.loads`` alone on the same records (``ratio_vs_parse``: decode flows/s ÷ parse flows/s), and the
  careful per-record path (``FlowDecoder.decode_bytes``, what a record the fast path refuses costs), the best
  of ``--decode-repeat`` interleaved runs each (runs of a fraction of a second: a busy neighbour's burst moves
  one of them by 20 % or more);
* ``backend``: the serving backend against the fp32 model at ``--batch`` (``speedup``: flows/s; ``cpu_speedup``:
  CPU seconds per flow, eager's over the backend's), and each backend's
  share of identical labels and novelty flags on the whole test split, against the fp32 model on the CPU
  (the trainer's reference);
* ``explain``: ``Scorer.scores`` at ``--batch`` with and without ``--explain`` (:meth:`Scorer.explain` of every
  scored flow: the worst case, every flow an alert; the worker explains its alerts only) on the same flows,
  ``slowdown`` (flows/s without ÷ with) and ``cpu_ratio`` (CPU per flow, with ÷ without);
* ``e2e``: the worker as a subprocess against an embedded broker, per guarantee (:mod:`detector.tools.e2e`),
  with ``cpu_ratio_vs_model`` against the serving backend's model-only CPU at the worker's batch size;
* ``train`` (``--train-time``): ``trainer fit --profile paper`` on the device with few epochs, its per-stage
  seconds, and the full profile's time extrapolated from the per-epoch costs (labelled as such).

``--dry`` runs every step on tiny sizes with generated data (CI: tests/bench/test_bench_dry.py), so this
script cannot rot; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import torch

from detector.core.backends import CPU_BACKENDS, CUDA_BACKENDS, choose, resolve
from detector.core.bundle import load_bundle
from detector.core.decode import DecodedFlow
from detector.core.scorer import Scorer, pick_device
from detector.tools import e2e
from detector.tools.measure import best_rates, chunks, compare_backends, decode_against_parse, machine, model_only
from tests.bench.bundle import REPO, bench_bundle, shared_dataset


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dry", action="store_true", help="tiny sizes, generated data: checks the script, not speed")
    parser.add_argument("--batch", type=int, default=512, help="the worker's batch size (default: the worker's 512)")
    parser.add_argument("--batch-sizes", default="64,256,512,1024,4096", help="model-only batch sizes")
    parser.add_argument("--flows", type=int, default=8192, help="flows per timed model-only run")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs; the best is kept")
    parser.add_argument(
        "--decode-repeat",
        type=int,
        default=9,
        help="interleaved decode and parse runs (each a fraction of a second); the best is kept",
    )
    parser.add_argument("--explain-flows", type=int, default=1024, help="flows of the --explain cost runs")
    parser.add_argument("--explain", type=int, default=5, help="K of the --explain cost runs")
    parser.add_argument("--explain-only", action="store_true", help="only the --explain cost (and the bundle)")
    parser.add_argument("--e2e-flows", type=int, default=30_000, help="records for each worker capacity run")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="length of each latency run")
    parser.add_argument("--no-e2e", action="store_true", help="skip the worker end to end")
    parser.add_argument("--e2e-only", action="store_true", help="only the worker end to end (and the model-only CPU)")
    parser.add_argument("--train-time", action="store_true", help="also time trainer fit --profile paper (few epochs)")
    parser.add_argument("--train-epochs", type=int, default=2, help="fine-tuning epochs of the timed paper fit")
    parser.add_argument("--threads", type=int, help="torch threads for the model, here and in the worker (--threads)")
    parser.add_argument("--out", type=Path, help="also write the JSON line to this file")
    args = parser.parse_args(argv)
    if args.dry:
        args.batch_sizes, args.flows, args.repeat, args.decode_repeat = "64,512", 256, 1, 1
        args.e2e_flows, args.latency_seconds, args.train_epochs = 600, 1.0, 1
        args.explain_flows = 256
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    result: dict[str, Any] = {"bench": "flowwarden", "device": device.type, "dry": args.dry}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)

    prepared = bench_bundle(device.type, dry=args.dry, log=log)
    bundle = load_bundle(prepared.bundle)
    serving = choose("auto", device)
    result["bundle"] = {
        "source": prepared.source,
        "version": bundle.version,
        "features": len(bundle.features),
        "model_inputs": bundle.preprocessor.width,
        "classes": len(bundle.classes),
        "novelty": bundle.novelty is not None,
        "test_rows": None,
    }
    values = e2e.records_from_csv([prepared.test_split])
    scorer = Scorer(bundle, device.type, backend="eager")
    flows = [f for f in map(scorer.decoder.decode_bytes, values) if isinstance(f, DecodedFlow)]
    result["bundle"]["test_rows"] = len(flows)
    timed = flows[: args.flows]

    if args.explain_only:
        result["explain"] = explain_cost(Scorer(bundle, device.type), flows[: args.explain_flows], args)
        result["machine"] = machine()
        print(orjson.dumps(result).decode(), flush=True)
        return 0
    if args.e2e_only:
        sizes = [args.batch]
    log(f"model only: {serving} and eager on {len(timed)} flows, batches {sizes}")
    if note := resolve("auto", device)[1]:
        log(note)
    scorers = {serving: Scorer(bundle, device.type, backend=serving), "eager": scorer}
    rates = model_only(scorers, timed, sizes, args.repeat)
    result["model_only"] = {
        "backend": serving,
        "flows": len(timed),
        **{
            name: {str(size): _rate(rate) for size, rate in by_size.items()}
            for name, by_size in rates.items()
            if name == serving or name == "eager"
        },
    }

    if not args.e2e_only:
        log("decode against JSON parse")
        decoding = decode_against_parse(scorer.decoder, values[: max(args.flows, 2000)], args.decode_repeat, args.batch)
        parse = decoding["parse"].per_second
        result["decode"] = {
            "records": decoding["decode"].items,
            "batch": args.batch,
            "decode_flows_per_s": round(decoding["decode"].per_second),
            "parse_flows_per_s": round(parse),
            "ratio_vs_parse": round(decoding["decode"].per_second / parse, 3),
            "careful_flows_per_s": round(decoding["decode_one"].per_second),
            "careful_ratio_vs_parse": round(decoding["decode_one"].per_second / parse, 3),
        }
        log("backends against the fp32 model on the CPU")
        result["backend"] = _backends(bundle, flows, device, scorers[serving], rates, args)
        result["explain"] = explain_cost(scorers[serving], flows[: args.explain_flows], args)
    batch = args.batch if args.batch in sizes else sizes[-1]
    model_cpu = rates[serving][batch].cpu_ms_per_1000
    result["model_only"]["cpu_ms_per_1000_at_worker_batch"] = round(model_cpu, 1)

    if not args.no_e2e:
        log(f"worker end to end: {args.e2e_flows} records per guarantee, then {args.latency_seconds:g} s at half rate")
        options = e2e.E2EOptions(
            prepared.bundle, args.e2e_flows, args.latency_seconds, args.batch, device.type, "auto", args.threads, 900
        )
        result["e2e"] = attempt(lambda: e2e.run(values, options, model_cpu_ms_per_1000=model_cpu), args.dry)

    if args.train_time:
        result["train"] = attempt(lambda: paper_fit_time(device.type, args.train_epochs, args.dry), args.dry)
    result["machine"] = machine()
    line = orjson.dumps(result).decode()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n")
    print(line, flush=True)
    return 0


def attempt(step: Callable[[], dict[str, Any]], dry: bool) -> dict[str, Any]:
    """A step's result, or (on a real run, where one chance on a GPU machine must not lose the other numbers)
    its error in the JSON line. A dry run fails loudly instead: that is what it is for."""
    if dry:
        return step()
    try:
        return step()
    except Exception as exc:
        log(f"failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {str(exc)[-1500:]}"}


def explain_cost(scorer: Scorer, flows: list[DecodedFlow], args: argparse.Namespace) -> dict[str, Any]:
    """Scoring with and without explaining every flow, at the worker's batch size, interleaved runs."""
    log(f"explain: {len(flows)} flows scored with and without --explain {args.explain} ({scorer.backend.name})")
    parts = chunks(flows, args.batch)

    def explained() -> None:
        for part in parts:
            scores = scorer.scores(part)
            scorer.explain(part, scores.ranked(1)[:, 0], args.explain)

    rates = best_rates(
        {"plain": (lambda: [scorer.scores(part) for part in parts], len(flows)), "explain": (explained, len(flows))},
        args.repeat,
    )
    plain, explain = rates["plain"], rates["explain"]
    return {
        "k": args.explain,
        "flows": len(flows),
        "batch": args.batch,
        "backend": scorer.backend.name,
        "explained": "every flow (worst case: the worker explains alerts only)",
        "plain": _rate(plain),
        "with_explain": _rate(explain),
        "slowdown": round(plain.per_second / explain.per_second, 2),
        "cpu_ratio": round(explain.cpu_ms_per_1000 / plain.cpu_ms_per_1000, 2),
        "explain_ms_per_1000": round(1000 * (explain.seconds - plain.seconds) / len(flows) * 1000, 1),
    }


def _rate(rate: Any) -> dict[str, float]:
    return {"flows_per_s": round(rate.per_second), "cpu_ms_per_1000": round(rate.cpu_ms_per_1000, 1)}


def _backends(bundle, flows, device, served: Scorer, rates, args) -> dict[str, Any]:
    """The serving backend against the fp32 model, and every backend of the device for labels and flags (on a
    GPU also the speed of the ones not timed in model_only)."""
    serving = served.backend.name
    # A Scorer moves its bundle's modules to its device: the CPU reference gets a bundle object of its own, or
    # it would pull the GPU scorers' weights (and their captured graphs' inputs) back to the CPU.
    reference = Scorer(load_bundle(bundle.path), "cpu", backend="eager")
    names = CUDA_BACKENDS if device.type == "cuda" else CPU_BACKENDS
    agreement = compare_backends(bundle, flows, names, device.type, reference)
    batch = args.batch if args.batch in rates[serving] else max(rates[serving])
    speedup = rates[serving][batch].per_second / rates["eager"][batch].per_second
    # CPU seconds per flow, eager's over the backend's: what a busy machine's neighbours disturb least
    cpu_ratio = rates["eager"][batch].cpu_ms_per_1000 / rates[serving][batch].cpu_ms_per_1000
    chosen = agreement.get(serving, {})
    summary: dict[str, Any] = {
        "name": serving,
        "batch": batch,
        "speedup": round(speedup, 2),
        "cpu_speedup": round(cpu_ratio, 2),
        "label_agreement": chosen.get("label_agreement"),
        "novelty_flag_agreement": chosen.get("novelty_flag_agreement"),
        "reference": "eager fp32 on the CPU",
        "note": served.backend.note,  # why auto did not get its first choice (empty: it did)
        "all": agreement,
    }
    for name in names:
        if name in (serving, "eager") or "error" in agreement[name]:
            continue
        try:
            scorer = {name: Scorer(bundle, device.type, backend=name)}
            other = model_only(scorer, flows[: args.flows], [batch], args.repeat)[name][batch]
            agreement[name]["speedup_vs_eager"] = round(other.per_second / rates["eager"][batch].per_second, 2)
        except Exception as exc:  # one precision this GPU or torch cannot run must not lose the rest
            agreement[name]["error"] = f"{type(exc).__name__}: {exc}"[:300]
    if device.type == "cuda":
        summary["cpu_gpu_label_agreement"] = agreement["eager"].get("label_agreement")
        summary["graphs_disabled"] = getattr(served.backend, "graphs_disabled", None)
    return summary


def paper_fit_time(device: str, epochs: int, dry: bool) -> dict[str, Any]:
    """``trainer fit --profile paper`` with ``epochs`` fine-tuning epochs and one pre-training epoch on ``device``;
    the paper profile's time extrapolated from the measured per-epoch costs (50 and 10 epochs)."""
    data = None if dry else shared_dataset()
    if data is None:
        from tests.bench.bundle import CACHE, write_generated

        data = write_generated(CACHE / "generated-40" / "flows.csv.gz", rows_per_class=40)
    with tempfile.TemporaryDirectory(prefix="flowwarden-fit-") as scratch:
        config = Path(scratch) / "shorter.toml"
        config.write_text("[pretrain]\nepochs = 1\n")
        run = Path(scratch) / "run"
        command = [sys.executable, "-m", "trainer.cli", "fit", "--data", str(data), "--profile", "paper"]
        command += ["--out", str(run), "--device", device, "--epochs", str(epochs), "--config", str(config), "--quiet"]
        log(f"timing {' '.join(command[3:])}")
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise RuntimeError(f"the timed paper fit failed ({done.returncode}):\n{done.stderr[-3000:]}")
        wall = time.perf_counter() - started
        report = orjson.loads((run / "report.json").read_bytes())
    stages = report.get("stage_seconds", {})
    epochs_seconds = [e["seconds"] for e in report["history"]["epochs"]]
    steady = epochs_seconds[1:] or epochs_seconds
    per_epoch = sum(steady) / len(steady)
    pretrain = stages.get("pre-train", 0.0)
    fixed = sum(v for k, v in stages.items() if k not in ("pre-train", "fine-tune"))
    estimate = fixed + 10 * pretrain + 50 * per_epoch
    return {
        "profile": "paper",
        "device": report.get("device"),
        "measured": {"pretrain_epochs": 1, "finetune_epochs": epochs, "wall_seconds": round(wall, 1)},
        "stage_seconds": stages,
        "finetune_epoch_seconds": [round(s, 2) for s in epochs_seconds],
        "paper_profile_seconds_extrapolated": round(estimate, 1),
        "extrapolation": "stages other than pre-training and fine-tuning as measured, + 10 x the pre-training epoch "
        "+ 50 x the mean fine-tuning epoch after the first",
    }


if __name__ == "__main__":
    sys.exit(main())
