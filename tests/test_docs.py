"""The documents that describe the tree match it: docs/architecture.md and the README's layout name every
module that exists and none that does not; the README's option tables are the ones the settings models
generate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from detector.cli import build_parser as detector_parser
from detector.core.settings import options_table
from trainer.cli import build_parser as trainer_parser

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
README = (REPO / "README.md").read_text(encoding="utf-8")
ROOMS = {"detector/core": "core", "detector/stream": "stream", "detector/tools": "tools", "trainer": "trainer"}


def modules(room: str) -> set[str]:
    return {path.name for path in (REPO / room).glob("*.py") if path.name != "__init__.py"}


def named_in_index(room: str) -> set[str]:
    """Module file names listed under the room's bullet of the architecture's module index."""
    match = re.search(rf"^\* `{re.escape(room)}/`:(.*?)(?=^\* |^## )", ARCHITECTURE, re.S | re.M)
    assert match, f"docs/architecture.md has no module index entry for {room}/"
    return set(re.findall(r"`([a-z0-9_]+\.py)`", match.group(1)))


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_the_module_index_names_every_module_and_only_those(room):
    assert named_in_index(room) == modules(room)


@pytest.mark.parametrize("document", ["docs/architecture.md", "README.md", "docs/worker.md"])
def test_every_path_a_document_names_exists(document):
    text = (REPO / document).read_text(encoding="utf-8")
    named = r"\b((?:detector|trainer|tests|deploy|schemas|docs)/[\w./-]+\.(?:py|md|toml|json|yaml))"
    paths = set(re.findall(named, text))
    missing = sorted(path for path in paths if not (REPO / path).exists())
    assert not missing, f"{document} names paths that do not exist: {missing}"


def commands():
    for program, build in (("detector", detector_parser), ("trainer", trainer_parser)):
        for name, command in build().get_default("_commands").items():
            yield f"{program} {name}", command


@pytest.mark.parametrize(("title", "command"), list(commands()), ids=[title for title, _ in commands()])
def test_the_readme_option_table_of_each_command_is_generated_from_its_settings(title, command):
    begin, end = f"<!-- options: {title} -->", f"<!-- /options: {title} -->"
    assert begin in README and end in README, f"README has no option table for {title}; run `make docs`"
    written = README.split(begin, 1)[1].split(end, 1)[0].strip()
    assert written == options_table(command.model, files=command.files).strip(), (
        f"README's option table of {title} is out of date; run `make docs`"
    )
