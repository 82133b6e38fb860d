"""The detector is the worker image: it must not depend on the trainer or on training-only libraries."""

import ast
from pathlib import Path

import pytest

DETECTOR = Path(__file__).resolve().parents[2] / "detector"
FORBIDDEN = {"trainer", "sklearn", "imblearn", "pandas", "matplotlib", "scipy"}


@pytest.mark.parametrize("module", sorted(DETECTOR.glob("*.py")), ids=lambda p: p.name)
def test_detector_modules_import_nothing_from_training(module):
    tree = ast.parse(module.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{module.name} imports {sorted(imported & FORBIDDEN)}"
