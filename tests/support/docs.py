"""``make docs``: rewrite the README's option tables from the commands' settings models.

Each table sits between ``<!-- options: detector run -->`` and ``<!-- /options: detector run -->``;
tests/test_docs.py fails when one is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

from detector.cli import build_parser as detector_parser
from detector.core.settings import options_table
from trainer.cli import build_parser as trainer_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def render(text: str) -> str:
    """``text`` with every option table regenerated (tables without markers are left alone)."""
    for program, build in (("detector", detector_parser), ("trainer", trainer_parser)):
        for name, command in build().get_default("_commands").items():
            begin, end = f"<!-- options: {program} {name} -->", f"<!-- /options: {program} {name} -->"
            if begin not in text:
                continue
            head, rest = text.split(begin, 1)
            _, tail = rest.split(end, 1)
            table = options_table(command.model, files=command.files)
            text = f"{head}{begin}\n{table}{end}{tail}"
    return text


def main() -> int:
    old = README.read_text(encoding="utf-8")
    new = render(old)
    if new != old:
        README.write_text(new, encoding="utf-8")
        print("README.md: option tables rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
