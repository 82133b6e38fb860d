"""Command settings: one pydantic model per command, and every way a user sets it generated from that model.

A command's settings model (a :class:`CommandSettings` subclass) is the single source of truth for its
options. From each field come:

* the flag: ``--max-batch`` for ``max_batch`` (pydantic-settings' CLI source builds the argparse arguments,
  with the field's description and its actual default as help; a ``bool`` gets ``--x`` / ``--no-x``);
* the environment variable: ``FLOWWARDEN_MAX_BATCH``;
* the key in the TOML settings file named by ``--config`` (or ``FLOWWARDEN_CONFIG``): ``max_batch``;
* a file in the secrets directory named by ``--secrets-dir`` (or ``FLOWWARDEN_SECRETS_DIR``; a Docker
  ``/run/secrets`` or a Kubernetes secret volume): a file ``max_batch`` holds that setting's value, and a
  file ``kafka.sasl.password`` the librdkafka property ``sasl.password``;
* its row in the README's option table (:func:`options_table`).

Precedence is flag > environment > secrets directory > settings file > default. Each source is read by
its own pydantic-settings reader into a plain dict, and the dicts are merged here in that order, so the
origin of every value is known: a value that fails validation is reported with the flag, variable or file
it came from (:class:`SettingsError`), and nothing of the value itself is shown where it may be a secret.

A TOML file has types of its own, so a value of the wrong type there (``max_batch = true``) is an error,
while the environment is text and converts (``FLOWWARDEN_MAX_BATCH=64``). A key that no command sharing
the file knows is an error, not a silent default.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    CliSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.exceptions import SettingsError as SourceError

from detector.core.tomlfile import TomlFileError, read_toml_file

ENV_PREFIX = "FLOWWARDEN_"
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
SECRETS_DIR_ENV = f"{ENV_PREFIX}SECRETS_DIR"
_SECRET_MARKERS = ("password", "secret", "token", "jaas", "oauthbearer.config", "ssl.key.pem", "private")
_SECRET_FILE_LIMIT = 64 * 1024


class SettingsError(ValueError):
    """Settings that cannot be used; the message names the setting and where its value came from."""


def is_secret_name(name: str) -> bool:
    """Whether a setting or librdkafka property of this name holds a credential (never shown)."""
    return any(marker in name.lower() for marker in _SECRET_MARKERS)


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy safe to log: values of secret-looking settings and librdkafka properties become ``***``."""
    return {key: "***" if is_secret_name(str(key)) else value for key, value in config.items()}


class CommandSettings(BaseSettings):
    """Base of every command's settings model.

    Subclasses declare fields with ``Field(default, description=...)``; the description is the help text.
    ``json_schema_extra={"metavar": "HOST:PORT"}`` names the flag's value in ``--help``. Build instances
    through :class:`Command` (or :func:`load_settings` in tests), not the constructor: the constructor reads
    only the values it is given, since the sources are merged by :func:`load_settings`.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_hide_none_type=True,
        cli_avoid_json=True,
        cli_exit_on_error=False,
        cli_parse_none_str="none",
    )
    #: Fields whose values are tables (a TOML table, ``FLOWWARDEN_<FIELD>__<KEY>``, ``<field>.<key>`` secret files).
    table_fields: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # load_settings merges the sources itself, keeping track of origins

    @classmethod
    def normalize_table(cls, field: str, table: Mapping[str, Any]) -> dict[str, Any]:
        """A table's keys in their canonical spelling, so that sources spelling one key differently merge
        into one entry. The identity by default."""
        return dict(table)


# ----------------------------------------------------------------------------------------------------------
# Reading and merging the sources


class _Origins:
    """Where each setting's winning value came from, for messages."""

    def __init__(self) -> None:
        self.of: dict[str, str] = {}

    def note(self, data: Mapping[str, Any], origin: Callable[[str], str]) -> None:
        for name in data:
            self.of[name] = origin(name)


