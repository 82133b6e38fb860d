"""The import contracts of docs/architecture.md, checked on every module's own imports.

* ``detector.core`` imports nothing else of ours (the trainer and every command build on it);
* ``detector.stream`` (the Kafka worker) imports ``detector.core`` only;
* ``detector.tools`` imports ``detector.core`` and ``detector.stream``;
* ``trainer`` imports ``detector.core`` only;
* nothing under ``detector`` imports training-only libraries: the worker image does not install them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TRAINING_ONLY = {"sklearn", "imblearn", "pandas", "matplotlib", "scipy"}
#: What each room may import of ours, by dotted prefix.
ALLOWED = {
    "detector.core": ("detector.core",),
    "detector.stream": ("detector.core", "detector.stream"),
    "detector.tools": ("detector.core", "detector.stream", "detector.tools"),
    "trainer": ("detector.core", "trainer"),
}
#: Packages the worker image (core + stream) does not have.
NOT_IN_WORKER_IMAGE = {"rich", "trainer", *TRAINING_ONLY}
#: The Python API returns a DataFrame: it imports pandas inside the function that builds one, never at import.
LAZY = {"detector.api": {"pandas"}}


def imports_of(source: str, package: str) -> set[str]:
    """Absolute module names imported by ``source`` (relative imports resolved against ``package``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names |= {f"{module}.{alias.name}" for alias in node.names}
    return names


def room_of(module: str) -> str | None:
    return next((room for room in ALLOWED if module == room or module.startswith(room + ".")), None)


def module_level_imports(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def violations(module: str, source: str) -> list[str]:
    """The imports of ``module`` that break its room's contract."""
    room = room_of(module)
    package = module.rsplit(".", 1)[0]
    found = []
    lazy = LAZY.get(module, set()) - module_level_imports(source)
    for name in sorted(imports_of(source, package)):
        if name.split(".")[0] in lazy:
            continue
        ours = name.split(".")[0] in {"detector", "trainer"} and name not in {"detector", "trainer"}
        if ours and room is not None and not any(name == ok or name.startswith(ok + ".") for ok in ALLOWED[room]):
            found.append(name)
        if module.startswith("detector") and name.split(".")[0] in TRAINING_ONLY:
            found.append(name)
        if room in {"detector.core", "detector.stream"} and name.split(".")[0] in NOT_IN_WORKER_IMAGE:
            found.append(name)
    return found


def modules() -> list[tuple[str, Path]]:
    found = []
    for top in ("detector", "trainer"):
        for path in sorted((REPO / top).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found.append((name, path))
    return found


@pytest.mark.parametrize(("module", "path"), modules(), ids=[name for name, _ in modules()])
def test_every_module_keeps_its_rooms_import_contract(module, path):
    assert violations(module, path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    ("module", "source", "broken"),
    [
        ("detector.core.decode", "from detector.stream.worker import Worker", "detector.stream.worker"),
        ("detector.core.decode", "import detector.tools.replay", "detector.tools.replay"),
        ("detector.core.bundle", "from trainer.load import load_flows", "trainer.load"),
        ("detector.core.bundle", "from ..stream import metrics", "detector.stream.metrics"),
        ("detector.stream.worker", "from detector.tools import demo", "detector.tools.demo"),
        ("detector.stream.metrics", "import rich", "rich"),
        ("detector.tools.replay", "import pandas", "pandas"),
        ("detector.api", "import pandas", "pandas"),
        ("trainer.pipeline", "from detector.stream.processor import BatchProcessor", "detector.stream.processor"),
    ],
)
def test_the_contract_check_catches_a_forbidden_import(module, source, broken):
    assert broken in violations(module, source)
