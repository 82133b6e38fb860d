"""Reading a user's TOML file (settings, training config, label map) with one precise message per failure."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


class TomlFileError(ValueError):
    """A TOML file that cannot be used. The message says what is wrong and is written to follow the file's
    name or role: ``does not exist``, ``is a directory``, ``is not UTF-8 text ...``, ``cannot be read: ...``,
    ``is not valid TOML: ...``."""


def read_toml_file(path: str | Path) -> dict[str, Any]:
    """The parsed document of the TOML file at ``path``; raises :class:`TomlFileError`."""
    file = Path(path)
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TomlFileError("does not exist") from None
    except IsADirectoryError:
        raise TomlFileError("is a directory") from None
    except UnicodeDecodeError:
        raise TomlFileError("is not UTF-8 text (TOML must be UTF-8)") from None
    except OSError as exc:
        raise TomlFileError(f"cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TomlFileError(f"is not valid TOML: {exc}") from None