def load_settings(
    cls: type[CommandSettings],
    flags: Mapping[str, Any] | None = None,
    config_file: str | Path | None = None,
    *,
    secrets_dir: str | Path | None = None,
    file_keys: Iterable[str] | None = None,
    environ: Mapping[str, str] | None = None,
    files: bool = True,
) -> Any:
    """Settings of ``cls`` from flags (a dict of the flags given; None values mean "not given"), the
    environment, the secrets directory and the TOML settings file, in that order of precedence.

    ``config_file`` and ``secrets_dir`` default to ``FLOWWARDEN_CONFIG`` and ``FLOWWARDEN_SECRETS_DIR``.
    ``file_keys`` are the keys a settings file may hold (default: this model's fields): a file shared by
    several commands may hold keys of the others. A command with ``files=False`` reads neither a settings
    file nor a secrets directory. Raises :class:`SettingsError`.
    """
    environ = os.environ if environ is None else environ
    config_path = (config_file or environ.get(CONFIG_ENV) or None) if files else None
    secrets_path = (secrets_dir or environ.get(SECRETS_DIR_ENV) or None) if files else None
    origins = _Origins()
    layers: list[dict[str, Any]] = []

    if config_path:
        data = _read_settings_file(cls, Path(config_path), set(file_keys or cls.model_fields))
        layers.append(data)
        origins.note(data, lambda name: f"config file {config_path}")
    if secrets_path:
        data = _read_secrets_dir(cls, Path(secrets_path))
        layers.append(data)
        origins.note(data, lambda name: f"secret file {Path(secrets_path) / name}")
    data = _read_environment(cls, environ)
    layers.append(data)
    origins.note(data, lambda name: _env_variable(cls, name, environ))
    given = {name: value for name, value in (flags or {}).items() if value is not None}
    layers.append({name: _normalized(cls, name, value) for name, value in given.items()})
    origins.note(given, lambda name: _flag_of(cls, name))

    merged = _merge(layers, cls.table_fields)
    try:
        return cls(**merged)
    except ValidationError as exc:
        problems = [_problem(error, origins.of) for error in exc.errors()]
        raise SettingsError(f"invalid settings: {'; '.join(problems)}") from None


