"""``trainer``: the offline pipeline's command line (fit, evaluate, baselines, ablate, publish).

Errors a user can fix (bad data, bad config, a bad bundle) end with one clear line and exit status 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detector.core.bundle import BundleError
from detector.core.envflags import options_from_environment
from detector.core.scorer import DeviceError
from trainer import commands
from trainer.config import PROFILES, ConfigError
from trainer.load import DataError
from trainer.progress import Reporter
from trainer.rundir import RunDirError
from trainer.split import SplitError
from trainer.train import TrainingDiverged

DEVICES = ("auto", "cpu", "cuda")
DEVICE_HELP = "where the network runs: auto (a GPU when there is one), cpu, cuda"
USER_ERRORS = (DataError, ConfigError, BundleError, SplitError, DeviceError, RunDirError, TrainingDiverged)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainer", description=__doc__.splitlines()[0].replace("``", ""))
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser("fit", help="train ResCAE-BiGRU, evaluate on a held-out split, write a bundle")
    _data_arguments(fit)
    _config_arguments(fit)
    fit.add_argument("--registry", help="also publish the bundle to this registry directory")

    evaluate = sub.add_parser("evaluate", help="score a bundle (or registry) on labeled data")
    evaluate.add_argument("--bundle", required=True, help="bundle directory, .tar.gz, or registry")
    _data_arguments(evaluate)
    evaluate.add_argument("--device", default="auto", choices=DEVICES, help=DEVICE_HELP)

    baselines = sub.add_parser("baselines", help="Decision Tree and Random Forest on the same split")
    _data_arguments(baselines)
    _config_arguments(baselines, trains_the_model=False)

    ablate = sub.add_parser("ablate", help="the paper's Table 6: base, +SAM, +iForest, +SMOTE, full")
    _data_arguments(ablate)
    _config_arguments(ablate)

    publish = sub.add_parser("publish", help="add a bundle to a registry and move LATEST to it")
    publish.add_argument("--bundle", required=True, help="bundle directory or .tar.gz (it is verified first)")
    publish.add_argument(
        "--registry", required=True, help="registry directory (created if needed; a directory of its own)"
    )
    return parser


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", required=True, metavar="PATH", help="CSV files or folders (.csv/.gz)")
    parser.add_argument("--out", required=True, type=Path, help="run directory to write")
    parser.add_argument("--label-map", help="TOML file renaming labels, e.g. [labels] Bot = 'Botnet'")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _config_arguments(parser: argparse.ArgumentParser, *, trains_the_model: bool = True) -> None:
    parser.add_argument(
        "--profile",
        default="paper",
        choices=PROFILES,
        help="shipped settings: paper (the paper's, 50 epochs), tuned (validated changes), quick (few epochs) "
        "(default: %(default)s)",
    )
    parser.add_argument("--config", help="TOML file overriding any field of the profile (see trainer/profiles/*.toml)")
    parser.add_argument("--seed", type=int, help="seed of the split and of every random step (default: 42)")
    parser.add_argument("--split", choices=("stratified", "temporal"), help="how to split train/test")
    if trains_the_model:
        parser.add_argument("--device", choices=DEVICES, help=DEVICE_HELP)
        parser.add_argument(
            "--epochs", type=int, help="exactly this many fine-tuning epochs (overrides the profile and its min_steps)"
        )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if getattr(args, "device", None):
        changes["device"] = args.device
    if args.seed is not None:
        changes["seed"] = args.seed
    if getattr(args, "epochs", None) is not None:
        changes["finetune"] = {"epochs": args.epochs, "min_steps": 0}
    if args.split:
        changes["split"] = {"method": args.split}
    return changes


def with_environment(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """``argv`` plus the options set as ``FLOWWARDEN_<OPTION>`` (:mod:`detector.core.envflags`), ``--config`` left
    out: ``FLOWWARDEN_CONFIG`` names the detector's settings file, which is not a training config."""
    return options_from_environment(argv, parser, skip={"--config"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(with_environment(sys.argv[1:] if argv is None else argv, parser))
    reporter = Reporter(enabled=not getattr(args, "quiet", False))
    try:
        return _dispatch(args, reporter)
    except USER_ERRORS as exc:
        print(f"trainer {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"trainer {args.command}: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace, reporter: Reporter) -> int:
    if args.command == "publish":
        commands.publish_bundle(args.bundle, args.registry, reporter)
        return 0
    if args.command == "evaluate":
        commands.evaluate(
            args.bundle, args.data, args.out, label_map=args.label_map, device=args.device, reporter=reporter
        )
        return 0
    config = commands.load_training_config(args.profile, args.config, _overrides(args))
    run = {"fit": commands.fit, "baselines": commands.baselines, "ablate": commands.ablate}[args.command]
    extra = {"registry": args.registry} if args.command == "fit" else {}
    run(args.data, args.out, config, label_map=args.label_map, reporter=reporter, **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
