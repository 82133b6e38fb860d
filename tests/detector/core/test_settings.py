"""Every option of every command reaches its setting the same way from each source, and says where a bad
value came from.

The test walks every field of every command's settings model (``detector`` and ``trainer``): its flag, its
``FLOWWARDEN_*`` variable, its settings-file key and its secret file must all give the same value; ``--help``
must show the field's actual default; a value that cannot be used names the flag, variable or file it came
from. A new option is covered by adding its field: nothing here lists the options by hand, except sample
values for fields whose validators need a particular shape.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from pydantic.fields import FieldInfo

from detector.cli import build_parser as detector_parser
from detector.core.settings import Command, CommandSettings, SettingsError, show_default
from trainer.cli import build_parser as trainer_parser

COMMANDS = [("detector", name) for name in ("run", "check", "replay", "ingest", "score", "broker", "demo")] + [
    ("trainer", name) for name in ("fit", "evaluate", "baselines", "ablate", "publish")
]
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {"detector": detector_parser, "trainer": trainer_parser}
#: Sample values for fields whose validators want a shape (a free port, a Kafka topic name).
SHAPED = {
    "bootstrap_servers": "broker-a:9093,broker-b:9093",
    "metrics_host": "127.0.0.2",
    "replication_factor": 3,
    "meter_timezone": "Europe/Berlin",
    "min_confidence": 0.8,
    "class_thresholds": {"portscan": 0.9},
    "allow_networks": ["10.0.5.0/24", "2001:db8::/32"],
    "allow_ports": ["53", "8000-8080"],
    "allow_labels": ["Portscan", "DoS Hulk"],
    "false_alarm_budget": 0.02,
}


def plain(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, UnionType):
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def bound(field: FieldInfo, name: str) -> Any:
    return next((getattr(m, name) for m in field.metadata if getattr(m, name, None) is not None), None)


def sample(name: str, field: FieldInfo, tmp_path: Path) -> Any:
    """A valid value other than the default."""
    kind = plain(field.annotation)
    if name in SHAPED:
        return SHAPED[name]
    if kind is bool:
        return not field.default
    if get_origin(kind) is Literal:
        return next(choice for choice in get_args(kind) if choice != field.default)
    if kind is int:
        low = bound(field, "ge") or 0
        return max(low, (field.default or 0) + 1) if bound(field, "le") is None else low + 1
    if kind is float:
        return 2.5
    if kind is Path:
        path = tmp_path / f"{name}-sample"
        path.mkdir(exist_ok=True)
        return path
    if get_origin(kind) is list:
        path = tmp_path / f"{name}-item"
        path.mkdir(exist_ok=True)
        return [path]
    if get_origin(kind) is dict:
        return {"client.id": "sample-client"}
    return f"sample.{name}"


def invalid(field: FieldInfo) -> str | None:
    """Text no source can turn into a valid value (None: every text is valid, e.g. a free-form string)."""
    kind = plain(field.annotation)
    if kind in (int, float) or get_origin(kind) is Literal:
        return "not-a-valid-value"
    if kind is bool:
        return "maybe"
    return None


def as_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def flag_argv(name: str, field: FieldInfo, value: Any) -> list[str]:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if isinstance(value, bool):
        return [f"--{'' if value else 'no-'}{name.replace('_', '-')}"]
    if isinstance(value, dict):
        return [part for key, item in value.items() for part in (extra["flag"], f"{key}={item}")]
    if isinstance(value, list):
        return (
            [str(item) for item in value] if is_positional(field) else [f"--{name.replace('_', '-')}", *map(str, value)]
        )
    return [f"--{name.replace('_', '-')}", as_text(value)]


def is_positional(field: FieldInfo) -> bool:
    return any(getattr(m, "__name__", "") == "_CliPositionalArg" for m in field.metadata)


def env_of(name: str, value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {
            f"FLOWWARDEN_{name.upper()}__{key.upper().replace('.', '_')}": as_text(item) for key, item in value.items()
        }
    if isinstance(value, list):
        return {f"FLOWWARDEN_{name.upper()}": " ".join(f"'{item}'" for item in value)}
    return {f"FLOWWARDEN_{name.upper()}": as_text(value)}


def toml_of(name: str, value: Any) -> str:
    if isinstance(value, dict):
        return f"[{name}]\n" + "".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in value.items())
    if isinstance(value, list):
        return f"{name} = {json.dumps([str(item) for item in value])}\n"
    if isinstance(value, Path):
        return f"{name} = {json.dumps(str(value))}\n"
    return f"{name} = {json.dumps(value)}\n"


class Harness:
    """One command: its model, and a way to load its settings from argv and an environment."""

    def __init__(self, program: str, command: str, tmp_path: Path) -> None:
        self.parser = PARSERS[program]()
        self.command_name = command
        self.tmp_path = tmp_path
        self.command: Command = self.parser.get_default("_commands")[command]
        self.model: type[CommandSettings] = self.command.model

    def _namespace(self, argv: list[str]) -> argparse.Namespace:
        return self.parser.parse_args([self.command_name, *argv])

    def load(self, argv: list[str] = (), environ: dict[str, str] | None = None, name: str | None = None) -> Any:
        required = [
            part
            for field_name, field in self.model.model_fields.items()
            if field.is_required() and field_name != name
            for part in flag_argv(field_name, field, sample(field_name, field, self.tmp_path))
        ]
        return self.command.settings(self._namespace([*required, *argv]), environ=environ or {})

    def help(self) -> str:
        return self.command.parser.format_help()


FIELDS = []
CHECKED_FIELDS = []  # the fields that some text is not a valid value of
for _program, _command in COMMANDS:
    _model = Harness(_program, _command, Path("/tmp")).model
    FIELDS += [(_program, _command, name) for name in _model.model_fields]
    CHECKED_FIELDS += [(_program, _command, n) for n, f in _model.model_fields.items() if invalid(f) is not None]


@pytest.mark.parametrize(("program", "command", "name"), FIELDS, ids=[f"{p} {c} {n}" for p, c, n in FIELDS])
def test_flag_environment_file_and_secret_reach_the_same_value(program, command, name, tmp_path):
    harness = Harness(program, command, tmp_path)
    field = harness.model.model_fields[name]
    value = sample(name, field, tmp_path)
    expected = harness.load(flag_argv(name, field, value), name=name)
    assert getattr(expected, name) == value, "the flag"
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if is_positional(field) or extra.get("env") is False:  # on the command line only
        return
    assert getattr(harness.load(environ=env_of(name, value), name=name), name) == value, "the environment variable"
    if harness.command.files:
        config = tmp_path / "settings.toml"
        config.write_text(toml_of(name, value), encoding="utf-8")
        assert getattr(harness.load(["--config", str(config)], name=name), name) == value, "the settings file"
        secrets = tmp_path / "secrets"
        secrets.mkdir()
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for key, item in items:
            (secrets / (f"{name}.{key}" if key else name)).write_text(as_text(item) + "\n", encoding="utf-8")
        if not isinstance(value, list):
            assert getattr(harness.load(["--secrets-dir", str(secrets)], name=name), name) == value, "the secret file"


@pytest.mark.parametrize(("program", "command", "name"), FIELDS, ids=[f"{p} {c} {n}" for p, c, n in FIELDS])
def test_help_shows_the_actual_default(program, command, name, tmp_path):
    harness = Harness(program, command, tmp_path)
    field = harness.model.model_fields[name]
    shown = "required" if field.is_required() else f"default: {show_default(field)}"
    help_text = " ".join(harness.help().split())
    assert f"{' '.join((field.description or '').split())} ({shown})" in help_text


@pytest.mark.parametrize(
    ("program", "command", "name"), CHECKED_FIELDS, ids=[f"{p} {c} {n}" for p, c, n in CHECKED_FIELDS]
)
def test_a_wrong_value_names_the_source_it_came_from(program, command, name, tmp_path):
    harness = Harness(program, command, tmp_path)
    field = harness.model.model_fields[name]
    bad = invalid(field)
    variable = f"FLOWWARDEN_{name.upper()}"
    with pytest.raises(SettingsError, match=rf"{name}: .*\(from {variable}\)"):
        harness.load(environ={variable: bad}, name=name)
    if plain(field.annotation) is not bool:  # a switch's flag has no value to get wrong
        flag = f"--{name.replace('_', '-')}"
        with pytest.raises(SettingsError, match=rf"{name}: .*\(from {re.escape(flag)}\)"):
            harness.load([flag, bad], name=name)
    if harness.command.files:
        config = tmp_path / "settings.toml"
        config.write_text(f"{name} = {json.dumps(bad)}\n", encoding="utf-8")
        with pytest.raises(SettingsError, match=rf"{name}: .*\(from config file {re.escape(str(config))}\)"):
            harness.load(["--config", str(config)], name=name)
        secrets = tmp_path / "secrets"
        secrets.mkdir()
        (secrets / name).write_text(bad, encoding="utf-8")
        with pytest.raises(SettingsError, match=rf"{name}: .*\(from secret file {re.escape(str(secrets / name))}\)"):
            harness.load(["--secrets-dir", str(secrets)], name=name)


def test_precedence_is_flag_then_environment_then_secret_then_file(tmp_path):
    harness = Harness("detector", "run", tmp_path)
    config = tmp_path / "settings.toml"
    config.write_text("max_batch = 10\nmax_delay_ms = 10\nthreads = 10\nmax_in_flight_batches = 10\n")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("max_batch", "max_delay_ms", "threads"):
        (secrets / name).write_text("20")
    environ = {"FLOWWARDEN_MAX_BATCH": "30", "FLOWWARDEN_MAX_DELAY_MS": "30"}
    settings = harness.load(
        ["--config", str(config), "--secrets-dir", str(secrets), "--max-batch", "40"], environ=environ
    )
    assert (settings.max_batch, settings.max_delay_ms, settings.threads, settings.max_in_flight_batches) == (
        40,
        30,
        20,
        10,
    )


def test_a_secret_never_appears_in_an_error(tmp_path):
    harness = Harness("detector", "run", tmp_path)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "kafka.group.id").write_text("hunter2-secret")
    with pytest.raises(SettingsError) as raised:
        harness.load(["--secrets-dir", str(secrets)])
    assert "group.id is not a pass-through property" in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_the_version_is_the_package_version(capsys):
    from importlib.metadata import version

    for parser in (detector_parser(), trainer_parser()):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(["--version"])
        assert exited.value.code == 0
        assert capsys.readouterr().out.strip() == f"{parser.prog} {version('flowwarden')}"