def _merge(layers: Iterable[Mapping[str, Any]], tables: frozenset[str]) -> dict[str, Any]:
    """Later layers win; a table field merges key by key (a flag's ``sasl.username`` keeps the file's
    ``client.id``)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for name, value in layer.items():
            if name in tables and isinstance(value, Mapping) and isinstance(merged.get(name), Mapping):
                merged[name] = {**merged[name], **value}
            else:
                merged[name] = value
    return merged


def _normalized(cls: type[CommandSettings], name: str, value: Any) -> Any:
    if name in cls.table_fields and isinstance(value, Mapping):
        return cls.normalize_table(name, value)
    return value


def _read_environment(cls: type[CommandSettings], environ: Mapping[str, str]) -> dict[str, Any]:
    """``FLOWWARDEN_<FIELD>`` values (and ``FLOWWARDEN_<TABLE>__<KEY>`` table entries), as text. A list
    setting takes its items separated by spaces, with shell quoting (``FLOWWARDEN_DATA="a.csv 'my b.csv'"``)."""
    source = EnvSettingsSource(cls, case_sensitive=False, env_prefix=ENV_PREFIX, env_nested_delimiter="__")
    variables = {key.lower(): value for key, value in environ.items()}
    for name in _list_fields(cls):
        key = f"{ENV_PREFIX}{name}".lower()
        if key in variables and not variables[key].lstrip().startswith("["):
            variables[key] = json.dumps(shlex.split(variables[key]))
    source.env_vars = variables  # the mapping given, not os.environ
    for name in _no_env_fields(cls):
        variables.pop(f"{ENV_PREFIX}{name}".lower(), None)
    try:
        data = source()
    except SourceError:  # e.g. FLOWWARDEN_KAFKA='not json': the value is not shown (it may hold a secret)
        raise SettingsError(
            f"invalid settings: {_unparsable_variable(cls, environ)}: cannot be parsed "
            "(a table must be a JSON object, a list JSON or words separated by spaces)"
        ) from None
    return {name: _normalized(cls, name, value) for name, value in data.items()}


def _no_env_fields(cls: type[CommandSettings]) -> list[str]:
    """Fields marked ``json_schema_extra={"env": False}``: their variable means something else."""
    return [name for name, field in cls.model_fields.items() if _extra(field).get("env") is False]


def _list_fields(cls: type[CommandSettings]) -> list[str]:
    return [name for name, field in cls.model_fields.items() if get_origin(_without_none(field.annotation)) is list]


def _unparsable_variable(cls: type[CommandSettings], environ: Mapping[str, str]) -> str:
    """The variable pydantic-settings could not decode: a table or list setting given as a whole."""
    for name in sorted(cls.table_fields | set(_list_fields(cls))):
        variable = f"{ENV_PREFIX}{name.upper()}"
        if any(key.upper() == variable for key in environ):
            return variable
    return "a FLOWWARDEN_ variable"


def _read_settings_file(cls: type[CommandSettings], path: Path, known: set[str]) -> dict[str, Any]:
    try:
        document = read_toml_file(path)
    except TomlFileError as exc:
        raise SettingsError(f"config file {path} {exc}") from None
    data = {key.replace("-", "_"): value for key, value in document.items()}
    unknown = sorted(set(data) - known - set(cls.model_fields))
    if unknown:
        raise SettingsError(
            f"config file {path}: unknown setting(s) {', '.join(map(repr, unknown))}; keys are the options' "
            "names with underscores (input_topic, max_batch, ...)"
            + (f" and tables ({', '.join(sorted(cls.table_fields))})" if cls.table_fields else "")
        )
    problems = _wrong_toml_types(cls, data, path)
    if problems:
        raise SettingsError(f"invalid settings: {'; '.join(problems)}")
    return {name: _normalized(cls, name, value) for name, value in data.items() if name in cls.model_fields}


def _read_secrets_dir(cls: type[CommandSettings], directory: Path) -> dict[str, Any]:
    """One file per setting (``bootstrap_servers``) or per table entry (``kafka.sasl.password``), its text
    stripped of the trailing newline editors add. Other files (a Kubernetes volume's ``..data``) are ignored."""
    if not directory.is_dir():
        raise SettingsError(f"secrets directory {directory} does not exist or is not a directory")
    data: dict[str, Any] = {}
    for path in sorted(directory.iterdir()):
        name, _, key = path.name.partition(".")
        if not path.is_file() or name not in cls.model_fields or (key and name not in cls.table_fields):
            continue
        if path.stat().st_size > _SECRET_FILE_LIMIT:
            raise SettingsError(f"secret file {path} is larger than {_SECRET_FILE_LIMIT} bytes")
        try:
            text = path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"secret file {path} cannot be read: {type(exc).__name__}") from None
        if key:
            data.setdefault(name, {})[key] = text
        else:
            data[name] = text
    return {name: _normalized(cls, name, value) for name, value in data.items()}


def _wrong_toml_types(cls: type[CommandSettings], data: Mapping[str, Any], path: Path) -> list[str]:
    problems = []
    for name, value in data.items():
        field = cls.model_fields.get(name)
        if field is None or name in cls.table_fields:  # another command's key; tables are checked by the model
            continue
        try:
            TypeAdapter(field.annotation if field.annotation is not None else Any).validate_json(
                json.dumps(value), strict=True
            )
        except (ValidationError, TypeError):  # TypeError: a TOML date or time, which no setting takes
            shown = json.dumps(value, default=str)
            problems.append(f"{name}: must be {toml_type(field.annotation)}, not {shown} (from config file {path})")
    return problems


def toml_type(annotation: Any) -> str:
    """How a setting's type is written in TOML, for messages and the option table."""
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a string"}
    annotation = _without_none(annotation)
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(json.dumps(choice) for choice in get_args(annotation))
    if get_origin(annotation) is list:
        return "an array"
    if get_origin(annotation) is dict:
        return "a table"
    return names.get(annotation, str(annotation))


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, UnionType):
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _problem(error: Mapping[str, Any], origins: Mapping[str, str]) -> str:
    """One validation error as ``field: what is wrong (from where)``; no field for a rule across fields."""
    message = str(error["msg"]).removeprefix("Value error, ")
    loc = [str(part) for part in error["loc"]]
    if not loc:
        return message
    origin = origins.get(loc[0])
    return f"{'.'.join(loc)}: {message}" + (f" (from {origin})" if origin else "")


