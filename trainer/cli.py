"""``trainer``: the offline pipeline (fit, evaluate, baselines, ablate, novelty, adapt, publish, keygen).

Errors a user can fix (bad data, bad config, a bad bundle) end with one clear line and exit status 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import version

from detector.core.bundle import BundleError
from detector.core.process import ExitCode, sigterm_interrupts
from detector.core.scorer import DeviceError
from detector.core.settings import Command, SettingsError, commands_of, with_version
from detector.core.signing import SigningError
from trainer import commands
from trainer.adapt import adapt
from trainer.config import ConfigError
from trainer.load import DataError
from trainer.progress import Reporter
from trainer.rundir import RunDirError
from trainer.settings import (
    AblateSettings,
    AdaptSettings,
    BaselinesSettings,
    EvaluateSettings,
    FitSettings,
    KeygenSettings,
    NoveltySettings,
    PublishSettings,
)
from trainer.split import SplitError
from trainer.train import TrainingDiverged

USER_ERRORS = (
    DataError,
    ConfigError,
    BundleError,
    SigningError,
    SplitError,
    DeviceError,
    RunDirError,
    TrainingDiverged,
)


def cmd_fit(settings: FitSettings, reporter: Reporter) -> None:
    config = commands.load_training_config(settings.profile, settings.config, settings.overrides())
    commands.fit(
        settings.data,
        settings.out,
        config,
        label_map=settings.label_map,
        registry=settings.registry,
        sign=settings.sign,
        reporter=reporter,
    )


def cmd_baselines(settings: BaselinesSettings, reporter: Reporter) -> None:
    config = commands.load_training_config(settings.profile, settings.config, settings.overrides())
    commands.baselines(settings.data, settings.out, config, label_map=settings.label_map, reporter=reporter)


def cmd_ablate(settings: AblateSettings, reporter: Reporter) -> None:
    config = commands.load_training_config(settings.profile, settings.config, settings.overrides())
    commands.ablate(
        settings.data,
        settings.out,
        config,
        label_map=settings.label_map,
        protocol=settings.protocol,
        reporter=reporter,
    )


def cmd_novelty(settings: NoveltySettings, reporter: Reporter) -> None:
    config = commands.load_training_config(settings.profile, settings.config, settings.overrides())
    commands.novelty(
        settings.data,
        settings.out,
        config,
        label_map=settings.label_map,
        hold_out=settings.hold_out,
        min_rows=settings.min_rows,
        budget=settings.false_alarm_budget,
        reporter=reporter,
    )


def cmd_adapt(settings: AdaptSettings, reporter: Reporter) -> None:
    adapt(
        settings.bundle,
        settings.benign,
        settings.out,
        registry=settings.registry,
        sign=settings.sign,
        budget=settings.budget,
        held_out=settings.held_out,
        epochs=settings.epochs,
        seed=settings.seed,
        init=settings.init,
        device=settings.device,
        reporter=reporter,
    )


def cmd_evaluate(settings: EvaluateSettings, reporter: Reporter) -> None:
    commands.evaluate(
        settings.bundle,
        settings.data,
        settings.out,
        label_map=settings.label_map,
        device=settings.device,
        reporter=reporter,
    )


def cmd_publish(settings: PublishSettings, reporter: Reporter) -> None:
    commands.publish_bundle(settings.bundle, settings.registry, reporter, sign=settings.sign)


def cmd_keygen(settings: KeygenSettings, reporter: Reporter) -> None:
    commands.keygen(settings.out, reporter)


def build_parser() -> argparse.ArgumentParser:
    """The full ``trainer`` argument parser, every command's options generated from its settings model."""
    parser = argparse.ArgumentParser(prog="trainer", description=__doc__.splitlines()[0].replace("``", ""))
    with_version(parser, version("flowwarden"))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, model, handler, summary in (
        ("fit", FitSettings, cmd_fit, "train ResCAE-BiGRU, evaluate on a held-out split, write a bundle"),
        ("evaluate", EvaluateSettings, cmd_evaluate, "score a bundle (or registry) on labeled data"),
        ("baselines", BaselinesSettings, cmd_baselines, "Decision Tree and Random Forest on the same split"),
        (
            "ablate",
            AblateSettings,
            cmd_ablate,
            "the paper's Table 6 (base, +SAM, +iForest, +SMOTE, full), stacked or single",
        ),
        (
            "novelty",
            NoveltySettings,
            cmd_novelty,
            "train without each attack class in turn; how much of it each novelty signal catches",
        ),
        (
            "adapt",
            AdaptSettings,
            cmd_adapt,
            "fit a bundle's anomaly model to flows of your own meter and network from a period you trust",
        ),
        ("publish", PublishSettings, cmd_publish, "add a bundle to a registry and move LATEST to it"),
        ("keygen", KeygenSettings, cmd_keygen, "make an ed25519 key pair for signing bundles (publish --sign)"),
    ):
        Command(sub, name, model, help=summary, files=False, handler=handler)
    parser.set_defaults(_commands=commands_of(sub))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trainer`` console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    command: Command = args._command
    try:
        settings = command.settings(args)
    except SettingsError as exc:
        print(f"trainer {command.name}: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    reporter = Reporter(enabled=not getattr(settings, "quiet", False))
    try:
        with sigterm_interrupts():
            args.handler(settings, reporter)
    except USER_ERRORS as exc:
        print(f"trainer {command.name}: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        print(f"trainer {command.name}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