def _flag_of(cls: type[CommandSettings], name: str) -> str:
    extra = _extra(cls.model_fields[name]) if name in cls.model_fields else {}
    return str(extra.get("flag") or "--" + name.replace("_", "-"))


def _env_variable(cls: type[CommandSettings], name: str, environ: Mapping[str, str]) -> str:
    variable = f"{ENV_PREFIX}{name.upper()}"
    if name in cls.table_fields and variable not in environ:
        return f"{variable}__*"
    return variable


def _extra(field: FieldInfo) -> dict[str, Any]:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


# ----------------------------------------------------------------------------------------------------------
# The command line


#: How ``--help`` names a value of each plain type (pydantic-settings writes the type's name).
_METAVARS = {"int": "N", "float": "NUMBER", "str": "TEXT", "Path": "PATH", "list[Path]": "PATH"}


class _KeyValueAction(argparse.Action):
    """``--kafka-option key=value`` (repeatable): the raw texts, in order; :meth:`Command.flags` reads them,
    so that a malformed one is a one-line settings error that does not echo its text (it may hold a secret)."""

    def __call__(self, parser: Any, namespace: Any, value: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), str(value)])


def _key_values(flag: str, texts: Iterable[str]) -> dict[str, str]:
    table = {}
    for number, text in enumerate(texts, start=1):
        key, separator, value = text.partition("=")
        if not separator or not key.strip():
            raise SettingsError(f"{flag} number {number} is not KEY=VALUE (its text is not shown)")
        table[key.strip()] = value
    return table


class Command:
    """One subcommand whose options are generated from a settings model.

    ``Command(subparsers, "run", RunSettings, help=...)`` adds the subparser with one flag per field, plus
    ``--config`` (the TOML settings file) and ``--secrets-dir`` when ``files`` is true, and for each table
    field with a ``flag`` in its ``json_schema_extra`` a repeatable ``--flag KEY=VALUE``. After parsing,
    :meth:`settings` returns the merged, validated settings.
    """

    def __init__(
        self,
        subparsers: Any,
        name: str,
        model: type[CommandSettings],
        *,
        help: str,
        description: str | None = None,
        epilog: str | None = None,
        files: bool = True,
        file_keys: Iterable[str] | None = None,
        handler: Callable[[Any], int] | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.files = files
        self.file_keys = set(file_keys or model.model_fields)
        self.parser = subparsers.add_parser(
            name,
            help=help,
            description=description or _description(model) or help,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self._table_flags: dict[str, tuple[str, str]] = {}
        self.source: CliSettingsSource[Any] = CliSettingsSource(
            model, root_parser=self.parser, add_argument_method=self._add_argument
        )
        for field_name in sorted(model.table_fields):
            flag = _extra(model.model_fields[field_name]).get("flag")
            if flag:
                dest = f"_table_{field_name}"
                self._table_flags[dest] = (field_name, flag)
                field = model.model_fields[field_name]
                self.parser.add_argument(
                    flag,
                    dest=dest,
                    action=_KeyValueAction,
                    metavar="KEY=VALUE",
                    help=f"{field.description} (default: {show_default(field)})",
                )
        if files:
            self.parser.add_argument(
                "--config", dest="_config", metavar="FILE.toml", help=f"TOML settings file (also {CONFIG_ENV})"
            )
            self.parser.add_argument(
                "--secrets-dir",
                dest="_secrets_dir",
                metavar="DIR",
                help="directory of secret files, one per setting (e.g. kafka.sasl.password), as Docker and "
                f"Kubernetes mount them (also {SECRETS_DIR_ENV})",
            )
        self.parser.set_defaults(_command=self)
        _registry(subparsers)[name] = self
        if handler is not None:
            self.parser.set_defaults(handler=handler)

    def _add_argument(self, parser: Any, *names: str, **kwargs: Any) -> Any:
        """pydantic-settings' hook for each generated argument: our metavars, and the default shown as TOML
        would write it."""
        dest = str(kwargs.get("dest") or (names[0] if names and not names[0].startswith("-") else ""))
        field = self.model.model_fields.get(dest.replace("-", "_"))
        if field is not None and kwargs.get("help") != argparse.SUPPRESS:
            metavar = kwargs.get("metavar")
            if metavar is not None:
                kwargs["metavar"] = _extra(field).get("metavar") or _METAVARS.get(metavar, metavar)
            if field.description:
                shown = "required" if field.is_required() else f"default: {show_default(field)}"
                kwargs["help"] = f"{field.description} ({shown})"
        return parser.add_argument(*names, **kwargs)

    def flags(self, namespace: argparse.Namespace) -> dict[str, Any]:
        """The flags given on the command line, by field name (pydantic-settings' reading of them)."""
        given = self.source(parsed_args=namespace)()
        for dest, (field_name, flag) in self._table_flags.items():
            texts = getattr(namespace, dest, None)
            if texts:
                given[field_name] = {**given.get(field_name, {}), **_key_values(flag, texts)}
        return given

    def settings(self, namespace: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Any:
        """The validated settings of this command; raises :class:`SettingsError`."""
        try:
            flags = self.flags(namespace)
        except SourceError as exc:
            raise SettingsError(str(exc).removeprefix("error parsing CLI: ")) from None
        return load_settings(
            self.model,
            flags,
            getattr(namespace, "_config", None) if self.files else None,
            secrets_dir=getattr(namespace, "_secrets_dir", None) if self.files else None,
            file_keys=self.file_keys,
            environ=environ,
            files=self.files,
        )


def _description(model: type[CommandSettings]) -> str | None:
    """The model's docstring as plain text, without its leading ````detector run``:`` (the usage line says it)."""
    doc = " ".join((model.__doc__ or "").split())
    if doc.startswith("``") and ":" in doc:
        doc = doc.split(":", 1)[1].strip()
    return doc.replace("``", "") or None


def show_default(field: FieldInfo) -> str:
    """A field's default as a user would write it (``none`` for no value, TOML's ``true``/``false``)."""
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        return "none" if not value else json.dumps(value)
    value = field.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return str(value)
    return str(value)


def options_table(model: type[CommandSettings], *, files: bool = True) -> str:
    """The README's option table of a command: flag, environment variable, settings-file key, default.
    ``files=False`` (a command that reads no settings file) leaves the file-key column out."""
    columns = ["flag", "environment", *(["file key"] if files else []), "default", "meaning"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, field in model.model_fields.items():
        extra = _extra(field)
        table = name in model.table_fields
        if _is_positional(field):
            flag = f"`{extra.get('metavar') or name.upper()} ...`"
        elif table:
            flag = f"`{extra['flag']} KEY=VALUE`" if extra.get("flag") else ""
        else:
            flag = f"`--{name.replace('_', '-')}`"
        env = f"`{ENV_PREFIX}{name.upper()}{'__<KEY>' if table else ''}`"
        if extra.get("env") is False or _is_positional(field):
            env = ""
        key = [f"`[{name}]`" if table else f"`{name}`"] if files else []
        default = "required" if field.is_required() else f"`{show_default(field)}`"
        description = (field.description or "").replace("|", "\\|")
        lines.append("| " + " | ".join([flag, env, *key, default, description]) + " |")
    return "\n".join(lines) + "\n"


def _is_positional(field: FieldInfo) -> bool:
    """Whether the field is a ``CliPositionalArg`` (named on the command line only)."""
    return any(getattr(marker, "__name__", "") == "_CliPositionalArg" for marker in field.metadata)


def _registry(subparsers: Any) -> dict[str, Command]:
    registry: dict[str, Command] = getattr(subparsers, "flowwarden_commands", None) or {}
    subparsers.flowwarden_commands = registry
    return registry


def commands_of(subparsers: Any) -> dict[str, Command]:
    """The :class:`Command` objects added to a subparsers action, by name (for docs and tests)."""
    return dict(_registry(subparsers))


def with_version(parser: argparse.ArgumentParser, version: str) -> argparse.ArgumentParser:
    """Add ``--version`` (prints ``PROG VERSION``) to a command's root parser."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}")
    return parser


def settings_of(namespace: argparse.Namespace) -> Any:
    """The settings of the subcommand that was parsed into ``namespace``."""
    command: Command = namespace._command
    return command.settings(namespace)
